"""Grounding tensors: parity with the official-code fixture, null / single-instance inputs, and the bug fixes."""
import math

import numpy as np
import pytest
import torch
from instdiff_testkit import parity as parity_sets
from instdiff_testkit.parity_scenario import scenario_layout

from instancediffusion_core.layout.grounding import (GROUNDING_KEYS, build_grounding, instance_grounding, null_grounding,
                                              resize_nearest, stack_groundings)
from instancediffusion_core.layout.types import Instance, Layout, LayoutError
from instancediffusion_core.layout.mask_geometry import resample_scribble

SHAPES = {"boxes": (4,), "masks": (), "positive_embeddings": (768,), "points": (2,), "scribbles": (40,),
          "polygons": (512,), "segs": (512, 512)}


@pytest.fixture(scope="module")
def parity():
    return parity_sets.numpy_inputs_and_scenario()


def test_scenario_masks_rasterise_like_the_fixture(parity):
    inputs, scenario = parity
    layout = scenario_layout(scenario)
    for mask, slot in zip(inputs["grounding.seg_masks"], inputs["grounding.seg_slots"]):
        ours = layout.instances[int(slot)].mask
        assert ours is not None and np.array_equal(ours, mask > 0.5)


def test_build_grounding_reproduces_fixture_batch_element_0(parity):
    inputs, scenario = parity
    layout = scenario_layout(scenario)
    n = len(layout.instances)
    text = torch.from_numpy(inputs["grounding.positive_embeddings"][0, :n])
    g = build_grounding(layout, text)
    seg_size = g["segs"].shape[-1]
    expected_segs = np.zeros((30, seg_size, seg_size), np.float32)
    for mask, slot in zip(inputs["grounding.seg_masks"], inputs["grounding.seg_slots"]):
        expected_segs[int(slot)] = resize_nearest(mask > 0.5, seg_size)
    tiny_masks = [int(s) for m, s in zip(inputs["grounding.seg_masks"], inputs["grounding.seg_slots"])
                  if m.sum() < 128]
    errors = {}
    for key in GROUNDING_KEYS:
        expected = expected_segs if key == "segs" else inputs[f"grounding.{key}"][0]
        ours = g[key][0].numpy()
        assert ours.shape == expected.shape and g[key].dtype == torch.float32, key
        if key == "polygons":  # random interior points for masks under 128 px are not reproducible
            keep = [s for s in range(30) if s not in tiny_masks]
            ours, expected = ours[keep], expected[keep]
        errors[key] = float(np.abs(ours - expected).max())
    print("grounding vs fixture, max abs error: " + ", ".join(f"{k} {v:.3g}" for k, v in errors.items()))
    for key in ("boxes", "masks", "positive_embeddings", "points", "scribbles"):
        assert errors[key] <= 1e-6, key
    assert errors["polygons"] <= 1e-6  # measured: exactly 0 (find_contours ordering replicated)
    assert errors["segs"] == 0.0


# ------------------------------------------------------------------------------------------------ behaviour

def _text(n, d=8):
    return torch.arange(n * d, dtype=torch.float32).reshape(n, d) + 1


def test_keys_shapes_and_padding():
    layout = Layout(200, 100, "", (Instance("a", bbox=(20, 10, 120, 60)),))
    g = build_grounding(layout, _text(1), seg_size=32)
    assert set(g) == set(GROUNDING_KEYS)
    for key, tail in SHAPES.items():
        tail = {"positive_embeddings": (8,), "segs": (32, 32)}.get(key, tail)
        assert tuple(g[key].shape) == (1, 30) + tail and g[key].dtype == torch.float32, key
        assert not g[key][0, 1:].any(), f"{key}: padding slots must be zero"
    assert g["boxes"][0, 0].tolist() == pytest.approx([0.1, 0.1, 0.6, 0.6])
    assert g["points"][0, 0].tolist() == pytest.approx([0.35, 0.35])  # box centre
    assert g["masks"][0].tolist() == [1.0] + [0.0] * 29
    assert not g["scribbles"].any() and not g["polygons"].any() and not g["segs"].any()


def test_points_and_scribbles_stay_in_their_own_slots():
    """Official bug 3: points/scribbles were collected only for instances that had them and so shifted slots."""
    layout = Layout(100, 100, "", (
        Instance("box", bbox=(0, 0, 20, 20)),
        Instance("scribble+point", bbox=(50, 50, 90, 90), point=(60, 70), scribble=((50, 50), (90, 90))),
        Instance("box2", bbox=(10, 60, 30, 80)),
    ))
    g = build_grounding(layout, _text(3))
    assert g["points"][0, :3].tolist() == [pytest.approx([0.1, 0.1]), pytest.approx([0.6, 0.7]),
                                           pytest.approx([0.2, 0.7])]
    assert not g["scribbles"][0, 0].any() and not g["scribbles"][0, 2].any()
    scr = g["scribbles"][0, 1].reshape(20, 2)
    assert scr[0].tolist() == pytest.approx([0.5, 0.5]) and scr[-1].tolist() == pytest.approx([0.9, 0.9])


