// Box tool: drag to draw a box on a new instance (Shift: on the selected instance, replacing its box).

import { MIN_BOX_SIZE, isUsableBox, normalizeBox } from "../geometry.js";
import { setBox } from "../layout_doc.js";

export function boxTool(editor) {
  let gesture = null; // {start, shift, box}

  return {
    id: "box",
    label: "Box",
    key: "b",
    hint: "Drag to draw a box (a new instance; hold Shift to give the selected instance this box).",
    cursor: "crosshair",
    get gesture() {
      return gesture;
    },

    down(e, [x, y]) {
      const shift = e.shiftKey;
      if (!(shift && editor.hasSelection()) && !editor.requireFreeSlot()) return false;
      gesture = { start: [x, y], shift, box: null };
      return true;
    },

    move(e, [x, y]) {
      if (!gesture) return;
      const { width: W, height: H } = editor.doc;
      gesture.box = normalizeBox(gesture.start[0], gesture.start[1], x, y, W, H);
    },

    up(e, [x, y]) {
      const g = gesture;
      gesture = null;
      if (!g) return;
      const { width: W, height: H } = editor.doc;
      const box = normalizeBox(g.start[0], g.start[1], x, y, W, H);
      if (!isUsableBox(box, MIN_BOX_SIZE)) editor.setNotice("drag to draw a box");
      else editor.placeOnInstance(g.shift, (a) => setBox(a, box), "box");
    },

    cancel() {
      const had = !!gesture;
      gesture = null;
      return had;
    },

    drawState() {
      return gesture ? { draft: { kind: "box", box: gesture.box } } : null;
    },
  };
}
