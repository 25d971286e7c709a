"""Layouts in and pictures out: load the official demo JSON (file or text) and draw a layout for checking."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

import folder_paths

from ..instancediffusion_core.layout.json_io import load_layout
from ..instancediffusion_core.layout.preview import draw_layout
from .types import INSTANCE_LAYOUT

_CAT = "instance_diffusion/layout"
NO_FILE = "(use json_text)"
BBOX_FORMATS = ["auto", "xywh", "xyxy"]


def layout_files() -> list[str]:
    """JSON files in ComfyUI's input folder (and its 'layouts' subfolder)."""
    base = folder_paths.get_input_directory()
    found = []
    for sub in ("", "layouts"):
        d = os.path.join(base, sub)
        if os.path.isdir(d):
            found += [os.path.join(sub, f) if sub else f for f in sorted(os.listdir(d)) if f.lower().endswith(".json")]
    return found


class LoadLayout:
    DESCRIPTION = ("Loads a layout in the official InstanceDiffusion demo format (caption, width, height, annos with "
                   "caption, bbox, mask, point, scribble) from a JSON file in ComfyUI/input (or input/layouts) or "
                   "from pasted JSON. LLM-written layouts often use x1,y1,x2,y2 boxes: bbox_format 'auto' detects "
                   "that per file and reports its decision.")
    CATEGORY = _CAT
    FUNCTION = "load"
    RETURN_TYPES = (INSTANCE_LAYOUT, "STRING", "STRING")
    RETURN_NAMES = ("layout", "caption", "report")
    OUTPUT_TOOLTIPS = ("The instances, in canvas pixels.", "The file's global caption (for CLIP Text Encode).",
                       "What was decided while loading (box format, ignored keys, truncation).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "file": ([NO_FILE] + layout_files(), {"tooltip": "A .json layout in ComfyUI/input or input/layouts; "
                                                             "choose the first entry to use json_text instead."}),
            "json_text": ("STRING", {"multiline": True, "default": "",
                                     "tooltip": "Layout JSON pasted here (used when no file is chosen)."}),
            "bbox_format": (BBOX_FORMATS, {"default": "auto", "tooltip":
                "xywh: official [x, y, width, height] pixels; xyxy: [x1, y1, x2, y2]; auto: decide per file."}),
            "truncate": ("BOOLEAN", {"default": False, "tooltip":
                "Keep only the first 30 instances (with a warning) instead of failing on larger layouts."}),
        }}

    @classmethod
    def IS_CHANGED(cls, file, json_text, bbox_format, truncate):
        if file != NO_FILE:
            path = folder_paths.get_annotated_filepath(file)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    return hashlib.sha256(f.read()).hexdigest() + bbox_format + str(truncate)
        return hashlib.sha256(json_text.encode()).hexdigest() + bbox_format + str(truncate)

    def load(self, file, json_text, bbox_format="auto", truncate=False):
        if file != NO_FILE:
            source = folder_paths.get_annotated_filepath(file)
        elif json_text.strip():
            source = json_text
        else:
            raise ValueError("Load Layout: choose a layout file or paste layout JSON into json_text.")
        loaded = load_layout(source, bbox_format=bbox_format, truncate=truncate)
        report = "\n".join(loaded.warnings) or f"bbox format: {loaded.bbox_format_used}"
        return (loaded.layout, loaded.caption, report)


class LayoutPreview:
    DESCRIPTION = ("Draws every instance of a layout (box, point, scribble, mask outline and fill, index and caption) "
                   "over an image or a blank canvas, so you can check the layout before sampling.")
    CATEGORY = _CAT
    FUNCTION = "draw"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The drawing; connect it to Preview Image.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "layout": (INSTANCE_LAYOUT, {"tooltip": "The layout to draw."}),
        }, "optional": {
            "image": ("IMAGE", {"tooltip": "Optional picture to draw on (e.g. the generated image); coordinates are "
                                           "scaled from the layout canvas to its size."}),
        }}

    def draw(self, layout, image=None):
        if image is None:
            return (self._to_tensor(draw_layout(layout)),)
        frames = [self._to_tensor(draw_layout(layout, image=(img.cpu().numpy() * 255).clip(0, 255).astype(np.uint8)))
                  for img in image]
        return (torch.cat(frames),)

    @staticmethod
    def _to_tensor(pil_image) -> torch.Tensor:
        arr = np.asarray(pil_image.convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(arr)[None]


NODES = {
    "LoadInstanceLayout": (LoadLayout, "Load Layout (InstanceDiffusion JSON)"),
    "InstanceLayoutPreview": (LayoutPreview, "Layout Preview"),
}
