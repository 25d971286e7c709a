// Brush tool: paint a mask. A stroke adds to the selected instance's mask (when it has one, or with Shift),
// otherwise it makes a new instance; Erase (toggle), Alt or the right button clear pixels instead. Each pointer
// event paints its segment into the stroke's bitmap and marks the touched rectangle; the displayed layer is only
// brought up to date when a frame is drawn (drawState), and then only in that rectangle.

import { hasMask, instanceColour, modalitiesOf, setMaskBitmap } from "../layout_doc.js";
import { emptyMask, maskAny, paintStroke, strokeBounds } from "../mask_bitmap.js";
import { maskLayer, updateMaskLayer } from "../draw.js";

const unionRect = (a, b) => (!a ? b : !b ? a
  : [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[2], b[2]), Math.max(a[3], b[3])]);

export function brushTool(editor) {
  // {target (instance index, -1 = a new one), bits, value (1 paint, 0 erase), last, before, colour, layer, dirty}
  let gesture = null;

  const paintTo = (x, y) => {
    const g = gesture;
    const { width: W, height: H } = editor.doc;
    const r = editor.brushRadius;
    paintStroke(g.bits, W, H, g.last[0], g.last[1], x, y, r, g.value);
    g.dirty = unionRect(g.dirty, strokeBounds(W, H, g.last[0], g.last[1], x, y, r));
    g.last = [x, y];
  };

  /** The stroke's display layer, up to date with its bitmap (built on the first frame, then patched). */
  const currentLayer = () => {
    const g = gesture;
    const { width: W, height: H } = editor.doc;
    if (!g.layer) g.layer = maskLayer(g.bits, W, H, g.colour);
    else if (g.dirty) updateMaskLayer(g.layer, g.bits, W, g.colour, g.dirty);
    g.dirty = null;
    return g.layer;
  };

  return {
    id: "brush",
    label: "Brush",
    key: "m",
    hint: "Paint a mask. Strokes add to the selected instance's mask; Esc deselects to start a new one. Erase: toggle, Alt or right button.",
    cursor: "crosshair",
    get gesture() {
      return gesture;
    },

    down(e, [x, y]) {
      const { doc } = editor;
      const { width: W, height: H } = doc;
      const value = editor.erase || e.altKey || e.button === 2 ? 0 : 1;
      const sel = doc.annos[editor.selected];
      let target = -1;
      let bits;
      if (sel && (hasMask(sel) || e.shiftKey)) {
        target = editor.selected;
        const current = editor.maskOf(target);
        bits = current ? current.slice() : emptyMask(W, H);
      } else if (value === 0) {
        editor.setNotice("select an instance with a mask to erase from it");
        return false;
      } else {
        if (!editor.requireFreeSlot()) return false;
        bits = emptyMask(W, H);
      }
      gesture = { target, bits, value, last: [x, y], before: editor.text, layer: null, dirty: null,
        colour: instanceColour(target < 0 ? doc.annos.length : target) };
      paintTo(x, y);
      return true;
    },

    move(e, [x, y]) {
      if (gesture) paintTo(x, y);
    },

    up() {
      const g = gesture;
      gesture = null;
      if (!g) return;
      const { doc } = editor;
      const any = maskAny(g.bits);
      let target = g.target;
      if (target < 0) {
        if (!any) return;
        target = editor.addInstance();
        if (target < 0) return;
      }
      const anno = doc.annos[target];
      setMaskBitmap(anno, any ? g.bits : null, doc.width, doc.height);
      if (!any && modalitiesOf(anno).length === 0) {
        editor.setNotice(`instance ${target} lost its only location (its mask); Undo restores it`);
      }
      editor.selected = target;
      editor.undoStack.record(g.before);
      editor.commit({ record: false });
      editor.focusPrompt(target);
    },

    cancel() {
      const had = !!gesture;
      gesture = null;
      return had;
    },

    drawState(state) {
      if (!gesture) return null;
      const layer = currentLayer();
      const { target, bits } = gesture;
      if (target < 0) return { pendingLayer: layer };
      const { maskOf, maskLayerOf } = state;
      return {
        maskOf: (i) => (i === target ? bits : maskOf(i)),
        maskLayerOf: (i) => (i === target ? layer : maskLayerOf(i)),
      };
    },
  };
}
