"""Our UniFusion / ScaleU patches on a real ComfyUI UNet (tiny, random): routing, batching, no side effects."""
from __future__ import annotations

import pytest
import torch

from instdiff_testkit import tiny_models
from instdiff_testkit.host_fixtures import StubClip, box_layout, instdiff_for, sample


def _conds(node, instdiff, layout, text="a scene", modalities="auto"):
    clip = StubClip()
    positive = clip.encode(text)
    (grounded,) = node["InstanceDiffusionConditioning"].encode(positive, clip, layout, instdiff, modalities)
    negative = clip.encode("")
    return grounded, negative


def _patched(node, base, instdiff, strength=1.0, start=0.0, end=1.0, scaleu=True):
    (m,) = node["ApplyUniFusion"].apply(base, instdiff, strength, start, end)
    if scaleu:
        (m,) = node["ApplyScaleU"].apply(m, instdiff)
    return m


class FuserSpy:
    """Records (batch size, objs) of every fuser call through forward pre-hooks."""

    def __init__(self, addons):
        self.calls = []
        self.handles = [addons.fuser(p).register_forward_pre_hook(self._hook, with_kwargs=True)
                        for p in addons.fuser_prefixes]

    def _hook(self, module, args, kwargs):
        x = args[0] if args else kwargs["x"]
        objs = args[1] if len(args) > 1 else kwargs["objs"]
        self.calls.append((x.shape[0], objs.detach().clone()))

    def close(self):
        for h in self.handles:
            h.remove()


def test_uncond_gets_null_tokens_in_one_batch(node, base, instdiff, pack_core):
    layout = box_layout(pack_core, [(4, 4, 30, 40), (20, 10, 60, 50)])
    positive, negative = _conds(node, instdiff, layout)
    tokens = positive[0][1]["instance_diffusion"].tokens[0]
    null = instdiff.model.position_net.null_tokens(batch=1)[0].float()
    assert not torch.allclose(tokens, null)
    m = _patched(node, base, instdiff)
    spy = FuserSpy(instdiff.model)
    try:
        steps = 2
        sample(m, positive, negative, torch.zeros(1, 4, 8, 8), steps=steps, cfg=5.0)
    finally:
        spy.close()
    n_fusers = len(instdiff.model.fuser_prefixes)
    assert n_fusers == 16
    assert len(spy.calls) == n_fusers * steps, "cond and uncond must share one UNet call (16 fuser calls/step)"
    for batch, objs in spy.calls:
        assert batch == 2
        matched = sorted(int(torch.allclose(o.float(), tokens, atol=1e-6)) * 1 + int(torch.allclose(o.float(), null, atol=1e-6)) * 2
                         for o in objs)
        assert matched == [1, 2], "one chunk must carry the layout tokens, the other the null tokens"


def test_each_positive_keeps_its_own_tokens(node, base, instdiff, pack_core):
    pos_a, negative = _conds(node, instdiff, box_layout(pack_core, [(0, 0, 20, 20)]), text="left")
    pos_b, _ = _conds(node, instdiff, box_layout(pack_core, [(40, 40, 64, 64)]), text="right")
    combined = pos_a + pos_b                         # what ConditioningCombine returns
    ta = pos_a[0][1]["instance_diffusion"].tokens[0]
    tb = pos_b[0][1]["instance_diffusion"].tokens[0]
    m = _patched(node, base, instdiff)
    spy = FuserSpy(instdiff.model)
    try:
        sample(m, combined, negative, torch.zeros(1, 4, 8, 8), steps=1, cfg=5.0)
    finally:
        spy.close()
    seen = [o.float() for _b, objs in spy.calls for o in objs]
    assert any(torch.allclose(o, ta, atol=1e-6) for o in seen)
    assert any(torch.allclose(o, tb, atol=1e-6) for o in seen)


def test_original_model_is_untouched_and_patches_do_not_stack(node, base, instdiff, pack_core):
    layout = box_layout(pack_core, [(4, 4, 30, 40)])
    positive, negative = _conds(node, instdiff, layout)
    plain_pos = [[positive[0][0], {}]]
    latent = torch.zeros(1, 4, 8, 8)
    before = sample(base, plain_pos, negative, latent)
    options_before = repr(base.model_options)
    m = _patched(node, base, instdiff)
    patched = sample(m, positive, negative, latent)
    after = sample(base, plain_pos, negative, latent)
    assert torch.equal(before, after), "sampling the original MODEL after the patched clone must be bit-identical"
    assert repr(base.model_options) == options_before
    assert not torch.equal(before, patched)
    # applying again (re-running a prompt, or patching an already patched model) replaces instead of stacking
    m2 = _patched(node, m, instdiff)
    patches = m2.model_options["transformer_options"]["patches"]
    assert len(patches["middle_patch"]) == 1 and len(patches["output_block_patch"]) == 1
    assert torch.equal(sample(m2, positive, negative, latent), patched)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_unet_dtypes(node, pack_core, dtype):
    unet = tiny_models.tiny_sd15_patcher(dtype=dtype)
    weights = instdiff_for(pack_core, unet, dtype=dtype)
    positive, negative = _conds(node, weights, box_layout(pack_core, [(4, 4, 30, 40)]))
    out = sample(_patched(node, unet, weights), positive, negative, torch.zeros(1, 4, 8, 8), steps=2)
    assert torch.isfinite(out).all()