def test_scribble_is_resampled_per_instance():
    """Official bug 2: the JSON scribble path resampled the list of instances; here each polyline -> 20 points."""
    scribble = ((10, 10), (50, 10), (50, 90))
    layout = Layout(100, 100, "", (Instance("s", scribble=scribble),))
    g = build_grounding(layout, _text(1))
    expected = np.minimum(resample_scribble(scribble) / 100.0, 1.0).reshape(-1)
    np.testing.assert_allclose(g["scribbles"][0, 0].numpy(), expected, atol=1e-7)
    # scribble-only: no box, point = mean of the 20 points
    assert not g["boxes"][0, 0].any()
    np.testing.assert_allclose(g["points"][0, 0].numpy(), expected.reshape(20, 2).mean(0), atol=1e-6)


def test_mask_only_instance_gets_box_from_extent_and_single_instance_keeps_slot_axis():
    """Official bugs 1 and 4: masks are used (polygons + segs), and one instance still lands in slot 0."""
    mask = np.zeros((50, 100), bool)
    mask[10:30, 20:60] = True
    layout = Layout(100, 50, "", (Instance("blob", mask=mask),))
    g = build_grounding(layout, _text(1), seg_size=64)
    assert g["boxes"][0, 0].tolist() == pytest.approx([0.2, 0.2, 0.6, 0.6])
    assert g["points"][0, 0].tolist() == pytest.approx([0.4, 0.4])
    assert g["polygons"][0, 0].abs().sum() > 0 and g["polygons"][0, 0].max() <= 1.0
    seg = g["segs"][0, 0]
    assert seg.shape == (64, 64) and set(seg.unique().tolist()) == {0.0, 1.0}
    # non-square canvas stretched to the square seg: rows 10..29 of 50 -> 12.8..38.4 of 64
    rows = torch.nonzero(seg.any(dim=1)).flatten()
    cols = torch.nonzero(seg.any(dim=0)).flatten()
    assert (rows.min().item(), rows.max().item()) == (13, 38)
    assert (cols.min().item(), cols.max().item()) == (13, 38)


def test_resize_nearest_uses_floor_of_dst_times_in_over_out():
    src = np.arange(5)[None, :].repeat(3, 0) * 10 + np.arange(3)[:, None]
    out = resize_nearest(src, 4)
    assert out[0].tolist() == [0, 10, 20, 30]  # cols floor(j * 5 / 4) = 0, 1, 2, 3
    assert out[:, 0].tolist() == [0, 0, 1, 2]  # rows floor(i * 3 / 4) = 0, 0, 1, 2


def test_polygons_are_clamped_at_one():
    mask = np.zeros((40, 40), bool)
    mask[20:, 20:] = True  # touches the right and bottom edge: padded-frame points reach 41/40
    g = build_grounding(Layout(40, 40, "", (Instance("corner", mask=mask),)), _text(1))
    poly = g["polygons"][0, 0]
    assert poly.max().item() == 1.0


def test_text_features_must_match_instances():
    layout = Layout(64, 64, "", (Instance("a", point=(1, 1)), Instance("b", point=(2, 2))))
    with pytest.raises(LayoutError, match=r"text_features: shape \(3, 8\) does not fit 2 instances"):
        build_grounding(layout, _text(3))
    with pytest.raises(LayoutError, match="NaN"):
        build_grounding(layout, torch.full((2, 8), float("nan")))
    g = build_grounding(Layout(64, 64), torch.zeros(0, 8), seg_size=16)  # empty layout = null input
    assert all(not v.any() for v in g.values())


def test_null_grounding_is_all_zero_with_official_shapes():
    g = null_grounding(batch=2, text_dim=768, seg_size=512)
    for key, tail in SHAPES.items():
        assert tuple(g[key].shape) == (2, 30) + tail and not g[key].any()


def test_instance_grounding_puts_instance_in_slot_0_and_stacks():
    mask = np.zeros((32, 32), bool)
    mask[4:12, 20:30] = True
    layout = Layout(32, 32, "", (Instance("a", bbox=(0, 0, 16, 16)), Instance("b", mask=mask, point=(25, 8))))
    text = _text(2)
    full = build_grounding(layout, text, seg_size=32)
    single = instance_grounding(layout, 1, text[1], seg_size=32)
    assert single["masks"][0].tolist() == [1.0] + [0.0] * 29
    for key in GROUNDING_KEYS:
        if key != "masks":
            assert torch.equal(single[key][0, 0], full[key][0, 1]), key
        assert not single[key][0, 1:].any(), key
    stacked = stack_groundings([instance_grounding(layout, i, text[i], seg_size=32) for i in range(2)])
    assert stacked["segs"].shape == (2, 30, 32, 32)
    assert torch.equal(stacked["boxes"][0, 0], full["boxes"][0, 0])
    assert torch.equal(stacked["segs"][1, 0], full["segs"][0, 1])
    with pytest.raises(LayoutError, match="instance 2: no such instance"):
        instance_grounding(layout, 2, text[0])
    with pytest.raises(ValueError, match="item 1"):
        stack_groundings([full, build_grounding(layout, text, seg_size=16)])


def test_layout_is_not_modified():
    mask = np.zeros((16, 16), bool)
    mask[2:5, 2:5] = True
    layout = Layout(16, 16, "", (Instance("a", mask=mask, scribble=((1, 1), (5, 5))),))
    before = layout.instances[0]
    build_grounding(layout, _text(1), seg_size=16)
    assert layout.instances[0] is before and layout.instances[0].bbox is None
