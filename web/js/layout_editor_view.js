// The instance layout editor as a DOM element: toolbar, global caption, drawing canvas, instance prompt list and a
// status line. It knows nothing about ComfyUI: a small `host` object gives it the layout text and the canvas size
// (the node's widgets) and takes the edited text back. The layout JSON text is the single source of truth; the
// editor parses it, edits the parsed document and writes the whole text back after every change.

import {
  MIN_BOX_SIZE, clampPoint, clampTranslation, clientToElement, closesPolygon, distance, fitView, handleAt, isUsableBox,
  normalizeBox, polygonArea, resamplePolyline, resizeBox, roundPoints, viewToLayout,
} from "./geometry.js";
import {
  LayoutTextError, MAX_INSTANCES, annoBounds, annoBox, annoPolygons, emptyLayout, hasMask, hitTest, instanceColour,
  layoutIssues, modalitiesOf, parseLayoutText, scaleLayout, serializeLayout, setBox, setMaskBitmap, translateAnno,
} from "./layout_doc.js";
import { emptyMask, fillPolygons, maskAny, maskValueToBitmap, paintStroke } from "./mask_bitmap.js";
import { UndoStack } from "./undo_stack.js";
import { drawEditor, maskLayer } from "./layout_editor_draw.js";
import { el, ensureStyle } from "./layout_editor_dom.js";

const TOOLS = [
  { id: "select", label: "Select", key: "v", hint: "Click an instance to select it, drag to move it, drag a box handle to resize. Delete removes it." },
  { id: "box", label: "Box", key: "b", hint: "Drag to draw a box (a new instance; hold Shift to give the selected instance this box)." },
  { id: "point", label: "Point", key: "p", hint: "Click to place a point (a new instance; Shift: the selected instance's point)." },
  { id: "scribble", label: "Scribble", key: "s", hint: "Draw freehand; the stroke is stored as 20 points (Shift: for the selected instance)." },
  { id: "brush", label: "Brush", key: "m", hint: "Paint a mask. Strokes add to the selected instance's mask; Esc deselects to start a new one. Erase: toggle, Alt or right button." },
  { id: "polygon", label: "Polygon", key: "g", hint: "Click the corners of a mask polygon; click the first corner, double-click or Enter to close, Esc to cancel." },
];

export class LayoutEditorView {
  /** host: {getText(), setText(text), getCanvasSize() -> [w, h], setCanvasSize(w, h), changed()} */
  constructor(host) {
    this.host = host;
    this.tool = "box";
    this.selected = -1;
    this.brushRadius = 12;
    this.erase = false;
    this.undoStack = new UndoStack(100);
    this.gesture = null;
    this.draft = null;
    this.hover = null;
    this.background = null;
    this.error = null;
    this.notice = "";
    this.masks = new WeakMap(); // mask JSON value -> {bits, layer, colourKey}
    const [w, h] = host.getCanvasSize();
    this.doc = emptyLayout(w, h);
    this.text = null; // the text the editor last saw or wrote
    this.goodText = null; // the last text that parsed (what undo returns to after a broken paste)
    ensureStyle();
    this.buildDom();
    this.sync();
  }

  // ------------------------------------------------------------------------------------------ DOM

