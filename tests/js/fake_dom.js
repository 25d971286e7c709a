// A minimal stand-in for the browser DOM, just enough to build the layout editor view in Node (vitest runs
// without jsdom): elements with listeners, classes, children and simple selectors; canvases whose 2D context keeps
// real RGBA pixels for putImageData/getImageData and logs drawImage (other drawing calls are only counted);
// ResizeObserver and window.devicePixelRatio. Not a test file (vitest only picks up *.test.js).

class ClassList {
  constructor() {
    this.set = new Set();
  }

  add(...names) {
    for (const n of names) this.set.add(n);
  }

  remove(...names) {
    for (const n of names) this.set.delete(n);
  }

  toggle(name, force) {
    const on = force === undefined ? !this.set.has(name) : !!force;
    if (on) this.set.add(name);
    else this.set.delete(name);
    return on;
  }

  contains(name) {
    return this.set.has(name);
  }
}

/** The 2D context of a fake canvas: pixels for the image-data calls, a call counter for everything else. */
export class FakeContext2D {
  constructor(canvas) {
    this.canvas = canvas;
    this.calls = {};
    this.pixels = null;
    this.imageSizes = []; // [w, h] of each createImageData
    this.drawn = []; // the image argument of each drawImage
    return new Proxy(this, {
      get(target, prop) {
        if (prop in target) return target[prop];
        if (typeof prop !== "string") return undefined;
        return (...args) => {
          target.calls[prop] = (target.calls[prop] || 0) + 1;
          return prop === "measureText" ? { width: 6 * String(args[0]).length } : undefined;
        };
      },
      set(target, prop, value) {
        target[prop] = value;
        return true;
      },
    });
  }

  count(name) {
    return this.calls[name] || 0;
  }

  ensurePixels() {
    const size = this.canvas.width * this.canvas.height * 4;
    if (!this.pixels || this.pixels.length !== size) this.pixels = new Uint8ClampedArray(size);
    return this.pixels;
  }

  drawImage(image) {
    this.calls.drawImage = (this.calls.drawImage || 0) + 1;
    this.drawn.push(image);
  }

  createImageData(width, height) {
    this.calls.createImageData = (this.calls.createImageData || 0) + 1;
    this.imageSizes.push([width, height]);
    return { width, height, data: new Uint8ClampedArray(width * height * 4) };
  }

  putImageData(image, dx, dy) {
    this.calls.putImageData = (this.calls.putImageData || 0) + 1;
    const px = this.ensurePixels();
    const W = this.canvas.width;
    for (let y = 0; y < image.height; y++) {
      const row = (dy + y) * W + dx;
      px.set(image.data.subarray(y * image.width * 4, (y + 1) * image.width * 4), row * 4);
    }
  }

  getImageData(x, y, width, height) {
    const px = this.ensurePixels();
    const out = new Uint8ClampedArray(width * height * 4);
    for (let r = 0; r < height; r++) {
      const from = ((y + r) * this.canvas.width + x) * 4;
      out.set(px.subarray(from, from + width * 4), r * width * 4);
    }
    return { width, height, data: out };
  }
}

const matches = (node, selector) => {
  if (selector.startsWith(".")) return node.classList.contains(selector.slice(1));
  return node.tagName === selector.toUpperCase();
};

export class FakeElement {
  constructor(doc, tag) {
    this.ownerDocument = doc;
    this.tagName = tag.toUpperCase();
    this.children = [];
    this.parentNode = null;
    this.listeners = {};
    this.attributes = {};
    this.classList = new ClassList();
    this.dataset = {};
    this.style = {};
    this.textContent = "";
    this.title = "";
    this.value = "";
    this.disabled = false;
    this.clientWidth = 0;
    this.clientHeight = 0;
    this.offsetTop = 0;
    this.offsetHeight = 0;
    this.scrollTop = 0;
    if (this.tagName === "CANVAS") {
      this.width = 300;
      this.height = 150;
      this.context = null;
    }
  }

