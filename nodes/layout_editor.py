"""Draw the layout inside ComfyUI: the node behind the browser's instance layout editor (web/js/).

The editor keeps its whole state in the ``layout_json`` widget as the official InstanceDiffusion layout JSON, so
a workflow saves, loads and shares the drawing, an API prompt can carry any layout text, and this node validates
it with the same loader (and the same error messages) as layout files. The ``width``/``height`` widgets are the
canvas: they replace the JSON's own width/height. An optional background image is saved like Preview Image does
and sent back as UI data, so the editor can draw over a previous generation.
"""
from __future__ import annotations

import os
import random

import numpy as np
from PIL import Image

from ..instancediffusion_core.layout.types import MAX_CANVAS, Layout, LayoutError
from ..instancediffusion_core.layout.json_io import LoadedLayout, layout_to_official, load_layout, parse_json_text
from .node_messages import WARNINGS_KEY, result_with_warnings  # noqa: F401  (the editor's ui keys, read by tests)
from .types import CATEGORY, INSTANCE_LAYOUT

NODE_TITLE = "Instance Layout Editor"
CANVAS = {"default": 512, "min": 16, "max": MAX_CANVAS, "step": 8}
BACKGROUND_KEY = "instdiff_background"    # UI keys the frontend reads (web/js/instance_layout_editor.js, also
LAYOUT_KEY = "instdiff_layout"            # WARNINGS_KEY); not "images", which would show a second picture


def editor_layout(layout_json: str, width: int, height: int) -> LoadedLayout:
    """The layout of the editor's JSON text on a ``width`` x ``height`` canvas (the widgets win over the JSON's own
    ``width``/``height``). Empty text is an empty layout. Boxes are official ``[x, y, w, h]`` pixels.

    The text is layout JSON only: anything else is an error, never a file name (the node echoes the layout in its
    UI output, which ComfyUI keeps in its history)."""
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise LayoutError(f"{NODE_TITLE}: {name} is {value!r:.40}; it must be a positive whole number of pixels")
        if value > MAX_CANVAS:
            raise LayoutError(f"{NODE_TITLE}: {name} is {value} px; the canvas is at most {MAX_CANVAS} px per side "
                              f"(masks and previews cost memory per pixel, and SD1.5 generates at 512-1024)")
    text = layout_json if isinstance(layout_json, str) else ""
    if not text.strip():
        return LoadedLayout(layout=Layout(width, height), caption="", warnings=["no instances: the layout is empty"],
                            bbox_format_used="xywh")
    text = text.lstrip("\ufeff")
    if not text.lstrip().startswith(("{", "[")):
        raise LayoutError(f"{NODE_TITLE} (layout_json): not layout JSON (it must start with '{{'); the editor keeps "
                          f"the layout itself here, not a file name. Draw on the canvas, paste a layout, or load a "
                          f"file from ComfyUI/input with Load Layout", field="layout_json")
    try:
        data = parse_json_text(text, "layout JSON")
        if isinstance(data, dict):
            data = {**data, "width": width, "height": height}
        return load_layout(data, bbox_format="xywh", name="layout JSON")
    except LayoutError as e:
        raise LayoutError(f"{NODE_TITLE} (layout_json): {e}", index=e.index, field=e.field) from None


def save_preview_image(image) -> dict:
    """Save the first picture of an IMAGE batch into ComfyUI's temp folder like Preview Image; its /view reference."""
    import folder_paths  # ComfyUI's; imported here so the pure layout function above needs no host

    arr = image[0].detach().cpu().float().numpy() if hasattr(image, "detach") else np.asarray(image[0])
    pixels = np.clip(arr * 255.0, 0, 255).astype(np.uint8)
    height, width = pixels.shape[:2]
    prefix = "instdiff_layout_bg_" + "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))
    temp_dir = folder_paths.get_temp_directory()
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, temp_dir, width, height)
    filename = f"{name}_{counter:05}_.png"
    Image.fromarray(pixels[..., :3] if pixels.ndim == 3 else pixels).save(os.path.join(folder, filename),
                                                                         compress_level=1)
    return {"filename": filename, "subfolder": subfolder, "type": "temp"}


class InstanceLayoutEditor:
    DESCRIPTION = ("Draw the instance layout on a canvas inside the node: boxes (drag), points (click), scribbles "
                   "(freehand, kept as 20 points) and masks (brush or polygon); give every instance its prompt in "
                   "the list under the canvas and the whole picture a global caption. Select, move, resize and "
                   "delete instances; Ctrl+Z / Ctrl+Y undo and redo. The drawing is stored as official "
                   "InstanceDiffusion layout JSON in layout_json, so you can also paste a layout there. Connect a "
                   "background image (e.g. a previous generation) and run once to draw over it.")
    CATEGORY = CATEGORY + "/layout"
    FUNCTION = "build"
    # an output node: ComfyUI then runs it (or re-sends its cached UI data) on every prompt, so the editor always
    # gets the background back, also when nothing downstream needs re-running or only the editor is queued
    OUTPUT_NODE = True
    RETURN_TYPES = (INSTANCE_LAYOUT, "STRING")
    RETURN_NAMES = ("layout", "caption")
    OUTPUT_TOOLTIPS = ("The drawn instances in canvas pixels (for InstanceDiffusion Conditioning or Layout Preview).",
                       "The global caption typed in the editor (for CLIP Text Encode).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": ("INT", {**CANVAS, "tooltip":
                    "Canvas width in pixels; coordinates are pixels of this canvas. It replaces the 'width' inside "
                    "layout_json. Changing it in the editor scales the drawn instances along."}),
                "height": ("INT", {**CANVAS, "tooltip":
                    "Canvas height in pixels; coordinates are pixels of this canvas. It replaces the 'height' "
                    "inside layout_json. Changing it in the editor scales the drawn instances along."}),
                "layout_json": ("STRING", {"multiline": True, "default": "", "tooltip":
                    "The layout as official InstanceDiffusion JSON (caption, width, height, annos with caption, "
                    "bbox [x, y, w, h], point, scribble, mask as COCO RLE or polygons). The editor writes it; you "
                    "may paste a layout here instead. Its width/height are replaced by the widgets above."}),
            },
            "optional": {
                "background": ("IMAGE", {"tooltip":
                    "Optional picture shown under the drawing after a run (e.g. a previous generation, for "
                    "iterative editing). Only displayed; it does not change the layout."}),
            },
        }

    def build(self, width, height, layout_json, background=None):
        loaded = editor_layout(layout_json, width, height)
        ui = {
            LAYOUT_KEY: [layout_to_official(loaded.layout)],
            BACKGROUND_KEY: [save_preview_image(background)] if background is not None else [],
        }
        # the editor shows these under its canvas (web/js/instance_layout_editor.js); they are logged too
        warnings = [w for w in loaded.warnings if not w.startswith("no instances")]
        return result_with_warnings((loaded.layout, loaded.caption), warnings, NODE_TITLE, ui=ui)


NODES = {"InstanceLayoutEditor": (InstanceLayoutEditor, NODE_TITLE)}
