// The editor view driven through its real pointer and key handlers (fake DOM): what each tool writes into the
// layout JSON, undo/redo, the keyboard, the slot limit and broken text.
import { afterEach, describe, expect, it } from "vitest";
import { boxes, layoutText, makeEditor, removeFrames } from "./editor_harness.js";
import { decodeRLE, emptyMask, maskCount, paintStroke } from "../../web/js/layout_editor/mask_bitmap.js";

afterEach(removeFrames);

const SLOT_NOTICE = /the model has 30 instance slots/;

describe("box, point and scribble tools", () => {
  it("a drag draws a box on a new instance whose prompt gets the focus; undo and redo step through it", () => {
    const ed = makeEditor();
    expect(ed.view.tool).toBe("box");
    ed.drag([[20.4, 10], [50, 30], [80.2, 60.6]]);
    expect(ed.annos()).toEqual([{ caption: "", bbox: [20, 10, 60, 51] }]);
    expect(ed.view.selected).toBe(0);
    expect(ed.dom.activeElement).toBe(ed.prompt(0));
    ed.type(0, "a fox");
    ed.key("Enter", {}, ed.prompt(0)); // back to the canvas keys
    expect(ed.dom.activeElement).toBe(ed.view.keySink);
    expect(ed.annos()[0].caption).toBe("a fox");
    ed.key("z", { ctrlKey: true });
    expect(ed.annos()).toEqual([{ caption: "", bbox: [20, 10, 60, 51] }]);
    ed.key("z", { ctrlKey: true });
    expect(ed.annos()).toEqual([]);
    ed.key("y", { ctrlKey: true });
    ed.key("z", { ctrlKey: true, shiftKey: true });
    expect(ed.annos()[0].caption).toBe("a fox");
  });

  it("a click with the box tool is not a box", () => {
    const ed = makeEditor();
    ed.click([30, 30]);
    expect(ed.annos()).toEqual([]);
    expect(ed.notice()).toBe("drag to draw a box");
  });

  it("Shift gives the selected instance the new location instead of adding one", () => {
    const ed = makeEditor({ text: layoutText(200, 100, [{ caption: "a", bbox: [10, 10, 20, 20] }]) });
    ed.tool("select");
    ed.click([15, 15]);
    expect(ed.view.selected).toBe(0);
    ed.tool("box");
    ed.drag([[100, 50], [150, 90]], { shiftKey: true });
    expect(ed.annos()).toEqual([{ caption: "a", bbox: [100, 50, 50, 40] }]);
    ed.key("p");
    ed.click([3.4, 97.6], { shiftKey: true });
    expect(ed.annos()).toEqual([{ caption: "a", bbox: [100, 50, 50, 40], point: [3, 98] }]);
  });

  it("the point tool places a rounded point; a click off the canvas places nothing", () => {
    const ed = makeEditor();
    ed.key("p");
    expect(ed.view.tool).toBe("point");
    ed.click([-3, 50]);
    expect(ed.annos()).toEqual([]);
    ed.click([120.6, 40.2]);
    expect(ed.annos()).toEqual([{ caption: "", point: [121, 40] }]);
    expect(ed.notice()).toBe("point placed on instance 0");
  });

  it("the scribble tool stores the stroke as 20 points from its start to its end", () => {
    const ed = makeEditor();
    ed.key("s");
    ed.drag([[10, 90], [40, 60], [70, 80], [100, 40], [190, 20]]);
    const [a] = ed.annos();
    expect(a.scribble).toHaveLength(20);
    expect(a.scribble[0]).toEqual([10, 90]);
    expect(a.scribble[19]).toEqual([190, 20]);
    ed.key("Escape");
    ed.click([50, 50]); // a click is not a scribble
    expect(ed.annos()).toHaveLength(1);
    expect(ed.notice()).toBe("drag to draw a scribble");
  });
});

