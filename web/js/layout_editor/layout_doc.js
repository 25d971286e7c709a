// The editor's document: the official InstanceDiffusion layout JSON itself (no private format), so the text the
// node stores in its layout_json widget is exactly what the Python loader and the official demos read:
//   {"caption": str, "width": W, "height": H,
//    "annos": [{"caption": str, "bbox": [x, y, w, h], "point": [x, y], "scribble": [[x, y], ...],
//               "mask": {"size": [H, W], "counts": str} | [[x1, y1, x2, y2, ...], ...] | [], ...}, ...]}
// Unknown keys (e.g. "category_name") are kept untouched. Pure functions, no DOM.

import {
  boxToXywh, clampTranslation, distance, distanceToBoxEdge, distanceToPolyline, flatToPoints, insideBox,
  pointInPolygon, pointsBounds, unionBounds, xywhToBox,
} from "./geometry.js";
import { encodeRLE, maskBounds, maskValueToBitmap, resampleMask, shiftMask } from "./mask_bitmap.js";

export const MAX_INSTANCES = 30; // the model has exactly 30 instance slots
/** What the editor says when a tool would add an instance beyond the slots (the one slot-limit message). */
export const SLOT_LIMIT_MESSAGE = `the model has ${MAX_INSTANCES} instance slots; delete one first `
  + "(or select an instance and hold Shift to draw on it)";

/** The one slot-limit rule: true while the document can take another instance. */
export function canAddInstance(doc) {
  return doc.annos.length < MAX_INSTANCES;
}
// Instances are numbered from 0 everywhere: editor labels and list, the loader's "annos[i]" errors, Layout Preview.
const TOP_ORDER = ["caption", "width", "height"];
const ANNO_ORDER = ["caption", "bbox", "point", "scribble", "mask", "category_name"];

export class LayoutTextError extends Error {}

