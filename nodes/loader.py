"""Load InstanceDiffusion add-on weights (official .pth, logtd's split files or our safetensors) into a ModelPatcher.

The weights live in a real ``ModelPatcher`` so ComfyUI's model management moves them to the GPU together with the
UNet (the patches list it in ``models()``) and offloads them like any model.
"""
from __future__ import annotations

import logging
import os

import torch

import comfy.model_management
import comfy.model_patcher
import folder_paths

from ..instancediffusion_core.weights.checkpoint import load_instancediffusion
from . import host_ops
from .types import CATEGORY, INSTANCEDIFFUSION

FOLDER = "instance_diffusion"
EXTENSIONS = {".safetensors", ".pth", ".ckpt", ".pt", ".bin"}
LOGTD_FILES = ("fusers.ckpt", "position_net.ckpt", "scaleu.ckpt")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def register_model_folders() -> None:
    """models/instance_diffusion (+ logtd's folders), appended so extra_model_paths.yaml entries are kept.

    models/instance_diffusion is created when missing (ComfyUI ships its own models/<folder>s), so a new user sees
    where the weights go. A folder that cannot be created (read-only install) just lists no files: node
    registration never fails on it.
    """
    models_dir = folder_paths.models_dir
    default = os.path.join(models_dir, FOLDER)
    try:
        os.makedirs(default, exist_ok=True)
    except OSError as e:
        logging.warning("InstanceDiffusion: could not create the weights folder %s (%s); put the weights in a "
                        "folder listed for '%s' in extra_model_paths.yaml", default, e, FOLDER)
    folder_paths.add_model_folder_path(FOLDER, default, is_default=True)
    for sub in ("fuser_models", "positionnet_models", "scaleu_models"):
        folder_paths.add_model_folder_path(FOLDER, os.path.join(models_dir, "instance_models", sub))
    paths, exts = folder_paths.folder_names_and_paths[FOLDER]
    if isinstance(exts, set):
        exts.update(EXTENSIONS)
    else:
        folder_paths.folder_names_and_paths[FOLDER] = (paths, set(exts) | EXTENSIONS)


def files_to_load(path: str) -> list[str]:
    """logtd ships three files; picking any one of them loads the others found beside it or in logtd's folders."""
    name = os.path.basename(path)
    if name not in LOGTD_FILES:
        return [path]
    found = [path]
    for other in LOGTD_FILES:
        if other == name:
            continue
        candidate = os.path.join(os.path.dirname(path), other)
        if not os.path.isfile(candidate):
            candidate = folder_paths.get_full_path(FOLDER, other)
        if candidate and os.path.isfile(candidate):
            found.append(candidate)
    return found


def resolve_dtype(choice: str, device=None) -> tuple[torch.dtype, torch.dtype]:
    """(storage, compute) dtypes of the add-ons on ``device``: ``auto`` stores like the UNet (fp8 under
    ``--fp8_e4m3fn-unet``) and always computes in fp16/bf16/fp32 (see ``host_ops.addon_dtypes``)."""
    return host_ops.addon_dtypes(choice, device or comfy.model_management.get_torch_device())


class LoadInstanceDiffusion:
    DESCRIPTION = ("Loads the InstanceDiffusion add-on weights: position net (instance tokenizer), 16 fusion layers "
                   "and ScaleU. Accepts the official instancediffusion_sd15.pth (read safely, no code from the file "
                   "runs), logtd's fusers/position_net/scaleu .ckpt files, or a converted .safetensors. Put the files "
                   "in ComfyUI/models/instance_diffusion.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (INSTANCEDIFFUSION,)
    RETURN_NAMES = ("instdiff",)
    OUTPUT_TOOLTIPS = ("The add-on weights, for the tokenizer, Apply UniFusion and Apply ScaleU nodes.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "weights": (folder_paths.get_filename_list(FOLDER), {
                "tooltip": "File in models/instance_diffusion. Converting the 13.6 GB official file once with "
                           "'python -m instancediffusion_core convert' gives a ~0.7 GB safetensors that loads fast."}),
            "dtype": (["auto", "fp32", "fp16", "bf16"], {
                "default": "auto",
                "tooltip": "Precision of the add-on weights; auto follows ComfyUI's UNet precision for this device."}),
        }}

    def load(self, weights, dtype="auto"):
        path = folder_paths.get_full_path(FOLDER, weights)
        if path is None or not os.path.isfile(path):
            raise FileNotFoundError(f"InstanceDiffusion weights '{weights}' not found in {FOLDER} folders: "
                                    f"{folder_paths.get_folder_paths(FOLDER)}")
        paths = files_to_load(path)
        addons = load_instancediffusion(paths if len(paths) > 1 else paths[0])
        load_device = comfy.model_management.get_torch_device()
        storage, compute = resolve_dtype(dtype, load_device)
        addons = addons.to(storage).eval()
        addons.requires_grad_(False)
        logging.info("InstanceDiffusion weights %s: %s (computing in %s)", weights, addons.summary(), compute)
        patcher = host_ops.weights_patcher(addons, compute, load_device=load_device,
                                           offload_device=comfy.model_management.unet_offload_device())
        return (patcher,)


NODES = {"LoadInstanceDiffusion": (LoadInstanceDiffusion, "Load InstanceDiffusion")}
