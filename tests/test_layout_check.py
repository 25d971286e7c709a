"""Layout Check: each kind on hand-made layouts, and the 100 LLM-written layouts with hand-checked findings.

LLM layouts come from ``INSTDIFF_LAYOUTS_DIR`` (default ``tests/fixtures/layouts``), folder ``llm-generated``.
"""
import collections
import glob
import os

import numpy as np
import pytest

from instancediffusion_core.layout.types import Instance, Layout
from instancediffusion_core.layout.check import (KINDS, LayoutWarning, box_iou, caption_similarity, check_layout,
                                                 format_warnings, typical_height)
from instancediffusion_core.layout.json_io import load_layout

LAYOUTS = os.environ.get("INSTDIFF_LAYOUTS_DIR",
                         os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "layouts"))
LLM_DIR = os.path.join(LAYOUTS, "llm-generated")
LLM_FILES = sorted(glob.glob(os.path.join(LLM_DIR, "*.json")))


def lay(*instances, w=512, h=512):
    return Layout(w, h, "scene", tuple(instances))


def box(caption, b, category=""):
    return Instance(caption=caption, bbox=b, category=category)


def kinds(warnings):
    return [(w.kind, w.index, w.other) for w in warnings]


# --------------------------------------------------------------------------------------------- single kinds

def test_clean_layout_has_no_warnings_and_says_so():
    layout = lay(box("a person", (100, 200, 160, 400), "person"), box("a dog", (200, 330, 270, 400), "dog"))
    assert check_layout(layout) == []
    assert format_warnings([], layout) == "layout check: no problems found"


def test_box_touching_an_edge_is_flagged_with_the_side_but_bands_are_not():
    layout = lay(box("a person", (100, 300, 160, 512), "person"),        # feet on the bottom edge
                 box("a car", (0, 300, 100, 400), "car"),                # cut at the left
                 box("a road", (0, 420, 512, 512), "road"),              # band across the canvas: intended
                 box("a kite", (200, 50, 260, 110), "kite"))
    found = [w for w in check_layout(layout) if w.kind == "edge"]
    assert [(w.index, w.other) for w in found] == [(0, None), (1, None)]
    assert "bottom edge" in found[0].message and "left edge" in found[1].message


def test_too_small_depends_on_the_generation_size():
    layout = lay(box("a bird", (100, 100, 112, 140), "bird"))            # 12 px wide = 1.5 cells at 512
    assert kinds(check_layout(layout)) == [("too_small", 0, None)]
    assert "1.5 x 5.0 latent cells" in check_layout(layout)[0].message
    assert check_layout(layout, generation_size=(1024, 1024)) == []     # 24 px wide once generated at 1024
    assert kinds(check_layout(layout, latent_scale=4)) == []             # 3 cells of a 4x VAE


def test_duplicates_any_caption_at_high_iou_similar_caption_at_moderate_iou():
    a = (100, 100, 200, 200)
    near = (105, 105, 205, 205)        # IoU ~0.82
    mid = (120, 100, 220, 200)         # IoU ~0.67
    assert box_iou(a, near) > 0.8 > box_iou(a, mid) > 0.5
    high = lay(box("a red ball", a, "ball"), box("a wooden chair", near, "chair"))
    assert kinds(check_layout(high)) == [("duplicate", 1, 0)]
    similar = lay(box("a red ball", a), box("a red ball on grass", mid))
    assert kinds(check_layout(similar)) == [("duplicate", 1, 0)]
    assert "similar captions" in check_layout(similar)[0].message
    different = lay(box("a red ball", a, "ball"), box("a wooden chair", mid, "chair"))
    assert check_layout(different) == []


def test_box_inside_a_box_of_the_same_category():
    outer, inner = (100, 100, 300, 400), (150, 150, 200, 250)
    same = lay(box("a woman", outer, "person"), box("a man", inner, "person"))
    assert kinds(check_layout(same)) == [("contains", 1, 0)]
    other = lay(box("a table", outer, "table"), box("a cup", inner, "cup"))
    assert check_layout(other) == []


