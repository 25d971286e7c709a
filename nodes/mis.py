"""Multi-instance sampler (MIS): InstanceDiffusion's two-phase sampling as a ComfyUI guider and a KSampler node.

Phase 1 denoises the global input and every instance alone (the instance phrase as the prompt, only its grounding
in slot 0; same noise, same negative, same cfg) on the first ``m = int(S * mis)`` steps; the ``n + 1`` latents are
averaged; phase 2 finishes the global input on the remaining steps (official rule, spec 4.3). The pure arithmetic
lives in ``instancediffusion_core.sampling.mis``; this module only drives ComfyUI's own ``CFGGuider`` runs.

How it maps onto ComfyUI (why each choice):
- Every phase is a normal ``CFGGuider`` run on a sigma slice, so any sampler/scheduler, denoise < 1, latent
  batches, noise masks, model patches and wrappers work as in a plain KSampler. Each phase's model options carry
  the FULL sigma schedule under ``instance_diffusion_schedule`` so the UniFusion grounding window counts steps of
  the whole run, not of the slice.
- Batched phase 1: the inputs of a group are stacked along the latent batch (input-major) with ONE positive cond
  whose prompt, pooled output and grounding tokens are stacked the same way; ComfyUI then runs the whole group and
  the shared negative in one UNet call per step. ``max_batch`` caps the inputs per group (1 = one at a time).
- Phase 2 starts from the mean of the phase-1 sampler states (captured inside the sampler, so no latent in/out
  round trip) while the sampler still gets the ORIGINAL noise and latent: inpainting keeps re-noising the
  preserved area from the source image, and inpainting models get the source latent as their concat input.
- Phase-1 noise of ancestral/SDE samplers comes from one noise sampler seeded with the node seed and built on one
  input's shape (ComfyUI's own ``default_noise_sampler``, or ``BrownianTreeNoiseSampler`` for samplers whose
  default is a Brownian tree), replicated for every stacked input: each input sees exactly the noise it sees when
  run alone, so batched and sequential passes agree.
- Stacking is skipped (inputs run one at a time) when it could change results: a global positive with more than
  one entry or with extra keys (areas, masks, ControlNet, hooks, timestep ranges, ...), prompts whose lengths need
  more than 4x padding, ``dpm_adaptive`` (batch-coupled step control), ``ddim``-style random inpainting noise with
  a noise mask, and samplers that are not ``KSAMPLER`` objects.

Differences from the official PLMS implementation (documented, not bugs):
- Multistep samplers (dpmpp_2m, lms, ipndm, ...) restart their history at the merge, like chained KSamplerAdvanced
  nodes; the official PLMS continues the global input's eps history in phase 2. One-step samplers (euler, heun,
  dpmpp_2s, ...) are unaffected.
- Instance passes carry only the phrase prompt and the instance grounding (official); ControlNets, areas or hooks on
  the global positive apply to the global input only.
- The layout comes from the first positive entry carrying InstanceDiffusion data; further entries carrying some are
  part of the global input but do not add instance passes. Without any, the guider samples exactly like CFGGuider.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.sample
import comfy.sampler_helpers
import comfy.samplers
import comfy.utils
import latent_preview

from ..instancediffusion_core.sampling import mis as core
from .instance_cond import InstanceConditioning
from .patching import COND_KEY, SCHEDULE_KEY
from .plms import OFFICIAL_SCHEDULER, PLMS_NAME, OfficialPLMS, official_sigmas
from .validation import finite

CATEGORY = "instance_diffusion/sampling"
DEFAULT_MIS = 0.36
DEFAULT_MAX_BATCH = 4
KSAMPLER_TITLE = "InstanceDiffusion KSampler"
GUIDER_TITLE = "InstanceDiffusion MIS Guider"
STACKABLE_KEYS = frozenset({"pooled_output", COND_KEY})   # a global entry with only these keys can be stacked


def find_instance_conditioning(positive):
    """The InstanceConditioning of the first positive entry that carries one, else None."""
    for entry in positive or ():
        data = entry[1].get(COND_KEY) if len(entry) > 1 and isinstance(entry[1], dict) else None
        if data is not None:
            return data
    return None


def instance_count(data) -> int:
    if data is not None and getattr(data.layout, "num_frames", None) is not None:
        from .frames import MIS_REFUSAL                # per-frame layouts: refused, never frame 0 silently
        raise ValueError(MIS_REFUSAL)
    return 0 if data is None else len(data.layout.instances)


@dataclass
class PhaseInput:
    """One phase-1 input: its positive conditioning and, when stackable, the parts a stacked cond is built from."""
    positive: list
    cross: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    data: object = None

    @property
    def stackable(self) -> bool:
        return self.cross is not None and self.tokens is not None


def global_input(positive, data) -> PhaseInput:
    if len(positive) == 1 and set(positive[0][1]) <= STACKABLE_KEYS and positive[0][1].get(COND_KEY) is data \
            and isinstance(positive[0][0], torch.Tensor):
        return PhaseInput(positive, positive[0][0], positive[0][1].get("pooled_output"), data.tokens, data)
    return PhaseInput(positive)


def instance_inputs(data) -> list[PhaseInput]:
    """Instance i alone: its phrase as the prompt (+ pooled), its grounding in slot 0 (spec 4.3 step 1)."""
    n = instance_count(data)
    if len(data.prompts) != n:
        raise ValueError(f"instance_diffusion: the conditioning carries {len(data.prompts)} instance prompts for "
                         f"{n} instances; re-run 'InstanceDiffusion Conditioning' to rebuild it")
    out = []
    for i, prompt in enumerate(data.prompts):
        sub = data.for_instance(i)
        extra = {COND_KEY: sub}
        if prompt.pooled is not None:
            extra["pooled_output"] = prompt.pooled
        out.append(PhaseInput([[prompt.cond, extra]], prompt.cond, prompt.pooled, sub.tokens, sub))
    return out


def stacked_positive(inputs: list[PhaseInput], batch: int):
    """One positive cond for a stacked group (input-major rows), or None if the prompts cannot share a batch."""
    length = core.common_token_length([p.cross.shape[1] for p in inputs])
    if length is None:
        return None
    dtype = functools.reduce(torch.promote_types, [p.cross.dtype for p in inputs])
    device = inputs[0].cross.device
    cross = core.stack_inputs([core.repeat_tokens(p.cross.to(device=device, dtype=dtype), length)
                               for p in inputs], batch)
    tokens = torch.cat([p.tokens.float().cpu()[:1].expand(batch, -1, -1) if p.tokens.shape[0] != batch
                        else p.tokens.float().cpu() for p in inputs])
    first = inputs[0].data
    data = InstanceConditioning(tokens=tokens, layout=first.layout, config=first.config)
    extra = {COND_KEY: data}
    if all(p.pooled is not None for p in inputs):
        pdtype = functools.reduce(torch.promote_types, [p.pooled.dtype for p in inputs])
        extra["pooled_output"] = core.stack_inputs([p.pooled.to(device=device, dtype=pdtype) for p in inputs], batch)
    return [[cross, extra]]


# ------------------------------------------------------------------------------------------------ sampler helpers

def _accepts_noise_sampler(fn) -> bool:
    try:
        return "noise_sampler" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _default_is_brownian(fn) -> bool:
    try:
        return "BrownianTreeNoiseSampler" in inspect.getsource(inspect.unwrap(fn))
    except (OSError, TypeError):
        return False


def _function_name(sampler) -> str:
    fn = getattr(sampler, "sampler_function", None)
    return getattr(inspect.unwrap(fn), "__name__", "") if fn is not None else ""


class ReplicatedNoise:
    """A noise sampler for a stack of identical-shape inputs: one draw on one input's shape, tiled per input."""

    def __init__(self, base, copies: int):
        self.base = base
        self.copies = copies

    def __call__(self, sigma, sigma_next):
        return core.tile_batch(self.base(sigma, sigma_next), self.copies)


