"""End-to-end parity: the official SD1.5 UNet + position net + 16 fusers + ScaleU vs ComfyUI's UNet with our nodes.

Recipe weights for every key (base UNet included) are loaded into ComfyUI's own SD1.5 BaseModel; our loader,
tokenizer function, Apply UniFusion and Apply ScaleU nodes patch it; one sampler call at the fixture's timestep
must reproduce the official eps for the grounded, null-grounded (CFG uncond) and fuser-scale-0 cases.
Slow (full-size weights, ~1.2 B values): one module-scoped model serves the three cases.
"""
from __future__ import annotations

import os

import pytest
import torch

from instdiff_testkit import parity
from instdiff_testkit import recipe

TOL = 1e-3


def _is_addon(key: str) -> bool:
    return key.startswith("position_net.") or ".fuser." in key or key.startswith("scaleu_")


@pytest.fixture(scope="module")
def e2e(pack, tmp_path_factory):
    import comfy.model_detection
    import comfy.model_patcher
    import folder_paths

    pdir = parity.parity_dir()
    meta = parity.load_meta(pdir)
    torch.manual_seed(0)
    unet_sd = recipe.recipe_state_dict(pdir, select=lambda k: not _is_addon(k))
    model_config = comfy.model_detection.model_config_from_unet(unet_sd, "")
    assert model_config is not None, "ComfyUI did not detect the recipe UNet as a supported model"
    model_config.set_inference_dtype(torch.float32, None)
    base = model_config.get_model(unet_sd, "")
    missing, unexpected = base.diffusion_model.load_state_dict(unet_sd, strict=False)
    assert not missing and not unexpected, (missing[:5], unexpected[:5])
    del unet_sd
    patcher = comfy.model_patcher.ModelPatcher(base, torch.device("cpu"), torch.device("cpu"))

    addon_sd = recipe.recipe_state_dict(pdir, select=_is_addon)
    wdir = tmp_path_factory.mktemp("instdiff_weights")
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in addon_sd.items()}, str(wdir / "recipe_addons.safetensors"))
    del addon_sd
    folder_paths.add_model_folder_path("instance_diffusion", str(wdir))
    nodes = pack.NODE_CLASS_MAPPINGS
    (instdiff,) = nodes["LoadInstanceDiffusion"]().load("recipe_addons.safetensors", "fp32")
    return dict(meta=meta, pdir=pdir, patcher=patcher, instdiff=instdiff, nodes=nodes,
                inputs=parity.load_inputs(pdir), expected=parity.load_expected(pdir))


def _eps(model_patcher, positive, x, t):
    """One model evaluation through ComfyUI's sampling stack (CFGGuider -> calc_cond_batch -> apply_model)."""
    import comfy.samplers

    ms = model_patcher.get_model_object("model_sampling")
    sigma = ms.sigma(torch.tensor([float(t)]))
    x_in = x * (sigma ** 2 + 1).sqrt()          # ComfyUI feeds the UNet x / sqrt(sigma^2 + 1) for eps models
    captured = {}

    def one_eval(model, x_unused, sigmas, extra_args=None, callback=None, disable=None):
        captured["denoised"] = model(x_in, sigmas[:1].expand(x_in.shape[0]), **(extra_args or {}))
        return captured["denoised"]

    guider = comfy.samplers.CFGGuider(model_patcher)
    negative = [[torch.zeros_like(positive[0][0]), {}]]
    guider.set_conds(positive, negative)
    guider.set_cfg(1.0)                          # cfg 1: only the positive is evaluated
    guider.sample(torch.zeros_like(x), torch.zeros_like(x), comfy.samplers.KSAMPLER(one_eval),
                  torch.tensor([float(sigma), 0.0]), seed=0, disable_pbar=True)
    return (x_in - captured["denoised"]) / sigma


@pytest.mark.parametrize("case", ["cond", "null", "fuser0"])
def test_unet_eps_matches_official(e2e, pack, case):
    tokenizer = pack.nodes.tokenizer
    instance_cond = pack.nodes.instance_cond
    position_net = pack.instancediffusion_core.model.position_net
    nodes, inputs, meta = e2e["nodes"], e2e["inputs"], e2e["meta"]
    cfg_name = meta["e2e"]["config"]
    drop = position_net.DropFlags(**{k[len("test_drop_"):]: bool(v) for k, v in meta["configs"][cfg_name].items()})
    grounding = parity.grounding_from_inputs(inputs, batch_index=0)
    tokens = tokenizer.run_position_net(e2e["instdiff"], grounding, drop)

    context = inputs["e2e.context"]
    data = instance_cond.InstanceConditioning(tokens=tokens, layout=None, config=cfg_name)
    positive = [[context, {} if case == "null" else {instance_cond.COND_KEY: data}]]
    strength = 0.0 if case == "fuser0" else 1.0
    (m,) = nodes["ApplyUniFusion"]().apply(e2e["patcher"], e2e["instdiff"], strength, 0.0, 1.0)
    (m,) = nodes["ApplyScaleU"]().apply(m, e2e["instdiff"])

    eps = _eps(m, positive, inputs["e2e.x"], int(inputs["e2e.timesteps"][0]))
    expected = e2e["expected"][f"e2e.eps_{case}"]
    err = (eps - expected).abs().max().item()
    parity.report(f"e2e.eps_{case}", err, TOL)
    assert err <= TOL
