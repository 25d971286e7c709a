"""Multi-instance sampler on a real ComfyUI (tiny random UNet + tiny add-on weights): phase semantics, batching,
the grounding schedule across phases, inpainting, latent batches, noise of stochastic samplers, Cancel through
ComfyUI's progress hook, seg-channel order, and the node run by ComfyUI's executor (errors reach the user).

Complements test_mis_sampler.py (mis=0 identity, equal-instance identity, order for boxes, sizes 0/1/30,
euler/euler_ancestral batching, progress totals, Cancel via the callback, SamplerCustomAdvanced).
Outputs of the random tiny UNet are large (|x| ~ 1e2), so tolerances are relative to the output scale.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from instdiff_testkit import comfy_harness
from instdiff_testkit.graph_nodes import provider
from instdiff_testkit.host_fixtures import StubClip, box_layout, patched_tiny, sample

STEPS = 5
BOXES = [(4, 4, 30, 40), (20, 10, 60, 50), (30, 30, 62, 62)]
CAPTIONS = ["a cat", "a dog", "a bird"]
REL = 1e-5            # float-rounding tolerance relative to max |output| (batching changes summation order)


@pytest.fixture(scope="module")
def env(pack, pack_core, tiny_sd15):
    node, instdiff, m = patched_tiny(pack, pack_core, tiny_sd15)
    return {"node": node, "model": m, "instdiff": instdiff, "core": pack_core, "mis": pack.nodes.mis,
            "ic": pack.nodes.instance_cond, "base": tiny_sd15}


def _encode(env, layout, text="a scene"):
    clip = StubClip()
    (pos,) = env["node"]["InstanceDiffusionConditioning"].encode(clip.encode(text), clip, layout, env["instdiff"],
                                                                 "auto")
    return pos, clip.encode("")


def _conds(env, boxes=BOXES, captions=CAPTIONS):
    return _encode(env, box_layout(env["core"], boxes, captions=captions))


def _run(env, positive, negative, model=None, mis=0.4, max_batch=4, sampler="euler", scheduler="normal",
         latent=None, steps=STEPS, denoise=1.0, seed=0):
    latent = latent if isinstance(latent, dict) else {"samples": torch.zeros(1, 4, 8, 8) if latent is None else latent}
    out, guider = env["mis"].mis_ksample(model or env["model"], seed, steps, 5.0, sampler, scheduler, positive,
                                         negative, latent, denoise, mis, "mean", max_batch)
    return out["samples"], guider


def _close(a, b, rel=REL):
    scale = max(1.0, a.abs().max().item(), b.abs().max().item())
    return (a - b).abs().max().item() <= rel * scale


def _instance_positive(env, data, i):
    p = data.prompts[i]
    return [[p.cond, {"pooled_output": p.pooled, env["ic"].COND_KEY: data.for_instance(i)}]]


# ------------------------------------------------------------------------------------------------ phase semantics

def test_mis_one_is_the_mean_of_lone_runs_of_every_input(env):
    """mis = 1 leaves no phase 2: the result must be the mean of the global run and each instance run alone
    (instance phrase as the prompt, only its grounding, same noise/negative/cfg) - the phase-1 contract."""
    pos, neg = _conds(env)
    data = pos[0][1][env["ic"].COND_KEY]
    latent = torch.zeros(1, 4, 8, 8)
    lone = [sample(env["model"], pos, neg, latent, steps=STEPS)]
    lone += [sample(env["model"], _instance_positive(env, data, i), neg, latent, steps=STEPS) for i in range(3)]
    for max_batch in (1, 4):
        ours, guider = _run(env, pos, neg, mis=1.0, max_batch=max_batch)
        assert guider.last_plan.m == STEPS
        assert _close(ours, torch.stack(lone).mean(0)), f"max_batch {max_batch}"
    assert not _close(lone[1], lone[2], rel=1e-3), "instances must really differ for this test to mean anything"


def test_batched_phase1_shares_one_unet_call_per_step(env):
    import comfy.patcher_extension

    pos, neg = _conds(env)
    calls = []

    def count(executor, x, *args, **kwargs):
        calls.append(int(x.shape[0]))
        return executor(x, *args, **kwargs)

    model = env["model"].clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "mis_test_count", count)
    m = int(STEPS * 0.4)
    for max_batch, per_step in ((4, [8]), (2, [4, 4]), (1, [2, 2, 2, 2])):
        calls.clear()
        _out, guider = _run(env, pos, neg, model=model, max_batch=max_batch)
        assert guider.last_plan.batched == (max_batch > 1)
        phase1 = sorted(calls[:m * len(per_step)])
        assert phase1 == sorted(per_step * m), f"max_batch {max_batch}: (cond+uncond) x inputs per UNet call"
        assert calls[m * len(per_step):] == [2] * (STEPS - m), "phase 2: the global input alone"


def test_grounding_window_counts_steps_of_the_whole_run(env):
    """UniFusion's end=0.5 over 6 steps grounds global steps 0,1,2 in BOTH phases (m = 2): each phase slice must
    see the full schedule, or phase 1 would ground only its step 0 and phase 2 its first two steps (2, 3)."""
    import comfy.samplers

    pos, neg = _conds(env)
    (model,) = env["node"]["ApplyUniFusion"].apply(env["base"], env["instdiff"], 1.0, 0.0, 0.5)
    patch = next(p for p in model.model_options["transformer_options"]["patches"]["middle_patch"]
                 if hasattr(p, "scale_at"))
    seen = set()
    original = patch.scale_at

    def spy(extra_options):
        scale = original(extra_options)
        seen.add((round(float(extra_options["sigmas"].reshape(-1)[0]), 4), scale > 0))
        return scale

    patch.scale_at = spy
    try:
        _run(env, pos, neg, model=model, mis=0.34, steps=6)
    finally:
        del patch.scale_at
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 6)
    grounded = {s for s, on in seen if on}
    assert grounded == {round(float(s), 4) for s in sigmas[:3]}
    assert {s for s, on in seen if not on} == {round(float(s), 4) for s in sigmas[3:6]}


def test_multistep_sampler_restarts_history_but_stays_consistent(env):
    """dpmpp_2m restarts its history at the merge (like chained KSamplerAdvanced); batching still changes nothing."""
    pos, neg = _conds(env)
    seq, _ = _run(env, pos, neg, sampler="dpmpp_2m", scheduler="karras", max_batch=1)
    bat, _ = _run(env, pos, neg, sampler="dpmpp_2m", scheduler="karras", max_batch=4)
    assert torch.isfinite(bat).all() and _close(seq, bat)


@pytest.mark.parametrize("sampler", ["dpmpp_sde", "dpmpp_2m_sde"])
def test_brownian_sde_samplers_see_the_same_noise_batched_and_alone(env, sampler):
    pos, neg = _conds(env)
    seq, _ = _run(env, pos, neg, sampler=sampler, scheduler="karras", max_batch=1)
    bat, g = _run(env, pos, neg, sampler=sampler, scheduler="karras", max_batch=4)
    assert g.last_plan.batched and _close(seq, bat)
    other_seed, _ = _run(env, pos, neg, sampler=sampler, scheduler="karras", seed=1)
    assert not _close(bat, other_seed, rel=1e-3), "the injected noise follows the seed"


# ------------------------------------------------------------------------------------------------ inputs ComfyUI allows

def test_latent_batch_rows_stay_separate(env):
    """Stacking is input-major: row 0 of a batch-2 run equals a batch-1 run with the same first noise row."""
    pos, neg = _conds(env)
    two_seq, _ = _run(env, pos, neg, latent=torch.zeros(2, 4, 8, 8), max_batch=1)
    two_bat, g = _run(env, pos, neg, latent=torch.zeros(2, 4, 8, 8), max_batch=4)
    one, _ = _run(env, pos, neg, latent=torch.zeros(1, 4, 8, 8), max_batch=4)
    assert g.last_plan.batched and two_bat.shape == (2, 4, 8, 8)
    assert _close(two_seq, two_bat)
    assert _close(two_bat[:1], one)
    assert not _close(two_bat[:1], two_bat[1:], rel=1e-3)


def test_inpainting_mask_and_denoise_keep_the_source_outside_the_mask(env):
    pos, neg = _conds(env)
    g = torch.Generator().manual_seed(3)
    source = torch.randn(1, 4, 8, 8, generator=g)
    mask = torch.zeros(1, 8, 8)
    mask[:, :, 4:] = 1.0                               # repaint the right half only
    latent = {"samples": source, "noise_mask": mask}
    seq, _ = _run(env, pos, neg, latent=dict(latent), max_batch=1, denoise=0.8)
    bat, plan = _run(env, pos, neg, latent=dict(latent), max_batch=4, denoise=0.8)
    assert plan.last_plan.batched and plan.last_plan.m == int(STEPS * 0.4)
    assert _close(seq, bat)
    kept = (bat - source)[:, :, :, :4].abs().max().item()
    assert kept <= 1e-4, f"left half must stay the source image (max diff {kept:.2e})"
    assert (bat - source)[:, :, :, 4:].abs().max().item() > 1e-2
    plain, _ = _run(env, pos, neg, latent=dict(latent), mis=0.0, denoise=0.8)
    assert not _close(plain, bat, rel=1e-3)


def test_ddim_random_inpainting_noise_runs_inputs_one_at_a_time(env):
    import comfy.samplers

    guider = env["mis"].MultiInstanceGuider(env["model"], 0.4, "mean", 4)
    ddim = comfy.samplers.sampler_object("ddim")
    assert "random inpainting" in guider._stacking_blocker(ddim, torch.ones(1, 8, 8))
    assert guider._stacking_blocker(ddim, None) == ""
    assert "couples the batch" in guider._stacking_blocker(comfy.samplers.sampler_object("dpm_adaptive"), None)
    assert "not a KSAMPLER" in guider._stacking_blocker(comfy.samplers.Sampler(), None)


def test_global_positive_with_extra_entries_runs_alone_and_agrees(env):
    """ConditioningCombine-style positive (2 entries): the global input cannot be stacked, instances still are."""
    pos, neg = _conds(env)
    extra = StubClip().encode("extra style words")
    combined = pos + extra
    seq, _ = _run(env, combined, neg, max_batch=1)
    bat, g = _run(env, combined, neg, max_batch=4)
    assert g.last_plan.groups == [(0,), (1, 2, 3)]
    assert _close(seq, bat)
    alone, _ = _run(env, pos, neg)
    assert not _close(alone, bat, rel=1e-3), "the second entry is part of the global input"


def test_no_instance_data_is_exactly_plain_sampling(env):
    clip = StubClip()
    pos, neg = clip.encode("a scene"), clip.encode("")
    plain = sample(env["model"], pos, neg, torch.zeros(1, 4, 8, 8), steps=STEPS)
    ours, guider = _run(env, pos, neg, mis=0.5)
    assert torch.equal(plain, ours) and guider.last_plan.n == 0


# ------------------------------------------------------------------------------------------------ seg channel order

def _mask_layout(env, order):
    layout_mod = env["core"].layout
    masks = []
    for x0, y0, x1, y1 in BOXES:
        a = np.zeros((64, 64), dtype=bool)
        a[y0:y1, x0:x1] = True
        masks.append(a)
    layout = layout_mod.Layout(width=64, height=64)
    for i in order:
        layout = layout.with_instance(layout_mod.Instance(caption=CAPTIONS[i], mask=masks[i]))
    return layout


def test_mask_order_matters_only_through_the_global_input(env):
    """Seg tokens index instances by conv input channel, so the global input depends on instance order; every
    instance pass puts its mask in channel 0, so the instance passes do not. Swapping only the instance-pass
    order (global tokens kept) must therefore leave MIS unchanged, while swapping the whole layout changes it."""
    ic = env["ic"]
    pos_a, neg = _encode(env, _mask_layout(env, [0, 1, 2]))
    pos_b, _ = _encode(env, _mask_layout(env, [2, 0, 1]))
    a, b = pos_a[0][1][ic.COND_KEY], pos_b[0][1][ic.COND_KEY]
    assert a.config == "mask"
    assert not torch.allclose(a.tokens, b.tokens, atol=1e-4), "seg channel order changes the global tokens"
    singles_b = b.single_instance_tokens()
    assert torch.allclose(a.single_instance_tokens()[2], singles_b[0], atol=1e-5), "instance passes: channel 0"
    hybrid = ic.InstanceConditioning(tokens=a.tokens, layout=b.layout, config=b.config, prompts=b.prompts,
                                     _single_tokens=singles_b)
    out_a, _ = _run(env, pos_a, neg)
    out_b, _ = _run(env, pos_b, neg)
    out_h, _ = _run(env, [[pos_a[0][0], {**pos_a[0][1], ic.COND_KEY: hybrid}]], neg)
    assert _close(out_a, out_h)
    assert not _close(out_a, out_b, rel=1e-4)


# ------------------------------------------------------------------------------------------------ Cancel, progress

def test_cancel_through_comfyui_progress_hook_stops_phase_one(env):
    """The server's progress hook raises on interrupt; our bar must call it from phase 1 (ProgressBar path)."""
    import comfy.model_management as mm
    import comfy.utils

    pos, neg = _conds(env)
    values = []

    def hook(value, total, preview, *args, **kwargs):          # what main.py installs, minus the websocket
        values.append((value, total))
        if len(values) == 2:
            mm.interrupt_current_processing(True)
        mm.throw_exception_if_processing_interrupted()

    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _run(env, pos, neg, mis=0.6, max_batch=1)
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
        mm.interrupt_current_processing(False)
    m, n = int(STEPS * 0.6), 3
    total = (n + 1) * m + (STEPS - m)
    # one bar over all input-steps, stopped inside phase 1 at the second report (newer hosts may coalesce reports
    # that arrive in the same instant, so the second value may skip one step)
    assert len(values) == 2 and values[0] == (1, total), values
    assert values[1][1] == total and 1 < values[1][0] <= (n + 1) * m, values


