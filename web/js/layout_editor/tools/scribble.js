// Scribble tool: draw freehand; on release the stroke is resampled to the 20 points of the official scribble input
// and goes to a new instance (Shift: to the selected instance).

import { clampPoint, distance, resamplePolyline, roundPoints } from "../geometry.js";

const MIN_STEP_CSS_PX = 2; // pointer samples closer than this on screen are dropped

export function scribbleTool(editor) {
  let gesture = null; // {shift, points}

  return {
    id: "scribble",
    label: "Scribble",
    key: "s",
    hint: "Draw freehand; the stroke is stored as 20 points (Shift: for the selected instance).",
    cursor: "crosshair",
    get gesture() {
      return gesture;
    },

    down(e, [x, y]) {
      const shift = e.shiftKey;
      if (!(shift && editor.hasSelection()) && !editor.requireFreeSlot()) return false;
      gesture = { shift, points: [[x, y]] };
      return true;
    },

    move(e, [x, y]) {
      if (!gesture) return;
      const last = gesture.points[gesture.points.length - 1];
      if (distance(last[0], last[1], x, y) * (editor.view?.scale || 1) >= MIN_STEP_CSS_PX) gesture.points.push([x, y]);
    },

    up(e, [x, y]) {
      const g = gesture;
      gesture = null;
      if (!g) return;
      const { width: W, height: H } = editor.doc;
      g.points.push([x, y]);
      const resampled = resamplePolyline(g.points.map(([px, py]) => clampPoint(px, py, W, H)));
      if (!resampled) editor.setNotice("drag to draw a scribble");
      else editor.placeOnInstance(g.shift, (a) => { a.scribble = roundPoints(resampled, 1); }, "scribble");
    },

    cancel() {
      const had = !!gesture;
      gesture = null;
      return had;
    },

    drawState() {
      return gesture ? { draft: { kind: "scribble", points: gesture.points } } : null;
    },
  };
}
