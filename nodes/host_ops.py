"""Where the add-ons run inside ComfyUI (the core computes; this module decides where and how).

- Layers: ComfyUI's cast-aware ``comfy.ops`` classes replace the core's ``torch.nn`` ones, so ComfyUI's partial
  loading (``--lowvram``, ``--novram``, big batches) can leave any add-on layer in CPU memory and stream it per call,
  exactly as it does with its own models; parameters of non-leaf modules are cast at use by the core.
- Dtypes: the add-ons are *stored* in the chosen dtype (``auto``: ComfyUI's UNet dtype, which may be fp8) and
  *compute* in one that works on the load device (ComfyUI's ``unet_manual_cast`` rule: fp16, bf16 or fp32);
  ``manual_cast`` layers when the two differ.
- Attention: the fusers call ComfyUI's ``optimized_attention`` (the backend the user chose: PyTorch SDPA, xformers,
  sage, flash, split or sub-quadratic), with the call's ``transformer_options`` so attention overrides apply.
- Model management: the fusers and the position net are two separate ``ModelPatcher``s over disjoint modules.
  Sampling loads only the fusers with the UNet (``UniFusionPatch.models()``); the position net is loaded at
  conditioning time and computes the null tokens there once, so it never occupies memory during sampling.
"""
from __future__ import annotations

import logging
import weakref

import torch

import comfy.ldm.modules.attention
import comfy.model_management
import comfy.model_patcher
import comfy.ops

from ..instancediffusion_core.model.ops import COMPUTE_DTYPES

SUPPORTED_COMPUTE = [torch.float16, torch.bfloat16, torch.float32]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def storage_dtype_of(module: torch.nn.Module) -> torch.dtype:
    counts = {}
    for p in module.parameters():
        if p.is_floating_point():
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    return max(counts, key=counts.get) if counts else torch.float32


def addon_dtypes(choice: str, device) -> tuple[torch.dtype, torch.dtype]:
    """(storage dtype, compute dtype) for the loader's ``dtype`` choice on ``device``.

    ``auto`` stores like ComfyUI stores the UNet (``unet_dtype``; fp8 under ``--fp8_e4m3fn-unet``); every choice
    computes in what ``unet_manual_cast`` picks for that storage on that device (None: the storage dtype itself),
    never in fp8.
    """
    mm = comfy.model_management
    if choice == "auto":
        storage = mm.unet_dtype(device=device, supported_dtypes=SUPPORTED_COMPUTE)
    else:
        storage = DTYPES[choice]
    return storage, compute_dtype_for(storage, device)


def compute_dtype_for(storage: torch.dtype, device) -> torch.dtype:
    compute = comfy.model_management.unet_manual_cast(storage, device, SUPPORTED_COMPUTE) or storage
    return compute if compute in COMPUTE_DTYPES else torch.float32


def cast_ops(storage: torch.dtype, compute: torch.dtype):
    """ComfyUI's layer classes for that pair: ``manual_cast`` (weights cast to the input at every call) when they
    differ, else ``disable_weight_init`` (no cast unless ComfyUI offloads the layer, then it streams it)."""
    return comfy.ops.manual_cast if storage != compute else comfy.ops.disable_weight_init


def prepare_addons(addons, compute: torch.dtype | None = None, device=None):
    """Make ``addons`` (an ``InstanceDiffusionAddons``) ComfyUI-ready in place: cast-aware layers and a compute
    dtype (default: the ``unet_manual_cast`` rule for its storage dtype on ``device``). Idempotent."""
    storage = storage_dtype_of(addons)
    if compute is None:
        compute = compute_dtype_for(storage, device or comfy.model_management.get_torch_device())
    if getattr(addons, "_instdiff_host_dtypes", None) == (storage, compute):
        return addons
    addons.use_ops(cast_ops(storage, compute))
    addons.set_compute_dtype(compute)
    addons._instdiff_host_dtypes = (storage, compute)
    return addons


def weights_patcher(addons, compute: torch.dtype | None = None, load_device=None, offload_device=None):
    """The ``INSTANCEDIFFUSION`` value: a ModelPatcher whose ``.model`` is the prepared add-ons. The pack never loads
    this patcher itself (see ``HostWeights``); it carries the weights and their devices."""
    mm = comfy.model_management
    load_device = load_device or mm.get_torch_device()
    offload_device = offload_device or mm.unet_offload_device()
    prepare_addons(addons, compute, load_device)
    return comfy.model_patcher.ModelPatcher(addons, load_device=load_device, offload_device=offload_device)


class FuserBank(torch.nn.Module):
    """The fusers of one set of add-ons (the same module objects), as the model of their own ModelPatcher."""

    def __init__(self, fusers):
        super().__init__()
        self.fusers = torch.nn.ModuleList(fusers)


class HostWeights:
    """What ComfyUI loads for one set of add-ons: the fusers (with the UNet, while sampling) and the position net
    (at conditioning time), as two ModelPatchers over disjoint modules, plus the null tokens computed once."""

    def __init__(self, patcher):
        addons = patcher.model
        self.addons_ref = weakref.ref(addons)
        load, offload = patcher.load_device, patcher.offload_device
        fusers = addons.fusers()
        self.fusers = comfy.model_patcher.ModelPatcher(FuserBank(fusers), load, offload) if fusers else None
        net = addons.position_net
        self.position_net = comfy.model_patcher.ModelPatcher(net, load, offload) if net is not None else None
        self._null = None

    def load_position_net(self) -> torch.device:
        """Load the position net as ComfyUI loads any model (fully or partly); returns the device to compute on."""
        if self.position_net is None:
            raise ValueError("These InstanceDiffusion weights have no position net (position_net.*); load the full "
                             "add-on file.")
        comfy.model_management.load_models_gpu([self.position_net])
        return self.position_net.load_device

    def null_tokens(self) -> torch.Tensor:
        """The null grounding's tokens ``[1, T, D]`` (CPU float32), computed once on the position net's device."""
        if self._null is None:
            device = self.load_position_net()
            with torch.no_grad():
                self._null = self.position_net.model.null_tokens(batch=1, device=device).float().cpu()
        return self._null


_HOST: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def host_weights(patcher) -> HostWeights:
    """The ``HostWeights`` of an ``INSTANCEDIFFUSION`` value (one per add-on module, whichever patcher wraps it).
    A patcher built elsewhere around plain ``torch.nn`` add-ons is made ComfyUI-ready on first use."""
    addons = patcher.model
    host = _HOST.get(addons)
    if host is None:
        prepare_addons(addons, getattr(addons, "_instdiff_host_dtypes", (None, None))[1], patcher.load_device)
        host = HostWeights(patcher)
        _HOST[addons] = host
    return host


def comfy_attention(transformer_options=None):
    """The fusers' attention: ComfyUI's ``optimized_attention`` (looked up at call time, like the UNet's own
    CrossAttention does), ``(q [B,Nq,H*d], k, v [B,Nk,H*d], heads) -> [B,Nq,H*d]``."""
    attention = comfy.ldm.modules.attention

    def attend(q, k, v, heads):
        return attention.optimized_attention(q, k, v, heads, transformer_options=transformer_options)
    return attend


_WARNED: set = set()


def warn_once(key, message: str, *args) -> bool:
    """``logging.warning`` the first time ``key`` is seen in this process; True if it warned."""
    if key in _WARNED:
        return False
    _WARNED.add(key)
    logging.warning(message, *args)
    return True
