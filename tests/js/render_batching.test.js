// Render batching: render() schedules one animation frame (frame.js), the brush paints its stroke into the bitmap
// per pointer event and patches the displayed layer only in the touched rectangle, once per frame.
import { afterEach, describe, expect, it, vi } from "vitest";
import { frameScheduler } from "../../web/js/layout_editor/frame.js";
import { maskLayer, updateMaskLayer } from "../../web/js/layout_editor/draw.js";
import { emptyMask, paintStroke, strokeBounds } from "../../web/js/layout_editor/mask_bitmap.js";
import { installFakeDom } from "./fake_dom.js";
import { layoutText, makeEditor, manualFrames, removeFrames } from "./editor_harness.js";

afterEach(() => {
  removeFrames();
  vi.useRealTimers();
});

/** Alpha channel of a fake canvas as 0/1 per pixel. */
const alphaBits = (canvas) => {
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  return Uint8Array.from({ length: canvas.width * canvas.height }, (_, i) => (data[4 * i + 3] ? 1 : 0));
};

describe("frame scheduler", () => {
  it("draws once per frame however often it is asked", () => {
    const queue = [];
    const requestFrame = vi.fn((cb) => queue.push(cb));
    const draw = vi.fn();
    const s = frameScheduler(draw, { requestFrame, cancelFrame: () => {} });
    for (let i = 0; i < 5; i++) s.request();
    expect(requestFrame).toHaveBeenCalledTimes(1);
    expect(draw).not.toHaveBeenCalled();
    expect(s.pending).toBe(true);
    queue.shift()();
    expect(draw).toHaveBeenCalledTimes(1);
    expect(s.pending).toBe(false);
    s.request();
    expect(requestFrame).toHaveBeenCalledTimes(2);
  });

  it("flush() draws now and drops the frame; cancel() drops it without drawing", () => {
    const queue = [];
    const cancelFrame = vi.fn();
    const draw = vi.fn();
    const s = frameScheduler(draw, { requestFrame: (cb) => queue.push(cb), cancelFrame });
    expect(s.flush()).toBe(false);
    s.request();
    expect(s.flush()).toBe(true);
    expect(draw).toHaveBeenCalledTimes(1);
    expect(cancelFrame).toHaveBeenCalledWith(1);
    queue.shift()(); // the dropped frame still fires where cancelling is not possible: nothing is drawn twice
    expect(draw).toHaveBeenCalledTimes(1);
    s.request();
    s.cancel();
    queue.shift()();
    expect(draw).toHaveBeenCalledTimes(1);
  });

  it("falls back to a timer where requestAnimationFrame does not exist", () => {
    vi.useFakeTimers();
    removeFrames();
    const draw = vi.fn();
    const s = frameScheduler(draw);
    s.request();
    s.request();
    vi.advanceTimersByTime(5);
    expect(draw).not.toHaveBeenCalled();
    vi.advanceTimersByTime(20);
    expect(draw).toHaveBeenCalledTimes(1);
    s.request();
    s.cancel();
    vi.advanceTimersByTime(50);
    expect(draw).toHaveBeenCalledTimes(1);
  });

  it("uses requestAnimationFrame when it exists at request time", () => {
    const frames = manualFrames();
    const draw = vi.fn();
    const s = frameScheduler(draw);
    s.request();
    expect(frames.requested).toBe(1);
    expect(frames.run()).toBe(1);
    expect(draw).toHaveBeenCalledTimes(1);
  });

  it("copes with a frame function that calls back at once", () => {
    const draw = vi.fn();
    const s = frameScheduler(draw, { requestFrame: (cb) => { cb(); return 7; }, cancelFrame: () => {} });
    s.request();
    s.request();
    expect(draw).toHaveBeenCalledTimes(2);
    expect(s.pending).toBe(false);
  });
});

