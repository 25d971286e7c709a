"""ComfyUI's core BOUNDING_BOX <-> a still layout (core, no ComfyUI): matching by label and by order, the box policy
(fit_box), the errors, and the round trip layout -> boxes -> layout."""
from __future__ import annotations

import numpy as np
import pytest

from instancediffusion_core.layout import Instance, Layout, LayoutError
from instancediffusion_core.layout.bounding_boxes import (bounding_boxes_with_warnings, box_corners,
                                                          layout_from_bounding_boxes, layout_to_bounding_boxes)
from instancediffusion_core.layout.frames import FrameLayouts

# RT-DETR's shape: one list per image, sorted by score
DETECTED = [[{"x": 0, "y": 0, "width": 10, "height": 10, "label": "person", "score": 0.9},
             {"x": 30, "y": 30, "width": 20, "height": 20, "label": "dog", "score": 0.8},
             {"x": 5, "y": 40, "width": 10, "height": 12, "label": "Person", "score": 0.7}],
            [{"x": 1, "y": 2, "width": 3, "height": 4, "label": "cat", "score": 0.6}]]


def test_label_match_takes_the_kth_box_with_the_label():
    layout, warnings = layout_from_bounding_boxes(DETECTED, "dog: a brown dog\nperson: a man\n\nperson: a child",
                                                  64, 64, "label")
    assert [i.caption for i in layout.instances] == ["a brown dog", "a man", "a child"]
    assert [i.bbox for i in layout.instances] == [(30.0, 30.0, 50.0, 50.0), (0.0, 0.0, 10.0, 10.0),
                                                  (5.0, 40.0, 15.0, 52.0)]
    assert [i.category for i in layout.instances] == ["dog", "person", "person"]
    assert (layout.width, layout.height) == (64, 64) and warnings == []


def test_order_match_and_image_index():
    layout, warnings = layout_from_bounding_boxes(DETECTED, "first\nsecond", 64, 64, "order")
    assert [i.bbox for i in layout.instances] == [(0.0, 0.0, 10.0, 10.0), (30.0, 30.0, 50.0, 50.0)]
    assert len(warnings) == 1 and "1 box(es) of image 0 match no prompt line" in warnings[0] and "box 2" in warnings[0]
    second, _ = layout_from_bounding_boxes(DETECTED, "a cat", 64, 64, "order", image_index=1)
    assert second.instances[0].bbox == (1.0, 2.0, 4.0, 6.0)
    one, _ = layout_from_bounding_boxes({"x": 1, "y": 1, "width": 5, "height": 5}, "a", 64, 64, "order")
    assert one.instances[0].bbox == (1.0, 1.0, 6.0, 6.0)
    with pytest.raises(LayoutError, match=r"image_index: 2 but the bboxes hold 2 image\(s\)"):
        layout_from_bounding_boxes(DETECTED, "a", 64, 64, "order", image_index=2)
    with pytest.raises(LayoutError, match=r"prompts line 3 \('c'\): match 'order' gives it box 1 but image 1 "
                                          r"has 1 box"):
        layout_from_bounding_boxes(DETECTED, "a\n\nc", 64, 64, "order", image_index=1)


def test_a_label_without_a_box_names_the_line_and_the_labels_present():
    with pytest.raises(LayoutError, match=r"prompts line 2 \('horse: a horse'\): no box labelled 'horse' in image 0; "
                                          r"labels present: 'person' \(2\), 'dog' \(1\)") as err:
        layout_from_bounding_boxes(DETECTED, "dog: a dog\nhorse: a horse", 64, 64, "label")
    assert err.value.index == 1 and err.value.field == "prompts"
    with pytest.raises(LayoutError, match=r"2nd line with label 'dog' but image 0 has 1 such box"):
        layout_from_bounding_boxes(DETECTED, "dog: a dog\ndog: another dog", 64, 64, "label")
    unlabelled = [[{"x": 0, "y": 0, "width": 8, "height": 8}]]          # Create Bounding Boxes gives no labels
    with pytest.raises(LayoutError, match=r"carry no labels.*set match to 'order'"):
        layout_from_bounding_boxes(unlabelled, "dog: a dog", 64, 64, "label")
    with pytest.raises(LayoutError, match=r"write 'label: prompt'"):
        layout_from_bounding_boxes(DETECTED, "a dog without label", 64, 64, "label")


def test_metadata_labels_and_case():
    boxes = [{"x": 0, "y": 0, "width": 8, "height": 8, "metadata": {"desc": "Red Car"}}]
    layout, _ = layout_from_bounding_boxes(boxes, "red car: a red vintage car", 64, 64, "label")
    assert layout.instances[0].caption == "a red vintage car"


def test_partly_outside_is_clipped_with_a_warning():
    boxes = [[{"x": 40, "y": 2, "width": 30, "height": 10, "label": "dog"}]]
    layout, warnings = layout_from_bounding_boxes(boxes, "dog: a dog", 64, 64, "label", first_index=3)
    assert layout.instances[0].bbox == (40.0, 2.0, 64.0, 12.0)
    assert len(warnings) == 1
    assert "instance 3 ('a dog') bbox: image 0 box 0 {x: 40, y: 2, width: 30, height: 10} reaches outside the " \
           "64x64 canvas; clipped to corners [40, 2, 64, 12]" == warnings[0]


