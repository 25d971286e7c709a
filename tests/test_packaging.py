"""What the Comfy Registry and a new user see: licence, icon, ignore list, workflow thumbnails."""
import glob
import os
import tomllib

from PIL import Image
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_license_file_matches_the_declared_licence():
    declared = _pyproject()["project"]["license"]["text"]
    with open(os.path.join(REPO, "LICENSE"), encoding="utf-8") as f:
        text = f.read()
    assert declared == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_registry_icon_points_at_a_file_of_the_repo():
    icon = _pyproject()["tool"]["comfy"]["Icon"]
    prefix = "https://raw.githubusercontent.com/comfyui-instdiff/comfyui-instdiff/main/"
    assert icon.startswith(prefix), icon
    with Image.open(os.path.join(REPO, icon[len(prefix):])) as im:
        assert im.width == im.height >= 128


def _ignored(patterns, path):
    return any(path == p.rstrip("/") or path.startswith(p) for p in patterns)


def test_comfyignore_keeps_the_runtime_and_drops_the_development_files():
    with open(os.path.join(REPO, ".comfyignore"), encoding="utf-8") as f:
        patterns = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    for dev in ("tests/", "instdiff_testkit/", "bench/", "scripts/", ".ci/", "node_modules/"):
        assert _ignored(patterns, dev), f"{dev} would be shipped"
    for runtime in ("__init__.py", "nodes/", "instancediffusion_core/", "web/", "workflows/", "pyproject.toml",
                    "README.md", "LICENSE"):
        assert not _ignored(patterns, runtime), f"{runtime} would be left out of the pack"


def test_every_workflow_has_a_thumbnail_that_shows_something():
    workflows = sorted(glob.glob(os.path.join(REPO, "workflows", "*.json")))
    assert workflows
    for path in workflows:
        thumb = path[:-len(".json")] + ".jpg"
        assert os.path.isfile(thumb), f"{os.path.basename(path)} has no thumbnail {os.path.basename(thumb)}"
        with Image.open(thumb) as im:
            pixels = np.asarray(im.convert("RGB"), dtype=np.float32)
        assert im.width >= 256 and pixels.std() > 5, f"{os.path.basename(thumb)} looks blank"
