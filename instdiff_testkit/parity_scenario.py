"""The parity fixture's scenario (scenario.json) as a Layout: masks rasterised from its shapes exactly as the
fixture generator did, boxes converted from xywh."""
from __future__ import annotations

import math

import numpy as np

from instancediffusion_core.layout.types import Instance, Layout


def _ellipse(shape, xx, yy):
    a = math.radians(shape.get("angle", 0))
    dx, dy = xx - shape["cx"], yy - shape["cy"]
    u = dx * math.cos(a) + dy * math.sin(a)
    v = -dx * math.sin(a) + dy * math.cos(a)
    return (u / shape["rx"]) ** 2 + (v / shape["ry"]) ** 2 <= 1.0


def _polygon(points, xx, yy):
    """Even-odd point-in-polygon test at the given sample positions."""
    inside = np.zeros(xx.shape, dtype=bool)
    pts = [tuple(map(float, p)) for p in points]
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]):
        crosses = (y1 > yy) != (y2 > yy)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (yy - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (xx < x_at)
    return inside


def rasterise_shapes(shapes, width, height):
    """The fixture's masks: shapes evaluated at pixel centres, added in order, ``"op": "sub"`` removes."""
    yy, xx = np.mgrid[:height, :width] + 0.5
    mask = np.zeros((height, width), dtype=bool)
    for shape in shapes:
        if shape["type"] == "ellipse":
            region = _ellipse(shape, xx, yy)
        elif shape["type"] == "polygon":
            region = _polygon(shape["points"], xx, yy)
        else:
            raise ValueError(f"unknown scenario shape {shape['type']!r}")
        mask = mask & ~region if shape.get("op") == "sub" else mask | region
    return mask


def scenario_layout(scenario):
    w, h = scenario["canvas"]["width"], scenario["canvas"]["height"]
    insts = []
    for k, spec in enumerate(scenario["instances"]):
        mask = rasterise_shapes(spec["mask"], w, h) if "mask" in spec else None
        bbox = spec.get("bbox")
        if isinstance(bbox, list):
            x, y, bw, bh = bbox
            bbox = (x, y, x + bw, y + bh)
        else:
            bbox = None  # "from_mask": the grounding builder uses the mask extent
        insts.append(Instance(f"instance {k} ({spec['kind']})", bbox=bbox, point=spec.get("point"),
                              scribble=spec.get("scribble"), mask=mask))
    return Layout(w, h, "", tuple(insts))
