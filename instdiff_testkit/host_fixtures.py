"""Helpers for host tests of our nodes: tiny add-on weights for a tiny UNet, a stub CLIP, quick sampling."""
from __future__ import annotations

import hashlib
import importlib

import torch

from . import tiny_models


class StubClip:
    """Deterministic stand-in for an SD1.5 CLIP: per-text cond [1,77,768] and unprojected pooled [1,768]."""

    def __init__(self, width: int = 768):
        self.width = width
        self.calls = []

    def tokenize(self, text):
        return {"text": text}

    def _gen(self, text, salt):
        seed = int(hashlib.sha256((salt + text).encode()).hexdigest()[:8], 16)
        return torch.Generator().manual_seed(seed)

    def encode_from_tokens(self, tokens, return_pooled=False, return_dict=False):
        text = tokens["text"]
        self.calls.append((text, return_pooled))
        cond = torch.randn(1, 77, self.width, generator=self._gen(text, "cond"))
        pooled = torch.randn(1, self.width, generator=self._gen(text, "pooled"))
        return (cond, pooled) if return_pooled else cond

    def encode(self, text):
        return [[self.encode_from_tokens(self.tokenize(text)), {}]]


def pack_host_ops(pack_core):
    """The pack's `nodes.host_ops` (how the loader node builds its weights), from its `instancediffusion_core`."""
    return importlib.import_module(pack_core.__name__.rsplit(".", 1)[0] + ".nodes.host_ops")


def instdiff_for(pack_core, patcher, seed: int = 0, dtype=torch.float32, compute_dtype=None, load_device=None):
    """An INSTANCEDIFFUSION value sized for `patcher`'s UNet, built the way the loader node builds it (ComfyUI's
    cast-aware layers; stored in `dtype`, computing in `compute_dtype`, default ComfyUI's rule for the device),
    loading on `load_device` (default: the UNet's), offloaded to the CPU."""
    fuser_widths, scaleu_widths, _ctx = tiny_models.unet_topology(patcher)
    sd = tiny_models.tiny_addon_state_dict(fuser_widths, scaleu_widths, seed=seed)
    addons = pack_core.InstanceDiffusionAddons.from_state_dict(sd).to(dtype).eval()
    addons.requires_grad_(False)
    return pack_host_ops(pack_core).weights_patcher(addons, compute_dtype, load_device=load_device or patcher.load_device,
                                                    offload_device=torch.device("cpu"))


def box_layout(pack_core, boxes, width=64, height=64, captions=None):
    layout_mod = pack_core.layout
    layout = layout_mod.Layout(width=width, height=height)
    for i, b in enumerate(boxes):
        cap = captions[i] if captions else f"object number {i}"
        layout = layout.with_instance(layout_mod.Instance(caption=cap, bbox=tuple(float(v) for v in b)))
    return layout


def sample(model, positive, negative, latent, seed=0, steps=3, cfg=5.0, sampler="euler", scheduler="normal",
           denoise=1.0):
    import nodes
    (out,) = nodes.common_ksampler(model, seed, steps, cfg, sampler, scheduler, positive, negative,
                                   {"samples": latent}, denoise=denoise)
    return out["samples"]


def patched_tiny(pack, pack_core, base, end: float = 0.8):
    """(node instances by key, INSTANCEDIFFUSION weights, base patched with UniFusion + ScaleU)."""
    node = {k: cls() for k, cls in pack.NODE_CLASS_MAPPINGS.items()}
    instdiff = instdiff_for(pack_core, base)
    (m,) = node["ApplyUniFusion"].apply(base, instdiff, 1.0, 0.0, end)
    (m,) = node["ApplyScaleU"].apply(m, instdiff)
    return node, instdiff, m
