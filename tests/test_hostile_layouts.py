"""Layouts from careless and hostile input (issue #16): the nodes never open user text as a path outside ComfyUI's
input folder, canvases are capped where a layout enters, and bad numbers become the pack's own errors.

The node modules are imported inside a stand-in package (the pack's root needs ComfyUI); ComfyUI's
``folder_paths`` is a small stand-in with the host's resolving rules (``annotated_filepath``,
``get_annotated_filepath``, ``exists_annotated_filepath``); tests/host/test_hostile_nodes.py runs the same inputs
through the real host.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import tracemalloc
import types

import numpy as np
import pytest

from instdiff_testkit.pack_modules import node_module as pack_module
from instancediffusion_core.layout.json_io import load_layout
from instancediffusion_core.layout.preview import draw_layout
from instancediffusion_core.layout.rle import decode_rle
from instancediffusion_core.layout.types import Instance, Layout, LayoutError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "_instdiff_pack_for_hostile_tests"
SECRET_TEXT = "root:x:0:0:do-not-echo-this-line"
MB = 1 << 20


def _fake_folder_paths(input_dir: str, output_dir: str) -> types.ModuleType:
    fp = types.ModuleType("folder_paths")
    fp.get_input_directory = lambda: input_dir
    fp.get_output_directory = lambda: output_dir
    fp.get_temp_directory = lambda: output_dir

    def annotated_filepath(name):
        for tag, base in (("[output]", output_dir), ("[input]", input_dir), ("[temp]", output_dir)):
            if name.endswith(tag):
                return name[:-len(tag) - 1], base
        return name, None

    def get_annotated_filepath(name, default_dir=None):
        name, base = annotated_filepath(name)
        return os.path.join(base or default_dir or input_dir, name)

    fp.annotated_filepath = annotated_filepath
    fp.get_annotated_filepath = get_annotated_filepath
    fp.exists_annotated_filepath = lambda name: os.path.exists(get_annotated_filepath(name))
    return fp


def node_module(name: str, monkeypatch):
    if "folder_paths" not in sys.modules:
        monkeypatch.setitem(sys.modules, "folder_paths", _fake_folder_paths("/nonexistent", "/nonexistent"))
    return pack_module(name, PACKAGE)


@pytest.fixture
def dirs(tmp_path):
    d = {k: tmp_path / k for k in ("input", "output", "elsewhere")}
    for p in d.values():
        p.mkdir()
    (d["input"] / "layouts").mkdir()
    return d


@pytest.fixture
def layout_file(dirs, monkeypatch):
    mod = node_module("layout_file", monkeypatch)
    monkeypatch.setattr(mod, "folder_paths", _fake_folder_paths(str(dirs["input"]), str(dirs["output"])))
    return mod


def doc(**over):
    d = {"caption": "c", "width": 256, "height": 128, "annos": [{"caption": "a cat", "bbox": [10, 10, 50, 50]}]}
    d.update(over)
    return d


# ------------------------------------------------------------------------------------------------ 1. file access

def test_load_layout_text_never_reads_files_outside_the_input_folder(layout_file, dirs):
    outside = dirs["elsewhere"] / "secret.json"
    outside.write_text(json.dumps(doc(caption=SECRET_TEXT)))
    not_json = dirs["elsewhere"] / "passwd"
    not_json.write_text(SECRET_TEXT + "\n")
    node = layout_file.LoadLayout()
    messages = []
    for text in (str(outside), str(not_json), str(dirs["elsewhere"] / "missing.json"), "../elsewhere/secret.json",
                 "/etc/passwd", str(dirs["input"]), "secret.json [output]"):
        with pytest.raises(ValueError, match="no such layout file") as e:
            node.load("(use json_text)", text, "auto", False)
        assert SECRET_TEXT not in str(e.value) and type(e.value).__name__ == "LayoutError"
        messages.append(re.sub(r"layout file .* in ComfyUI's", "layout file <name> in ComfyUI's", str(e.value)))
    assert len(set(messages)) == 1, messages                      # one error: no file-existence oracle


def test_a_link_in_the_input_folder_pointing_out_is_refused(layout_file, dirs):
    outside = dirs["elsewhere"] / "secret.json"
    outside.write_text(json.dumps(doc(caption=SECRET_TEXT)))
    os.symlink(outside, dirs["input"] / "link.json")
    with pytest.raises(ValueError, match="no such layout file") as e:
        layout_file.LoadLayout().load("(use json_text)", "link.json", "auto", False)
    assert SECRET_TEXT not in str(e.value)


def test_names_inside_the_input_folder_still_load(layout_file, dirs):
    (dirs["input"] / "layouts" / "scene.json").write_text(json.dumps(doc(caption="from input")))
    node = layout_file.LoadLayout()
    for file, text in (("(use json_text)", "layouts/scene.json"), ("layouts/scene.json", ""),
                       ("(use json_text)", "  layouts/scene.json [input] ")):
        layout, caption, report = node.load(file, text, "auto", False)["result"]
        assert caption == "from input" and len(layout.instances) == 1
    layout, caption, _ = node.load("(use json_text)", json.dumps(doc(caption="pasted")), "auto", False)["result"]
    assert caption == "pasted"
    assert node.IS_CHANGED("(use json_text)", "layouts/scene.json", "auto", False) != \
        node.IS_CHANGED("(use json_text)", "layouts/other.json", "auto", False)


def test_a_huge_file_in_the_input_folder_is_not_read_whole(layout_file, dirs):
    big = dirs["input"] / "big.json"
    with open(big, "wb") as f:
        f.truncate(64 * MB)                                               # sparse: no disk used
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"larger than 16,777,216 bytes \(MAX_LAYOUT_BYTES"):
            layout_file.LoadLayout().load("(use json_text)", "big.json", "auto", False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * MB


def test_the_editor_takes_layout_json_only(dirs, monkeypatch):
    editor = node_module("layout_editor", monkeypatch)
    outside = dirs["elsewhere"] / "secret.json"
    outside.write_text(json.dumps(doc(caption=SECRET_TEXT)))
    for text in (str(outside), "/etc/passwd", "layouts/scene.json", "None"):
        with pytest.raises(ValueError, match=r"layout_json\): not layout JSON") as e:
            editor.InstanceLayoutEditor().build(256, 128, text)
        assert SECRET_TEXT not in str(e.value)
    ui = editor.InstanceLayoutEditor().build(256, 128, json.dumps(doc()))["ui"]
    assert ui[editor.LAYOUT_KEY][0]["annos"][0]["caption"] == "a cat"


# ------------------------------------------------------------------------------------------------ 7. canvas caps

def test_a_huge_canvas_is_refused_before_any_mask_is_decoded():
    side = 20000
    data = doc(width=side, height=side,
               annos=[{"caption": "a lake", "mask": {"size": [side, side], "counts": [0, side * side]}}])
    tracemalloc.start()
    try:
        with pytest.raises(LayoutError, match=r"'width' is 20000 px; the canvas is at most 4096 px per side "
                                              r"\(MAX_CANVAS"):
            load_layout(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MB


def test_layouts_and_previews_are_capped_where_they_enter(monkeypatch):
    with pytest.raises(LayoutError, match=r"layout width: 16384 px is larger than 4096 px"):
        Layout(16384, 512)
    layout = Layout(512, 512, "", (Instance("a cat", bbox=(10, 10, 100, 100)),))
    with pytest.raises(LayoutError, match=r"preview size: 4100x4100 px is larger than 4096"):
        draw_layout(layout, size=(4100, 4100))
    with pytest.raises(LayoutError, match=r"preview image: 4200x16 px"):
        draw_layout(layout, image=np.zeros((16, 4200, 3), np.uint8))
    editor = node_module("layout_editor", monkeypatch)
    assert editor.CANVAS["max"] == 4096
    with pytest.raises(ValueError, match="at most 4096 px"):
        editor.editor_layout("", 8192, 512)
    nodes = node_module("layout_nodes", monkeypatch)
    spec = nodes.InstanceLayoutNode.INPUT_TYPES()["required"]
    assert spec["width"][1]["max"] == spec["height"][1]["max"] == 4096
    assert nodes.InstanceBox.INPUT_TYPES()["required"]["x"][1]["max"] == 4096
    planner = node_module("planner", monkeypatch)
    assert planner.LayoutPlanner.INPUT_TYPES()["required"]["width"][1]["max"] == 4096


# ------------------------------------------------------------------------------------------------ 8. raw exceptions

def test_a_box_half_a_pixel_high_loads_and_previews():
    loaded = load_layout(doc(annos=[{"caption": "a wire", "bbox": [10, 20, 100, 0.5]}]))
    img = draw_layout(loaded.layout)
    assert img.size == (256, 128)
    draw_layout(loaded.layout, size=(64, 32))                               # scaled down: thinner still


@pytest.mark.parametrize("number", ["1" * 400, "9" * 5000, "-" + "1" * 400])
def test_huge_integers_name_their_field(number):
    text = '{"caption": "c", "width": 256, "height": 128, "annos": [{"caption": "a cat", "bbox": [' + number + \
        ', 0, 10, 10]}]}'
    with pytest.raises(LayoutError, match=r"annos\[0\] bbox.*not a finite number") as e:
        load_layout(text)
    assert e.value.index == 0 and e.value.field == "bbox"
    with pytest.raises(LayoutError, match=r"'width' is"):
        load_layout('{"width": ' + number + ', "height": 10, "annos": []}')
    huge = -(10 ** (len(number) - 1)) if number.startswith("-") else 10 ** len(number)
    with pytest.raises(LayoutError, match=r"annos\[0\] point"):
        load_layout({**doc(), "annos": [{"caption": "x", "point": [huge, 1]}]})


def test_json_nested_too_deep_is_a_layout_error():
    for text in ("[" * 100_000, '{"annos": ' + "[" * 5000 + "]" * 5000 + "}"):
        with pytest.raises(LayoutError, match="nested too deeply"):
            load_layout(text)


def test_a_run_length_of_many_characters_is_refused_at_once():
    """One number of n continuation characters cost O(n^2) big-integer work; no run needs more than 8."""
    counts = "o" * 50_000 + "0"
    with pytest.raises(ValueError, match="run length of more than 8 characters"):
        decode_rle({"size": [64, 64], "counts": counts})
    with pytest.raises(LayoutError, match=r"annos\[0\] mask.*more than 8 characters"):
        load_layout(doc(width=64, height=64, annos=[{"caption": "x", "mask": {"size": [64, 64], "counts": counts}}]))


def test_polygons_far_outside_any_canvas_are_errors():
    with pytest.raises(LayoutError, match=r"annos\[0\] mask.*polygon 0"):
        load_layout(doc(annos=[{"caption": "x", "mask": [[0, 0, 1e300, 0, 0, 10]]}]))


def test_layout_text_and_files_are_size_capped(tmp_path):
    with pytest.raises(LayoutError, match="MAX_LAYOUT_BYTES"):
        load_layout("{" + " " * (17 * MB) + "}")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (17 * MB))
    with pytest.raises(LayoutError, match="MAX_LAYOUT_BYTES"):
        load_layout(str(big))


# ------------------------------------------------------------------------------------------------ 9./10. numbers, prompts

@pytest.mark.parametrize("points", ids=["nan", "inf", "1e999", "letter", "json-NaN"], argvalues=["10,20 nan,nan 30,40", "10,20 30,40 inf,5", "10,20 1e999,40", "10,20 3O,40",
                                    "[[10, 20], [NaN, 30], [30, 40]]"])
def test_scribble_text_with_non_finite_numbers_names_the_field(monkeypatch, points):
    nodes = node_module("layout_nodes", monkeypatch)
    (layout,) = nodes.InstanceLayoutNode().make(128, 128)
    with pytest.raises(ValueError, match=r"instance 0 scribble: .*(not a finite number|not finite)"):
        nodes.InstanceScribble().add(layout, "a snake", points)
    with pytest.raises(ValueError, match=r"instance 0 box"):
        nodes.InstanceAny().add(layout, "a kite", box="10,20,30,40,nan")


def test_scribbles_with_nan_in_layout_json_name_the_instance():
    with pytest.raises(LayoutError, match=r"annos\[1\] scribble: \[nan, 3\] .*nan is not a finite number") as e:
        load_layout('{"width": 64, "height": 64, "annos": [{"caption": "a", "point": [1, 1]}, '
                    '{"caption": "b", "scribble": [[1, 2], [NaN, 3]]}]}')
    assert (e.value.index, e.value.field) == (1, "scribble")


def test_a_null_prompt_is_not_the_caption_none(monkeypatch):
    """ComfyUI converts a STRING input with str(): an API prompt's null arrives as 'None'."""
    nodes = node_module("layout_nodes", monkeypatch)
    (layout,) = nodes.InstanceLayoutNode().make(128, 128)
    for prompt in (None, "None", " None "):
        with pytest.raises(ValueError, match="instance 0: prompt is .*unset value"):
            nodes.InstanceBox().add(layout, prompt, 1, 1, 10, 10)
    (ok,) = nodes.InstanceBox().add(layout, "None of the above", 1, 1, 10, 10)["result"]
    assert ok.instances[0].caption == "None of the above"