def test_entirely_outside_no_size_and_bad_boxes_are_errors():
    outside = [[{"x": 100, "y": 0, "width": 10, "height": 10, "label": "dog"}]]
    with pytest.raises(LayoutError, match=r"instance 0 \('a dog'\) bbox: image 0 box 0 \{x: 100, y: 0, width: 10, "
                                          r"height: 10\} lies entirely outside the 64x64 canvas") as err:
        layout_from_bounding_boxes(outside, "dog: a dog", 64, 64, "label")
    assert err.value.index == 0 and err.value.field == "bbox"
    with pytest.raises(LayoutError, match="has no size"):
        layout_from_bounding_boxes([{"x": 1, "y": 1, "width": 0, "height": 5}], "a", 64, 64, "order")
    with pytest.raises(LayoutError, match="lacks numeric x, y, width, height"):
        layout_from_bounding_boxes([{"x": 1, "y": 1}], "a", 64, 64, "order")
    with pytest.raises(LayoutError, match="not finite"):
        box_corners({"x": float("nan"), "y": 1, "width": 2, "height": 2}, "image 0 box 0")
    with pytest.raises(LayoutError, match="expected ComfyUI's BOUNDING_BOX"):
        layout_from_bounding_boxes("boxes", "a", 64, 64, "order")
    with pytest.raises(LayoutError, match="no box labelled 'dog' in image 0; labels present: none"):
        layout_from_bounding_boxes([], "dog: a dog", 64, 64, "label")


def test_many_ignored_boxes_make_one_short_warning():
    boxes = [{"x": j, "y": 0, "width": 2, "height": 2, "label": "dot"} for j in range(20)]
    _, warnings = layout_from_bounding_boxes(boxes, "a", 64, 64, "order")
    assert len(warnings) == 1 and "19 box(es)" in warnings[0] and "and 11 more" in warnings[0]


def test_layout_to_bounding_boxes_uses_each_extent():
    mask = np.zeros((64, 64), bool)
    mask[10:20, 5:25] = True
    layout = Layout(64, 64, "", (Instance(caption="a box", bbox=(1.5, 2, 11, 12)),
                                 Instance(caption="a mask", mask=mask),
                                 Instance(caption="a line", scribble=((0, 30), (40, 50), (20, 60))),
                                 Instance(caption="a dot", point=(3, 3))))
    boxes, warnings = bounding_boxes_with_warnings(layout)
    assert boxes == [[{"x": 1.5, "y": 2, "width": 9.5, "height": 10, "label": "a box", "metadata": {"desc": "a box"}},
                      {"x": 5, "y": 10, "width": 20, "height": 10, "label": "a mask",
                       "metadata": {"desc": "a mask"}},
                      {"x": 0, "y": 30, "width": 40, "height": 30, "label": "a line",
                       "metadata": {"desc": "a line"}}]]
    assert all(type(boxes[0][1][k]) is int for k in ("x", "y", "width", "height"))
    assert len(warnings) == 1 and "instance 3 ('a dot') has only a point" in warnings[0]
    assert layout_to_bounding_boxes(Layout(64, 64)) == [[]]
    with pytest.raises(LayoutError, match="expected a layout"):
        layout_to_bounding_boxes([[]])


def test_frame_layouts_give_one_list_per_frame():
    a = Instance(caption="a cat", bbox=(0, 0, 10, 10))
    b = Instance(caption="a cat", bbox=(5, 5, 20, 20))
    dog = Instance(caption="a dog", point=(1, 1))
    track = FrameLayouts(64, 64, "", ("a cat", "a dog"), ((a, dog), (None, dog), (b, None)))
    boxes, warnings = bounding_boxes_with_warnings(track)
    assert [len(f) for f in boxes] == [1, 0, 1]
    assert boxes[2][0]["x"] == 5 and boxes[2][0]["width"] == 15
    assert warnings == ["frame 0 instance 1 ('a dog') has only a point, no box; left out of the bounding boxes",
                        "frame 1 instance 1 ('a dog') has only a point, no box; left out of the bounding boxes"]


@pytest.mark.parametrize("match", ["label", "order"])
def test_round_trip_layout_to_boxes_to_layout(match):
    layout = Layout(96, 64, "", (Instance(caption="a red car", bbox=(0, 0, 40.5, 30)),
                                 Instance(caption="a tree", bbox=(50, 5, 96, 64)),
                                 Instance(caption="a red car", bbox=(10, 30, 20, 40))))
    boxes = layout_to_bounding_boxes(layout)
    if match == "label":
        prompts = "\n".join(f"{i.caption}: {i.caption}" for i in layout.instances)
    else:
        prompts = "\n".join(i.caption for i in layout.instances)
    back, warnings = layout_from_bounding_boxes(boxes, prompts, 96, 64, match)
    assert warnings == []
    assert [(i.caption, i.bbox) for i in back.instances] == [(i.caption, i.bbox) for i in layout.instances]
