"""The official PLMS in k-diffusion form equals the official algorithm written in DDPM space (as plms.py does)."""
import math

import pytest
import torch

from instancediffusion_core.sampling import plms

T = 1000


def _alphas_cumprod():
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


ACP = _alphas_cumprod()


def _eps_model(x_ddpm, t):
    """A toy eps-predictor that depends non-linearly on x and t (any function does for this check)."""
    return torch.tanh(0.3 * x_ddpm + 0.001 * t) + 0.1 * torch.sin(x_ddpm.flip(-1))


def official_plms_ddpm(x_t, steps):
    """The official PLMSSampler loop (plms.py), float64, DDPM space."""
    ts = list(range(0, T, T // steps))
    ts = [t + 1 for t in ts][::-1]
    old, x = [], x_t
    for i, t in enumerate(ts):
        a_t = ACP[t]
        a_prev = ACP[ts[i + 1]] if i + 1 < len(ts) else ACP[0]
        t_next = ts[min(i + 1, len(ts) - 1)]

        def step(x_, e):
            pred_x0 = (x_ - (1 - a_t).sqrt() * e) / a_t.sqrt()
            return a_prev.sqrt() * pred_x0 + (1 - a_prev).sqrt() * e

        e_t = _eps_model(x, t)
        if not old:
            x1 = step(x, e_t)
            e_p = (e_t + _eps_model(x1, t_next)) / 2
        elif len(old) == 1:
            e_p = (3 * e_t - old[-1]) / 2
        elif len(old) == 2:
            e_p = (23 * e_t - 16 * old[-1] + 5 * old[-2]) / 12
        else:
            e_p = (55 * e_t - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
        x = step(x, e_p)
        old.append(e_t)
        if len(old) >= 4:
            old.pop(0)
    return x


def _sigma(t):
    return float(((1 - ACP[t]) / ACP[t]).sqrt())


def _denoiser():
    """k-diffusion view of the same eps model: denoised = x - sigma * eps(x / sqrt(1 + sigma^2), t(sigma))."""
    sig = ((1 - ACP) / ACP).sqrt()

    def model(x, sigma):
        s = float(sigma.reshape(-1)[0])
        t = int((sig - s).abs().argmin())
        return x - s * _eps_model(x / math.sqrt(1 + s * s), t)
    return model


@pytest.mark.parametrize("steps", [50, 10, 1])
def test_k_diffusion_plms_equals_the_official_ddpm_loop(steps):
    torch.manual_seed(0)
    x_t = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    expected = official_plms_ddpm(x_t, steps)
    ts = plms.official_timesteps(steps)
    sigmas = torch.tensor([_sigma(t) for t in ts] + [_sigma(0)], dtype=torch.float64)
    assert torch.allclose(plms.official_sigmas(_sigma, steps).double(), sigmas, rtol=1e-6, atol=0)   # float32
    assert plms.is_full_run(float(sigmas[0]), _sigma, steps)
    x = x_t * math.sqrt(1 + float(sigmas[0]) ** 2)         # pure DDPM noise in sigma space
    out = plms.to_ddpm_latent(plms.sample_plms(_denoiser(), x, sigmas), float(sigmas[-1]))
    assert (out - expected).abs().max().item() < 1e-9


def test_history_carries_over_like_one_run():
    """Splitting a run and passing the history on gives the same result as one run (MIS phase 2 relies on it)."""
    torch.manual_seed(1)
    sigmas = plms.official_sigmas(_sigma, 20).double()
    x = torch.randn(1, 2, 2, 2, dtype=torch.float64) * math.sqrt(1 + float(sigmas[0]) ** 2)
    whole = plms.sample_plms(_denoiser(), x, sigmas)
    history = []
    mid = plms.sample_plms(_denoiser(), x, sigmas[:8], history=history, ends_schedule=False)
    assert len(history) == 3
    split = plms.sample_plms(_denoiser(), mid, sigmas[7:], history=history)
    assert torch.allclose(whole, split, atol=1e-12, rtol=0)
    restarted = plms.sample_plms(_denoiser(), mid, sigmas[7:])
    assert not torch.allclose(whole, restarted, atol=1e-6, rtol=0)


def test_official_timesteps_and_schedule_end():
    assert plms.official_timesteps(50)[:3] == [981, 961, 941] and plms.official_timesteps(50)[-1] == 1
    sig = plms.official_sigmas(_sigma, 50)
    assert len(sig) == 51 and math.isclose(float(sig[-1]), _sigma(0), rel_tol=1e-6)
    half = plms.official_sigmas(_sigma, 25, denoise=0.5)      # ComfyUI semantics: last 25 of a 50-step schedule
    assert torch.equal(half, sig[-26:])
    assert not plms.is_full_run(float(half[0]), _sigma, 25)
    with pytest.raises(ValueError, match="denoise"):
        plms.official_sigmas(_sigma, 10, denoise=float("nan"))


def test_ab_coefficients_and_cfg_count():
    e = [torch.tensor(float(v), dtype=torch.float64) for v in (1.0, 2.0, 4.0, 8.0)]
    assert float(plms.combined_eps(e[0], [e[1]])) == (3 * 1 - 2) / 2
    assert float(plms.combined_eps(e[0], [e[2], e[1]])) == (23 - 16 * 2 + 5 * 4) / 12
    assert float(plms.combined_eps(e[0], [e[3], e[2], e[1]])) == (55 - 59 * 2 + 37 * 4 - 9 * 8) / 24
    assert plms.cfg_evaluations(50, 18, 4) == 5 * 19 + 32 and plms.cfg_evaluations(50, 0, 4) == 51


def test_sampling_builds_no_autograd_graph():
    """Called outside inference mode (another pack, a script) with a model that has trainable weights, the sampler
    must not keep a graph across steps (memory grew ~1 GB per step on the fixture UNet before)."""
    weight = torch.nn.Parameter(torch.tensor(0.5))

    def model(x, sigma):
        return x * weight

    sigmas = plms.official_sigmas(_sigma, 5)
    out = plms.sample_plms(model, torch.randn(1, 2, 2, 2), sigmas)
    assert not out.requires_grad and out.grad_fn is None


def test_the_schedule_is_read_to_the_host_once(monkeypatch):
    """No per-step device->host sync: the sigmas are read with one tolist() before the loop, never per step with
    float(sigma), sigma > 0 or .item() (each waits for a GPU to finish the step's work)."""
    sigmas = plms.official_sigmas(_sigma, 6)
    reads = []
    for name in ("__float__", "__bool__", "__int__", "__index__", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            if self.device == sigmas.device and self.dtype == sigmas.dtype and self.numel() <= sigmas.numel():
                reads.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, spy)
    steps_seen = []
    plms.sample_plms(lambda x, s, **_: 0.9 * x, torch.randn(1, 2, 2, 2), sigmas,
                     eval_args=lambda sigma: steps_seen.append(sigma) or {})
    monkeypatch.undo()
    assert reads == ["tolist"]
    assert steps_seen == [float(v) for v in sigmas[:-1]]
