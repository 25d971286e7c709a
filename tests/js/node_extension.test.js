// The ComfyUI extension (web/js/instance_layout_editor.js) on a fake LiteGraph node: the editor follows widget
// values set by anyone, without drawing hooks (the Vue node renderer of Nodes 2.0 calls none); the node's minimum
// and default sizes; the JSON widget kept small / hidden from the Vue renderer; the last run's warnings.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { installFakeDom } from "./fake_dom.js";
import { layoutText, manualFrames, removeFrames } from "./editor_harness.js";
import { NODE_DEFAULT_HEIGHT, NODE_DEFAULT_WIDTH, NODE_MIN_WIDTH } from "../../web/js/layout_editor/node_size.js";

vi.mock("../../../scripts/app.js", () => ({ app: { registerExtension: (ext) => { globalThis.__instdiffExtension = ext; } } }));
vi.mock("../../../scripts/api.js", () => ({ api: { apiURL: (p) => `/api${p}` } }));

/** A widget whose value is an accessor on its class (as the newer frontends' widget classes). */
class ClassWidget {
  #value;
  constructor(name, value) {
    this.name = name;
    this.type = "number";
    this.options = {};
    this.#value = value;
    this.sets = 0;
  }

  get value() {
    return this.#value;
  }

  set value(v) {
    this.sets++;
    this.#value = v;
  }
}

/** A LiteGraph-like node type: widgets (two class widgets, a plain-object text widget), sizes, DOM widgets. */
function fakeNodeType() {
  return class FakeNode {
    constructor() {
      this.size = [210, 300];
      this.properties = {};
      this.widgets = [new ClassWidget("width", 512), new ClassWidget("height", 512),
        { name: "layout_json", type: "customtext", value: "", options: {} }];
    }

    computeSize() {
      return [210, 494];
    }

    setSize(size) {
      this.size = [...size];
      this.onResize?.(this.size);
    }

    addDOMWidget(name, type, element, options) {
      const widget = { name, type, element, options };
      this.widgets.push(widget);
      return widget;
    }

    setDirtyCanvas() {}
  };
}

let frames;
beforeEach(() => {
  installFakeDom();
  frames = manualFrames();
});
afterEach(removeFrames);

async function makeNode() {
  await import("../../web/js/instance_layout_editor.js");
  const ext = globalThis.__instdiffExtension;
  const NodeType = fakeNodeType();
  await ext.beforeRegisterNodeDef(NodeType, { name: "InstanceLayoutEditor" });
  const node = new NodeType();
  node.onNodeCreated();
  const widget = (name) => node.widgets.find((w) => w.name === name);
  return { node, NodeType, widget, view: node.instdiffEditor.view };
}

