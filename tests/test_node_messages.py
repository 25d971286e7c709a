"""Warnings that reach the user without wiring (issue #13), without a ComfyUI host: ``nodes/node_messages.py`` and
the one box policy of Instance: Box and Instance: Box/Point/Scribble/Mask.

The node modules are imported as part of a stand-in package (the repo root under another name), so their relative
imports resolve while the pack's root ``__init__`` (which needs ComfyUI) is never run.
"""
from __future__ import annotations

import logging
import os

import pytest

from instdiff_testkit.pack_modules import node_module as _pack_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "_instdiff_pack_for_node_messages"


def node_module(name: str):
    return _pack_module(name, PACKAGE)


@pytest.fixture(scope="module")
def messages():
    return node_module("node_messages")


@pytest.fixture(scope="module")
def nodes():
    return node_module("layout_nodes")


def test_warnings_go_to_the_ui_output_and_the_console(messages, caplog):
    with caplog.at_level(logging.WARNING, logger="comfyui-instdiff"):
        out = messages.result_with_warnings(("layout", "caption"), ["box clipped", "", None, "key ignored"],
                                            "Load Layout")
    assert out == {"ui": {"instdiff_warnings": ["box clipped", "key ignored"]}, "result": ("layout", "caption")}
    assert [r.getMessage() for r in caplog.records] == ["Load Layout: box clipped", "Load Layout: key ignored"]
    assert {r.name for r in caplog.records} == {"comfyui-instdiff"}
    assert messages.node_outputs(out) == ("layout", "caption")
    assert messages.node_warnings(out) == ["box clipped", "key ignored"]
    assert messages.node_outputs(("x",)) == ("x",) and messages.node_warnings(("x",)) == []


def test_no_warnings_sends_an_empty_list_that_clears_the_display_and_logs_nothing(messages, caplog):
    with caplog.at_level(logging.WARNING, logger="comfyui-instdiff"):
        out = messages.result_with_warnings(("x",), [], "Instance: Box", ui={"instdiff_layout": [{"annos": []}]})
    assert out["ui"] == {"instdiff_warnings": [], "instdiff_layout": [{"annos": []}]}
    assert not caplog.records


def test_ui_values_must_be_lists_and_the_result_a_tuple(messages):
    with pytest.raises(TypeError, match=r"Layout Check: UI output 'extra' must be a list"):
        messages.result_with_warnings(("x",), [], "Layout Check", ui={"extra": "text"})
    with pytest.raises(TypeError, match="needs the node's output tuple"):
        messages.result_with_warnings(["x"], [], "Layout Check")


# ------------------------------------------------------------------------------------------------ the box policy

def _canvas(nodes, w=512, h=512):
    (layout,) = nodes.InstanceLayoutNode().make(w, h)
    return layout


def test_instance_box_inside_the_canvas_has_no_warning(nodes):
    out = nodes.InstanceBox().add(_canvas(nodes), "a cat", 10, 20, 50, 40)
    (layout,) = out["result"]
    assert layout.instances[0].bbox == (10.0, 20.0, 60.0, 60.0)
    assert out["ui"] == {"instdiff_warnings": []}


def test_instance_box_partly_outside_is_clipped_with_a_warning(nodes, caplog):
    with caplog.at_level(logging.WARNING, logger="comfyui-instdiff"):
        out = nodes.InstanceBox().add(_canvas(nodes), "a tall tree", 480, 100, 100, 600)
    (layout,) = out["result"]
    assert layout.instances[0].bbox == (480.0, 100.0, 512.0, 512.0)
    (warning,) = out["ui"]["instdiff_warnings"]
    assert warning == ("instance 0 ('a tall tree') box: x 480, y 100, width 100, height 600 reaches outside the "
                       "512x512 canvas; clipped to corners [480, 100, 512, 512]")
    assert caplog.records[-1].getMessage() == f"Instance: Box: {warning}"


def test_instance_box_entirely_outside_is_an_error_naming_instance_prompt_and_numbers(nodes):
    layout = nodes.InstanceBox().add(_canvas(nodes, 256, 128), "a cat", 0, 0, 10, 10)["result"][0]
    with pytest.raises(nodes.LayoutError) as e:
        nodes.InstanceBox().add(layout, "a kite", 300, 10, 50, 50)
    msg = str(e.value)
    assert msg.startswith("instance 1 ('a kite') box: x 300, y 10, width 50, height 50 lies entirely outside the "
                          "256x128 canvas (corners [300, 10, 350, 60]; the canvas spans x 0..256, y 0..128)")
    assert "move it onto the canvas, enlarge the canvas, or remove the instance" in msg
    assert (e.value.index, e.value.field) == (1, "box")
    # touching the edge is still outside: nothing of the box is on the canvas
    with pytest.raises(nodes.LayoutError, match="entirely outside"):
        nodes.InstanceBox().add(layout, "a kite", 256, 0, 10, 10)


def test_instance_any_box_follows_the_same_policy(nodes):
    layout = _canvas(nodes, 100, 100)
    out = nodes.InstanceAny().add(layout, "a kite", box="-20, 10, 50, 30", point="10,20")
    (clipped,) = out["result"]
    assert clipped.instances[0].bbox == (0.0, 10.0, 30.0, 40.0) and clipped.instances[0].point == (10.0, 20.0)
    assert out["ui"]["instdiff_warnings"] == [
        "instance 0 ('a kite') box: x -20, y 10, width 50, height 30 reaches outside the 100x100 canvas; clipped "
        "to corners [0, 10, 30, 40]"]
    with pytest.raises(nodes.LayoutError, match=r"instance 0 \('a kite'\) box: x 150, y 0, width 10, height 10 lies "
                                                r"entirely outside the 100x100 canvas"):
        nodes.InstanceAny().add(layout, "a kite", box="150,0,10,10")
    with pytest.raises(nodes.LayoutError, match=r"instance 0 \('a kite'\) box: .* has no size .*positive width"):
        nodes.InstanceAny().add(layout, "a kite", box="10,10,0,20")
    assert nodes.InstanceAny().add(layout, "a kite", point="10,20")["ui"] == {"instdiff_warnings": []}


def test_the_prompt_is_checked_before_the_box(nodes):
    with pytest.raises(ValueError, match="instance 0: prompt is .*unset value"):
        nodes.InstanceBox().add(_canvas(nodes), None, 600, 600, 10, 10)
