"""The Instance Layout Editor node without a ComfyUI host, and the editor's JSON read by the Python loader.

The node module is imported as part of a stand-in package (the repo root under another name), so its relative
imports resolve while the pack's root ``__init__`` (which needs ComfyUI) is never run. ComfyUI's
``folder_paths`` is replaced by a small fake where the node saves the background picture. The cross-language
tests run the browser modules (web/js/layout_editor) with Node.js and feed their output to the Python loader.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from instdiff_testkit.pack_modules import node_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "instdiff_pack_under_test"


@pytest.fixture(scope="module")
def mod():
    return node_module("layout_editor", PACKAGE)


@pytest.fixture
def fake_folder_paths(tmp_path, monkeypatch):
    """ComfyUI's folder_paths, reduced to what saving a preview needs."""
    fake = types.ModuleType("folder_paths")
    temp = tmp_path / "temp"
    temp.mkdir()
    fake.get_temp_directory = lambda: str(temp)

    def get_save_image_path(prefix, output_dir, width=0, height=0):
        return output_dir, prefix, 1, "", prefix

    fake.get_save_image_path = get_save_image_path
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    return temp


def _layout_text(**overrides):
    data = {"caption": "a cat and a dog", "width": 512, "height": 384, "annos": [
        {"caption": "a cat", "bbox": [10, 20, 100, 80]},
        {"caption": "a dog", "point": [300, 200]},
        {"caption": "a leash", "scribble": [[10, 10], [60, 40], [120, 30]]},
        {"caption": "a ball", "mask": [[200, 200, 260, 200, 260, 250, 200, 250]]},
    ]}
    data.update(overrides)
    return json.dumps(data)


# --------------------------------------------------------------------------------------------- node contract

def test_node_registration_and_tooltips(mod):
    cls, title = mod.NODES["InstanceLayoutEditor"]
    assert title == "Instance Layout Editor"
    assert cls.CATEGORY == "instance_diffusion/layout"
    assert cls.RETURN_TYPES == ("INSTANCE_LAYOUT", "STRING")
    assert cls.OUTPUT_NODE is True       # so ComfyUI re-sends its UI data (the background) on cached runs
    assert cls.DESCRIPTION and len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    spec = cls.INPUT_TYPES()
    inputs = {**spec["required"], **spec["optional"]}
    assert list(spec["required"]) == ["width", "height", "layout_json"]   # the editor looks them up by name
    assert spec["optional"]["background"][0] == "IMAGE"
    assert spec["required"]["layout_json"][1]["multiline"] is True
    for name, (_, options) in inputs.items():
        assert options.get("tooltip"), f"input {name} has no tooltip"
    for name in ("width", "height"):
        assert "replaces" in spec["required"][name][1]["tooltip"]       # says the widgets win over the JSON


def test_build_returns_the_layout_caption_and_ui(mod):
    layout, caption = None, None
    out = mod.InstanceLayoutEditor().build(512, 384, _layout_text())
    layout, caption = out["result"]
    assert caption == "a cat and a dog" and layout.caption == caption
    assert (layout.width, layout.height) == (512, 384)
    a, b, c, d = layout.instances
    assert a.bbox == (10.0, 20.0, 110.0, 100.0)          # official [x, y, w, h] -> corners
    assert b.point == (300.0, 200.0)
    assert c.scribble[0] == (10.0, 10.0) and len(c.scribble) == 3
    assert d.mask.shape == (384, 512) and d.mask[225, 230] and not d.mask[100, 100]
    ui = out["ui"]
    assert ui[mod.BACKGROUND_KEY] == [] and ui[mod.WARNINGS_KEY] == []
    official = ui[mod.LAYOUT_KEY][0]
    assert official["annos"][0]["bbox"] == [10, 20, 100, 80] and official["annos"][1]["point"] == [300, 200]
    json.dumps(ui)                                         # UI data must be JSON for the websocket and /history


def test_widgets_replace_the_json_canvas_size(mod):
    loaded = mod.editor_layout(_layout_text(width=64, height=64), 512, 384)
    assert (loaded.layout.width, loaded.layout.height) == (512, 384)
    with pytest.raises(mod.LayoutError, match=r"layout_json.*annos\[1\].*point.*outside the 256x256 canvas"):
        mod.editor_layout(_layout_text(), 256, 256)       # the point (300, 200) is off a 256 canvas


def test_empty_text_is_an_empty_layout_of_the_canvas(mod):
    out = mod.InstanceLayoutEditor().build(640, 320, "   ")
    layout, caption = out["result"]
    assert (layout.width, layout.height, len(layout.instances), caption) == (640, 320, 0, "")


def test_bad_json_names_line_and_column(mod):
    text = '{\n "caption": "x",\n "annos": [\n  {"caption": "a" "bbox": [1, 2, 3, 4]}\n ]\n}'
    with pytest.raises(mod.LayoutError, match=r"layout_json.*line 4, column"):
        mod.editor_layout(text, 512, 512)


