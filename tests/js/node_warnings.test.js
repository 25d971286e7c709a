// The warnings box (web/js/node_warnings.js) on a fake LiteGraph node: which node types get it, the text of an
// `executed` message, shown read-only after a run with warnings and removed after a run without any.
import { beforeEach, describe, expect, it, vi } from "vitest";
import { installFakeDom } from "./fake_dom.js";

vi.mock("../../../scripts/app.js", () => ({ app: { registerExtension: (ext) => { globalThis.__instdiffWarnings = ext; } } }));

const { WIDGET_NAME, boxHeight, showWarnings, showsWarnings, warningsText, wrappedRows } = await import(
  "../../web/js/node_warnings.js");

function fakeNodeType({ removeWidget = true } = {}) {
  class FakeNode {
    constructor() {
      this.size = [220, 130];
      this.widgets = [{ name: "prompt", type: "text", value: "a cat", options: {} }];
    }

    computeSize() {
      return [200, 100 + this.widgets.filter((w) => w.element).length * 60];
    }

    setSize(size) {
      this.size = [...size];
    }

    addDOMWidget(name, type, element, options) {
      const widget = { name, type, element, options, onRemove: vi.fn() };
      this.widgets.push(widget);
      return widget;
    }

    setDirtyCanvas() {}
  }
  if (removeWidget) {
    FakeNode.prototype.removeWidget = function (w) {
      w.onRemove();
      this.widgets.splice(this.widgets.indexOf(w), 1);
    };
  }
  return FakeNode;
}

beforeEach(() => {
  installFakeDom();
});

describe("which nodes and what text", () => {
  it("the pack's nodes except the layout editor, which shows warnings under its canvas", () => {
    expect(showsWarnings({ name: "LoadInstanceLayout", category: "instance_diffusion/layout" })).toBe(true);
    expect(showsWarnings({ name: "InstanceBox", category: "instance_diffusion/layout" })).toBe(true);
    expect(showsWarnings({ name: "Whatever", category: "instance_diffusion" })).toBe(true);
    expect(showsWarnings({ name: "InstanceLayoutEditor", category: "instance_diffusion/layout" })).toBe(false);
    expect(showsWarnings({ name: "KSampler", category: "sampling" })).toBe(false);
    expect(showsWarnings({ name: "X", category: "instance_diffusion_other" })).toBe(false);
    expect(showsWarnings(undefined)).toBe(false);
  });

  it("one line per warning; null clears; undefined when the message says nothing about warnings", () => {
    expect(warningsText({ instdiff_warnings: ["box clipped", "key ignored"] })).toBe("\u26a0 box clipped\n\u26a0 key ignored");
    expect(warningsText({ instdiff_warnings: [] })).toBeNull();
    expect(warningsText({ instdiff_warnings: ["", null, "  "] })).toBeNull();
    expect(warningsText({ instdiff_warnings: "one" })).toBe("\u26a0 one");
    expect(warningsText({ images: [] })).toBeUndefined();
    expect(warningsText(null)).toBeUndefined();
    expect(warningsText(undefined)).toBeUndefined();
  });

  it("the box is as tall as the wrapped text, up to 8 rows", () => {
    expect(wrappedRows("abc", 10)).toBe(1);
    expect(wrappedRows("x".repeat(25), 10)).toBe(3);
    expect(wrappedRows("a\n\nb", 10)).toBe(3);
    expect(boxHeight("short", 300)).toBe(22);
    expect(boxHeight("x".repeat(130), 280)).toBe(4 * 14 + 8); // 40 characters per row at 280 px
    expect(boxHeight("x\n".repeat(30), 300)).toBe(8 * 14 + 8);
  });
});

describe("the box on a node", () => {
  async function registered(NodeType, name = "InstanceBox") {
    await globalThis.__instdiffWarnings.beforeRegisterNodeDef(NodeType, { name, category: "instance_diffusion/layout" });
    return new NodeType();
  }

  it("appears read-only after a run with warnings, keeps the original onExecuted, and goes after a clean run", async () => {
    const NodeType = fakeNodeType();
    const seen = [];
    NodeType.prototype.onExecuted = function (m) {
      seen.push(m);
      return "original";
    };
    const node = await registered(NodeType);
    expect(node.onExecuted({ instdiff_warnings: ["instance 0 ('a cat') box: clipped"] })).toBe("original");
    const widget = node.widgets.find((w) => w.name === WIDGET_NAME);
    expect(widget.element.readOnly).toBe(true);
    expect(widget.element.value).toBe("\u26a0 instance 0 ('a cat') box: clipped");
    expect(widget.options.serialize).toBe(false);
    expect(widget.serialize).toBe(false);
    expect(node.size).toEqual([220, 160]); // grown to fit the box, never narrower
    node.onExecuted({ instdiff_warnings: ["a", "b"] }); // the same box, new text
    expect(node.widgets.filter((w) => w.name === WIDGET_NAME)).toHaveLength(1);
    expect(widget.element.value).toBe("\u26a0 a\n\u26a0 b");
    node.onExecuted(null); // a message without warnings info: left as is
    expect(node.widgets).toContain(widget);
    node.onExecuted({ instdiff_warnings: [] });
    expect(node.widgets.map((w) => w.name)).toEqual(["prompt"]);
    expect(widget.onRemove).toHaveBeenCalled();
    expect(node.size).toEqual([220, 100]);
    expect(seen).toHaveLength(4);
  });

  it("removes the box on frontends without removeWidget too", () => {
    const node = new (fakeNodeType({ removeWidget: false }))();
    showWarnings(node, "\u26a0 x");
    const widget = node.widgets[1];
    showWarnings(node, null);
    expect(node.widgets.map((w) => w.name)).toEqual(["prompt"]);
    expect(widget.onRemove).toHaveBeenCalled();
  });

  it("leaves other node types alone", async () => {
    const NodeType = fakeNodeType();
    await globalThis.__instdiffWarnings.beforeRegisterNodeDef(NodeType, { name: "KSampler", category: "sampling" });
    expect(NodeType.prototype.onExecuted).toBeUndefined();
  });
});