def test_perspective_same_ground_line_and_back_object_larger():
    person = box("a person standing", (100, 200, 150, 400), "person")   # 200 px for 1.7 m
    dog_same_line = box("a dog", (300, 250, 400, 400), "dog")            # 150 px for 0.6 m: 2.1x the scale
    assert check_layout(lay(person, dog_same_line)) == []                # within 2.5x
    giant_dog = box("a dog", (300, 200, 420, 400), "dog")                # 200 px for 0.6 m: 2.8x
    found = check_layout(lay(person, giant_dog))
    assert kinds(found) == [("perspective", 1, 0)]
    assert "same ground line" in found[0].message and "2.8x" in found[0].message
    bus_behind = box("a bus", (250, 50, 450, 300), "bus")                # further back, 250 px for 3.2 m
    small_person_front = box("a person", (60, 400, 80, 440), "person")   # nearer, 40 px for 1.7 m: 3.3x
    found = check_layout(lay(bus_behind, small_person_front))
    assert kinds(found) == [("perspective", 0, 1)] and "further back" in found[0].message
    assert "3.3x" in found[0].message
    # the nearer object may be as large as it likes
    near_dog = box("a dog", (300, 300, 450, 480), "dog")
    far_person = box("a person", (100, 100, 120, 160), "person")
    assert check_layout(lay(near_dog, far_person)) == []


def test_perspective_skips_overlapping_cut_and_unknown_objects():
    person = box("a person sitting on a bench", (100, 150, 200, 400), "person")
    bench = box("a bench", (80, 330, 260, 400), "bench")                 # overlaps: interacting, skipped
    assert check_layout(lay(person, bench)) == []
    cut = box("a dog", (300, 112, 420, 512), "dog")                      # bottom off-canvas: unknown ground
    assert [w.kind for w in check_layout(lay(box("a person", (50, 300, 70, 360), "person"), cut))] == ["edge"]
    kite = box("a kite", (300, 10, 500, 300), "kite")                    # no typical height
    assert check_layout(lay(box("a person", (50, 300, 70, 360), "person"), kite)) == []


def test_typical_height_reads_category_sitting_children_and_size_words():
    assert typical_height(box("a man", (0, 0, 1, 1), "Person")) == (1.7, 1.7)
    assert typical_height(box("a child flying a kite", (0, 0, 1, 1), "person")) is None     # 'flying'
    assert typical_height(box("a girl", (0, 0, 1, 1), "person")) == (1.2, 1.2)
    low, high = typical_height(box("a person sitting", (0, 0, 1, 1), "person"))
    assert low == high == pytest.approx(1.275)
    low, high = typical_height(box("a small dog", (0, 0, 1, 1), "dog"))
    assert low < high == 0.6
    # the size word belongs to another noun: no change
    assert typical_height(box("a wooden chair beside a small table", (0, 0, 1, 1), "chair")) == (0.9, 0.9)
    # no category: the caption's first known noun
    assert typical_height(box("a large truck next to a car", (0, 0, 1, 1))) == (3.0, pytest.approx(4.2))
    assert typical_height(box("a cloud", (0, 0, 1, 1))) is None


def test_point_only_instance_is_ignored_and_mask_extent_is_used():
    mask = np.zeros((512, 512), bool)
    mask[400:512, 100:200] = True                                         # touches the bottom edge
    layout = lay(Instance(caption="a dot", point=(0.0, 0.0)), Instance(caption="a rug", mask=mask))
    assert kinds(check_layout(layout)) == [("edge", 1, None)]


def test_format_warnings_lists_every_warning_with_counts_and_captions():
    layout = lay(box("a person", (100, 300, 160, 512), "person"), box("a bird", (10, 10, 20, 20), "bird"))
    warnings = check_layout(layout)
    text = format_warnings(warnings, layout)
    lines = text.splitlines()
    assert lines[0] == "layout check: 2 warnings (1 edge, 1 too_small)"
    assert lines[1].startswith("- [edge] instance 0 ('a person')")
    assert lines[2].startswith("- [too_small] instance 1 ('a bird')")
    assert str(warnings[0]).startswith("[edge] instance 0:")


