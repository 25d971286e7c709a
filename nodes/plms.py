"""The official sampler in ComfyUI: PLMS as a ``SAMPLER`` and the official timesteps as ``SIGMAS``.

Neither is added to ComfyUI's global sampler/scheduler lists (other packs and workflows see no change): the
``SAMPLER`` node plugs into SamplerCustom / SamplerCustomAdvanced, and our KSampler node offers both as extra
choices. The math is ``instancediffusion_core.sampling.plms``; this module only fits it to ComfyUI's sampler API:
- ``max_denoise``: the official run takes its input as pure DDPM noise although its first timestep is 981, not
  999, so the noise is scaled by ``sqrt(1 + sigma^2)`` whenever the schedule starts within the first DDIM stride;
- a run that ends at the model's smallest sigma (the official ``alphas_cumprod[0]``) returns the DDPM-space latent
  the official sampler hands to the VAE;
- every evaluation of a step publishes that step's sigma (``STEP_SIGMA_KEY``), so the grounding window counts
  steps as the official code does (the first step's second evaluation belongs to step 0).
"""
from __future__ import annotations

import math

import torch

import comfy.samplers

from ..instancediffusion_core.sampling import plms
from .patching import STEP_SIGMA_KEY
from .types import CATEGORY
from .validation import finite

SCHEDULE_TITLE = "InstanceDiffusion Official Schedule"

PLMS_NAME = "plms (official)"
OFFICIAL_SCHEDULER = "official (ddim_uniform + 1)"


def _with_step_sigma(extra_args: dict):
    base = extra_args.get("model_options") or {}

    def eval_args(step_sigma: float) -> dict:
        options = dict(base)
        to = dict(options.get("transformer_options", {}))
        to[STEP_SIGMA_KEY] = step_sigma
        options["transformer_options"] = to
        return {"model_options": options}
    return eval_args


def sample_plms(model, x, sigmas, extra_args=None, callback=None, disable=None, history=None, ends_schedule=True):
    """k-diffusion-style sampler function: the official PLMS (see the core module)."""
    extra_args = {} if extra_args is None else extra_args
    return plms.sample_plms(model, x, sigmas, extra_args, callback, disable, history=history,
                            eval_args=_with_step_sigma(extra_args), ends_schedule=ends_schedule)


class OfficialPLMS(comfy.samplers.KSAMPLER):
    """ComfyUI ``SAMPLER`` running the official PLMS; ``extra_options`` may carry ``history`` (a list continued
    in place) and ``ends_schedule`` (False for a slice), which the multi-instance sampler uses."""

    def __init__(self, sampler_function=None, extra_options=None, inpaint_options=None):
        super().__init__(sampler_function or sample_plms, dict(extra_options or {}), dict(inpaint_options or {}))

    def max_denoise(self, model_wrap, sigmas):
        if super().max_denoise(model_wrap, sigmas):
            return True
        ms = model_wrap.inner_model.model_sampling
        return plms.is_full_run(float(sigmas[0]), lambda t: float(ms.sigma(torch.tensor(float(t)))),
                                int(sigmas.shape[-1]) - 1)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        out = super().sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
                             disable_pbar)
        last = float(sigmas[-1])
        sigma_min = float(model_wrap.inner_model.model_sampling.sigma_min)
        if self.extra_options.get("ends_schedule", True) and last > 0 and math.isclose(last, sigma_min,
                                                                                       rel_tol=1e-5):
            out = plms.to_ddpm_latent(out, last)
        return out


def official_sigmas(model, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The official schedule's sigmas for ``model`` (its own ``alphas_cumprod``)."""
    ms = model.get_model_object("model_sampling")
    return plms.official_sigmas(lambda t: float(ms.sigma(torch.tensor(float(t)))), int(steps), float(denoise),
                                train_steps=int(ms.sigmas.shape[0]))


class InstanceDiffusionPLMSSampler:
    DESCRIPTION = ("The official InstanceDiffusion sampler (PLMS: a 2-evaluation first step, then Adams-Bashforth "
                   "of order 2-4 over the eps history) as a SAMPLER for SamplerCustom / SamplerCustomAdvanced. "
                   "Use it with 'InstanceDiffusion Official Schedule' to reproduce the official demos.")
    CATEGORY = f"{CATEGORY}/sampling"
    FUNCTION = "get_sampler"
    RETURN_TYPES = ("SAMPLER",)
    OUTPUT_TOOLTIPS = ("The official PLMS sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def get_sampler(self):
        return (OfficialPLMS(),)


class InstanceDiffusionOfficialSchedule:
    DESCRIPTION = ("The official InstanceDiffusion timesteps as SIGMAS: ComfyUI's ddim_uniform (t = 981, 961, ..., 1 "
                   "for 50 steps) with the official last step to alphas_cumprod[0] instead of sigma 0.")
    CATEGORY = f"{CATEGORY}/sampling"
    FUNCTION = "get_sigmas"
    RETURN_TYPES = ("SIGMAS",)
    OUTPUT_TOOLTIPS = ("steps + 1 sigmas, high to low.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model whose noise schedule (alphas_cumprod) is used."}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": "Sampling steps (official 50)."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                  "tooltip": "1 = from pure noise; below 1 keeps the last steps (img2img)."}),
        }}

    def get_sigmas(self, model, steps, denoise):
        denoise = finite("denoise", denoise, SCHEDULE_TITLE, minimum=0.01, maximum=1.0)
        return (official_sigmas(model, steps, denoise),)


NODES = {
    "InstanceDiffusionPLMSSampler": (InstanceDiffusionPLMSSampler, "InstanceDiffusion PLMS Sampler (official)"),
    "InstanceDiffusionOfficialSchedule": (InstanceDiffusionOfficialSchedule, SCHEDULE_TITLE),
}
