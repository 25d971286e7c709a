"""Test-wide setup: tests/ holds shared helper modules (it is not a package), so put it on sys.path.

The repo root is deliberately NOT put on sys.path: our `nodes/` package would shadow ComfyUI's `nodes` module.
`instancediffusion_core` is importable through `pip install -e .`; the ComfyUI adapters are imported the way
ComfyUI imports them (as a custom-node package), see tests/host/.
"""
import os
import sys

_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
