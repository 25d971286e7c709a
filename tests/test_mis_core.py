"""Pure parts of the multi-instance sampler: step split, merge rule, batching plan, progress arithmetic."""
import pytest
import torch

from instancediffusion_core import mis


def test_split_shares_the_merge_sigma():
    sigmas = torch.linspace(10, 0, 11)
    p1, p2 = mis.split_sigmas(sigmas, 4)
    assert p1.tolist() == sigmas[:5].tolist() and p2.tolist() == sigmas[4:].tolist()
    empty, whole = mis.split_sigmas(sigmas, 0)
    assert len(empty) == 0 and torch.equal(whole, sigmas)
    with pytest.raises(ValueError, match="outside 0..10"):
        mis.split_sigmas(sigmas, 11)


def test_mean_merge_is_symmetric_and_checks_shapes():
    a, b, c = torch.randn(3, 1, 4, 8, 8).unbind(0)
    assert torch.allclose(mis.merge_latents([a, b, c]), (a + b + c) / 3)
    assert torch.allclose(mis.merge_latents([c, a, b]), mis.merge_latents([a, b, c]), atol=1e-7)
    with pytest.raises(ValueError, match="latent 1 has shape"):
        mis.merge_latents([a, torch.zeros(1, 4, 8, 9)])
    with pytest.raises(ValueError, match="merge: 'max'"):
        mis.merge_latents([a], "max")


def test_groups_respect_max_batch_and_lonely_inputs():
    assert mis.plan_groups(5, 2) == [(0, 1), (2, 3), (4,)]
    assert mis.plan_groups(5, 1) == [(0,), (1,), (2,), (3,), (4,)]
    assert mis.plan_groups(4, 8, alone=[0]) == [(0,), (1, 2, 3)]


def test_progress_counts_every_input_step():
    assert mis.progress_total(50, 18, 3) == 4 * 18 + 32
    assert mis.progress_total(50, 0, 3) == 50 and mis.progress_total(50, 18, 0) == 50
    assert mis.cost_ratio(50, 18, 1) == pytest.approx((2 * 18 + 32) / 50)
    assert mis.progress_index(offset=10, step=0, group_size=3) == 12


def test_stacking_round_trip_and_token_lengths():
    xs = [torch.full((2, 3), float(i)) for i in range(3)]
    stacked = mis.stack_inputs(xs, 2)
    assert stacked.shape == (6, 3)
    assert [t.tolist() for t in mis.unstack(stacked, 3)] == [x.tolist() for x in xs]
    assert mis.common_token_length([77, 154]) == 154
    assert mis.common_token_length([77, 77 * 5]) is None
    t = torch.randn(1, 77, 8)
    assert torch.equal(mis.repeat_tokens(t, 154)[:, 77:], t)


@pytest.mark.parametrize("bad, match", [((1.5, "mean", 1), "mis: 1.5"), ((0.3, "avg", 1), "merge: 'avg'"),
                                        ((0.3, "mean", 0), "max_batch: 0")])
def test_bad_options_name_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        mis.check_mis_options(*bad)
