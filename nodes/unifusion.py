"""Apply UniFusion: the gated fusion layer between attn1 and attn2 of every transformer block, on a clone.

Two pieces, both public ComfyUI hooks:
- a ``CALC_COND_BATCH`` wrapper (``patching.token_table_wrapper``) that maps each cond's ``uuid`` to the grounding
  tokens the tokenizer attached (the negative gets the null grounding, as the official uncond pass);
- a ``middle_patch`` that runs the fuser of the current block on the whole batch at once, so cond and uncond
  stay one UNet call (16 fuser calls per step, not 32).

Where it runs (``host_ops``): only the fusers are loaded with the UNet (the position net's null tokens are
computed here, at patch time); the fusers use ComfyUI's cast-aware layers and ComfyUI's attention. Which step a
call belongs to comes from the run's step clock (``step_clock``): no device sigma is read per step.
"""
from __future__ import annotations

import torch

import comfy.patcher_extension

from ..instancediffusion_core.sampling.schedule import grounding_scale
from . import host_ops
from .patching import SCHEDULE_KEY, TABLE_KEY, WRAPPER_KEY, TokenTable, remove_patches_of, token_table_wrapper
from .step_clock import CLOCK_WRAPPER_KEY, StepSigmaWrapper, clock_wrapper
from .topology import unet_topology
from .types import INSTANCEDIFFUSION, ModelPatchNode, weights_of
from .validation import finite

NODE_TITLE = "Apply UniFusion (InstanceDiffusion)"


class UniFusionPatch:
    """``middle_patch``: x -> fuser(x, tokens of each batch chunk, scale of the current step)."""

    def __init__(self, weights_patcher, topology, strength: float, start: float, end: float):
        self.weights_patcher = weights_patcher
        self.host = host_ops.host_weights(weights_patcher)
        self.prefix_by_block = dict(topology.prefix_by_block)
        self.strength = float(strength)
        self.start = float(start)
        self.end = float(end)
        self._null = self.host.null_tokens()   # CPU float32, now: sampling never needs the position net

    # MODEL_PATCH protocol: ComfyUI loads/offloads the weights together with the UNet.
    def to(self, *_args, **_kwargs):
        return self

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() deep-copied model_options before ComfyUI 0.14 and shares patch objects since; the
        # patch holds no per-call state (the call's TokenTable does), so every clone and prompt may share it (a deep
        # copy would duplicate the ~370M add-on parameters on each clone).
        return self

    def models(self):
        """What ComfyUI loads with the UNet: the fusers only (ScaleU keeps its own float32 copy; the position net
        is not needed while sampling)."""
        return [self.host.fusers] if self.host.fusers is not None else []

    @property
    def addons(self):
        return self.weights_patcher.model

    def null_tokens(self) -> torch.Tensor:
        return self._null

    def scale_at(self, extra_options) -> float:
        if self.strength == 0.0:
            return 0.0
        table = extra_options.get(TABLE_KEY)
        if not isinstance(table, TokenTable):
            table = None
        key = ("scale", self.strength, self.start, self.end)
        if table is not None and key in table.memo:      # the 16 fusers of one UNet call share one answer
            return table.memo[key]
        schedule = extra_options.get(SCHEDULE_KEY, extra_options.get("sample_sigmas"))
        sigma = table.step_sigma if table is not None else None
        if sigma is None and extra_options.get("sigmas") is not None:   # a call outside our wrappers: read it
            sigma = float(extra_options["sigmas"].reshape(-1)[0])
        if sigma is None or schedule is None:
            scale = self.strength
        else:
            scale = grounding_scale(sigma, schedule, self.start, self.end, self.strength)
        if table is not None:
            table.memo[key] = scale
        return scale

    def _objs(self, x: torch.Tensor, extra_options) -> torch.Tensor:
        table = extra_options.get(TABLE_KEY)
        if not isinstance(table, TokenTable):    # a call that bypassed our wrapper: nothing is grounded
            table = TokenTable({})
        return table.objs_for(x, extra_options.get("uuids"), extra_options.get("cond_or_uncond"), self.null_tokens,
                              extra_options)

    def __call__(self, x, extra_options):
        block = extra_options.get("block")
        if block is None:
            return x
        prefix = self.prefix_by_block.get((block[0], block[1], extra_options.get("block_index", 0)))
        fuser = self.addons.fuser(prefix) if prefix is not None else None
        if fuser is None:
            return x
        scale = self.scale_at(extra_options)
        if scale == 0.0:          # identical output to running the fuser at scale 0: skip the work
            return x
        return fuser(x, self._objs(x, extra_options), scale=scale,
                     attention=host_ops.comfy_attention(extra_options))