def test_instance_errors_come_from_the_shared_loader(mod):
    text = _layout_text(annos=[{"caption": "", "bbox": [1, 2, 30, 40]}])
    with pytest.raises(mod.LayoutError, match=r"Instance Layout Editor \(layout_json\).*annos\[0\] caption"):
        mod.editor_layout(text, 512, 512)
    with pytest.raises(mod.LayoutError, match=r"height is 0"):
        mod.editor_layout(_layout_text(), 512, 0)


def test_background_is_saved_like_a_preview(mod, fake_folder_paths):
    image = torch.zeros(2, 24, 32, 3)
    image[0, :, :16] = torch.tensor([1.0, 0.5, 0.0])
    out = mod.InstanceLayoutEditor().build(32, 24, "", background=image)
    (ref,) = out["ui"][mod.BACKGROUND_KEY]
    assert ref["type"] == "temp" and ref["subfolder"] == ""
    saved = np.asarray(Image.open(fake_folder_paths / ref["filename"]))
    assert saved.shape == (24, 32, 3)                      # only the first picture of the batch
    assert tuple(saved[5, 3]) == (255, 127, 0) and tuple(saved[5, 20]) == (0, 0, 0)


# --------------------------------------------------------------------------------------------- JS <-> Python

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js is not installed: the browser modules cannot run")


def _run_js(body: str) -> str:
    """Run an ES module body with the web/js modules importable as `web/...`; returns stdout."""
    web = "file://" + os.path.join(REPO, "web", "js", "layout_editor") + "/"
    script = body.replace("web/", web)
    result = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@needs_node
def test_brushed_mask_rle_from_the_editor_decodes_in_python(mod):
    rle_mod = importlib.import_module(f"{PACKAGE}.instancediffusion_core.layout.rle")
    out = _run_js("""
        import { emptyMask, paintStroke, encodeRLE } from "web/mask_bitmap.js";
        const w = 97, h = 61;
        const bits = paintStroke(emptyMask(w, h), w, h, 10, 12, 80, 50, 7);
        paintStroke(bits, w, h, 40, 0, 40, 61, 3, 0);
        console.log(JSON.stringify({ rle: encodeRLE(bits, w, h), bits: Array.from(bits) }));
    """)
    data = json.loads(out)
    expected = np.array(data["bits"], dtype=bool).reshape(61, 97)
    assert expected.sum() > 500 and not expected[:, 40].any()
    decoded = rle_mod.decode_rle(data["rle"])
    assert np.array_equal(decoded, expected)
    assert rle_mod.encode_rle(expected)["counts"] == data["rle"]["counts"]   # same string both ways


@needs_node
def test_python_rle_decodes_in_the_editor(mod):
    rle_mod = importlib.import_module(f"{PACKAGE}.instancediffusion_core.layout.rle")
    yy, xx = np.mgrid[:50, :70]
    mask = ((xx - 30) ** 2 + (yy - 20) ** 2 < 15 ** 2) | ((xx > 55) & (yy > 35))
    rle = rle_mod.encode_rle(mask)
    out = _run_js(f"""
        import {{ decodeRLE }} from "web/mask_bitmap.js";
        console.log(JSON.stringify(Array.from(decodeRLE({json.dumps(rle)}, 70, 50))));
    """)
    assert np.array_equal(np.array(json.loads(out), dtype=bool).reshape(50, 70), mask)


@needs_node
def test_editor_document_loads_with_the_drawn_geometry(mod):
    """Build a layout the way the editor's tools do and serialise it; the node reads back the same geometry."""
    out = _run_js("""
        import { emptyLayout, serializeLayout, setBox, setMaskBitmap } from "web/layout_doc.js";
        import { normalizeBox, resamplePolyline, roundPoints, clampPoint } from "web/geometry.js";
        import { emptyMask, paintStroke } from "web/mask_bitmap.js";
        const doc = emptyLayout(320, 240, "a park");
        const a = { caption: "a bench" }; setBox(a, normalizeBox(200.4, 180.2, 40.6, 90, 320, 240));
        const b = { caption: "a bird", point: clampPoint(400, 12.4, 320, 240) };
        const c = { caption: "a path", scribble: roundPoints(resamplePolyline([[5, 230], [100, 150], [310, 140]]), 1) };
        const d = { caption: "a pond" };
        setMaskBitmap(d, paintStroke(emptyMask(320, 240), 320, 240, 250, 60, 290, 60, 15), 320, 240);
        doc.annos.push(a, b, c, d);
        console.log(serializeLayout(doc));
    """)
    layout, caption = mod.InstanceLayoutEditor().build(320, 240, out)["result"]
    assert caption == "a park"
    bench, bird, path, pond = layout.instances
    assert bench.bbox == (41.0, 90.0, 200.0, 180.0)
    assert bird.point == (320.0, 12.0)                      # clamped onto the canvas edge
    assert len(path.scribble) == 20 and path.scribble[0] == (5.0, 230.0) and path.scribble[-1] == (310.0, 140.0)
    ys, xs = np.nonzero(pond.mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (235, 304, 45, 74)