describe("brush and polygon tools", () => {
  it("a brush stroke becomes an RLE mask of exactly the painted pixels; Alt erases from the selected mask", () => {
    const ed = makeEditor();
    ed.key("m");
    ed.drag([[100, 50], [120, 50], [140, 60]]);
    const expected = emptyMask(200, 100);
    paintStroke(expected, 200, 100, 100, 50, 100, 50, 12);
    paintStroke(expected, 200, 100, 100, 50, 120, 50, 12);
    paintStroke(expected, 200, 100, 120, 50, 140, 60, 12);
    const [a] = ed.annos();
    expect(a.mask.size).toEqual([100, 200]);
    expect(decodeRLE(a.mask, 200, 100)).toEqual(expected);
    expect(ed.view.selected).toBe(0);

    ed.drag([[120, 0], [120, 99]], { altKey: true }); // Alt: erase a stripe out of the selected mask
    paintStroke(expected, 200, 100, 120, 0, 120, 0, 12, 0);
    paintStroke(expected, 200, 100, 120, 0, 120, 99, 12, 0);
    const erased = decodeRLE(ed.annos()[0].mask, 200, 100);
    expect(erased).toEqual(expected);
    expect(maskCount(erased)).toBeGreaterThan(0);
    expect(ed.annos()).toHaveLength(1);
  });

  it("the brush adds to the selected instance's mask; erasing without a mask selected does nothing", () => {
    const ed = makeEditor();
    ed.key("m");
    ed.drag([[30, 30], [40, 30]]);
    ed.drag([[150, 70], [160, 70]]); // still selected: the same instance
    expect(ed.annos()).toHaveLength(1);
    const bits = decodeRLE(ed.annos()[0].mask, 200, 100);
    expect(bits[30 * 200 + 35]).toBe(1);
    expect(bits[70 * 200 + 155]).toBe(1);
    ed.key("Escape");
    ed.drag([[100, 50], [110, 50]], { altKey: true });
    expect(ed.notice()).toBe("select an instance with a mask to erase from it");
    expect(ed.annos()).toHaveLength(1);
    ed.drag([[100, 50], [110, 50]]); // deselected: a new instance
    expect(ed.annos()).toHaveLength(2);
  });

  it("polygon: clicking the first corner closes it; Delete drops the last corner; Escape and Enter", () => {
    const ed = makeEditor();
    ed.key("g");
    for (const p of [[10, 10], [60, 10], [99, 99], [60, 60]]) ed.click(p);
    ed.key("Delete"); // drops (60, 60), not an instance
    expect(ed.annos()).toEqual([]);
    ed.click([10.6, 10.4]); // on the first corner: closes
    expect(ed.annos()).toEqual([{ caption: "", mask: [[10, 10, 60, 10, 99, 99]] }]);
    expect(ed.notice()).toBe("polygon mask placed on instance 0");

    ed.key("Escape"); // deselect
    for (const p of [[150, 10], [190, 10], [190, 50]]) ed.click(p);
    ed.key("Escape"); // cancels the polygon, keeps no corner
    ed.key("Enter");
    expect(ed.annos()).toHaveLength(1);
    for (const p of [[150, 10], [190, 10], [190, 50]]) ed.click(p);
    ed.key("Enter");
    expect(ed.annos()[1]).toEqual({ caption: "", mask: [[150, 10, 190, 10, 190, 50]] });

    ed.tool("polygon"); // instance 1 is selected and has a polygon mask: a new polygon adds to it
    for (const p of [[100, 80], [120, 80], [120, 95]]) ed.click(p);
    ed.view.canvas.dispatch("dblclick", {});
    expect(ed.annos()).toHaveLength(2);
    expect(ed.annos()[1].mask).toEqual([[150, 10, 190, 10, 190, 50], [100, 80, 120, 80, 120, 95]]);
    expect(ed.notice()).toBe("polygon added to instance 1's mask");
  });

  it("a polygon without area is refused; switching tools drops a polygon in progress", () => {
    const ed = makeEditor();
    ed.key("g");
    for (const p of [[10, 10], [20, 10], [30, 10]]) ed.click(p);
    ed.key("Enter");
    expect(ed.notice()).toBe("a polygon needs at least 3 corners enclosing some area");
    for (const p of [[10, 10], [50, 10], [50, 50]]) ed.click(p);
    ed.key("b");
    ed.key("g");
    ed.key("Enter");
    expect(ed.annos()).toEqual([]);
  });
});

