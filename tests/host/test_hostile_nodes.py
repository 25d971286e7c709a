"""Hostile and careless node inputs through real ComfyUI (issue #16): API prompts run by ComfyUI's own validation
and executor, with the harness's temporary input/output folders."""
from __future__ import annotations

import json
import math
import os

import pytest

from instdiff_testkit import comfy_harness
from instdiff_testkit.chat_server import ChatServer, Reply

SECRET_TEXT = "do-not-echo-this-line"


def layout_doc(**over):
    d = {"caption": "c", "width": 256, "height": 128, "annos": [{"caption": "a cat", "bbox": [10, 10, 50, 50]}]}
    d.update(over)
    return d


def preview_graph(source: dict) -> dict:
    """``source`` (node id "1", a node with a layout output 0) -> Layout Preview -> Preview Image."""
    return {"1": source,
            "2": {"class_type": "InstanceLayoutPreview", "inputs": {"layout": ["1", 0]}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


def load_layout_node(text: str, file: str = "(use json_text)") -> dict:
    return {"class_type": "LoadInstanceLayout",
            "inputs": {"file": file, "json_text": text, "bbox_format": "auto", "truncate": False}}


@pytest.fixture
def outside(tmp_path):
    path = tmp_path / "outside_layout.json"
    path.write_text(json.dumps(layout_doc(caption=SECRET_TEXT)))
    return path


def test_load_layout_text_is_never_a_path_outside_input(run_prompt, outside):
    messages = set()
    for text in (str(outside), str(outside.with_name("missing.json")), "/etc/passwd", "../" * 8 + "etc/passwd"):
        with pytest.raises(comfy_harness.PromptError, match="no such layout file") as e:
            run_prompt(preview_graph(load_layout_node(text)))
        assert SECRET_TEXT not in str(e.value)
        line = str(e.value).splitlines()[0]
        messages.add(line.split("no such layout file", 1)[0] + line.split(" in ComfyUI's input folder", 1)[-1])
    assert len(messages) == 1, messages                          # one message: no file-existence oracle


def test_load_layout_names_in_the_input_folder_still_work(run_prompt):
    import folder_paths

    folder = os.path.join(folder_paths.get_input_directory(), "layouts")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "hostile_test_scene.json"), "w") as f:
        json.dump(layout_doc(), f)
    result = run_prompt(preview_graph(load_layout_node("layouts/hostile_test_scene.json")))
    assert result["images"]["3"]
    result = run_prompt(preview_graph(load_layout_node("", file="layouts/hostile_test_scene.json")))
    assert result["images"]["3"]


def test_the_editor_never_echoes_a_file(run_prompt, outside):
    graph = {"1": {"class_type": "InstanceLayoutEditor",
                   "inputs": {"width": 256, "height": 128, "layout_json": str(outside)}}}
    with pytest.raises(comfy_harness.PromptError, match="not layout JSON") as e:
        run_prompt(graph)
    assert SECRET_TEXT not in str(e.value) and SECRET_TEXT not in json.dumps(getattr(e.value, "details", None),
                                                                                default=str)


def test_a_null_prompt_in_an_api_prompt_is_refused(run_prompt):
    graph = preview_graph({"class_type": "InstanceBox",
                           "inputs": {"layout": ["0", 0], "prompt": None, "x": 1, "y": 1, "width": 10,
                                      "height": 10}})
    graph["0"] = {"class_type": "InstanceLayout", "inputs": {"width": 64, "height": 64}}
    with pytest.raises(comfy_harness.PromptError, match="prompt is 'None'.*unset value"):
        run_prompt(graph)


def test_canvas_widgets_stop_at_the_cap(run_prompt):
    graph = preview_graph({"class_type": "InstanceLayout", "inputs": {"width": 8192, "height": 512}})
    with pytest.raises(comfy_harness.PromptError, match="bigger than max of 4096"):
        run_prompt(graph)


def test_a_half_pixel_box_loads_and_previews(run_prompt):
    text = json.dumps(layout_doc(annos=[{"caption": "a wire", "bbox": [10, 20, 100, 0.5]}]))
    assert run_prompt(preview_graph(load_layout_node(text)))["images"]["3"]


@pytest.mark.parametrize("field", ["timeout", "temperature"])
def test_the_planner_refuses_nan_that_comfyui_lets_through(run_prompt, field):
    with ChatServer([Reply.content(json.dumps(layout_doc()))]) as server:
        inputs = {"description": "a cat", "width": 256, "height": 128, "max_instances": 3,
                  "base_url": server.base_url, "model": "m", "api_key_env": "INSTDIFF_TEST_NO_KEY",
                  "timeout": 5.0, "seed": 1, "temperature": 0.0, "cache_to_disk": False}
        inputs[field] = math.nan
        with pytest.raises(comfy_harness.PromptError, match=rf"Layout Planner: {field} is nan; it must be a finite"):
            run_prompt(preview_graph({"class_type": "InstanceLayoutPlanner", "inputs": inputs}))
        assert server.requests == []