def test_validation_helpers_name_node_field_and_value(monkeypatch):
    validation = node_module("validation", monkeypatch)
    for bad in (math.nan, math.inf, -math.inf, "0.5", True, None):
        with pytest.raises(ValueError, match=r"Apply UniFusion: strength is .*") as e:
            validation.finite("strength", bad, "Apply UniFusion")
        assert "strength" in str(e.value)
    with pytest.raises(ValueError, match="NaN and infinity are not allowed"):
        validation.finite("end", float("nan"), "InstanceDiffusion KSampler", minimum=0.0, maximum=1.0)
    with pytest.raises(ValueError, match="end is 1.5; it must be between 0 and 1"):
        validation.finite("end", 1.5, "X", minimum=0.0, maximum=1.0)
    assert validation.finite("strength", np.float32(0.25), "X") == 0.25
    assert validation.finite("steps", 10 ** 400 if False else 7, "X") == 7.0
    with pytest.raises(ValueError, match="description is 'None'"):
        validation.text("description", "None", "Layout Planner")
    assert validation.text("prompt", "a cat", "X") == "a cat"


def test_the_planner_node_refuses_non_finite_numbers_and_null_text(monkeypatch):
    planner = node_module("planner", monkeypatch)
    base = dict(description="a cat", width=512, height=512, max_instances=3, base_url="http://127.0.0.1:9/v1",
                model="m", api_key_env="INSTDIFF_NO_KEY", timeout=5.0, seed=1)
    for field, value in (("timeout", float("nan")), ("timeout", float("inf")), ("temperature", float("nan")),
                         ("description", "None")):
        with pytest.raises(ValueError, match=rf"Layout Planner: {field} is"):
            planner.LayoutPlanner().plan(**{**base, field: value, "cache_to_disk": False})


def test_the_preview_cli_reports_hostile_files_without_a_traceback(tmp_path, capsys):
    from instancediffusion_core.layout.preview import cli_main

    files = {"deep.json": "[" * 100_000,
             "digits.json": '{"width": ' + "9" * 5000 + ', "height": 5, "annos": []}',
             "thin.json": json.dumps(doc(annos=[{"caption": "a wire", "bbox": [1, 1, 50, 0.5]}]))}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    out = str(tmp_path / "out.png")
    for name, message in (("deep.json", "nested too deeply"), ("digits.json", "'width' is inf")):
        assert cli_main([str(tmp_path / name), out]) == 2
        assert message in capsys.readouterr().err
    assert cli_main([str(tmp_path / "thin.json"), out]) == 0
    capsys.readouterr()
    assert cli_main([str(tmp_path / "thin.json"), out, "--size", "5000x5000"]) == 2
    assert "MAX_CANVAS" in capsys.readouterr().err
    (tmp_path / "folder.png").mkdir()
    assert cli_main([str(tmp_path / "thin.json"), str(tmp_path / "folder.png")]) == 2
    assert "error:" in capsys.readouterr().err
