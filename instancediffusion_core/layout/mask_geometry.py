"""Mask -> the official 256 polygon points (spec 3.3), scribble -> the model's 20 points.

The polygon branch of the position net was trained on points made by the official
``sample_sparse_points_from_mask``; its quirks are part of the input distribution, so they are reproduced here
exactly: contours are taken at level 0 (not 0.5) on the 1-px padded mask, so they run through the background
pixels just outside the object and keep the padded frame (about +1 px); the points are ordered by distance to
(0, 0), not along the contour. ``find_contours`` below is our own marching squares with the same segment table
and the same contour assembly (and therefore the same point order) as ``skimage.measure.find_contours``.
"""
from __future__ import annotations

from collections import deque

import numpy as np

# For each of the 16 corner cases (bit 1 = upper-left above level, 2 = upper-right, 4 = lower-left,
# 8 = lower-right): the segments (from-edge, to-edge) drawn in that square, low values on the left of the line.
# Saddles 6 and 9 use the "low values fully connected" choice (skimage's default fully_connected='low').
_T, _B, _L, _R = 0, 1, 2, 3
_CASE_SEGMENTS = {
    1: ((_T, _L),), 2: ((_R, _T),), 3: ((_R, _L),), 4: ((_L, _B),), 5: ((_T, _B),),
    6: ((_R, _T), (_L, _B)), 7: ((_R, _B),), 8: ((_B, _R),), 9: ((_T, _L), (_B, _R)),
    10: ((_B, _T),), 11: ((_B, _L),), 12: ((_L, _R),), 13: ((_T, _R),), 14: ((_L, _T),),
}


def _fraction(from_value: np.ndarray, to_value: np.ndarray, level: float) -> np.ndarray:
    """Where ``level`` lies between two corner values (0 when they are equal), as in linear interpolation."""
    diff = to_value - from_value
    safe = np.where(diff == 0, 1.0, diff)
    return np.where(diff == 0, 0.0, (level - from_value) / safe)


def _contour_segments(image: np.ndarray, level: float) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Marching-squares segments in scan order (row by row, left to right), each ((r, c), (r, c))."""
    a = np.asarray(image, dtype=np.float64)
    ul, ur, ll, lr = a[:-1, :-1], a[:-1, 1:], a[1:, :-1], a[1:, 1:]
    case = ((ul > level) * 1 + (ur > level) * 2 + (ll > level) * 4 + (lr > level) * 8).astype(np.int8)
    rows, cols = np.nonzero((case != 0) & (case != 15))  # row-major order = scan order
    if rows.size == 0:
        return []
    u_l, u_r, l_l, l_r = ul[rows, cols], ur[rows, cols], ll[rows, cols], lr[rows, cols]
    r0, c0 = rows.astype(np.float64), cols.astype(np.float64)
    edges = (
        (r0, c0 + _fraction(u_l, u_r, level)),          # top
        (r0 + 1.0, c0 + _fraction(l_l, l_r, level)),    # bottom
        (r0 + _fraction(u_l, l_l, level), c0),          # left
        (r0 + _fraction(u_r, l_r, level), c0 + 1.0),    # right
    )
    edge_pts = [list(zip(er.tolist(), ec.tolist())) for er, ec in edges]
    segments = []
    for n, k in enumerate(case[rows, cols].tolist()):
        for e_from, e_to in _CASE_SEGMENTS[k]:
            segments.append((edge_pts[e_from][n], edge_pts[e_to][n]))
    return segments


def _assemble(segments) -> list[np.ndarray]:
    """Chain segments into contours. Contours are numbered by their first segment and joined keeping the older
    number, so the result comes out in scan order of first appearance (the order skimage returns)."""
    contours: dict[int, deque] = {}
    starts: dict = {}
    ends: dict = {}
    next_id = 0
    for p_from, p_to in segments:
        if p_from == p_to:  # a corner exactly at the level; the neighbouring squares carry it
            continue
        tail, tail_id = starts.pop(p_to, (None, None))
        head, head_id = ends.pop(p_from, (None, None))
        if tail is not None and head is not None:
            if tail is head:
                head.append(p_to)  # closes the loop
            elif tail_id > head_id:
                head.extend(tail)
                ends.pop(tail[-1])
                contours.pop(tail_id, None)
                starts[head[0]] = (head, head_id)
                ends[head[-1]] = (head, head_id)
            else:
                tail.extendleft(reversed(head))
                starts.pop(head[0])
                contours.pop(head_id, None)
                starts[tail[0]] = (tail, tail_id)
                ends[tail[-1]] = (tail, tail_id)
        elif tail is None and head is None:
            contour = deque((p_from, p_to))
            contours[next_id] = contour
            starts[p_from] = (contour, next_id)
            ends[p_to] = (contour, next_id)
            next_id += 1
        elif head is None:
            tail.appendleft(p_from)
            starts[p_from] = (tail, tail_id)
        else:
            head.append(p_to)
            ends[p_to] = (head, head_id)
    return [np.array(c, dtype=np.float64) for _, c in sorted(contours.items())]


def find_contours(image: np.ndarray, level: float) -> list[np.ndarray]:
    """Iso-contours of a 2-D array at ``level`` as a list of ``[n, 2]`` (row, col) arrays (marching squares with
    linear interpolation; values equal to the level count as "below")."""
    image = np.asarray(image)
    if image.ndim != 2 or image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"find_contours needs a 2-D array of at least 2x2, got shape {image.shape}")
    return _assemble(_contour_segments(image, float(level)))


def mask_boundary_points(mask: np.ndarray) -> np.ndarray:
    """All contour points of the official polygon step, concatenated: ``[n, 2]`` (x, y) in the 1-px padded frame.

    As ``binary_mask_to_polygon(mask, tolerance=0)``: pad by 1, contours at level 0 (the official code passes its
    tolerance as the level), close each contour, drop those with fewer than 3 points, swap to (x, y).
    """
    padded = np.pad(np.asarray(mask, dtype=np.float64), 1)
    parts = []
    for contour in find_contours(padded, 0.0):
        if not np.array_equal(contour[0], contour[-1]):
            contour = np.vstack([contour, contour[:1]])
        if len(contour) < 3:
            continue
        parts.append(np.maximum(contour[:, ::-1], 0.0))
    return np.concatenate(parts) if parts else np.zeros((0, 2))


def _distance_order(points: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Stable order of ``points`` by Euclidean distance to ``origin`` (ties keep their input order)."""
    d = np.asarray(points, dtype=np.float64) - origin
    return np.argsort(np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]), kind="stable")


