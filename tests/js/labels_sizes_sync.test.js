// Label placement (kept inside the drawn picture, like the Python preview), the node's size rules, the widget value
// hook, and the editor's JSON panel, wheel and warning line.
import { afterEach, describe, expect, it } from "vitest";
import { labelWidth, placeLabel, drawEditor } from "../../web/js/layout_editor/draw.js";
import { fitView } from "../../web/js/layout_editor/geometry.js";
import {
  EDITOR_MIN_HEIGHT, NODE_DEFAULT_HEIGHT, NODE_DEFAULT_WIDTH, NODE_MIN_WIDTH, clampNodeSize, defaultNodeSize, minNodeSize,
} from "../../web/js/layout_editor/node_size.js";
import { watchWidgetValue } from "../../web/js/layout_editor/widget_sync.js";
import { layoutText, makeEditor, removeFrames } from "./editor_harness.js";
import { installFakeDom } from "./fake_dom.js";

afterEach(removeFrames);

const AREA = { x0: 4, y0: 4, x1: 404, y1: 304 }; // a 400 x 300 picture at (4, 4)

describe("placeLabel", () => {
  it("puts a label at its anchor when it fits", () => {
    expect(placeLabel(50, 60, 80, 15, AREA)).toEqual([50, 60]);
  });

  it("clamps a label at the right and bottom edges into the picture (never cut at the canvas edge)", () => {
    expect(placeLabel(390, 300, 80, 15, AREA)).toEqual([404 - 80, 304 - 15]);
    expect(placeLabel(-20, -5, 80, 15, AREA)).toEqual([4, 4]);
  });

  it("a label wider than the picture starts at its left edge", () => {
    expect(placeLabel(200, 100, 500, 15, AREA)).toEqual([4, 100]);
  });

  it("a point's label sits right of the marker, and flips to its left at the right edge", () => {
    expect(placeLabel(100, 100, 60, 14, AREA, [], "point")).toEqual([109, 93]);
    expect(placeLabel(380, 100, 60, 14, AREA, [], "point")).toEqual([380 - 9 - 60, 93]);
    // no room on either side: clamped
    expect(placeLabel(30, 100, 390, 14, AREA, [], "point")).toEqual([404 - 390, 93]);
  });

  it("a label covering an earlier one moves down by whole label heights, up at the bottom", () => {
    const placed = [[50, 60, 130, 75]];
    expect(placeLabel(50, 60, 80, 15, AREA, placed)).toEqual([50, 75]);
    const bottom = [[50, 289, 130, 304]];
    expect(placeLabel(50, 300, 80, 15, AREA, bottom)).toEqual([50, 274]);
  });

  it("labelWidth: the text plus padding, at most 220 px and never wider than the picture", () => {
    expect(labelWidth(50, 400)).toBe(56);
    expect(labelWidth(500, 400)).toBe(220);
    expect(labelWidth(500, 150)).toBe(150);
  });
});

/** A 2D context that records fillRect calls (the label backgrounds among them). */
function recordingContext() {
  const rects = [];
  const ops = []; // "label" / "arc", in drawing order
  const ctx = new Proxy({ rects, ops }, {
    get(target, prop) {
      if (prop in target) return target[prop];
      if (prop === "fillRect") {
        return (...a) => {
          rects.push([...a, target.fillStyle]);
          if (a[3] === 15) ops.push("label");
        };
      }
      if (prop === "arc") return () => ops.push("arc");
      if (prop === "measureText") return (t) => ({ width: 6 * String(t).length });
      return () => {};
    },
    set(target, prop, value) {
      target[prop] = value;
      return true;
    },
  });
  return ctx;
}

