// Pure geometry of the instance layout editor (no DOM): the editor draws in CSS pixels but stores everything in
// layout canvas pixels, so every conversion, hit test and shape rule lives here where unit tests can reach it.
// Boxes are corner tuples [x0, y0, x1, y1]; points are [x, y]; polylines and polygons are arrays of [x, y].

export const SCRIBBLE_POINTS = 20; // what the official scribble input holds (spec: 20 points per scribble)
export const MIN_BOX_SIZE = 2; // a drag shorter than this is a click, not a box

export const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);

/** Where the layout canvas (width x height) sits inside an area of areaW x areaH CSS pixels: the largest
 *  aspect-preserving fit, centred. scale = CSS pixels per canvas pixel. */
export function fitView(width, height, areaW, areaH, pad = 0) {
  if (!(width > 0 && height > 0)) throw new Error(`fitView: canvas size ${width}x${height} must be positive`);
  const availW = Math.max(areaW - 2 * pad, 1);
  const availH = Math.max(areaH - 2 * pad, 1);
  const scale = Math.min(availW / width, availH / height);
  return { scale, ox: (areaW - width * scale) / 2, oy: (areaH - height * scale) / 2, width, height };
}

/** CSS pixel inside the drawing area -> layout canvas pixel (unclamped, fractional). */
export function viewToLayout(view, x, y) {
  return [(x - view.ox) / view.scale, (y - view.oy) / view.scale];
}

/** Layout canvas pixel -> CSS pixel inside the drawing area. */
export function layoutToView(view, x, y) {
  return [view.ox + x * view.scale, view.oy + y * view.scale];
}

/** A pointer event's client position -> CSS pixel of an element whose on-screen rectangle is `rect` and whose
 *  untransformed size is cssW x cssH. ComfyUI scales DOM widgets with a CSS transform when the graph is zoomed,
 *  so the on-screen rectangle and the element's own size differ by that zoom factor. */
export function clientToElement(clientX, clientY, rect, cssW, cssH) {
  const sx = rect.width > 0 ? cssW / rect.width : 1;
  const sy = rect.height > 0 ? cssH / rect.height : 1;
  return [(clientX - rect.left) * sx, (clientY - rect.top) * sy];
}

/** Any two corners -> [x0, y0, x1, y1] ordered, clamped to the canvas and rounded to whole pixels. */
export function normalizeBox(ax, ay, bx, by, width, height) {
  const x0 = Math.round(clamp(Math.min(ax, bx), 0, width));
  const y0 = Math.round(clamp(Math.min(ay, by), 0, height));
  const x1 = Math.round(clamp(Math.max(ax, bx), 0, width));
  const y1 = Math.round(clamp(Math.max(ay, by), 0, height));
  return [x0, y0, x1, y1];
}

export const boxWidth = (b) => b[2] - b[0];
export const boxHeight = (b) => b[3] - b[1];
export const isUsableBox = (b, min = MIN_BOX_SIZE) => !!b && boxWidth(b) >= min && boxHeight(b) >= min;

/** Official [x, y, w, h] <-> corners. */
export const xywhToBox = ([x, y, w, h]) => [x, y, x + w, y + h];
export const boxToXywh = ([x0, y0, x1, y1]) => [x0, y0, x1 - x0, y1 - y0];

/** A layout point clamped onto the canvas (edges included, as the layout validator allows) and rounded. */
export function clampPoint(x, y, width, height) {
  return [Math.round(clamp(x, 0, width)), Math.round(clamp(y, 0, height))];
}

export function insideBox(b, x, y) {
  return x >= b[0] && x <= b[2] && y >= b[1] && y <= b[3];
}

export function distance(ax, ay, bx, by) {
  return Math.hypot(bx - ax, by - ay);
}

export function distanceToSegment(px, py, ax, ay, bx, by) {
  const dx = bx - ax;
  const dy = by - ay;
  const len2 = dx * dx + dy * dy;
  const t = len2 > 0 ? clamp(((px - ax) * dx + (py - ay) * dy) / len2, 0, 1) : 0;
  return Math.hypot(px - (ax + t * dx), py - (ay + t * dy));
}

export function distanceToPolyline(points, px, py) {
  if (!points || points.length === 0) return Infinity;
  if (points.length === 1) return distance(px, py, points[0][0], points[0][1]);
  let best = Infinity;
  for (let i = 1; i < points.length; i++) {
    const [ax, ay] = points[i - 1];
    const [bx, by] = points[i];
    best = Math.min(best, distanceToSegment(px, py, ax, ay, bx, by));
  }
  return best;
}

/** Distance from a point to the outline of a box (0 on the edge; inside points count their nearest edge). */
export function distanceToBoxEdge(b, x, y) {
  const [x0, y0, x1, y1] = b;
  return distanceToPolyline([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], x, y);
}

/** Even-odd point-in-polygon test (the fill rule of canvas paths and of COCO polygon lists). */
export function pointInPolygon(polygon, x, y) {
  let inside = false;
  for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
    const [xi, yi] = polygon[i];
    const [xj, yj] = polygon[j];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/** Absolute area of a simple polygon (shoelace formula); a polygon needs some area to be a usable mask. */
export function polygonArea(polygon) {
  let twice = 0;
  for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
    twice += polygon[j][0] * polygon[i][1] - polygon[i][0] * polygon[j][1];
  }
  return Math.abs(twice) / 2;
}

