"""Every real layout file loads: official demos (x, y, w, h) and LLM-written ones (mostly x1, y1, x2, y2).

The files come from ``INSTDIFF_LAYOUTS_DIR`` (default ``tests/fixtures/layouts``), searched recursively.
"""
import collections
import glob
import json
import os

import pytest

from instancediffusion_core.layout.json_io import load_layout

LAYOUTS = os.environ.get("INSTDIFF_LAYOUTS_DIR",
                         os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "layouts"))
FILES = sorted(glob.glob(os.path.join(LAYOUTS, "**", "*.json"), recursive=True))


def _id(path):
    return os.path.relpath(path, LAYOUTS)


def _fits(box, fmt, w, h):
    x0, y0 = box[0], box[1]
    x1, y1 = (box[0] + box[2], box[1] + box[3]) if fmt == "xywh" else (box[2], box[3])
    return 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


def test_layout_files_are_present():
    assert len(FILES) >= 1, f"no layout files under {LAYOUTS}"


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_layout_file_loads_with_boxes_on_canvas_and_reported_decision(path):
    loaded = load_layout(path)
    layout = loaded.layout
    with open(path) as f:
        raw = json.load(f)
    assert (layout.width, layout.height) == (raw["width"], raw["height"])
    assert 1 <= len(layout.instances) <= 30
    for inst in layout.instances:
        if inst.bbox is not None:
            x0, y0, x1, y1 = inst.bbox
            assert 0 <= x0 < x1 <= layout.width and 0 <= y0 < y1 <= layout.height, inst
        if inst.mask is not None:
            assert inst.mask.shape == (layout.height, layout.width) and inst.mask.any()
    assert loaded.bbox_format_used in ("xywh", "xyxy", "none")
    decision = [w for w in loaded.warnings if w.startswith("bbox format:")]
    assert len(decision) == 1, loaded.warnings
    # the decision must be consistent with the file: a reading is only chosen over a fully fitting other reading
    # if it fits too
    boxes = [a["bbox"] for a in raw["annos"] if a.get("bbox")]
    if loaded.bbox_format_used == "none":
        assert not boxes
    else:
        other = "xyxy" if loaded.bbox_format_used == "xywh" else "xywh"
        if all(_fits(b, other, layout.width, layout.height) for b in boxes):
            assert all(_fits(b, loaded.bbox_format_used, layout.width, layout.height) for b in boxes)
    # every annotation is accounted for: loaded, or skipped with a warning naming it
    skipped = [w for w in loaded.warnings if "skipped" in w]
    assert len(layout.instances) + len(skipped) == len(raw["annos"])


def test_official_demos_are_read_as_the_official_format():
    demos = [p for p in FILES if os.path.basename(p).startswith("demo_")]
    if not demos:
        pytest.skip("no official demo files (demo_*.json) in the layouts folder")
    for path in demos:
        assert load_layout(path).bbox_format_used in ("xywh", "none"), path


def test_count_box_format_decisions(capsys):
    """Each file's automatic reading must be the only one under which all its boxes fit (when exactly one does),
    ``none`` without boxes, and the official demos (documented [x, y, w, h]) must read as xywh; then print the
    tally."""
    counts = collections.Counter()
    per_group = collections.defaultdict(collections.Counter)
    wrong = []
    for path in FILES:
        used = load_layout(path).bbox_format_used
        with open(path) as f:
            raw = json.load(f)
        boxes = [a["bbox"] for a in raw["annos"] if a.get("bbox")]
        fits = {fmt for fmt in ("xywh", "xyxy")
                if boxes and all(_fits(b, fmt, raw["width"], raw["height"]) for b in boxes)}
        group = os.path.dirname(_id(path)) or "."
        if not boxes:
            expected = {"none"}
        elif group == "official-demos":
            expected = {"xywh"}
        else:
            expected = fits if len(fits) == 1 else {"xywh", "xyxy"}
        if used not in expected:
            wrong.append(f"{_id(path)}: decided {used}, expected {sorted(expected)}")
        counts[used] += 1
        per_group[group][used] += 1
    assert not wrong, "\n".join(wrong)
    assert sum(counts.values()) == len(FILES)
    with capsys.disabled():
        print(f"\nbbox format decisions over {len(FILES)} layout files: "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        for group, c in sorted(per_group.items()):
            print(f"  {group}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))