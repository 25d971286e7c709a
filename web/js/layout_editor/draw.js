// Rendering of the layout editor canvas: background, each instance in its colour (mask fill, box, scribble), then
// the labels (kept inside the picture, placed like the Python preview's), the point markers, the selection with its
// box handles, and the shape being drawn. Only reads state; all coordinates in the document are layout pixels and
// are mapped through the view (geometry.fitView).

import { handlePositions, layoutToView, pointsBounds } from "./geometry.js";
import { annoBox, annoPoint, annoScribble, instanceColour } from "./layout_doc.js";
import { maskBounds } from "./mask_bitmap.js";

const MASK_ALPHA = 0.4;
const rgb = (c, a = 1) => `rgba(${c[0]}, ${c[1]}, ${c[2]}, ${a})`;

/** A canvas (layout size) holding a mask bitmap painted in `colour`; drawn scaled over the view. */
export function maskLayer(bits, width, height, colour) {
  const layer = document.createElement("canvas");
  layer.width = width;
  layer.height = height;
  return updateMaskLayer(layer, bits, width, colour, [0, 0, width - 1, height - 1]);
}

/** Repaint only the rectangle [x0, y0, x1, y1] (inclusive) of a mask layer from the bitmap: set pixels in `colour`,
 *  clear ones transparent. A brush stroke updates just the pixels it touched instead of rebuilding the layer. */
export function updateMaskLayer(layer, bits, width, colour, [x0, y0, x1, y1]) {
  const w = x1 - x0 + 1;
  const h = y1 - y0 + 1;
  if (w <= 0 || h <= 0) return layer;
  const ctx = layer.getContext("2d");
  const image = ctx.createImageData(w, h);
  const px = image.data;
  for (let y = 0; y < h; y++) {
    const row = (y0 + y) * width + x0;
    for (let x = 0; x < w; x++) {
      if (bits[row + x]) {
        const o = 4 * (y * w + x);
        px[o] = colour[0];
        px[o + 1] = colour[1];
        px[o + 2] = colour[2];
        px[o + 3] = 255;
      }
    }
  }
  ctx.putImageData(image, x0, y0);
  return layer;
}

const LABEL_HEIGHT = 15;
const LABEL_MAX_WIDTH = 220;
const POINT_LABEL_GAP = 9; // screen pixels between a point marker's centre and its label

/** Where an instance's label hangs, in layout pixels, and how: {at: [x, y], kind}. A box or mask: its top-left
 *  corner; a scribble: its bounding box's top-left; a point: beside the marker. */
function labelAnchor(anno, bits, width, height) {
  const box = annoBox(anno);
  if (box) return { at: [box[0], box[1]], kind: "box" };
  const pt = annoPoint(anno);
  if (pt) return { at: pt, kind: "point" };
  const sc = pointsBounds(annoScribble(anno));
  if (sc) return { at: [sc[0], sc[1]], kind: "scribble" };
  const mb = bits ? maskBounds(bits, width, height) : null;
  return mb ? { at: [mb[0], mb[1]], kind: "mask" } : null;
}

/** Top-left (screen pixels) of a label of size tw x th whose anchor is (ax, ay) on screen, inside `area`
 *  ({x0, y0, x1, y1}: the drawn picture), as the Python preview places them (layout/preview.py): at the anchor if
 *  it fits, else clamped into the picture; a point's label goes right of the marker, or left of it (flipped) where
 *  the right side has no room. A label covering an earlier one (`placed`: [x0, y0, x1, y1] rectangles) moves down
 *  (then up) by whole label heights while that keeps it inside. Pure; exported for the tests. */
export function placeLabel(ax, ay, tw, th, area, placed = [], kind = "box") {
  let x = ax;
  let y = ay;
  if (kind === "point") {
    x = ax + POINT_LABEL_GAP;
    y = ay - th / 2;
    if (x + tw > area.x1 && ax - POINT_LABEL_GAP - tw >= area.x0) x = ax - POINT_LABEL_GAP - tw;
  }
  const clamp = (px, py) => [
    Math.min(Math.max(px, area.x0), Math.max(area.x1 - tw, area.x0)),
    Math.min(Math.max(py, area.y0), Math.max(area.y1 - th, area.y0)),
  ];
  const free = (px, py) => placed.every(([a, b, c, d]) => px + tw <= a || c <= px || py + th <= b || d <= py);
  const [x0, y0] = clamp(x, y);
  for (const k of [0, 1, 2, 3, 4, 5, 6, -1, -2, -3]) {
    const [px, py] = clamp(x0, y0 + k * th);
    if (free(px, py)) return [px, py];
  }
  return [x0, y0];
}

/** Label text width on screen: the text plus padding, at most LABEL_MAX_WIDTH and never wider than the picture. */
export function labelWidth(textWidth, areaWidth) {
  return Math.max(1, Math.min(textWidth + 6, LABEL_MAX_WIDTH, areaWidth));
}

