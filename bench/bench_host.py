"""Shared setup of the host benchmarks: import ComfyUI from COMFYUI_PATH and load this pack as ComfyUI does."""
from __future__ import annotations

import logging
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (os.path.join(HERE, "..", "tests"), os.path.join(HERE, "..", "tests", "host")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import comfy_harness  # noqa: E402


def load_pack():
    """``(host info, pack module)``, or ``(None, reason)`` when there is no host or the pack fails to import."""
    root, reason = comfy_harness.find_comfyui_root()
    if root is None:
        return None, f"skipped: {reason}"
    logging.disable(logging.WARNING)           # ComfyUI's optional-node import warnings
    host = comfy_harness.import_host(root)
    tmp = tempfile.mkdtemp(prefix="instdiff_bench_")
    comfy_harness.set_io_directories(os.path.join(tmp, "io"))
    pack, error = comfy_harness.loaded_pack_or_error(comfy_harness.load_extra_nodes(os.path.join(tmp, "custom_nodes")))
    return (host, pack) if pack is not None else (None, error)
