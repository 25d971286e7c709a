// The instance layout editor as a DOM element: toolbar, global caption, an optional JSON panel (the layout text), drawing
// canvas, instance prompt list, a status line and the last run's warnings (amber). It knows nothing about ComfyUI: a
// small `host` object gives it the layout text and the canvas size (the node's widgets) and takes the edited text back.
// The layout JSON text is the single source of truth; the editor parses it, edits the parsed document and writes the
// whole text back after every change.
// Pointer input goes to one object per tool (tools/); drawing is batched: render() asks for a frame and the canvas
// is drawn at most once per animation frame (renderNow() draws at once).

import { clientToElement, fitView, viewToLayout } from "./geometry.js";
import {
  LayoutTextError, SLOT_LIMIT_MESSAGE, canAddInstance, emptyLayout, hasMask, instanceColour, layoutIssues,
  modalitiesOf, parseLayoutText, scaleLayout, serializeLayout,
} from "./layout_doc.js";
import { maskValueToBitmap } from "./mask_bitmap.js";
import { UndoStack } from "./undo_stack.js";
import { drawEditor, maskLayer } from "./draw.js";
import { el, ensureStyle } from "./dom.js";
import { frameScheduler } from "./frame.js";
import { TOOL_ORDER, createTools } from "./tools/index.js";

export class LayoutEditorView {
  /** host: {getText(), setText(text), getCanvasSize() -> [w, h], setCanvasSize(w, h), changed()} */
  constructor(host) {
    this.host = host;
    this.tool = "box";
    this.selected = -1;
    this.brushRadius = 12;
    this.erase = false;
    this.undoStack = new UndoStack(100);
    this.tools = createTools(this);
    this.gestureTool = null; // the tool whose drag is in progress: it gets the moves and the release
    this.hover = null;
    this.background = null;
    this.error = null;
    this.notice = "";
    this.masks = new WeakMap(); // mask JSON value -> {bits, layer, colourKey}
    const [w, h] = host.getCanvasSize();
    this.doc = emptyLayout(w, h);
    this.text = null; // the text the editor last saw or wrote
    this.goodText = null; // the last text that parsed (what undo returns to after a broken paste)
    this.frame = frameScheduler(() => this.renderNow());
    ensureStyle();
    this.buildDom();
    this.sync();
  }

  // ------------------------------------------------------------------------------------------ DOM

