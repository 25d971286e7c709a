"""Which layer classes the add-ons are built from, and the casts that let them run wherever the host puts them.

"A module computes, the host decides where it runs": every add-on module takes an ``ops`` namespace with
``Linear``, ``LayerNorm`` and ``Conv2d`` (the classes ``torch.nn`` has; default ``TORCH_OPS``) and computes on its
*input's* device in a *compute dtype*. A host passes its own cast-aware layers (ComfyUI: ``comfy.ops.manual_cast`` /
``disable_weight_init``, whose weights the host may leave in CPU memory and stream per call, stored in fp8 and cast
to the compute dtype); parameters that sit directly on a non-leaf module (fuser gates, the position net's null
features, ConvNeXt ``gamma``, the channels-first LayerNorm) are cast to the input at use with ``cast_like``, because
a host that moves weights layer by layer only moves leaf layers.

``CAST_OPS`` is the same idea in plain PyTorch (weights cast to the input's device and dtype at every call), for
callers without a host: e.g. fp8-stored weights computed in fp16/fp32.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

COMPUTE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

TORCH_OPS = SimpleNamespace(Linear=nn.Linear, LayerNorm=nn.LayerNorm, Conv2d=nn.Conv2d, name="torch")


def compute_dtype_for(storage: torch.dtype) -> torch.dtype:
    """The dtype a module computes in when nobody chose one: its storage dtype if arithmetic works in it
    (fp32/fp16/bf16/fp64), else float32 (fp8 storage is cast to it)."""
    return storage if storage in COMPUTE_DTYPES else torch.float32


def cast_like(t: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor | None:
    """``t`` on ``ref``'s device in ``ref``'s dtype; ``t`` itself when it already is (no copy, no kernel).

    A host->accelerator copy is issued non-blocking: from pageable memory CUDA stages it at once without waiting for
    the device, so a parameter left in CPU memory by a partial load costs a copy, not a device synchronisation.
    """
    if t is None or (t.device == ref.device and t.dtype == ref.dtype):
        return t
    return t.to(device=ref.device, dtype=ref.dtype, non_blocking=ref.device.type != "cpu")


class _CastLinear(nn.Linear):
    def forward(self, x):
        return F.linear(x, cast_like(self.weight, x), cast_like(self.bias, x))


class _CastLayerNorm(nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, cast_like(self.weight, x), cast_like(self.bias, x), self.eps)


class _CastConv2d(nn.Conv2d):
    def forward(self, x):
        return self._conv_forward(x, cast_like(self.weight, x), cast_like(self.bias, x))


CAST_OPS = SimpleNamespace(Linear=_CastLinear, LayerNorm=_CastLayerNorm, Conv2d=_CastConv2d, name="cast")


def _rebuilt(layer: nn.Module, ops) -> nn.Module | None:
    """``layer`` as an instance of the matching ``ops`` class sharing its parameters, or None if not a layer ops
    provides (or already of that class)."""
    meta = torch.device("meta")
    if isinstance(layer, nn.Linear):
        cls = ops.Linear
        if type(layer) is cls:
            return None
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, device=meta)
    elif isinstance(layer, nn.Conv2d):
        cls = ops.Conv2d
        if type(layer) is cls:
            return None
        new = cls(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                  padding=layer.padding, dilation=layer.dilation, groups=layer.groups, bias=layer.bias is not None,
                  padding_mode=layer.padding_mode, device=meta)
    elif isinstance(layer, nn.LayerNorm):
        cls = ops.LayerNorm
        if type(layer) is cls:
            return None
        new = cls(layer.normalized_shape, eps=layer.eps, elementwise_affine=layer.elementwise_affine, device=meta)
    else:
        return None
    for name in ("weight", "bias"):
        if name in layer._parameters:
            new._parameters[name] = layer._parameters[name]    # the same Parameter objects: no copy
    new.train(layer.training)
    return new


def swap_ops(module: nn.Module, ops) -> int:
    """Replace, in place, every Linear / LayerNorm / Conv2d below ``module`` by ``ops``' class of that layer,
    keeping the parameter objects (no copy). Returns how many layers were replaced."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            new = _rebuilt(child, ops)
            if new is not None:
                parent._modules[name] = new
                count += 1
    return count
