// ComfyUI frontend extension: puts the instance layout editor into the "Instance Layout Editor" node.
// The node's layout_json widget stays the single store of the layout (official InstanceDiffusion JSON), so
// workflows save, load and share it, API prompts carry it, and the Python node validates it with the same loader
// as layout files. The editor only reads and rewrites that text; width/height widgets are the canvas size.
// ComfyUI serves this file as /extensions/<pack>/js/instance_layout_editor.js, hence three levels up to /scripts.
// The editor itself is in layout_editor/: ComfyUI also imports each of those files as an extension (it loads every
// .js under web/), so they only export (no side effects on import); this file is the only one that registers.

import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { LayoutEditorView } from "./layout_editor/view.js";
import {
  EDITOR_MIN_HEIGHT, JSON_MAX_HEIGHT, JSON_MIN_HEIGHT, NODE_MIN_WIDTH, clampNodeSize, defaultNodeSize, minNodeSize,
} from "./layout_editor/node_size.js";
import { watchWidgetValue } from "./layout_editor/widget_sync.js";

const NODE_TYPE = "InstanceLayoutEditor";
const VUE_NODE_CHROME = 220; // Vue renderer: title, slots, the width/height rows and padding (an upper bound)
const BACKGROUND_PROPERTY = "instdiff_background"; // last run's background image (a /view reference)

const findWidget = (node, name) => node.widgets?.find((w) => w.name === name);

/** Call `extra` after the original method (if any), keeping its return value. */
function chainMethod(target, name, extra) {
  const original = target[name];
  target[name] = function (...args) {
    const result = original?.apply(this, args);
    extra.apply(this, args);
    return result;
  };
}

function chainCallback(widget, extra) {
  const original = widget.callback;
  widget.callback = function (...args) {
    const result = original?.apply(this, args);
    extra(...args);
    return result;
  };
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

function imageUrl(ref) {
  const params = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder ?? "", type: ref.type ?? "temp" });
  return api.apiURL(`/view?${params}`);
}

