// Render batching for the layout editor: however many times something asks for a redraw (every pointer event,
// widget change, image load), the canvas is drawn at most once per animation frame. No DOM; where
// requestAnimationFrame does not exist (Node, vitest) a ~60 Hz timer stands in for it.

const FALLBACK_FRAME_MS = 16;

function defaultRequestFrame(callback) {
  if (typeof globalThis.requestAnimationFrame === "function") return globalThis.requestAnimationFrame(callback);
  return setTimeout(() => callback(Date.now()), FALLBACK_FRAME_MS);
}

function defaultCancelFrame(id) {
  if (typeof globalThis.cancelAnimationFrame === "function" && typeof globalThis.requestAnimationFrame === "function") {
    globalThis.cancelAnimationFrame(id);
  } else {
    clearTimeout(id);
  }
}

/** A scheduler that calls `draw()` once on the next frame after one or more `request()` calls.
 *  `flush()` draws now if a frame is pending (and drops that frame); `cancel()` drops it without drawing.
 *  The frame functions default to requestAnimationFrame / cancelAnimationFrame, looked up on each request. */
export function frameScheduler(draw, { requestFrame = defaultRequestFrame, cancelFrame = defaultCancelFrame } = {}) {
  let scheduled = false;
  let handle = null;
  const fire = () => {
    if (!scheduled) return; // cancelled meanwhile
    scheduled = false;
    handle = null;
    draw();
  };
  return {
    get pending() {
      return scheduled;
    },
    request() {
      if (scheduled) return;
      scheduled = true;
      const h = requestFrame(fire);
      if (scheduled) handle = h; // (a frame function that calls back at once has already drawn)
    },
    cancel() {
      if (!scheduled) return;
      scheduled = false;
      if (handle !== null) cancelFrame(handle);
      handle = null;
    },
    flush() {
      if (!scheduled) return false;
      this.cancel();
      draw();
      return true;
    },
  };
}