def shared_noise_sampler(fn, slice_like: torch.Tensor, sigmas: torch.Tensor, seed, copies: int):
    """The sampler's default kind of noise (ComfyUI's own classes), seeded like a lone run, on one input's shape."""
    import comfy.k_diffusion.sampling as kds

    if _default_is_brownian(fn):
        positive = sigmas[sigmas > 0]
        base = kds.BrownianTreeNoiseSampler(slice_like, positive.min(), sigmas.max(), seed=seed, cpu=True)
    else:
        base = kds.default_noise_sampler(slice_like, seed=seed)
    return ReplicatedNoise(base, copies)


def capturing(fn, sink: dict):
    """Wrap a k-diffusion sampler function to keep its final state (sampler space, before latent_out)."""
    @functools.wraps(fn)
    def run(model, x, sigmas, *args, **kwargs):
        sink["x"] = fn(model, x, sigmas, *args, **kwargs)
        return sink["x"]
    return run


def derived(sampler, fn, extra_options=None):
    """A sampler of ``sampler``'s own class (ours keep their official behaviour) running ``fn``."""
    cls = type(sampler) if isinstance(sampler, OfficialPLMS) else comfy.samplers.KSAMPLER
    return cls(fn, dict(sampler.extra_options if extra_options is None else extra_options), sampler.inpaint_options)


