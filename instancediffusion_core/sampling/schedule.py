"""Step schedules expressed as fractions of the sampler's steps.

The official sampler switches grounding on for the first ``int(alpha * S)`` steps (``alpha_generator`` with
``[alpha, 0, 1 - alpha]``) and runs the multi-instance phase for the first ``int(mis * S)`` steps. ComfyUI samplers
only tell a model patch the current sigma, so the step index is recovered from the sigma schedule.
"""
from __future__ import annotations

from typing import Sequence

import torch


def fraction_to_step(fraction: float, steps: int) -> int:
    """``int(fraction * steps)`` exactly as the official code truncates (0.75 * 50 -> 37)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}")
    return int(fraction * steps)


def grounding_window(steps: int, start: float, end: float) -> tuple[int, int]:
    """Steps ``[first, stop)`` on which the fusers run at full scale (official alpha: start=0, end=alpha)."""
    if end < start:
        raise ValueError(f"grounding end ({end}) must not be before start ({start})")
    return fraction_to_step(start, steps), fraction_to_step(end, steps)


def step_index(sigma: float, schedule: Sequence[float] | torch.Tensor) -> int:
    """Index of the sampling step that ``sigma`` belongs to.

    ``schedule`` holds the S+1 sigmas of the run (last one usually 0). A sigma equal to ``schedule[i]`` belongs to
    step i; a sigma between ``schedule[i]`` and ``schedule[i+1]`` (second evaluation of Heun/DPM2-style samplers)
    also belongs to step i. Sigmas above the first entry count as step 0.
    """
    if isinstance(schedule, torch.Tensor):
        values = schedule.detach().float().cpu().tolist()
    else:
        values = [float(v) for v in schedule]
    steps = len(values) - 1
    if steps <= 0:
        return 0
    tol = 1e-4 * max(abs(sigma), 1e-8)
    count = 0
    for k in range(1, steps):  # schedule[steps] (the end of the last step) never starts a step
        if values[k] >= sigma - tol:
            count += 1
        else:
            break
    return count


def grounding_scale(sigma: float, schedule, start: float, end: float, strength: float = 1.0) -> float:
    """Fuser scale at ``sigma``: ``strength`` inside the grounding window, else 0 (the fuser is then skipped)."""
    if strength == 0.0:
        return 0.0
    steps = len(schedule) - 1
    if steps <= 0:
        return float(strength)
    first, stop = grounding_window(steps, start, end)
    i = step_index(sigma, schedule)
    return float(strength) if first <= i < stop else 0.0


def mis_steps(steps: int, mis: float) -> int:
    """Number of leading steps each instance is denoised alone (official ``int(S * mis)``)."""
    return fraction_to_step(mis, steps)