export function polylineLength(points) {
  let total = 0;
  for (let i = 1; i < points.length; i++) {
    total += distance(points[i - 1][0], points[i - 1][1], points[i][0], points[i][1]);
  }
  return total;
}

/** n points equally spaced by arc length along a polyline, both ends kept, in drawing order. This is the same
 *  spacing as the core's resample_scribble (which additionally re-orders by distance to (0, 0) for the model);
 *  the editor keeps the drawing order so the stored scribble still reads as a stroke. Returns null when the
 *  polyline has no length (a click, not a stroke). */
export function resamplePolyline(points, n = SCRIBBLE_POINTS) {
  if (n < 2) throw new Error(`resamplePolyline: n must be at least 2 (both ends are kept), got ${n}`);
  if (!points || points.length < 2) return null;
  const cum = [0];
  for (let i = 1; i < points.length; i++) {
    cum.push(cum[i - 1] + distance(points[i - 1][0], points[i - 1][1], points[i][0], points[i][1]));
  }
  const total = cum[cum.length - 1];
  if (!(total > 0)) return null;
  const out = [];
  let seg = 0;
  for (let k = 0; k < n; k++) {
    const target = (total * k) / (n - 1);
    while (seg < points.length - 2 && cum[seg + 1] <= target) seg++;
    const segLen = cum[seg + 1] - cum[seg];
    const t = segLen > 0 ? clamp((target - cum[seg]) / segLen, 0, 1) : 0;
    const [ax, ay] = points[seg];
    const [bx, by] = points[seg + 1];
    out.push([ax + t * (bx - ax), ay + t * (by - ay)]);
  }
  out[n - 1] = [points[points.length - 1][0], points[points.length - 1][1]];
  return out;
}

/** Round every coordinate of a point list to `decimals` places (JSON stays short and diff-friendly). */
export function roundPoints(points, decimals = 1) {
  const f = 10 ** decimals;
  return points.map(([x, y]) => [Math.round(x * f) / f, Math.round(y * f) / f]);
}

// --------------------------------------------------------------------------------------------- box handles

export const HANDLES = ["nw", "n", "ne", "e", "se", "s", "sw", "w"];

/** Handle positions of a box: corners and edge midpoints. */
export function handlePositions(b) {
  const [x0, y0, x1, y1] = b;
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  return { nw: [x0, y0], n: [cx, y0], ne: [x1, y0], e: [x1, cy], se: [x1, y1], s: [cx, y1], sw: [x0, y1], w: [x0, cy] };
}

/** The handle of box `b` within `tol` (layout pixels) of (x, y), corners first; null when none. */
export function handleAt(b, x, y, tol) {
  const pos = handlePositions(b);
  let best = null;
  let bestD = Infinity;
  for (const name of ["nw", "ne", "se", "sw", "n", "e", "s", "w"]) {
    const d = Math.max(Math.abs(pos[name][0] - x), Math.abs(pos[name][1] - y));
    if (d <= tol && d < bestD) {
      best = name;
      bestD = d;
    }
  }
  return best;
}

/** Drag handle `handle` of box `b` to (x, y): the opposite sides stay put, the box never flips, keeps at least
 *  `min` pixels and stays on the canvas. */
export function resizeBox(b, handle, x, y, width, height, min = MIN_BOX_SIZE) {
  let [x0, y0, x1, y1] = b;
  x = Math.round(clamp(x, 0, width));
  y = Math.round(clamp(y, 0, height));
  if (handle.includes("w")) x0 = Math.min(x, x1 - min);
  if (handle.includes("e")) x1 = Math.max(x, x0 + min);
  if (handle.includes("n")) y0 = Math.min(y, y1 - min);
  if (handle.includes("s")) y1 = Math.max(y, y0 + min);
  return [Math.max(x0, 0), Math.max(y0, 0), Math.min(x1, width), Math.min(y1, height)];
}

/** The translation (dx, dy) actually allowed for a shape with extent `bounds` [x0, y0, x1, y1] so that it stays
 *  on the canvas. */
export function clampTranslation(bounds, dx, dy, width, height) {
  const [x0, y0, x1, y1] = bounds;
  return [clamp(dx, -x0, width - x1), clamp(dy, -y0, height - y1)];
}

/** Extent [x0, y0, x1, y1] of a point list; null for an empty list. */
export function pointsBounds(points) {
  if (!points || points.length === 0) return null;
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (const [x, y] of points) {
    x0 = Math.min(x0, x);
    y0 = Math.min(y0, y);
    x1 = Math.max(x1, x);
    y1 = Math.max(y1, y);
  }
  return [x0, y0, x1, y1];
}

/** Union of several [x0, y0, x1, y1] extents (nulls ignored); null when there are none. */
export function unionBounds(list) {
  const valid = list.filter(Boolean);
  if (valid.length === 0) return null;
  return [
    Math.min(...valid.map((b) => b[0])),
    Math.min(...valid.map((b) => b[1])),
    Math.max(...valid.map((b) => b[2])),
    Math.max(...valid.map((b) => b[3])),
  ];
}

/** A polygon closes when the pointer comes back within `tol` of its first vertex (after at least 3 vertices). */
export function closesPolygon(vertices, x, y, tol) {
  return vertices.length >= 3 && distance(vertices[0][0], vertices[0][1], x, y) <= tol;
}

/** COCO flat polygon [x1, y1, x2, y2, ...] <-> vertex list [[x, y], ...]. */
export const flatToPoints = (flat) => {
  const out = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
};
export const pointsToFlat = (points) => points.flatMap(([x, y]) => [x, y]);
