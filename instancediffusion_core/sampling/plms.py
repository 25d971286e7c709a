"""The official sampler: PLMS (pseudo linear multistep) on the official DDIM timesteps, in k-diffusion form.

The official code samples in DDPM space (``x_t = sqrt(a) x0 + sqrt(1 - a) eps``). With ``sigma = sqrt((1 - a) / a)``
and ``x = x_t / sqrt(a)`` its deterministic DDIM update ``x_prev = sqrt(a') pred_x0 + sqrt(1 - a') eps`` is exactly
the Euler step ``x' = x + (sigma' - sigma) eps``, so the official PLMS becomes a sampler function of the usual
``(model, x, sigmas, extra_args, callback, disable)`` shape, where ``model(x, sigma)`` returns the denoised latent.

Official facts kept (fixture ``sampler-public`` README section 5/8):
- timesteps ``range(0, T, T // S) + 1`` visited high to low (981, 961, ..., 1 for 50 steps), and the last step goes
  to ``alphas_cumprod[0]`` (``sigma(t=0) > 0``), not to 0; the latent handed to the VAE is the DDPM-space one;
- step 0 (an empty history) is a pseudo improved-Euler step with 2 evaluations (the second at the next sigma); then
  Adams-Bashforth of order 2, 3, 4 over the eps history; the history stores the RAW first-evaluation eps of each
  step (at most 3 old ones), never the combined eps; every update starts from the x that entered the step;
- ``t_next`` of the last step is its own ``t`` (only reached when the first step is the last one).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

AB_COEFFICIENTS = {
    1: ((3, -1), 2),                   # (3 e_t - e_1) / 2
    2: ((23, -16, 5), 12),             # (23 e_t - 16 e_1 + 5 e_2) / 12
    3: ((55, -59, 37, -9), 24),        # (55 e_t - 59 e_1 + 37 e_2 - 9 e_3) / 24
}
MAX_HISTORY = 3


def official_timesteps(steps: int, train_steps: int = 1000) -> list[int]:
    """The official DDIM timesteps, high to low: ``range(0, train_steps, train_steps // steps) + 1``, reversed."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: {steps!r} must be a positive whole number (official: 50)")
    stride = train_steps // steps
    if stride < 1:
        raise ValueError(f"steps: {steps} is more than the model's {train_steps} training timesteps")
    return [t + 1 for t in range(0, train_steps, stride)][::-1]


def official_sigmas(sigma_of_t: Callable[[int], float], steps: int, denoise: float = 1.0,
                    train_steps: int = 1000) -> torch.Tensor:
    """Sigmas of the official schedule: ``sigma(t_i)`` for each timestep, then ``sigma(0)`` (the official last step
    ends at ``alphas_cumprod[0]``). ``denoise < 1`` works as in ComfyUI's KSampler: the schedule of
    ``int(steps / denoise)`` steps, of which the last ``steps`` are run."""
    if not (isinstance(denoise, (int, float)) and math.isfinite(denoise) and 0.0 < denoise <= 1.0):
        raise ValueError(f"denoise: {denoise!r} must be in (0, 1]")
    total = steps if denoise >= 1.0 else int(steps / denoise)
    ts = official_timesteps(total, train_steps)
    sigmas = [float(sigma_of_t(t)) for t in ts] + [float(sigma_of_t(0))]
    return torch.tensor(sigmas[-(steps + 1):], dtype=torch.float32)


def combined_eps(e_t: torch.Tensor, old: Sequence[torch.Tensor]) -> torch.Tensor:
    """The Adams-Bashforth eps from the current eps and the history (most recent last), for 1..3 old eps."""
    coeffs, div = AB_COEFFICIENTS[min(len(old), MAX_HISTORY)]
    out = coeffs[0] * e_t
    for c, e in zip(coeffs[1:], reversed(old)):
        out = out + c * e
    return out / div


def is_full_run(sigma_first: float, sigma_of_t: Callable[[int], float], steps: int, train_steps: int = 1000) -> bool:
    """True when a schedule of ``steps`` steps starts within the first DDIM stride of the noise end: the official
    sampler then takes its input as pure noise in DDPM space (``x_T ~ N(0, 1)``), i.e. ``sqrt(1 + sigma^2)`` times
    unit noise in sigma space, although its first timestep (981) is not the last training timestep (999)."""
    stride = max(train_steps // max(steps, 1), 1)
    return float(sigma_first) >= float(sigma_of_t(train_steps - stride)) * (1 - 1e-6)


@torch.no_grad()        # as every k-diffusion sampler: a caller outside inference mode must not build a graph
def sample_plms(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None, callback=None,
                disable=None, history: list | None = None, eval_args: Callable[[float], dict] | None = None,
                ends_schedule: bool = True):
    """Official PLMS over ``sigmas`` (k-diffusion sampler function; ``model(x, sigma * s_in, **extra_args)`` returns
    the denoised latent).

    ``history``: a list of previous raw eps (most recent last), continued and updated in place, so a caller can
    carry it from one run to the next (the multi-instance sampler's phase 2 continues the global input's history).
    ``eval_args(step_sigma)``: extra keyword arguments for every evaluation of the step that starts at
    ``step_sigma`` (the host uses it to keep the grounding schedule on the step, not on the evaluation's sigma).
    ``ends_schedule``: these sigmas end the whole schedule, so a first step that is the last step evaluates its
    second eps at its own sigma (official ``t_next = t`` at the last index); False for a slice (MIS phase 1).
    """
    extra_args = {} if extra_args is None else extra_args
    old = [] if history is None else history
    s_in = x.new_ones([x.shape[0]])
    n = len(sigmas) - 1
    # The schedule as Python floats, read once: the branches and eval_args need numbers, and reading a device
    # tensor per step (float(sigma), sigma > 0) would wait for the GPU every step. The arithmetic keeps the 0-d
    # tensors sigmas[i]: a Python-float divisor would change the results (CUDA divides by a host scalar as a
    # multiplication by its reciprocal), and bit-identical results are part of the contract.
    values = [float(v) for v in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        sigma_f, sigma_next_f = values[i], values[i + 1]
        args = dict(extra_args)
        if eval_args is not None:
            args.update(eval_args(sigma_f))

        def eps_at(x_, s_):
            return (x_ - model(x_, s_ * s_in, **args)) / s_

        denoised = model(x, sigma * s_in, **args)
        e_t = (x - denoised) / sigma
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if not old:
            if sigma_next_f > 0:     # pseudo improved Euler: second evaluation at the provisional next latent
                x_euler = x + (sigma_next - sigma) * e_t
                if ends_schedule and i == n - 1:
                    # official t_next = t at the last index: the DDPM latent at the next level, fed at this t
                    s_eval = sigma
                    x_euler = x_euler * math.sqrt((1 + sigma_f ** 2) / (1 + sigma_next_f ** 2))
                else:
                    s_eval = sigma_next
                e_prime = (e_t + eps_at(x_euler, s_eval)) / 2
            else:                    # a first step that ends at sigma 0 has no next evaluation: plain Euler
                e_prime = e_t
        else:
            e_prime = combined_eps(e_t, old)
        x = x + (sigma_next - sigma) * e_prime
        old.append(e_t)
        if len(old) > MAX_HISTORY:
            old.pop(0)
    return x


def to_ddpm_latent(x: torch.Tensor, sigma_last: float) -> torch.Tensor:
    """The DDPM-space latent ``sqrt(a) x`` at the last sigma (what the official sampler hands to the VAE)."""
    return x / math.sqrt(1.0 + float(sigma_last) ** 2)


def cfg_evaluations(steps: int, m: int, n: int) -> int:
    """CFG evaluations of the official PLMS run: ``(n+1)(m+1) + (S-m)`` with MIS (each of the n+1 inputs pays the
    2-evaluation first step; phase 2 continues the global history), ``S + 1`` without."""
    if m <= 0 or n <= 0:
        return steps + 1
    return (n + 1) * (m + 1) + (steps - m)