# ------------------------------------------------------------------------------------------------ through the executor

def _graph(prompt, seed=0):
    return {
        "1": {"class_type": "MisTestModel", "inputs": {}},
        "2": {"class_type": "MisTestAssets", "inputs": {}},
        "3": {"class_type": "InstanceLayout", "inputs": {"width": 64, "height": 64}},
        "4": {"class_type": "InstanceBox", "inputs": {"layout": ["3", 0], "prompt": "a cat", "x": 4, "y": 4,
                                                      "width": 26, "height": 36}},
        "5": {"class_type": "InstanceBox", "inputs": {"layout": ["4", 0], "prompt": prompt, "x": 20, "y": 10,
                                                      "width": 40, "height": 40}},
        "6": {"class_type": "InstanceDiffusionConditioning",
              "inputs": {"positive": ["2", 0], "clip": ["2", 2], "layout": ["5", 0], "instdiff": ["2", 3],
                         "modalities": "auto"}},
        "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {"class_type": "InstanceDiffusionKSampler", "inputs": {
            "model": ["1", 0], "seed": seed, "steps": 3, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["6", 0], "negative": ["2", 1], "latent_image": ["7", 0],
            "denoise": 1.0, "mis": 0.36, "merge": "mean", "max_batch": 4}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": "mis_test"}},
    }


