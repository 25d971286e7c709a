"""Which sampling step a UNet call belongs to, known on the host without reading the (device) sigma.

The grounding window is counted in steps, and the sigma that tells the step lives on the GPU during sampling:
reading it (``float(timestep)``) waits for the device once per UNet call. Instead, once per sampling run:

- a ``SAMPLER_SAMPLE`` wrapper (``clock_wrapper``) reads the run's sigmas as host floats (they are the caller's CPU
  tensor in the usual path; at most one read per run otherwise), converts the grounding schedule
  (``SCHEDULE_KEY``) to host floats, and counts the steps the sampler reports through its step callback;
- a ``CALC_COND_BATCH`` wrapper (``StepSigmaWrapper``, outside the token-table wrapper) publishes, for every call,
  the sigma of the step being taken (``STEP_SIGMA_KEY``, a float) from that count. After the sampler has reported
  step ``d - 1`` done, a call belongs to step ``d - 1`` (a later evaluation of the same step) or ``d`` (the first of
  the next); before any report, to step 0. When both candidates give the same fuser scale - every call except
  those at the window's edges - no sigma is read; at an edge the call's sigma is read once (1-2 reads per run).

That rule holds for ComfyUI's own k-diffusion and UniPC samplers (tests/host/test_gpu_paths.py checks each
sampler of the host against the sigma-exact rule) except ``heunpp2`` (evaluates two sigmas ahead of its report),
``dpm_fast`` and ``dpm_adaptive`` (their own step grid). For those, for samplers from other packs, and whenever
steps are reported out of order, every call reads its sigma (exact, one read per call). Samplers that publish
``STEP_SIGMA_KEY`` themselves (the official PLMS) need neither.
"""
from __future__ import annotations

import torch

import comfy.samplers

from ..instancediffusion_core.sampling.schedule import grounding_scale
from .patching import SCHEDULE_KEY, STEP_SIGMA_KEY

CLOCK_KEY = "instance_diffusion_clock"          # transformer_options: StepClock of the current sampling run
CLOCK_WRAPPER_KEY = "instance_diffusion_clock"  # key of our SAMPLER_SAMPLE and outer CALC_COND_BATCH wrappers
TRUSTED_MODULES = ("comfy.k_diffusion.sampling", "comfy.extra_samplers.uni_pc")
UNTRUSTED_FUNCTIONS = frozenset({"sample_heunpp2"})


def host_floats(t) -> tuple[float, ...]:
    """A schedule as host floats; a tensor off the CPU is read once (one device sync)."""
    if isinstance(t, torch.Tensor):
        if t.device.type != "cpu":
            t = t.detach().cpu()
        return tuple(float(v) for v in t.reshape(-1).tolist())
    return tuple(float(v) for v in t)


def clock_is_trusted(sampler) -> bool:
    """Whether ``sampler`` reports its steps as the candidate rule assumes (ComfyUI's own KSAMPLER functions)."""
    if not isinstance(sampler, comfy.samplers.KSAMPLER):
        return False
    fn = getattr(sampler, "sampler_function", None)
    return (getattr(fn, "__module__", None) in TRUSTED_MODULES
            and getattr(fn, "__name__", None) not in UNTRUSTED_FUNCTIONS)


class StepClock:
    """Host-side progress of one sampling run: its sigmas (floats) and the steps the sampler reported done."""

    def __init__(self, sigmas, trusted: bool, window_schedule=None):
        self.sigmas = host_floats(sigmas)
        self.window_schedule = host_floats(window_schedule) if window_schedule is not None else self.sigmas
        self.trusted = bool(trusted) and len(self.sigmas) > 1
        self.done = 0          # steps reported done (callback i -> i + 1)
        self.reads = 0         # calls whose sigma had to be read from the device

    def on_step(self, i) -> None:
        if int(i) == self.done:
            self.done += 1
        elif int(i) != self.done - 1:      # a repeated report is harmless; anything else: stop trusting the count
            self.trusted = False

    def candidates(self) -> list[int]:
        last = len(self.sigmas) - 2
        if self.done == 0:
            return [0]
        return sorted({min(self.done - 1, last), min(self.done, last)})

    def step_sigma(self, timestep, start: float, end: float, strength: float) -> float:
        """The sigma that places this call in the grounding window (see the module docstring)."""
        if self.trusted:
            cands = self.candidates()
            scales = {grounding_scale(self.sigmas[c], self.window_schedule, start, end, strength) for c in cands}
            if len(scales) == 1:
                return self.sigmas[cands[0]]
        self.reads += 1
        return float(timestep.reshape(-1)[0])      # the window's edge (or an untrusted sampler): read it exactly


def clock_wrapper(executor, model_wrap, sigmas, extra_args, callback, *args, **kwargs):
    """SAMPLER_SAMPLE wrapper: one StepClock per sampling run, fed by the sampler's step callback."""
    extra_args = dict(extra_args or {})
    model_options = dict(extra_args.get("model_options") or {})
    to = dict(model_options.get("transformer_options") or {})
    window = to.get(SCHEDULE_KEY)
    clock = StepClock(sigmas, clock_is_trusted(getattr(executor, "class_obj", None)),
                      window if window is not None else None)
    to[SCHEDULE_KEY] = clock.window_schedule      # host floats: the fusers' scale lookup never touches a tensor
    to[CLOCK_KEY] = clock
    model_options["transformer_options"] = to
    extra_args["model_options"] = model_options

    def report(step, x0, x, total_steps):
        clock.on_step(step)
        if callback is not None:
            return callback(step, x0, x, total_steps)

    return executor(model_wrap, sigmas, extra_args, report, *args, **kwargs)


class StepSigmaWrapper:
    """CALC_COND_BATCH wrapper (outside the token-table wrapper): publish ``STEP_SIGMA_KEY`` from the run's clock
    for the UniFusion window ``(start, end, strength)``."""

    def __init__(self, start: float, end: float, strength: float):
        self.start, self.end, self.strength = float(start), float(end), float(strength)

    def __call__(self, executor, model, conds, x_in, timestep, model_options, *args, **kwargs):
        to = model_options.get("transformer_options") or {}
        clock = to.get(CLOCK_KEY)
        if isinstance(clock, StepClock) and to.get(STEP_SIGMA_KEY) is None and self.strength != 0.0:
            model_options = dict(model_options)
            to = dict(to)
            to[STEP_SIGMA_KEY] = clock.step_sigma(timestep, self.start, self.end, self.strength)
            model_options["transformer_options"] = to
        return executor(model, conds, x_in, timestep, model_options, *args, **kwargs)

    def __deepcopy__(self, memo):
        return self