describe("the editor draws once per frame", () => {
  it("pointer moves and render() calls between two frames cost one drawing", () => {
    const ed = makeEditor();
    const ctx = ed.view.canvas.getContext("2d");
    const drawn = ctx.count("clearRect");
    const requested = ed.frames.requested;
    ed.down([10, 10]);
    for (let i = 0; i < 40; i++) ed.move([10 + i, 10 + i / 2]);
    ed.view.render();
    expect(ctx.count("clearRect")).toBe(drawn); // nothing drawn synchronously
    expect(ed.frames.requested - requested).toBe(1);
    expect(ed.frames.run()).toBe(1);
    expect(ctx.count("clearRect")).toBe(drawn + 1);
    expect(ed.frames.run()).toBe(0); // nothing more to draw
  });

  it("renderNow() draws at once and drops the pending frame; destroy() drops it too", () => {
    const ed = makeEditor();
    const ctx = ed.view.canvas.getContext("2d");
    const drawn = ctx.count("clearRect");
    ed.view.render();
    ed.view.renderNow();
    expect(ctx.count("clearRect")).toBe(drawn + 1);
    expect(ed.frames.run()).toBe(0);
    ed.view.render();
    ed.view.destroy();
    expect(ed.frames.run()).toBe(0);
    expect(ctx.count("clearRect")).toBe(drawn + 1);
  });

  it("the status line follows the document on the next frame", () => {
    const ed = makeEditor({ text: layoutText(200, 100, [{ caption: "a", bbox: [1, 1, 5, 5] }]) });
    ed.frames.run();
    expect(ed.view.status.textContent).toBe("200x100, 1 instance");
    ed.host.text = layoutText(200, 100, [{ caption: "a", bbox: [1, 1, 5, 5] }, { caption: "b", point: [9, 9] }]);
    ed.view.sync();
    ed.frames.run();
    expect(ed.view.status.textContent).toBe("200x100, 2 instances");
  });
});

describe("brushing paints incrementally", () => {
  it("one layer per stroke, patched once per frame in the touched rectangle only, equal to the bitmap", () => {
    const ed = makeEditor();
    ed.key("m");
    const canvasesBefore = ed.dom.canvases().length;
    ed.down([40, 50]);
    for (let x = 42; x <= 80; x += 2) ed.move([x, 50]); // 20 pointer events
    ed.frames.run();
    const g = ed.view.tools.brush.gesture;
    expect(ed.dom.canvases().length).toBe(canvasesBefore + 1); // built on the first frame, not per event
    const layerCtx = g.layer.getContext("2d");
    expect(layerCtx.count("putImageData")).toBe(1);
    expect(alphaBits(g.layer)).toEqual(g.bits);
    const main = ed.view.canvas.getContext("2d");
    expect(main.drawn.at(-1)).toBe(g.layer); // drawn over the instances (a new instance: the pending layer)

    for (let x = 82; x <= 100; x += 2) ed.move([x, 52]);
    ed.frames.run();
    expect(ed.dom.canvases().length).toBe(canvasesBefore + 1);
    expect(layerCtx.count("putImageData")).toBe(2);
    const [w, h] = layerCtx.imageSizes.at(-1);
    const [x0, y0, x1, y1] = strokeBounds(200, 100, 80, 50, 100, 52, 12); // the moves of that frame only
    expect([w, h]).toEqual([x1 - x0 + 1, y1 - y0 + 1]);
    expect(w * h).toBeLessThan(200 * 100 / 4);
    expect(alphaBits(g.layer)).toEqual(g.bits);

    ed.up([100, 52]);
    expect(ed.annos()).toHaveLength(1);
    expect(ed.view.tools.brush.gesture).toBeNull();
  });

  it("erasing from a selected mask clears the layer's pixels too", () => {
    const ed = makeEditor();
    ed.key("m");
    ed.drag([[40, 50], [120, 50]]);
    ed.down([80, 20], { altKey: true });
    ed.move([80, 90], { altKey: true });
    ed.frames.run();
    const g = ed.view.tools.brush.gesture;
    expect(g.target).toBe(0);
    expect(g.bits[50 * 200 + 80]).toBe(0);
    expect(g.bits[50 * 200 + 50]).toBe(1);
    expect(alphaBits(g.layer)).toEqual(g.bits);
    ed.move([100, 20], { altKey: true }); // a later patch clears more
    ed.frames.run();
    expect(alphaBits(g.layer)).toEqual(g.bits);
    expect(g.bits[50 * 200 + 95]).toBe(0);
  });
});

describe("mask layers", () => {
  it("updateMaskLayer repaints only its rectangle, setting and clearing pixels", () => {
    installFakeDom();
    const bits = paintStroke(emptyMask(30, 20), 30, 20, 5, 10, 25, 10, 4);
    const layer = maskLayer(bits, 30, 20, [1, 2, 3]);
    expect(alphaBits(layer)).toEqual(bits);
    const { data } = layer.getContext("2d").getImageData(5, 10, 1, 1);
    expect([...data]).toEqual([1, 2, 3, 255]);
    paintStroke(bits, 30, 20, 15, 0, 15, 19, 2, 0);
    const stale = alphaBits(layer);
    updateMaskLayer(layer, bits, 30, [1, 2, 3], [0, 0, 9, 19]); // left part only: the erased column stays
    expect(alphaBits(layer)).toEqual(stale);
    updateMaskLayer(layer, bits, 30, [1, 2, 3], strokeBounds(30, 20, 15, 0, 15, 19, 2));
    expect(alphaBits(layer)).toEqual(bits);
  });
});
