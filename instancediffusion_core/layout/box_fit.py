"""The one canvas policy for boxes, wherever a box enters a layout (Load Layout, Instance: Box, the editor, Instances
from BOUNDING_BOX).

- a box partly outside the canvas is clipped to it, with a warning that names the instance and both boxes;
- a box with size but entirely outside the canvas (nothing of it is on the canvas) is an error naming the
  instance, the numbers and the canvas: dropping it silently turns a run into an empty layout, and clamping it
  onto the edge invents a location the user never drew;
- a box with no size is an error too, except in a layout file where ``[x, y, 0, 0]`` is the official "no box"
  placeholder (the rose-garden demo): ``json_io`` ignores those with a warning before calling here.

Tracks are the exception by design: a tracked object's box leaving the frame means the object is absent on that
frame (``frames.py``), as the official code's empty slot.
"""
from __future__ import annotations

import math
from typing import Sequence

from .types import LayoutError

Box = tuple[float, float, float, float]


def plain_number(v: float):
    """A pixel number as JSON and messages write it: ``12`` for 12.0, else the float."""
    return int(v) if float(v).is_integer() else float(v)


def _num(v: float):
    return plain_number(round(float(v), 3))


def shown_box(box: Sequence[float]) -> list:
    return [_num(v) for v in box]


def fit_box(box: Sequence[float], width: int, height: int, where: str, *, index: int | None = None,
            field: str = "bbox", given: str | None = None) -> tuple[Box, str | None]:
    """Corners ``(x0, y0, x1, y1)`` -> (corners on the ``width`` x ``height`` canvas, warning or None).

    ``where`` names the instance (e.g. ``"instance 2 ('a cat')"`` or ``"annos[2]"``); ``given`` is how the user
    wrote the box (e.g. ``"[600, 10, 50, 50] (x, y, w, h)"``), defaulting to the corners."""
    x0, y0, x1, y1 = (float(v) for v in box)
    said = given or f"{shown_box(box)} (x0, y0, x1, y1)"
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise LayoutError(f"{where} {field}: {said} has a number that is not finite; write pixel numbers",
                          index=index, field=field)
    if not (x1 > x0 and y1 > y0):
        raise LayoutError(f"{where} {field}: {said} has no size (width {_num(x1 - x0)}, height {_num(y1 - y0)}); "
                          f"give it a positive width and height", index=index, field=field)
    cx0, cy0 = min(max(x0, 0.0), float(width)), min(max(y0, 0.0), float(height))
    cx1, cy1 = min(max(x1, 0.0), float(width)), min(max(y1, 0.0), float(height))
    if not (cx1 > cx0 and cy1 > cy0):
        raise LayoutError(f"{where} {field}: {said} lies entirely outside the {width}x{height} canvas (corners "
                          f"{shown_box((x0, y0, x1, y1))}; the canvas spans x 0..{width}, y 0..{height}); move it "
                          f"onto the canvas, enlarge the canvas, or remove the instance", index=index, field=field)
    if (cx0, cy0, cx1, cy1) == (x0, y0, x1, y1):
        return (x0, y0, x1, y1), None
    clipped = (cx0, cy0, cx1, cy1)
    return clipped, (f"{where} {field}: {said} reaches outside the {width}x{height} canvas; clipped to corners "
                     f"{shown_box(clipped)}")
