"""Apply ScaleU: InstanceDiffusion's learned backbone/skip scaling on every decoder block, on a clone.

The parameters are tiny (12 vectors + 12 scalars), so the patch keeps its own float32 copy and needs no
model management; the math lives in ``instancediffusion_core.model.scaleu``.

Host decisions made here: the skip filter's FFT falls back to the CPU (with one warning) on a device without FFT
kernels, as ComfyUI's FreeU does, always in float32; and ScaleU next to ComfyUI's FreeU on one model is reported
(both rescale the decoder's backbone and skip features, so the scaling would happen twice).
"""
from __future__ import annotations

import logging

import torch

from ..instancediffusion_core.model.scaleu import scaleu
from .topology import unet_topology
from .types import INSTANCEDIFFUSION, ModelPatchNode, weights_of
from .patching import remove_patches_of


NO_FFT_DEVICES: set = set()   # devices whose FFT failed once in this process: ScaleU's skip filter runs on the CPU
FREEU_NODES = ("FreeU", "FreeU_V2")
BOTH_WARNING = ("InstanceDiffusion: 'Apply ScaleU (InstanceDiffusion)' and ComfyUI's '%s' are both applied to this "
                "model. Both rescale the decoder's backbone and skip features, so the scaling happens twice; keep "
                "only one of them (InstanceDiffusion was trained with ScaleU).")


def freeu_node_of(patch) -> str | None:
    """'FreeU' / 'FreeU_V2' if ``patch`` is the output_block_patch ComfyUI's FreeU node installs, else None."""
    qualname = getattr(patch, "__qualname__", "") or ""
    head = qualname.split(".", 1)[0]
    return head if head in FREEU_NODES and "output_block_patch" in qualname else None


def freeu_in(patches) -> str | None:
    for p in patches or ():
        name = freeu_node_of(p)
        if name is not None:
            return name
    return None


class ScaleUPatch:
    """``output_block_patch``: (h, hsp) -> ScaleU(h, hsp) for output block k = transformer_options["block"][1]."""

    def __init__(self, params: dict):
        self.params = {k: (b.detach().float().cpu(), s.detach().float().cpu()) for k, (b, s) in params.items()}
        self._on = {}
        self.first_block = min(self.params) if self.params else None
        self.warned_freeu = False   # a log-once flag, not per-call state

    def _params_on(self, k, device):
        key = (k, device)
        if key not in self._on:
            b, s = self.params[k]
            self._on[key] = (b.to(device), s.to(device))
        return self._on[key]

    def __call__(self, h, hsp, transformer_options):
        block = transformer_options.get("block")
        if block is None or block[0] != "output" or block[1] not in self.params:
            return h, hsp
        if block[1] == self.first_block and not self.warned_freeu:   # FreeU applied after ScaleU: seen here
            freeu = freeu_in(transformer_options.get("patches", {}).get("output_block_patch"))
            if freeu is not None:
                self.warned_freeu = True
                logging.warning(BOTH_WARNING, freeu)
        b, s = self._params_on(block[1], h.device)
        return scaleu_on_device(h, hsp, b, s)

    def to(self, *_args, **_kwargs):
        return self   # parameters follow the activations' device lazily; always float32

    def __deepcopy__(self, memo):
        return self   # read-only after construction; shared by every clone


def scaleu_on_device(h, hsp, b, s):
    """ScaleU where the activations are; the skip filter on the CPU for a device whose FFT failed (warned once)."""
    device = hsp.device
    if device in NO_FFT_DEVICES:
        return scaleu(h, hsp, b, s, fft_device="cpu")
    try:
        return scaleu(h, hsp, b, s)
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, NotImplementedError) as e:   # what a backend without (these) FFT kernels raises
        NO_FFT_DEVICES.add(device)
        logging.warning("InstanceDiffusion ScaleU: device %s does not support the torch.fft functions ScaleU uses "
                        "(%s: %s); running ScaleU's skip filter on the CPU from now on.", device, type(e).__name__, e)
        return scaleu(h, hsp, b, s, fft_device="cpu")


def scaleu_params(addons) -> dict:
    return {k: (getattr(addons, f"scaleu_b_{k}"), getattr(addons, f"scaleu_s_{k}"))
            for k in sorted(addons.scaleu_widths())}


class ApplyScaleU(ModelPatchNode):
    DESCRIPTION = ("Adds InstanceDiffusion's learned ScaleU to the 12 decoder blocks (per-channel backbone scale and "
                   "a low-frequency filter on the skip features), on a copy of the model. The official model always "
                   "runs it, in both the positive and the negative pass.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD1.5-family model (usually the output of 'Apply UniFusion')."}),
            "instdiff": (INSTANCEDIFFUSION, {"tooltip": "Weights from 'Load InstanceDiffusion' (scaleu_b_*/scaleu_s_*)."}),
        }}

    def apply(self, model, instdiff):
        addons = weights_of(instdiff).model
        params = scaleu_params(addons)
        if not params:
            raise ValueError("These InstanceDiffusion weights contain no ScaleU parameters (scaleu_b_*/scaleu_s_*).")
        topo = unet_topology(model)
        addons.check_compatible({}, topo.scaleu_widths, None)
        m = model.clone()
        remove_patches_of(m.model_options, ScaleUPatch)
        patch = ScaleUPatch(params)
        freeu = freeu_in(m.model_options.get("transformer_options", {}).get("patches", {}).get("output_block_patch"))
        if freeu is not None:                 # FreeU applied before ScaleU
            patch.warned_freeu = True
            logging.warning(BOTH_WARNING, freeu)
        m.set_model_output_block_patch(patch)
        return (m,)


NODES = {"ApplyScaleU": (ApplyScaleU, "Apply ScaleU (InstanceDiffusion)")}
