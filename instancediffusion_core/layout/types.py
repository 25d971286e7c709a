"""The layout data type: a canvas and up to 30 instances, each a caption plus one or more locations.

Coordinates are pixels of the layout canvas (``width`` x ``height``); the grounding builder normalises them, so
the generated image may have another size. ComfyUI caches node outputs and hands the same object to several
nodes, so both classes are frozen: methods return new layouts and masks are stored read-only.

Validation happens when a ``Layout`` is built, because only then are the canvas and each instance's index known;
every error names the instance index, the field, the bad value and the fix. An ``Instance`` on its own only
converts its fields to canonical types (tuples of floats, a read-only bool mask) and keeps anything it cannot
convert as given, so that the layout check can report it with its index.

Rules (decided here):
- an instance needs a non-empty caption and at least one location (box, point, scribble or mask); a caption
  without any location has nothing to ground and would only repeat the global prompt;
- a box is ``(x0, y0, x1, y1)`` with ``0 <= x0 < x1 <= width`` and ``0 <= y0 < y1 <= height``;
- a point and every scribble point lie on the canvas, edges included; a scribble has at least 2 distinct points;
- a mask is a 2-D array of the canvas size (``[height, width]``) with at least one pixel set;
- at most ``MAX_INSTANCES`` (30) instances: the model has exactly 30 slots.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .mask_geometry import mask_extent

MAX_INSTANCES = 30
MODALITIES = ("box", "point", "scribble", "mask")
# Largest canvas side in pixels, checked wherever a layout enters (files, nodes, editor, planner). SD1.5 generates at
# 512-1024 px and coordinates are relative to the canvas, so 4096 leaves room for hires-fix and upscale canvases
# (4x the largest SD1.5 size) while bounding memory: one mask is width x height bytes (16 MB at 4096^2, 30 of them
# 0.5 GB; 30000^2 masks were 6.7 GiB) and Layout Preview needs ~30 bytes per pixel (0.5 GB at 4096^2).
MAX_CANVAS = 4096


class LayoutError(ValueError):
    """A layout (or a layout file) is invalid; the message says where, what and how to fix it.

    ``index`` is the instance's position (in the layout, or ``annos[i]`` in a file) and ``field`` the offending
    field (``"bbox"``, ``"caption"``, ...), each None when the error is not about one; callers that repair layouts
    (the planner) decide by them, never by parsing the message."""

    def __init__(self, message: str, index: int | None = None, field: str | None = None):
        super().__init__(message)
        self.index = index
        self.field = field


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {tuple(value.shape)} ({value.dtype})"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<integer of {value.bit_length()} bits>"      # repr raises beyond 4300 digits
    if isinstance(value, (list, tuple)) and len(value) > 16:
        return _short(type(value)(value[:16]), limit)[:-1] + (", ...]" if isinstance(value, list) else ", ...)")
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _items(value: Any) -> list | None:
    """The items of a sequence-like value, or None when it is not one (text, dicts and None are not)."""
    if value is None or isinstance(value, (str, bytes, dict)):
        return None
    try:
        return list(value)
    except TypeError:
        return None


def _as_float_tuple(value: Any) -> Any:
    """A sequence of numbers as a tuple of floats; anything else is returned unchanged (the layout check reports it)."""
    items = _items(value)
    if items is None:
        return value
    out = []
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            return tuple(items)
        try:
            out.append(float(v))
        except OverflowError:              # an integer beyond float range: kept, reported as not finite
            return tuple(items)
    return tuple(out)


def _as_point_tuple(value: Any) -> Any:
    """A sequence of (x, y) pairs as a tuple of float pairs; unchanged when it is not one."""
    items = _items(value)
    return value if items is None else tuple(_as_float_tuple(p) for p in items)


def _as_mask(value: Any) -> Any:
    """A read-only bool copy of a mask (bool/int: non-zero is set, float: > 0.5); unchanged if not array-like."""
    if value is None:
        return None
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - reported by the layout check
        return value
    if arr.dtype == object:
        return value
    if arr.dtype == bool:
        out = arr.copy()
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr > 0.5
    elif np.issubdtype(arr.dtype, np.integer):
        out = arr != 0
    else:
        return value
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class Instance:
    """One instance: its caption and any of box ``(x0, y0, x1, y1)``, point ``(x, y)``, scribble ``((x, y), ...)``
    and mask (bool ``[height, width]`` of the canvas), all in canvas pixels. ``category`` is informational."""
    caption: str
    bbox: tuple[float, float, float, float] | None = None
    point: tuple[float, float] | None = None
    scribble: tuple[tuple[float, float], ...] | None = None
    mask: np.ndarray | None = None
    category: str = ""

    def __post_init__(self):
        object.__setattr__(self, "bbox", _as_float_tuple(self.bbox))
        object.__setattr__(self, "point", _as_float_tuple(self.point))
        object.__setattr__(self, "scribble", _as_point_tuple(self.scribble))
        object.__setattr__(self, "mask", _as_mask(self.mask))

    def modalities(self) -> set[str]:
        """Which locations this instance has, a subset of {"box", "point", "scribble", "mask"}."""
        found = set()
        if self.bbox is not None:
            found.add("box")
        if self.point is not None:
            found.add("point")
        if self.scribble is not None:
            found.add("scribble")
        if self.mask is not None:
            found.add("mask")
        return found

    # The one home of an instance's geometry: grounding, layout check, JSON export and preview all ask here.
    def model_box(self) -> tuple[float, float, float, float] | None:
        """The box the model sees: the given box, else the mask's extent (COCO boxes are mask extents), else None
        (a point or scribble alone has no box)."""
        if self.bbox is not None:
            return self.bbox
        if self.mask is not None:
            return mask_extent(self.mask)
        return None

    def extent(self) -> tuple[float, float, float, float] | None:
        """Where the instance lies: ``model_box()``, else the scribble's bounding box; None for a point only."""
        box = self.model_box()
        if box is None and self.scribble is not None:
            xs = [p[0] for p in self.scribble]
            ys = [p[1] for p in self.scribble]
            box = (min(xs), min(ys), max(xs), max(ys))
        return box

    def anchor(self) -> tuple[str, tuple[float, float]]:
        """Where a label belongs: ``("corner", top-left of model_box())``, else ``("point", the point)``, else
        ``("scribble", its first point)``."""
        box = self.model_box()
        if box is not None:
            return "corner", (box[0], box[1])
        if self.point is not None:
            return "point", (self.point[0], self.point[1])
        return "scribble", tuple(self.scribble[0])

    def replace(self, **changes) -> "Instance":
        """A copy with some fields changed (the original is never modified)."""
        fields = dict(caption=self.caption, bbox=self.bbox, point=self.point, scribble=self.scribble,
                      mask=self.mask, category=self.category)
        fields.update(changes)
        return Instance(**fields)

    def __eq__(self, other):
        if not isinstance(other, Instance):
            return NotImplemented
        if (self.caption, self.bbox, self.point, self.scribble, self.category) != \
                (other.caption, other.bbox, other.point, other.scribble, other.category):
            return False
        if self.mask is None or other.mask is None:
            return self.mask is None and other.mask is None
        if isinstance(self.mask, np.ndarray) and isinstance(other.mask, np.ndarray):
            return self.mask.shape == other.mask.shape and bool(np.array_equal(self.mask, other.mask))
        return self.mask is other.mask

    def __hash__(self):
        mask_key = None
        if isinstance(self.mask, np.ndarray):
            mask_key = (self.mask.shape, hash(np.packbits(self.mask).tobytes()))
        return hash((self.caption, self.bbox, self.point, self.scribble, self.category, mask_key))

    def __repr__(self):
        parts = [f"caption={self.caption!r}"]
        for name in ("bbox", "point", "scribble"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={getattr(self, name)!r}")
        if self.mask is not None:
            pixels = int(self.mask.sum()) if isinstance(self.mask, np.ndarray) else "?"
            parts.append(f"mask=<{_short(self.mask)}, {pixels} px>")
        if self.category:
            parts.append(f"category={self.category!r}")
        return f"Instance({', '.join(parts)})"


@dataclass(frozen=True)
class Layout:
    """A canvas (pixels) with its instances in slot order. Validated on construction (see the module docstring)."""
    width: int
    height: int
    caption: str = ""
    instances: tuple[Instance, ...] = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "instances", tuple(self.instances))
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, (np.integer,)) or (isinstance(value, float) and value.is_integer()):
                object.__setattr__(self, name, int(value))
        validate(self)

    def with_instance(self, inst: Instance) -> "Layout":
        """A new layout with ``inst`` appended (this one is unchanged)."""
        return Layout(self.width, self.height, self.caption, self.instances + (inst,))

    def only(self, index: int, caption: str | None = None) -> "Layout":
        """The layout of instance ``index`` alone (in slot 0, same canvas), as the multi-instance sampler's
        per-instance passes see it; ``caption`` defaults to this layout's."""
        n = len(self.instances)
        if not 0 <= index < n:
            raise LayoutError(f"instance {index}: no such instance, the layout has {n} (indices 0..{n - 1})",
                              index=index)
        return Layout(self.width, self.height, self.caption if caption is None else caption,
                      (self.instances[index],))

    def extend(self, other: "Layout") -> "Layout":
        """A new layout with ``other``'s instances appended; both must share the canvas size. The caption is this
        layout's, or ``other``'s when this one has none."""
        if (other.width, other.height) != (self.width, self.height):
            raise LayoutError(f"extend: canvas {other.width}x{other.height} differs from {self.width}x{self.height}; "
                              f"build both layouts on the same canvas size")
        return Layout(self.width, self.height, self.caption or other.caption, self.instances + other.instances)

    def modalities(self) -> set[str]:
        """Locations used by any instance, a subset of {"box", "point", "scribble", "mask"}."""
        found: set[str] = set()
        for inst in self.instances:
            found |= inst.modalities()
        return found

    def __len__(self) -> int:
        return len(self.instances)