  buildDom() {
    this.toolButtons = {};
    const toolBar = el("div", { className: "instdiff-le-bar" });
    for (const t of TOOL_ORDER.map((id) => this.tools[id])) {
      const b = el("button", { title: `${t.hint} (key ${t.key.toUpperCase()})`, dataset: { tool: t.id },
        onclick: () => this.setTool(t.id) }, [t.label]);
      this.toolButtons[t.id] = b;
      toolBar.append(b);
    }
    this.sizeInput = el("input", { type: "range", min: "1", max: "80", value: String(this.brushRadius),
      title: "Brush radius in canvas pixels ([ and ] change it)", style: "width: 64px",
      oninput: (e) => { this.brushRadius = Number(e.target.value); this.render(); } });
    this.eraseButton = el("button", { title: "Brush erases from the selected instance's mask (or hold Alt / use the right button)",
      onclick: () => { this.erase = !this.erase; this.updateToolbar(); } }, ["Erase"]);
    this.undoButton = el("button", { title: "Undo (Ctrl+Z)", onclick: () => this.undo() }, ["Undo"]);
    this.redoButton = el("button", { title: "Redo (Ctrl+Y or Ctrl+Shift+Z)", onclick: () => this.redo() }, ["Redo"]);
    this.deleteButton = el("button", { title: "Delete the selected instance (Delete)", onclick: () => this.deleteSelected() }, ["Delete"]);
    this.clearButton = el("button", { title: "Remove every instance", onclick: () => this.clearAll() }, ["Clear"]);
    this.jsonButton = el("button", { title: "Show the layout JSON (the node's layout_json) to read, paste or edit it",
      onclick: () => this.toggleJson() }, ["JSON"]);
    toolBar.append(this.sizeInput, this.eraseButton, this.undoButton, this.redoButton, this.deleteButton, this.clearButton,
      this.jsonButton);

    this.captionInput = el("input", { type: "text", placeholder: "global caption: the whole picture, e.g. 'a cat and a dog in a park'",
      title: "The layout's global caption (the node's caption output)" });
    this.captionInput.addEventListener("focus", () => { this.typingSnapshot = this.text; });
    this.captionInput.addEventListener("input", () => {
      this.recordTyping();
      this.doc.caption = this.captionInput.value;
      this.commit({ record: false });
    });
    const captionRow = el("div", { className: "instdiff-le-caption" }, [el("span", {}, ["Caption"]), this.captionInput]);

    // the layout JSON itself (hidden until the JSON button): the same text as the node's layout_json widget, which
    // the Vue node renderer does not show (it would squeeze the drawing area)
    this.jsonArea = el("textarea", { className: "instdiff-le-json", spellcheck: "false", "data-capture-wheel": "true",
      "aria-label": "layout JSON", placeholder: "paste a layout JSON (official InstanceDiffusion format) here" });
    this.jsonArea.style.display = "none";
    this.jsonArea.addEventListener("input", () => { // each change that parses is one undo step, as in the text box
      this.host.setText(this.jsonArea.value);
      this.sync();
      this.host.changed?.();
    });

    this.canvas = el("canvas", { "aria-label": "instance layout canvas" });
    // Keyboard focus goes to this invisible read-only textarea, not to the canvas: ComfyUI's change tracker
    // listens to every keydown on the window in the capture phase (before any element can stop it) and runs
    // the GRAPH undo on Ctrl+Z unless a text field has the focus, which would reload the node under the editor.
    this.keySink = el("textarea", { className: "instdiff-le-keys", readonly: "", tabindex: "-1",
      "aria-label": "layout editor keyboard (Delete, Ctrl+Z, Ctrl+Y, tool keys)" });
    // data-capture-wheel: the frontend leaves wheel events over the drawing area to the editor while its keys have
    // the focus (the attribute only counts on an element that holds the focused key sink, hence the stage)
    this.stage = el("div", { className: "instdiff-le-stage", "data-capture-wheel": "true" }, [this.canvas, this.keySink]);
    this.keySink.addEventListener("focus", () => this.stage.classList.add("focused"));
    this.keySink.addEventListener("blur", () => this.stage.classList.remove("focused"));
    this.list = el("div", { className: "instdiff-le-list", "data-capture-wheel": "true" });
    this.status = el("div", { className: "instdiff-le-status" });
    // the last run's warnings (the node's UI output instdiff_warnings), in amber, until a run without any
    this.warnings = el("div", { className: "instdiff-le-warnings", role: "status" });
    this.warnings.style.display = "none";
    this.root = el("div", { className: "instdiff-le" }, [toolBar, captionRow, this.jsonArea, this.stage, this.list, this.status,
      this.warnings]);

    this.canvas.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    this.canvas.addEventListener("pointermove", (e) => this.onPointerMove(e));
    this.canvas.addEventListener("pointerup", (e) => this.onPointerUp(e));
    this.canvas.addEventListener("pointercancel", () => this.cancelGesture());
    this.canvas.addEventListener("pointerleave", () => { this.hover = null; this.render(); });
    this.canvas.addEventListener("dblclick", (e) => {
      const tool = this.tools[this.tool];
      if (tool.dblclick) { tool.dblclick(e); this.render(); }
    });
    this.canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    this.canvas.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
    this.canvas.addEventListener("mousedown", (e) => e.preventDefault()); // keep the focus on the key sink
    // after a button click the keys go back to the editor (a focused button would let Ctrl+Z reach the graph)
    this.root.addEventListener("click", (e) => { if (e.target.closest?.("button")) this.focusKeys(); });
    this.root.addEventListener("keydown", (e) => this.onKeyDown(e));
    // keep ComfyUI's graph shortcuts (Delete removes the node, Ctrl+Z undoes the graph) away from the editor
    this.root.addEventListener("keyup", (e) => e.stopPropagation());
    this.resizeObserver = new ResizeObserver(() => this.render());
    this.resizeObserver.observe(this.stage);
    this.updateToolbar();
  }

