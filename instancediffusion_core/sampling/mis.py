"""Multi-instance sampler (MIS), the host-independent parts: step split, merge rule, batching plan, bookkeeping.

Official rule (spec 4.3, ``PLMSSamplerInst``): the global input and each instance alone (its phrase as the prompt,
only its grounding in slot 0) are denoised from the same noise for the first ``m = int(S * mis)`` steps; the
``n + 1`` latents are averaged; the global input finishes the remaining ``S - m`` steps. Everything here is plain
arithmetic on ints and tensors so the ComfyUI guider stays a thin adapter and the rules are testable alone.

Batching: phase-1 inputs of one step may share a model call by stacking their latents along the batch axis
(input-major: rows ``k*B .. (k+1)*B`` belong to input ``k``). ``plan_groups`` decides which inputs share a call.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .schedule import mis_steps

__all__ = ["MERGE_RULES", "MAX_TOKEN_REPEAT", "BATCH_COUPLED_SAMPLERS", "check_mis_options", "mis_steps",
           "split_sigmas", "merge_latents", "plan_groups", "progress_total", "progress_index", "cost_ratio",
           "repeat_to_batch", "tile_batch", "stack_inputs", "unstack", "common_token_length", "repeat_tokens"]

# "mean" is the official (and only enabled) rule; the official crop-and-paste alternative is hard-disabled there.
MERGE_RULES = ("mean",)

# Longest token padding (as a multiple of the shortest prompt) accepted when stacking prompts of different lengths;
# ComfyUI's own cond batching uses the same limit (CONDCrossAttn.can_concat).
MAX_TOKEN_REPEAT = 4

# Sampler functions whose step control couples the batch (adaptive error norm over the whole tensor): stacking
# inputs would change their steps, so their phase 1 always runs one input at a time.
BATCH_COUPLED_SAMPLERS = frozenset({"sample_dpm_adaptive", "dpm_adaptive_function"})


def check_mis_options(mis: float, merge: str, max_batch: int) -> None:
    """Reject bad knob values with a message naming the field, the value and the fix."""
    if not isinstance(mis, (int, float)) or isinstance(mis, bool) or not 0.0 <= float(mis) <= 1.0:
        raise ValueError(f"mis: {mis!r} is outside [0, 1]; it is the fraction of steps run per instance "
                         f"(official 0.36, README advises < 0.4, 0 = plain sampling)")
    if merge not in MERGE_RULES:
        raise ValueError(f"merge: {merge!r} is not a known merge rule; use one of {', '.join(MERGE_RULES)}")
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise ValueError(f"max_batch: {max_batch!r} must be an integer >= 1 (inputs sharing one model call; "
                         f"1 = one input at a time)")


def split_sigmas(sigmas, m: int):
    """``(phase1, phase2)`` = ``(sigmas[:m+1], sigmas[m:])``; phase 1 is empty when ``m == 0``.

    Both slices share the merge sigma ``sigmas[m]``: phase 1 stops there with noise left, phase 2 starts there.
    """
    steps = len(sigmas) - 1
    if not 0 <= m <= max(steps, 0):
        raise ValueError(f"mis steps: {m} is outside 0..{max(steps, 0)} for a schedule of {steps} steps")
    if m == 0:
        return sigmas[:0], sigmas
    return sigmas[:m + 1], sigmas[m:]


def merge_latents(latents: Sequence[torch.Tensor], rule: str = "mean") -> torch.Tensor:
    """Official merge: the plain mean of the global latent and the n instance latents (all the same shape)."""
    if rule not in MERGE_RULES:
        raise ValueError(f"merge: {rule!r} is not a known merge rule; use one of {', '.join(MERGE_RULES)}")
    if len(latents) == 0:
        raise ValueError("merge: no latents to merge")
    shape = tuple(latents[0].shape)
    for k, x in enumerate(latents):
        if tuple(x.shape) != shape:
            raise ValueError(f"merge: latent {k} has shape {tuple(x.shape)}, latent 0 has {shape}; every input "
                             f"must be sampled on the same latent")
    return torch.stack(list(latents)).mean(dim=0)


def plan_groups(n_inputs: int, max_batch: int, alone: Sequence[int] = ()) -> list[tuple[int, ...]]:
    """Which phase-1 inputs share a model call: consecutive chunks of at most ``max_batch`` inputs, in input order.

    Inputs listed in ``alone`` (e.g. a global prompt that cannot be stacked) get a group of their own, in place.
    """
    if n_inputs < 0:
        raise ValueError(f"n_inputs: {n_inputs} must be >= 0")
    if max_batch < 1:
        raise ValueError(f"max_batch: {max_batch!r} must be >= 1")
    alone = set(alone)
    groups: list[tuple[int, ...]] = []
    chunk: list[int] = []
    for k in range(n_inputs):
        if k in alone:
            if chunk:
                groups.append(tuple(chunk))
                chunk = []
            groups.append((k,))
            continue
        chunk.append(k)
        if len(chunk) == max_batch:
            groups.append(tuple(chunk))
            chunk = []
    if chunk:
        groups.append(tuple(chunk))
    return groups


def progress_total(steps: int, m: int, n: int) -> int:
    """Sampler steps the node runs, counted per input: ``(n+1)*m + (S-m)``; ``S`` when MIS is off (m=0 or n=0)."""
    if n <= 0 or m <= 0:
        return steps
    return (n + 1) * m + (steps - m)


def progress_index(offset: int, step: int, group_size: int = 1) -> int:
    """0-based progress position after ``step`` of a run of ``group_size`` inputs that starts at ``offset``."""
    return offset + (step + 1) * group_size - 1


def cost_ratio(steps: int, m: int, n: int) -> float:
    """Theoretical model-evaluation cost of MIS relative to plain sampling: ``((n+1)*m + (S-m)) / S``."""
    return progress_total(steps, m, n) / steps if steps > 0 else 1.0


def repeat_to_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Cut or tile ``t`` along dim 0 to ``batch`` rows (how ComfyUI fits a cond to a latent batch)."""
    if t.shape[0] > batch:
        return t[:batch]
    if t.shape[0] < batch:
        reps = math.ceil(batch / t.shape[0])
        return t.repeat(reps, *([1] * (t.dim() - 1)))[:batch]
    return t