def _finite_numbers(values: Any, count: int | None) -> bool:
    if not isinstance(values, tuple) or (count is not None and len(values) != count):
        return False
    return all(isinstance(v, float) and math.isfinite(v) for v in values)


def check_instance(inst: Any, index: int, width: int, height: int) -> None:
    """Raise ``LayoutError`` if instance ``index`` is not valid on a ``width`` x ``height`` canvas."""
    where = f"instance {index}"
    if not isinstance(inst, Instance):
        raise LayoutError(f"{where}: expected an Instance, got {_short(inst)}; build it with Instance(caption=..., "
                          f"bbox=...)", index=index)
    if not isinstance(inst.caption, str) or not inst.caption.strip():
        raise LayoutError(f"{where} caption: {_short(inst.caption)} is missing or empty; give each instance a "
                          f"phrase such as 'a red car'", index=index, field='caption')
    where = f"instance {index} ({inst.caption[:40]!r})"
    if not isinstance(inst.category, str):
        raise LayoutError(f"{where} category: {_short(inst.category)} is not text; use a string or leave it empty", index=index, field='category')
    if not inst.modalities():
        raise LayoutError(f"{where}: no location; give a box, a point, a scribble or a mask (a caption alone has "
                          f"nothing to ground; put it in the global prompt instead)", index=index)
    canvas = f"the {width}x{height} canvas"
    if inst.bbox is not None:
        b = inst.bbox
        if not _finite_numbers(b, 4):
            raise LayoutError(f"{where} bbox: {_short(b)} is not 4 finite numbers; write (x0, y0, x1, y1) in pixels", index=index, field='bbox')
        x0, y0, x1, y1 = b
        if not (x1 > x0 and y1 > y0):
            raise LayoutError(f"{where} bbox: {_short(b)} has zero or negative size (needs x1 > x0 and y1 > y0); "
                              f"write (x0, y0, x1, y1) corners, not (x, y, width, height)", index=index, field='bbox')
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise LayoutError(f"{where} bbox: {_short(b)} reaches outside {canvas}; keep 0 <= x0 < x1 <= {width} "
                              f"and 0 <= y0 < y1 <= {height} (clip it, or enlarge the canvas)", index=index, field='bbox')
    if inst.point is not None:
        p = inst.point
        if not _finite_numbers(p, 2):
            raise LayoutError(f"{where} point: {_short(p)} is not 2 finite numbers; write (x, y) in pixels", index=index, field='point')
        if not (0 <= p[0] <= width and 0 <= p[1] <= height):
            raise LayoutError(f"{where} point: {_short(p)} lies outside {canvas}; keep 0 <= x <= {width} and "
                              f"0 <= y <= {height}", index=index, field='point')
    if inst.scribble is not None:
        s = inst.scribble
        if not isinstance(s, tuple) or not all(_finite_numbers(p, 2) for p in s):
            raise LayoutError(f"{where} scribble: {_short(s)} is not a list of (x, y) pairs of finite numbers; "
                              f"write ((x1, y1), (x2, y2), ...) in pixels", index=index, field='scribble')
        if len(set(s)) < 2:
            raise LayoutError(f"{where} scribble: {_short(s)} has fewer than 2 distinct points; a scribble is a "
                              f"polyline through the object, give at least 2 different points", index=index, field='scribble')
        for j, p in enumerate(s):
            if not (0 <= p[0] <= width and 0 <= p[1] <= height):
                raise LayoutError(f"{where} scribble: point {j} {_short(p)} lies outside {canvas}; keep "
                                  f"0 <= x <= {width} and 0 <= y <= {height}", index=index, field='scribble')
    if inst.mask is not None:
        m = inst.mask
        if not isinstance(m, np.ndarray) or m.dtype != bool:
            raise LayoutError(f"{where} mask: {_short(m)} is not a numeric 2-D array; pass a bool/0-1 array of "
                              f"shape [{height}, {width}]", index=index, field='mask')
        if m.shape != (height, width):
            raise LayoutError(f"{where} mask: shape {tuple(m.shape)} does not match {canvas} (needs "
                              f"[{height}, {width}] = [height, width]); resize the mask to the canvas", index=index, field='mask')
        if not m.any():
            raise LayoutError(f"{where} mask: no pixel is set; paint the instance's area or drop the mask", index=index, field='mask')


