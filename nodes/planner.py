"""Layouts from a sentence (an OpenAI-compatible chat model) and a plausibility check of any layout."""
from __future__ import annotations

import logging
import os

from ..instancediffusion_core.layout.types import MAX_CANVAS, MAX_INSTANCES
from ..instancediffusion_core.layout.check import check_layout, check_layout_or_frames, format_warnings
from ..instancediffusion_core.planner.plan import (DEFAULT_API_KEY_ENV, DEFAULT_BASE_URL, PlannerError, PlanRequest,
                                              plan_layout)
from .node_messages import result_with_warnings
from .types import CATEGORY, INSTANCE_LAYOUT
from .validation import finite, text

NODE_TITLE = "Layout Planner"

_CAT = CATEGORY + "/layout"
_LOG = logging.getLogger(__name__)
CACHE_SUBDIR = os.path.join("instance_diffusion", "planner_cache")


def disk_cache_dir() -> str | None:
    """Where planned replies are kept between ComfyUI runs: <ComfyUI user dir>/instance_diffusion/planner_cache
    (None outside ComfyUI)."""
    try:
        import folder_paths
    except ImportError:
        return None
    return os.path.join(folder_paths.get_user_directory(), CACHE_SUBDIR)


class LayoutPlanner:
    DESCRIPTION = ("Asks a chat model (any OpenAI-compatible server: llama.cpp llama-server, Ollama, vLLM, LM Studio, "
                   "OpenAI) to lay out the described scene as boxes, then repairs and validates the reply like a "
                   "layout file (corner boxes, boxes over the edge, too many objects, prose around the JSON) and "
                   "reports every repair and plausibility warning. Replies are cached by all inputs, so re-running "
                   "the workflow does not query the model again. The API key is read from the environment variable "
                   "named in api_key_env and never stored in the workflow.")
    CATEGORY = _CAT
    FUNCTION = "plan"
    RETURN_TYPES = (INSTANCE_LAYOUT, "STRING", "STRING")
    RETURN_NAMES = ("layout", "caption", "report")
    OUTPUT_TOOLTIPS = ("The planned instances, in canvas pixels.",
                       "The model's global caption for the whole image (for CLIP Text Encode).",
                       "Where the reply came from, every repair made, and the layout check's warnings.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "description": ("STRING", {"multiline": True, "default": "",
                                       "tooltip": "The scene to lay out, e.g. 'a corgi and a tabby cat on a sofa in "
                                                  "a sunny living room'."}),
            "width": ("INT", {"default": 512, "min": 64, "max": MAX_CANVAS, "step": 8,
                              "tooltip": "Canvas width in pixels; also the image width the layout is meant for."}),
            "height": ("INT", {"default": 512, "min": 64, "max": MAX_CANVAS, "step": 8,
                               "tooltip": "Canvas height in pixels; also the image height the layout is meant for."}),
            "max_instances": ("INT", {"default": 10, "min": 1, "max": MAX_INSTANCES,
                                      "tooltip": f"Most objects the model may place (the model has {MAX_INSTANCES} "
                                                 f"slots); extra objects are dropped with a note."}),
            "base_url": ("STRING", {"default": DEFAULT_BASE_URL,
                                    "tooltip": "OpenAI-compatible API base ending in /v1; the node POSTs to "
                                               "<base_url>/chat/completions."}),
            "model": ("STRING", {"default": "",
                                 "tooltip": "Model name the server expects (e.g. gpt-4o-mini); local single-model "
                                            "servers accept any name."}),
            "api_key_env": ("STRING", {"default": DEFAULT_API_KEY_ENV,
                                       "tooltip": "NAME of the environment variable holding the API key (not the "
                                                  "key itself). Unset or empty: no key is sent (local servers)."}),
            "timeout": ("FLOAT", {"default": 120.0, "min": 1.0, "max": 3600.0, "step": 1.0,
                                  "tooltip": "Seconds to wait for the model's reply before giving up."}),
            # the frontend gives every INT named 'seed' a 'randomize' control unless told otherwise; a new seed
            # per run would re-query the model every time and defeat the cache
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "control_after_generate": False,
                             "tooltip": "Sent to the API for repeatable answers; change it for another layout "
                                        "(kept fixed between runs so the cached layout is reused)."}),
        }, "optional": {
            "temperature": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                      "tooltip": "Sampling temperature; 0 gives the most repeatable layout."}),
            "cache_to_disk": ("BOOLEAN", {"default": True,
                                          "tooltip": "Also keep replies in the ComfyUI user folder "
                                                     "(instance_diffusion/planner_cache) so they survive a restart."}),
        }}

    @classmethod
    def IS_CHANGED(cls, description, width, height, max_instances, base_url, model, api_key_env, timeout, seed,
                   temperature=0.0, cache_to_disk=True):
        """The planner's cache key: ComfyUI re-runs the node exactly when the model would be asked something else."""
        try:
            return PlanRequest(description, width, height, max_instances, base_url, model, seed,
                               temperature).cache_key()
        except PlannerError:
            return float("nan")                    # invalid input: always run, so the error is shown

    def plan(self, description, width, height, max_instances, base_url, model, api_key_env, timeout, seed,
             temperature=0.0, cache_to_disk=True):
        description = text("description", description, NODE_TITLE)
        timeout = finite("timeout", timeout, NODE_TITLE, minimum=1.0, maximum=3600.0)
        temperature = finite("temperature", temperature, NODE_TITLE, minimum=0.0, maximum=2.0)
        result = plan_layout(description, width, height, max_instances, base_url=base_url, model=model,
                             api_key_env=api_key_env, timeout=timeout, seed=seed, temperature=temperature,
                             cache_dir=disk_cache_dir() if cache_to_disk else None)
        found = check_layout(result.layout)
        check = format_warnings(found, result.layout)
        report = f"{result.report()}\n{check}"
        _LOG.info("Layout Planner: %s", report.replace("\n", " | "))
        lines = list(result.repairs) + ([line[2:] if line.startswith("- ") else line
                                         for line in check.splitlines()[1:]] if found else [])
        return result_with_warnings((result.layout, result.caption, report), lines, NODE_TITLE)


