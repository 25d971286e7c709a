"""The official InstanceDiffusion layout JSON in and out.

Format (the official ``inference.py`` demos)::

    {"caption": str, "width": W, "height": H,
     "annos": [{"caption": str,                      # required
                "bbox": [x, y, w, h],                # pixels (official); LLM layouts often write [x1, y1, x2, y2]
                "mask": {"size": [h, w], "counts": str | [int]} | [[x1, y1, x2, y2, ...], ...] | [],
                "point": [x, y],
                "scribble": [[x, y], ...] or [x1, y1, x2, y2, ...],
                "category_name": str}, ...]}

Loading is lenient where the real files need it and strict elsewhere:
- ``bbox_format="auto"`` decides per file: a reading under which some box leaves the canvas (or has no size)
  while the other reading fits every box is impossible; when both fit, the official ``xywh`` is assumed; when
  neither fits every box, the reading with fewer misfits wins. The decision and its reason go to ``warnings``.
- boxes follow the one box policy (``box_fit``): partly outside the canvas is clipped with a warning, entirely
  outside is a ``LayoutError`` naming the entry and the numbers; boxes of zero width or height are ignored with a
  warning (the official rose-garden demo has ``[0, 512, 0, 0]``); an entry left without any location is skipped.
- unknown keys are ignored with a warning; a non-positive box size after the format is applied, a point or
  scribble outside the canvas, a mask of another size than the canvas, bad numbers or JSON syntax errors raise
  ``LayoutError`` naming ``annos[i]``, the field, the value and the fix.

Hostile input (decided here): text and files are at most ``MAX_LAYOUT_BYTES``; the canvas is at most
``MAX_CANVAS`` pixels per side, checked before any mask is decoded; integers of more than 300 digits read as
infinity (so they fail as "not finite" naming their field, instead of ``OverflowError`` or Python's 4300-digit
``ValueError``); JSON nested deeper than the parser can go is a ``LayoutError``, never a ``RecursionError``; values
quoted in messages are cut before they are formatted. With ``drop_invalid=True`` every instance is validated once
and the invalid ones are returned in ``LoadedLayout.dropped`` (the planner's repair pass).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .types import Instance, Layout, LayoutError, MAX_CANVAS, MAX_INSTANCES, check_instance
from .box_fit import fit_box, plain_number as _num
from .rle import RLEError, decode_rle, encode_rle, rasterize_polygons

BBOX_FORMATS = ("auto", "xywh", "xyxy")
# Layout text or file size. A layout is a few KB; 30 instances with masks as COCO RLE of a MAX_CANVAS canvas are
# well under 1 MB, and even uncompressed RLE count lists fit. Beyond this it is not a layout.
MAX_LAYOUT_BYTES = 16 << 20
_MAX_INT_DIGITS = 300                  # longer integer literals read as float (inf beyond 1e308)
_TOP_KEYS = {"caption", "width", "height", "annos"}
_ANNO_KEYS = {"caption", "bbox", "mask", "point", "scribble", "category_name"}


@dataclass(frozen=True)
class LoadedLayout:
    """A loaded layout file: the layout, its global caption, what was decided/ignored, and the box format used
    (``"xywh"``, ``"xyxy"``, or ``"none"`` when ``auto`` found no box to decide on)."""
    layout: Layout
    caption: str
    warnings: list[str] = field(default_factory=list)
    bbox_format_used: str = "xywh"
    dropped: list[LayoutError] = field(default_factory=list)   # drop_invalid=True: the rejected instances


# ------------------------------------------------------------------------------------------------ reading

def bounded_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters without building the whole repr first (a huge list, a string of
    megabytes, an integer of thousands of digits, whose repr raises)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    if isinstance(value, str):
        text = repr(value[:limit + 1])
    elif isinstance(value, (list, tuple)):
        parts, used = [], 2
        for v in value[:limit // 2 + 1]:
            part = bounded_repr(v, limit)
            parts.append(part)
            used += len(part) + 2
            if used > limit:
                break
        open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
        text = open_ + ", ".join(parts) + (", ..." if len(parts) < len(value) else "") + close
    elif isinstance(value, dict):
        parts, used = [], 2
        for k, v in list(value.items())[:limit // 4 + 1]:
            part = f"{bounded_repr(k, limit)}: {bounded_repr(v, limit)}"
            parts.append(part)
            used += len(part) + 2
            if used > limit:
                break
        text = "{" + ", ".join(parts) + (", ..." if len(parts) < len(value) else "") + "}"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:max(limit - 3, 0)] + "..."


def _parse_int(literal: str):
    # Python refuses int() of more than 4300 digits (ValueError) and float(int) overflows beyond 308: read long
    # literals as float, which gives inf for anything that large, so the field check names it as not finite.
    return int(literal) if len(literal) <= _MAX_INT_DIGITS else float(literal)


JSON_DECODER = json.JSONDecoder(parse_int=_parse_int)


def parse_json_text(text: str, name: str = "layout JSON") -> Any:
    """JSON text -> value, with the loader's limits: at most ``MAX_LAYOUT_BYTES`` characters, long integers read
    as float, and every failure (syntax, nesting too deep) a ``LayoutError`` with the line and column."""
    if len(text) > MAX_LAYOUT_BYTES:
        raise LayoutError(f"{name}: {len(text):,} characters; a layout is at most {MAX_LAYOUT_BYTES:,} "
                          f"(MAX_LAYOUT_BYTES). This is not a layout, or its masks should be COCO RLE strings")
    try:
        return JSON_DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise LayoutError(f"{name}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}; fix the syntax "
                          f"there (often a missing comma, quote or bracket)") from None
    except RecursionError:
        raise LayoutError(f"{name}: the JSON is nested too deeply (hundreds of levels of brackets); a layout needs "
                          f"about 5 (layout -> annos -> instance -> mask -> counts)") from None
    except ValueError as e:            # e.g. a number the float parser refuses
        raise LayoutError(f"{name}: invalid JSON ({bounded_repr(str(e), 120)}); fix the number or text it "
                          f"names") from None


def _read_source(source: Any) -> tuple[Any, str]:
    """(parsed JSON, a name for messages) from a dict, a JSON string or a path (Python and CLI callers; the
    nodes pass only dicts or JSON text, never user text as a path)."""
    if isinstance(source, dict):
        return source, "layout"
    if isinstance(source, (bytes, bytearray)):
        if len(source) > MAX_LAYOUT_BYTES:
            raise LayoutError(f"layout JSON: {len(source):,} bytes; a layout is at most {MAX_LAYOUT_BYTES:,} "
                              f"(MAX_LAYOUT_BYTES)")
        try:
            source = bytes(source).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise LayoutError(f"layout JSON: not UTF-8 text (byte {e.start}); save the layout as UTF-8") from None
    if isinstance(source, str) and source.lstrip("\ufeff \t\r\n").startswith(("{", "[")):
        return parse_json_text(source.lstrip("\ufeff"), "layout JSON"), "layout JSON"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        name = os.path.basename(path) or path
        if not os.path.isfile(path):
            raise LayoutError(f"layout file {bounded_repr(path, 200)} not found; give the path of a .json layout or "
                              f"paste the JSON text itself")
        return parse_json_text(read_layout_file(path, name), name), name
    raise LayoutError(f"layout source: expected a file path, JSON text or a dict, got {type(source).__name__}")


def read_layout_file(path: str, name: str) -> str:
    """The text of a layout file, read only up to ``MAX_LAYOUT_BYTES`` (+1 to tell that it is larger)."""
    with open(path, "rb") as f:
        data = f.read(MAX_LAYOUT_BYTES + 1)
    if len(data) > MAX_LAYOUT_BYTES:
        raise LayoutError(f"{name}: larger than {MAX_LAYOUT_BYTES:,} bytes (MAX_LAYOUT_BYTES); a layout is a few "
                          f"KB, even with masks as COCO RLE. Choose the layout .json itself")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LayoutError(f"{name}: not UTF-8 text (byte {e.start}); save the layout as UTF-8 JSON") from None


def _is_number(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if isinstance(v, int):
        return v.bit_length() <= 1023                 # float(v) would overflow
    return math.isfinite(v)


def _numbers(value: Any, count: int | None, where: str, what: str, index: int | None = None,
             field: str | None = None) -> list[float]:
    if not isinstance(value, (list, tuple)) or (count is not None and len(value) != count) \
            or not all(_is_number(v) for v in value):
        bad = next((v for v in value if not _is_number(v)), None) if isinstance(value, (list, tuple)) else None
        why = f" ({bounded_repr(bad, 30)} is not a finite number)" if bad is not None else ""
        raise LayoutError(f"{where}: {bounded_repr(value)} is not {what}{why}", index=index, field=field)
    return [float(v) for v in value]


def _canvas_size(data: dict, key: str, name: str) -> int:
    if key not in data:
        raise LayoutError(f"{name}: '{key}' is missing; add \"{key}\": <pixels>, the canvas size the coordinates "
                          f"refer to")
    v = data[key]
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise LayoutError(f"{name}: '{key}' is {bounded_repr(v, 40)}; it must be a positive whole number of pixels, "
                          f"e.g. 512")
    if v > MAX_CANVAS:
        raise LayoutError(f"{name}: '{key}' is {bounded_repr(v, 40)} px; the canvas is at most {MAX_CANVAS} px per "
                          f"side (MAX_CANVAS: masks and previews cost memory per canvas pixel, and SD1.5 generates "
                          f"at 512-1024). Coordinates are relative to the canvas, so scale the layout down, e.g. to "
                          f"the image size")
    return v


# ------------------------------------------------------------------------------------------------ boxes

def _box_misfit(b: list[float], fmt: str, w: int, h: int) -> str | None:
    """Why box ``b`` does not fit the canvas when read as ``fmt`` (None if it fits)."""
    if fmt == "xywh":
        x0, y0, x1, y1 = b[0], b[1], b[0] + b[2], b[1] + b[3]
        size = ("width", b[2], "height", b[3])
    else:
        x0, y0, x1, y1 = b
        size = ("x2 - x1", b[2] - b[0], "y2 - y1", b[3] - b[1])
    if size[1] <= 0 or size[3] <= 0:
        return f"{size[0]} = {size[1]:g}, {size[2]} = {size[3]:g} (no area)"
    if x0 < 0 or y0 < 0:
        return f"starts at x = {x0:g}, y = {y0:g} (negative)"
    if x1 > w:
        return f"ends at x = {x1:g} > width {w}"
    if y1 > h:
        return f"ends at y = {y1:g} > height {h}"
    return None


_READING = {"xywh": "[x, y, w, h]", "xyxy": "[x1, y1, x2, y2]"}


def decide_bbox_format(boxes: dict[int, list[float]], width: int, height: int) -> tuple[str, str]:
    """Per-file choice between ``xywh`` and ``xyxy`` for ``{anno index: raw box}``; returns (format, reason)."""
    if not boxes:
        return "none", "bbox format: no boxes in the file, nothing to decide"
    misfits = {fmt: {i: m for i, b in boxes.items() if (m := _box_misfit(b, fmt, width, height))}
               for fmt in ("xywh", "xyxy")}
    n = len(boxes)

    def example(fmt):
        i, why = next(iter(misfits[fmt].items()))
        return f"e.g. annos[{i}] {[_num(v) for v in boxes[i]]} as {_READING[fmt]} {why}"

    bad_wh, bad_xy = len(misfits["xywh"]), len(misfits["xyxy"])
    canvas = f"the {width}x{height} canvas"
    if bad_wh == 0 and bad_xy == 0:
        return "xywh", (f"bbox format: xywh (auto): all {n} boxes fit {canvas} in both readings; assumed the official "
                        f"[x, y, w, h]. Use bbox_format 'xyxy' if the numbers are corners")
    if bad_wh == 0:
        return "xywh", (f"bbox format: xywh (auto): all {n} boxes fit {canvas} as the official [x, y, w, h]; as "
                        f"[x1, y1, x2, y2] {bad_xy} of {n} would not ({example('xyxy')})")
    if bad_xy == 0:
        return "xyxy", (f"bbox format: xyxy (auto): all {n} boxes fit {canvas} as [x1, y1, x2, y2]; the official "
                        f"[x, y, w, h] is impossible: {bad_wh} of {n} would not fit ({example('xywh')})")
    fmt = "xywh" if bad_wh <= bad_xy else "xyxy"
    return fmt, (f"bbox format: {fmt} (auto): no reading fits every box ({bad_wh} of {n} misfit as [x, y, w, h], "
                 f"{bad_xy} as [x1, y1, x2, y2]); chose the one with fewer misfits ({example(fmt)}); boxes partly "
                 f"outside are clipped to the canvas, see below")


def _fit_box(i: int, raw: list[float], fmt: str, width: int, height: int, name: str,
             warnings: list[str]) -> tuple[float, float, float, float] | None:
    """Raw box -> corners on the canvas, by the one box policy (``box_fit``): partly outside is clipped with a
    warning, entirely outside is an error. A box of zero width or height is the official "no box" placeholder
    (the rose-garden demo writes ``[0, 512, 0, 0]``): ignored with a warning."""
    if fmt == "xyxy":
        x0, y0, x1, y1 = raw
    else:
        x0, y0, x1, y1 = raw[0], raw[1], raw[0] + raw[2], raw[1] + raw[3]
    shown = [_num(v) for v in raw]
    if x1 < x0 or y1 < y0:
        other = "xyxy" if fmt == "xywh" else "xywh"
        raise LayoutError(f"{name}: annos[{i}] bbox {shown} has negative size when read as {_READING[fmt]}; fix the "
                          f"numbers, or load with bbox_format '{other}' if the file uses {_READING[other]}",
                          index=i, field="bbox")
    if x1 == x0 or y1 == y0:
        warnings.append(f"annos[{i}]: bbox {shown} ({fmt}) has no area (the official 'no box' placeholder); box "
                        f"ignored")
        return None
    box, warning = fit_box((x0, y0, x1, y1), width, height, f"{name}: annos[{i}]", index=i,
                           given=f"{shown} as {_READING[fmt]}")
    if warning:
        warnings.append(warning)
    return box


# ------------------------------------------------------------------------------------------------ other fields

def _read_mask(i: int, value: Any, width: int, height: int, name: str, warnings: list[str]) -> np.ndarray | None:
    where = f"{name}: annos[{i}] mask"
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        return None
    try:
        if isinstance(value, dict):
            size = value.get("size")
            if isinstance(size, (list, tuple)) and list(size) != [height, width]:
                raise LayoutError(f"{where}: RLE size {bounded_repr(list(size), 40)} (= [height, width]) does not "
                                  f"match the "
                                  f"{width}x{height} canvas; use a mask of the canvas size or fix 'width'/'height'",
                                  index=i, field="mask")
            mask = decode_rle(value)
        elif isinstance(value, (list, tuple)):
            polys = [value] if all(_is_number(v) for v in value) else value
            mask = rasterize_polygons(polys, height, width)
        else:
            raise LayoutError(f"{where}: {type(value).__name__} is not a mask; use COCO RLE {{'size': [h, w], "
                              f"'counts': ...}}, a COCO polygon list [[x1, y1, x2, y2, ...]] or []",
                              index=i, field="mask")
    except RLEError as e:
        raise LayoutError(f"{where}: {e}", index=i, field="mask") from None
    if not mask.any():
        warnings.append(f"annos[{i}]: mask has no pixel set; mask ignored")
        return None
    return mask


def _read_scribble(i: int, value: Any, name: str) -> tuple[tuple[float, float], ...] | None:
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        return None
    where = f"{name}: annos[{i}] scribble"
    what = "a list of [x, y] pairs (or a flat list x1, y1, x2, y2, ...) of numbers"
    if not isinstance(value, (list, tuple)):
        raise LayoutError(f"{where}: {bounded_repr(value)} is not {what}", index=i, field="scribble")
    if all(isinstance(p, (list, tuple)) for p in value):
        pts = [tuple(_numbers(p, 2, where, what, i, "scribble")) for p in value]
    else:
        flat = _numbers(value, None, where, what, i, "scribble")
        if len(flat) % 2:
            raise LayoutError(f"{where}: {len(flat)} numbers is not a list of x, y pairs; give an even count",
                              index=i, field="scribble")
        pts = [(flat[j], flat[j + 1]) for j in range(0, len(flat), 2)]
    return tuple(pts)


def _read_optional_pair(i: int, anno: dict, key: str, name: str) -> tuple[float, float] | None:
    value = anno.get(key)
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        return None
    return tuple(_numbers(value, 2, f"{name}: annos[{i}] {key}", "[x, y]: 2 finite numbers in pixels", i, key))


def _unknown_keys_warning(unknown: dict[str, list[int]]) -> str:
    keys = sorted(unknown.items())
    parts = [f"'{k}' (annos {', '.join(map(str, idx[:5]))}{', ...' if len(idx) > 5 else ''})"
             for k, idx in keys[:10]]
    more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
    return f"ignored unknown instance keys: {', '.join(parts)}{more}"


# ------------------------------------------------------------------------------------------------ public API

def load_layout(source: Any, bbox_format: str = "auto", truncate: bool = False, *, drop_invalid: bool = False,
                name: str | None = None) -> LoadedLayout:
    """Load a layout from a path, JSON text or a dict in the official demo format (see the module docstring).

    Raises ``LayoutError`` for invalid files; error messages name ``annos[i]`` (the position in the file).
    ``drop_invalid=True``: an invalid instance is left out instead (its ``LayoutError``, with ``index`` and
    ``field``, goes to ``dropped``); each instance is validated once, and the box format is decided on the
    instances that are valid apart from their box. ``name``: what messages call the source."""
    if bbox_format not in BBOX_FORMATS:
        raise LayoutError(f"bbox_format: {bounded_repr(bbox_format, 40)} is not one of {', '.join(BBOX_FORMATS)}; "
                          f"use 'xywh' for official [x, y, w, h] boxes, 'xyxy' for corners, or 'auto'")
    data, source_name = _read_source(source)
    name = name or source_name
    try:
        return _load(data, name, bbox_format, truncate, drop_invalid)
    except RecursionError:
        raise LayoutError(f"{name}: a value is nested too deeply to read; a layout needs about 5 levels of "
                          f"brackets") from None


def _load(data: Any, name: str, bbox_format: str, truncate: bool, drop_invalid: bool) -> LoadedLayout:
    if not isinstance(data, dict):
        raise LayoutError(f"{name}: the top level is a {type(data).__name__}; a layout is a JSON object with "
                          f"'caption', 'width', 'height' and 'annos'")
    warnings: list[str] = []
    extra = sorted((k for k in data if k not in _TOP_KEYS), key=str)
    if extra:
        shown = ", ".join(bounded_repr(k, 40) for k in extra[:10]) + (", ..." if len(extra) > 10 else "")
        warnings.append(f"ignored unknown top-level keys: {shown}")
    width, height = _canvas_size(data, "width", name), _canvas_size(data, "height", name)
    caption = data.get("caption", "")
    if caption is None:
        caption = ""
    if not isinstance(caption, str):
        raise LayoutError(f"{name}: 'caption' is {bounded_repr(caption, 40)}; the global caption must be text")
    annos = data.get("annos")
    if not isinstance(annos, list):
        raise LayoutError(f"{name}: 'annos' is {'missing' if annos is None else type(annos).__name__}; it must be a "
                          f"list of instances [{{\"caption\": ..., \"bbox\": [x, y, w, h]}}, ...]")

    dropped: list[LayoutError] = []

    def reject(e: LayoutError) -> None:
        if not drop_invalid:
            raise e
        dropped.append(e)

    unknown: dict[str, list[int]] = {}
    raw_boxes: dict[int, list[float]] = {}
    alive: list[int] = []
    for i, anno in enumerate(annos):
        try:
            if not isinstance(anno, dict):
                raise LayoutError(f"{name}: annos[{i}] is a {type(anno).__name__}; each instance is an object "
                                  f"{{\"caption\": ..., \"bbox\": [x, y, w, h], ...}}", index=i)
            for k in anno:
                if k not in _ANNO_KEYS:
                    unknown.setdefault(bounded_repr(k, 40)[1:-1] if isinstance(k, str) else bounded_repr(k, 40),
                                       []).append(i)
            box = anno.get("bbox")
            if box is not None and not (isinstance(box, (list, tuple)) and len(box) == 0):
                raw_boxes[i] = _numbers(box, 4, f"{name}: annos[{i}] bbox", "4 finite numbers [x, y, w, h]", i,
                                        "bbox")
            alive.append(i)
        except LayoutError as e:
            reject(e)
    if unknown:
        warnings.append(_unknown_keys_warning(unknown))

    fields: dict[int, dict] = {}
    if drop_invalid:                         # everything that does not depend on the box format, once
        for i in list(alive):
            try:
                fields[i] = _read_fields(i, annos[i], width, height, name, warnings)
                probe = Instance(**fields[i])
                if probe.modalities():
                    _check(probe, i, width, height, name)
            except LayoutError as e:
                reject(e)
                alive.remove(i)
                raw_boxes.pop(i, None)

    if bbox_format == "auto":
        fmt, reason = decide_bbox_format(raw_boxes, width, height)
        warnings.append(reason)
    else:
        fmt = bbox_format

    instances = []
    for i in alive:
        try:
            f = fields[i] if drop_invalid else _read_fields(i, annos[i], width, height, name, warnings)
            bbox = _fit_box(i, raw_boxes[i], fmt, width, height, name, warnings) if i in raw_boxes else None
            inst = Instance(bbox=bbox, **f)
            if not inst.modalities():
                warnings.append(f"annos[{i}] ({inst.caption[:40]!r}): no usable location (box, point, scribble or "
                                f"mask); instance skipped")
                continue
            _check(inst, i, width, height, name)
        except LayoutError as e:
            reject(e)
            continue
        instances.append(inst)

    if len(instances) > MAX_INSTANCES:
        if not truncate:
            raise LayoutError(f"{name}: {len(instances)} instances but the model has {MAX_INSTANCES} slots; remove "
                              f"{len(instances) - MAX_INSTANCES}, or load with truncate=True to keep the first "
                              f"{MAX_INSTANCES}")
        warnings.append(f"{len(instances)} instances; kept the first {MAX_INSTANCES} (the model has {MAX_INSTANCES} "
                        f"slots), dropped {len(instances) - MAX_INSTANCES}")
        instances = instances[:MAX_INSTANCES]
    if not instances:
        warnings.append("no instances: the layout is empty")
    layout = Layout(width=width, height=height, caption=caption, instances=tuple(instances))
    return LoadedLayout(layout=layout, caption=caption, warnings=warnings, bbox_format_used=fmt, dropped=dropped)


def _read_fields(i: int, anno: dict, width: int, height: int, name: str, warnings: list[str]) -> dict:
    """Every field of ``annos[i]`` except the box, read and converted (the caption checked)."""
    cap = anno.get("caption")
    if not isinstance(cap, str) or not cap.strip():
        raise LayoutError(f"{name}: annos[{i}] caption is {'missing' if cap is None else bounded_repr(cap, 40)}; "
                          f"every instance needs a phrase such as \"a red car\"", index=i, field="caption")
    category = anno.get("category_name") or ""
    return dict(caption=cap,
                point=_read_optional_pair(i, anno, "point", name),
                scribble=_read_scribble(i, anno.get("scribble"), name),
                mask=_read_mask(i, anno.get("mask"), width, height, name, warnings),
                category=category if isinstance(category, str) else bounded_repr(category, 40))


def _check(inst: Instance, i: int, width: int, height: int, name: str) -> None:
    try:
        check_instance(inst, i, width, height)
    except LayoutError as e:
        raise LayoutError(f"{name}: {str(e).replace(f'instance {i} ', f'annos[{i}] ', 1)}", index=i,
                          field=e.field) from None


def layout_to_official(layout: Layout) -> dict:
    """A layout as an official-format dict: boxes ``[x, y, w, h]``, masks as compressed COCO RLE, points
    ``[x, y]``, scribbles as ``[[x, y], ...]``. A mask-only instance gets its mask's extent as ``bbox`` (as COCO
    and the official ``inference.py`` expect), so it loads back with that box; everything else round-trips."""
    annos = []
    for inst in layout.instances:
        anno: dict[str, Any] = {"caption": inst.caption}
        box = inst.model_box()
        if box is not None:
            x0, y0, x1, y1 = box
            anno["bbox"] = [_num(x0), _num(y0), _num(x1 - x0), _num(y1 - y0)]
        anno["mask"] = encode_rle(inst.mask) if inst.mask is not None else []
        if inst.point is not None:
            anno["point"] = [_num(v) for v in inst.point]
        if inst.scribble is not None:
            anno["scribble"] = [[_num(x), _num(y)] for x, y in inst.scribble]
        anno["category_name"] = inst.category
        annos.append(anno)
    return {"caption": layout.caption, "width": layout.width, "height": layout.height, "annos": annos}


def save_layout(layout: Layout, path: str | os.PathLike) -> None:
    """Write ``layout_to_official(layout)`` as JSON (UTF-8)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(layout_to_official(layout), f, ensure_ascii=False, indent=1)
        f.write("\n")
