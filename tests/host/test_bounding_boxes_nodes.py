"""Instances from Bounding Boxes / Layout to Bounding Boxes inside real ComfyUI: through the executor, chained with
the core BOUNDING_BOX nodes where the host has them (Create Bounding Boxes: in ComfyUI 0.33.0, not in 0.8.0; older
hosts lack the type, which is only a socket name, so the pack's own nodes still connect)."""
from __future__ import annotations

import pytest
import torch

from instdiff_testkit.graph_nodes import capture

WARNINGS_KEY = "instdiff_warnings"


@pytest.fixture
def captures(comfy_nodes, monkeypatch):
    import nodes

    out = {kind: capture(f"Capture_{kind}", kind) for kind in ("INSTANCE_LAYOUT", "BOUNDING_BOX")}
    for kind, cls in out.items():
        monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, f"BBoxTestCapture_{kind}", cls)
    return out


def test_nodes_are_registered_with_tooltips(pack):
    for key in ("InstancesFromBoundingBoxes", "LayoutToBoundingBoxes"):
        cls = pack.NODE_CLASS_MAPPINGS[key]
        assert cls.DESCRIPTION and cls.CATEGORY == "instance_diffusion/layout"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) and all(cls.OUTPUT_TOOLTIPS)
        for group in cls.INPUT_TYPES().values():
            for name, (_t, opts) in group.items():
                assert opts.get("tooltip"), f"{key}.{name} has no tooltip"
    spec = pack.NODE_CLASS_MAPPINGS["InstancesFromBoundingBoxes"].INPUT_TYPES()["required"]
    assert spec["bboxes"][0] == "BOUNDING_BOX" and spec["bboxes"][1]["forceInput"] is True
    assert pack.NODE_CLASS_MAPPINGS["LayoutToBoundingBoxes"].RETURN_TYPES == ("BOUNDING_BOX",)


def test_direct_calls_append_and_warn(node, pack):
    messages = pack.nodes.node_messages          # node functions may return {"ui": warnings, "result": outputs}
    (canvas,) = messages.node_outputs(node["InstanceLayout"].make(64, 64))
    (one,) = messages.node_outputs(node["InstanceBox"].add(canvas, "a tree", 0, 0, 8, 8))
    boxes = [[{"x": 40, "y": 2, "width": 30, "height": 10, "label": "dog", "score": 0.9},
              {"x": 1, "y": 1, "width": 4, "height": 4, "label": "cat", "score": 0.5}]]
    returned = node["InstancesFromBoundingBoxes"].add(one, boxes, "dog: a brown dog", "label", 0)
    (layout,) = messages.node_outputs(returned)
    assert [i.caption for i in layout.instances] == ["a tree", "a brown dog"]
    assert layout.instances[1].bbox == (40.0, 2.0, 64.0, 12.0)
    warnings = messages.node_warnings(returned)
    assert len(warnings) == 2 and warnings[0].startswith("instance 1 ('a brown dog') bbox: image 0 box 0")
    assert "box 1 ('cat')" in warnings[1]
    assert len(one.instances) == 1, "the incoming layout is never modified (ComfyUI caches)"
    with pytest.raises(ValueError, match=r"no box labelled 'horse'.*labels present: 'dog' \(1\), 'cat' \(1\)"):
        node["InstancesFromBoundingBoxes"].add(one, boxes, "horse: a horse", "label", 0)
    with pytest.raises(ValueError, match="unset value"):
        node["InstancesFromBoundingBoxes"].add(one, boxes, "None", "label", 0)
    (track,) = messages.node_outputs(node["InstanceTrackMasks"].add(canvas, "a cat", torch.ones(3, 64, 64)))
    (on_track,) = messages.node_outputs(node["InstancesFromBoundingBoxes"].add(track, boxes, "a", "order", 0))
    assert on_track.num_frames == 3 and all(row[1].bbox == (40.0, 2.0, 64.0, 12.0) for row in on_track.frames)
    (per_frame,) = messages.node_outputs(node["LayoutToBoundingBoxes"].convert(on_track))
    assert len(per_frame) == 3 and [len(f) for f in per_frame] == [2, 2, 2]


