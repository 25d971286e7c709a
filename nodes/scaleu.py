"""Apply ScaleU: InstanceDiffusion's learned backbone/skip scaling on every decoder block, on a clone.

The parameters are tiny (12 vectors + 12 scalars), so the patch keeps its own float32 copy and needs no
model management; the math lives in ``instancediffusion_core.model.scaleu``.
"""
from __future__ import annotations

import torch

from ..instancediffusion_core.model.scaleu import scaleu
from .topology import unet_topology
from .types import INSTANCEDIFFUSION, ModelPatchNode, weights_of
from .patching import remove_patches_of


class ScaleUPatch:
    """``output_block_patch``: (h, hsp) -> ScaleU(h, hsp) for output block k = transformer_options["block"][1]."""

    def __init__(self, params: dict):
        self.params = {k: (b.detach().float().cpu(), s.detach().float().cpu()) for k, (b, s) in params.items()}
        self._on = {}

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
        b, s = self._params_on(block[1], h.device)
        return scaleu(h, hsp, b, s)

    def to(self, *_args, **_kwargs):
        return self   # parameters follow the activations' device lazily; always float32

    def __deepcopy__(self, memo):
        return self   # read-only after construction; shared by every clone


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
        m.set_model_output_block_patch(ScaleUPatch(params))
        return (m,)


NODES = {"ApplyScaleU": (ApplyScaleU, "Apply ScaleU (InstanceDiffusion)")}