def test_bad_arguments_are_named():
    layout = lay(box("a person", (100, 300, 160, 400), "person"))
    with pytest.raises(ValueError, match="latent_scale"):
        check_layout(layout, latent_scale=0)
    with pytest.raises(ValueError, match="generation_size"):
        check_layout(layout, generation_size=(0, 512))
    with pytest.raises(TypeError, match="Layout"):
        check_layout({"annos": []})


def test_caption_similarity_ignores_articles():
    assert caption_similarity("A red car", "the red car") == 1.0
    assert caption_similarity("a red car", "a blue bus") == 0.0


# --------------------------------------------------------------------------------------------- the LLM corpus

def _llm(name):
    path = os.path.join(LLM_DIR, f"chatgpt_descriptions_bboxes{name}.json")
    if not os.path.isfile(path):
        pytest.skip(f"{path} not found (set INSTDIFF_LAYOUTS_DIR)")
    return load_layout(path).layout


def test_llm_corpus_counts_per_kind_and_stays_conservative():
    if len(LLM_FILES) < 50:
        pytest.skip(f"LLM layouts not found under {LLM_DIR}")
    per_kind, files_per_kind, flagged = collections.Counter(), collections.Counter(), 0
    for path in LLM_FILES:
        layout = load_layout(path).layout
        warnings = check_layout(layout)
        assert all(isinstance(w, LayoutWarning) and w.kind in KINDS for w in warnings)
        assert all(0 <= w.index < len(layout.instances) for w in warnings)
        assert check_layout(layout) == warnings                    # deterministic, layout untouched
        per_kind.update(w.kind for w in warnings)
        files_per_kind.update({w.kind for w in warnings})
        flagged += bool(warnings)
    print(f"\nlayout check over {len(LLM_FILES)} LLM layouts: {flagged} files flagged; warnings per kind "
          f"{dict(per_kind)}; files per kind {dict(files_per_kind)}")
    assert 0 < flagged < len(LLM_FILES) / 2          # finds real problems, but a warning stays worth reading
    assert per_kind["edge"] > 0 and per_kind["perspective"] > 0


def test_llm_people_on_the_bottom_edge():
    # bboxes2: four people whose boxes end at y = 512 (feet cut), the car/bus/etc. are inside
    warnings = check_layout(_llm(2))
    assert kinds(warnings) == [("edge", i, None) for i in range(4)]
    assert all("bottom edge" in w.message for w in warnings)


def test_llm_truck_cut_at_the_right_edge():
    # bboxes36: 'A large industrial truck' at [400, 200, 512, 300] (xyxy)
    warnings = [w for w in check_layout(_llm(36)) if w.kind == "edge"]
    assert kinds(warnings) == [("edge", 1, None)] and "right edge" in warnings[0].message


def test_llm_cow_far_larger_than_the_nearer_truck():
    # bboxes23: cow [320, 220, 420, 330] (110 px, bottom 330) behind a truck [350, 380, 510, 420] (40 px, bottom
    # 420): the cow is drawn at 5.5x the truck's scale
    warnings = check_layout(_llm(23))
    assert kinds(warnings) == [("perspective", 1, 5)]
    assert "5.5x" in warnings[0].message


def test_llm_bench_taller_than_the_bus_in_front():
    # bboxes27: an empty bench 80 px tall (bottom 280) behind a bus 70 px tall (bottom 350)
    assert ("perspective", 6, 2) in kinds(check_layout(_llm(27)))


def test_llm_plausible_layouts_pass():
    # bboxes10: four 200 px people, a bench, a small dog and a bicycle on consistent ground lines
    assert check_layout(_llm(10)) == []
    # bboxes82: a sitting person 130 px next to a SMALL dog 20 px: a small dog may be tiny, no perspective warning
    assert [w for w in check_layout(_llm(82)) if w.kind == "perspective"] == []


# --------------------------------------------------------------------------------------------- tracks