describe("the extension on a node", () => {
  it("registers for the editor node only", async () => {
    await import("../../web/js/instance_layout_editor.js");
    const NodeType = fakeNodeType();
    await globalThis.__instdiffExtension.beforeRegisterNodeDef(NodeType, { name: "KSampler" });
    expect(NodeType.prototype.onNodeCreated).toBeUndefined();
  });

  it("follows values set directly on the widgets, with no callback and no drawing hook", async () => {
    const { node, NodeType, widget, view } = await makeNode();
    expect(NodeType.prototype.onDrawForeground).toBeUndefined(); // nothing relies on drawing
    widget("layout_json").value = layoutText(512, 512, [{ caption: "a cat", bbox: [100, 100, 200, 100] }], "a cat");
    expect(view.doc.annos).toEqual([{ caption: "a cat", bbox: [100, 100, 200, 100] }]);
    expect(view.captionInput.value).toBe("a cat");
    widget("width").value = 256; // a class widget (accessor on its prototype): the scaling happens at once
    expect(JSON.parse(widget("layout_json").value).annos[0].bbox).toEqual([50, 100, 100, 100]);
    expect(view.notice).toMatch(/canvas is now 256x512/);
    // a text of another canvas size sets the size widgets (the editor's own writes do not come back to it)
    widget("layout_json").value = layoutText(768, 384, []);
    expect([widget("width").value, widget("height").value]).toEqual([768, 384]);
    expect(JSON.parse(widget("layout_json").value)).toMatchObject({ width: 768, height: 384, annos: [] });
    // the saved value is still the plain text on the widget
    expect(typeof widget("layout_json").value).toBe("string");
    expect(Object.keys(widget("layout_json"))).toContain("value");
    node.onWidgetChanged?.("width", 768, 768, widget("width")); // harmless when nothing changed
    expect(view.doc.width).toBe(768);
  });

  it("editing in the editor writes layout_json once per change", async () => {
    const { widget, view } = await makeNode();
    const before = widget("width").sets;
    view.doc.caption = "a dog";
    view.commit();
    expect(JSON.parse(widget("layout_json").value).caption).toBe("a dog");
    expect(widget("width").sets).toBe(before);
  });

  it("a removed editor stops watching the widgets", async () => {
    const { node, widget, view } = await makeNode();
    node.instdiffEditor.widget.onRemove();
    widget("layout_json").value = layoutText(512, 512, [{ caption: "x", point: [1, 2] }]);
    expect(view.doc.annos).toEqual([]);
    expect(widget("width").value).toBe(512);
    widget("width").value = 300;
    expect(widget("width").value).toBe(300);
  });

  it("has a minimum size and a comfortable default size", async () => {
    const { node } = await makeNode();
    expect(node.size).toEqual([NODE_DEFAULT_WIDTH, NODE_DEFAULT_HEIGHT]);
    expect(node.computeSize()).toEqual([NODE_MIN_WIDTH, 494]);
    node.setSize([120, 80]); // LiteGraph calls onResize after a resize: the node cannot get smaller than its minimum
    expect(node.size).toEqual([NODE_MIN_WIDTH, 494]);
    node.setSize([700, 1000]);
    expect(node.size).toEqual([700, 1000]);
  });

  it("keeps the JSON text box small, hidden from the Vue renderer, and the editor's minimum on its DOM widget", async () => {
    const { node, widget, view } = await makeNode();
    const json = widget("layout_json");
    expect(json.options.hidden).toBe(true);
    expect(json.options.getMaxHeight()).toBeLessThanOrEqual(64);
    const editor = node.instdiffEditor.widget;
    expect(editor.options.getMinHeight()).toBeGreaterThanOrEqual(300);
    expect(editor.serialize).toBe(false);
    expect(parseInt(view.root.style.minWidth, 10)).toBeGreaterThan(300);
    expect(view.root.style.minHeight).toMatch(/^max\(\d+px, calc\(var\(--node-height, 0px\) - \d+px\)\)$/);
    expect(view.stage.getAttribute("data-capture-wheel")).toBe("true");
  });

  it("shows the last run's warnings in amber and clears them after a run without any", async () => {
    const { node, view } = await makeNode();
    node.onExecuted({ instdiff_layout: [{}], instdiff_warnings: ["instance 0: box cut by the right edge"], instdiff_background: [] });
    frames.run();
    expect(view.warnings.textContent).toBe("⚠ last run: instance 0: box cut by the right edge");
    expect(view.warnings.style.display).toBe("");
    expect(view.status.classList.contains("warn")).toBe(true);
    expect(view.status.textContent).toMatch(/1 warning in the last run/);
    node.onExecuted({ instdiff_layout: [{}], instdiff_warnings: [], instdiff_background: [] });
    frames.run();
    expect(view.warnings.textContent).toBe("");
    expect(view.warnings.style.display).toBe("none");
    expect(view.status.classList.contains("warn")).toBe(false);
  });

  it("a background from the run is shown and remembered in the node's properties", async () => {
    globalThis.Image = class { set src(v) { this._src = v; } get src() { return this._src; } };
    try {
      const { node, view } = await makeNode();
      node.onExecuted({ instdiff_warnings: [], instdiff_background: [{ filename: "bg.png", subfolder: "", type: "temp" }] });
      expect(node.properties.instdiff_background.filename).toBe("bg.png");
      const first = view.pendingBackground;
      expect(first.src).toBe("/api/view?filename=bg.png&subfolder=&type=temp");
      expect(view.background).toBeNull(); // shown once loaded
      first.onload();
      expect(view.background).toBe(first);
      // the next run's picture: the previous one stays until it has loaded; a failed one leaves none
      node.onExecuted({ instdiff_warnings: [], instdiff_background: [{ filename: "bg2.png", subfolder: "", type: "temp" }] });
      expect(view.background).toBe(first);
      view.pendingBackground.onload();
      expect(view.background.src).toMatch(/bg2\.png/);
      node.onExecuted({ instdiff_warnings: [], instdiff_background: [{ filename: "gone.png", subfolder: "", type: "temp" }] });
      view.pendingBackground.onerror();
      expect(view.background).toBeNull();
      // a run without a background input removes the picture
      node.onExecuted({ instdiff_warnings: [], instdiff_background: [] });
      expect(node.properties.instdiff_background).toBeUndefined();
    } finally {
      delete globalThis.Image;
    }
  });
});
