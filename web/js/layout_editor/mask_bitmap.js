// Pure mask bitmaps for the layout editor (no DOM): a mask is a Uint8Array of width*height bytes in row-major
// order (index y*width + x, 1 = set). Brushed masks are stored in the layout JSON as compressed COCO RLE, the
// format the Python loader (instancediffusion_core/layout/rle.py) and the official demos read: run lengths of 0s and
// 1s (0s first) over the pixels in COLUMN-major order, each run written as characters of 5 data bits (offset 48,
// 0x20 = more follows, sign from bit 0x10); from the fourth run on only the difference to the run two back.

import { flatToPoints } from "./geometry.js";

export function emptyMask(width, height) {
  return new Uint8Array(width * height);
}

export function maskCount(bits) {
  let n = 0;
  for (let i = 0; i < bits.length; i++) n += bits[i] ? 1 : 0;
  return n;
}

export function maskAny(bits) {
  for (let i = 0; i < bits.length; i++) if (bits[i]) return true;
  return false;
}

/** COCO-style extent [x0, y0, x1, y1] (x1 = last column + 1) of the set pixels; null when the mask is empty. */
export function maskBounds(bits, width, height) {
  let x0 = width;
  let y0 = height;
  let x1 = -1;
  let y1 = -1;
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let x = 0; x < width; x++) {
      if (bits[row + x]) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        y1 = y;
      }
    }
  }
  return x1 < 0 ? null : [x0, y0, x1 + 1, y1 + 1];
}

// --------------------------------------------------------------------------------------------- COCO RLE

/** Row-major bitmap -> run lengths over column-major pixels, 0s first. */
export function maskToRuns(bits, width, height) {
  const runs = [];
  let current = 0;
  let run = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const v = bits[y * width + x] ? 1 : 0;
      if (v !== current) {
        runs.push(run);
        run = 0;
        current = v;
      }
      run++;
    }
  }
  runs.push(run);
  return runs;
}

/** Run lengths (0s first, column-major) -> row-major bitmap. Throws when the runs do not cover the canvas. */
export function runsToMask(runs, width, height) {
  const total = runs.reduce((a, b) => a + b, 0);
  if (runs.some((r) => !Number.isInteger(r) || r < 0)) throw new Error("RLE counts must be non-negative integers");
  if (total !== width * height) {
    throw new Error(`RLE counts cover ${total} pixels but the ${width}x${height} canvas has ${width * height}`);
  }
  const bits = new Uint8Array(width * height);
  let p = 0;
  for (let i = 0; i < runs.length; i++) {
    const v = i % 2;
    for (let k = 0; k < runs[i]; k++, p++) {
      if (v) {
        const x = Math.floor(p / height);
        const y = p - x * height;
        bits[y * width + x] = 1;
      }
    }
  }
  return bits;
}

/** Run lengths -> compressed COCO counts string (the C code's rleToString). */
export function encodeCounts(runs) {
  let out = "";
  for (let i = 0; i < runs.length; i++) {
    let x = runs[i] - (i > 2 ? runs[i - 2] : 0);
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x >>= 5; // arithmetic shift, as in the C code
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      out += String.fromCharCode(c + 48);
    }
  }
  return out;
}

/** Compressed COCO counts string -> run lengths (the C code's rleFrString). */
export function decodeCounts(text) {
  const runs = [];
  let p = 0;
  while (p < text.length) {
    let x = 0;
    let k = 0;
    let more = true;
    while (more) {
      if (p >= text.length) throw new Error(`RLE counts string ends inside a number (at character ${p})`);
      const c = text.charCodeAt(p) - 48;
      if (c < 0 || c >= 64) throw new Error(`RLE counts string has an invalid character at position ${p}`);
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p++;
      k++;
      if (!more && c & 0x10) x |= -1 << (5 * k);
    }
    if (runs.length > 2) x += runs[runs.length - 2];
    runs.push(x);
  }
  return runs;
}

/** Bitmap -> {"size": [height, width], "counts": "<compressed>"} (compressed COCO RLE). */
export function encodeRLE(bits, width, height) {
  return { size: [height, width], counts: encodeCounts(maskToRuns(bits, width, height)) };
}

/** COCO RLE (compressed string or uncompressed list counts) -> bitmap of the canvas size. */
export function decodeRLE(rle, width, height) {
  if (!rle || !Array.isArray(rle.size) || rle.counts === undefined) {
    throw new Error('an RLE mask needs "size": [height, width] and "counts"');
  }
  const [h, w] = rle.size;
  if (h !== height || w !== width) {
    throw new Error(`RLE size [${h}, ${w}] (= [height, width]) does not match the ${width}x${height} canvas`);
  }
  const runs = typeof rle.counts === "string" ? decodeCounts(rle.counts) : rle.counts;
  if (!Array.isArray(runs)) throw new Error("RLE counts must be a string or a list of integers");
  return runsToMask(runs, width, height);
}

// --------------------------------------------------------------------------------------------- painting

/** The pixels a stroke segment of `radius` can touch, clipped to the canvas: [x0, y0, x1, y1] inclusive, or null
 *  when the segment lies wholly off the canvas (what a display of the mask has to update after paintStroke). */