describe("drawEditor labels", () => {
  it("every label stays inside the drawn picture, for boxes, points and scribbles at the edges", () => {
    installFakeDom();
    const doc = { caption: "", width: 200, height: 100, annos: [
      { caption: "a very long prompt for a box in the corner", bbox: [190, 95, 10, 5] },
      { caption: "a point at the right edge", point: [199, 50] },
      { caption: "a scribble at the bottom", scribble: [[0, 99], [50, 99]] },
      { caption: "a box at the top", bbox: [0, 0, 50, 50] },
    ] };
    const view = fitView(200, 100, 208, 108, 4);
    const ctx = recordingContext();
    drawEditor(ctx, { doc, view, selected: -1, maskOf: () => null, maskLayerOf: () => null, background: null, draft: null,
      draftIndex: 4, pendingLayer: null, hover: null, moveOffset: null, brushCursor: false, brushRadius: 4, erase: false,
      cssWidth: 208, cssHeight: 108, dpr: 1 });
    const labels = ctx.rects.filter(([, , , h, style]) => h === 15 && String(style).startsWith("rgba("));
    expect(labels).toHaveLength(4);
    for (const [x, y, w, h] of labels) {
      expect(x).toBeGreaterThanOrEqual(4);
      expect(y).toBeGreaterThanOrEqual(4);
      expect(x + w).toBeLessThanOrEqual(204 + 1e-9);
      expect(y + h).toBeLessThanOrEqual(104 + 1e-9);
    }
    // point markers come after every label (a label never hides a marker), as in the Python preview
    expect(ctx.ops.lastIndexOf("label")).toBeLessThan(ctx.ops.lastIndexOf("arc"));
    expect(ctx.ops.slice(ctx.ops.lastIndexOf("label"))).toContain("arc");
    // no two labels overlap
    for (let i = 0; i < labels.length; i++) {
      for (let j = i + 1; j < labels.length; j++) {
        const [a, b] = [labels[i], labels[j]];
        const apart = a[0] + a[2] <= b[0] || b[0] + b[2] <= a[0] || a[1] + a[3] <= b[1] || b[1] + b[3] <= a[1];
        expect(apart, `labels ${i} and ${j}`).toBe(true);
      }
    }
  });
});

describe("node sizes", () => {
  it("the minimum is LiteGraph's own, and never narrower than NODE_MIN_WIDTH", () => {
    expect(minNodeSize([210, 494])).toEqual([NODE_MIN_WIDTH, 494]);
    expect(minNodeSize([520, 600])).toEqual([520, 600]);
    expect(minNodeSize([NaN, undefined])).toEqual([NODE_MIN_WIDTH, 0]);
    expect(EDITOR_MIN_HEIGHT).toBeGreaterThanOrEqual(300); // toolbar, caption, a drawing area, prompt rows, status
  });

  it("clampNodeSize changes the given array in place", () => {
    const size = [100, 1000];
    expect(clampNodeSize(size, [400, 500])).toBe(true);
    expect(size).toEqual([400, 1000]);
    expect(clampNodeSize(size, [400, 500])).toBe(false);
    const typed = new Float64Array([10, 10]);
    clampNodeSize(typed, [400, 500]);
    expect([...typed]).toEqual([400, 500]);
  });

  it("a new node gets the default size, or its minimum if that is larger", () => {
    expect(defaultNodeSize([210, 494], [400, 494])).toEqual([NODE_DEFAULT_WIDTH, NODE_DEFAULT_HEIGHT]);
    expect(defaultNodeSize([800, 100], [400, 1200])).toEqual([800, 1200]);
    expect(NODE_DEFAULT_HEIGHT - 300).toBeGreaterThanOrEqual(400 + 112); // ~400 px drawing area beside a full list
  });
});

describe("watchWidgetValue", () => {
  it("a plain data property: reads unchanged, every assignment reported, unwatch restores", () => {
    const widget = { name: "w", value: 1 };
    const seen = [];
    const unwatch = watchWidgetValue(widget, (v) => seen.push(v));
    expect(widget.value).toBe(1);
    widget.value = 2;
    widget.value = 2;
    expect(seen).toEqual([2, 2]);
    expect(JSON.parse(JSON.stringify(widget))).toEqual({ name: "w", value: 2 });
    unwatch();
    widget.value = 3;
    expect(seen).toEqual([2, 2]);
    expect(Object.getOwnPropertyDescriptor(widget, "value")).toMatchObject({ value: 3, writable: true });
  });

  it("an accessor on the class: its getter and setter still run (with the widget as this)", () => {
    class W {
      constructor() { this.store = { v: "a" }; this.setterCalls = 0; }

      get value() { return this.store.v; }

      set value(v) { this.setterCalls++; this.store.v = v; }
    }
    const widget = new W();
    const seen = [];
    const unwatch = watchWidgetValue(widget, (v) => seen.push(v));
    widget.value = "b";
    expect([widget.value, widget.store.v, widget.setterCalls, seen]).toEqual(["b", "b", 1, ["b"]]);
    widget.store.v = "c"; // a write behind the accessor is read back, but (naturally) not reported
    expect(widget.value).toBe("c");
    unwatch();
    expect(Object.getOwnPropertyDescriptor(widget, "value")).toBeUndefined();
    widget.value = "d";
    expect([widget.setterCalls, seen]).toEqual([2, ["b"]]);
  });

  it("a value that cannot be redefined is left alone", () => {
    const widget = {};
    Object.defineProperty(widget, "value", { value: 1, writable: true, configurable: false });
    expect(watchWidgetValue(widget, () => {})).toBeNull();
  });
});