def _ball_track(n=16):
    """Slot 0: a static, well-placed person; slot 1: a ball moving down, cut by the bottom edge on frames 3-7,
    absent on frames 8-9 and back (inside) from frame 10; slot 2: a dog, on frames 12-15 on top of the person
    (a duplicate)."""
    from instancediffusion_core.layout.frames import FrameLayouts

    person = box("a person", (100, 200, 160, 400), "person")
    dog_far = box("a dog", (300, 330, 370, 400), "dog")
    dog_on = box("a dog", (100, 200, 160, 400), "dog")
    rows = []
    for f in range(n):
        if f < 3:
            ball = box("a red ball", (250, 300 + 10 * f, 300, 350 + 10 * f))
        elif f < 8:
            ball = box("a red ball", (250, 462 + f, 300, 512))          # cut by the bottom edge, moving
        elif f < 10:
            ball = None
        else:
            ball = box("a red ball", (250, 100, 300, 150))
        rows.append((person, ball, dog_on if f >= 12 else dog_far))
    return FrameLayouts(512, 512, "scene", ("a person", "a red ball", "a dog"), rows)


def test_track_is_checked_on_every_frame_and_each_warning_reported_once_with_its_frames():
    from instancediffusion_core.layout.check import check_frames, check_layout_or_frames

    track = _ball_track()
    found = check_layout_or_frames(track)
    assert found == check_frames(track)
    assert kinds(found) == [("edge", 1, None), ("duplicate", 2, 0)]
    edge, dup = found
    assert edge.frames == (3, 4, 5, 6, 7) and edge.message.startswith("frames 3-7 (numbers of frame 3): box ")
    assert "bottom edge" in edge.message and "(250, 465, 300, 512)" in edge.message     # frame 3's box
    assert dup.frames == (12, 13, 14, 15) and dup.message.startswith("frames 12-15")
    assert "instance 0 ('a person')" in dup.message                                        # slot indices
    text = format_warnings(found, track)
    assert text.splitlines()[0] == "layout check: 2 warnings (1 edge, 1 duplicate)"
    assert "- [edge] instance 1 ('a red ball'): frames 3-7" in text
    assert "- [duplicate] instance 2 ('a dog'): frames 12-15" in text


def test_track_warning_indices_are_slots_when_an_earlier_slot_is_absent():
    """Slot 0 absent: the frame's instances shift, the warnings must still name slots 1 and 2."""
    from instancediffusion_core.layout.frames import FrameLayouts
    from instancediffusion_core.layout.check import check_layout_or_frames

    a = box("a kite", (10, 10, 60, 60), "kite")
    b = box("a person", (100, 300, 160, 512), "person")                  # cut by the bottom edge
    c = box("a man", (120, 350, 140, 450), "person")                     # inside b, same category
    track = FrameLayouts(512, 512, "", ("a kite", "a person", "a man"), ((a, b, c), (None, b, c), (None, b, c)))
    found = check_layout_or_frames(track)
    assert kinds(found) == [("edge", 1, None), ("contains", 2, 1)]
    assert all(w.frames == (0, 1, 2) for w in found)
    assert found[0].message.startswith("all 3 frames (numbers of frame 0): ")
    assert "instance 1 ('a person')" in found[1].message


def test_track_different_findings_of_one_kind_stay_apart_and_static_tracks_match_the_layout():
    from instancediffusion_core.layout.frames import FrameLayouts
    from instancediffusion_core.layout.check import check_layout_or_frames

    left = box("a car", (0, 300, 100, 400), "car")
    right = box("a car", (412, 300, 512, 400), "car")
    inside = box("a car", (200, 300, 300, 400), "car")
    track = FrameLayouts(512, 512, "", ("a car",), [(left,), (left,), (inside,), (right,), (left,)])
    found = check_layout_or_frames(track)
    assert [(w.frames, "left" in w.message) for w in found] == [((0, 1, 4), True), ((3,), False)]
    assert found[0].message.startswith("frames 0-1, 4 (numbers of frame 0)")
    assert found[1].message.startswith("frame 3: ") and "right edge" in found[1].message
    # a static layout as a track: the same findings as the layout, on all frames
    layout = lay(box("a person", (100, 300, 160, 512), "person"), box("a bird", (10, 10, 20, 20), "bird"))
    static = FrameLayouts.from_layout(layout, 16)
    assert kinds(check_layout_or_frames(static)) == kinds(check_layout(layout))
    assert all(w.frames == tuple(range(16)) and w.message.startswith("all 16 frames")
               for w in check_layout_or_frames(static))
    assert check_layout_or_frames(layout) == check_layout(layout)          # a Layout: unchanged