  focusKeys() {
    this.keySink.focus({ preventScroll: true });
  }

  destroy() {
    this.resizeObserver?.disconnect();
    this.frame.cancel();
  }

  setTool(id) {
    const current = this.tools[this.tool];
    // leaving a tool drops what it has in progress (a polygon); a drag still held finishes with its own tool
    if (id !== this.tool && current !== this.gestureTool) current.cancel();
    this.tool = id;
    this.updateToolbar();
    this.setNotice(this.tools[id].hint);
    this.render();
  }

  setCursor(css) {
    this.canvas.style.cursor = css;
  }

  updateToolbar() {
    for (const [id, b] of Object.entries(this.toolButtons)) b.classList.toggle("active", id === this.tool);
    const brush = this.tool === "brush";
    this.sizeInput.style.display = brush ? "" : "none";
    this.eraseButton.style.display = brush ? "" : "none";
    this.eraseButton.classList.toggle("active", this.erase);
    this.undoButton.disabled = !this.undoStack.canUndo;
    this.redoButton.disabled = !this.undoStack.canRedo;
    this.deleteButton.disabled = this.selected < 0;
    this.clearButton.disabled = this.doc.annos.length === 0 || !!this.error;
    this.deleteButton.disabled ||= !!this.error;
    // while layout_json does not parse, the fields would edit a stale copy: only the text box (or Undo) fixes it
    this.captionInput.disabled = !!this.error;
    for (const input of this.list.querySelectorAll("input")) input.disabled = !!this.error;
  }

  toggleJson(show = this.jsonArea.style.display === "none") {
    this.jsonArea.style.display = show ? "" : "none";
    this.jsonButton.classList.toggle("active", show);
    if (show) this.jsonArea.value = this.text ?? "";
    this.render();
  }

  /** The JSON panel follows the text unless the user is typing in it. */
  updateJsonArea() {
    if (this.jsonArea.style.display === "none" || document.activeElement === this.jsonArea) return;
    const text = this.text ?? "";
    if (this.jsonArea.value !== text) this.jsonArea.value = text;
  }

  setNotice(text) {
    this.notice = text;
    this.updateStatus();
  }

  updateStatus() {
    const issues = this.error ? [] : layoutIssues(this.doc);
    const ran = this.lastRunWarnings || [];
    const head = `${this.doc.width}x${this.doc.height}, ${this.doc.annos.length} instance${this.doc.annos.length === 1 ? "" : "s"}`;
    const warned = ran.length ? `${ran.length} warning${ran.length === 1 ? "" : "s"} in the last run` : "";
    const text = this.error || [head, ...issues, warned, this.notice].filter(Boolean).join(" · ");
    this.status.textContent = text;
    this.status.title = text;
    this.status.classList.toggle("error", !!this.error || issues.length > 0);
    this.status.classList.toggle("warn", !this.error && !issues.length && ran.length > 0);
    const warnText = ran.length ? `⚠ last run: ${ran.join(" · ")}` : "";
    if (this.warnings.textContent !== warnText) {
      this.warnings.textContent = warnText;
      this.warnings.title = ran.join("\n");
      this.warnings.style.display = ran.length ? "" : "none";
    }
    this.updateJsonArea();
  }