describe("select tool", () => {
  const start = () => makeEditor({ text: layoutText(200, 100, [
    { caption: "box", bbox: [20, 20, 40, 30] }, { caption: "dot", point: [150, 50] }]) });

  it("drag moves the instance (clamped to the canvas), one undo step", () => {
    const ed = start();
    ed.key("v");
    ed.drag([[30, 30], [50, 40], [60, 45]]);
    expect(ed.view.selected).toBe(0);
    expect(ed.annos()[0].bbox).toEqual([50, 35, 40, 30]);
    ed.drag([[60, 40], [0, -100]]);
    expect(ed.annos()[0].bbox).toEqual([0, 0, 40, 30]);
    ed.key("z", { ctrlKey: true });
    ed.key("z", { ctrlKey: true });
    expect(ed.annos()[0].bbox).toEqual([20, 20, 40, 30]);
  });

  it("a box handle resizes; pointercancel puts the box back", () => {
    const ed = start();
    ed.key("v");
    ed.click([30, 30]);
    ed.drag([[60, 50], [100, 80]]); // the south-east corner
    expect(ed.annos()[0].bbox).toEqual([20, 20, 80, 60]);
    const before = ed.host.text;
    ed.down([100, 80]);
    ed.move([190, 95]);
    expect(ed.view.doc.annos[0].bbox).toEqual([20, 20, 170, 75]); // live while dragging
    ed.cancel();
    expect(ed.host.text).toBe(before);
    expect(ed.view.doc.annos[0].bbox).toEqual([20, 20, 80, 60]);
  });

  it("clicking empty canvas deselects; Delete removes the selected instance and Ctrl+Z brings it back", () => {
    const ed = start();
    ed.key("v");
    ed.click([150, 51]);
    expect(ed.view.selected).toBe(1);
    ed.key("Delete");
    expect(ed.annos().map((a) => a.caption)).toEqual(["box"]);
    ed.key("z", { ctrlKey: true });
    expect(ed.annos().map((a) => a.caption)).toEqual(["box", "dot"]);
    ed.click([100, 90]);
    expect(ed.view.selected).toBe(-1);
    ed.key("Delete");
    expect(ed.annos()).toHaveLength(2);
  });
});

describe("the 30 instance slots", () => {
  const full = () => makeEditor({ text: layoutText(200, 100, boxes(30)) });

  it.each([
    ["box", (ed) => ed.drag([[100, 70], [150, 95]])],
    ["point", (ed) => ed.click([120, 80])],
    ["scribble", (ed) => ed.drag([[100, 70], [130, 90], [190, 80]])],
    ["brush", (ed) => ed.drag([[100, 70], [130, 90]])],
    ["polygon", (ed) => { for (const p of [[100, 70], [150, 70], [150, 95]]) ed.click(p); ed.key("Enter"); }],
  ])("the %s tool adds no 31st instance and says why", (tool, draw) => {
    const ed = full();
    const before = ed.host.text;
    ed.tool(tool);
    draw(ed);
    expect(ed.host.text).toBe(before);
    expect(ed.notice()).toMatch(SLOT_NOTICE);
  });

  it("Shift still edits the selected instance when every slot is taken", () => {
    const ed = full();
    ed.tool("select");
    ed.click([5, 5]);
    expect(ed.view.selected).toBe(0);
    ed.tool("box");
    ed.drag([[100, 70], [150, 95]], { shiftKey: true });
    expect(ed.annos()).toHaveLength(30);
    expect(ed.annos()[0].bbox).toEqual([100, 70, 50, 25]);
  });
});

describe("keyboard and broken text", () => {
  it("tool keys switch tools; [ and ] change the brush radius; Ctrl+S is left to ComfyUI", () => {
    const ed = makeEditor();
    for (const [key, tool] of [["v", "select"], ["b", "box"], ["p", "point"], ["s", "scribble"], ["m", "brush"], ["g", "polygon"]]) {
      ed.key(key);
      expect(ed.view.tool).toBe(tool);
      expect(ed.view.toolButtons[tool].classList.contains("active")).toBe(true);
    }
    ed.key("]");
    expect(ed.view.brushRadius).toBe(14);
    ed.key("[");
    ed.key("[");
    expect(ed.view.brushRadius).toBe(10);
    const save = ed.key("s", { ctrlKey: true });
    expect(save.defaultPrevented).toBe(false);
    expect(ed.view.tool).toBe("polygon");
  });

  it("broken layout_json blocks drawing and Ctrl+Z returns to the last good layout", () => {
    const good = layoutText(200, 100, [{ caption: "a", bbox: [10, 10, 20, 20] }]);
    const ed = makeEditor({ text: good });
    ed.host.text = '{"caption": "oops", ';
    ed.view.sync();
    ed.drag([[50, 50], [90, 90]]);
    expect(ed.host.text).toBe('{"caption": "oops", ');
    ed.frames.run();
    expect(ed.view.status.textContent).toMatch(/not valid JSON at line 1/);
    ed.key("z", { ctrlKey: true });
    expect(ed.host.text).toBe(good);
    ed.frames.run();
    expect(ed.view.status.textContent).toMatch(/^200x100, 1 instance/);
  });
});
