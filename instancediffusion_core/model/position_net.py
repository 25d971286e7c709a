"""Instance tokenizer (official ``UniFusion``): grounding tensors -> 4 * 30 + 64 = 184 tokens (spec 1.3).

Five separate MLPs turn (text feature + Fourier of box / point / scribble / polygon) and the ConvNeXt seg
features into tokens. Absent inputs are replaced by learned ``null_*`` features through keep masks; which
modalities are dropped is a per-forward configuration (``DropFlags``), not a per-instance choice.
Parameter names are the official ones, so ``position_net.``-stripped checkpoint keys load strictly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .convnext import ConvNeXt
from .fourier import fourier_embed
from .ops import TORCH_OPS, cast_like, compute_dtype_for

TEMPERATURE = 100


@dataclass(frozen=True)
class DropFlags:
    """Modalities replaced by their null feature for every instance (official ``test_drop_*``; masks = polygons
    and segs together)."""

    boxes: bool = False
    points: bool = False
    scribbles: bool = False
    masks: bool = False

    @property
    def all_dropped(self) -> bool:
        return self.boxes and self.points and self.scribbles and self.masks


# Official test configs (configs/test_<name>.yaml), spec 1.3.1.
DROP_CONFIGS: dict[str, DropFlags] = {
    "box": DropFlags(boxes=False, points=False, scribbles=True, masks=True),
    "mask": DropFlags(boxes=False, points=False, scribbles=True, masks=False),
    "point": DropFlags(boxes=True, points=False, scribbles=True, masks=True),
    "scribble": DropFlags(boxes=False, points=False, scribbles=False, masks=False),
}


def _mlp(in_dim: int, mid_dim: int, out_dim: int, ops=None) -> nn.Sequential:
    """Linear -> SiLU -> Linear -> SiLU -> Linear (state-dict indices .0, .2, .4)."""
    ops = ops or TORCH_OPS
    return nn.Sequential(ops.Linear(in_dim, mid_dim), nn.SiLU(), ops.Linear(mid_dim, mid_dim), nn.SiLU(),
                         ops.Linear(mid_dim, out_dim))


def _seg_grid_side(n_seg_tokens: int, seg_feature_dim: int, convnext_channels: int) -> int:
    """Side of the square ConvNeXt output map whose raw reshape yields ``n_seg_tokens x seg_feature_dim``."""
    values = n_seg_tokens * seg_feature_dim
    if values % convnext_channels:
        raise ValueError(f"position net: n_seg_tokens ({n_seg_tokens}) x seg_feature_dim ({seg_feature_dim}) is not "
                         f"a multiple of the ConvNeXt output channels ({convnext_channels}); the weights are "
                         f"inconsistent")
    cells = values // convnext_channels
    side = math.isqrt(cells)
    if side * side != cells:
        raise ValueError(f"position net: the seg tokens need a {cells}-cell ConvNeXt map, which is not a square; "
                         f"the weights are inconsistent")
    return side


class PositionNet(nn.Module):
    """``forward(g, drop) -> (tokens [B, 4*n_slots + n_seg_tokens, out_dim], drop_box_mask)``.

    ``g`` holds the grounding tensors of DESIGN.md: ``boxes [B,N,4]``, ``masks [B,N]``, ``positive_embeddings
    [B,N,text_dim]``, ``points [B,N,2]`` (None -> box centre), ``scribbles [B,N,2P_s]``, ``polygons [B,N,2P_p]``
    and ``segs [B,N,H,W]`` (None -> no seg pixels).

    Computes on the device of ``g["boxes"]`` (the caller decides where) in ``compute_dtype`` (None: the weights'
    dtype, float32 for fp8 weights); the null features and ``pos_embedding`` are cast there at use. With the
    default ``TORCH_OPS`` the layers must sit on that device in that dtype; a cast-aware ``ops`` lifts that.
    """

    def __init__(self, text_dim: int = 768, out_dim: int = 768, mid_dim: int = 3072, n_slots: int = 30,
                 num_freqs: int = 16, n_scribble_points: int = 20, n_polygon_points: int = 256,
                 convnext_dims=(96, 192, 384, 768), convnext_depths=(3, 3, 9, 3), convnext_in_chans: int = 3,
                 n_seg_tokens: int = 64, seg_feature_dim: int | None = None, ops=None):
        super().__init__()
        ops = ops or TORCH_OPS
        self.compute_dtype: torch.dtype | None = None
        self.text_dim, self.out_dim, self.mid_dim = int(text_dim), int(out_dim), int(mid_dim)
        self.n_slots, self.num_freqs = int(n_slots), int(num_freqs)
        self.n_scribble_points, self.n_polygon_points = int(n_scribble_points), int(n_polygon_points)
        self.n_seg_tokens = int(n_seg_tokens)
        self.seg_feature_dim = int(seg_feature_dim) if seg_feature_dim is not None else 4 * int(convnext_dims[-1])

        box_dim = self.num_freqs * 2 * 4
        point_dim = self.num_freqs * 2 * 2
        scribble_dim = self.num_freqs * 2 * 2 * self.n_scribble_points
        polygon_dim = self.num_freqs * 2 * 2 * self.n_polygon_points

        self.null_positive_feature = nn.Parameter(torch.zeros(self.text_dim))
        self.null_position_feature = nn.Parameter(torch.zeros(box_dim))
        self.null_point_feature = nn.Parameter(torch.zeros(point_dim))
        self.null_scribble_feature = nn.Parameter(torch.zeros(scribble_dim))
        self.null_polygon_feature = nn.Parameter(torch.zeros(polygon_dim))
        self.null_seg_feature = nn.Parameter(torch.zeros(self.seg_feature_dim))

        self.linears_list = nn.ModuleList([
            _mlp(self.text_dim + box_dim, self.mid_dim, self.out_dim, ops),
            _mlp(self.text_dim + point_dim, self.mid_dim, self.out_dim, ops),
            _mlp(self.text_dim + scribble_dim, self.mid_dim, self.out_dim, ops),
            _mlp(self.text_dim + polygon_dim, self.mid_dim, self.out_dim, ops),
            _mlp(self.seg_feature_dim, self.mid_dim, self.out_dim, ops),
        ])
        self.in_conv = ops.Conv2d(self.n_slots, int(convnext_in_chans), kernel_size=3, stride=1, padding=1)
        self.convnext_tiny_backbone = ConvNeXt(convnext_dims, convnext_depths, in_chans=convnext_in_chans, ops=ops)
        self.pos_embedding = nn.Parameter(torch.zeros(1, self.n_seg_tokens, self.seg_feature_dim))
        side = _seg_grid_side(self.n_seg_tokens, self.seg_feature_dim, self.convnext_tiny_backbone.out_channels)
        # the seg input size whose ConvNeXt map has exactly the cells the raw reshape needs (512 for SD1.5)
        self.seg_size = side * self.convnext_tiny_backbone.stride

    # ------------------------------------------------------------------------------------------------ loading

    @staticmethod
    def config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
        """Constructor kwargs read from the shapes of a ``position_net.``-stripped state dict."""
        def need(key):
            if key not in sd:
                raise ValueError(f"position net weights: '{key}' is missing (keys must be the official ones without "
                                 f"the 'position_net.' prefix)")
            return sd[key]

        box_dim = need("null_position_feature").numel()
        if box_dim % 8:
            raise ValueError(f"position net weights: null_position_feature has {box_dim} values, expected "
                             f"num_freqs * 2 * 4 (128 for the official weights)")
        num_freqs = box_dim // 8
        per_point = 4 * num_freqs
        scribble_dim = need("null_scribble_feature").numel()
        polygon_dim = need("null_polygon_feature").numel()
        for name, dim in (("null_scribble_feature", scribble_dim), ("null_polygon_feature", polygon_dim)):
            if dim % per_point:
                raise ValueError(f"position net weights: {name} has {dim} values, not a multiple of "
                                 f"num_freqs * 2 * 2 = {per_point}")
        backbone = ConvNeXt.config_from_state_dict(sd, "convnext_tiny_backbone.")
        in_conv = need("in_conv.weight")
        pos = need("pos_embedding")
        return {
            "text_dim": need("null_positive_feature").numel(),
            "out_dim": int(need("linears_list.0.4.weight").shape[0]),
            "mid_dim": int(need("linears_list.0.0.weight").shape[0]),
            "n_slots": int(in_conv.shape[1]),
            "num_freqs": num_freqs,
            "n_scribble_points": scribble_dim // per_point,
            "n_polygon_points": polygon_dim // per_point,
            "convnext_dims": backbone["dims"],
            "convnext_depths": backbone["depths"],
            "convnext_in_chans": int(in_conv.shape[0]),
            "n_seg_tokens": int(pos.shape[1]),
            "seg_feature_dim": need("null_seg_feature").numel(),
        }

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], dtype: torch.dtype | None = None,
                        ops=None) -> "PositionNet":
        """Build with every size inferred from ``sd`` and load it strictly (tensors are used without a copy when
        already of ``dtype``; default: the state dict's floating dtype). Outside ``torch.inference_mode`` pass normal
        tensors, not inference tensors (``InstanceDiffusionAddons.from_state_dict`` takes care of that)."""
        config = cls.config_from_state_dict(sd)
        with torch.device("meta"):
            net = cls(**config, ops=ops)
        dtype = dtype or next((t.dtype for t in sd.values() if t.is_floating_point()), torch.float32)
        net.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
        return net

    # ------------------------------------------------------------------------------------------------ helpers

    @property
    def n_tokens(self) -> int:
        return 4 * self.n_slots + self.n_seg_tokens

    def _compute_dtype(self) -> torch.dtype:
        return self.compute_dtype or compute_dtype_for(self.linears_list[0][0].weight.dtype)

    def _resize_segs(self, segs: torch.Tensor) -> torch.Tensor:
        if tuple(segs.shape[-2:]) == (self.seg_size, self.seg_size):
            return segs
        return F.interpolate(segs, size=(self.seg_size, self.seg_size), mode="nearest")

    def seg_features(self, segs: torch.Tensor) -> torch.Tensor:
        """``segs [B,N,H,W]`` -> ConvNeXt map ``[B, C, h, w]`` (resized to ``seg_size`` by nearest if needed)."""
        x = self._resize_segs(segs.to(dtype=self._compute_dtype()))
        return self.convnext_tiny_backbone(self.in_conv(x))

    def _seg_tokens(self, segs: torch.Tensor) -> torch.Tensor:
        """Raw memory reshape of the ConvNeXt map (not a spatial pooling): ``[B,C,h,w]`` -> ``[B, T, C*h*w/T]``."""
        f = self.seg_features(segs)
        return f.reshape(f.shape[0], -1, self.n_seg_tokens).permute(0, 2, 1)

    def _check(self, name: str, t: torch.Tensor, shape: tuple) -> None:
        if t.ndim != len(shape) or any(s is not None and a != s for a, s in zip(t.shape, shape)):
            want = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"grounding '{name}': shape {list(t.shape)}, expected {want}; build the grounding with "
                             f"{self.n_slots} slots and the sizes of these weights")

    # ------------------------------------------------------------------------------------------------ forward

    def forward(self, g: Mapping[str, torch.Tensor], drop: DropFlags) -> tuple[torch.Tensor, bool]:
        if not isinstance(drop, DropFlags):
            raise TypeError(f"drop must be a DropFlags (e.g. DROP_CONFIGS['mask']), got {type(drop).__name__}")
        for key in ("boxes", "masks", "positive_embeddings"):
            if g.get(key) is None:
                raise ValueError(f"grounding '{key}' is missing; the position net needs boxes, masks and "
                                 f"positive_embeddings (zeros for absent instances)")
        dev, dt = g["boxes"].device, self._compute_dtype()

        def get(name):
            t = g.get(name)
            return None if t is None else t.to(device=dev, dtype=dt)

        boxes = get("boxes")

        def param(p):
            return cast_like(p, boxes)

        B, N = boxes.shape[0], self.n_slots
        self._check("boxes", boxes, (B, N, 4))
        masks = get("masks")
        self._check("masks", masks, (B, N))
        text = get("positive_embeddings")
        self._check("positive_embeddings", text, (B, N, self.text_dim))
        points = get("points")
        if points is None:  # official fallback: the box centre
            points = (boxes[..., :2] + boxes[..., 2:]) / 2.0
        self._check("points", points, (B, N, 2))
        scribbles = get("scribbles")
        if scribbles is None:
            scribbles = boxes.new_zeros(B, N, 2 * self.n_scribble_points)
        self._check("scribbles", scribbles, (B, N, 2 * self.n_scribble_points))
        polygons = get("polygons")
        if polygons is None:
            polygons = boxes.new_zeros(B, N, 2 * self.n_polygon_points)
        self._check("polygons", polygons, (B, N, 2 * self.n_polygon_points))

        drop_boxes = drop.boxes and not drop.all_dropped   # official: never drop everything
        m = masks.unsqueeze(-1)
        none = torch.zeros_like(m)

        def embed(coords, keep, null):
            return fourier_embed(coords, self.num_freqs, TEMPERATURE).to(dt) * keep + (1 - keep) * null.view(1, 1, -1)

        text = text * m + (1 - m) * param(self.null_positive_feature).view(1, 1, -1)
        e_box = embed(boxes, none if drop_boxes else m, param(self.null_position_feature))
        e_point = embed(points, none if drop.points else m, param(self.null_point_feature))
        scribble_keep = none if drop.scribbles else ((scribbles.sum(-1, keepdim=True) + m) > 0).to(dt)
        e_scribble = embed(scribbles, scribble_keep, param(self.null_scribble_feature))
        polygon_keep = none if drop.masks else ((polygons.sum(-1, keepdim=True) + m) > 0).to(dt)
        e_polygon = embed(polygons, polygon_keep, param(self.null_polygon_feature))
        seg = self._seg_embedding(g.get("segs"), B, drop.masks, boxes)

        lin = self.linears_list
        tokens = torch.cat([
            lin[0](torch.cat([text, e_box], dim=-1)),
            lin[1](torch.cat([text, e_point], dim=-1)),
            lin[2](torch.cat([text, e_scribble], dim=-1)),
            lin[3](torch.cat([text, e_polygon], dim=-1)),
            lin[4](seg),
        ], dim=1)
        return tokens, bool(drop_boxes and drop.masks)

    def _seg_embedding(self, segs: torch.Tensor | None, batch: int, drop_masks: bool,
                       ref: torch.Tensor) -> torch.Tensor:
        """Seg branch before its MLP: ``keep * tokens + (1 - keep) * null + pos_embedding``, keep per image.

        The ConvNeXt runs only for images whose keep is 1 (seg pixels present and masks not dropped). For the
        others the official code multiplies the features by 0 and adds ``1 * null``; with finite features that
        is exactly ``null``, so skipping them gives bit-identical tokens and saves the backbone's cost (most
        batches: the CFG-uncond null input, box/point-only layouts). Keep is decided on the segs after the
        nearest resize, like the official code.
        """
        null = cast_like(self.null_seg_feature, ref).view(1, 1, -1).expand(batch, self.n_seg_tokens, -1)
        pos = cast_like(self.pos_embedding, ref)
        keep = None
        if segs is not None and not drop_masks:
            self._check("segs", segs, (batch, self.n_slots, None, None))
            if not segs.is_floating_point():
                segs = segs.float()
            segs = self._resize_segs(segs)      # on the caller's device: only kept images are moved
            keep = segs.sum(dim=(1, 2, 3), dtype=torch.float32) > 0
        if keep is None or not bool(keep.any()):
            return null + pos
        emb = null.clone()
        idx = keep.nonzero().flatten()
        emb[idx.to(emb.device)] = self._seg_tokens(segs[idx].to(emb.device))
        return emb + pos

    @torch.no_grad()
    def null_tokens(self, batch: int = 1, device: torch.device | str | None = None) -> torch.Tensor:
        """Tokens of the all-zero grounding (CFG-uncond), for any drop config, computed on ``device`` (default:
        where the first MLP's weight is) in the compute dtype.

        With every mask, coordinate and seg at zero every keep is 0, so each modality's input is its null
        feature: one MLP row per modality suffices (no ConvNeXt, no 30-row batches).
        """
        lin = self.linears_list
        device = torch.device(device) if device is not None else lin[0][0].weight.device
        ref = torch.empty((), device=device, dtype=self._compute_dtype())

        def param(p):
            return cast_like(p, ref)

        text = param(self.null_positive_feature).view(1, 1, -1)
        rows = [lin[i](torch.cat([text, param(null).view(1, 1, -1)], dim=-1))
                for i, null in enumerate((self.null_position_feature, self.null_point_feature,
                                          self.null_scribble_feature, self.null_polygon_feature))]
        seg = lin[4](param(self.null_seg_feature).view(1, 1, -1) + param(self.pos_embedding))
        tokens = torch.cat([r.expand(1, self.n_slots, -1) for r in rows] + [seg], dim=1)
        return tokens.expand(int(batch), -1, -1).contiguous()

