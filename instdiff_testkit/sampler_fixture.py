"""The whole-run sampler fixture (``tests/fixtures/sampler-public/README.md``) inside a real ComfyUI host.

Builds what the fixture's official run had, with ComfyUI's own pieces: ComfyUI's SD1.5 UNet class at the set's
``model_channels`` with the recipe weights, our add-on file (recipe weights) loaded by our loader node, the
grounding tokens from the set's grounding tensors, the given contexts instead of CLIP, and an
``InstanceConditioning`` carrying each instance's own context for the multi-instance sampler. Every size and name
comes from the set's ``meta.json``, so another set of the same format (``INSTDIFF_SAMPLER_DIR``) works unchanged.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import parity, recipe
from .parity_scenario import scenario_layout

ENV_VAR = "INSTDIFF_SAMPLER_DIR"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sampler-public"
FILES = ("meta.json", "keys.json", "inputs.safetensors", "expected.safetensors", "scenario.json")


def sampler_dir() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def missing(sdir=None) -> str | None:
    sdir = Path(sdir or sampler_dir())
    absent = [name for name in FILES if not (sdir / name).is_file()]
    return f"sampler fixture set incomplete at {sdir}: missing {', '.join(absent)}" if absent else None


def is_addon(key: str) -> bool:
    return key.startswith("position_net.") or ".fuser." in key or key.startswith("scaleu_")


@dataclass
class SamplerRun:
    meta: dict
    inputs: dict
    expected: dict
    patcher: object           # ComfyUI ModelPatcher of the recipe UNet (not patched)
    instdiff: object          # INSTANCEDIFFUSION weights (recipe add-ons)
    positive: list            # grounded positive conditioning (global prompt)
    negative: list


def mis_grounding(inputs: dict) -> dict:
    """Position-net inputs of the MIS instance inputs: row j = instance j alone in slot 0, its seg in channel 0."""
    g = {name: inputs[f"mis_grounding.{name}"] for name in parity.GROUNDING_NAMES}
    masks, slots = inputs["grounding.seg_masks"], inputs["grounding.seg_slots"]
    rows, n = g["masks"].shape
    segs = torch.zeros(rows, n, *masks.shape[-2:], dtype=torch.float32)
    for mask, slot in zip(masks, slots.tolist()):
        segs[int(slot), 0] = mask
    g["segs"] = segs
    return g


def _unet(meta: dict, sdir) -> object:
    import comfy.model_patcher
    import comfy.supported_models

    from .tiny_models import SD15_TOPOLOGY

    cfg = meta["model"]
    unet_config = {**SD15_TOPOLOGY, "model_channels": int(cfg["model_channels"]),
                   "context_dim": int(cfg["context_dim"])}   # SD15 itself sets 8 heads, as the set has
    model_config = comfy.supported_models.SD15(unet_config)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({}, device=torch.device("cpu"))
    sd = recipe.recipe_state_dict(sdir, select=lambda k: not is_addon(k))
    missing_keys, unexpected = model.diffusion_model.load_state_dict(sd, strict=False)
    if missing_keys or unexpected:
        raise AssertionError(f"recipe UNet does not fit ComfyUI's SD1.5 UNet: missing {missing_keys[:5]}, "
                             f"unexpected {unexpected[:5]}")
    model.eval()
    model.requires_grad_(False)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def build(pack, weights_dir: str, sdir=None) -> SamplerRun:
    """Everything a sampling run needs, through our nodes where a user would use them."""
    import folder_paths
    from safetensors.torch import save_file

    sdir = Path(sdir or sampler_dir())
    meta = parity.load_meta(sdir)
    inputs, expected = parity.load_inputs(sdir), parity.load_expected(sdir)
    with open(sdir / "scenario.json", encoding="utf-8") as f:
        scenario = json.load(f)

    name = f"sampler_recipe_{meta['seed']}.safetensors"
    path = os.path.join(weights_dir, name)
    if not os.path.exists(path):
        addons = recipe.recipe_state_dict(sdir, select=is_addon)
        save_file({k: v.contiguous() for k, v in addons.items()}, path)
        del addons
    folder_paths.add_model_folder_path("instance_diffusion", weights_dir)
    nodes = pack.NODE_CLASS_MAPPINGS
    (instdiff,) = nodes["LoadInstanceDiffusion"]().load(name, "fp32")

    tokenizer, ic = pack.nodes.tokenizer, pack.nodes.instance_cond
    drop = pack.instancediffusion_core.model.position_net.DropFlags(
        **{k: v for k, v in parity.drop_config(meta, meta["config"]).items()})
    tokens = tokenizer.run_position_net(instdiff, parity.grounding_from_inputs(inputs), drop)
    layout = scenario_layout(scenario)
    contexts = inputs["context.instances"]
    prompts = [ic.InstancePrompt(caption=inst.caption, cond=contexts[j:j + 1], pooled=None)
               for j, inst in enumerate(layout.instances)]
    data = ic.InstanceConditioning(
        tokens=tokens, layout=layout, config=meta["config"], prompts=prompts,
        _single_tokens_fn=lambda: tokenizer.run_position_net(instdiff, mis_grounding(inputs), drop))
    positive = [[inputs["context.prompt"], {ic.COND_KEY: data}]]
    negative = [[inputs["context.negative"], {}]]
    return SamplerRun(meta, inputs, expected, _unet(meta, sdir), instdiff, positive, negative)


def ddpm(x: torch.Tensor, a: float) -> torch.Tensor:
    """Sampler-space latent -> the official DDPM-space latent at alphas_cumprod ``a``."""
    return x * float(a) ** 0.5
