"""Interop with ComfyUI's core BOUNDING_BOX type: core detectors (Run Real-Time Detection (RT-DETR), SAM3,
MediaPipe) and the core canvas (Create Bounding Boxes) build a still layout; a layout feeds core nodes (Draw BBoxes,
Create Bounding Boxes, Layers From Bounding Boxes). The rules are in
``instancediffusion_core/layout/bounding_boxes.py``; per-frame boxes (video) are ``Instance Tracks: Bounding
Boxes`` (``nodes/frames.py``).
"""
from __future__ import annotations

from ..instancediffusion_core.layout.bounding_boxes import bounding_boxes_with_warnings, layout_from_bounding_boxes
from ..instancediffusion_core.layout.frames import MATCH_RULES, FrameLayouts
from ..instancediffusion_core.layout.types import Layout, LayoutError, MAX_INSTANCES
from .node_messages import result_with_warnings
from .types import CATEGORY, INSTANCE_LAYOUT
from .validation import text

_CAT = CATEGORY + "/layout"
FROM_TITLE = "Instances from Bounding Boxes"
TO_TITLE = "Layout to Bounding Boxes"


class InstancesFromBoundingBoxes:
    DESCRIPTION = ("Adds instances placed by ComfyUI's BOUNDING_BOX (e.g. 'Run Real-Time Detection (RT-DETR)' on an "
                   "image, or the 'Create Bounding Boxes' canvas): one instance per prompt line, its box taken from "
                   "the boxes of one image, matched by label ('person: a man in a red coat': the k-th line with a "
                   "label gets the k-th box with that label, in the detector's order) or by order (line j gets box "
                   "j). A line without a box is an error naming the labels present; boxes no line takes are left "
                   "out with a warning; a box partly outside the canvas is clipped with a warning.")
    CATEGORY = _CAT
    FUNCTION = "add"
    RETURN_TYPES = (INSTANCE_LAYOUT,)
    RETURN_NAMES = ("layout",)
    OUTPUT_TOOLTIPS = ("The layout with one instance per prompt line appended (on a track: on every frame).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "layout": (INSTANCE_LAYOUT, {"tooltip": "The layout to append the instances to: 'Instance Layout' set "
                                                    "to the detected image's size (boxes are in its pixels), or "
                                                    "another layout node's output."}),
            "bboxes": ("BOUNDING_BOX", {"forceInput": True, "tooltip":
                "ComfyUI's bounding boxes ({x, y, width, height, label} in pixels), one list per image, e.g. from "
                "'Run Real-Time Detection (RT-DETR)' or 'Create Bounding Boxes'."}),
            "prompts": ("STRING", {"multiline": True, "default": "person: a man in a red coat",
                                   "tooltip": "One instance per line. match 'label': 'label: prompt' (the label as the "
                                              "detector names it, e.g. RT-DETR's COCO classes; a label twice takes "
                                              "the next box with it); match 'order': just the prompt."}),
            "match": (list(MATCH_RULES), {"default": "label", "tooltip":
                "label: by the box's label (label, or metadata.label / metadata.desc); order: line j gets box j of "
                "the list (Create Bounding Boxes gives no labels: use order)."}),
            "image_index": ("INT", {"default": 0, "min": 0, "max": 4095, "tooltip":
                "Which image's boxes to use when the bboxes hold several images (a batch); 0 is the first."}),
        }}

    def add(self, layout, bboxes, prompts, match="label", image_index=0):
        text("prompts", prompts, FROM_TITLE)
        if not isinstance(layout, (Layout, FrameLayouts)):
            raise LayoutError(f"{FROM_TITLE}: layout must come from 'Instance Layout' or a layout node, got "
                              f"{type(layout).__name__}", field="layout")
        n = len(layout.instances)
        new, warnings = layout_from_bounding_boxes(bboxes, prompts, layout.width, layout.height, match,
                                                   int(image_index), first_index=n)
        if n + len(new.instances) > MAX_INSTANCES:
            raise LayoutError(f"{FROM_TITLE}: {n} + {len(new.instances)} instances is more than the model's "
                              f"{MAX_INSTANCES} slots; remove prompt lines", field="instances")
        return result_with_warnings((layout.extend(new),), warnings, FROM_TITLE)


class LayoutToBoundingBoxes:
    DESCRIPTION = ("The layout's instances as ComfyUI's BOUNDING_BOX, for core nodes such as 'Draw BBoxes', 'Create "
                   "Bounding Boxes' (to edit them on its canvas) or 'Layers From Bounding Boxes': each instance's "
                   "box (or its mask's or scribble's extent) in canvas pixels, labelled with its prompt. A per-frame "
                   "layout (track) gives one list per frame. Instances with only a point are left out with a "
                   "warning.")
    CATEGORY = _CAT
    FUNCTION = "convert"
    RETURN_TYPES = ("BOUNDING_BOX",)
    RETURN_NAMES = ("bboxes",)
    OUTPUT_TOOLTIPS = ("One list of {x, y, width, height, label, metadata: {desc}} per image (a track: per frame), "
                       "in canvas pixels; label and desc are the instance's prompt.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "layout": (INSTANCE_LAYOUT, {"tooltip": "A layout (or a per-frame track layout) from any layout node."}),
        }}

    def convert(self, layout):
        boxes, warnings = bounding_boxes_with_warnings(layout)
        return result_with_warnings((boxes,), warnings, TO_TITLE)


NODES = {
    "InstancesFromBoundingBoxes": (InstancesFromBoundingBoxes, FROM_TITLE),
    "LayoutToBoundingBoxes": (LayoutToBoundingBoxes, TO_TITLE),
}
