"""ConvNeXt backbone of the position net's seg branch, in the facebookresearch key layout (spec 1.4).

The official checkpoint stores the backbone as ``downsample_layers.{0..3}`` and ``stages.{i}.{j}.*`` (not timm's
names), so this module uses exactly those names. Dims and depths are read from the weights, so the full
ConvNeXt-T (96/192/384/768, depths 3/3/9/3) and tiny test variants load through the same code. No head and no
final norm: the position net consumes the last stage's map. Layers come from ``ops`` (see ``ops.py``); the
parameters of non-leaf modules (``gamma``, the channels-first LayerNorm) are cast to the input at use.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ops import TORCH_OPS, cast_like

LAYER_NORM_EPS = 1e-6


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``[B, C, H, W]`` (biased variance, eps 1e-6).

    Written as the explicit mean/variance formula the official backbone uses, so outputs match it bit for bit
    rather than to ~1e-7.
    """

    def __init__(self, channels: int, eps: float = LAYER_NORM_EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return cast_like(self.weight, x)[:, None, None] * x + cast_like(self.bias, x)[:, None, None]


class ConvNeXtBlock(nn.Module):
    """depthwise 7x7 -> channels-last LN -> Linear(C, 4C) -> GELU -> Linear(4C, C) -> * gamma -> + input."""

    def __init__(self, dim: int, ops=None):
        super().__init__()
        ops = ops or TORCH_OPS
        self.dwconv = ops.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = ops.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.pwconv1 = ops.Linear(dim, 4 * dim)
        self.pwconv2 = ops.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        y = cast_like(self.gamma, y) * y
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """Stem (conv k4 s4 + LN) then, per stage i > 0, LN + conv k2 s2; each stage is ``depths[i]`` blocks."""

    def __init__(self, dims: Sequence[int] = (96, 192, 384, 768), depths: Sequence[int] = (3, 3, 9, 3),
                 in_chans: int = 3, ops=None):
        super().__init__()
        ops = ops or TORCH_OPS
        dims, depths = [int(d) for d in dims], [int(d) for d in depths]
        if not dims or len(dims) != len(depths):
            raise ValueError(f"ConvNeXt: dims {dims} and depths {depths} must be non-empty and of equal length")
        self.dims, self.depths, self.in_chans = tuple(dims), tuple(depths), int(in_chans)
        layers = [nn.Sequential(ops.Conv2d(in_chans, dims[0], kernel_size=4, stride=4),
                                ChannelsFirstLayerNorm(dims[0]))]
        for i in range(1, len(dims)):
            layers.append(nn.Sequential(ChannelsFirstLayerNorm(dims[i - 1]),
                                        ops.Conv2d(dims[i - 1], dims[i], kernel_size=2, stride=2)))
        self.downsample_layers = nn.ModuleList(layers)
        self.stages = nn.ModuleList(nn.Sequential(*[ConvNeXtBlock(d, ops) for _ in range(n)])
                                    for d, n in zip(dims, depths))

    @property
    def stride(self) -> int:
        """Total downsampling factor (32 for the 4-stage ConvNeXt-T)."""
        return 4 * 2 ** (len(self.dims) - 1)

    @property
    def out_channels(self) -> int:
        return self.dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return x

    @staticmethod
    def config_from_state_dict(sd: Mapping[str, torch.Tensor], prefix: str = "") -> dict:
        """``{"dims", "depths", "in_chans"}`` read from the shapes of a (prefixed) backbone state dict."""
        stem = sd.get(f"{prefix}downsample_layers.0.0.weight")
        if stem is None:
            raise ValueError(f"ConvNeXt weights: '{prefix}downsample_layers.0.0.weight' is missing; expected the "
                             f"facebookresearch layout (downsample_layers.*, stages.*)")
        n_stages = 0
        while f"{prefix}downsample_layers.{n_stages}.{0 if n_stages == 0 else 1}.weight" in sd:
            n_stages += 1
        pattern = re.compile(re.escape(prefix) + r"stages\.(\d+)\.(\d+)\.")
        depths = [0] * n_stages
        for key in sd:
            m = pattern.match(key)
            if m:
                i, j = int(m.group(1)), int(m.group(2))
                if i >= n_stages:
                    raise ValueError(f"ConvNeXt weights: '{key}' belongs to stage {i} but only {n_stages} "
                                     f"downsample layers exist")
                depths[i] = max(depths[i], j + 1)
        dims = [int(sd[f"{prefix}downsample_layers.0.0.weight"].shape[0])]
        dims += [int(sd[f"{prefix}downsample_layers.{i}.1.weight"].shape[0]) for i in range(1, n_stages)]
        return {"dims": tuple(dims), "depths": tuple(depths), "in_chans": int(stem.shape[1])}