function drawLabel(ctx, text, [x, y], w, colour) {
  ctx.fillStyle = rgb(colour, 0.9);
  ctx.fillRect(x, y, w, LABEL_HEIGHT);
  const luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2];
  ctx.fillStyle = luminance > 140 ? "#000" : "#fff";
  ctx.save();
  ctx.beginPath();
  ctx.rect(x, y, w, LABEL_HEIGHT);
  ctx.clip();
  ctx.fillText(text, x + 3, y + 11);
  ctx.restore();
}

/** Every instance's label, after all shapes (so no later shape hides a label), kept inside the drawn picture. */
function drawLabels(ctx, view, state) {
  const { doc } = state;
  const area = { x0: view.ox, y0: view.oy, x1: view.ox + doc.width * view.scale, y1: view.oy + doc.height * view.scale };
  ctx.font = "11px sans-serif";
  const placed = [];
  for (let i = 0; i < doc.annos.length; i++) {
    const anno = doc.annos[i];
    const anchor = labelAnchor(anno, state.maskOf(i), doc.width, doc.height);
    if (!anchor) continue;
    const offset = i === state.selected && state.moveOffset ? state.moveOffset : [0, 0];
    const [ax, ay] = layoutToView(view, anchor.at[0] + offset[0], anchor.at[1] + offset[1]);
    const caption = typeof anno.caption === "string" && anno.caption.trim() ? anno.caption : "(no prompt)";
    const text = `${i}: ${caption}`;
    const w = labelWidth(ctx.measureText(text).width, area.x1 - area.x0);
    const at = placeLabel(ax, ay, w, LABEL_HEIGHT, area, placed, anchor.kind);
    placed.push([at[0], at[1], at[0] + w, at[1] + LABEL_HEIGHT]);
    drawLabel(ctx, text, at, w, instanceColour(i));
  }
}

function drawPolyline(ctx, view, points, close = false) {
  ctx.beginPath();
  points.forEach(([x, y], k) => {
    const [vx, vy] = layoutToView(view, x, y);
    if (k === 0) ctx.moveTo(vx, vy);
    else ctx.lineTo(vx, vy);
  });
  if (close) ctx.closePath();
}

function drawHandles(ctx, view, box, colour) {
  for (const [x, y] of Object.values(handlePositions(box))) {
    const [vx, vy] = layoutToView(view, x, y);
    ctx.fillStyle = "#fff";
    ctx.strokeStyle = rgb(colour);
    ctx.lineWidth = 1.5;
    ctx.fillRect(vx - 4, vy - 4, 8, 8);
    ctx.strokeRect(vx - 4, vy - 4, 8, 8);
  }
}

function drawInstance(ctx, view, state, i) {
  const { doc } = state;
  const anno = doc.annos[i];
  const colour = instanceColour(i);
  const selected = i === state.selected;
  const offset = selected && state.moveOffset ? state.moveOffset : [0, 0];
  ctx.save();
  ctx.translate(offset[0] * view.scale, offset[1] * view.scale);
  const mask = state.maskOf(i);
  if (mask) {
    ctx.globalAlpha = selected ? MASK_ALPHA + 0.15 : MASK_ALPHA;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(state.maskLayerOf(i), view.ox, view.oy, doc.width * view.scale, doc.height * view.scale);
    ctx.globalAlpha = 1;
  }
  const line = selected ? 3 : 2;
  const box = annoBox(anno);
  if (box) {
    const [x0, y0] = layoutToView(view, box[0], box[1]);
    const [x1, y1] = layoutToView(view, box[2], box[3]);
    ctx.strokeStyle = rgb(colour);
    ctx.lineWidth = line;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  }
  const sc = annoScribble(anno);
  if (sc) {
    ctx.strokeStyle = rgb(colour);
    ctx.lineWidth = line + 1;
    ctx.lineJoin = "round";
    ctx.lineCap = "round";
    drawPolyline(ctx, view, sc);
    ctx.stroke();
    for (const [x, y] of sc) {
      const [vx, vy] = layoutToView(view, x, y);
      ctx.fillStyle = rgb(colour);
      ctx.beginPath();
      ctx.arc(vx, vy, 2.5, 0, Math.PI * 2);
      ctx.fill();
    }
  }
  ctx.restore();
}

/** A point marker; drawn after every label (as in the Python preview), so a label never hides it. */
function drawPointMarker(ctx, view, state, i) {
  const pt = annoPoint(state.doc.annos[i]);
  if (!pt) return;
  const selected = i === state.selected;
  const offset = selected && state.moveOffset ? state.moveOffset : [0, 0];
  const [vx, vy] = layoutToView(view, pt[0] + offset[0], pt[1] + offset[1]);
  ctx.fillStyle = rgb(instanceColour(i));
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.arc(vx, vy, selected ? 7 : 6, 0, Math.PI * 2);
  ctx.fill();
  ctx.stroke();
}

