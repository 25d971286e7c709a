"""Warnings reach the user without wiring (issue #13), inside real ComfyUI: every warning of Load Layout, Instance:
Box, Instance: Box/Point/Scribble/Mask, the layout editor and Layout Check is the node's UI output
``instdiff_warnings`` (the ``executed`` message the frontend shows on the node, and the history) and a console
line; a run without warnings sends an empty list, which clears the node's display. And the one box policy: partly
outside the canvas is clipped, entirely outside is an error naming the instance and the numbers."""
from __future__ import annotations

import json
import logging

import pytest

from instdiff_testkit import comfy_harness

KEY = "instdiff_warnings"
LOGGER = "comfyui-instdiff"


def preview_graph(source: dict, extra: dict | None = None) -> dict:
    """``source`` (node id "1") -> [``extra`` nodes] -> Layout Preview ("8", layout from node "9" if given) ->
    Preview Image, so every node runs."""
    graph = {"1": source, **(extra or {})}
    graph["8"] = {"class_type": "InstanceLayoutPreview", "inputs": {"layout": ["9" if "9" in graph else "1", 0]}}
    graph["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    return graph


def load_layout_node(doc: dict, bbox_format: str = "xywh") -> dict:
    return {"class_type": "LoadInstanceLayout",
            "inputs": {"file": "(use json_text)", "json_text": json.dumps(doc), "bbox_format": bbox_format,
                       "truncate": False}}


def box_node(layout_from: str, prompt: str, x: int, y: int, w: int, h: int) -> dict:
    return {"class_type": "InstanceBox", "inputs": {"layout": [layout_from, 0], "prompt": prompt, "x": x, "y": y,
                                                    "width": w, "height": h}}


CANVAS = {"class_type": "InstanceLayout", "inputs": {"width": 256, "height": 128}}


CLIENT = {"client_id": "instdiff-test-client"}     # a browser tab: ComfyUI then sends it the `executed` messages


def executed(result: dict, node_id: str) -> list:
    return [data["output"] for event, data in result["messages"] if event == "executed" and data["node"] == node_id]


def logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_load_layout_shows_a_clipped_box_on_the_node_and_in_the_console(run_prompt, caplog):
    doc = {"caption": "c", "width": 256, "height": 128, "annos": [{"caption": "a bus", "bbox": [200, 10, 100, 50]}]}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = run_prompt(preview_graph(load_layout_node(doc)), extra_data=CLIENT)
    warning = ("json_text: annos[0] bbox: [200, 10, 100, 50] as [x, y, w, h] reaches outside the 256x128 canvas; "
               "clipped to corners [200, 10, 256, 60]")
    assert result["outputs"]["1"] == {KEY: [warning]}                      # the history, as the frontend gets it
    assert executed(result, "1") == [{KEY: [warning]}]                     # the message shown on the node
    assert f"Load Layout (InstanceDiffusion JSON): {warning}" in logged(caplog)
    # queued again: the node's output comes from ComfyUI's cache ("execution_cached"); nothing clears its display
    again = run_prompt(preview_graph(load_layout_node(doc)), extra_data=CLIENT, executor=result["executor"])
    cached = [n for event, data in again["messages"] if event == "execution_cached" for n in data["nodes"]]
    assert "1" in cached and executed(again, "1") in ([], [{KEY: [warning]}])


def test_a_clean_run_sends_an_empty_list_and_logs_nothing(run_prompt, caplog):
    doc = {"caption": "c", "width": 256, "height": 128, "annos": [{"caption": "a bus", "bbox": [20, 10, 100, 50]}]}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = run_prompt(preview_graph(load_layout_node(doc), {"9": box_node("1", "a cat", 0, 0, 64, 64)}),
                            extra_data=CLIENT)
    assert result["outputs"]["1"] == {KEY: []} and result["outputs"]["9"] == {KEY: []}
    assert executed(result, "9") == [{KEY: []}]                            # clears the node's last warnings
    assert logged(caplog) == []


def test_instance_box_partly_outside_is_clipped_with_a_warning(run_prompt, node, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = run_prompt(preview_graph(CANVAS, {"9": box_node("1", "a long bus", 200, 100, 100, 50)}))
    warning = ("instance 0 ('a long bus') box: x 200, y 100, width 100, height 50 reaches outside the 256x128 "
               "canvas; clipped to corners [200, 100, 256, 128]")
    assert result["outputs"]["9"] == {KEY: [warning]} and result["images"]["10"]
    assert f"Instance: Box: {warning}" in logged(caplog)
    (empty,) = node["InstanceLayout"].make(256, 128)
    (layout,) = node["InstanceBox"].add(empty, "a long bus", 200, 100, 100, 50)["result"]
    assert layout.instances[0].bbox == (200.0, 100.0, 256.0, 128.0)


def test_instance_box_entirely_outside_fails_naming_the_instance_and_the_numbers(run_prompt):
    graph = preview_graph(CANVAS, {"2": box_node("1", "a cat", 0, 0, 64, 64),
                                   "9": box_node("2", "a kite", 300, 10, 50, 50)})
    with pytest.raises(comfy_harness.PromptError) as err:
        run_prompt(graph)
    msg = str(err.value)
    assert "InstanceBox" in msg and "LayoutError" in msg
    assert ("instance 1 ('a kite') box: x 300, y 10, width 50, height 50 lies entirely outside the 256x128 canvas "
            "(corners [300, 10, 350, 60]; the canvas spans x 0..256, y 0..128); move it onto the canvas") in msg


def test_instance_any_box_partly_outside_is_clipped_with_a_warning(run_prompt):
    any_node = {"class_type": "InstanceAny", "inputs": {"layout": ["1", 0], "prompt": "a kite",
                                                        "box": "-10, 20, 40, 40", "point": "", "scribble": ""}}
    result = run_prompt(preview_graph(CANVAS, {"9": any_node}))
    assert result["outputs"]["9"] == {KEY: [
        "instance 0 ('a kite') box: x -10, y 20, width 40, height 40 reaches outside the 256x128 canvas; clipped to "
        "corners [0, 20, 30, 60]"]}


def test_the_editor_and_layout_check_warnings_are_logged_and_sent(run_prompt, caplog):
    text = json.dumps({"caption": "c", "width": 256, "height": 128,
                       "annos": [{"caption": "a bus", "bbox": [220, 10, 100, 50]},
                                 {"caption": "a bird", "bbox": [20, 20, 4, 4]}]})
    editor = {"class_type": "InstanceLayoutEditor", "inputs": {"width": 256, "height": 128, "layout_json": text}}
    check = {"class_type": "InstanceLayoutCheck", "inputs": {"layout": ["1", 0]}}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = run_prompt(preview_graph(editor, {"9": check}) | {"8": {"class_type": "InstanceLayoutPreview",
                                                                         "inputs": {"layout": ["9", 1]}}})
    clipped = ("layout JSON: annos[0] bbox: [220, 10, 100, 50] as [x, y, w, h] reaches outside the 256x128 canvas; "
               "clipped to corners [220, 10, 256, 60]")
    assert result["outputs"]["1"][KEY] == [clipped]
    assert f"Instance Layout Editor: {clipped}" in logged(caplog)
    shown = result["outputs"]["9"][KEY]
    assert any("too_small" in w and "'a bird'" in w for w in shown), shown
    assert any(line.startswith("Layout Check: ") and "too_small" in line for line in logged(caplog))
