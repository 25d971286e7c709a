"""Draw a layout so it can be checked before sampling (and over the result afterwards).

Every instance gets its own colour: translucent mask fill and mask outline, box outline, scribble polyline,
point marker, and a label "index: caption" at the box's top-left corner (or at the mask, point or scribble when
there is no box). Coordinates are scaled from the layout canvas to the picture, so a 768x512 layout can be drawn
over a 512x512 result. Only PIL's bundled default font is used (no font files, no downloads).
"""
from __future__ import annotations

import argparse
import colorsys
import sys
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .types import MAX_CANVAS, Layout, LayoutError

BACKGROUND = (250, 250, 250)
MASK_ALPHA = 0.35
# High-contrast first colours (readable on light and dark pictures), then golden-ratio hues for the rest.
_BASE_COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 200, 200),
                 (240, 50, 230), (170, 110, 40), (128, 128, 0), (0, 0, 128), (128, 0, 0), (0, 128, 128),
                 (210, 180, 0), (100, 100, 255), (255, 90, 90), (0, 170, 110)]


def instance_colour(index: int) -> tuple[int, int, int]:
    """The RGB colour of instance ``index`` (stable, distinct for the first 30)."""
    if index < len(_BASE_COLOURS):
        return _BASE_COLOURS[index]
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.85)
    return int(r * 255), int(g * 255), int(b * 255)


def _to_rgb_image(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise LayoutError(f"preview image: shape {arr.shape} is not [H, W], [H, W, 3] or [H, W, 4]")
    if arr.dtype != np.uint8:
        arr = np.clip(np.asarray(arr, dtype=np.float64) * (255.0 if arr.max(initial=0) <= 1.0 else 1.0), 0, 255)
        arr = np.round(arr).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the bitmap default font
        return ImageFont.load_default()


def _label_anchor(inst, sx: float, sy: float, radius: int) -> tuple[float, float]:
    kind, (x, y) = inst.anchor()
    if kind == "point":
        return x * sx + radius + 2, y * sy - radius
    if kind == "scribble":
        return x * sx + 4, y * sy + 4
    return x * sx, y * sy


def _place_label(anchor, tw: int, th: int, out_w: int, out_h: int, placed) -> tuple[float, float]:
    """Top-left of a label: at the anchor if free, else moved down (then up) by whole label heights until it no
    longer covers an earlier label; always inside the picture."""
    def clamp(x, y):
        return min(max(x, 0), max(out_w - tw, 0)), min(max(y, 0), max(out_h - th, 0))

    def free(x, y):
        return all(x + tw <= a or b2 <= x or y + th <= b or d <= y for a, b, b2, d in placed)

    x0, y0 = clamp(*anchor)
    for k in (0, 1, 2, 3, 4, 5, 6, -1, -2, -3):
        x, y = clamp(x0, y0 + k * th)
        if free(x, y):
            return x, y
    return x0, y0


def draw_layout(layout: Layout, image=None, size: Sequence[int] | None = None,
                indices: Sequence[int] | None = None) -> Image.Image:
    """Draw ``layout`` over ``image`` (array ``[H, W(, 3|4)]`` uint8 or float 0..1, or a PIL image) or over a blank
    canvas of the layout's size; ``size`` = (width, height) of the result (the image is resized to it).
    ``indices[k]`` is the index instance k is coloured and labelled by (default k): a track's frame passes the
    slot indices (``FrameLayouts.frame_slots``), so an instance keeps its colour when another is absent."""
    if indices is None:
        indices = range(len(layout.instances))
    elif len(indices) != len(layout.instances):
        raise LayoutError(f"preview indices: {len(indices)} indices for {len(layout.instances)} instances; give one "
                          f"per instance")
    indices = [int(k) for k in indices]
    if size is not None:
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise LayoutError(f"preview size: {w}x{h} must be positive")
        _check_size(w, h, "preview size")
    if image is not None:
        if size is None:
            shape = image.size if isinstance(image, Image.Image) else np.shape(image)[1::-1]
            _check_size(int(shape[0]), int(shape[1]), "preview image")
        base = _to_rgb_image(image)
    else:
        base = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    if size is not None and base.size != (w, h):
        base = base.resize((w, h), Image.Resampling.BILINEAR)
    out_w, out_h = base.size
    sx, sy = out_w / layout.width, out_h / layout.height
    line = max(2, round(min(out_w, out_h) / 200))
    radius = max(4, 2 * line)

    # masks first (translucent fill + outline), so every line and label stays on top
    pixels = np.asarray(base, dtype=np.float64).copy()
    for i, inst in enumerate(layout.instances):
        if inst.mask is None:
            continue
        m_img = Image.fromarray(inst.mask.astype(np.uint8) * 255)
        if m_img.size != (out_w, out_h):
            m_img = m_img.resize((out_w, out_h), Image.Resampling.NEAREST)
        m = np.asarray(m_img) > 127
        edge = m & ~(np.asarray(m_img.filter(ImageFilter.MinFilter(3))) > 127)
        colour = np.array(instance_colour(indices[i]), dtype=np.float64)
        pixels[m] = pixels[m] * (1.0 - MASK_ALPHA) + colour * MASK_ALPHA
        pixels[edge] = colour
    canvas = Image.fromarray(np.round(pixels).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)

    for i, inst in enumerate(layout.instances):
        colour = instance_colour(indices[i])
        if inst.bbox is not None:
            x0, y0, x1, y1 = inst.bbox
            left, top = x0 * sx, y0 * sy         # a box under 1 px (0.5 px high is valid) is drawn as a line
            draw.rectangle([left, top, max(left, x1 * sx - 1), max(top, y1 * sy - 1)], outline=colour, width=line)
        if inst.scribble is not None:
            pts = [(x * sx, y * sy) for x, y in inst.scribble]
            draw.line(pts, fill=colour, width=line, joint="curve")
            for x, y in pts:
                draw.ellipse([x - line, y - line, x + line, y + line], fill=colour)

    font = _font(max(10, round(min(out_w, out_h) / 40)))
    placed: list[tuple[float, float, float, float]] = []
    for i, inst in enumerate(layout.instances):
        colour = instance_colour(indices[i])
        text = f"{indices[i]}: {inst.caption}"
        if len(text) > 48:
            text = text[:45] + "..."
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 6, bottom - top + 4
        x, y = _place_label(_label_anchor(inst, sx, sy, radius), tw, th, out_w, out_h, placed)
        placed.append((x, y, x + tw, y + th))
        draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=colour)
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        draw.text((x + 3 - left, y + 2 - top), text, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255),
                  font=font)
    for i, inst in enumerate(layout.instances):  # point markers last: small, and never hidden by a label
        if inst.point is not None:
            x, y = inst.point[0] * sx, inst.point[1] * sy
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=instance_colour(indices[i]),
                         outline=(0, 0, 0), width=1)
    return canvas