@pytest.fixture
def graph_nodes(env, monkeypatch):
    import nodes

    clip = StubClip()
    monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, "MisTestModel", provider("MisTestModel", ("MODEL",), (env["model"],)))
    monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, "MisTestAssets", provider("MisTestAssets", 
        ("CONDITIONING", "CONDITIONING", "CLIP", "INSTANCEDIFFUSION"),
        (clip.encode("a scene"), clip.encode(""), clip, env["instdiff"])))
    return clip


def test_executor_runs_the_node_and_matches_a_direct_call(env, graph_nodes, run_prompt):
    from safetensors.torch import load_file

    result = run_prompt(_graph("a dog"))
    latents = result["outputs"]["9"]["latents"]
    import folder_paths
    path = os.path.join(folder_paths.get_output_directory(), latents[0]["subfolder"], latents[0]["filename"])
    saved = load_file(path)["latent_tensor"].float()
    layout = box_layout(env["core"], [(4, 4, 30, 40), (20, 10, 60, 50)], captions=["a cat", "a dog"])
    pos, neg = _encode(env, layout)
    direct, guider = _run(env, pos, neg, steps=3, mis=0.36, latent=torch.zeros(1, 4, 8, 8))
    assert guider.last_plan.m == 1 and guider.last_plan.n == 2
    assert _close(saved, direct, rel=1e-6)


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_instance_prompt_error_reaches_the_user(graph_nodes, run_prompt, prompt):
    with pytest.raises(comfy_harness.PromptError) as err:
        run_prompt(_graph(prompt))
    msg = str(err.value)
    assert "node 5 (InstanceBox)" in msg
    assert "caption" in msg and "empty" in msg, msg.splitlines()[0]