export function emptyLayout(width, height, caption = "") {
  return { caption, width, height, annos: [] };
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const numList = (v, n) => Array.isArray(v) && (n === undefined || v.length === n) && v.every(isNum);

/** "line L, column C" for a character offset of `text`. */
export function lineColumn(text, offset) {
  const before = text.slice(0, offset);
  const line = before.split("\n").length;
  return { line, column: offset - before.lastIndexOf("\n") };
}

/** Layout JSON text -> document. Empty text is an empty layout of the fallback size. Throws LayoutTextError with
 *  a message naming the place and the fix; geometry values are checked by the Python loader, not here, except
 *  what the editor needs to draw at all. */
export function parseLayoutText(text, fallbackWidth = 512, fallbackHeight = 512) {
  if (!text || !text.trim()) return emptyLayout(fallbackWidth, fallbackHeight);
  let data;
  try {
    data = JSON.parse(text);
  } catch (e) {
    const m = /position (\d+)/.exec(e.message);
    const where = m ? ` at line ${lineColumn(text, Number(m[1])).line}, column ${lineColumn(text, Number(m[1])).column}` : "";
    throw new LayoutTextError(`layout_json is not valid JSON${where}: ${e.message}; fix the text or undo`);
  }
  if (!data || typeof data !== "object" || Array.isArray(data)) {
    throw new LayoutTextError('layout_json must be a JSON object {"caption", "width", "height", "annos"}');
  }
  const doc = { ...data };
  for (const key of ["width", "height"]) {
    if (doc[key] === undefined) doc[key] = key === "width" ? fallbackWidth : fallbackHeight;
    if (!Number.isInteger(doc[key]) || doc[key] <= 0) {
      throw new LayoutTextError(`layout_json "${key}" is ${JSON.stringify(doc[key])}; use a positive whole number of pixels`);
    }
  }
  if (doc.caption === undefined || doc.caption === null) doc.caption = "";
  if (doc.annos === undefined || doc.annos === null) doc.annos = [];
  if (!Array.isArray(doc.annos)) throw new LayoutTextError('layout_json "annos" must be a list of instances');
  doc.annos.forEach((a, i) => {
    if (!a || typeof a !== "object" || Array.isArray(a)) {
      throw new LayoutTextError(`layout_json annos[${i}] must be an object {"caption": ..., "bbox": [x, y, w, h]}`);
    }
  });
  return doc;
}

function orderedObject(obj, order) {
  const out = {};
  for (const k of order) if (obj[k] !== undefined) out[k] = obj[k];
  for (const k of Object.keys(obj)) if (!(k in out)) out[k] = obj[k];
  return out;
}

/** Document -> layout JSON text: official key order, one instance per line (readable and diff-friendly). */
export function serializeLayout(doc) {
  const top = orderedObject(doc, TOP_ORDER);
  const annos = top.annos || [];
  delete top.annos;
  const lines = Object.entries(top).map(([k, v]) => ` ${JSON.stringify(k)}: ${JSON.stringify(v)}`);
  const annoLines = annos.map((a) => `  ${JSON.stringify(orderedObject(a, ANNO_ORDER))}`);
  lines.push(annoLines.length ? ` "annos": [\n${annoLines.join(",\n")}\n ]` : ' "annos": []');
  return `{\n${lines.join(",\n")}\n}`;
}

// --------------------------------------------------------------------------------------------- reading geometry

/** Box corners [x0, y0, x1, y1] of an anno (its bbox is official [x, y, w, h]); null when absent or unreadable. */
export function annoBox(anno) {
  return numList(anno.bbox, 4) ? xywhToBox(anno.bbox) : null;
}

export function annoPoint(anno) {
  return numList(anno.point, 2) ? anno.point : null;
}

/** Scribble as [[x, y], ...] (the official file may also hold a flat list); null when absent or unreadable. */
export function annoScribble(anno) {
  const s = anno.scribble;
  if (!Array.isArray(s) || s.length === 0) return null;
  if (s.every((p) => numList(p, 2))) return s;
  if (numList(s) && s.length % 2 === 0) return flatToPoints(s);
  return null;
}

export function hasMask(anno) {
  const m = anno.mask;
  return m !== undefined && m !== null && !(Array.isArray(m) && m.length === 0);
}

/** Polygon list of a polygon mask as vertex lists; null for RLE or no mask. */
export function annoPolygons(anno) {
  if (!hasMask(anno) || !Array.isArray(anno.mask)) return null;
  const lists = anno.mask.every(isNum) ? [anno.mask] : anno.mask;
  return lists.filter((p) => numList(p) && p.length >= 6).map(flatToPoints);
}

export function modalitiesOf(anno) {
  const out = [];
  if (annoBox(anno)) out.push("box");
  if (annoPoint(anno)) out.push("point");
  if (annoScribble(anno)) out.push("scribble");
  if (hasMask(anno)) out.push("mask");
  return out;
}

/** Problems the Python loader would reject, phrased for the editor's status line (the loader stays the judge). */
export function layoutIssues(doc) {
  const issues = [];
  if (doc.annos.length > MAX_INSTANCES) {
    issues.push(`${doc.annos.length} instances: the model has ${MAX_INSTANCES} slots; delete ${doc.annos.length - MAX_INSTANCES}`);
  }
  doc.annos.forEach((a, i) => {
    if (typeof a.caption !== "string" || !a.caption.trim()) issues.push(`instance ${i} has no prompt`);
    if (modalitiesOf(a).length === 0) issues.push(`instance ${i} has no box, point, scribble or mask`);
    const b = annoBox(a); // partly outside is clipped by the loader (with a warning); entirely outside is its error
    if (b && b[2] > b[0] && b[3] > b[1] && (b[2] <= 0 || b[3] <= 0 || b[0] >= doc.width || b[1] >= doc.height)) {
      issues.push(`instance ${i}'s box [${a.bbox.join(", ")}] lies entirely outside the ${doc.width}x${doc.height} `
        + "canvas; move it onto the canvas or delete it");
    }
  });
  return issues;
}

// --------------------------------------------------------------------------------------------- editing

export function setBox(anno, corners) {
  anno.bbox = boxToXywh(corners);
  return anno;
}

export function setMaskBitmap(anno, bits, width, height) {
  anno.mask = bits ? encodeRLE(bits, width, height) : [];
  return anno;
}

/** Extent of everything an instance places on the canvas (mask bitmap given when it has a mask). */
export function annoBounds(anno, maskBits, width, height) {
  const parts = [annoBox(anno), pointsBounds(annoPoint(anno) ? [annoPoint(anno)] : null),
    pointsBounds(annoScribble(anno))];
  if (maskBits) parts.push(maskBounds(maskBits, width, height));
  return unionBounds(parts);
}

/** Move a whole instance by (dx, dy) canvas pixels, limited so that nothing leaves the canvas. Returns the
 *  translation actually applied. `maskBits` is the instance's decoded mask (null when it has none). */
export function translateAnno(anno, dx, dy, width, height, maskBits = null) {
  const bounds = annoBounds(anno, maskBits, width, height);
  if (!bounds) return [0, 0];
  [dx, dy] = clampTranslation(bounds, Math.round(dx), Math.round(dy), width, height);
  if (dx === 0 && dy === 0) return [0, 0];
  const box = annoBox(anno);
  if (box) setBox(anno, [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy]);
  const pt = annoPoint(anno);
  if (pt) anno.point = [pt[0] + dx, pt[1] + dy];
  const sc = annoScribble(anno);
  if (sc) anno.scribble = sc.map(([x, y]) => [x + dx, y + dy]);
  if (hasMask(anno)) {
    const polys = annoPolygons(anno);
    if (polys && polys.length) {
      anno.mask = polys.map((p) => p.flatMap(([x, y]) => [x + dx, y + dy]));
    } else if (maskBits) {
      setMaskBitmap(anno, shiftMask(maskBits, width, height, dx, dy), width, height);
    }
  }
  return [dx, dy];
}

const round1 = (v) => Math.round(v * 10) / 10;

/** The document on a new canvas size with every instance scaled along (boxes, points, scribbles, polygons; RLE
 *  masks resampled nearest), so a layout keeps its composition when the width/height widgets change. */
export function scaleLayout(doc, newWidth, newHeight) {
  const sx = newWidth / doc.width;
  const sy = newHeight / doc.height;
  const annos = doc.annos.map((src) => {
    const a = { ...src };
    const box = annoBox(src);
    if (box) {
      const b = [Math.round(box[0] * sx), Math.round(box[1] * sy), Math.round(box[2] * sx), Math.round(box[3] * sy)];
      b[2] = Math.min(Math.max(b[2], b[0] + 1), newWidth);
      b[3] = Math.min(Math.max(b[3], b[1] + 1), newHeight);
      setBox(a, b);
    }
    const pt = annoPoint(src);
    if (pt) a.point = [round1(pt[0] * sx), round1(pt[1] * sy)];
    const sc = annoScribble(src);
    if (sc) a.scribble = sc.map(([x, y]) => [round1(x * sx), round1(y * sy)]);
    if (hasMask(src)) {
      const polys = annoPolygons(src);
      if (polys && polys.length) {
        a.mask = polys.map((p) => p.flatMap(([x, y]) => [round1(x * sx), round1(y * sy)]));
      } else {
        try {
          const bits = maskValueToBitmap(src.mask, doc.width, doc.height);
          setMaskBitmap(a, resampleMask(bits, doc.width, doc.height, newWidth, newHeight), newWidth, newHeight);
        } catch {
          // an unreadable mask is left as it is: the Python loader will name the problem
        }
      }
    }
    return a;
  });
  return { ...doc, width: newWidth, height: newHeight, annos };
}

// --------------------------------------------------------------------------------------------- hit testing

/** The instance under (x, y) (layout pixels), -1 for none. Thin things first (points, scribbles and box edges
 *  within `tol`, topmost = last drawn), then areas (box interior, mask pixel), so a small instance drawn inside
 *  a big one stays selectable. `maskOf(i)` returns instance i's decoded mask bitmap or null. */
export function hitTest(doc, x, y, tol, maskOf = () => null) {
  const n = doc.annos.length;
  for (let i = n - 1; i >= 0; i--) {
    const a = doc.annos[i];
    const pt = annoPoint(a);
    if (pt && distance(pt[0], pt[1], x, y) <= tol * 1.5) return i;
    const sc = annoScribble(a);
    if (sc && distanceToPolyline(sc, x, y) <= tol) return i;
    const box = annoBox(a);
    if (box && distanceToBoxEdge(box, x, y) <= tol) return i;
  }
  for (let i = n - 1; i >= 0; i--) {
    const a = doc.annos[i];
    const box = annoBox(a);
    if (box && insideBox(box, x, y)) return i;
    if (hasMask(a)) {
      const polys = annoPolygons(a);
      if (polys && polys.length) {
        if (polys.some((p) => pointInPolygon(p, x, y))) return i;
      } else {
        const bits = maskOf(i);
        const px = Math.floor(x);
        const py = Math.floor(y);
        if (bits && px >= 0 && py >= 0 && px < doc.width && py < doc.height && bits[py * doc.width + px]) return i;
      }
    }
  }
  return -1;
}

// --------------------------------------------------------------------------------------------- colours

// Same colours as the Layout Preview node (instancediffusion_core/layout/preview.py), so both views agree.
const BASE_COLOURS = [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 200, 200],
  [240, 50, 230], [170, 110, 40], [128, 128, 0], [0, 0, 128], [128, 0, 0], [0, 128, 128], [210, 180, 0],
  [100, 100, 255], [255, 90, 90], [0, 170, 110]];

function hsvToRgb(h, s, v) {
  const i = Math.floor(h * 6);
  const f = h * 6 - i;
  const p = v * (1 - s);
  const q = v * (1 - s * f);
  const t = v * (1 - s * (1 - f));
  return [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
}

/** RGB colour of instance `index` (0-based), identical to preview.instance_colour. */
export function instanceColour(index) {
  if (index < BASE_COLOURS.length) return BASE_COLOURS[index];
  const hue = (index * 0.618033988749895) % 1.0;
  return hsvToRgb(hue, 0.85, 0.85).map((c) => Math.trunc(c * 255));
}
