"""The multi-instance sampler's host-independent rules: step split, merge, grouping, progress, batch stacking."""
from __future__ import annotations

import pytest
import torch

from instancediffusion_core.sampling import mis


@pytest.mark.parametrize("steps, frac, expected", [(50, 0.36, 18), (50, 0.3, 15), (50, 0.2, 10), (20, 0.36, 7),
                                                   (3, 0.36, 1), (10, 0.0, 0), (10, 1.0, 10)])
def test_mis_steps_truncate_like_the_official_int(steps, frac, expected):
    assert mis.mis_steps(steps, frac) == expected


def test_split_sigmas_share_the_merge_sigma():
    sigmas = torch.linspace(10.0, 0.0, 11)
    first, second = mis.split_sigmas(sigmas, 4)
    assert len(first) == 5 and len(second) == 7
    assert first[-1] == second[0] == sigmas[4]
    assert torch.equal(torch.cat([first[:-1], second]), sigmas), "no sigma is lost or repeated across phases"


def test_split_sigmas_edges():
    sigmas = torch.linspace(10.0, 0.0, 6)
    first, second = mis.split_sigmas(sigmas, 0)
    assert len(first) == 0 and torch.equal(second, sigmas)
    first, second = mis.split_sigmas(sigmas, 5)
    assert torch.equal(first, sigmas) and len(second) == 1        # phase 2 has no step left
    with pytest.raises(ValueError, match="outside 0..5"):
        mis.split_sigmas(sigmas, 6)


def test_merge_is_the_plain_mean_and_symmetric():
    g = torch.Generator().manual_seed(0)
    latents = [torch.randn(2, 4, 3, 3, generator=g) for _ in range(5)]
    merged = mis.merge_latents(latents)
    assert torch.allclose(merged, sum(latents) / 5, atol=1e-6)
    assert torch.allclose(mis.merge_latents(latents[::-1]), merged, atol=1e-6)
    assert torch.equal(mis.merge_latents(latents[:1]), latents[0])


def test_merge_rejects_unknown_rule_and_mismatched_shapes():
    x = torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError, match="merge: 'median'.*mean"):
        mis.merge_latents([x, x], "median")
    with pytest.raises(ValueError, match="latent 1 has shape"):
        mis.merge_latents([x, torch.zeros(1, 4, 3, 3)])
    with pytest.raises(ValueError, match="no latents"):
        mis.merge_latents([])


@pytest.mark.parametrize("value, field", [(-0.1, "mis"), (1.5, "mis"), ("0.3", "mis")])
def test_bad_mis_value_names_the_field_and_the_fix(value, field):
    with pytest.raises(ValueError) as err:
        mis.check_mis_options(value, "mean", 4)
    assert err.value.args[0].startswith(f"{field}: {value!r}") and "0.36" in err.value.args[0]


def test_bad_merge_and_max_batch_are_rejected():
    with pytest.raises(ValueError, match="merge: 'crop'.*use one of mean"):
        mis.check_mis_options(0.3, "crop", 4)
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match=r"max_batch: .* >= 1"):
            mis.check_mis_options(0.3, "mean", bad)
    mis.check_mis_options(0.0, "mean", 1)
    mis.check_mis_options(1.0, "mean", 64)


def test_plan_groups_chunks_inputs_in_order():
    assert mis.plan_groups(5, 2) == [(0, 1), (2, 3), (4,)]
    assert mis.plan_groups(4, 1) == [(0,), (1,), (2,), (3,)]
    assert mis.plan_groups(3, 8) == [(0, 1, 2)]
    assert mis.plan_groups(0, 4) == []


def test_plan_groups_keeps_unstackable_inputs_alone_and_covers_everything():
    groups = mis.plan_groups(6, 3, alone=[0])
    assert groups == [(0,), (1, 2, 3), (4, 5)]
    groups = mis.plan_groups(7, 2, alone=[3])
    assert groups == [(0, 1), (2,), (3,), (4, 5), (6,)]
    for n, mb in [(31, 4), (10, 3), (2, 64)]:
        flat = [k for g in mis.plan_groups(n, mb) for k in g]
        assert flat == list(range(n)) and all(len(g) <= mb for g in mis.plan_groups(n, mb))


def test_progress_counts_every_input_step():
    assert mis.progress_total(50, 18, 3) == 4 * 18 + 32
    assert mis.progress_total(50, 0, 3) == 50 and mis.progress_total(50, 18, 0) == 50
    assert mis.cost_ratio(50, 18, 3) == pytest.approx((4 * 18 + 32) / 50)
    # a group of 3 inputs starting after 6 input-steps: its steps 0,1 end at positions 8, 11
    assert [mis.progress_index(6, i, 3) for i in range(2)] == [8, 11]
    # groups of one input followed by phase 2 tile 0..total-1 without gaps
    steps, m, n = 6, 2, 2
    positions = [mis.progress_index(k * m, i) for k in range(n + 1) for i in range(m)]
    positions += [mis.progress_index((n + 1) * m, i) for i in range(steps - m)]
    assert positions == list(range(mis.progress_total(steps, m, n)))


def test_repeat_to_batch_cuts_or_tiles():
    t = torch.arange(3).view(3, 1)
    assert mis.repeat_to_batch(t, 2).view(-1).tolist() == [0, 1]
    assert mis.repeat_to_batch(t, 7).view(-1).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert mis.repeat_to_batch(t, 3) is t


def test_stack_and_unstack_are_input_major():
    a, b = torch.full((1, 2), 1.0), torch.full((2, 2), 2.0)
    stacked = mis.stack_inputs([a, b], batch=2)
    assert stacked[:, 0].tolist() == [1.0, 1.0, 2.0, 2.0]
    xs = [torch.full((2, 3), float(i)) for i in range(3)]
    assert [t.tolist() for t in mis.unstack(mis.stack_inputs(xs, 2), 3)] == [x.tolist() for x in xs]
    noise = torch.randn(2, 4, 3, 3)
    tiled = mis.tile_batch(noise, 3)
    assert tiled.shape[0] == 6
    assert all(torch.equal(part, noise) for part in mis.unstack(tiled, 3)), "every input sees the same noise"
    assert mis.tile_batch(noise, 1) is noise
    with pytest.raises(ValueError, match="does not split into 4"):
        mis.unstack(tiled, 4)


def test_prompt_lengths_pad_by_repeat_within_limit():
    assert mis.common_token_length([77, 77]) == 77
    assert mis.common_token_length([77, 154]) == 154
    assert mis.common_token_length([154, 231]) == 462                    # lcm 6x77: 3x the shortest
    assert mis.common_token_length([77, 154, 231]) is None               # lcm 6x77: 6x the shortest
    assert mis.common_token_length([77, 77 * 5]) is None                 # 5x padding: too much
    t = torch.randn(1, 3, 4)
    r = mis.repeat_tokens(t, 9)
    assert r.shape == (1, 9, 4) and torch.equal(r[:, 3:6], t)
    with pytest.raises(ValueError, match="does not divide"):
        mis.repeat_tokens(t, 8)


def test_repeated_prompt_tokens_leave_attention_unchanged():
    """Why stacking mixed-length prompts is safe: attention over repeated keys/values is the same average."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 5, 8, generator=g) for _ in range(3))
    base = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    rep = torch.nn.functional.scaled_dot_product_attention(q, mis.repeat_tokens(k, 15), mis.repeat_tokens(v, 15))
    assert torch.allclose(base, rep, atol=1e-6)
