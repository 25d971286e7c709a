"""One ComfyUI host in this process for scripts and benchmarks: import it, send its folders to a temporary place,
and load this pack the way ComfyUI does (tests use the same steps through their conftest fixtures)."""
from __future__ import annotations

import logging
import os
import tempfile

from . import comfy_harness


def load_pack(quiet: bool = True, placeholders: dict[str, list[str]] | None = None):
    """``(host info, pack module)``, or ``(None, reason)`` when there is no host or the pack fails to import.

    ``placeholders`` ``{model folder: [file names]}`` creates empty files there, so loaders list them (the workflow
    builder needs file names that exist, never their content)."""
    root, reason = comfy_harness.find_comfyui_root()
    if root is None:
        return None, f"skipped: {reason}"
    if quiet:
        logging.disable(logging.WARNING)           # ComfyUI's optional-node import warnings
    host = comfy_harness.import_host(root)
    tmp = tempfile.mkdtemp(prefix="instdiff_host_")
    dirs = comfy_harness.set_io_directories(os.path.join(tmp, "io"))
    models = comfy_harness.register_model_folders(os.path.join(tmp, "models"))
    for folder, names in (placeholders or {}).items():
        for name in names:
            open(os.path.join(models[folder], name), "wb").close()
    pack, error = comfy_harness.loaded_pack_or_error(comfy_harness.load_extra_nodes(os.path.join(tmp, "custom_nodes")))
    if pack is None:
        return None, error
    return {**host, "dirs": dirs, "models": models, "base": tmp}, pack
