"""Layout + per-instance text features -> the official grounding tensors (30 slots, batch 1).

Keys and shapes (float32, coordinates normalised by the canvas): ``boxes [B,30,4]``, ``masks [B,30]``,
``positive_embeddings [B,30,D]``, ``points [B,30,2]``, ``scribbles [B,30,40]``, ``polygons [B,30,512]``,
``segs [B,30,S,S]``. Slot i holds instance i; unused slots are zero.

Per instance:
- box: the given box, else the mask's extent (COCO boxes are mask extents), else zeros (point/scribble only);
- point: the given point, else the centre of that box, else (scribble only) the mean of the 20 scribble points;
- scribble: 20 points equally spaced along the polyline, ordered by distance to (0, 0); zeros when absent;
- polygon: the official 256 mask points (``mask_geometry.polygon_points_from_mask``); zeros without a mask;
- seg: the mask resized to S x S by nearest neighbour (source index ``floor(dst * in / out)``).
Scribble and polygon coordinates are clamped at 1.0 like the official ``convert_points``.

Official bugs fixed here (spec section 5): (1) JSON masks are used, not replaced by empty ones, so polygons and
segs carry the masks; (2) scribbles are resampled per instance into the 40-wide tensor, not across instances;
(3) points and scribbles stay aligned with their own instance's slot when only some instances have them;
(4) a single instance keeps its slot axis (no ``squeeze``), so its seg lands in slot 0.
"""
from __future__ import annotations

import numpy as np
import torch

from .types import Instance, Layout, LayoutError, MAX_INSTANCES
from .mask_geometry import polygon_points_from_mask, resample_scribble

N_SCRIBBLE_POINTS = 20
N_POLYGON_POINTS = 256
GROUNDING_KEYS = ("boxes", "masks", "positive_embeddings", "points", "scribbles", "polygons", "segs")


def null_grounding(batch: int = 1, text_dim: int = 768, seg_size: int = 512,
                   max_objs: int = MAX_INSTANCES) -> dict[str, torch.Tensor]:
    """All-zero grounding input: what the official CFG-uncond pass feeds the position net."""
    return {
        "boxes": torch.zeros(batch, max_objs, 4),
        "masks": torch.zeros(batch, max_objs),
        "positive_embeddings": torch.zeros(batch, max_objs, text_dim),
        "points": torch.zeros(batch, max_objs, 2),
        "scribbles": torch.zeros(batch, max_objs, 2 * N_SCRIBBLE_POINTS),
        "polygons": torch.zeros(batch, max_objs, 2 * N_POLYGON_POINTS),
        "segs": torch.zeros(batch, max_objs, seg_size, seg_size),
    }


def _text_matrix(text_features, n: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(text_features) if not isinstance(text_features, torch.Tensor) else text_features)
    t = t.detach().to(device="cpu", dtype=torch.float32)
    if t.ndim == 1 and n == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[0] != n:
        raise LayoutError(f"text_features: shape {tuple(t.shape)} does not fit {n} instances; pass one pooled text "
                          f"feature per instance, shape [{n}, D]")
    if not torch.isfinite(t).all():
        raise LayoutError("text_features: contains NaN or inf; re-encode the instance captions")
    return t


