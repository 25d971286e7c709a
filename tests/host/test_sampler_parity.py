"""The whole official sampling run reproduced in ComfyUI: PLMS, the official schedule, the grounding window by step
index, and the multi-instance sampler (phase 1 per-input histories, mean merge, phase 2 continuing the global
history), against the fixture set's final and intermediate latents.

Tolerances are the set's own (``meta.json`` ``tolerance_note``: about 10x the largest deviation of re-running the
official pipeline with another attention kernel or in float64; reruns with identical settings are bitwise equal),
so a wrong schedule, step index, history or merge fails by orders of magnitude. Every size, case and tolerance is
read from the set (``INSTDIFF_SAMPLER_DIR``, default ``tests/fixtures/sampler-public``).
"""
from __future__ import annotations

import pytest
import torch

from instdiff_testkit import parity, sampler_fixture

SKIP = sampler_fixture.missing()
META = parity.load_meta(sampler_fixture.sampler_dir()) if SKIP is None else {"cases": []}
CASES = [c["name"] for c in META["cases"]]
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


@pytest.fixture(scope="module")
def fixture_run(pack, tmp_path_factory):
    return sampler_fixture.build(pack, str(tmp_path_factory.mktemp("sampler_weights")))


def _sample(pack, run, case: dict):
    nodes = pack.NODE_CLASS_MAPPINGS
    smp = run.meta["sampler"]
    (model,) = nodes["ApplyUniFusion"]().apply(run.patcher, run.instdiff, 1.0, 0.0, float(smp["alpha"]))
    (model,) = nodes["ApplyScaleU"]().apply(model, run.instdiff)
    n = len(run.meta["instances"])
    guider = pack.nodes.mis.MultiInstanceGuider(model, float(case["mis"]), "mean", n + 1)
    guider.set_conds(run.positive, run.negative)
    guider.set_cfg(float(smp["guidance_scale"]))
    sigmas = pack.nodes.plms.official_sigmas(model, int(smp["steps"]))
    seen = []

    def callback(_index, denoised, x, _total):
        seen.append((x.detach().clone(), denoised.detach().clone()))

    x_t = run.inputs["x_T"]
    with torch.inference_mode():            # as ComfyUI's executor runs every node
        out = guider.sample(x_t, torch.zeros_like(x_t), pack.nodes.plms.OfficialPLMS(), sigmas,
                            callback=callback, disable_pbar=True, seed=0)
    # the guider returns ComfyUI's LATENT scaling (what VAEDecode takes); the set stores the model's own latents
    out = model.model.latent_format.process_in(out)
    return out, seen, sigmas, guider.last_plan


def _check(name, got, expected, tols, errors):
    err = parity.max_abs_err(got, expected)
    tol = float(tols[name])
    parity.report(name, err, tol)
    errors[name] = (err, tol)


@pytest.mark.parametrize("case_name", CASES)
def test_whole_run_matches_the_official_latents(fixture_run, pack, case_name):
    run = fixture_run
    case = next(c for c in run.meta["cases"] if c["name"] == case_name)
    smp, exp = run.meta["sampler"], run.expected
    tols = run.meta["tolerance_note"]["suggested_atol_per_tensor"]
    steps = int(smp["steps"])
    out, seen, sigmas, plan = _sample(pack, run, case)

    # the schedule itself: official timesteps, and the last step ends at alphas_cumprod[0]
    ms = run.patcher.get_model_object("model_sampling")
    assert [int(ms.timestep(s)) for s in sigmas[:-1]] == [int(t) for t in exp["schedule.timesteps"]]
    a_prev = exp["schedule.a_prev"].double()
    assert torch.allclose(1.0 / (1.0 + sigmas[1:].double() ** 2), a_prev, rtol=1e-5)

    assert len(seen) == steps, f"one progress callback per step expected, got {len(seen)}"
    xs = [x for x, _ in seen]
    eps = torch.stack([(x - d) / sigmas[i] for i, (x, d) in enumerate(seen)])
    # ComfyUI's samplers see the denoised latent, so eps is recovered as (x - denoised) / sigma: float32 rounding
    # of x and denoised (both about |x|) then costs |x| * 2^-23 / sigma per ulp, which the set's tolerance (made
    # from eps computed directly) does not cover at the last steps (sigma 0.04, |x| 67: 2e-4 per ulp). Allow
    # 8 ulp of that on top of the set's tolerance, per step.
    ulp = torch.tensor([float(x.abs().max()) * 2.0 ** -23 / float(sigmas[i]) for i, (x, _) in enumerate(seen)])
    eps_tol = float(tols[f"{case_name}.eps_steps"]) + 8 * ulp
    eps_err = (eps - exp[f"{case_name}.eps_steps"]).abs().flatten(1).max(dim=1).values
    parity.report(f"{case_name}.eps_steps (worst step vs its bound)", float((eps_err - eps_tol).max()), 0.0)
    after = [sampler_fixture.ddpm(xs[i + 1], a_prev[i]) for i in range(steps - 1)] + [out]
    m = int(case.get("mis_step", 0))
    errors = {}
    if m:
        assert plan.m == m and plan.continued_history == 3, (plan.m, plan.continued_history)
        ends = torch.stack([sampler_fixture.ddpm(s, a_prev[m - 1]) for s in plan.phase1_states])
        after[m - 1] = ends[0]              # the callback of step m shows the merged latent, not the global one
        _check(f"{case_name}.x_phase1_end", ends, exp[f"{case_name}.x_phase1_end"], tols, errors)
        _check(f"{case_name}.x_merged", sampler_fixture.ddpm(plan.merged, a_prev[m - 1]),
               exp[f"{case_name}.x_merged"], tols, errors)
    assert bool((eps_err <= eps_tol).all()), [(i, float(e), float(t)) for i, (e, t) in
                                              enumerate(zip(eps_err, eps_tol)) if e > t]
    _check(f"{case_name}.x_after_first_step", after[0], exp[f"{case_name}.x_after_first_step"][:1].reshape(
        after[0].shape), tols, errors)
    _check(f"{case_name}.x_steps", torch.stack(after), exp[f"{case_name}.x_steps"], tols, errors)
    _check(f"{case_name}.x_final", out, exp[f"{case_name}.x_final"], tols, errors)
    bad = {k: v for k, v in errors.items() if v[0] > v[1]}
    assert not bad, f"max abs errors over tolerance: {bad}"
