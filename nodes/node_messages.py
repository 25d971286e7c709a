"""Warnings that reach the user without extra wiring: on the node in the browser and in ComfyUI's console.

A node that has something to warn about (a box clipped to the canvas, a key ignored in a layout file, a layout
check's findings) returns ``result_with_warnings(result, warnings, node_title)`` instead of its plain result
tuple. Every warning is logged (logger ``comfyui-instdiff``, prefixed with the node title) and sent as the node's
UI output ``instdiff_warnings``, which ``web/js/node_warnings.js`` shows on the node. The key is sent on every run,
as an empty list when there is nothing to say, so the frontend clears the last run's warnings; ComfyUI keeps UI
outputs in its history and re-sends them when the node's output comes from the cache.

The returned ``{"ui": ..., "result": ...}`` dict is ComfyUI's own node-return format (every release: the executor
takes ``result`` as the outputs and sends ``ui`` as the ``executed`` message). Python code calling a node function
directly takes the outputs with ``node_outputs``.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

WARNINGS_KEY = "instdiff_warnings"     # read by web/js/node_warnings.js and web/js/instance_layout_editor.js
LOG = logging.getLogger("comfyui-instdiff")


def log_warnings(warnings: Iterable[str], node_title: str) -> list[str]:
    """Log each warning (non-empty text) to the console as ``<node_title>: <warning>``; the warnings as a list."""
    shown = [str(w) for w in warnings if w is not None and str(w).strip()]
    for w in shown:
        LOG.warning("%s: %s", node_title, w)
    return shown


def result_with_warnings(result: tuple, warnings: Iterable[str], node_title: str,
                         ui: dict[str, list] | None = None) -> dict[str, Any]:
    """The node return ``{"ui": {"instdiff_warnings": [...], **ui}, "result": result}``, the warnings logged.

    ``ui`` adds other UI outputs of the node; ComfyUI requires every UI value to be a list."""
    if not isinstance(result, tuple):
        raise TypeError(f"{node_title}: result_with_warnings needs the node's output tuple, got "
                        f"{type(result).__name__}")
    extra = dict(ui or {})
    for key, value in extra.items():
        if not isinstance(value, list):
            raise TypeError(f"{node_title}: UI output {key!r} must be a list (ComfyUI concatenates UI lists), got "
                            f"{type(value).__name__}")
    return {"ui": {WARNINGS_KEY: log_warnings(warnings, node_title), **extra}, "result": result}


def node_outputs(returned: Any) -> tuple:
    """The output tuple of a node function's return value, whether a plain tuple or a ``{"result": ...}`` dict."""
    if isinstance(returned, dict):
        return tuple(returned["result"])
    return tuple(returned)


def node_warnings(returned: Any) -> list[str]:
    """The warnings a node function returned for display (``[]`` for a plain tuple)."""
    if isinstance(returned, dict):
        return list((returned.get("ui") or {}).get(WARNINGS_KEY, []))
    return []