class LayoutCheck:
    DESCRIPTION = ("Looks for things that load fine but render badly: objects cut by the canvas edge, boxes too small "
                   "for the latent grid, near-duplicate boxes, a box inside another of the same category, and sizes "
                   "that break perspective on a shared ground line. The warnings show on the node and in the "
                   "console (and on the 'warnings' output, e.g. for Preview Any); the layout passes through "
                   "unchanged.")
    CATEGORY = _CAT
    FUNCTION = "check"
    RETURN_TYPES = ("STRING", INSTANCE_LAYOUT)
    RETURN_NAMES = ("warnings", "layout")
    OUTPUT_TOOLTIPS = ("One line per warning with what was measured and what to change.",
                       "The input layout, unchanged.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "layout": (INSTANCE_LAYOUT, {"tooltip": "The layout to check."}),
        }, "optional": {
            "generation_width": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 8,
                                         "tooltip": "Width of the image you will generate; 0 = the canvas width."}),
            "generation_height": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 8,
                                          "tooltip": "Height of the image you will generate; 0 = the canvas "
                                                     "height."}),
            "latent_scale": ("INT", {"default": 8, "min": 1, "max": 64,
                                     "tooltip": "Pixels per latent cell (8 for SD1.5); sets the smallest box that "
                                                "can render."}),
        }}

    def check(self, layout, generation_width=0, generation_height=0, latent_scale=8):
        size = (generation_width or layout.width, generation_height or layout.height)
        warnings = check_layout_or_frames(layout, latent_scale=latent_scale, generation_size=size)
        report = format_warnings(warnings, layout)
        lines = [line[2:] if line.startswith("- ") else line for line in report.splitlines()[1:]] if warnings else []
        return result_with_warnings((report, layout), lines, NODES["InstanceLayoutCheck"][1])


NODES = {
    "InstanceLayoutPlanner": (LayoutPlanner, "Layout Planner (LLM)"),
    "InstanceLayoutCheck": (LayoutCheck, "Layout Check"),
}