def test_latent_batch_and_non_square(node, base, instdiff, pack_core):
    layout = box_layout(pack_core, [(10, 10, 200, 150)], width=768, height=512)
    positive, negative = _conds(node, instdiff, layout)
    m = _patched(node, base, instdiff)
    latent = torch.zeros(2, 4, 8, 12)                # batch 2, 768x512-shaped (h 64 : w 96 -> here 8 x 12)
    out = sample(m, positive, negative, latent, steps=2)
    assert out.shape == latent.shape and torch.isfinite(out).all()
    spy = FuserSpy(instdiff.model)
    try:
        sample(m, positive, negative, latent, steps=1)
    finally:
        spy.close()
    assert all(b == 4 for b, _ in spy.calls)           # 2 latents x (cond, uncond) in one call


def test_strength_zero_is_the_unpatched_model_without_scaleu(node, base, instdiff, pack_core):
    positive, negative = _conds(node, instdiff, box_layout(pack_core, [(4, 4, 30, 40)]))
    latent = torch.zeros(1, 4, 8, 8)
    plain = sample(base, positive, negative, latent)
    off = sample(_patched(node, base, instdiff, strength=0.0, scaleu=False), positive, negative, latent)
    assert torch.equal(plain, off), "strength 0 skips every fuser: identical to the unpatched UNet"
    # ScaleU alone is the official model's behaviour, not the plain UNet
    scaled = sample(_patched(node, base, instdiff, strength=0.0, scaleu=True), positive, negative, latent)
    assert not torch.equal(plain, scaled)


def test_empty_layout_runs_fusers_on_null_tokens(node, base, instdiff, pack_core):
    empty = pack_core.layout.Layout(width=64, height=64)
    positive, negative = _conds(node, instdiff, empty)
    latent = torch.zeros(1, 4, 8, 8)
    null_pos = [[positive[0][0], {}]]
    m = _patched(node, base, instdiff, scaleu=False)
    with_empty = sample(m, positive, negative, latent)
    with_null = sample(m, null_pos, negative, latent)
    plain = sample(base, null_pos, negative, latent)
    assert torch.allclose(with_empty, with_null, rtol=1e-4, atol=1e-3), "an empty layout is the null grounding"
    assert not torch.equal(with_empty, plain), "fusers still run on null tokens (official uncond behaviour)"


def test_grounding_window_skips_fusers_after_end(node, base, instdiff, pack_core):
    positive, negative = _conds(node, instdiff, box_layout(pack_core, [(4, 4, 30, 40)]))
    m = _patched(node, base, instdiff, end=0.5)
    spy = FuserSpy(instdiff.model)
    try:
        sample(m, positive, negative, torch.zeros(1, 4, 8, 8), steps=4)
    finally:
        spy.close()
    assert len(spy.calls) == 16 * 2, "int(0.5 * 4) = 2 grounded steps, fusers skipped afterwards"


@pytest.mark.parametrize("kind", ["sdxl", "sd2"])
def test_wrong_model_is_refused_when_patching(node, instdiff, kind):
    other = tiny_models.tiny_sdxl_patcher() if kind == "sdxl" else tiny_models.tiny_sd2_patcher()
    with pytest.raises(ValueError) as err:
        node["ApplyUniFusion"].apply(other, instdiff, 1.0, 0.0, 0.8)
    msg = str(err.value)
    assert "SD1.5" in msg


# ------------------------------------------------------------------ patches shared between clones and prompts
# Since ComfyUI 0.14 clone() shares patch objects; a patch must keep no per-call state (issue #10).

def _patching(pack):
    import importlib
    return importlib.import_module(pack.__name__ + ".nodes.patching")


def _unifusion_patch(m):
    (patch,) = m.model_options["transformer_options"]["patches"]["middle_patch"]
    return patch


def test_token_cache_belongs_to_the_call_not_the_patch(node, base, instdiff, pack, pack_core):
    """Two calls with the same uuids but different tables must each get their own tokens, also when Python reuses
    the first table's id() for the second (what an id()-keyed cache on the shared patch gets wrong)."""
    patching = _patching(pack)
    patch = _unifusion_patch(_patched(node, base, instdiff, scaleu=False))
    x = torch.zeros(2, 16, 32)
    opts = {"uuids": ["u"], "cond_or_uncond": [0]}
    ta, tb = torch.full((1, 184, 768), 1.0), torch.full((1, 184, 768), 2.0)
    table = patching.TokenTable({"u": ta})
    first_id = id(table)
    assert torch.equal(patch._objs(x, {**opts, patching.TABLE_KEY: table}), ta.expand(2, -1, -1))
    del table
    for _ in range(1000):                       # CPython hands the freed block to the next object of its size
        table = patching.TokenTable({"u": tb})
        if id(table) == first_id:
            break
    assert torch.equal(patch._objs(x, {**opts, patching.TABLE_KEY: table}), tb.expand(2, -1, -1))
    assert not hasattr(patch, "_objs_cache")


