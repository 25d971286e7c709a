"""Build a layout in the graph: a canvas, then one node per instance (box, point, scribble, mask or any mix).

Every node returns a NEW layout (ComfyUI caches outputs, so a received layout is never modified); chaining
nodes appends instances in order (slot order matters only for the seg branch, spec 1.3).

Boxes follow the one canvas policy (``box_fit``), as in Load Layout and the editor: a box partly outside the canvas
is clipped to it with a warning (shown on the node and in the console, ``node_messages``); a box entirely outside
is an error naming the instance, its prompt and the numbers.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np

from ..instancediffusion_core.layout.box_fit import fit_box, shown_box
from ..instancediffusion_core.layout.types import Instance, Layout, LayoutError, MAX_CANVAS, MAX_INSTANCES
from .node_messages import result_with_warnings
from .types import CATEGORY, INSTANCE_LAYOUT
from .validation import text

_CAT = CATEGORY + "/layout"
_PROMPT = ("STRING", {"multiline": False, "default": "",
                      "tooltip": "What this instance is, e.g. 'a red vintage car'. Encoded on its own by CLIP."})
_LAYOUT_IN = (INSTANCE_LAYOUT, {"tooltip": "The layout to append this instance to (from 'Instance Layout' or "
                                           "another instance node)."})
_PX = {"min": 0, "max": MAX_CANVAS, "step": 1}
# Numbers in point/box text: a token is a number only if it is all number (no silent skipping of 'nan', 'inf',
# '1e999', '12px'): separators are blanks, commas, semicolons and brackets.
_SEPARATORS = re.compile(r"[\s,;()\[\]]+")


def parse_numbers(text: str, field: str) -> list[float]:
    """The finite numbers in ``text`` separated by blanks, commas, semicolons or brackets; a ``LayoutError`` naming
    ``field`` for any other token (``nan``, ``inf``, ``1e999``, ``12px``)."""
    out = []
    for token in _SEPARATORS.split(text.strip()):
        if not token:
            continue
        try:
            value = float(token)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or token.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            raise LayoutError(f"{field}: {token[:40]!r} is not a finite number; write pixel coordinates such as "
                              f"'10,20 30,40' (NaN and infinity are not allowed)")
        out.append(value)
    return out


def parse_points(text: str, field: str) -> list[tuple[float, float]]:
    """'x,y x,y ...' (any separators), or a JSON list of [x, y] pairs or of flat numbers."""
    text = (text or "").strip()
    if not text:
        return []
    try:
        data = json.loads(text, parse_constant=lambda c: float("nan"))
    except (ValueError, RecursionError):
        data = parse_numbers(text, field)
    if isinstance(data, (int, float)):
        data = [data]
    if not isinstance(data, list):
        raise LayoutError(f"{field}: could not read {text[:80]!r} as points; write 'x,y' pairs, e.g. '10,20 30,40'")
    if data and all(isinstance(p, (list, tuple)) for p in data):
        if not all(len(p) == 2 for p in data):
            raise LayoutError(f"{field}: every point needs exactly 2 numbers [x, y]; got {data!r:.80}")
        data = [v for p in data for v in p]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data):
        raise LayoutError(f"{field}: could not read {text[:80]!r} as points; write 'x,y' pairs, e.g. '10,20 30,40'")
    if not all(math.isfinite(v) if isinstance(v, float) else v.bit_length() <= 1023 for v in data):
        raise LayoutError(f"{field}: {text[:80]!r} holds a number that is not finite (NaN, infinity or too large); "
                          f"write pixel coordinates such as '10,20 30,40'")
    if len(data) % 2:
        raise LayoutError(f"{field}: {len(data)} numbers is not a list of x,y pairs; give an even count")
    return [(float(data[i]), float(data[i + 1])) for i in range(0, len(data), 2)]


def mask_to_canvas(mask, index: int, layout: Layout, field: str) -> np.ndarray:
    """ComfyUI MASK [B,H,W] (or [H,W]) -> bool [H,W] that must match the layout canvas."""
    m = mask
    if m.ndim == 3:
        if not 0 <= index < m.shape[0]:
            raise LayoutError(f"{field}: mask batch has {m.shape[0]} masks, index {index} does not exist")
        m = m[index]
    arr = m.detach().cpu().float().numpy() > 0.5
    if arr.shape != (layout.height, layout.width):
        raise LayoutError(f"{field}: mask is {arr.shape[1]}x{arr.shape[0]} px but the layout canvas is "
                          f"{layout.width}x{layout.height}; resize the mask or set the canvas to the mask size")
    if not arr.any():
        raise LayoutError(f"{field}: the mask is empty (no pixel above 0.5); paint the instance's area")
    return arr


def fit_node_box(layout: Layout, prompt: str, x: float, y: float, width: float, height: float,
                 field: str = "box") -> tuple[tuple[float, float, float, float], str | None]:
    """The box ``x, y, width, height`` of the next instance as corners on the layout canvas, by the one box policy:
    partly outside is clipped (with the warning), entirely outside or without size is a ``LayoutError`` naming the
    instance, its prompt and the numbers."""
    i = len(layout.instances)
    prompt = text("prompt", prompt, f"instance {i}")
    given = ", ".join(f"{name} {v}" for name, v in zip(("x", "y", "width", "height"), shown_box((x, y, width, height))))
    return fit_box((x, y, x + width, y + height), layout.width, layout.height, f"instance {i} ({prompt[:40]!r})",
                   index=i, field=field, given=given)


def _append(layout: Layout, inst: Instance) -> Layout:
    text("prompt", inst.caption, f"instance {len(layout.instances)}")
    if len(layout.instances) >= MAX_INSTANCES:
        raise LayoutError(f"instance {len(layout.instances)}: a layout holds at most {MAX_INSTANCES} instances "
                          f"(the model has 30 slots); remove some or merge small ones")
    return layout.with_instance(inst)


class InstanceLayoutNode:
    DESCRIPTION = "Starts an empty layout: the canvas whose pixel coordinates the instances use."
    CATEGORY = _CAT
    FUNCTION = "make"
    RETURN_TYPES = (INSTANCE_LAYOUT,)
    RETURN_NAMES = ("layout",)
    OUTPUT_TOOLTIPS = ("An empty layout; chain instance nodes after it.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 512, "min": 8, "max": MAX_CANVAS, "step": 8,
                              "tooltip": "Canvas width in pixels; coordinates are normalised by it, so the image "
                                         "may have another size (usually set it to the image size)."}),
            "height": ("INT", {"default": 512, "min": 8, "max": MAX_CANVAS, "step": 8,
                               "tooltip": "Canvas height in pixels."}),
        }}

    def make(self, width, height):
        return (Layout(width=width, height=height),)


class _InstanceNode:
    CATEGORY = _CAT
    FUNCTION = "add"
    RETURN_TYPES = (INSTANCE_LAYOUT,)
    RETURN_NAMES = ("layout",)
    OUTPUT_TOOLTIPS = ("The layout with this instance appended.",)


class InstanceBox(_InstanceNode):
    DESCRIPTION = "Adds an instance placed by a box (pixels of the layout canvas). Its point defaults to the box centre."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "layout": _LAYOUT_IN, "prompt": _PROMPT,
            "x": ("INT", {"default": 64, **_PX, "tooltip": "Left edge of the box, pixels from the canvas's left."}),
            "y": ("INT", {"default": 64, **_PX, "tooltip": "Top edge of the box, pixels from the canvas's top."}),
            "width": ("INT", {"default": 192, "min": 1, "max": MAX_CANVAS, "tooltip":
                "Box width in pixels. A box reaching past the canvas edge is clipped to the canvas (with a warning "
                "on the node); one entirely outside the canvas is an error."}),
            "height": ("INT", {"default": 192, "min": 1, "max": MAX_CANVAS, "tooltip":
                "Box height in pixels (clipped to the canvas like the width)."}),
        }}

    def add(self, layout, prompt, x, y, width, height):
        bbox, warning = fit_node_box(layout, prompt, float(x), float(y), float(width), float(height))
        out = _append(layout, Instance(caption=prompt, bbox=bbox))
        return result_with_warnings((out,), [warning] if warning else [], NODES["InstanceBox"][1])


class InstancePoint(_InstanceNode):
    DESCRIPTION = "Adds an instance placed by a single point (the 'point' modality; official point config)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "layout": _LAYOUT_IN, "prompt": _PROMPT,
            "x": ("INT", {"default": 256, **_PX, "tooltip": "Point x in canvas pixels."}),
            "y": ("INT", {"default": 256, **_PX, "tooltip": "Point y in canvas pixels."}),
        }}

    def add(self, layout, prompt, x, y):
        return (_append(layout, Instance(caption=prompt, point=(float(x), float(y)))),)


class InstanceScribble(_InstanceNode):
    DESCRIPTION = ("Adds an instance placed by a scribble: a polyline through the object, resampled to the "
                   "model's 20 points.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "layout": _LAYOUT_IN, "prompt": _PROMPT,
            "points": ("STRING", {"multiline": True, "default": "100,300 180,260 260,300 340,260",
                                  "tooltip": "At least 2 points 'x,y' in canvas pixels, separated by spaces or new "
                                             "lines (or a JSON list of [x, y])."}),
        }}

    def add(self, layout, prompt, points):
        pts = parse_points(points, f"instance {len(layout.instances)} scribble")
        return (_append(layout, Instance(caption=prompt, scribble=tuple(pts))),)


class InstanceMask(_InstanceNode):
    DESCRIPTION = ("Adds an instance placed by a mask (e.g. painted in the mask editor of Load Image). The box is "
                   "the mask's extent; the mask also gives the polygon and seg inputs.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "layout": _LAYOUT_IN, "prompt": _PROMPT,
            "mask": ("MASK", {"tooltip": "Mask of the canvas size; pixels above 0.5 belong to the instance."}),
            "mask_index": ("INT", {"default": 0, "min": 0, "max": 4095,
                                   "tooltip": "Which mask of a mask batch to use."}),
        }}

    def add(self, layout, prompt, mask, mask_index=0):
        arr = mask_to_canvas(mask, mask_index, layout, f"instance {len(layout.instances)} mask")
        return (_append(layout, Instance(caption=prompt, mask=arr)),)


class InstanceAny(_InstanceNode):
    DESCRIPTION = ("Adds one instance with any mix of locations: box, point, scribble and mask. Leave a field empty "
                   "to omit it.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "layout": _LAYOUT_IN, "prompt": _PROMPT,
            "box": ("STRING", {"default": "", "tooltip": "'x,y,width,height' in canvas pixels, or empty. A box "
                                                   "reaching past the canvas edge is clipped to it (with a warning "
                                                   "on the node); one entirely outside is an error."}),
            "point": ("STRING", {"default": "", "tooltip": "'x,y' in canvas pixels, or empty."}),
            "scribble": ("STRING", {"multiline": True, "default": "",
                                    "tooltip": "'x,y' pairs of a polyline, or empty."}),
        }, "optional": {
            "mask": ("MASK", {"tooltip": "Optional mask of the canvas size."}),
        }}

    def add(self, layout, prompt, box="", point="", scribble="", mask=None):
        i = len(layout.instances)
        bbox, warning = None, None
        if box.strip():
            b = parse_numbers(box, f"instance {i} box")
            if len(b) != 4:
                raise LayoutError(f"instance {i} box: expected 4 numbers 'x,y,width,height', got {len(b)}")
            bbox, warning = fit_node_box(layout, prompt, *b)
        pt = None
        if point.strip():
            pts = parse_points(point, f"instance {i} point")
            if len(pts) != 1:
                raise LayoutError(f"instance {i} point: expected one 'x,y' pair, got {len(pts)}")
            pt = pts[0]
        scr = tuple(parse_points(scribble, f"instance {i} scribble")) or None
        arr = mask_to_canvas(mask, 0, layout, f"instance {i} mask") if mask is not None else None
        out = _append(layout, Instance(caption=prompt, bbox=bbox, point=pt, scribble=scr, mask=arr))
        return result_with_warnings((out,), [warning] if warning else [], NODES["InstanceAny"][1])


NODES = {
    "InstanceLayout": (InstanceLayoutNode, "Instance Layout"),
    "InstanceBox": (InstanceBox, "Instance: Box"),
    "InstancePoint": (InstancePoint, "Instance: Point"),
    "InstanceScribble": (InstanceScribble, "Instance: Scribble"),
    "InstanceMask": (InstanceMask, "Instance: Mask"),
    "InstanceAny": (InstanceAny, "Instance: Box/Point/Scribble/Mask"),
}
