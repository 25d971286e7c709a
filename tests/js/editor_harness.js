// Builds the real LayoutEditorView on the fake DOM and drives it with pointer and key events in layout pixels.
// Animation frames are manual: `frames.run()` draws what render() scheduled (tests decide when a frame happens).

import { installFakeDom } from "./fake_dom.js";
import { LayoutEditorView } from "../../web/js/layout_editor/view.js";

export const PAD = 4; // the view's padding around the canvas (fitView(..., 4)): stage = canvas + 2 * PAD, scale 1

/** requestAnimationFrame / cancelAnimationFrame on globalThis that only run when told to. */
export function manualFrames() {
  const queue = new Map();
  let next = 1;
  const frames = {
    requested: 0,
    get pending() {
      return queue.size;
    },
    run() {
      const callbacks = [...queue.values()];
      queue.clear();
      for (const cb of callbacks) cb(0);
      return callbacks.length;
    },
  };
  globalThis.requestAnimationFrame = (cb) => {
    frames.requested++;
    queue.set(next, cb);
    return next++;
  };
  globalThis.cancelAnimationFrame = (id) => queue.delete(id);
  return frames;
}

export function removeFrames() {
  delete globalThis.requestAnimationFrame;
  delete globalThis.cancelAnimationFrame;
}

export function layoutText(width, height, annos = [], caption = "") {
  return JSON.stringify({ caption, width, height, annos });
}

/** A view on a width x height layout (initial layout_json `text`), drawn once so pointer input maps. */
export function makeEditor({ width = 200, height = 100, text = "" } = {}) {
  const dom = installFakeDom();
  const frames = manualFrames();
  const host = {
    text,
    size: [width, height],
    changes: 0,
    getText() { return this.text; },
    setText(t) { this.text = t; },
    getCanvasSize() { return [...this.size]; },
    setCanvasSize(w, h) { this.size = [w, h]; },
    changed() { this.changes++; },
  };
  const view = new LayoutEditorView(host);
  const setArea = (w, h) => {
    view.stage.clientWidth = w + 2 * PAD;
    view.stage.clientHeight = h + 2 * PAD;
    view.canvas.clientWidth = w + 2 * PAD;
    view.canvas.clientHeight = h + 2 * PAD;
  };
  setArea(width, height);
  view.render();
  frames.run();

  const client = ([x, y]) => ({ clientX: x + PAD, clientY: y + PAD });
  const pointer = (type, p, opts = {}) => {
    const event = view.canvas.dispatch(type, { ...client(p), ...opts });
    return event;
  };
  const ed = {
    dom, frames, host, view, setArea,
    doc: () => JSON.parse(host.text),
    annos: () => JSON.parse(host.text).annos,
    notice: () => view.notice,
    down: (p, opts) => pointer("pointerdown", p, opts),
    move: (p, opts) => pointer("pointermove", p, opts),
    up: (p, opts) => pointer("pointerup", p, opts),
    cancel: () => view.canvas.dispatch("pointercancel", {}),
    click(p, opts = {}) {
      ed.down(p, opts);
      ed.up(p, opts);
    },
    drag(points, opts = {}) {
      ed.down(points[0], opts);
      for (const p of points.slice(1)) ed.move(p, opts);
      ed.up(points[points.length - 1], opts);
    },
    /** A key pressed where the editor's keyboard focus is (the key sink), or on `target`. */
    key(key, opts = {}, target = view.keySink) {
      return target.dispatch("keydown", { key, ...opts });
    },
    tool(id) {
      view.toolButtons[id].dispatch("click");
    },
    /** The prompt field of instance i (typing: value + input event). */
    prompt(i) {
      return view.list.children[i]?.querySelector("input");
    },
    type(i, value) {
      const input = ed.prompt(i);
      input.focus();
      input.value = value;
      input.dispatch("input");
    },
  };
  return ed;
}

/** n instances, each with a small box, for filling the slots. */
export function boxes(n) {
  return Array.from({ length: n }, (_, i) => ({ caption: `thing ${i}`, bbox: [(i % 10) * 18, Math.floor(i / 10) * 30, 10, 10] }));
}