def tile_batch(t: torch.Tensor, copies: int) -> torch.Tensor:
    """``copies`` copies of a whole batch, one after another (the shared noise/latent of every stacked input)."""
    return torch.cat([t] * copies, dim=0) if copies > 1 else t


def stack_inputs(tensors: Sequence[torch.Tensor], batch: int) -> torch.Tensor:
    """One tensor per input, each fitted to ``batch`` rows, stacked input-major: ``[len(tensors) * batch, ...]``."""
    return torch.cat([repeat_to_batch(t, batch) for t in tensors], dim=0)


def unstack(t: torch.Tensor, copies: int) -> list[torch.Tensor]:
    """Inverse of ``stack_inputs``/``tile_batch``: the ``copies`` input slices of a stacked batch."""
    if t.shape[0] % copies:
        raise ValueError(f"stacked batch of {t.shape[0]} rows does not split into {copies} inputs")
    return list(t.chunk(copies, dim=0))


def common_token_length(lengths: Sequence[int]) -> int | None:
    """Least common multiple of prompt lengths, or None when padding would exceed ``MAX_TOKEN_REPEAT`` times the
    shortest prompt (then the prompts are not stacked)."""
    lengths = [int(v) for v in lengths]
    if not lengths or min(lengths) <= 0:
        return None
    total = 1
    for v in lengths:
        total = total * v // math.gcd(total, v)
    return total if total // min(lengths) <= MAX_TOKEN_REPEAT else None


def repeat_tokens(t: torch.Tensor, length: int) -> torch.Tensor:
    """Repeat a ``[B, L, D]`` prompt along L to ``length`` (a multiple of L): attention over repeated keys gives the
    same weighted average, so the result is unchanged up to rounding (ComfyUI pads mixed-length batches this way)."""
    if t.shape[1] == length:
        return t
    if length % t.shape[1]:
        raise ValueError(f"prompt length {t.shape[1]} does not divide {length}")
    return t.repeat(1, length // t.shape[1], 1)
