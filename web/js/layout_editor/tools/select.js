// Select tool: click an instance to select it (empty canvas deselects), drag it to move it (clamped to the canvas,
// one undo step on release), drag a handle of the selected instance's box to resize it (live, one undo step).

import { clampTranslation, handleAt, resizeBox } from "../geometry.js";
import { annoBounds, annoBox, hitTest, setBox, translateAnno } from "../layout_doc.js";

const HANDLE_CURSORS = { n: "ns-resize", s: "ns-resize", e: "ew-resize", w: "ew-resize", nw: "nwse-resize",
  se: "nwse-resize", ne: "nesw-resize", sw: "nesw-resize" };

export function selectTool(editor) {
  let gesture = null; // {kind: "move", start, offset, bounds} | {kind: "resize", handle, box, before}

  /** The handle of the selected instance's box under (x, y): {handle, box}, or null. */
  const gripAt = (x, y) => {
    const sel = editor.doc.annos[editor.selected];
    const box = sel ? annoBox(sel) : null;
    const handle = box ? handleAt(box, x, y, editor.tolerance()) : null;
    return handle ? { handle, box } : null;
  };

  return {
    id: "select",
    label: "Select",
    key: "v",
    hint: "Click an instance to select it, drag to move it, drag a box handle to resize. Delete removes it.",
    cursor: null,
    get gesture() {
      return gesture;
    },

    down(e, [x, y]) {
      const grip = gripAt(x, y);
      if (grip) {
        gesture = { kind: "resize", ...grip, before: editor.text };
        return true;
      }
      const { doc } = editor;
      const hit = hitTest(doc, x, y, editor.tolerance(), (i) => editor.maskOf(i));
      editor.select(hit);
      if (hit < 0) return false;
      const bounds = annoBounds(doc.annos[hit], editor.maskOf(hit), doc.width, doc.height);
      gesture = { kind: "move", start: [x, y], offset: [0, 0], bounds };
      return true;
    },

    move(e, [x, y]) {
      const { width: W, height: H } = editor.doc;
      if (gesture?.kind === "move") {
        const [dx, dy] = [Math.round(x - gesture.start[0]), Math.round(y - gesture.start[1])];
        gesture.offset = gesture.bounds ? clampTranslation(gesture.bounds, dx, dy, W, H) : [dx, dy];
      } else if (gesture?.kind === "resize") {
        setBox(editor.doc.annos[editor.selected], resizeBox(gesture.box, gesture.handle, x, y, W, H));
        editor.renderList();
      } else if (!gesture) {
        const grip = gripAt(x, y);
        editor.setCursor(grip ? HANDLE_CURSORS[grip.handle] : "default");
      }
    },

    up() {
      const g = gesture;
      gesture = null;
      if (g?.kind === "move") {
        const i = editor.selected;
        if (i < 0 || !(g.offset[0] || g.offset[1])) return;
        const { doc } = editor;
        const before = editor.text;
        const moved = translateAnno(doc.annos[i], g.offset[0], g.offset[1], doc.width, doc.height, editor.maskOf(i));
        if (moved[0] || moved[1]) {
          editor.undoStack.record(before);
          editor.commit({ record: false });
        }
      } else if (g?.kind === "resize") {
        editor.undoStack.record(g.before);
        editor.commit({ record: false });
      }
    },

    cancel() {
      const g = gesture;
      gesture = null;
      if (g?.kind === "resize") editor.restore(g.before); // the box was resized live: put the text back
      return !!g;
    },

    drawState() {
      return gesture?.kind === "move" ? { moveOffset: gesture.offset } : null;
    },
  };
}
