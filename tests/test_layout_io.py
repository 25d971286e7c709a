"""Official layout JSON in/out: COCO RLE, polygons, bbox format decisions, warnings, errors, round trip."""
import json
import os

import numpy as np
import pytest

from instancediffusion_core.layout.types import Instance, Layout, LayoutError
from instancediffusion_core.layout.json_io import decide_bbox_format, layout_to_official, load_layout, save_layout
from instancediffusion_core.layout.rle import (RLEError, decode_counts_string, decode_rle, encode_counts_string, encode_rle,
                                        rasterize_polygons)

LAYOUTS = os.environ.get("INSTDIFF_LAYOUTS_DIR",
                         os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "layouts"))


def _doc(annos, width=512, height=512, **extra):
    return {"caption": "a scene", "width": width, "height": height, "annos": annos, **extra}


# ------------------------------------------------------------------------------------------------ RLE

def test_counts_string_hand_examples():
    # runs 1, 3: one char each ('0' + value). From the 4th run on, the difference to the run two places back is
    # stored: runs 5, 2, 3, 1 -> 5, 2, 3, (1 - 2 = -1 -> 5 bits 11111 = 31 -> 'O')
    assert decode_counts_string("13") == [1, 3]
    assert encode_counts_string([1, 3]) == "13"
    assert decode_counts_string("523O") == [5, 2, 3, 1]
    assert encode_counts_string([5, 2, 3, 1]) == "523O"
    # 100 needs two 5-bit groups: 100 = 4 + 3*32 -> (4|0x20)+48 = 'T', 3+48 = '3'
    assert encode_counts_string([100]) == "T3"
    assert decode_counts_string("T3") == [100]


def test_rle_is_column_major():
    mask = np.array([[0, 1], [1, 1]], dtype=bool)  # columns: (0,1), (1,1) -> 0,1,1,1 -> runs 1, 3
    rle = encode_rle(mask)
    assert rle == {"size": [2, 2], "counts": "13"}
    np.testing.assert_array_equal(decode_rle(rle), mask)
    np.testing.assert_array_equal(decode_rle({"size": [2, 2], "counts": [1, 3]}), mask)  # uncompressed counts


def test_rle_mask_starting_with_foreground_has_leading_zero_run():
    mask = np.ones((3, 2), dtype=bool)
    assert encode_rle(mask)["counts"] == encode_counts_string([0, 6])
    np.testing.assert_array_equal(decode_rle(encode_rle(mask)), mask)


def test_rle_round_trip_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(1, 70, size=2)
        mask = rng.random((h, w)) < rng.random()
        np.testing.assert_array_equal(decode_rle(encode_rle(mask)), mask)


def test_official_corgi_masks_reencode_to_the_same_strings():
    """The corgi demo's RLE strings were written by pycocotools: decoding and re-encoding must reproduce them."""
    with open(os.path.join(LAYOUTS, "official-demos", "demo_corgi_kitchen.json")) as f:
        data = json.load(f)
    rles = [a["mask"] for a in data["annos"] if isinstance(a["mask"], dict)]
    assert rles
    for rle in rles:
        mask = decode_rle(rle)
        assert mask.shape == tuple(rle["size"]) and mask.any()
        assert encode_rle(mask)["counts"] == rle["counts"]


