"""pytest plugin (``-p instdiff_testkit.pytest_plugin`` in pyproject): the repo root is a ComfyUI custom-node package (it has __init__.py), not a test package.

Without this, pytest collects the root as a Package and imports its __init__.py (which imports ComfyUI) before
any test, so even the pure-core tests would need a ComfyUI host.
"""
import os

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collect_directory(path, parent):
    if os.path.realpath(str(path)) == os.path.realpath(_ROOT):
        return pytest.Dir.from_parent(parent, path=path)
    return None