def validate(layout: Layout) -> None:
    """Raise ``LayoutError`` if the canvas or any instance is invalid (called by ``Layout`` itself)."""
    for name in ("width", "height"):
        value = getattr(layout, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise LayoutError(f"layout {name}: {_short(value)} is not a positive whole number of pixels; set the "
                              f"canvas size, e.g. 512")
        if value > MAX_CANVAS:
            raise LayoutError(f"layout {name}: {_short(value)} px is larger than {MAX_CANVAS} px, the most per side "
                              f"(MAX_CANVAS: masks and previews cost memory per canvas pixel, and SD1.5 generates at "
                              f"512-1024). Coordinates are relative to the canvas: use a smaller canvas, e.g. the "
                              f"image size")
    if not isinstance(layout.caption, str):
        raise LayoutError(f"layout caption: {_short(layout.caption)} is not text; use a string (may be empty)")
    n = len(layout.instances)
    if n > MAX_INSTANCES:
        raise LayoutError(f"instance {MAX_INSTANCES}: the layout has {n} instances but the model has "
                          f"{MAX_INSTANCES} slots; remove {n - MAX_INSTANCES} instances or merge small ones",
                          index=MAX_INSTANCES, field="instances")
    for i, inst in enumerate(layout.instances):
        check_instance(inst, i, layout.width, layout.height)