def _check_size(w: int, h: int, what: str) -> None:
    if w > MAX_CANVAS or h > MAX_CANVAS:
        raise LayoutError(f"{what}: {w}x{h} px is larger than {MAX_CANVAS} px per side (MAX_CANVAS); the preview "
                          f"needs about 30 bytes per pixel. Scale the image down first (e.g. Upscale Image By 0.5) or "
                          f"preview at a smaller size")


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"size {text!r} is not WxH in pixels, e.g. 512x512")
    return int(parts[0]), int(parts[1])


def cli_main(argv: Sequence[str]) -> int:
    """``python -m instancediffusion_core preview layout.json out.png [--bbox-format auto] [--size WxH]``."""
    from .json_io import BBOX_FORMATS, load_layout

    parser = argparse.ArgumentParser(prog="python -m instancediffusion_core preview",
                                     description="Draw a layout JSON (official InstanceDiffusion format) to a PNG.")
    parser.add_argument("layout", help="layout .json file")
    parser.add_argument("out", help="output image (.png)")
    parser.add_argument("--bbox-format", choices=BBOX_FORMATS, default="auto",
                        help="xywh: official [x, y, w, h]; xyxy: corners; auto: decide per file (default)")
    parser.add_argument("--size", type=_parse_size, default=None, help="output size WxH (default: the canvas)")
    parser.add_argument("--image", default=None, help="draw over this picture instead of a blank canvas")
    parser.add_argument("--truncate", action="store_true", help="keep the first 30 instances of larger layouts")
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:
        return int(e.code or 0)
    try:
        loaded = load_layout(args.layout, bbox_format=args.bbox_format, truncate=args.truncate)
        background = Image.open(args.image) if args.image else None
        picture = draw_layout(loaded.layout, background, args.size)
        picture.save(args.out)
    except (LayoutError, OSError, ValueError, Image.DecompressionBombError) as e:   # ValueError: PIL, unknown
        print(f"error: {e}", file=sys.stderr)                                         # output file extension
        return 2
    lay = loaded.layout
    print(f"{args.layout}: {len(lay.instances)} instances on a {lay.width}x{lay.height} canvas, "
          f"bbox format {loaded.bbox_format_used}, modalities {', '.join(sorted(lay.modalities())) or 'none'}")
    for w in loaded.warnings:
        print(f"  - {w}")
    print(f"wrote {args.out} ({picture.width}x{picture.height})")
    return 0