  get className() {
    return [...this.classList.set].join(" ");
  }

  set className(v) {
    this.classList = new ClassList();
    for (const n of String(v).split(/\s+/).filter(Boolean)) this.classList.add(n);
  }

  setAttribute(name, value) {
    this.attributes[name] = String(value);
    if (name === "value") this.value = String(value);
  }

  getAttribute(name) {
    return this.attributes[name] ?? null;
  }

  addEventListener(type, fn) {
    (this.listeners[type] ||= []).push(fn);
  }

  removeEventListener(type, fn) {
    this.listeners[type] = (this.listeners[type] || []).filter((f) => f !== fn);
  }

  /** Deliver an event to this element's listeners and bubble it up (no capture phase). */
  dispatch(type, props = {}) {
    let stopped = false;
    const event = {
      type, target: this, button: 0, buttons: 0, pointerId: 1, clientX: 0, clientY: 0, shiftKey: false, altKey: false,
      ctrlKey: false, metaKey: false, defaultPrevented: false, ...props,
      preventDefault() { event.defaultPrevented = true; },
      stopPropagation() { stopped = true; },
    };
    for (let node = this; node && !stopped; node = node.parentNode) {
      for (const fn of node.listeners[type] || []) fn(event);
    }
    return event;
  }

  append(...nodes) {
    for (const n of nodes) {
      if (typeof n === "string") {
        this.textContent += n;
        continue;
      }
      n.parentNode = this;
      this.children.push(n);
    }
  }

  appendChild(node) {
    this.append(node);
    return node;
  }

  replaceChildren(...nodes) {
    for (const c of this.children) c.parentNode = null;
    this.children = [];
    this.append(...nodes);
  }

  *descendants() {
    for (const c of this.children) {
      yield c;
      yield* c.descendants();
    }
  }

  querySelector(selector) {
    for (const d of this.descendants()) if (matches(d, selector)) return d;
    return null;
  }

  querySelectorAll(selector) {
    return [...this.descendants()].filter((d) => matches(d, selector));
  }

  closest(selector) {
    for (let node = this; node; node = node.parentNode) if (matches(node, selector)) return node;
    return null;
  }

  focus() {
    const doc = this.ownerDocument;
    if (doc.activeElement === this) return;
    const previous = doc.activeElement;
    doc.activeElement = this;
    previous?.dispatch("blur");
    this.dispatch("focus");
  }

  blur() {
    if (this.ownerDocument.activeElement !== this) return;
    this.ownerDocument.activeElement = null;
    this.dispatch("blur");
  }

  getBoundingClientRect() {
    return { left: 0, top: 0, width: this.clientWidth, height: this.clientHeight };
  }

  setPointerCapture() {}

  releasePointerCapture() {}

  getContext(kind) {
    if (this.tagName !== "CANVAS" || kind !== "2d") return null;
    this.context ||= new FakeContext2D(this);
    return this.context;
  }
}

export class FakeDocument {
  constructor() {
    this.activeElement = null;
    this.created = [];
    this.head = new FakeElement(this, "head");
    this.body = new FakeElement(this, "body");
  }

  createElement(tag) {
    const node = new FakeElement(this, tag);
    this.created.push(node);
    return node;
  }

  getElementById(id) {
    for (const root of [this.head, this.body]) {
      for (const d of root.descendants()) if (d.id === id) return d;
    }
    return null;
  }

  /** Canvases made so far (the editor's own canvas first, then mask layers). */
  canvases() {
    return this.created.filter((n) => n.tagName === "CANVAS");
  }
}

/** Install a fresh fake DOM on globalThis (document, window, ResizeObserver); returns the document. */
export function installFakeDom() {
  const doc = new FakeDocument();
  globalThis.document = doc;
  globalThis.window = { devicePixelRatio: 1 };
  globalThis.ResizeObserver = class {
    constructor(callback) {
      this.callback = callback;
    }

    observe() {}

    disconnect() {}
  };
  return doc;
}
