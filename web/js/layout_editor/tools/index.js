// The editor's tools, one object per tool. The view sends a pointer press to the current tool's down(e, p); a
// tool that starts a drag there returns true and then gets that drag's move/up (p: the pointer in layout pixels),
// or cancel() when it is aborted (pointercancel, Escape). Every tool object has:
//   id, label, key (keyboard shortcut), hint (status line and button title), cursor (CSS cursor over the canvas,
//   or null: the tool sets it itself), down(e, p) -> bool, move(e, p), up(e, p), cancel() -> bool (whether
//   something was in progress), drawState(state) -> overrides of drawEditor's state for what is being drawn, or
//   null; optional onKey(e) -> bool (a key the tool handles itself) and dblclick(e).
// The tools edit through the view (`editor`): editor.doc, .selected, .text, .view, .brushRadius, .erase, and
// select(i), tolerance(), maskOf(i), hasSelection(), requireFreeSlot() (the one slot-limit guard), addInstance(),
// placeOnInstance(toSelected, apply, what), commit(opts), restore(text), undoStack, renderList(), setNotice(text),
// setCursor(css), focusPrompt(i). Importing this module has no side effects (ComfyUI imports every .js under web/).

import { boxTool } from "./box.js";
import { brushTool } from "./brush.js";
import { pointTool } from "./point.js";
import { polygonTool } from "./polygon.js";
import { scribbleTool } from "./scribble.js";
import { selectTool } from "./select.js";

/** Toolbar order. */
export const TOOL_ORDER = ["select", "box", "point", "scribble", "brush", "polygon"];

const FACTORIES = { select: selectTool, box: boxTool, point: pointTool, scribble: scribbleTool, brush: brushTool,
  polygon: polygonTool };

/** The six tool objects of one editor, by id. */
export function createTools(editor) {
  return Object.fromEntries(TOOL_ORDER.map((id) => [id, FACTORIES[id](editor)]));
}