class ApplyUniFusion(ModelPatchNode):
    DESCRIPTION = ("Adds InstanceDiffusion's UniFusion layer (gated self-attention over the 184 grounding tokens) "
                   "to every transformer block of an SD1.5 UNet, on a copy of the model. Connect a conditioning "
                   "from 'InstanceDiffusion Conditioning' as the positive; the negative automatically gets the "
                   "official null grounding.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD1.5-family model (the InstanceDiffusion weights are SD1.5 only)."}),
            "instdiff": (INSTANCEDIFFUSION, {"tooltip": "Weights from 'Load InstanceDiffusion'."}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                   "tooltip": "Multiplies the fusion layers' output (official: 1.0). 0 switches "
                                              "grounding off; values above ~1.5 tend to break images."}),
            "start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                "tooltip": "Fraction of the sampling steps after which grounding starts (official: 0)."}),
            "end": ("FLOAT", {"default": 0.8, "min": 0.0, "max": 1.0, "step": 0.01,
                              "tooltip": "Grounding runs on the first int(end * steps) steps, then the fusion layers "
                                         "are skipped (the official 'alpha'; README 0.8, inference.py 0.75). Raise it "
                                         "for tighter placement, lower it for more freedom."}),
        }}

    def apply(self, model, instdiff, strength, start, end):
        strength = finite("strength", strength, NODE_TITLE, minimum=0.0, maximum=3.0)
        start = finite("start", start, NODE_TITLE, minimum=0.0, maximum=1.0)
        end = finite("end", end, NODE_TITLE, minimum=0.0, maximum=1.0)
        if end < start:
            raise ValueError(f"{NODE_TITLE}: end ({end:g}) is before start ({start:g}); set end >= start.")
        patcher = weights_of(instdiff)
        addons = patcher.model
        if addons.position_net is None:
            raise ValueError("These InstanceDiffusion weights have no position net (position_net.*), which "
                             "UniFusion needs for the null grounding. Load the full add-on file.")
        topo = unet_topology(model)
        addons.check_compatible(topo.fuser_widths, {}, topo.context_dim)
        patch = UniFusionPatch(patcher, topo, strength, start, end)
        m = model.clone()
        remove_patches_of(m.model_options, UniFusionPatch)
        m.set_model_patch(patch, "middle_patch")
        wrappers = comfy.patcher_extension.WrappersMP
        for kind, key in ((wrappers.CALC_COND_BATCH, CLOCK_WRAPPER_KEY), (wrappers.CALC_COND_BATCH, WRAPPER_KEY),
                          (wrappers.SAMPLER_SAMPLE, CLOCK_WRAPPER_KEY)):
            m.remove_wrappers_with_key(kind, key)
        # order matters: the step-sigma wrapper runs outside the token-table wrapper, which then reads no sigma
        m.add_wrapper_with_key(wrappers.CALC_COND_BATCH, CLOCK_WRAPPER_KEY, StepSigmaWrapper(start, end, strength))
        m.add_wrapper_with_key(wrappers.CALC_COND_BATCH, WRAPPER_KEY, token_table_wrapper)
        m.add_wrapper_with_key(wrappers.SAMPLER_SAMPLE, CLOCK_WRAPPER_KEY, clock_wrapper)
        return (m,)


NODES = {"ApplyUniFusion": (ApplyUniFusion, NODE_TITLE)}
