"""Fourier features of normalised coordinates (boxes, points, scribbles, polygons) - spec 1.2.

Layout is frequency-major, as the official embedder concatenates ``sin(f_k x), cos(f_k x)`` per frequency:
output index ``k * 2D + s * D + d`` (s = 0 sin, 1 cos). The frequencies are computed in float32 like the
official code (a float64 table would shift the embedding by ~1e-6 and break bit-level parity).
"""
from __future__ import annotations

import torch


def fourier_frequencies(num_freqs: int = 16, temperature: float = 100, device=None) -> torch.Tensor:
    """``temperature ** (k / num_freqs)`` for k = 0..num_freqs-1, in float32."""
    k = torch.arange(num_freqs, device=device, dtype=torch.float32)
    return temperature ** (k / num_freqs)


def fourier_embed(x: torch.Tensor, num_freqs: int = 16, temperature: float = 100) -> torch.Tensor:
    """``x [..., D]`` -> ``[..., num_freqs * 2 * D]``.

    Computed in float32 whatever ``x``'s dtype (``sin(100 * x)`` in fp16 would lose most of its digits) and
    returned in ``x``'s floating dtype.
    """
    if x.ndim == 0:
        raise ValueError("fourier_embed: x must have a coordinate axis (shape [..., D]), got a 0-dim tensor")
    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    freqs = fourier_frequencies(num_freqs, temperature, device=x.device)
    phase = freqs[:, None] * x.to(torch.float32).unsqueeze(-2)          # [..., K, D]
    emb = torch.stack((phase.sin(), phase.cos()), dim=-2)               # [..., K, 2, D]
    return emb.flatten(-3).to(out_dtype)