@pytest.mark.parametrize("rle, fragment", [
    ({"size": [2, 2], "counts": [1, 2]}, "cover 3 pixels"),
    ({"size": [2, 2], "counts": [1, -1, 4]}, "negative run"),
    ({"size": [2], "counts": "13"}, "[height, width]"),
    ({"counts": "13"}, "'size' and 'counts'"),
    ({"size": [2, 2], "counts": "1\x7f"}, "invalid character"),
    ({"size": [2, 2], "counts": "1T"}, "truncated"),
])
def test_bad_rle_errors(rle, fragment):
    with pytest.raises(RLEError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        decode_rle(rle)


def test_polygon_rasterisation_fills_interior_and_unions_parts():
    mask = rasterize_polygons([[2, 2, 8, 2, 8, 6, 2, 6], [12, 1, 14, 1, 14, 3]], 10, 16)
    assert mask[4, 5] and mask[2, 2] and mask[6, 8]  # interior and edges
    assert not mask[7, 5] and not mask[4, 10]
    assert mask[1, 13]  # second part
    with pytest.raises(RLEError, match="polygon 0"):
        rasterize_polygons([[1, 2, 3]], 10, 10)


# ------------------------------------------------------------------------------------------------ sources

def test_load_from_dict_json_text_and_path(tmp_path):
    doc = _doc([{"caption": "a cat", "bbox": [10, 20, 30, 40], "mask": [], "category_name": "cat"}])
    path = tmp_path / "l.json"
    path.write_text(json.dumps(doc))
    results = [load_layout(doc), load_layout(json.dumps(doc, indent=2)), load_layout(str(path)), load_layout(path)]
    for r in results:
        assert r.layout == results[0].layout
        assert r.caption == "a scene" and r.layout.caption == "a scene"
        inst = r.layout.instances[0]
        assert inst.bbox == (10.0, 20.0, 40.0, 60.0) and inst.category == "cat"


def test_json_syntax_error_names_line_and_column():
    text = '{\n  "caption": "x",\n  "width": 512\n  "height": 512\n}'
    with pytest.raises(LayoutError, match=r"line 4, column 3"):
        load_layout(text)


def test_missing_file_and_wrong_top_level():
    with pytest.raises(LayoutError, match="not found"):
        load_layout("no/such/layout.json")
    with pytest.raises(LayoutError, match="top level is a list"):
        load_layout("[1, 2]")


@pytest.mark.parametrize("doc, fragment", [
    ({"caption": "x", "height": 512, "annos": []}, "'width' is missing"),
    ({"caption": "x", "width": 0, "height": 512, "annos": []}, "'width' is 0"),
    ({"caption": "x", "width": 512, "height": 512}, "'annos' is missing"),
    (_doc([{"bbox": [1, 1, 5, 5]}]), r"annos\[0\] caption is missing"),
    (_doc([{"caption": "", "bbox": [1, 1, 5, 5]}]), r"annos\[0\] caption"),
    (_doc([{"caption": "a", "bbox": [1, 1, 5]}]), r"annos\[0\] bbox.*4 finite numbers"),
    (_doc([{"caption": "a", "bbox": [1, 1, "5", 5]}]), r"annos\[0\] bbox"),
    (_doc([{"caption": "a", "point": [600, 3]}]), r"annos\[0\] .*point.*outside"),
    (_doc([{"caption": "a", "point": [1, 2, 3]}]), r"annos\[0\] point"),
    (_doc([{"caption": "a", "scribble": [1, 2, 3]}]), r"annos\[0\] scribble: 3 numbers"),
    (_doc([{"caption": "a", "scribble": [[1, 2]]}]), r"annos\[0\] .*scribble.*at least 2"),
    (_doc([{"caption": "a", "mask": {"size": [256, 512], "counts": [256 * 512]}}]), r"annos\[0\] mask: RLE size"),
    (_doc([{"caption": "a", "mask": "xyz"}]), r"annos\[0\] mask: str is not a mask"),
    (_doc([{"caption": "a", "mask": {"size": [512, 512], "counts": [5]}}]), r"annos\[0\] mask: counts cover"),
])
def test_invalid_files_raise_with_index_and_field(doc, fragment):
    with pytest.raises(LayoutError, match=fragment):
        load_layout(doc)


def test_unknown_keys_are_warned_and_ignored():
    doc = _doc([{"caption": "a", "bbox": [1, 1, 5, 5], "iscrowd": 0, "area": 25},
                {"caption": "b", "bbox": [1, 1, 5, 5], "area": 25}], image_id=7)
    r = load_layout(doc)
    joined = "\n".join(r.warnings)
    assert "'image_id'" in joined
    assert "'area' (annos 0, 1)" in joined and "'iscrowd' (annos 0)" in joined
    assert len(r.layout.instances) == 2


# ------------------------------------------------------------------------------------------------ bbox format

def test_auto_picks_xyxy_when_xywh_is_impossible():
    doc = _doc([{"caption": "a", "bbox": [50, 350, 150, 512]}, {"caption": "b", "bbox": [10, 10, 20, 30]}])
    r = load_layout(doc)
    assert r.bbox_format_used == "xyxy"
    assert r.layout.instances[0].bbox == (50.0, 350.0, 150.0, 512.0)
    assert any("xyxy (auto)" in w and "impossible" in w and "annos[0]" in w for w in r.warnings)


def test_auto_picks_xywh_when_corners_are_impossible():
    doc = _doc([{"caption": "a", "bbox": [179, 102, 153, 153]}])  # x2 < x1 as corners
    r = load_layout(doc)
    assert r.bbox_format_used == "xywh"
    assert r.layout.instances[0].bbox == (179.0, 102.0, 332.0, 255.0)
    assert any("xywh (auto)" in w for w in r.warnings)


def test_auto_assumes_official_format_when_both_fit_and_says_so():
    doc = _doc([{"caption": "a", "bbox": [10, 10, 100, 100]}])
    r = load_layout(doc)
    assert r.bbox_format_used == "xywh" and r.layout.instances[0].bbox == (10.0, 10.0, 110.0, 110.0)
    assert any("both readings" in w and "'xyxy'" in w for w in r.warnings)


def test_auto_with_no_boxes_reports_none():
    r = load_layout(_doc([{"caption": "a", "point": [3, 4]}]))
    assert r.bbox_format_used == "none"
    assert any("no boxes" in w for w in r.warnings)


def test_auto_neither_fits_takes_fewer_misfits_and_clips():
    doc = _doc([{"caption": "a", "bbox": [95, 54, 312, 316]}, {"caption": "b", "bbox": [277, 189, 89, 74]},
                {"caption": "c", "bbox": [0, 228, 763, 125]}])
    r = load_layout(doc)
    assert r.bbox_format_used == "xywh"
    assert r.layout.instances[2].bbox == (0.0, 228.0, 512.0, 353.0)
    assert any("fewer misfits" in w for w in r.warnings)
    assert any("annos[2]" in w and "clipped" in w for w in r.warnings)


def test_explicit_format_is_obeyed_and_negative_size_suggests_the_other():
    doc = _doc([{"caption": "a", "bbox": [10, 10, 100, 100]}])
    assert load_layout(doc, bbox_format="xyxy").layout.instances[0].bbox == (10.0, 10.0, 100.0, 100.0)
    assert load_layout(doc, bbox_format="xywh").layout.instances[0].bbox == (10.0, 10.0, 110.0, 110.0)
    with pytest.raises(LayoutError, match=r"annos\[0\] bbox .*negative size.*bbox_format 'xywh'"):
        load_layout(_doc([{"caption": "a", "bbox": [179, 102, 153, 153]}]), bbox_format="xyxy")
    with pytest.raises(LayoutError, match="bbox_format"):
        load_layout(doc, bbox_format="cxcywh")


def test_zero_area_box_is_dropped_and_locationless_entry_skipped():
    doc = _doc([{"caption": "a", "bbox": [0, 0, 10, 10]},
                {"caption": "painting", "bbox": [0, 512, 0, 0]},
                {"caption": "c", "bbox": [0, 512, 0, 0], "point": [5, 5]}])
    r = load_layout(doc)
    assert [i.caption for i in r.layout.instances] == ["a", "c"]
    assert r.layout.instances[1].bbox is None and r.layout.instances[1].point == (5.0, 5.0)
    assert any("annos[1]" in w and "skipped" in w for w in r.warnings)


def test_decide_bbox_format_counts_misfits_per_reading():
    fmt, reason = decide_bbox_format({0: [0.0, 0.0, 600.0, 10.0], 1: [10.0, 10.0, 5.0, 5.0]}, 512, 512)
    # as xywh box 0 leaves the canvas; as xyxy box 0 is too wide and box 1 has no area -> 1 vs 2 misfits
    assert fmt == "xywh" and "1 of 2 misfit as [x, y, w, h], 2 as [x1, y1, x2, y2]" in reason


# ------------------------------------------------------------------------------------------------ other fields

def test_masks_polygons_points_scribbles_are_read():
    rle = encode_rle(np.pad(np.ones((4, 6), bool), ((10, 498), (20, 486))))
    doc = _doc([
        {"caption": "rle", "bbox": [20, 10, 6, 4], "mask": rle},
        {"caption": "poly", "mask": [[100, 100, 140, 100, 140, 150, 100, 150]]},
        {"caption": "flat scribble", "scribble": [1, 2, 30, 40, 50, 60]},
        {"caption": "pair scribble", "scribble": [[1, 2], [30, 40]], "point": [7.5, 8.5]},
        {"caption": "empty mask", "bbox": [1, 1, 5, 5], "mask": {"size": [512, 512], "counts": [512 * 512]}},
    ])
    r = load_layout(doc)
    a, b, c, d, e = r.layout.instances
    assert a.mask.sum() == 24 and a.mask[10, 20] and not a.mask[9, 20]
    assert b.bbox is None and b.mask[125, 120] and not b.mask[125, 160]
    assert c.scribble == ((1.0, 2.0), (30.0, 40.0), (50.0, 60.0))
    assert d.scribble == ((1.0, 2.0), (30.0, 40.0)) and d.point == (7.5, 8.5)
    assert e.mask is None and any("annos[4]: mask has no pixel" in w for w in r.warnings)


def test_more_than_30_instances_error_or_truncate():
    doc = _doc([{"caption": f"i{k}", "bbox": [k, k, 10, 10]} for k in range(33)])
    with pytest.raises(LayoutError, match=r"33 instances.*30 slots.*truncate=True"):
        load_layout(doc)
    r = load_layout(doc, truncate=True)
    assert len(r.layout.instances) == 30 and r.layout.instances[-1].caption == "i29"
    assert any("kept the first 30" in w and "dropped 3" in w for w in r.warnings)


# ------------------------------------------------------------------------------------------------ writing

def _rich_layout():
    rng = np.random.default_rng(3)
    blob = np.zeros((48, 80), bool)
    blob[5:30, 10:50] = rng.random((25, 40)) > 0.3
    ring = np.zeros((48, 80), bool)
    ring[20:40, 40:70] = True
    ring[25:35, 50:60] = False
    return Layout(80, 48, "a caption with ünïcode", (
        Instance("box", bbox=(1, 2, 30.5, 40.25), category="thing"),
        Instance("box+mask", bbox=(10, 5, 50, 30), mask=blob),
        Instance("point", point=(3.5, 7)),
        Instance("scribble", scribble=((1, 1), (20.5, 30), (79, 47))),
        Instance("everything", bbox=(40, 20, 70, 40), point=(55, 22), scribble=((41, 21), (69, 39)), mask=ring),
    ))


def test_layout_to_official_format():
    doc = layout_to_official(_rich_layout())
    assert doc["width"] == 80 and doc["height"] == 48 and doc["caption"] == "a caption with ünïcode"
    a0, a1, a2, a3, _ = doc["annos"]
    assert a0["bbox"] == [1, 2, 29.5, 38.25] and a0["mask"] == [] and a0["category_name"] == "thing"
    assert a1["mask"]["size"] == [48, 80] and isinstance(a1["mask"]["counts"], str)
    assert a2 == {"caption": "point", "mask": [], "point": [3.5, 7], "category_name": ""}
    assert a3["scribble"] == [[1, 1], [20.5, 30], [79, 47]]


def test_round_trip_is_exact_including_masks(tmp_path):
    layout = _rich_layout()
    path = tmp_path / "out.json"
    save_layout(layout, path)
    loaded = load_layout(str(path), bbox_format="xywh")
    assert loaded.layout == layout
    for a, b in zip(loaded.layout.instances, layout.instances):
        if b.mask is not None:
            assert a.mask.dtype == bool and np.array_equal(a.mask, b.mask)
    assert load_layout(str(path)).layout == layout  # auto reads our own files right too


def test_mask_only_instance_is_saved_with_its_extent_as_box():
    mask = np.zeros((48, 80), bool)
    mask[7:19, 30:41] = True
    layout = Layout(80, 48, "", (Instance("blob", mask=mask),))
    doc = layout_to_official(layout)
    assert doc["annos"][0]["bbox"] == [30, 7, 11, 12]
    back = load_layout(doc).layout.instances[0]
    assert back.bbox == (30.0, 7.0, 41.0, 19.0) and np.array_equal(back.mask, mask)


@pytest.mark.parametrize("anno, field", [
    ({"caption": "", "bbox": [0, 0, 4, 4]}, "caption"),
    ({"caption": "a", "bbox": [0, 0, "x", 4]}, "bbox"),
    ({"caption": "a", "point": [1]}, "point"),
    ({"caption": "a", "scribble": [1, 2, 3]}, "scribble"),
    ({"caption": "a", "mask": {"size": [4, 4], "counts": "0"}}, "mask"),
    ({"caption": "a", "scribble": [[1, 1], [1, 1]]}, "scribble"),
])
def test_file_errors_carry_the_anno_index_and_field(anno, field):
    data = {"width": 16, "height": 16, "annos": [{"caption": "ok", "bbox": [0, 0, 4, 4]}, anno]}
    with pytest.raises(LayoutError) as e:
        load_layout(data, bbox_format="xywh")
    assert (e.value.index, e.value.field) == (1, field)
    assert "annos[1]" in str(e.value)


# ------------------------------------------------------------------------------------------- the box policy

def test_box_entirely_off_the_canvas_is_an_error_naming_the_entry_and_the_numbers():
    doc = _doc([{"caption": "a cat", "bbox": [10, 10, 50, 50]},
                {"caption": "a dog", "bbox": [600, 40, 50, 60]}])
    with pytest.raises(LayoutError) as e:
        load_layout(doc, bbox_format="xywh")
    msg = str(e.value)
    assert "annos[1]" in msg and "[600, 40, 50, 60]" in msg and "entirely outside the 512x512 canvas" in msg
    assert e.value.index == 1 and e.value.field == "bbox"
    r = load_layout(doc, bbox_format="xywh", drop_invalid=True)       # the planner's repair pass drops it instead
    assert [i.caption for i in r.layout.instances] == ["a cat"] and r.dropped[0].index == 1


def test_box_partly_off_the_canvas_is_clipped_with_a_warning():
    r = load_layout(_doc([{"caption": "a sofa", "bbox": [400, 300, 200, 100]}]), bbox_format="xywh")
    assert r.layout.instances[0].bbox == (400.0, 300.0, 512.0, 400.0)
    assert any("annos[0]" in w and "clipped to corners [400, 300, 512, 400]" in w for w in r.warnings)


def test_fit_box_is_the_one_policy():
    from instancediffusion_core.layout.box_fit import fit_box
    assert fit_box((1, 2, 30, 40), 64, 64, "instance 0") == ((1.0, 2.0, 30.0, 40.0), None)
    box, warning = fit_box((-8, 2, 30, 80), 64, 64, "instance 3 ('a cat')")
    assert box == (0.0, 2.0, 30.0, 64.0) and warning.startswith("instance 3 ('a cat') bbox:") and "clipped" in warning
    for bad, words in [((64, 0, 90, 10), "entirely outside the 64x64 canvas"), ((5, 5, 5, 9), "no size"),
                       ((0, 0, float("nan"), 3), "not finite")]:
        with pytest.raises(LayoutError, match=words):
            fit_box(bad, 64, 64, "instance 0")
