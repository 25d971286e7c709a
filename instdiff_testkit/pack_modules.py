"""Import one of the pack's node modules (``nodes/<name>.py``) without a ComfyUI host.

The pack's root ``__init__`` and ``nodes/__init__`` import ComfyUI; a node module itself needs only its relative
imports. So the repo root is registered under a stand-in package name (with an empty ``nodes`` subpackage) and the
module is imported from there; ``__init__`` files are never run. One stand-in package per test module keeps their
module objects apart (a test may monkeypatch a module's globals)."""
from __future__ import annotations

import importlib
import os
import sys
import types

REPO_ROOT = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def node_module(name: str, package: str = "_instdiff_pack_under_test"):
    """``nodes/<name>.py`` of this repo, imported as ``<package>.nodes.<name>``."""
    if package not in sys.modules:
        root = types.ModuleType(package)
        root.__path__ = [REPO_ROOT]
        sys.modules[package] = root
        sub = types.ModuleType(f"{package}.nodes")
        sub.__path__ = [os.path.join(REPO_ROOT, "nodes")]
        sys.modules[f"{package}.nodes"] = sub
    return importlib.import_module(f"{package}.nodes.{name}")
