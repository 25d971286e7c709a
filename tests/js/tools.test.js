// The tool objects (web/js/layout_editor/tools/): their interface, how the view dispatches pointer input to them,
// and the one slot-limit guard every instance-creating tool goes through.
import { afterEach, describe, expect, it, vi } from "vitest";
import { boxes, layoutText, makeEditor, removeFrames } from "./editor_harness.js";
import { TOOL_ORDER, createTools } from "../../web/js/layout_editor/tools/index.js";
import { SLOT_LIMIT_MESSAGE } from "../../web/js/layout_editor/layout_doc.js";

afterEach(removeFrames);

/** A tool object that records what the view sends it. */
function spyTool(id, { startsDrag = true } = {}) {
  return {
    id, label: id, key: { box: "b", polygon: "g" }[id], hint: `${id} hint`, cursor: "crosshair",
    down: vi.fn(() => startsDrag), move: vi.fn(), up: vi.fn(), cancel: vi.fn(() => false), drawState: vi.fn(() => null),
  };
}

describe("tool objects", () => {
  it("one object per tool, each with the pointer interface, a unique shortcut and a hint", () => {
    const tools = createTools({});
    expect(Object.keys(tools)).toEqual(TOOL_ORDER);
    expect(TOOL_ORDER).toEqual(["select", "box", "point", "scribble", "brush", "polygon"]);
    for (const [id, t] of Object.entries(tools)) {
      expect(t.id).toBe(id);
      for (const m of ["down", "move", "up", "cancel", "drawState"]) expect(typeof t[m]).toBe("function");
      expect(t.hint.length).toBeGreaterThan(10);
    }
    expect(Object.values(tools).map((t) => t.key)).toEqual(["v", "b", "p", "s", "m", "g"]);
    expect(createTools({}).box).not.toBe(tools.box); // per editor: no state shared between two nodes
  });

  it("the view sends down/move/up to this.tools[this.tool], in layout pixels", () => {
    const ed = makeEditor();
    const spy = spyTool("box");
    ed.view.tools.box = spy;
    ed.down([10, 20]);
    ed.move([30, 40]);
    ed.up([50, 60]);
    expect(spy.down).toHaveBeenCalledTimes(1);
    expect(spy.down.mock.calls[0][1]).toEqual([10, 20]);
    expect(spy.move.mock.calls[0][1]).toEqual([30, 40]);
    expect(spy.up.mock.calls[0][1]).toEqual([50, 60]);
    expect(ed.view.canvas.style.cursor).toBe("crosshair");
  });

  it("a tool whose down() starts no drag gets no up(); hover moves still reach the current tool", () => {
    const ed = makeEditor();
    const spy = spyTool("polygon", { startsDrag: false });
    ed.view.tools.polygon = spy;
    ed.key("g");
    ed.click([10, 10]);
    ed.move([12, 12]);
    expect(spy.down).toHaveBeenCalledTimes(1);
    expect(spy.up).not.toHaveBeenCalled();
    expect(spy.move).toHaveBeenCalledTimes(1);
    expect(ed.view.hover).toEqual([12, 12]);
  });

  it("a drag finishes with the tool that started it, even after a tool key; pointercancel calls cancel()", () => {
    const ed = makeEditor();
    const box = spyTool("box");
    ed.view.tools.box = box;
    ed.down([10, 10]);
    ed.key("p"); // switch tools mid-drag
    expect(box.cancel).not.toHaveBeenCalled();
    ed.move([20, 20]);
    ed.up([30, 30]);
    expect(box.move).toHaveBeenCalledTimes(1);
    expect(box.up).toHaveBeenCalledTimes(1);
    ed.key("b");
    ed.down([10, 10]);
    ed.cancel();
    expect(box.cancel).toHaveBeenCalledTimes(1); // the pointercancel
    ed.up([30, 30]);
    expect(box.up).toHaveBeenCalledTimes(1); // the cancelled drag gets no release
    ed.key("s"); // leaving a tool with no drag held cancels its work in progress
    expect(box.cancel).toHaveBeenCalledTimes(2);
  });

  it("no tool sees pointer input while layout_json is broken", () => {
    const ed = makeEditor();
    const spy = spyTool("box");
    ed.view.tools.box = spy;
    ed.host.text = "{";
    ed.view.sync();
    ed.drag([[10, 10], [40, 40]]);
    expect(spy.down).not.toHaveBeenCalled();
    expect(spy.up).not.toHaveBeenCalled();
    expect(ed.notice()).toBe("fix the layout JSON (or Undo) before drawing");
  });

  it("the box tool's draft is drawn while dragging and gone after cancel (Escape)", () => {
    const ed = makeEditor();
    ed.down([10, 10]);
    ed.move([40, 30]);
    expect(ed.view.tools.box.drawState()).toEqual({ draft: { kind: "box", box: [10, 10, 40, 30] } });
    ed.key("Escape");
    expect(ed.view.tools.box.drawState()).toBeNull();
    ed.up([40, 30]);
    expect(ed.annos()).toEqual([]);
  });

  it("the select tool offers the move offset to the drawing while dragging, not before the release", () => {
    const ed = makeEditor({ text: layoutText(200, 100, [{ caption: "a", bbox: [20, 20, 40, 30] }]) });
    ed.key("v");
    ed.down([30, 30]);
    ed.move([45, 38]);
    expect(ed.view.tools.select.drawState()).toEqual({ moveOffset: [15, 8] });
    expect(ed.annos()[0].bbox).toEqual([20, 20, 40, 30]); // the text changes on release only
    ed.up([45, 38]);
    expect(ed.annos()[0].bbox).toEqual([35, 28, 40, 30]);
    expect(ed.view.tools.select.drawState()).toBeNull();
  });
});