def starting_from(fn, x_start: torch.Tensor):
    """Wrap a sampler function to start from ``x_start`` instead of the noise-scaled latent it is given."""
    @functools.wraps(fn)
    def run(model, x, sigmas, *args, **kwargs):
        return fn(model, x_start.to(device=x.device, dtype=x.dtype), sigmas, *args, **kwargs)
    return run


# ------------------------------------------------------------------------------------------------ the guider

@dataclass
class MisPlan:
    """What the last ``sample()`` did (read by tests and the benchmark)."""
    steps: int = 0
    m: int = 0
    n: int = 0
    groups: list = field(default_factory=list)
    batched: bool = False
    reason: str = ""
    total: int = 0
    merged: torch.Tensor | None = None      # the merged phase-1 state (sampler space) phase 2 started from
    phase1_states: list = field(default_factory=list)   # each input's state after phase 1 (global first)
    continued_history: int = 0              # eps carried into phase 2 (official PLMS: the global input's)


class MultiInstanceGuider(comfy.samplers.CFGGuider):
    """CFGGuider whose ``sample()`` runs InstanceDiffusion's multi-instance sampling (see the module docstring)."""

    def __init__(self, model_patcher, mis: float = DEFAULT_MIS, merge: str = "mean",
                 max_batch: int = DEFAULT_MAX_BATCH):
        super().__init__(model_patcher)
        core.check_mis_options(mis, merge, max_batch)
        self.mis = float(mis)
        self.merge = merge
        self.max_batch = int(max_batch)
        self.raw_conds = {"positive": None, "negative": None}
        self.last_plan = MisPlan()

    def set_conds(self, positive, negative):
        self.raw_conds = {"positive": positive, "negative": negative}
        super().set_conds(positive, negative)

    # -- planning ---------------------------------------------------------------------------------------------
    def instance_data(self):
        return find_instance_conditioning(self.raw_conds["positive"])

    def split(self, steps: int) -> tuple[int, int]:
        """(m, n): phase-1 steps and instance count; m = 0 means plain sampling."""
        n = instance_count(self.instance_data())
        m = core.mis_steps(steps, self.mis) if n > 0 and steps > 0 else 0
        return m, n

    def progress_total(self, steps: int) -> int:
        m, n = self.split(steps)
        return core.progress_total(steps, m, n)

    def _stacking_blocker(self, sampler, denoise_mask) -> str:
        if self.max_batch <= 1:
            return "max_batch is 1"
        if not isinstance(sampler, comfy.samplers.KSAMPLER):
            return f"{type(sampler).__name__} is not a KSAMPLER"
        if _function_name(sampler) in core.BATCH_COUPLED_SAMPLERS:
            return f"{_function_name(sampler)} couples the batch"
        if denoise_mask is not None and sampler.inpaint_options.get("random", False):
            return "random inpainting noise with a noise mask"
        return ""

    # -- running ----------------------------------------------------------------------------------------------
    def _run(self, positive, noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
             schedule):
        guider = comfy.samplers.CFGGuider(self.model_patcher)
        guider.model_options = comfy.model_patcher.create_model_options_clone(self.model_options)
        guider.model_options.setdefault("transformer_options", {})[SCHEDULE_KEY] = schedule
        guider.set_conds(positive, self.raw_conds["negative"])
        guider.set_cfg(self.cfg)
        return guider.sample(noise, latent_image, sampler, sigmas, denoise_mask=denoise_mask, callback=callback,
                             disable_pbar=disable_pbar, seed=seed)

    @staticmethod
    def _reporter(callback, total: int, offset: int, group_size: int, batch: int | None):
        """Map a phase's step callback onto the node's single progress bar; check Cancel on every step."""
        def report(step, x0, x, _phase_total):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if callback is not None:
                if batch is not None:
                    x0, x = x0[:batch], x[:batch]
                callback(core.progress_index(offset, step, group_size), x0, x, total)
        return report

    def _phase1_sampler(self, sampler, noise, copies, sigmas, seed, sink):
        if not isinstance(sampler, comfy.samplers.KSAMPLER):
            return sampler
        fn = sampler.sampler_function
        extra = dict(sampler.extra_options)
        if _accepts_noise_sampler(fn) and "noise_sampler" not in extra:
            like = torch.zeros(noise.shape, dtype=noise.dtype, device=self.model_patcher.load_device)
            extra["noise_sampler"] = shared_noise_sampler(fn, like, sigmas.to(like.device), seed, copies)
        if isinstance(sampler, OfficialPLMS):      # each input its own eps history, kept for phase 2
            sink["history"] = extra["history"] = []
            extra["ends_schedule"] = False
        return derived(sampler, capturing(fn, sink), extra)

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        steps = int(sigmas.shape[-1]) - 1
        if steps <= 0:
            return latent_image
        positive = self.raw_conds["positive"]
        if positive is None:
            raise ValueError("MultiInstanceGuider: no conditioning; call set_conds(positive, negative) first")
        data = self.instance_data()
        m, n = self.split(steps)
        total = core.progress_total(steps, m, n)
        self.last_plan = plan = MisPlan(steps=steps, m=m, n=n, total=total)
        if m == 0:
            plan.reason = "plain sampling (no instances)" if n == 0 else "plain sampling (mis steps = 0)"
            return self._run(positive, noise, latent_image, sampler, sigmas, denoise_mask,
                             self._reporter(callback, total, 0, 1, None), disable_pbar, seed, sigmas)
        if getattr(latent_image, "is_nested", False):
            raise ValueError("latent_image: multi-part (nested) latents are not supported by the multi-instance "
                             "sampler; InstanceDiffusion is an SD1.5 image model, use a plain image latent")

        phase1, phase2 = core.split_sigmas(sigmas, m)
        inputs = [global_input(positive, data)] + instance_inputs(data)
        blocker = self._stacking_blocker(sampler, denoise_mask)
        alone = [k for k, p in enumerate(inputs) if not p.stackable]
        groups = core.plan_groups(len(inputs), 1 if blocker else self.max_batch, alone)
        plan.groups, plan.reason = groups, blocker or ("global input alone: extra conditioning" if alone else "")
        plan.batched = any(len(g) > 1 for g in groups)

        batch = noise.shape[0]
        finals, states, histories = [None] * len(inputs), [None] * len(inputs), [None] * len(inputs)
        offset = 0
        for group in groups:
            outs, sts, hists = self._run_group([inputs[k] for k in group], noise, latent_image, sampler, phase1,
                                               denoise_mask, callback, total, offset, disable_pbar, seed, sigmas,
                                               batch)
            for j, k in enumerate(group):
                finals[k], states[k], histories[k] = outs[j], sts[j], hists[j]
            offset += len(group) * m

        plan.phase1_states = [s if s is not None else f for s, f in zip(states, finals)]
        merged = core.merge_latents(finals, self.merge)
        if phase2.shape[-1] <= 1:
            plan.merged = merged
            return merged
        report = self._reporter(callback, total, offset, 1, batch)
        if all(s is not None for s in states):
            start = plan.merged = core.merge_latents(states, self.merge)
            extra = dict(sampler.extra_options)
            if isinstance(sampler, OfficialPLMS):
                # official: phase 2 continues the GLOBAL input's eps history (computed on its pre-merge latents)
                extra["history"] = list(histories[0] or [])
                plan.continued_history = len(extra["history"])
            second = derived(sampler, starting_from(sampler.sampler_function, start), extra)
            return self._run(positive, noise, latent_image, second, phase2, denoise_mask, report, disable_pbar,
                             seed, sigmas)
        # Not a KSAMPLER: continue from the merged latent with no added noise (KSamplerAdvanced-style chaining).
        return self._run(positive, torch.zeros_like(merged), merged, sampler, phase2, denoise_mask, report,
                         disable_pbar, seed, sigmas)

    def _run_group(self, group, noise, latent_image, sampler, phase1, denoise_mask, callback, total, offset,
                   disable_pbar, seed, schedule, batch):
        """Phase 1 for a group of inputs: one stacked run, or one run per input. Returns (latents, sampler states,
        eps histories), one of each per input (states / histories None where the sampler does not expose them)."""
        copies = len(group)
        pos = stacked_positive(group, batch) if copies > 1 else group[0].positive
        if pos is None:                      # prompt lengths too different to share a batch
            outs, sts, hists = [], [], []
            for j, single in enumerate(group):
                o, s, h = self._run_group([single], noise, latent_image, sampler, phase1, denoise_mask, callback,
                                          total, offset + j * (phase1.shape[-1] - 1), disable_pbar, seed, schedule,
                                          batch)
                outs += o
                sts += s
                hists += h
            return outs, sts, hists
        sink = {}
        run_sampler = self._phase1_sampler(sampler, noise, copies, phase1, seed, sink)
        mask = denoise_mask
        if copies > 1 and denoise_mask is not None:
            prepared = comfy.sampler_helpers.prepare_mask(denoise_mask, noise.shape, self.model_patcher.load_device)
            mask = core.tile_batch(prepared[:, :1], copies)
        out = self._run(pos, core.tile_batch(noise, copies), core.tile_batch(latent_image, copies), run_sampler,
                        phase1, mask, self._reporter(callback, total, offset, copies, batch), disable_pbar, seed,
                        schedule)
        state = sink.get("x")
        history = sink.get("history")
        hists = [None] * copies
        if history is not None:
            rows = [core.unstack(e, copies) for e in history]
            hists = [[r[j] for r in rows] for j in range(copies)]
        return (core.unstack(out, copies), (core.unstack(state, copies) if state is not None else [None] * copies),
                hists)


