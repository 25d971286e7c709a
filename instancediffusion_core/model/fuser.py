"""UniFusion fusion layer (official ``GatedSelfAttentionDense``, "gatedSA"), spec 1.5.

Visual tokens attend over [visual tokens | projected grounding tokens]; only the visual rows of that attention
are kept, so queries are computed for the Nv visual rows alone (keys/values still span all Nv + T tokens): the
same result as the official full self-attention sliced afterwards, without its T extra query rows and without
ever holding an (Nv + T)^2 score matrix (``scaled_dot_product_attention`` or the host's kernel).

Where it runs is the caller's choice (see ``ops.py``): the fuser computes on ``x``'s device in its compute dtype,
with the layer classes of ``ops`` and the ``attention`` function it is given (default: PyTorch SDPA).
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .ops import TORCH_OPS, cast_like, compute_dtype_for

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention with ComfyUI's ``optimized_attention`` calling convention.

    q ``[B, Nq, H*d]``, k/v ``[B, Nk, H*d]`` -> ``[B, Nq, H*d]``; scale ``d ** -0.5``.
    """
    b, nq, inner = q.shape
    d = inner // heads
    q, k, v = (t.reshape(b, t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, nq, inner)


class GatedAttention(nn.Module):
    """Projections of the fuser's self-attention (official ``SelfAttention`` names: to_q/k/v, to_out.0)."""

    def __init__(self, dim: int, heads: int, ops=None):
        super().__init__()
        ops = ops or TORCH_OPS
        if dim % heads:
            raise ValueError(f"fuser width {dim} is not divisible by n_heads={heads}; pass the head count the "
                             f"weights were trained with (8 for InstanceDiffusion)")
        self.heads = int(heads)
        self.to_q = ops.Linear(dim, dim, bias=False)
        self.to_k = ops.Linear(dim, dim, bias=False)
        self.to_v = ops.Linear(dim, dim, bias=False)
        self.to_out = nn.Sequential(ops.Linear(dim, dim))

    def forward(self, z: torch.Tensor, n_queries: int, attention: AttentionFn | None = None) -> torch.Tensor:
        """Attention output for the first ``n_queries`` rows of ``z`` (keys/values over all of ``z``)."""
        q = self.to_q(z[:, :n_queries])
        k, v = self.to_k(z), self.to_v(z)
        out = (attention or sdpa_attention)(q, k, v, self.heads)
        return self.to_out(out)


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, ops=None):
        super().__init__()
        self.proj = (ops or TORCH_OPS).Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        g = F.gelu(gate)
        if torch.is_grad_enabled() and (g.requires_grad or a.requires_grad):
            return a * g
        return g.mul_(a)  # inference: reuse the GELU buffer (same values, one [.., 4C] buffer less at the peak)


class GEGLUFeedForward(nn.Module):
    """``net.0`` GEGLU(C -> 4C), ``net.1`` placeholder (official dropout, no weights), ``net.2`` Linear(4C -> C)."""

    def __init__(self, dim: int, mult: int = 4, ops=None):
        super().__init__()
        ops = ops or TORCH_OPS
        self.net = nn.Sequential(GEGLU(dim, mult * dim, ops), nn.Identity(), ops.Linear(mult * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Fuser(nn.Module):
    """``forward(x [B,Nv,C], objs [B|1,T,D], scale, attention) -> [B,Nv,C]`` in ``x``'s dtype.

    ``x1 = x + scale * tanh(alpha_attn) * Attn(LN1([x | linear(objs)]))[:, :Nv]``,
    ``x2 = x1 + scale * tanh(alpha_dense) * FF(LN2(x1))``.

    Computed on ``x``'s device in ``compute_dtype`` (None: the weights' dtype, or float32 for fp8 weights); with
    ``TORCH_OPS`` the layers must already sit there in that dtype, with a cast-aware ``ops`` they may be anywhere
    in any storage dtype. The gates are cast to the input at use (a host that streams leaf layers leaves them
    where they are).
    """

    def __init__(self, query_dim: int, context_dim: int = 768, n_heads: int = 8, ops=None):
        super().__init__()
        ops = ops or TORCH_OPS
        self.query_dim, self.context_dim = int(query_dim), int(context_dim)
        self.linear = ops.Linear(self.context_dim, self.query_dim)
        self.attn = GatedAttention(self.query_dim, n_heads, ops)
        self.ff = GEGLUFeedForward(self.query_dim, ops=ops)
        self.norm1 = ops.LayerNorm(self.query_dim)
        self.norm2 = ops.LayerNorm(self.query_dim)
        self.alpha_attn = nn.Parameter(torch.tensor(0.0))
        self.alpha_dense = nn.Parameter(torch.tensor(0.0))
        self.compute_dtype: torch.dtype | None = None

    @property
    def n_heads(self) -> int:
        return self.attn.heads

    @staticmethod
    def config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
        """``{"query_dim", "context_dim"}`` from ``linear.weight [C, D]`` of a ``fuser.``-stripped state dict."""
        w = sd.get("linear.weight")
        if w is None or w.ndim != 2:
            raise ValueError("fuser weights: 'linear.weight' [C, D] is missing; keys must be the official fuser "
                             "suffixes (linear.*, attn.*, ff.*, norm1.*, norm2.*, alpha_attn, alpha_dense)")
        return {"query_dim": int(w.shape[0]), "context_dim": int(w.shape[1])}

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], n_heads: int = 8,
                        dtype: torch.dtype | None = None, ops=None) -> "Fuser":
        """Build with sizes inferred from ``sd`` (head count is not stored in the weights) and load strictly.

        The tensors become the parameters (no copy when already ``dtype``); outside ``torch.inference_mode`` pass
        normal tensors (``InstanceDiffusionAddons.from_state_dict`` takes care of that).
        """
        with torch.device("meta"):
            fuser = cls(n_heads=n_heads, ops=ops, **cls.config_from_state_dict(sd))
        dtype = dtype or sd["linear.weight"].dtype
        fuser.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
        return fuser

    def forward(self, x: torch.Tensor, objs: torch.Tensor, scale: float = 1.0,
                attention: AttentionFn | None = None) -> torch.Tensor:
        if scale == 0:
            return x  # identity (tanh gates times 0); nothing to compute
        if x.ndim != 3 or x.shape[-1] != self.query_dim:
            raise ValueError(f"fuser input x: shape {list(x.shape)}, expected [B, Nv, {self.query_dim}]; this fuser "
                             f"belongs to a {self.query_dim}-wide transformer block")
        if objs.ndim != 3 or objs.shape[-1] != self.context_dim or objs.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"fuser objs: shape {list(objs.shape)}, expected [{x.shape[0]} or 1, T, "
                             f"{self.context_dim}] (the position-net tokens)")
        h = x.to(self.compute_dtype or compute_dtype_for(self.linear.weight.dtype))
        o = self.linear(cast_like(objs, h))
        if o.shape[0] != h.shape[0]:
            o = o.expand(h.shape[0], -1, -1)
        n_visual = h.shape[1]
        a = self.attn(self.norm1(torch.cat([h, o], dim=1)), n_visual, attention)
        h = h + scale * torch.tanh(cast_like(self.alpha_attn, h)) * a
        h = h + scale * torch.tanh(cast_like(self.alpha_dense, h)) * self.ff(self.norm2(h))
        return h.to(x.dtype)