def test_round_trip_through_the_executor(run_prompt, captures):
    graph = {
        "1": {"class_type": "InstanceLayout", "inputs": {"width": 128, "height": 96}},
        "2": {"class_type": "InstanceBox", "inputs": {"layout": ["1", 0], "prompt": "a red ball",
                                                     "x": 10, "y": 20, "width": 30, "height": 40}},
        "3": {"class_type": "InstancePoint", "inputs": {"layout": ["2", 0], "prompt": "a bird", "x": 90, "y": 10}},
        "4": {"class_type": "InstanceScribble", "inputs": {"layout": ["3", 0], "prompt": "a snake",
                                                          "points": "60,60 100,80 120,70"}},
        "5": {"class_type": "LayoutToBoundingBoxes", "inputs": {"layout": ["4", 0]}},
        "6": {"class_type": "InstanceLayout", "inputs": {"width": 128, "height": 96}},
        "7": {"class_type": "InstancesFromBoundingBoxes",
              "inputs": {"layout": ["6", 0], "bboxes": ["5", 0], "prompts": "a red ball: a red ball\na snake: a snake",
                         "match": "label", "image_index": 0}},
        "8": {"class_type": "BBoxTestCapture_INSTANCE_LAYOUT", "inputs": {"value": ["7", 0]}},
        "9": {"class_type": "BBoxTestCapture_BOUNDING_BOX", "inputs": {"value": ["5", 0]}},
    }
    result = run_prompt(graph)
    (boxes,) = captures["BOUNDING_BOX"].seen
    assert boxes == [[{"x": 10, "y": 20, "width": 30, "height": 40, "label": "a red ball",
                       "metadata": {"desc": "a red ball"}},
                      {"x": 60, "y": 60, "width": 60, "height": 20, "label": "a snake",
                       "metadata": {"desc": "a snake"}}]]
    (layout,) = captures["INSTANCE_LAYOUT"].seen
    assert [(i.caption, i.bbox) for i in layout.instances] == [("a red ball", (10.0, 20.0, 40.0, 60.0)),
                                                               ("a snake", (60.0, 60.0, 120.0, 80.0))]
    ui = result["outputs"]
    assert ui["5"][WARNINGS_KEY] == ["instance 1 ('a bird') has only a point, no box; left out of the bounding boxes"]
    assert ui["7"][WARNINGS_KEY] == []


def test_a_prompt_without_a_box_fails_the_run_naming_the_line(run_prompt, captures):
    from instdiff_testkit.comfy_harness import PromptError

    graph = {
        "1": {"class_type": "InstanceLayout", "inputs": {"width": 64, "height": 64}},
        "2": {"class_type": "InstanceBox", "inputs": {"layout": ["1", 0], "prompt": "a cat",
                                                     "x": 0, "y": 0, "width": 10, "height": 10}},
        "3": {"class_type": "LayoutToBoundingBoxes", "inputs": {"layout": ["2", 0]}},
        "4": {"class_type": "InstancesFromBoundingBoxes",
              "inputs": {"layout": ["1", 0], "bboxes": ["3", 0], "prompts": "a dog: a dog",
                         "match": "label", "image_index": 0}},
        "5": {"class_type": "BBoxTestCapture_INSTANCE_LAYOUT", "inputs": {"value": ["4", 0]}},
    }
    with pytest.raises(PromptError, match=r"prompts line 1 \('a dog: a dog'\): no box labelled 'a dog'.*'a cat' \(1\)"):
        run_prompt(graph)


def test_core_canvas_plugs_in(run_prompt, captures):
    import nodes

    if "CreateBoundingBoxes" not in nodes.NODE_CLASS_MAPPINGS:
        pytest.skip("this ComfyUI has no core 'Create Bounding Boxes' node (0.33.0 has it, 0.8.0 not)")
    drawn = [{"x": 8, "y": 16, "width": 64, "height": 32, "metadata": {"desc": "ignored by the output"}},
             {"x": 100, "y": 100, "width": 60, "height": 60}]              # partly outside the 128x128 canvas
    # a list widget value travels as {"__value__": [...]} (a bare list is a link), as the frontend sends it
    graph = {
        "1": {"class_type": "CreateBoundingBoxes",
              "inputs": {"width": 128, "height": 128, "editor_state": {"__value__": drawn}}},
        "2": {"class_type": "InstanceLayout", "inputs": {"width": 128, "height": 128}},
        "3": {"class_type": "InstancesFromBoundingBoxes",
              "inputs": {"layout": ["2", 0], "bboxes": ["1", 1], "prompts": "a long car\na small dog",
                         "match": "order", "image_index": 0}},
        "4": {"class_type": "LayoutToBoundingBoxes", "inputs": {"layout": ["3", 0]}},
        "5": {"class_type": "CreateBoundingBoxes",
              "inputs": {"width": 128, "height": 128, "editor_state": {"__value__": []}, "bboxes": ["4", 0]}},
        "6": {"class_type": "BBoxTestCapture_INSTANCE_LAYOUT", "inputs": {"value": ["3", 0]}},
        "7": {"class_type": "BBoxTestCapture_BOUNDING_BOX", "inputs": {"value": ["5", 1]}},
    }
    result = run_prompt(graph)
    (layout,) = captures["INSTANCE_LAYOUT"].seen
    assert [(i.caption, i.bbox) for i in layout.instances] == [("a long car", (8.0, 16.0, 72.0, 48.0)),
                                                               ("a small dog", (100.0, 100.0, 128.0, 128.0))]
    (warning,) = result["outputs"]["3"][WARNINGS_KEY]
    assert "instance 1 ('a small dog') bbox" in warning and "clipped to corners [100, 100, 128, 128]" in warning
    (back,) = captures["BOUNDING_BOX"].seen                # our boxes initialise the core canvas
    assert [(b["x"], b["y"], b["width"], b["height"]) for b in back[0]] == [(8, 16, 64, 32), (100, 100, 28, 28)]