def interior_points(mask: np.ndarray, k: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """``k`` foreground pixels ``[k, 2]`` (x, y) spread from the centroid outwards (official
    ``sample_uniform_sparse_points``): pixels sorted by distance to the mask centroid, cut into ``k`` equal chunks,
    the middle pixel of each chunk. With fewer than ``k`` pixels the official code picks at random with
    replacement; here that uses ``rng`` when given, else evenly spaced indices (deterministic, so results cache)."""
    fg = np.argwhere(np.asarray(mask, dtype=bool))  # (row, col), row-major
    n = len(fg)
    if n == 0:
        return np.zeros((0, 2))
    if n < k:
        idx = rng.integers(0, n, size=k) if rng is not None else (np.arange(k) * n) // k
        chosen = fg[idx]
    else:
        centre = fg.sum(axis=0, dtype=np.float64) / n
        ordered = fg[_distance_order(fg, centre)]
        per_chunk = n // k
        chosen = ordered[np.arange(k) * per_chunk + per_chunk // 2]
    return chosen[:, ::-1].astype(np.float64)


def polygon_points_from_mask(mask: np.ndarray, k: int = 256,
                             rng: np.random.Generator | None = None) -> np.ndarray | None:
    """The official polygon input of a mask: ``[k, 2]`` (x, y) pixels, or None for an empty mask.

    ``k // 2`` boundary points at ``int(linspace(0, n - 1, k // 2))`` of the concatenated contours, ``k - k // 2``
    interior points (``interior_points``), merged interior first and sorted by distance to (0, 0) (stable).
    Coordinates stay in the padded frame (+1 px) like the official code; normalise and clamp at 1.0 afterwards.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"polygon_points_from_mask needs a 2-D mask, got shape {mask.shape}")
    boundary = mask_boundary_points(mask)
    if len(boundary) == 0:
        return None
    n_boundary = k // 2
    picks = np.linspace(0, len(boundary) - 1, n_boundary).astype(np.int64)
    merged = np.concatenate([interior_points(mask, k - n_boundary, rng), boundary[picks]])
    return merged[_distance_order(merged, np.zeros(2))]


def resample_scribble(points, n: int = 20) -> np.ndarray:
    """``n`` points ``[n, 2]`` equally spaced by arc length along the polyline (both ends included), then ordered by
    distance to (0, 0) (stable) like the official scribble samplers. Pixels in, pixels out."""
    if n < 2:
        raise ValueError(f"resample_scribble: n must be at least 2 (both ends are kept), got {n}")
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 2:
        raise ValueError(f"a scribble needs at least 2 points, got {len(pts)}")
    seg_len = np.hypot(*(pts[1:] - pts[:-1]).T)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    total = cum[-1]
    if total <= 0:
        raise ValueError("a scribble needs at least 2 distinct points (its length is 0)")
    targets = total * np.arange(n) / (n - 1)
    seg = np.clip(np.searchsorted(cum, targets, side="right") - 1, 0, len(seg_len) - 1)
    # skip zero-length segments: searchsorted(side="right") already lands on the last segment starting at target
    frac = np.where(seg_len[seg] > 0, (targets - cum[seg]) / np.where(seg_len[seg] > 0, seg_len[seg], 1.0), 0.0)
    out = pts[seg] + frac[:, None] * (pts[seg + 1] - pts[seg])
    out[-1] = pts[-1]
    return out[_distance_order(out, np.zeros(2))]


def mask_extent(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """COCO-style box of a mask in pixels ``(x0, y0, x1, y1)`` with ``x1 = last column + 1``; None if empty."""
    mask = np.asarray(mask, dtype=bool)
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return None
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)