function drawDraft(ctx, view, state) {
  const d = state.draft;
  if (!d) return;
  const colour = instanceColour(state.draftIndex);
  ctx.save();
  ctx.strokeStyle = rgb(colour);
  ctx.lineWidth = 2;
  ctx.setLineDash([6, 4]);
  if (d.kind === "box" && d.box) {
    const [x0, y0] = layoutToView(view, d.box[0], d.box[1]);
    const [x1, y1] = layoutToView(view, d.box[2], d.box[3]);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  } else if (d.kind === "scribble" && d.points.length > 1) {
    ctx.setLineDash([]);
    ctx.lineWidth = 3;
    drawPolyline(ctx, view, d.points);
    ctx.stroke();
  } else if (d.kind === "polygon" && d.points.length) {
    const pts = state.hover ? [...d.points, state.hover] : d.points;
    drawPolyline(ctx, view, pts);
    ctx.stroke();
    ctx.setLineDash([]);
    d.points.forEach(([x, y], k) => {
      const [vx, vy] = layoutToView(view, x, y);
      ctx.fillStyle = k === 0 ? "#fff" : rgb(colour);
      ctx.beginPath();
      ctx.arc(vx, vy, k === 0 ? 5 : 3.5, 0, Math.PI * 2);
      ctx.fill();
      if (k === 0) ctx.stroke();
    });
  }
  ctx.restore();
}

function drawBrushCursor(ctx, view, state) {
  if (!state.brushCursor || !state.hover) return;
  const [vx, vy] = layoutToView(view, state.hover[0], state.hover[1]);
  ctx.save();
  ctx.strokeStyle = state.erase ? "#f44" : "#fff";
  ctx.lineWidth = 1.5;
  ctx.setLineDash([3, 3]);
  ctx.beginPath();
  ctx.arc(vx, vy, Math.max(state.brushRadius * view.scale, 2), 0, Math.PI * 2);
  ctx.stroke();
  ctx.restore();
}

/** Paint the whole editor canvas. `state`: {doc, view, selected, maskOf(i), maskLayerOf(i), background (image or
 *  null), draft, draftIndex, pendingLayer (a mask layer not yet on an instance, or null), hover, moveOffset,
 *  brushCursor, brushRadius, erase, cssWidth, cssHeight, dpr}. */
export function drawEditor(ctx, state) {
  const { view, doc } = state;
  ctx.setTransform(state.dpr, 0, 0, state.dpr, 0, 0);
  ctx.clearRect(0, 0, state.cssWidth, state.cssHeight);
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(0, 0, state.cssWidth, state.cssHeight);
  const w = doc.width * view.scale;
  const h = doc.height * view.scale;
  if (state.background && state.background.complete && state.background.naturalWidth) {
    ctx.drawImage(state.background, view.ox, view.oy, w, h);
  } else {
    ctx.fillStyle = "#3a3a3a";
    ctx.fillRect(view.ox, view.oy, w, h);
    ctx.strokeStyle = "rgba(255,255,255,0.06)";
    ctx.lineWidth = 1;
    const step = Math.max(doc.width, doc.height) / 8;
    ctx.beginPath();
    for (let x = step; x < doc.width; x += step) {
      const [vx] = layoutToView(view, x, 0);
      ctx.moveTo(vx, view.oy);
      ctx.lineTo(vx, view.oy + h);
    }
    for (let y = step; y < doc.height; y += step) {
      const [, vy] = layoutToView(view, 0, y);
      ctx.moveTo(view.ox, vy);
      ctx.lineTo(view.ox + w, vy);
    }
    ctx.stroke();
  }
  ctx.save();
  ctx.beginPath();
  ctx.rect(view.ox, view.oy, w, h);
  ctx.clip();
  for (let i = 0; i < doc.annos.length; i++) drawInstance(ctx, view, state, i);
  drawLabels(ctx, view, state);
  for (let i = 0; i < doc.annos.length; i++) drawPointMarker(ctx, view, state, i);
  const sel = doc.annos[state.selected];
  const selBox = sel && annoBox(sel);
  if (selBox && !state.moveOffset) drawHandles(ctx, view, selBox, instanceColour(state.selected));
  if (state.pendingLayer) { // the mask being brushed for a new instance
    ctx.globalAlpha = 0.5;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(state.pendingLayer, view.ox, view.oy, w, h);
    ctx.globalAlpha = 1;
  }
  drawDraft(ctx, view, state);
  drawBrushCursor(ctx, view, state);
  ctx.restore();
  ctx.strokeStyle = "#777";
  ctx.lineWidth = 1;
  ctx.strokeRect(view.ox - 0.5, view.oy - 0.5, w + 1, h + 1);
}