function attachEditor(node) {
  const jsonWidget = findWidget(node, "layout_json");
  const widthWidget = findWidget(node, "width");
  const heightWidget = findWidget(node, "height");
  if (!jsonWidget || !widthWidget || !heightWidget) {
    console.warn(`[comfyui-instdiff] ${NODE_TYPE}: widgets layout_json/width/height not found; editor not attached`);
    return;
  }
  // the editor's own writes into the widgets must not come back to it as outside changes
  let writing = 0;
  const write = (fn) => {
    writing++;
    try {
      fn();
    } finally {
      writing--;
    }
  };
  const host = {
    getText: () => String(jsonWidget.value ?? ""),
    setText: (text) => write(() => {
      if (jsonWidget.value !== text) jsonWidget.value = text;
    }),
    getCanvasSize: () => [Number(widthWidget.value), Number(heightWidget.value)],
    setCanvasSize: (w, h) => {
      write(() => {
        widthWidget.value = w;
        heightWidget.value = h;
      });
      node.setDirtyCanvas?.(true, true);
    },
    // let ComfyUI notice the edit (unsaved-changes marker, graph undo) without serialising the graph per keystroke
    changed: debounce(() => {
      node.setDirtyCanvas?.(true, true);
      app.extensionManager?.workflow?.activeWorkflow?.changeTracker?.checkState?.();
    }, 300),
  };
  const view = new LayoutEditorView(host);
  const editorWidget = node.addDOMWidget("layout_editor", "instdiff_layout_editor", view.root, {
    getValue: () => host.getText(),
    setValue: () => {}, // the layout lives in layout_json; this widget is only its view
    getMinHeight: () => EDITOR_MIN_HEIGHT,
    serialize: false, // not part of the API prompt
  });
  editorWidget.serialize = false; // not part of widgets_values either (it must stay the last widget)
  // the Vue node renderer sizes the node to its content: the editor's own minimum keeps it usable there too. Some
  // versions of it (1.35) give a DOM widget only its content's height, however tall the node: there the editor
  // asks for the node's height (the renderer's --node-height) less the rows above it; elsewhere that variable is
  // not set and the plain minimum applies
  view.root.style.minWidth = `${NODE_MIN_WIDTH - 20}px`;
  view.root.style.minHeight = `max(${EDITOR_MIN_HEIGHT}px, calc(var(--node-height, 0px) - ${VUE_NODE_CHROME}px))`;

  // layout_json is the storage (saved in the workflow, sent in the prompt); users draw. Its text box stays small
  // on the classic canvas; the Vue renderer (Nodes 2.0) would let it grow and squeeze the drawing area, so it is
  // hidden there (options.hidden only affects the Vue renderer and the side panel; the value is still saved) and
  // the editor's own JSON panel (the JSON button) shows and edits the same text.
  if (jsonWidget.options) {
    jsonWidget.options.getMinHeight = () => JSON_MIN_HEIGHT;
    jsonWidget.options.getMaxHeight = () => JSON_MAX_HEIGHT;
    jsonWidget.options.hidden = true;
  }

  // every change of the three widgets reaches the editor at once, whatever makes it (its text box, the Vue
  // renderer, a loaded workflow, other extensions): a hook on their values, their callbacks and onWidgetChanged.
  // Nothing depends on drawing hooks (the Vue renderer does not call onDrawForeground).
  const sync = () => {
    if (!writing) view.sync();
  };
  const unwatch = [jsonWidget, widthWidget, heightWidget].map((w) => watchWidgetValue(w, sync));
  chainCallback(jsonWidget, sync);
  chainCallback(widthWidget, sync);
  chainCallback(heightWidget, sync);
  editorWidget.onRemove = ((original) => function () {
    for (const u of unwatch) u?.();
    view.destroy();
    return original?.apply(this, arguments);
  })(editorWidget.onRemove);
  node.instdiffEditor = { view, widget: editorWidget, sync };
  node.setSize?.(defaultNodeSize(node.size, minNodeSize(node.computeSize?.())));
}

app.registerExtension({
  name: "comfyui-instdiff.InstanceLayoutEditor",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_TYPE) return;

    chainMethod(nodeType.prototype, "onNodeCreated", function () {
      attachEditor(this);
    });

    chainMethod(nodeType.prototype, "onWidgetChanged", function () {
      this.instdiffEditor?.sync();
    });

    // a sensible minimum size: LiteGraph asks computeSize() for the smallest size (it already counts the editor's
    // minimum height); onResize also clamps sizes set directly
    const computeSize = nodeType.prototype.computeSize;
    nodeType.prototype.computeSize = function (...args) {
      return minNodeSize(computeSize.apply(this, args));
    };
    chainMethod(nodeType.prototype, "onResize", function (size) {
      if (this.instdiffEditor && size?.length >= 2) clampNodeSize(size, this.computeSize());
    });

    chainMethod(nodeType.prototype, "onConfigure", function () {
      const editor = this.instdiffEditor;
      if (!editor) return;
      editor.view.sync();
      editor.view.resetHistory();
      const ref = this.properties?.[BACKGROUND_PROPERTY];
      if (ref?.filename) editor.view.setBackground(imageUrl(ref)); // gone after a server restart: then no picture
    });

    chainMethod(nodeType.prototype, "onExecuted", function (message) {
      const editor = this.instdiffEditor;
      if (!editor || !message) return;
      const ref = message[BACKGROUND_PROPERTY]?.[0];
      this.properties = this.properties || {};
      if (ref?.filename) {
        this.properties[BACKGROUND_PROPERTY] = ref;
        editor.view.setBackground(imageUrl(ref));
      } else if (BACKGROUND_PROPERTY in message) {
        delete this.properties[BACKGROUND_PROPERTY];
        editor.view.setBackground(null);
      }
      editor.view.setRunWarnings(message.instdiff_warnings || []);
    });
  },
});
