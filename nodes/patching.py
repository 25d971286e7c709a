"""What the patch nodes share: the keys they publish, how they replace their own earlier patches, and the one
rule that decides which grounding-token row feeds which batch row.

Data path of one UNet call: the tokenizer puts an ``InstanceConditioning`` under ``cond[1][COND_KEY]``; the
``CALC_COND_BATCH`` wrapper (``token_table_wrapper``) collects ``{cond uuid: tokens}`` into a fresh
``TokenTable`` under ``transformer_options[TABLE_KEY]``; every fuser call asks that table for the tokens of its
batch (``TokenTable.objs_for``), which applies ``tokens_for_rows`` to each cond/uncond chunk.

The table lives for one call only and owns its cache: since ComfyUI 0.14 ``ModelPatcher.clone()`` shares patch
objects between clones and prompts, so a patch must hold no per-call state (an ``id()``-keyed cache on the patch
can hand one prompt's tokens to the next once Python reuses the id).
"""
from __future__ import annotations

import torch

COND_KEY = "instance_diffusion"                  # cond[1]: InstanceConditioning of a grounded positive
TABLE_KEY = "instance_diffusion_tokens"          # transformer_options: TokenTable of the current call
SCHEDULE_KEY = "instance_diffusion_schedule"     # transformer_options: full sigma schedule (set by the MIS sampler)
STEP_SIGMA_KEY = "instance_diffusion_step_sigma"  # transformer_options: sigma of the step being taken (float; set
                                                  # by the official PLMS for every evaluation of a step)
WRAPPER_KEY = "instance_diffusion"               # key of our CALC_COND_BATCH wrapper
UNCOND = 1                                       # ComfyUI's cond_or_uncond marker of the negative pass


class TokenRowError(ValueError):
    """Grounding tokens and a batch chunk whose sizes no rule maps onto each other."""


def tokens_for_rows(tokens: torch.Tensor, rows: int) -> torch.Tensor:
    """The tokens ``[rows, T, D]`` for a batch chunk of ``rows`` latents, from a layout's tokens ``[F, T, D]``.

    The rule: ``F == rows`` -> row i gets token row i (one layout per latent); ``F == 1`` -> every row gets the
    layout (one layout for the whole batch). Anything else is an error naming both sizes: keeping row 0 silently
    would ground every frame with the first frame's layout.
    """
    count = tokens.shape[0]
    if count == rows:
        return tokens
    if count == 1:
        return tokens.expand(rows, -1, -1)
    raise TokenRowError(f"the grounding has {count} token rows (one per layout frame) but the batch chunk has {rows} "
                        f"latents; give one layout for the whole batch, or one layout per latent ({rows})")


class TokenTable:
    """``{cond uuid: tokens}`` of one CALC_COND_BATCH call, with the stacked fuser input cached for that call only
    (the 16 fusers of one UNet call reuse it)."""

    def __init__(self, tokens_by_uuid: dict, step_sigma: float | None = None):
        self.tokens_by_uuid = dict(tokens_by_uuid)
        self.step_sigma = step_sigma       # the sigma that places this call in the grounding schedule
        self.memo: dict = {}               # per-call answers patches share (e.g. the grounding scale)
        self._cache: dict = {}

    def objs_for(self, x: torch.Tensor, uuids, cond_or_uncond, null_tokens) -> torch.Tensor:
        """Fuser input ``[B, T, D]`` for ``x`` ``[B, N, C]`` made of ``len(uuids)`` equal chunks. The negative pass
        (``cond_or_uncond`` 1) always gets ``null_tokens()``: ComfyUI gives an area-conditioned negative the same
        uuid as its positive, so the uuid alone would leak the positive's grounding into it."""
        uuids = list(uuids or [None])
        flags = list(cond_or_uncond or [])
        key = (tuple(uuids), tuple(flags), x.shape[0], x.device, x.dtype)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        rows = x.shape[0] // len(uuids)
        parts = []
        for i, u in enumerate(uuids):
            tokens = None if (i < len(flags) and flags[i] == UNCOND) else self.tokens_by_uuid.get(u)
            parts.append(tokens_for_rows(null_tokens() if tokens is None else tokens, rows))
        objs = torch.cat(parts).to(device=x.device)
        self._cache[key] = objs
        return objs


def token_table_wrapper(executor, model, conds, x_in, timestep, model_options, *args, **kwargs):
    """CALC_COND_BATCH wrapper: publish this call's TokenTable in a copy of transformer_options (never the
    caller's dict)."""
    table = {}
    for group in conds:
        for c in group or ():
            data = c.get(COND_KEY)
            if data is not None and "uuid" in c:
                table[c["uuid"]] = data.tokens
    model_options = dict(model_options)
    to = dict(model_options.get("transformer_options", {}))
    step_sigma = to.get(STEP_SIGMA_KEY)
    if step_sigma is None and isinstance(timestep, torch.Tensor) and timestep.numel() > 0:
        step_sigma = float(timestep.reshape(-1)[0])     # read once per UNet call, not in each of the 16 fusers
    to[TABLE_KEY] = TokenTable(table, None if step_sigma is None else float(step_sigma))
    model_options["transformer_options"] = to
    return executor(model, conds, x_in, timestep, model_options, *args, **kwargs)


def remove_patches_of(model_options: dict, cls) -> None:
    """Drop earlier patches of class ``cls`` from a clone's options, so applying a node twice replaces its patch
    instead of stacking a second one."""
    patches = model_options.get("transformer_options", {}).get("patches", {})
    for name, plist in list(patches.items()):
        kept = [p for p in plist if not isinstance(p, cls)]
        if kept:
            patches[name] = kept
        else:
            del patches[name]
