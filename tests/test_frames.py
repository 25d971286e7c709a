"""Per-frame layouts (core, no ComfyUI): FrameLayouts, keyframe interpolation, the sources' parsing, grounding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from instancediffusion_core.layout import Instance, Layout, LayoutError
from instancediffusion_core.layout.frames import (FrameLayouts, bounding_box_frames, build_frame_grounding,
                                                  frame_layouts_from_tracks, interpolate_track, parse_keyframes,
                                                  parse_prompt_lines, parse_tracking_prompts, track_from_masks,
                                                  tracks_from_bounding_boxes, tracks_from_tracking)
from instancediffusion_core.layout.grounding import build_grounding


def _box(x0, y0, x1, y1, cap="a ball"):
    return Instance(caption=cap, bbox=(x0, y0, x1, y1))


def test_linear_boxes_and_points_between_keyframes():
    kf = {0: Instance(caption="c", bbox=(0, 0, 10, 10), point=(5, 5)),
          4: Instance(caption="c", bbox=(40, 20, 50, 30), point=(45, 25))}
    track = interpolate_track(kf, 6)
    assert track[2].bbox == (20.0, 10.0, 30.0, 20.0) and track[2].point == (25.0, 15.0)
    assert track[4] == kf[4] and track[5] == kf[4], "after the last keyframe the instance holds it"


def test_before_first_keyframe_absent_and_none_hides():
    kf = {2: _box(0, 0, 10, 10), 4: None, 6: _box(20, 20, 30, 30)}
    track = interpolate_track(kf, 8)
    assert track[:2] == [None, None]
    assert track[2] == track[3] == kf[2], "the keyframe before a 'none' holds"
    assert track[4] is None and track[5] is None
    assert track[6] == track[7] == kf[6]


def test_hold_and_nearest_and_masks_and_scribbles():
    m0 = np.zeros((16, 16), bool)
    m0[0:4, 0:4] = True
    m1 = np.zeros((16, 16), bool)
    m1[8:12, 8:12] = True
    kf = {0: Instance(caption="c", mask=m0, scribble=((0, 0), (4, 4))),
          4: Instance(caption="c", mask=m1, scribble=((8, 8), (12, 12)))}
    lin = interpolate_track(kf, 5, "linear")
    assert np.array_equal(lin[3].mask, m0), "masks hold the earlier keyframe"
    assert lin[2].scribble == ((4.0, 4.0), (8.0, 8.0)), "equal point counts: scribbles move point by point"
    odd = {0: Instance(caption="c", scribble=((0, 0), (4, 4))), 2: Instance(caption="c", scribble=((1, 1), (2, 2), (3, 3)))}
    assert interpolate_track(odd, 3)[1].scribble == ((0.0, 0.0), (4.0, 4.0)), "different counts: hold"
    hold = interpolate_track({0: _box(0, 0, 10, 10), 4: _box(40, 0, 50, 10)}, 5, "hold")
    assert hold[3].bbox == (0.0, 0.0, 10.0, 10.0)
    near = interpolate_track({0: _box(0, 0, 10, 10), 4: _box(40, 0, 50, 10)}, 5, "nearest")
    assert near[2].bbox == (0.0, 0.0, 10.0, 10.0) and near[3].bbox == (40.0, 0.0, 50.0, 10.0)


def test_interpolation_errors():
    with pytest.raises(LayoutError, match="frame 9 is outside the track's 4 frames"):
        interpolate_track({9: _box(0, 0, 1, 1)}, 4)
    with pytest.raises(LayoutError, match="keyframes: none given"):
        interpolate_track({}, 4)
    with pytest.raises(LayoutError, match="interpolation"):
        interpolate_track({0: _box(0, 0, 1, 1)}, 4, "cubic")


def test_parse_keyframes():
    masks = [np.ones((8, 8), bool)]
    kf = parse_keyframes("# comment\n0: box 1,2,3,4 point 2,3\n3 : none\n5: scribble 0,0 4,4 mask 0", "c", masks)
    assert kf[0].bbox == (1.0, 2.0, 4.0, 6.0) and kf[0].point == (2.0, 3.0)
    assert kf[3] is None
    assert kf[5].scribble == ((0.0, 0.0), (4.0, 4.0)) and kf[5].mask.all()
    for bad, msg in [("x: box 1,2,3,4", "expected 'frame: box"), ("0: box 1,2,3", "box needs 4 numbers"),
                     ("0: box 1,2,3,4\n0: point 1,1", "has a keyframe already"), ("0: mask 1", "mask k"),
                     ("0: box 1,2,nan,4", "not a finite number"), ("0: none box 1,2,3,4", "cannot be combined"),
                     ("0: circle 3", "not one of")]:
        with pytest.raises(LayoutError, match=msg):
            parse_keyframes(bad, "c", masks)


def test_frame_layouts_validate_with_frame_and_slot():
    with pytest.raises(LayoutError, match=r"frame 1: instance 0 .*reaches outside"):
        FrameLayouts(64, 64, "", ("a ball",), ((_box(0, 0, 10, 10),), (_box(50, 50, 70, 70),)))
    with pytest.raises(LayoutError, match="at least 1 frame"):
        FrameLayouts(64, 64, "", (), ())
    with pytest.raises(LayoutError, match="2 slots but the track has 1"):
        FrameLayouts(64, 64, "", ("a ball",), ((_box(0, 0, 10, 10), None),))
    fl = FrameLayouts(64, 64, "", ("a ball",), ((_box(0, 0, 10, 10),), (None,)))
    with pytest.raises(LayoutError, match="its track has 1 frames but the layout has 2"):
        fl.with_track("b", [None])
    assert fl.frame(1).instances == () and fl.frame(0).instances == (_box(0, 0, 10, 10),)


def test_static_layout_and_extend_keep_slots():
    static = Layout(64, 64, "scene", (_box(0, 0, 20, 20, "a tree"),))
    track = frame_layouts_from_tracks(64, 64, [("a ball", [_box(0, 0, 5, 5), None, _box(5, 5, 9, 9)])],
                                      base=static)
    assert track.captions == ("a tree", "a ball") and track.num_frames == 3
    assert [len(track.frame(f).instances) for f in range(3)] == [2, 1, 2]
    assert track.frame_slots(1) == [(0, static.instances[0])]
    more = track.with_instance(_box(30, 30, 40, 40, "a dog"))
    assert more.num_instances == 3 and all(row[2] is not None for row in more.frames)
    firsts, where = FrameLayouts.from_layout(static, 5).distinct_frames()
    assert firsts == [0] and where == [0] * 5


def test_frame_grounding_matches_single_layouts_and_empties_absent_slots():
    text = torch.randn(2, 768, generator=torch.Generator().manual_seed(0))
    a = [_box(0, 0, 10, 10, "a"), _box(4, 4, 30, 30, "a")]
    b = [_box(20, 20, 40, 40, "b"), None]
    track = frame_layouts_from_tracks(64, 64, [("a", a), ("b", b)])
    g = build_frame_grounding(track, text, [0, 1], seg_size=16)
    ref = build_grounding(Layout(64, 64, "", (a[0], b[0])), text, seg_size=16)
    for k in g:
        assert torch.equal(g[k][0], ref[k][0]), k
    assert g["masks"][1].tolist()[:2] == [1.0, 0.0]
    assert torch.equal(g["positive_embeddings"][1, 1], torch.zeros(768)), "absent slot: the empty slot"
    assert torch.equal(g["boxes"][1, 1], torch.zeros(4))


def test_mask_batch_track():
    masks = np.zeros((3, 8, 8), np.float32)
    masks[0, :2, :2] = 1
    masks[2, 4:, 4:] = 0.9
    track = track_from_masks("c", masks)
    assert track[1] is None and track[0].mask.sum() == 4 and track[2].mask.sum() == 16


def test_bounding_box_shapes_and_matching():
    one = {"x": 1, "y": 1, "width": 2, "height": 2}
    assert bounding_box_frames(one) == [[one]]
    assert bounding_box_frames([one, one]) == [[one, one]]
    assert bounding_box_frames([[one], []]) == [[one], []]
    assert bounding_box_frames(None) == [[]]
    with pytest.raises(LayoutError, match="frame 1 is str"):
        bounding_box_frames([[one], "x"])
    frames = [[{"x": 0, "y": 0, "width": 4, "height": 4, "label": "Person"},
               {"x": 10, "y": 10, "width": 4, "height": 4, "label": "person"},
               {"x": 20, "y": 20, "width": 4, "height": 4, "metadata": {"desc": "dog"}}],
              [{"x": 30, "y": 30, "width": 4, "height": 4, "label": "person"}]]
    lines = parse_prompt_lines("person: first man\nperson: second man\ndog: a dog", "label")
    tracks = tracks_from_bounding_boxes(frames, lines, 64, 64, "label")
    assert [c for c, _ in tracks] == ["first man", "second man", "a dog"]
    assert tracks[0][1][0].bbox == (0.0, 0.0, 4.0, 4.0) and tracks[1][1][0].bbox == (10.0, 10.0, 14.0, 14.0)
    assert tracks[0][1][1].bbox == (30.0, 30.0, 34.0, 34.0) and tracks[1][1][1] is None and tracks[2][1][1] is None
    with pytest.raises(LayoutError, match="lacks numeric x, y, width, height"):
        tracks_from_bounding_boxes([[{"x": 1}]], [(None, "p")], 64, 64, "order")
    off = tracks_from_bounding_boxes([[{"x": 70, "y": 0, "width": 4, "height": 4}]], [(None, "p")], 64, 64, "order")
    assert off[0][1] == [None], "a box entirely off the canvas is absent"


def test_tracking_prompts_and_errors():
    assert parse_tracking_prompts('"1.person": "((a man))",\n"2.dog": "a dog"') == [
        ("1", "person", "((a man))"), ("2", "dog", "a dog")]
    assert parse_tracking_prompts('"1.head": "(x)"\n"3.car": "y",') == [("1", "head", "(x)"), ("3", "car", "y")]
    with pytest.raises(LayoutError, match="not 'id.class'"):
        parse_tracking_prompts('"person": "x"')
    with pytest.raises(LayoutError, match="no '\"id.class\": \"prompt\"' entries"):
        parse_tracking_prompts("a man")
    tracking = {"person": {"1": [[0, 0, 8, 8, 32, 32], None]}, "car": {2: [[0, 0, 8, 8, 32, 32]]}}
    w, h, tracks = tracks_from_tracking(tracking, '"1.person": "a man"')
    assert (w, h) == (32, 32) and tracks[0][1][1] is None
    with pytest.raises(LayoutError, match=r"track '2.car' has 1 frames but 2"):
        tracks_from_tracking(tracking, '"1.person": "a", "2.car": "b"')
    with pytest.raises(LayoutError, match=r"id 5 of class 'car'"):
        tracks_from_tracking(tracking, '"5.car": "b"')
    bad = {"person": {1: [[0, 0, 8, 8, 32, 32], [0, 0, 8, 8, 64, 64]]}}
    with pytest.raises(LayoutError, match="canvas is 64x64, earlier entries 32x32"):
        tracks_from_tracking(bad, '"1.person": "a"')
    with pytest.raises(LayoutError, match=r"frame 0: \[1, 2\] is not"):
        tracks_from_tracking({"p": {1: [[1, 2]]}}, '"1.p": "a"')
