"""InstanceDiffusion Conditioning: layout + CLIP -> the 184 grounding tokens, computed once per prompt.

Each instance phrase is encoded with the SD1.5 CLIP-L text tower (pooled, unprojected: the official
``pooler_output``); the position net runs here, once, and its tokens ride on the positive conditioning. Only the
position net is loaded for it (its own ModelPatcher, ``host_ops.HostWeights``), on the device ComfyUI chooses,
fully or partly; the null tokens are computed in the same load.
"""
from __future__ import annotations

import torch

import node_helpers

from ..instancediffusion_core.model.drop_config import CONFIG_NAMES, resolve_drop_config
from ..instancediffusion_core.layout.grounding import build_grounding, instance_grounding, stack_groundings
from ..instancediffusion_core.model.position_net import DROP_CONFIGS
from . import host_ops
from .instance_cond import InstanceConditioning, InstancePrompt
from .patching import COND_KEY
from .types import CATEGORY, INSTANCE_LAYOUT, INSTANCEDIFFUSION, weights_of


def encode_phrase(clip, text: str) -> InstancePrompt:
    tokens = clip.tokenize(text)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled="unprojected")
    return InstancePrompt(caption=text, cond=cond.cpu(), pooled=None if pooled is None else pooled.cpu())


def position_net_tokens(patcher, grounding: dict, drop) -> torch.Tensor:
    """One position-net forward on the device ComfyUI loaded it for; tokens stay there (compute dtype)."""
    host = host_ops.host_weights(patcher)
    device = host.load_position_net()
    g = {k: v.to(device=device) for k, v in grounding.items()}
    with torch.no_grad():
        tokens, _ = host.position_net.model(g, drop)
    host.null_tokens()          # while the position net is loaded: the patch then finds them ready
    return tokens


def run_position_net(patcher, grounding: dict, drop) -> torch.Tensor:
    """One position-net forward; returns CPU float32 tokens."""
    return position_net_tokens(patcher, grounding, drop).float().cpu()


class InstanceDiffusionConditioning:
    DESCRIPTION = ("Turns a layout (instances with prompts and boxes/masks/points/scribbles) into InstanceDiffusion's "
                   "grounding tokens and attaches them to the positive conditioning. Runs the position net once "
                   "per prompt. Use the output as the positive of a sampler whose model went through 'Apply "
                   "UniFusion'.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("positive",)
    OUTPUT_TOOLTIPS = ("The positive conditioning carrying the grounding tokens (and each instance's own prompt for "
                       "the multi-instance sampler).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("CONDITIONING", {"tooltip": "The global prompt (CLIP Text Encode of the whole scene)."}),
            "clip": ("CLIP", {"tooltip": "The SD1.5 CLIP that encodes each instance's phrase (pooled CLIP-L)."}),
            "layout": (INSTANCE_LAYOUT, {"tooltip": "Instances from the layout nodes or 'Load Layout'."}),
            "instdiff": (INSTANCEDIFFUSION, {"tooltip": "Weights from 'Load InstanceDiffusion'."}),
            "modalities": (["auto"] + list(CONFIG_NAMES), {
                "default": "auto",
                "tooltip": "Which official modality configuration the position net uses. auto: scribble if any "
                           "instance has a scribble, else mask if any has a mask, else point if no instance has a "
                           "box, else box."}),
        }}

    def encode(self, positive, clip, layout, instdiff, modalities="auto"):
        patcher = weights_of(instdiff)
        addons = patcher.model
        if addons.position_net is None:
            raise ValueError("These InstanceDiffusion weights have no position net (position_net.*); load the full "
                             "add-on file.")
        if getattr(layout, "num_frames", None) is not None:    # a track: tokens [F, 184, D] (nodes/frames.py)
            from .frames import encode_frames
            return (encode_frames(positive, clip, layout, patcher, modalities),)
        prompts = [encode_phrase(clip, inst.caption) for inst in layout.instances]
        text_dim = addons.text_dim
        for i, p in enumerate(prompts):
            if p.pooled is None or p.pooled.shape[-1] != text_dim:
                got = None if p.pooled is None else p.pooled.shape[-1]
                raise ValueError(f"instance {i} ('{p.caption}'): the CLIP gave a pooled feature of width {got}, the "
                                 f"InstanceDiffusion weights need {text_dim} (SD1.5 CLIP-L). Use the SD1.5 "
                                 f"checkpoint's CLIP.")
        text = (torch.cat([p.pooled.reshape(1, -1).float() for p in prompts])
                if prompts else torch.zeros(0, text_dim))
        config = resolve_drop_config(modalities, [inst.modalities() for inst in layout.instances])
        drop = DROP_CONFIGS[config]
        tokens = run_position_net(patcher, build_grounding(layout, text), drop)

        def single_tokens():
            if not prompts:
                return tokens[:0]
            singles = [instance_grounding(layout, i, text[i]) for i in range(len(prompts))]
            return run_position_net(patcher, stack_groundings(singles), drop)

        data = InstanceConditioning(tokens=tokens, layout=layout, config=config, prompts=prompts,
                                    _single_tokens_fn=single_tokens)
        return (node_helpers.conditioning_set_values(positive, {COND_KEY: data}),)


NODES = {"InstanceDiffusionConditioning": (InstanceDiffusionConditioning, "InstanceDiffusion Conditioning")}
