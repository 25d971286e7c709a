"""Layouts in and pictures out: load the official demo JSON (file or text) and draw a layout for checking.

User text is never opened as a path (decided here): ``json_text`` is layout JSON (it starts with ``{`` or ``[``) or
the NAME of a ``.json`` file inside ComfyUI's input folder, resolved like ComfyUI's own loaders do
(``folder_paths.get_annotated_filepath`` / ``exists_annotated_filepath``) and accepted only if its real path stays
inside the input folder. Every other case - a missing file, a path outside ``input/`` (``/etc/...``, ``../``), a
folder, a link pointing out - gives the same single error, so the node cannot tell which files exist elsewhere;
files are read only up to ``MAX_LAYOUT_BYTES``.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

import folder_paths

from ..instancediffusion_core.layout.json_io import (MAX_LAYOUT_BYTES, bounded_repr, load_layout, parse_json_text,
                                                     read_layout_file)
from ..instancediffusion_core.layout.preview import draw_layout
from ..instancediffusion_core.layout.types import LayoutError
from .node_messages import result_with_warnings
from .types import INSTANCE_LAYOUT

_CAT = "instance_diffusion/layout"
NO_FILE = "(use json_text)"
BBOX_FORMATS = ["auto", "xywh", "xyxy"]


def looks_like_json(text: str) -> bool:
    return text.lstrip("\ufeff \t\r\n").startswith(("{", "["))


def resolve_layout_file(name: str, field: str, node: str = "Load Layout") -> str:
    """The real path of the layout file ``name`` inside ComfyUI's input folder, or one ``LayoutError`` for every
    way it can fail (not found, outside the input folder, not a file, not a .json name)."""
    missing = LayoutError(f"{node}: {field}: no such layout file {bounded_repr(name, 80)} in ComfyUI's input folder; "
                          f"put the .json into ComfyUI/input (or input/layouts) and give its name, e.g. "
                          f"'layouts/scene.json', or paste the layout JSON itself (it starts with '{{')", field=field)
    if not isinstance(name, str) or not name.strip() or len(name) > 1024 or "\x00" in name:
        raise missing
    name = name.strip()
    try:
        plain, _ = folder_paths.annotated_filepath(name)
        if not plain.lower().endswith(".json") or not folder_paths.exists_annotated_filepath(name):
            raise missing
        path = os.path.realpath(folder_paths.get_annotated_filepath(name))
        input_dir = os.path.realpath(folder_paths.get_input_directory())
        inside = os.path.commonpath([path, input_dir]) == input_dir
    except (ValueError, OSError, TypeError):
        raise missing from None
    if not inside or not os.path.isfile(path):
        raise missing
    return path


def read_layout_source(file: str, json_text: str, node: str = "Load Layout") -> tuple[dict | list, str]:
    """(parsed JSON, name for messages) of the node's inputs: the chosen file, else the text (JSON, or a file name
    in ComfyUI/input). Nothing outside the input folder is ever opened."""
    if file != NO_FILE:
        path = resolve_layout_file(file, "file", node)
        return parse_json_text(read_layout_file(path, file), file), file
    text = json_text if isinstance(json_text, str) else ""
    if not text.strip():
        raise LayoutError(f"{node}: choose a layout file or paste layout JSON into json_text.")
    if looks_like_json(text):
        return parse_json_text(text.lstrip("\ufeff"), "json_text"), "json_text"
    name = text.strip()
    path = resolve_layout_file(name, "json_text", node)
    return parse_json_text(read_layout_file(path, name), name), name


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
                       "What was decided while loading (box format, ignored keys, boxes clipped to the canvas, "
                       "truncation); the same lines show on the node and in the console.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "file": ([NO_FILE] + layout_files(), {"tooltip": "A .json layout in ComfyUI/input or input/layouts; "
                                                             "choose the first entry to use json_text instead."}),
            "json_text": ("STRING", {"multiline": True, "default": "",
                                     "tooltip": "Layout JSON pasted here (used when no file is chosen), or the name "
                                                "of a .json file in ComfyUI/input, e.g. layouts/scene.json."}),
            "bbox_format": (BBOX_FORMATS, {"default": "auto", "tooltip":
                "xywh: official [x, y, width, height] pixels; xyxy: [x1, y1, x2, y2]; auto: decide per file."}),
            "truncate": ("BOOLEAN", {"default": False, "tooltip":
                "Keep only the first 30 instances (with a warning) instead of failing on larger layouts."}),
        }}

    @classmethod
    def IS_CHANGED(cls, file, json_text, bbox_format, truncate):
        """The content of what will be loaded (a file's bytes, up to the size limit), so an edited file reloads."""
        digest = hashlib.sha256(f"{file}\0{json_text}\0{bbox_format}\0{truncate}".encode("utf-8", "replace"))
        name, field = (file, "file") if file != NO_FILE else (str(json_text).strip(), "json_text")
        if file != NO_FILE or (name and not looks_like_json(name)):
            try:
                with open(resolve_layout_file(name, field), "rb") as f:
                    digest.update(f.read(MAX_LAYOUT_BYTES + 1))
            except (LayoutError, OSError):
                pass                                     # load() reports it
        return digest.hexdigest()

    def load(self, file, json_text, bbox_format="auto", truncate=False):
        data, name = read_layout_source(file, json_text)
        loaded = load_layout(data, bbox_format=bbox_format, truncate=truncate, name=name)
        report = "\n".join(loaded.warnings) or f"bbox format: {loaded.bbox_format_used}"
        # the report's lines also show on the node and in the console: no workflow needs to wire 'report'
        return result_with_warnings((loaded.layout, loaded.caption, report), loaded.warnings, NODES[
            "LoadInstanceLayout"][1])


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
        if getattr(layout, "num_frames", None) is not None:    # a track: one picture per frame (nodes/frames.py)
            from .frames import draw_frames
            return (draw_frames(layout, image),)
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