# ------------------------------------------------------------------------------------------------ nodes

_TIP_MIS = ("Fraction of the steps on which the global prompt and every instance are denoised separately before "
            "their latents are averaged: official default 0.36; README advises < 0.4. 0 = plain sampling. Costs "
            "about (n+1)*mis + (1-mis) times a plain run for n instances.")
_TIP_MERGE = "How the n+1 phase-1 latents are combined; 'mean' is the official rule (plain average)."
_TIP_MAX_BATCH = ("How many phase-1 inputs (global + instances) share one UNet call: faster on a GPU with free "
                  "memory, 1 = one input at a time (least memory). Results are the same either way.")


def _mis_inputs() -> dict:
    return {
        "mis": ("FLOAT", {"default": DEFAULT_MIS, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": _TIP_MIS}),
        "merge": (list(core.MERGE_RULES), {"default": "mean", "tooltip": _TIP_MERGE}),
        "max_batch": ("INT", {"default": DEFAULT_MAX_BATCH, "min": 1, "max": 64, "tooltip": _TIP_MAX_BATCH}),
    }


def _sigmas(model, steps: int, scheduler: str, denoise: float) -> torch.Tensor:
    """The run's sigmas: the official schedule, or a ComfyUI scheduler exactly as its KSampler computes them."""
    if scheduler == OFFICIAL_SCHEDULER:
        return official_sigmas(model, steps, denoise)
    ks = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, scheduler=scheduler,
                                 denoise=denoise, model_options=model.model_options)
    return ks.sigmas


def mis_ksample(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, denoise=1.0,
                mis=DEFAULT_MIS, merge="mean", max_batch=DEFAULT_MAX_BATCH):
    """``nodes.common_ksampler`` with the multi-instance guider in place of the plain CFG guider."""
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    guider = MultiInstanceGuider(model, mis, merge, max_batch)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    sigmas = _sigmas(model, steps, scheduler, denoise)
    sampler = OfficialPLMS() if sampler_name == PLMS_NAME else comfy.samplers.sampler_object(sampler_name)
    callback = latent_preview.prepare_callback(model, guider.progress_total(int(sigmas.shape[-1]) - 1))
    samples = guider.sample(noise, latent_image, sampler, sigmas,
                            denoise_mask=latent.get("noise_mask"), callback=callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    out = latent.copy()
    out["samples"] = samples.to(comfy.model_management.intermediate_device())
    return out, guider


class InstanceDiffusionKSampler:
    DESCRIPTION = ("KSampler with InstanceDiffusion's multi-instance sampler: for the first mis of the steps the "
                   "global prompt and each instance alone (its phrase as the prompt, only its grounding) are "
                   "denoised from the same noise, then averaged, then the global prompt finishes. Use a positive "
                   "from 'InstanceDiffusion Conditioning' and a model through 'Apply UniFusion'. Without instance "
                   "data (or mis 0) it is exactly the core KSampler.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The SD1.5 model, patched by 'Apply UniFusion' (and 'Apply ScaleU')."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                             "tooltip": "Seed of the starting noise, shared by the global input and every instance."}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 10000,
                              "tooltip": "Sampling steps (official: 50 PLMS steps)."}),
            "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale, used by every input (official 7.5)."}),
            "sampler_name": ([PLMS_NAME] + list(comfy.samplers.KSampler.SAMPLERS), {
                "default": PLMS_NAME,
                "tooltip": "'plms (official)' is the official sampler: with MIS, phase 2 continues the global "
                           "prompt's eps history exactly as the official code does. Any ComfyUI sampler works too; "
                           "multistep ones (dpmpp_2m, ipndm, lms, ...) then restart their history at the merge, "
                           "so results differ slightly from the official algorithm."}),
            "scheduler": ([OFFICIAL_SCHEDULER] + list(comfy.samplers.KSampler.SCHEDULERS), {
                "default": OFFICIAL_SCHEDULER,
                "tooltip": "Noise schedule. 'official' = the official timesteps (ddim_uniform, t = 981..1 for 50 "
                           "steps, last step to alphas_cumprod[0]); or any ComfyUI scheduler."}),
            "positive": ("CONDITIONING", {"tooltip": "From 'InstanceDiffusion Conditioning': the global prompt "
                                                     "carrying the layout and each instance's own prompt."}),
            "negative": ("CONDITIONING", {"tooltip": "Negative prompt, shared by the global input and every "
                                                     "instance."}),
            "latent_image": ("LATENT", {"tooltip": "The latent to denoise (empty latent, img2img or inpainting "
                                                   "latent with a noise mask)."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "How much of the schedule is applied (1 = from pure noise)."}),
            **_mis_inputs(),
        }}

    def sample(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
               denoise=1.0, mis=DEFAULT_MIS, merge="mean", max_batch=DEFAULT_MAX_BATCH):
        cfg = finite("cfg", cfg, KSAMPLER_TITLE, minimum=0.0, maximum=100.0)
        denoise = finite("denoise", denoise, KSAMPLER_TITLE, minimum=0.0, maximum=1.0)
        mis = finite("mis", mis, KSAMPLER_TITLE, minimum=0.0, maximum=1.0)
        out, _guider = mis_ksample(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                   latent_image, denoise, mis, merge, max_batch)
        return (out,)


