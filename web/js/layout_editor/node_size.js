// Sizes of the Instance Layout Editor node (pure; the extension applies them). The node has a minimum size, so the
// toolbar, a prompt field and a usable drawing area always fit, and a larger default size, so a new node opens with
// a comfortable drawing area (>= ~400 px for a square canvas). The layout_json text box stays small: it is the
// storage, users draw.

export const NODE_MIN_WIDTH = 400; // the toolbar in two rows, prompt fields that show a few words
export const NODE_DEFAULT_WIDTH = 600; // the toolbar in one row
export const NODE_DEFAULT_HEIGHT = 900;
/** The editor DOM widget's minimum height: toolbar (two rows) + caption + drawing area + two list rows + status and a
 *  warning line + gaps. */
export const EDITOR_MIN_HEIGHT = 56 + 26 + 160 + 48 + 17 + 30 + 6 * 4;
export const JSON_MIN_HEIGHT = 40;
export const JSON_MAX_HEIGHT = 64;

const finite = (v, fallback) => (Number.isFinite(v) ? v : fallback);

/** The node's minimum size: what LiteGraph computed for its slots and widgets, and never under NODE_MIN_WIDTH. */
export function minNodeSize(computed = [0, 0]) {
  return [Math.max(finite(computed[0], 0), NODE_MIN_WIDTH), Math.max(finite(computed[1], 0), 0)];
}

/** Clamp `size` (an [w, h] array, changed in place: LiteGraph passes the node's own size) to `min`; true if changed. */
export function clampNodeSize(size, min) {
  let changed = false;
  for (const k of [0, 1]) {
    if (!(size[k] >= min[k])) {
      size[k] = min[k];
      changed = true;
    }
  }
  return changed;
}

/** The size a new node gets: at least the default, and at least its minimum. */
export function defaultNodeSize(current = [0, 0], min = [0, 0]) {
  return [Math.max(finite(current[0], 0), NODE_DEFAULT_WIDTH, min[0]), Math.max(finite(current[1], 0), NODE_DEFAULT_HEIGHT, min[1])];
}