  buildDom() {
    this.toolButtons = {};
    const toolBar = el("div", { className: "instdiff-le-bar" });
    for (const t of TOOLS) {
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
    toolBar.append(this.sizeInput, this.eraseButton, this.undoButton, this.redoButton, this.deleteButton, this.clearButton);

    this.captionInput = el("input", { type: "text", placeholder: "global caption: the whole picture, e.g. 'a cat and a dog in a park'",
      title: "The layout's global caption (the node's caption output)" });
    this.captionInput.addEventListener("focus", () => { this.typingSnapshot = this.text; });
    this.captionInput.addEventListener("input", () => {
      this.recordTyping();
      this.doc.caption = this.captionInput.value;
      this.commit({ record: false });
    });
    const captionRow = el("div", { className: "instdiff-le-caption" }, [el("span", {}, ["Caption"]), this.captionInput]);

    this.canvas = el("canvas", { "aria-label": "instance layout canvas" });
    // Keyboard focus goes to this invisible read-only textarea, not to the canvas: ComfyUI's change tracker
    // listens to every keydown on the window in the capture phase (before any element can stop it) and runs
    // the GRAPH undo on Ctrl+Z unless a text field has the focus, which would reload the node under the editor.
    this.keySink = el("textarea", { className: "instdiff-le-keys", readonly: "", tabindex: "-1",
      "aria-label": "layout editor keyboard (Delete, Ctrl+Z, Ctrl+Y, tool keys)" });
    this.stage = el("div", { className: "instdiff-le-stage" }, [this.canvas, this.keySink]);
    this.keySink.addEventListener("focus", () => this.stage.classList.add("focused"));
    this.keySink.addEventListener("blur", () => this.stage.classList.remove("focused"));
    this.list = el("div", { className: "instdiff-le-list" });
    this.status = el("div", { className: "instdiff-le-status" });
    this.root = el("div", { className: "instdiff-le" }, [toolBar, captionRow, this.stage, this.list, this.status]);

    this.canvas.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    this.canvas.addEventListener("pointermove", (e) => this.onPointerMove(e));
    this.canvas.addEventListener("pointerup", (e) => this.onPointerUp(e));
    this.canvas.addEventListener("pointercancel", () => this.cancelGesture());
    this.canvas.addEventListener("pointerleave", () => { this.hover = null; this.render(); });
    this.canvas.addEventListener("dblclick", (e) => { if (this.tool === "polygon") { e.preventDefault(); this.closePolygon(); } });
    this.canvas.addEventListener("contextmenu", (e) => e.preventDefault());
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
  }

  setTool(id) {
    if (this.draft?.kind === "polygon" && id !== "polygon") this.draft = null;
    this.tool = id;
    this.updateToolbar();
    this.setNotice(TOOLS.find((t) => t.id === id).hint);
    this.render();
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

  setNotice(text) {
    this.notice = text;
    this.updateStatus();
  }

  updateStatus() {
    const issues = this.error ? [] : layoutIssues(this.doc);
    const ran = (this.lastRunWarnings || []).map((w) => `last run: ${w}`);
    const head = `${this.doc.width}x${this.doc.height}, ${this.doc.annos.length} instance${this.doc.annos.length === 1 ? "" : "s"}`;
    const text = this.error || [head, ...issues, ...ran, this.notice].filter(Boolean).join(" · ");
    this.status.textContent = text;
    this.status.title = text;
    this.status.classList.toggle("error", !!this.error || issues.length > 0);
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

  setBackground(url) {
    if (!url) {
      this.background = null;
      this.render();
      return;
    }
    const img = new Image();
    img.onload = () => this.render();
    img.onerror = () => { if (this.background === img) this.background = null; this.render(); };
    img.src = url;
    this.background = img;
  }

  setRunWarnings(warnings) {
    this.lastRunWarnings = warnings || [];
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
    const [x, y] = this.eventToLayout(e);
    const { width: W, height: H } = this.doc;
    const shift = e.shiftKey;
    if (this.tool === "select") {
      const sel = this.doc.annos[this.selected];
      const box = sel ? annoBox(sel) : null;
      const handle = box ? handleAt(box, x, y, this.tolerance()) : null;
      if (handle) {
        this.gesture = { kind: "resize", handle, before: this.text, box };
        return;
      }
      const hit = hitTest(this.doc, x, y, this.tolerance(), (i) => this.maskOf(i));
      this.select(hit);
      if (hit >= 0) {
        const bounds = annoBounds(this.doc.annos[hit], this.maskOf(hit), W, H);
        this.gesture = { kind: "move", start: [x, y], offset: [0, 0], bounds };
      }
      return;
    }
    if (this.tool !== "polygon" && this.tool !== "brush" && this.doc.annos.length >= MAX_INSTANCES && !shift) {
      this.setNotice(`the model has ${MAX_INSTANCES} instance slots; delete one or hold Shift to edit the selected instance`);
      return;
    }
    if (this.tool === "box") {
      this.gesture = { kind: "box", start: [x, y], shift };
      this.draft = { kind: "box", box: null };
    } else if (this.tool === "point") {
      this.gesture = { kind: "point", shift };
    } else if (this.tool === "scribble") {
      this.gesture = { kind: "scribble", shift };
      this.draft = { kind: "scribble", points: [[x, y]] };
    } else if (this.tool === "brush") {
      this.startBrush(e, x, y, W, H);
    } else if (this.tool === "polygon") {
      this.addPolygonVertex(x, y, shift);
    }
    this.render();
  }

  onPointerMove(e) {
    if (!this.view) return;
    const [x, y] = this.eventToLayout(e);
    this.hover = [x, y];
    const g = this.gesture;
    const { width: W, height: H } = this.doc;
    if (g?.kind === "box") {
      this.draft.box = normalizeBox(g.start[0], g.start[1], x, y, W, H);
    } else if (g?.kind === "scribble") {
      const last = this.draft.points[this.draft.points.length - 1];
      if (distance(last[0], last[1], x, y) * this.view.scale >= 2) this.draft.points.push([x, y]);
    } else if (g?.kind === "brush") {
      paintStroke(g.bits, W, H, g.last[0], g.last[1], x, y, this.brushRadius, g.value);
      g.last = [x, y];
      g.dirty = true;
    } else if (g?.kind === "move") {
      const [dx, dy] = [Math.round(x - g.start[0]), Math.round(y - g.start[1])];
      g.offset = g.bounds ? clampTranslation(g.bounds, dx, dy, W, H) : [dx, dy];
    } else if (g?.kind === "resize") {
      setBox(this.doc.annos[this.selected], resizeBox(g.box, g.handle, x, y, W, H));
      this.renderList();
    } else if (!g && this.tool === "select") {
      const sel = this.doc.annos[this.selected];
      const box = sel ? annoBox(sel) : null;
      const handle = box ? handleAt(box, x, y, this.tolerance()) : null;
      this.canvas.style.cursor = handle ? (["n", "s"].includes(handle) ? "ns-resize" : ["e", "w"].includes(handle)
        ? "ew-resize" : ["nw", "se"].includes(handle) ? "nwse-resize" : "nesw-resize") : "default";
    }
    if (this.tool !== "select") this.canvas.style.cursor = "crosshair";
    this.render();
  }

  onPointerUp(e) {
    const g = this.gesture;
    this.gesture = null;
    if (!g) return;
    e.stopPropagation();
    const [x, y] = this.eventToLayout(e);
    const { width: W, height: H } = this.doc;
    if (g.kind === "box") {
      const box = normalizeBox(g.start[0], g.start[1], x, y, W, H);
      this.draft = null;
      if (!isUsableBox(box, MIN_BOX_SIZE)) {
        this.setNotice("drag to draw a box");
      } else {
        this.placeOnInstance(g.shift, (a) => setBox(a, box), "box");
      }
    } else if (g.kind === "point") {
      if (x < 0 || y < 0 || x > W || y > H) return this.render();
      const pt = clampPoint(x, y, W, H);
      this.placeOnInstance(g.shift, (a) => { a.point = pt; }, "point");
    } else if (g.kind === "scribble") {
      this.draft.points.push([x, y]);
      const pts = this.draft.points.map(([px, py]) => clampPoint(px, py, W, H));
      this.draft = null;
      const resampled = resamplePolyline(pts);
      if (!resampled) {
        this.setNotice("drag to draw a scribble");
      } else {
        this.placeOnInstance(g.shift, (a) => { a.scribble = roundPoints(resampled, 1); }, "scribble");
      }
    } else if (g.kind === "brush") {
      this.finishBrush(g);
    } else if (g.kind === "move") {
      const i = this.selected;
      if (i >= 0 && (g.offset[0] || g.offset[1])) {
        const before = this.text;
        const moved = translateAnno(this.doc.annos[i], g.offset[0], g.offset[1], W, H, this.maskOf(i));
        if (moved[0] || moved[1]) {
          this.undoStack.record(before);
          this.commit({ record: false });
        }
      }
    } else if (g.kind === "resize") {
      this.undoStack.record(g.before);
      this.commit({ record: false });
    }
    this.render();
  }

  cancelGesture() {
    if (this.gesture?.kind === "resize") this.restore(this.gesture.before);
    this.gesture = null;
    if (this.draft?.kind !== "polygon") this.draft = null;
    this.render();
  }

  /** Put a location on a new instance, or (Shift) on the selected one, replacing that location there. */
  placeOnInstance(toSelected, apply, what) {
    let i = this.selected;
    if (!(toSelected && i >= 0 && i < this.doc.annos.length)) {
      if (this.doc.annos.length >= MAX_INSTANCES) {
        this.setNotice(`the model has ${MAX_INSTANCES} instance slots; delete one first`);
        return;
      }
      this.doc.annos.push({ caption: "" });
      i = this.doc.annos.length - 1;
    }
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

  startBrush(e, x, y, W, H) {
    const value = this.erase || e.altKey || e.button === 2 ? 0 : 1;
    const sel = this.doc.annos[this.selected];
    let target = -1;
    let bits;
    if (sel && (hasMask(sel) || e.shiftKey)) {
      target = this.selected;
      const current = this.maskOf(target);
      bits = current ? current.slice() : emptyMask(W, H);
    } else if (value === 0) {
      this.setNotice("select an instance with a mask to erase from it");
      return;
    } else {
      if (this.doc.annos.length >= MAX_INSTANCES) {
        this.setNotice(`the model has ${MAX_INSTANCES} instance slots; delete one first`);
        return;
      }
      bits = emptyMask(W, H);
    }
    paintStroke(bits, W, H, x, y, x, y, this.brushRadius, value);
    this.gesture = { kind: "brush", target, bits, value, last: [x, y], before: this.text };
    this.brushPreview = this.gesture;
  }

  finishBrush(g) {
    this.brushPreview = null;
    const { width: W, height: H } = this.doc;
    const any = maskAny(g.bits);
    if (g.target < 0) {
      if (!any) return;
      if (this.doc.annos.length >= MAX_INSTANCES) return;
      this.doc.annos.push({ caption: "" });
      g.target = this.doc.annos.length - 1;
    }
    const anno = this.doc.annos[g.target];
    setMaskBitmap(anno, any ? g.bits : null, W, H);
    if (!any && modalitiesOf(anno).length === 0) {
      this.setNotice(`instance ${g.target} lost its only location (its mask); Undo restores it`);
    }
    this.selected = g.target;
    this.undoStack.record(g.before);
    this.commit({ record: false });
    this.focusPrompt(g.target);
  }

  addPolygonVertex(x, y, shift) {
    const { width: W, height: H } = this.doc;
    if (x < 0 || y < 0 || x > W || y > H) return;
    const pt = clampPoint(x, y, W, H);
    if (!this.draft || this.draft.kind !== "polygon") this.draft = { kind: "polygon", points: [], shift };
    if (closesPolygon(this.draft.points, pt[0], pt[1], this.tolerance() * 1.5)) {
      this.closePolygon();
      return;
    }
    const last = this.draft.points[this.draft.points.length - 1];
    if (!last || last[0] !== pt[0] || last[1] !== pt[1]) this.draft.points.push(pt);
  }

  closePolygon() {
    const d = this.draft;
    if (!d || d.kind !== "polygon") return;
    this.draft = null;
    const pts = d.points;
    if (pts.length < 3 || polygonArea(pts) < 1) {
      this.setNotice("a polygon needs at least 3 corners enclosing some area");
      this.render();
      return;
    }
    const flat = pts.flatMap(([x, y]) => [x, y]);
    const sel = this.doc.annos[this.selected];
    const { width: W, height: H } = this.doc;
    if (sel && (hasMask(sel) || d.shift)) {
      const polys = annoPolygons(sel);
      if (!hasMask(sel) || (polys && polys.length)) {
        sel.mask = [...(polys || []).map((p) => p.flatMap(([x, y]) => [x, y])), flat];
      } else {
        const bits = (this.maskOf(this.selected) || emptyMask(W, H)).slice();
        fillPolygons(bits, W, H, [pts]);
        setMaskBitmap(sel, bits, W, H);
      }
      this.commit();
      this.setNotice(`polygon added to instance ${this.selected}'s mask`);
      return;
    }
    this.placeOnInstance(false, (a) => { a.mask = [flat]; }, "polygon mask");
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
    if (e.key === "Delete" || e.key === "Backspace") {
      e.preventDefault();
      if (this.draft?.kind === "polygon" && this.draft.points.length) {
        this.draft.points.pop();
        this.render();
      } else {
        this.deleteSelected();
      }
    } else if (e.key === "Escape") {
      if (this.draft || this.gesture) this.cancelGesture();
      if (this.draft?.kind === "polygon") this.draft = null;
      else this.select(-1);
      this.render();
    } else if (e.key === "Enter") {
      if (this.draft?.kind === "polygon") { e.preventDefault(); this.closePolygon(); }
    } else if (e.key === "[" || e.key === "]") {
      this.brushRadius = Math.max(1, Math.min(80, this.brushRadius + (e.key === "]" ? 2 : -2)));
      this.sizeInput.value = String(this.brushRadius);
      this.render();
    } else {
      const tool = TOOLS.find((t) => t.key === key);
      if (tool && !e.altKey) this.setTool(tool.id);
    }
  }

  // ------------------------------------------------------------------------------------------ drawing

  render() {
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
    const brushing = this.brushPreview;
    const ctx = this.canvas.getContext("2d");
    drawEditor(ctx, {
      doc: this.doc,
      view: this.view,
      selected: this.selected,
      maskOf: (i) => (brushing && brushing.target === i ? brushing.bits : this.maskOf(i)),
      maskLayerOf: (i) => (brushing && brushing.target === i
        ? maskLayer(brushing.bits, this.doc.width, this.doc.height, instanceColour(i)) : this.maskLayerOf(i)),
      background: this.background,
      draft: brushing && brushing.target < 0 ? { kind: "none" } : this.draft,
      draftIndex: this.doc.annos.length,
      hover: this.hover,
      moveOffset: this.gesture?.kind === "move" ? this.gesture.offset : null,
      brushCursor: this.tool === "brush",
      brushRadius: this.brushRadius,
      erase: this.erase,
      cssWidth: cssW,
      cssHeight: cssH,
      dpr,
    });
    if (brushing && brushing.target < 0) {
      const layer = maskLayer(brushing.bits, this.doc.width, this.doc.height, instanceColour(this.doc.annos.length));
      ctx.globalAlpha = 0.5;
      ctx.drawImage(layer, this.view.ox, this.view.oy, this.doc.width * this.view.scale, this.doc.height * this.view.scale);
      ctx.globalAlpha = 1;
    }
  }
}
