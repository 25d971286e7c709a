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

const NODE_TYPE = "InstanceLayoutEditor";
const EDITOR_MIN_HEIGHT = 380;
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
  const host = {
    getText: () => String(jsonWidget.value ?? ""),
    setText: (text) => {
      if (jsonWidget.value !== text) jsonWidget.value = text;
    },
    getCanvasSize: () => [Number(widthWidget.value), Number(heightWidget.value)],
    setCanvasSize: (w, h) => {
      widthWidget.value = w;
      heightWidget.value = h;
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
  editorWidget.onRemove = ((original) => function () {
    view.destroy();
    return original?.apply(this, arguments);
  })(editorWidget.onRemove);

  // the JSON text box is for pasting and reading; the drawing area gets the node's spare height
  if (jsonWidget.options) {
    jsonWidget.options.getMinHeight = () => 56;
    jsonWidget.options.getMaxHeight = () => 120;
  }
  const sync = () => view.sync();
  chainCallback(jsonWidget, sync);
  chainCallback(widthWidget, sync);
  chainCallback(heightWidget, sync);
  node.instdiffEditor = { view, widget: editorWidget };
  const [w, h] = node.size;
  node.setSize?.([Math.max(w, 460), Math.max(h, 700)]);
}

app.registerExtension({
  name: "comfyui-instdiff.InstanceLayoutEditor",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_TYPE) return;

    chainMethod(nodeType.prototype, "onNodeCreated", function () {
      attachEditor(this);
    });

    // values set without a widget callback (workflow load, other extensions) are picked up on the next draw
    chainMethod(nodeType.prototype, "onDrawForeground", function () {
      if (!this.flags?.collapsed) this.instdiffEditor?.view.sync();
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
