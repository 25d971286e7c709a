"""Mask -> 256 polygon points (official sampler, spec 3.3) and scribble -> 20 points, checked against the fixture."""

import numpy as np
import pytest
from instdiff_testkit import parity as parity_sets

from instancediffusion_core.layout.mask_geometry import (find_contours, interior_points, mask_boundary_points, mask_extent,
                                                  polygon_points_from_mask, resample_scribble)


@pytest.fixture(scope="module")
def fixture_inputs():
    return parity_sets.numpy_inputs_and_scenario()


# ------------------------------------------------------------------------------------------------ marching squares

def test_find_contours_corner_pixel_matches_documented_example():
    # scikit-image's documented example: a single high corner pixel at level 0.5 -> one open segment
    a = np.zeros((3, 3))
    a[0, 0] = 1
    (c,) = find_contours(a, 0.5)
    np.testing.assert_array_equal(c, [[0.0, 0.5], [0.5, 0.0]])


def test_find_contours_closed_diamond_around_centre_pixel():
    a = np.zeros((3, 3))
    a[1, 1] = 1
    (c,) = find_contours(a, 0.5)
    assert np.array_equal(c[0], c[-1]) and len(c) == 5  # closed loop of 4 distinct points
    assert {tuple(p) for p in c} == {(0.5, 1.0), (1.0, 0.5), (1.5, 1.0), (1.0, 1.5)}


def test_find_contours_separate_objects_come_in_scan_order():
    a = np.zeros((8, 8))
    a[5, 5] = 1
    a[1, 2] = 1
    first, second = find_contours(a, 0.5)
    assert np.unique(first, axis=0)[:, 0].mean() == pytest.approx(1.0)
    assert np.unique(second, axis=0)[:, 0].mean() == pytest.approx(5.0)


def test_level_zero_contour_runs_through_background_pixels():
    """The official level-0 quirk: on a padded binary mask the contour passes through the background pixels next
    to the object (padded frame), not between pixels."""
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2:5] = True  # rows 1-2, cols 2-4
    pts = mask_boundary_points(mask)
    assert np.all(pts == np.round(pts))  # integer positions only
    padded = np.pad(mask, 1)
    for x, y in pts.astype(int):
        assert not padded[y, x]  # every contour point is a background pixel of the padded mask
    assert pts[:, 0].min() == 2 and pts[:, 0].max() == 6 and pts[:, 1].min() == 1 and pts[:, 1].max() == 4


def test_polygon_points_of_fixture_mask_equal_official_sampler(fixture_inputs):
    inputs, _ = fixture_inputs
    seg_masks, slots = inputs["grounding.seg_masks"], inputs["grounding.seg_slots"]
    h, w = seg_masks.shape[1:]
    compared = 0
    for mask, slot in zip(seg_masks, slots):
        mask = mask > 0.5
        if mask.sum() < 128:
            continue  # the official sampler draws random pixels for tiny masks; not reproducible
        points = polygon_points_from_mask(mask)
        assert points.shape == (256, 2)
        ours = np.minimum(points / np.array([w, h]), 1.0).astype(np.float32).reshape(-1)
        expected = inputs["grounding.polygons"][0, int(slot)]
        err = float(np.abs(ours - expected).max())
        print(f"polygon points vs fixture, slot {int(slot)}: max abs error {err:.3g} (normalised units)")
        assert err == 0.0
        compared += 1
    assert compared >= 1


def test_polygon_points_structure():
    yy, xx = np.mgrid[:100, :120]
    mask = ((xx - 60) / 40.0) ** 2 + ((yy - 50) / 25.0) ** 2 <= 1
    pts = polygon_points_from_mask(mask)
    assert pts.shape == (256, 2)
    dist = np.hypot(pts[:, 0], pts[:, 1])
    assert np.all(np.diff(dist) >= 0)  # ordered by distance to (0, 0)
    # official quirk: interior points are pixels of the unpadded mask, boundary points live in the padded frame
    interior = interior_points(mask, 128)
    assert mask[interior[:, 1].astype(int), interior[:, 0].astype(int)].all()
    boundary = {tuple(p) for p in mask_boundary_points(mask)}
    interior_set = {tuple(p) for p in interior}
    assert all(tuple(p) in boundary or tuple(p) in interior_set for p in pts)
    assert sum(tuple(p) in interior_set for p in pts) >= 128
    x0, y0, x1, y1 = mask_extent(mask)
    assert pts[:, 0].min() >= x0 and pts[:, 0].max() <= x1 + 1 and pts[:, 1].max() <= y1 + 1


