// ComfyUI frontend extension: shows on the node itself the warnings a run of one of the pack's nodes sent (its UI
// output instdiff_warnings: boxes clipped to the canvas, ignored keys of a layout file, Layout Check findings), in
// a read-only text box under its widgets, so they reach the user without wiring a report output anywhere. The
// Python side (nodes/node_messages.py) also logs them to the console, and sends [] on a run without warnings,
// which removes the box. A DOM widget, no drawing hooks: the same code runs on the classic LiteGraph canvas and in
// the Vue node renderer (Nodes 2.0), which calls none of them.
// ComfyUI serves this file as /extensions/<pack>/js/node_warnings.js, hence three levels up to /scripts.

import { app } from "../../../scripts/app.js";

export const WARNINGS_KEY = "instdiff_warnings"; // the UI output key (nodes/node_messages.py WARNINGS_KEY)
export const WIDGET_NAME = "instdiff_warnings";
const CATEGORY = "instance_diffusion";
// the layout editor shows its warnings under its own canvas (layout_editor/view.js), and its editor must stay
// the node's last widget
const OWN_DISPLAY = new Set(["InstanceLayoutEditor"]);
const LINE_HEIGHT = 14; // px, at the box's 11 px font
const CHAR_WIDTH = 6; // px, an average character at that font (to estimate wrapped rows)
const MAX_ROWS = 8; // taller texts scroll

/** True for the pack's node types (category instance_diffusion/...) that get the warnings box. */
export function showsWarnings(nodeData) {
  const category = String(nodeData?.category ?? "");
  return (category === CATEGORY || category.startsWith(`${CATEGORY}/`)) && !OWN_DISPLAY.has(nodeData?.name);
}

/** The text to show for an `executed` message: the warnings one per line; null when the run had none (clear the
 *  box); undefined when the message says nothing about warnings (leave the box as it is). */
export function warningsText(message) {
  if (!message || typeof message !== "object" || !(WARNINGS_KEY in message)) return undefined;
  const lines = [].concat(message[WARNINGS_KEY] ?? [])
    .filter((w) => w !== null && w !== undefined && String(w).trim() !== "")
    .map((w) => `\u26a0 ${w}`);
  return lines.length ? lines.join("\n") : null;
}

/** Rows `text` takes wrapped at `charsPerRow` characters (at least 1). */
export function wrappedRows(text, charsPerRow) {
  const per = Math.max(1, Math.floor(charsPerRow));
  return String(text ?? "").split("\n").reduce((n, line) => n + Math.max(1, Math.ceil(line.length / per)), 0);
}

/** The box's height in px for `text` on a node `nodeWidth` px wide: every row up to MAX_ROWS, then it scrolls. */
export function boxHeight(text, nodeWidth) {
  const rows = Math.min(MAX_ROWS, wrappedRows(text, (Number(nodeWidth) - 40) / CHAR_WIDTH));
  return rows * LINE_HEIGHT + 8;
}

function fitHeight(node, grow) {
  const min = node.computeSize?.();
  if (!min || !node.size || !node.setSize) return;
  node.setSize([Math.max(node.size[0], min[0]), grow ? Math.max(node.size[1], min[1]) : min[1]]);
  node.setDirtyCanvas?.(true, true);
}

/** Show `text` (see warningsText) in the node's warnings box: null removes the box, undefined changes nothing. */
export function showWarnings(node, text) {
  if (text === undefined) return;
  const widget = node.widgets?.find((w) => w.name === WIDGET_NAME);
  if (text === null) {
    if (!widget) return;
    if (typeof node.removeWidget === "function") {
      node.removeWidget(widget);
    } else {
      widget.onRemove?.();
      node.widgets.splice(node.widgets.indexOf(widget), 1);
    }
    fitHeight(node, false);
    return;
  }
  let box = widget?.element;
  if (!widget) {
    if (typeof node.addDOMWidget !== "function") {
      console.warn(`[comfyui-instdiff] ${node.type ?? "node"}: no DOM widgets in this frontend; warnings:\n${text}`);
      return;
    }
    box = document.createElement("textarea");
    box.readOnly = true;
    box.className = "instdiff-node-warnings";
    box.setAttribute("aria-label", "warnings of the last run");
    Object.assign(box.style, {
      width: "100%", boxSizing: "border-box", resize: "none", fontSize: "11px", lineHeight: `${LINE_HEIGHT}px`,
      fontFamily: "sans-serif", color: "#f0b44c", background: "rgba(0, 0, 0, 0.25)", border: "1px solid #8a6a2a",
      borderRadius: "4px", padding: "3px 4px", overflowY: "auto",
    });
    const height = () => boxHeight(box.value, node.size?.[0] ?? 300);
    const added = node.addDOMWidget(WIDGET_NAME, "instdiff_warnings", box, {
      getValue: () => box.value,
      setValue: () => {}, // shows the last run only; nothing to restore
      getMinHeight: height,
      getMaxHeight: height,
      serialize: false, // neither in the API prompt nor in the workflow's widget values
    });
    added.serialize = false;
  }
  box.value = text;
  box.title = text;
  box.style.minHeight = `${boxHeight(text, node.size?.[0] ?? 300)}px`;
  fitHeight(node, true);
}

app.registerExtension({
  name: "comfyui-instdiff.NodeWarnings",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!showsWarnings(nodeData)) return;
    const original = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message, ...rest) {
      const result = original?.call(this, message, ...rest);
      showWarnings(this, warningsText(message));
      return result;
    };
  },
});