class InstanceDiffusionMISGuider:
    DESCRIPTION = ("GUIDER for SamplerCustomAdvanced running InstanceDiffusion's multi-instance sampler (same rule "
                   "as 'InstanceDiffusion KSampler'); pick sampler, sigmas and noise with the custom-sampling nodes.")
    CATEGORY = CATEGORY
    FUNCTION = "get_guider"
    RETURN_TYPES = ("GUIDER",)
    OUTPUT_TOOLTIPS = ("A CFG guider that runs the multi-instance phases when the positive carries a layout.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The SD1.5 model, patched by 'Apply UniFusion' (and 'Apply ScaleU')."}),
            "positive": ("CONDITIONING", {"tooltip": "From 'InstanceDiffusion Conditioning'."}),
            "negative": ("CONDITIONING", {"tooltip": "Negative prompt, shared by every input."}),
            "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale (official 7.5)."}),
            **_mis_inputs(),
        }}

    def get_guider(self, model, positive, negative, cfg, mis=DEFAULT_MIS, merge="mean",
                   max_batch=DEFAULT_MAX_BATCH):
        cfg = finite("cfg", cfg, GUIDER_TITLE, minimum=0.0, maximum=100.0)
        mis = finite("mis", mis, GUIDER_TITLE, minimum=0.0, maximum=1.0)
        guider = MultiInstanceGuider(model, mis, merge, max_batch)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        return (guider,)


NODES = {
    "InstanceDiffusionKSampler": (InstanceDiffusionKSampler, KSAMPLER_TITLE),
    "InstanceDiffusionMISGuider": (InstanceDiffusionMISGuider, GUIDER_TITLE),
}