  renderList() {
    const annos = this.doc.annos;
    if (this.list.children.length !== annos.length) {
      this.list.replaceChildren(...annos.map((_, i) => this.buildRow(i)));
    }
    annos.forEach((a, i) => {
      const row = this.list.children[i];
      row.classList.toggle("selected", i === this.selected);
      row.querySelector(".instdiff-le-swatch").style.background = `rgb(${instanceColour(i).join(",")})`;
      const input = row.querySelector("input");
      const caption = typeof a.caption === "string" ? a.caption : "";
      if (document.activeElement !== input && input.value !== caption) input.value = caption;
      input.classList.toggle("missing", !caption.trim());
      row.querySelector(".instdiff-le-kinds").textContent = modalitiesOf(a).join(" ");
    });
    const row = this.list.children[this.selected];
    if (row) { // scroll only the list (scrollIntoView could scroll ComfyUI's page around the graph)
      const top = row.offsetTop;
      if (top < this.list.scrollTop) this.list.scrollTop = top;
      else if (top + row.offsetHeight > this.list.scrollTop + this.list.clientHeight) {
        this.list.scrollTop = top + row.offsetHeight - this.list.clientHeight;
      }
    }
  }

  buildRow(i) {
    const input = el("input", { type: "text", placeholder: "prompt of this instance, e.g. 'a red car'",
      title: "What this instance is; encoded on its own by CLIP" });
    input.addEventListener("focus", () => { this.typingSnapshot = this.text; this.select(i, { keepFocus: true }); });
    input.addEventListener("input", () => {
      this.recordTyping();
      this.doc.annos[i].caption = input.value;
      this.commit({ record: false, list: false });
      input.classList.toggle("missing", !input.value.trim());
    });
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); this.focusKeys(); }
    });
    const remove = el("button", { title: "Delete this instance", onclick: () => { this.select(i); this.deleteSelected(); } }, ["✕"]);
    return el("div", { className: "instdiff-le-row", dataset: { index: String(i) },
      onpointerdown: () => this.select(i, { keepFocus: true }) }, [
      el("span", { className: "instdiff-le-swatch" }), el("span", { className: "instdiff-le-num" }, [String(i)]),
      input, el("span", { className: "instdiff-le-kinds" }), remove]);
  }

  // ------------------------------------------------------------------------------------------ state <-> host

  /** Pull the host's text and canvas size into the editor (called on widget changes and before drawing). A
   *  changed text is re-parsed (a text of another canvas size sets the width/height widgets); a changed canvas
   *  size rescales the instances. Cheap when nothing changed. */
  sync() {
    const text = this.host.getText() ?? "";
    const [w, h] = this.host.getCanvasSize();
    if (text !== this.text) {
      this.text = text;
      let doc;
      try {
        doc = parseLayoutText(text, w, h);
      } catch (e) {
        if (!(e instanceof LayoutTextError)) throw e;
        // the edit that broke the text is one undo step: Ctrl+Z goes back to the last layout that parsed
        if (!this.error && this.goodText !== null) this.undoStack.record(this.goodText);
        this.error = e.message;
        this.updateToolbar();
        this.render();
        return;
      }
      if (this.goodText !== null && this.goodText !== text) this.undoStack.record(this.goodText);
      this.goodText = text;
      this.error = null;
      this.doc = doc;
      if (this.selected >= doc.annos.length) this.selected = -1;
      if (doc.width !== w || doc.height !== h) this.host.setCanvasSize(doc.width, doc.height);
      if (!text.trim()) this.commit({ record: false });
      this.renderAll();
      return;
    }
    const sizeOk = Number.isInteger(w) && Number.isInteger(h) && w > 0 && h > 0;
    if (!this.error && sizeOk && (w !== this.doc.width || h !== this.doc.height)) {
      this.undoStack.record(this.text);
      this.doc = scaleLayout(this.doc, w, h);
      this.commit({ record: false });
      this.setNotice(`canvas is now ${w}x${h}; instances were scaled along`);
    }
  }

  /** Write the document back as the layout text (and remember the previous text for undo). */
  commit({ record = true, list = true } = {}) {
    if (this.error) { // never overwrite text the user is still fixing
      this.setNotice("the layout JSON has an error: fix it or Undo before editing");
      return;
    }
    const text = serializeLayout(this.doc);
    if (text === this.text) {
      this.render();
      return;
    }
    if (record && this.goodText !== null) this.undoStack.record(this.goodText);
    this.text = text;
    this.goodText = text;
    this.error = null;
    this.host.setText(text);
    this.host.changed?.();
    if (list) this.renderList();
    this.updateToolbar();
    this.render();
  }

  /** Typing in a text field records ONE undo step per focus, not one per character. */
  recordTyping() {
    if (this.typingSnapshot !== undefined && this.typingSnapshot !== null) {
      this.undoStack.record(this.typingSnapshot);
      this.typingSnapshot = null;
    }
  }

  /** Forget the undo history (a workflow was loaded: its text is the new starting point). */
  resetHistory() {
    this.undoStack.clear();
    this.updateToolbar();
  }

  undo() {
    const prev = this.undoStack.undo(this.text);
    if (prev !== null) this.restore(prev);
  }

  redo() {
    const next = this.undoStack.redo(this.text);
    if (next !== null) this.restore(next);
  }

  restore(text) {
    this.text = text;
    this.error = null;
    this.notice = "";
    try {
      this.doc = parseLayoutText(text, ...this.host.getCanvasSize());
      this.goodText = text;
    } catch (e) {
      this.error = e.message;
    }
    if (this.selected >= this.doc.annos.length) this.selected = -1;
    this.host.setText(text);
    if (!this.error && (this.doc.width !== this.host.getCanvasSize()[0] || this.doc.height !== this.host.getCanvasSize()[1])) {
      this.host.setCanvasSize(this.doc.width, this.doc.height);
    }
    this.host.changed?.();
    this.renderAll();
  }

  renderAll() {
    if (document.activeElement !== this.captionInput) this.captionInput.value = this.doc.caption ?? "";
    this.renderList();
    this.updateToolbar();
    this.render();
  }

  select(i, { keepFocus = false } = {}) {
    if (this.selected === i) return;
    this.selected = i;
    if (!keepFocus) this.focusKeys();
    this.renderList();
    this.updateToolbar();
    this.render();
  }

  deleteSelected() {
    if (this.error || this.selected < 0 || this.selected >= this.doc.annos.length) return;
    this.doc.annos.splice(this.selected, 1);
    this.selected = -1;
    this.commit();
    this.renderList();
  }

  clearAll() {
    if (this.error || !this.doc.annos.length) return;
    this.doc.annos = [];
    this.selected = -1;
    this.commit();
    this.setNotice("all instances removed (Undo brings them back)");
  }

  /** Show the picture at `url` under the drawing (null: none). The previous picture stays until the new one has
   *  loaded (no flash of the empty canvas after each run); a picture that fails to load leaves none. */
  setBackground(url) {
    if (!url) {
      this.pendingBackground = null;
      this.background = null;
      this.render();
      return;
    }
    const img = new Image();
    this.pendingBackground = img;
    img.onload = () => {
      if (this.pendingBackground === img) {
        this.pendingBackground = null;
        this.background = img;
      }
      this.render();
    };
    img.onerror = () => {
      if (this.pendingBackground === img) {
        this.pendingBackground = null;
        this.background = null;
      }
      this.render();
    };
    img.src = url;
  }

  /** The warnings of the last run (shown in amber under the status line); [] (a run without any) clears them. */
  setRunWarnings(warnings) {
    this.lastRunWarnings = (Array.isArray(warnings) ? warnings : [warnings]).filter((w) => w !== null && w !== undefined && w !== "")
      .map(String);
    this.updateStatus();
  }

  // ------------------------------------------------------------------------------------------ masks

  maskOf(i) {
    const anno = this.doc.annos[i];
    if (!anno || !hasMask(anno)) return null;
    const entry = this.masks.get(anno.mask);
    if (entry) return entry.bits;
    let bits = null;
    try {
      bits = maskValueToBitmap(anno.mask, this.doc.width, this.doc.height);
    } catch (e) {
      this.setNotice(`instance ${i}: ${e.message}`);
    }
    if (bits && typeof anno.mask === "object") this.masks.set(anno.mask, { bits });
    return bits;
  }

  maskLayerOf(i) {
    const anno = this.doc.annos[i];
    const bits = this.maskOf(i);
    if (!bits) return null;
    const colour = instanceColour(i);
    const key = colour.join(",");
    const entry = this.masks.get(anno.mask) || { bits };
    if (!entry.layer || entry.colourKey !== key || entry.layerBits !== bits) {
      entry.layer = maskLayer(bits, this.doc.width, this.doc.height, colour);
      entry.colourKey = key;
      entry.layerBits = bits;
      if (typeof anno.mask === "object") this.masks.set(anno.mask, entry);
    }
    return entry.layer;
  }

  // ------------------------------------------------------------------------------------------ pointer input

  eventToLayout(e) {
    const rect = this.canvas.getBoundingClientRect();
    const [cx, cy] = clientToElement(e.clientX, e.clientY, rect, this.canvas.clientWidth, this.canvas.clientHeight);
    return viewToLayout(this.view, cx, cy);
  }

  /** Hit tolerance in layout pixels: a few screen pixels whatever the zoom. */
  tolerance() {
    return 6 / (this.view?.scale || 1);
  }

  onPointerDown(e) {
    if (e.button === 1) return; // middle button: leave it to the graph (panning)
    e.preventDefault();
    e.stopPropagation();
    this.focusKeys();
    if (!this.view || this.error) {
      if (this.error) this.setNotice("fix the layout JSON (or Undo) before drawing");
      return;
    }
    this.canvas.setPointerCapture?.(e.pointerId);
    if (this.gestureTool) this.cancelGesture(); // a second press (another button) replaces the drag in progress
    const tool = this.tools[this.tool];
    if (tool.down(e, this.eventToLayout(e))) this.gestureTool = tool;
    this.render();
  }

  onPointerMove(e) {
    if (!this.view) return;
    const p = this.eventToLayout(e);
    this.hover = p;
    const current = this.tools[this.tool];
    (this.gestureTool ?? current).move(e, p);
    if (current.cursor) this.setCursor(current.cursor);
    this.render();
  }

  onPointerUp(e) {
    const tool = this.gestureTool;
    this.gestureTool = null;
    if (!tool) return;
    e.stopPropagation();
    tool.up(e, this.eventToLayout(e));
    this.render();
  }

  /** Abort the drag in progress (pointercancel, Escape); a polygon in progress stays. */
  cancelGesture() {
    const tool = this.gestureTool;
    this.gestureTool = null;
    tool?.cancel();
    this.render();
  }

  hasSelection() {
    return this.selected >= 0 && this.selected < this.doc.annos.length;
  }

  /** The one slot-limit guard: every tool asks it before it would add an instance. True while a slot is free;
   *  otherwise the status line says why and the tool adds nothing. */
  requireFreeSlot() {
    if (canAddInstance(this.doc)) return true;
    this.setNotice(SLOT_LIMIT_MESSAGE);
    return false;
  }

  /** Append an empty instance (through the slot guard): its index, or -1 when every slot is taken. */
  addInstance() {
    if (!this.requireFreeSlot()) return -1;
    this.doc.annos.push({ caption: "" });
    return this.doc.annos.length - 1;
  }

  /** Put a location on a new instance, or (Shift) on the selected one, replacing that location there. */
  placeOnInstance(toSelected, apply, what) {
    const i = toSelected && this.hasSelection() ? this.selected : this.addInstance();
    if (i < 0) return;
    apply(this.doc.annos[i]);
    this.selected = i;
    this.commit();
    this.setNotice(`${what} placed on instance ${i}`);
    this.focusPrompt(i);
  }

  focusPrompt(i) {
    const input = this.list.children[i]?.querySelector("input");
    if (input && !input.value.trim()) {
      input.focus({ preventScroll: true });
      this.typingSnapshot = this.text;
    }
  }

  /** The wheel over the drawing area: with the brush it sets the brush radius; otherwise it is left to ComfyUI. */
  onWheel(e) {
    if (this.tool !== "brush" || e.ctrlKey || e.metaKey || !e.deltaY) return;
    e.preventDefault();
    e.stopPropagation();
    this.brushRadius = Math.max(1, Math.min(80, this.brushRadius + (e.deltaY < 0 ? 2 : -2)));
    this.sizeInput.value = String(this.brushRadius);
    this.render();
  }

  // ------------------------------------------------------------------------------------------ keyboard

  onKeyDown(e) {
    const inField = e.target !== this.keySink && ["INPUT", "TEXTAREA"].includes(e.target.tagName);
    const ctrl = e.ctrlKey || e.metaKey;
    const key = e.key.toLowerCase();
    if (ctrl && key !== "z" && key !== "y") return; // ComfyUI's own shortcuts (queue, save, ...) keep working
    e.stopPropagation();
    if (inField) return; // typing: the field handles its own keys (and its own text undo)
    if (ctrl && key === "z" && !e.shiftKey) { e.preventDefault(); this.undo(); return; }
    if (ctrl && (key === "y" || (key === "z" && e.shiftKey))) { e.preventDefault(); this.redo(); return; }
    const tool = this.tools[this.tool];
    if (e.key === "Delete" || e.key === "Backspace") e.preventDefault();
    if (e.key === "Escape") {
      this.cancelGesture(); // a drag in progress
      if (!tool.cancel()) this.select(-1); // the tool's own work in progress (a polygon), else the selection
      this.render();
    } else if (tool.onKey?.(e)) { // keys a tool handles itself (the polygon: Delete, Enter)
      this.render();
    } else if (e.key === "Delete" || e.key === "Backspace") {
      this.deleteSelected();
    } else if (e.key === "[" || e.key === "]") {
      this.brushRadius = Math.max(1, Math.min(80, this.brushRadius + (e.key === "]" ? 2 : -2)));
      this.sizeInput.value = String(this.brushRadius);
      this.render();
    } else {
      const next = Object.values(this.tools).find((t) => t.key === key);
      if (next && !e.altKey) this.setTool(next.id);
    }
  }

  // ------------------------------------------------------------------------------------------ drawing

  /** Ask for a redraw: the canvas (and status line) are drawn once on the next animation frame, however many
   *  times this is called before it. */
  render() {
    this.frame.request();
  }

  /** Draw now (dropping a pending frame). */
  renderNow() {
    this.frame.cancel();
    this.updateStatus();
    const cssW = this.stage.clientWidth;
    const cssH = this.stage.clientHeight;
    if (!cssW || !cssH) return;
    const dpr = window.devicePixelRatio || 1;
    if (this.canvas.width !== Math.round(cssW * dpr) || this.canvas.height !== Math.round(cssH * dpr)) {
      this.canvas.width = Math.round(cssW * dpr);
      this.canvas.height = Math.round(cssH * dpr);
    }
    this.view = fitView(this.doc.width, this.doc.height, cssW, cssH, 4);
    const state = {
      doc: this.doc,
      view: this.view,
      selected: this.selected,
      maskOf: (i) => this.maskOf(i),
      maskLayerOf: (i) => this.maskLayerOf(i),
      background: this.background,
      draft: null,
      draftIndex: this.doc.annos.length,
      pendingLayer: null,
      hover: this.hover,
      moveOffset: null,
      brushCursor: this.tool === "brush",
      brushRadius: this.brushRadius,
      erase: this.erase,
      cssWidth: cssW,
      cssHeight: cssH,
      dpr,
    };
    // what the tools have in progress: the current tool's (a polygon) and the drag's
    const current = this.tools[this.tool];
    Object.assign(state, current.drawState(state));
    if (this.gestureTool && this.gestureTool !== current) Object.assign(state, this.gestureTool.drawState(state));
    drawEditor(this.canvas.getContext("2d"), state);
  }
}