def test_interior_points_spread_from_centroid():
    mask = np.zeros((60, 60), bool)
    mask[10:50, 10:50] = True
    pts = interior_points(mask, 128)
    centre = np.array([29.5, 29.5])
    d = np.hypot(*(pts - centre).T)
    assert np.all(np.diff(d) >= -1e-9)  # chunk middles in order of distance to the centroid
    assert d[0] < 2 and d[-1] > 20  # from the centre to the rim


def test_tiny_mask_uses_rng_or_deterministic_spread():
    mask = np.zeros((20, 20), bool)
    mask[5:8, 5:9] = True  # 12 pixels < 128
    a = polygon_points_from_mask(mask)
    b = polygon_points_from_mask(mask)
    np.testing.assert_array_equal(a, b)  # no hidden randomness by default
    c = polygon_points_from_mask(mask, rng=np.random.default_rng(1))
    assert c.shape == (256, 2)
    for pts in (a, c):
        inner = interior_points(mask, 128, rng=np.random.default_rng(1)) if pts is c else interior_points(mask, 128)
        assert mask[inner[:, 1].astype(int), inner[:, 0].astype(int)].all()


def test_empty_mask_has_no_polygon():
    assert polygon_points_from_mask(np.zeros((10, 10), bool)) is None
    assert mask_extent(np.zeros((10, 10), bool)) is None


def test_single_pixel_mask_gives_a_polygon():
    mask = np.zeros((10, 10), bool)
    mask[4, 6] = True
    pts = polygon_points_from_mask(mask)
    assert pts.shape == (256, 2)
    assert set(map(tuple, mask_boundary_points(mask))) == {(7.0, 4.0), (6.0, 5.0), (7.0, 6.0), (8.0, 5.0)}


# ------------------------------------------------------------------------------------------------ scribbles

def test_resample_scribble_equal_spacing_and_order():
    pts = resample_scribble([(0, 0), (30, 0), (30, 40)], n=8)  # length 70 -> steps of 10
    assert pts.shape == (8, 2)
    expected = {(0, 0), (10, 0), (20, 0), (30, 0), (30, 10), (30, 20), (30, 30), (30, 40)}
    assert {tuple(np.round(p, 9)) for p in pts} == expected
    assert np.all(np.diff(np.hypot(pts[:, 0], pts[:, 1])) >= 0)


def test_resample_scribble_skips_repeated_points():
    a = resample_scribble([(0, 0), (10, 0), (10, 0), (20, 0)], n=5)
    np.testing.assert_allclose(sorted(a[:, 0]), [0, 5, 10, 15, 20])
    with pytest.raises(ValueError, match="distinct"):
        resample_scribble([(3, 3), (3, 3)])


def test_resample_scribble_matches_fixture(fixture_inputs):
    inputs, scenario = fixture_inputs
    w, h = scenario["canvas"]["width"], scenario["canvas"]["height"]
    checked = 0
    for slot, spec in enumerate(scenario["instances"]):
        if "scribble" not in spec:
            continue
        pts = resample_scribble(spec["scribble"], 20)
        ours = np.minimum(pts / np.array([w, h]), 1.0).astype(np.float32).reshape(-1)
        err = float(np.abs(ours - inputs["grounding.scribbles"][0, slot]).max())
        print(f"scribble points vs fixture, slot {slot}: max abs error {err:.3g}")
        assert err <= 1e-6
        checked += 1
    assert checked >= 1
