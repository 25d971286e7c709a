// Point tool: click to place a point on a new instance (Shift: on the selected instance). A release off the
// canvas places nothing.

import { clampPoint } from "../geometry.js";

export function pointTool(editor) {
  let gesture = null; // {shift}

  return {
    id: "point",
    label: "Point",
    key: "p",
    hint: "Click to place a point (a new instance; Shift: the selected instance's point).",
    cursor: "crosshair",
    get gesture() {
      return gesture;
    },

    down(e) {
      const shift = e.shiftKey;
      if (!(shift && editor.hasSelection()) && !editor.requireFreeSlot()) return false;
      gesture = { shift };
      return true;
    },

    move() {},

    up(e, [x, y]) {
      const g = gesture;
      gesture = null;
      if (!g) return;
      const { width: W, height: H } = editor.doc;
      if (x < 0 || y < 0 || x > W || y > H) return;
      const pt = clampPoint(x, y, W, H);
      editor.placeOnInstance(g.shift, (a) => { a.point = pt; }, "point");
    },

    cancel() {
      const had = !!gesture;
      gesture = null;
      return had;
    },

    drawState() {
      return null;
    },
  };
}