def test_two_clones_sampled_alternately_keep_their_own_settings(node, base, instdiff, pack_core):
    pos_a, negative = _conds(node, instdiff, box_layout(pack_core, [(0, 0, 30, 30)]), text="left")
    pos_b, _ = _conds(node, instdiff, box_layout(pack_core, [(30, 20, 64, 64), (2, 40, 20, 60)]), text="right")
    latent = torch.zeros(1, 4, 8, 8)
    a = _patched(node, base, instdiff, strength=1.0)
    b = _patched(node, base, instdiff, strength=0.5, end=0.5)
    a2 = a.clone()                              # shares a's patch objects on ComfyUI >= 0.14
    ref_a = sample(_patched(node, base, instdiff, strength=1.0), pos_a, negative, latent)
    ref_b = sample(_patched(node, base, instdiff, strength=0.5, end=0.5), pos_b, negative, latent)
    ref_a2_b = sample(_patched(node, base, instdiff, strength=1.0), pos_b, negative, latent)
    for _ in range(2):
        assert torch.equal(sample(a, pos_a, negative, latent), ref_a)
        assert torch.equal(sample(b, pos_b, negative, latent), ref_b)
        assert torch.equal(sample(a2, pos_b, negative, latent), ref_a2_b)
    assert not torch.equal(ref_a, ref_a2_b), "the two layouts must give different results"


def test_area_conditioned_negative_gets_the_null_grounding(node, base, instdiff, pack_core):
    """ComfyUI gives an area-conditioned positive a twin in the negatives (a copy with the same uuid); that twin
    runs in the uncond pass and must get the null tokens, not the positive's."""
    import node_helpers
    layout = box_layout(pack_core, [(4, 4, 30, 40)])
    positive, negative = _conds(node, instdiff, layout)
    positive = node_helpers.conditioning_set_values(positive, {"area": (4, 4, 0, 0), "strength": 1.0,
                                                               "set_area_to_bounds": False})
    tokens = positive[0][1]["instance_diffusion"].tokens[0]
    null = instdiff.model.position_net.null_tokens(batch=1)[0].float()
    m = _patched(node, base, instdiff, scaleu=False)
    spy = FuserSpy(instdiff.model)
    try:
        sample(m, positive, negative, torch.zeros(1, 4, 8, 8), steps=1, cfg=5.0)
    finally:
        spy.close()
    seen = [o.float() for _b, objs in spy.calls for o in objs]
    assert any(torch.allclose(o, tokens, atol=1e-6) for o in seen)
    n_null = sum(torch.allclose(o, null, atol=1e-6) for o in seen)
    n_tokens = sum(torch.allclose(o, tokens, atol=1e-6) for o in seen)
    assert n_null >= n_tokens, "every uncond row (the area twin included) must get the null grounding"


def test_token_row_rule(pack):
    patching = _patching(pack)
    one, four = torch.randn(1, 184, 8), torch.randn(4, 184, 8)
    assert torch.equal(patching.tokens_for_rows(one, 3), one.expand(3, -1, -1))
    assert torch.equal(patching.tokens_for_rows(four, 4), four)
    with pytest.raises(patching.TokenRowError, match=r"4 token rows.*3 latents"):
        patching.tokens_for_rows(four, 3)


def test_reapplying_replaces_the_wrappers_and_keeps_their_order(node, base, instdiff, pack):
    """UniFusion installs a step-sigma wrapper *outside* the token-table wrapper (so no device sigma is read per
    call) and a SAMPLER_SAMPLE clock; applying again replaces all three instead of stacking them."""
    import importlib

    import comfy.patcher_extension

    step_clock = importlib.import_module(pack.__name__ + ".nodes.step_clock")
    patching = _patching(pack)
    kinds = comfy.patcher_extension.WrappersMP
    m = _patched(node, _patched(node, base, instdiff), instdiff)
    calc = m.wrappers[kinds.CALC_COND_BATCH]
    assert list(calc) == [step_clock.CLOCK_WRAPPER_KEY, patching.WRAPPER_KEY]
    assert [len(v) for v in calc.values()] == [1, 1]
    assert isinstance(calc[step_clock.CLOCK_WRAPPER_KEY][0], step_clock.StepSigmaWrapper)
    assert m.wrappers[kinds.SAMPLER_SAMPLE] == {step_clock.CLOCK_WRAPPER_KEY: [step_clock.clock_wrapper]}
    assert not base.wrappers.get(kinds.CALC_COND_BATCH) and not base.wrappers.get(kinds.SAMPLER_SAMPLE)
