// Polygon tool: click the corners of a mask polygon; clicking the first corner again, a double click or Enter
// closes it (onto the selected instance's mask when it has one or Shift was held at the first corner, otherwise a
// new instance); Delete drops the last corner, Escape (cancel) the whole polygon. The polygon in progress spans
// several clicks, so down() starts no drag: the view keeps routing moves to this tool only while it is current.

import { clampPoint, closesPolygon, polygonArea } from "../geometry.js";
import { annoPolygons, hasMask, setMaskBitmap } from "../layout_doc.js";
import { emptyMask, fillPolygons } from "../mask_bitmap.js";

export function polygonTool(editor) {
  let draft = null; // {points, shift}

  /** Close the polygon in progress and put it on an instance. */
  const close = () => {
    const d = draft;
    if (!d) return;
    draft = null;
    const pts = d.points;
    if (pts.length < 3 || polygonArea(pts) < 1) {
      editor.setNotice("a polygon needs at least 3 corners enclosing some area");
      return;
    }
    const flat = pts.flatMap(([x, y]) => [x, y]);
    const { doc } = editor;
    const sel = doc.annos[editor.selected];
    if (sel && (hasMask(sel) || d.shift)) {
      const polys = annoPolygons(sel);
      if (!hasMask(sel) || (polys && polys.length)) {
        sel.mask = [...(polys || []).map((p) => p.flatMap(([x, y]) => [x, y])), flat];
      } else { // an RLE mask: the polygon is filled into its pixels
        const bits = (editor.maskOf(editor.selected) || emptyMask(doc.width, doc.height)).slice();
        fillPolygons(bits, doc.width, doc.height, [pts]);
        setMaskBitmap(sel, bits, doc.width, doc.height);
      }
      editor.commit();
      editor.setNotice(`polygon added to instance ${editor.selected}'s mask`);
      return;
    }
    editor.placeOnInstance(false, (a) => { a.mask = [flat]; }, "polygon mask");
  };

  return {
    id: "polygon",
    label: "Polygon",
    key: "g",
    hint: "Click the corners of a mask polygon; click the first corner, double-click or Enter to close, Esc to cancel.",
    cursor: "crosshair",
    get draft() {
      return draft;
    },
    close,

    down(e, [x, y]) {
      const { width: W, height: H } = editor.doc;
      if (x < 0 || y < 0 || x > W || y > H) return false;
      const pt = clampPoint(x, y, W, H);
      if (!draft) {
        const sel = editor.doc.annos[editor.selected];
        const toSelected = !!sel && (hasMask(sel) || e.shiftKey);
        if (!toSelected && !editor.requireFreeSlot()) return false;
        draft = { points: [], shift: e.shiftKey };
      }
      if (closesPolygon(draft.points, pt[0], pt[1], editor.tolerance() * 1.5)) {
        close();
        return false;
      }
      const last = draft.points[draft.points.length - 1];
      if (!last || last[0] !== pt[0] || last[1] !== pt[1]) draft.points.push(pt);
      return false;
    },

    move() {},

    up() {},

    cancel() {
      const had = !!draft;
      draft = null;
      return had;
    },

    onKey(e) {
      if ((e.key === "Delete" || e.key === "Backspace") && draft?.points.length) {
        draft.points.pop();
        return true;
      }
      if (e.key === "Enter" && draft) {
        e.preventDefault();
        close();
        return true;
      }
      return false;
    },

    dblclick(e) {
      e.preventDefault();
      close();
    },

    drawState() {
      return draft ? { draft: { kind: "polygon", points: draft.points } } : null;
    },
  };
}