def _normalised(points_xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixels -> [0, 1] and clamped at 1.0 (official ``convert_points``), float64."""
    out = np.asarray(points_xy, dtype=np.float64) / np.array([width, height], dtype=np.float64)
    return np.minimum(out, 1.0)


def resize_nearest(mask: np.ndarray, size: int) -> np.ndarray:
    """Bool mask ``[H, W]`` -> ``[size, size]`` with source index ``floor(dst * in / out)`` (exact integer maths)."""
    h, w = mask.shape
    rows = (np.arange(size) * h) // size
    cols = (np.arange(size) * w) // size
    return mask[rows[:, None], cols[None, :]]


def _fill_slot(g: dict[str, torch.Tensor], slot: int, inst: Instance, width: int, height: int, seg_size: int):
    box = inst.model_box()
    norm_box = None
    if box is not None:
        x0, y0, x1, y1 = box
        norm_box = (x0 / width, y0 / height, x1 / width, y1 / height)
        g["boxes"][0, slot] = torch.tensor(norm_box, dtype=torch.float64).float()
    scribble = None
    if inst.scribble is not None:
        scribble = _normalised(resample_scribble(inst.scribble, N_SCRIBBLE_POINTS), width, height)
        g["scribbles"][0, slot] = torch.from_numpy(scribble.reshape(-1)).float()
    if inst.point is not None:
        point = (inst.point[0] / width, inst.point[1] / height)
    elif norm_box is not None:
        point = ((norm_box[0] + norm_box[2]) / 2.0, (norm_box[1] + norm_box[3]) / 2.0)
    else:  # scribble only (validation guarantees some location)
        point = tuple(scribble.mean(axis=0))
    g["points"][0, slot] = torch.tensor(point, dtype=torch.float64).float()
    if inst.mask is not None:
        poly = polygon_points_from_mask(inst.mask, N_POLYGON_POINTS)
        if poly is not None:
            g["polygons"][0, slot] = torch.from_numpy(_normalised(poly, width, height).reshape(-1)).float()
        g["segs"][0, slot] = torch.from_numpy(resize_nearest(inst.mask, seg_size).astype(np.float32))
    g["masks"][0, slot] = 1.0


def build_grounding(layout: Layout, text_features, seg_size: int = 512,
                    max_objs: int = MAX_INSTANCES) -> dict[str, torch.Tensor]:
    """Grounding tensors (batch 1) of a layout; ``text_features`` ``[n, D]`` = one pooled CLIP text feature per
    instance, in layout order (the official CLIP ``pooler_output``)."""
    n = len(layout.instances)
    if n > max_objs:
        raise LayoutError(f"instance {max_objs}: the layout has {n} instances but only {max_objs} slots; remove "
                          f"{n - max_objs} instances")
    if seg_size <= 0:
        raise LayoutError(f"seg_size: {seg_size!r} must be a positive number of pixels (the official model uses 512)")
    text = _text_matrix(text_features, n)
    g = null_grounding(1, text.shape[1], seg_size, max_objs)
    g["positive_embeddings"][0, :n] = text
    for slot, inst in enumerate(layout.instances):
        _fill_slot(g, slot, inst, layout.width, layout.height, seg_size)
    return g


def instance_grounding(layout: Layout, index: int, text_feature, seg_size: int = 512,
                       max_objs: int = MAX_INSTANCES) -> dict[str, torch.Tensor]:
    """Grounding with only instance ``index`` in slot 0 (its mask in seg channel 0), as the official multi-instance
    sampler builds it for each instance's own pass; ``text_feature`` is that instance's ``[D]`` feature."""
    single = layout.only(index)
    text = text_feature if isinstance(text_feature, torch.Tensor) else torch.as_tensor(np.asarray(text_feature))
    return build_grounding(single, text.reshape(1, -1), seg_size, max_objs)


def stack_groundings(groundings: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate grounding dicts along the batch axis (same keys and per-item shapes required)."""
    if not groundings:
        raise ValueError("stack_groundings: got an empty list; pass at least one grounding dict")
    keys = list(groundings[0])
    for i, g in enumerate(groundings[1:], start=1):
        if list(g) != keys:
            raise ValueError(f"stack_groundings: item {i} has keys {sorted(g)}, item 0 has {sorted(keys)}")
        for k in keys:
            if g[k].shape[1:] != groundings[0][k].shape[1:]:
                raise ValueError(f"stack_groundings: item {i} '{k}' has shape {tuple(g[k].shape)}, item 0 "
                                 f"{tuple(groundings[0][k].shape)}; build them with the same seg_size and text width")
    return {k: torch.cat([g[k] for g in groundings], dim=0) for k in keys}