describe("the editor's JSON panel, wheel and warnings", () => {
  it("the JSON button shows the layout text; typing there edits the layout (and broken text is an error)", () => {
    const ed = makeEditor({ text: layoutText(200, 100, [{ caption: "a", bbox: [10, 10, 20, 20] }]) });
    expect(ed.view.jsonArea.style.display).toBe("none");
    ed.view.jsonButton.dispatch("click");
    expect(ed.view.jsonArea.style.display).toBe("");
    expect(JSON.parse(ed.view.jsonArea.value).annos).toHaveLength(1);
    ed.view.jsonArea.focus();
    ed.view.jsonArea.value = layoutText(200, 100, [{ caption: "b", point: [5, 6] }]);
    ed.view.jsonArea.dispatch("input");
    expect(ed.annos()).toEqual([{ caption: "b", point: [5, 6] }]);
    expect(ed.view.doc.annos).toEqual([{ caption: "b", point: [5, 6] }]);
    ed.view.jsonArea.value = '{"caption": ';
    ed.view.jsonArea.dispatch("input");
    expect(ed.view.error).toMatch(/not valid JSON/);
    ed.key("z", { ctrlKey: true }); // Ctrl+Z on the canvas keys: back to the last layout that parsed
    expect(ed.annos()).toEqual([{ caption: "b", point: [5, 6] }]);
    ed.view.keySink.focus();
    ed.frames.run();
    expect(JSON.parse(ed.view.jsonArea.value).annos).toEqual([{ caption: "b", point: [5, 6] }]);
    ed.view.jsonButton.dispatch("click");
    expect(ed.view.jsonArea.style.display).toBe("none");
  });

  it("the wheel over the drawing area sizes the brush; other tools leave it to ComfyUI", () => {
    const ed = makeEditor();
    let e = ed.view.canvas.dispatch("wheel", { deltaY: -100 });
    expect(e.defaultPrevented).toBe(false);
    ed.tool("brush");
    const r = ed.view.brushRadius;
    e = ed.view.canvas.dispatch("wheel", { deltaY: -100 });
    expect(e.defaultPrevented).toBe(true);
    expect(ed.view.brushRadius).toBe(r + 2);
    ed.view.canvas.dispatch("wheel", { deltaY: 100, ctrlKey: true }); // Ctrl+wheel: the graph zoom
    expect(ed.view.brushRadius).toBe(r + 2);
    expect(ed.view.stage.getAttribute("data-capture-wheel")).toBe("true");
  });

  it("run warnings: amber line, cleared by a run without any; layout issues stay red", () => {
    const ed = makeEditor({ text: layoutText(200, 100, [{ caption: "a", bbox: [10, 10, 20, 20] }]) });
    ed.view.setRunWarnings(["instance 0 is small", "instance 1 is cut"]);
    expect(ed.view.warnings.textContent).toBe("⚠ last run: instance 0 is small · instance 1 is cut");
    expect(ed.view.status.classList.contains("warn")).toBe(true);
    expect(ed.view.status.classList.contains("error")).toBe(false);
    ed.view.setRunWarnings([]);
    expect(ed.view.warnings.style.display).toBe("none");
    expect(ed.view.status.classList.contains("warn")).toBe(false);
    ed.view.setRunWarnings(undefined);
    expect(ed.view.warnings.textContent).toBe("");
  });
});