export function strokeBounds(width, height, ax, ay, bx, by, radius) {
  const r = Math.max(radius, 0.5);
  const x0 = Math.max(0, Math.floor(Math.min(ax, bx) - r));
  const x1 = Math.min(width - 1, Math.ceil(Math.max(ax, bx) + r));
  const y0 = Math.max(0, Math.floor(Math.min(ay, by) - r));
  const y1 = Math.min(height - 1, Math.ceil(Math.max(ay, by) + r));
  return x0 <= x1 && y0 <= y1 ? [x0, y0, x1, y1] : null;
}

/** Set (value 1) or clear (value 0) every pixel whose centre lies within `radius` of the segment (ax, ay)-(bx, by):
 *  one brush stroke segment (a point when both ends coincide). Returns the bitmap (modified in place). */
export function paintStroke(bits, width, height, ax, ay, bx, by, radius, value = 1) {
  const r = Math.max(radius, 0.5);
  const bounds = strokeBounds(width, height, ax, ay, bx, by, radius);
  if (!bounds) return bits;
  const [xMin, yMin, xMax, yMax] = bounds;
  const dx = bx - ax;
  const dy = by - ay;
  const len2 = dx * dx + dy * dy;
  const r2 = r * r;
  for (let y = yMin; y <= yMax; y++) {
    const py = y + 0.5;
    for (let x = xMin; x <= xMax; x++) {
      const px = x + 0.5;
      let t = len2 > 0 ? ((px - ax) * dx + (py - ay) * dy) / len2 : 0;
      t = t < 0 ? 0 : t > 1 ? 1 : t;
      const ex = px - (ax + t * dx);
      const ey = py - (ay + t * dy);
      if (ex * ex + ey * ey <= r2) bits[y * width + x] = value;
    }
  }
  return bits;
}

/** Fill polygons (vertex lists) into the bitmap: a pixel is set when its centre is inside a polygon (even-odd per
 *  polygon, union over polygons), like the COCO polygon list the loader rasterises (edges may differ by a pixel
 *  from PIL, which the loader uses; the editor only needs this for display and for merging with brushed pixels). */
export function fillPolygons(bits, width, height, polygons, value = 1) {
  for (const poly of polygons) {
    if (poly.length < 3) continue;
    let yMin = Infinity;
    let yMax = -Infinity;
    for (const [, y] of poly) {
      yMin = Math.min(yMin, y);
      yMax = Math.max(yMax, y);
    }
    const rowFrom = Math.max(0, Math.floor(yMin));
    const rowTo = Math.min(height - 1, Math.ceil(yMax));
    for (let row = rowFrom; row <= rowTo; row++) {
      const cy = row + 0.5;
      const xs = [];
      for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
        const [xi, yi] = poly[i];
        const [xj, yj] = poly[j];
        if ((yi > cy) !== (yj > cy)) xs.push(xi + ((cy - yi) * (xj - xi)) / (yj - yi));
      }
      xs.sort((a, b) => a - b);
      for (let k = 0; k + 1 < xs.length; k += 2) {
        const from = Math.max(0, Math.ceil(xs[k] - 0.5));
        const to = Math.min(width - 1, Math.floor(xs[k + 1] - 0.5));
        for (let x = from; x <= to; x++) bits[row * width + x] = value;
      }
    }
  }
  return bits;
}

/** The same mask moved by whole pixels (dx, dy); what leaves the canvas is lost. */
export function shiftMask(bits, width, height, dx, dy) {
  dx = Math.round(dx);
  dy = Math.round(dy);
  const out = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    const ty = y + dy;
    if (ty < 0 || ty >= height) continue;
    for (let x = 0; x < width; x++) {
      const tx = x + dx;
      if (tx >= 0 && tx < width && bits[y * width + x]) out[ty * width + tx] = 1;
    }
  }
  return out;
}

/** Nearest-neighbour resize of a mask to another canvas size (used when the canvas size changes). */
export function resampleMask(bits, width, height, newWidth, newHeight) {
  const out = new Uint8Array(newWidth * newHeight);
  for (let y = 0; y < newHeight; y++) {
    const sy = Math.min(height - 1, Math.floor(((y + 0.5) * height) / newHeight));
    for (let x = 0; x < newWidth; x++) {
      const sx = Math.min(width - 1, Math.floor(((x + 0.5) * width) / newWidth));
      out[y * newWidth + x] = bits[sy * width + sx];
    }
  }
  return out;
}

/** A layout JSON mask value (COCO RLE dict, COCO polygon list [[x1, y1, ...], ...], or a single flat polygon) ->
 *  bitmap; null for "no mask" ([] or missing). Throws with a readable reason for anything else. */
export function maskValueToBitmap(value, width, height) {
  if (value === undefined || value === null || (Array.isArray(value) && value.length === 0)) return null;
  if (Array.isArray(value)) {
    const flatLists = value.every((v) => typeof v === "number") ? [value] : value;
    if (!flatLists.every((p) => Array.isArray(p) && p.length >= 6 && p.length % 2 === 0)) {
      throw new Error("a polygon mask must be a list of [x1, y1, x2, y2, x3, y3, ...] lists");
    }
    return fillPolygons(emptyMask(width, height), width, height, flatLists.map(flatToPoints));
  }
  if (typeof value === "object") return decodeRLE(value, width, height);
  throw new Error(`${typeof value} is not a mask`);
}