describe("the one slot-limit guard", () => {
  const draws = {
    box: (ed) => ed.drag([[100, 70], [150, 95]]),
    point: (ed) => ed.click([120, 80]),
    scribble: (ed) => ed.drag([[100, 70], [130, 90], [190, 80]]),
    brush: (ed) => ed.drag([[100, 70], [130, 90]]),
    polygon: (ed) => { for (const p of [[100, 70], [150, 70], [150, 95]]) ed.click(p); ed.key("Enter"); },
  };

  it.each(Object.keys(draws))("the %s tool asks requireFreeSlot() and shows its one message when full", (tool) => {
    const ed = makeEditor({ text: layoutText(200, 100, boxes(30)) });
    const guard = vi.spyOn(ed.view, "requireFreeSlot");
    ed.tool(tool);
    draws[tool](ed);
    expect(guard).toHaveBeenCalled();
    expect(guard.mock.results.every((r) => r.value === false)).toBe(true);
    expect(ed.notice()).toBe(SLOT_LIMIT_MESSAGE);
    expect(ed.annos()).toHaveLength(30);
  });

  it.each(Object.keys(draws))("the %s tool fills the 30th slot, then the guard stops the 31st", (tool) => {
    const ed = makeEditor({ text: layoutText(200, 100, boxes(29)) });
    ed.tool(tool);
    draws[tool](ed);
    expect(ed.annos()).toHaveLength(30);
    ed.key("Escape"); // deselect, so the brush and polygon would start a new instance
    ed.tool(tool);
    draws[tool](ed);
    expect(ed.annos()).toHaveLength(30);
    expect(ed.notice()).toBe(SLOT_LIMIT_MESSAGE);
  });

  it("the select tool never asks for a slot; Shift onto the selected instance needs none", () => {
    const ed = makeEditor({ text: layoutText(200, 100, boxes(30)) });
    const guard = vi.spyOn(ed.view, "requireFreeSlot");
    ed.tool("select");
    ed.click([5, 5]);
    ed.drag([[5, 5], [8, 8]]);
    ed.tool("point");
    ed.click([150, 80], { shiftKey: true });
    expect(guard).not.toHaveBeenCalled();
    expect(ed.annos()[0].point).toEqual([150, 80]);
  });

  it("when full, the refusal comes at the first press, before anything is drawn", () => {
    const ed = makeEditor({ text: layoutText(200, 100, boxes(30)) });
    for (const tool of ["box", "scribble", "brush", "polygon"]) {
      ed.view.notice = "";
      ed.tool(tool);
      ed.down([100, 70]);
      ed.move([150, 95]);
      expect(ed.notice()).toBe(SLOT_LIMIT_MESSAGE);
      expect(ed.view.gestureTool).toBeNull();
      expect(ed.view.tools[tool].drawState({})).toBeNull(); // no draft, no corner, no stroke
      ed.up([150, 95]);
    }
  });

  it("Shift with nothing selected still needs a free slot", () => {
    const ed = makeEditor({ text: layoutText(200, 100, boxes(30)) });
    ed.key("p");
    ed.click([150, 80], { shiftKey: true });
    expect(ed.notice()).toBe(SLOT_LIMIT_MESSAGE);
    expect(ed.annos()).toHaveLength(30);
  });
});
