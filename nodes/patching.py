"""What the patch nodes share: the keys they publish, how they replace their own earlier patches, and the one
rule that decides which grounding-token row feeds which batch row.

Data path of one UNet call: the tokenizer puts an ``InstanceConditioning`` under ``cond[1][COND_KEY]``; the
``CALC_COND_BATCH`` wrapper (``token_table_wrapper``) collects ``{cond uuid: tokens}`` into a fresh
``TokenTable`` under ``transformer_options[TABLE_KEY]``; every fuser call asks that table for the tokens of its
batch (``TokenTable.objs_for``), which applies ``tokens_for_rows`` to each cond/uncond chunk. A track (per-frame
layouts, tokens ``[F, T, D]``) maps each row to its frame: the latent batch index, or the frame a context window
(ComfyUI's ``context_window``, AnimateDiff-Evolved's ``ad_params["sub_idxs"]``) put in that row
(``frames_of_call``).

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


FRAMES_RETAIN_KEY = "instance_diffusion_latent_retain"   # transformer_options: the core context handler's
                                                         # latent_retain_index_list (window positions kept from
                                                         # the full latent), set by our wrapper
AFTER_LAST = ("error", "hold", "loop")


class TokenRowError(ValueError):
    """Grounding tokens and a batch chunk whose sizes no rule maps onto each other."""


def tokens_for_rows(tokens: torch.Tensor, rows: int, frames=None, after_last: str = "error",
                    total_frames: int | None = None) -> torch.Tensor:
    """The tokens ``[rows, T, D]`` for a batch chunk of ``rows`` latents, from a layout's tokens ``[F, T, D]``.

    Without ``frames``: ``F == rows`` -> row i gets token row i (one layout per latent); ``F == 1`` -> every row
    gets the layout (one layout for the whole batch). Anything else is an error naming both sizes: keeping row 0
    silently would ground every frame with the first frame's layout.

    With ``frames`` (the frame index of each row: the latent batch index, ``frames_of_call`` finds it under
    context windows) row i gets token row ``frames[i]``; ``F == 1`` still grounds every row. A layout with more
    frames than the batch uses its first ones; a frame at or past ``F`` (the batch, ``total_frames`` when known, is
    longer than the layout) is an error naming both numbers unless ``after_last`` is ``hold`` (frame ``F - 1``) or
    ``loop`` (frame ``f % F``).
    """
    count = tokens.shape[0]
    if count == 1:
        return tokens.expand(rows, -1, -1)
    if frames is None:
        if count == rows:
            return tokens
        raise TokenRowError(f"the grounding has {count} token rows (one per layout frame) but the batch chunk has "
                            f"{rows} latents; give one layout for the whole batch, or one layout per latent ({rows})")
    frames = [int(f) for f in frames]
    if len(frames) != rows:
        raise TokenRowError(f"the batch chunk has {rows} latents but {len(frames)} frame indices "
                            f"({frames[:8]}...); the context window does not match the latents it was given")
    if after_last not in AFTER_LAST:
        raise TokenRowError(f"after_last: {after_last!r} is not one of {', '.join(AFTER_LAST)}")
    longest = max([total_frames or 0] + [f + 1 for f in frames])
    if after_last == "error" and longest > count:
        raise TokenRowError(f"the layout has {count} frames but the batch has {longest} latents (frames); give the "
                            f"track at least {longest} frames, or set after_last to 'hold' (repeat the last frame) "
                            f"or 'loop' on the track node")
    if after_last == "hold":
        idx = [min(f, count - 1) for f in frames]
    elif after_last == "loop":
        idx = [f % count for f in frames]
    else:
        idx = frames
    if idx == list(range(count)):
        return tokens
    return tokens[torch.tensor(idx, dtype=torch.long)]


def frames_of_call(transformer_options: dict, rows: int):
    """(frame index of each row of one chunk, total frames or None) of a UNet call, or (None, None) when the
    rows are the latent batch itself. Sources, in order: AnimateDiff-Evolved's sliding context
    (``ad_params["sub_idxs"]``, ``full_length``), ComfyUI's context windows (``context_window``: ``index_list``,
    with the causal anchor frame some hosts prepend and the handler's ``latent_retain_index_list``)."""
    ad = transformer_options.get("ad_params")
    if isinstance(ad, dict) and ad.get("sub_idxs") is not None:
        idx = [int(i) for i in ad["sub_idxs"]]
        total = ad.get("full_length")
        return idx, (int(total) if isinstance(total, int) else None)
    win = transformer_options.get("context_window")
    if win is not None and getattr(win, "index_list", None) is not None:
        if getattr(win, "dim", 0) not in (0, None):
            raise TokenRowError(f"context windows on dim {win.dim}: SD1.5 frames are the batch (dim 0); set the "
                                f"context windows' dim to 0")
        idx = [int(i) for i in win.index_list]
        anchor = getattr(win, "causal_anchor_index", None)
        if anchor is not None and anchor >= 0:
            idx = [int(anchor)] + idx
        for j in transformer_options.get(FRAMES_RETAIN_KEY) or ():
            if 0 <= j < len(idx):
                idx[j] = j
        total = getattr(win, "total_frames", None)
        return idx, (int(total) if total else None)
    return None, None


class TokenTable:
    """``{cond uuid: tokens}`` of one CALC_COND_BATCH call, with the stacked fuser input cached for that call only
    (the 16 fusers of one UNet call reuse it). ``after_last_by_uuid``: a track's rule for frames past its end."""

    def __init__(self, tokens_by_uuid: dict, step_sigma: float | None = None, after_last_by_uuid: dict | None = None):
        self.tokens_by_uuid = dict(tokens_by_uuid)
        self.after_last_by_uuid = dict(after_last_by_uuid or {})
        self.step_sigma = step_sigma       # the sigma that places this call in the grounding schedule
        self.memo: dict = {}               # per-call answers patches share (e.g. the grounding scale)
        self._cache: dict = {}

    def objs_for(self, x: torch.Tensor, uuids, cond_or_uncond, null_tokens, transformer_options=None) -> torch.Tensor:
        """Fuser input ``[B, T, D]`` for ``x`` ``[B, N, C]`` made of ``len(uuids)`` equal chunks. The negative pass
        (``cond_or_uncond`` 1) always gets ``null_tokens()``: ComfyUI gives an area-conditioned negative the same
        uuid as its positive, so the uuid alone would leak the positive's grounding into it. Per-frame tokens
        (``[F, T, D]``) map each row to its frame (``frames_of_call`` on ``transformer_options``)."""
        uuids = list(uuids or [None])
        flags = list(cond_or_uncond or [])
        rows = x.shape[0] // len(uuids)
        tracked = any(t is not None and t.shape[0] > 1 for t in self.tokens_by_uuid.values())
        frames, total = frames_of_call(transformer_options or {}, rows) if tracked else (None, None)
        key = (tuple(uuids), tuple(flags), x.shape[0], x.device, x.dtype, None if frames is None else tuple(frames),
               total)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        parts = []
        for i, u in enumerate(uuids):
            tokens = None if (i < len(flags) and flags[i] == UNCOND) else self.tokens_by_uuid.get(u)
            if tokens is None:
                parts.append(tokens_for_rows(null_tokens(), rows))
            elif tokens.shape[0] > 1:          # a track: rows are frames (the latent batch, or a context window)
                parts.append(tokens_for_rows(tokens, rows, list(range(rows)) if frames is None else frames,
                                             self.after_last_by_uuid.get(u, "error"),
                                             rows if frames is None else total))
            else:
                parts.append(tokens_for_rows(tokens, rows))
        objs = torch.cat(parts)
        # One host->device copy per (call, device, dtype) key, queued without waiting (non_blocking) so the CPU
        # goes on launching the UNet; only towards an accelerator (a device->host copy must complete before use).
        # The dtype stays the tokens' own: the fuser casts them to its compute dtype (fuser.cast_like), and a
        # cast to x's dtype here would round fp32 tokens through fp16 first.
        objs = objs.to(device=x.device, dtype=objs.dtype, non_blocking=x.device.type != "cpu")
        self._cache[key] = objs
        return objs


def token_table_wrapper(executor, model, conds, x_in, timestep, model_options, *args, **kwargs):
    """CALC_COND_BATCH wrapper: publish this call's TokenTable in a copy of transformer_options (never the
    caller's dict)."""
    table = {}
    after_last = {}
    for group in conds:
        for c in group or ():
            data = c.get(COND_KEY)
            if data is not None and "uuid" in c:
                table[c["uuid"]] = data.tokens
                after_last[c["uuid"]] = getattr(getattr(data, "layout", None), "after_last", "error")
    model_options = dict(model_options)
    to = dict(model_options.get("transformer_options", {}))
    step_sigma = to.get(STEP_SIGMA_KEY)
    if step_sigma is None and isinstance(timestep, torch.Tensor) and timestep.numel() > 0:
        step_sigma = float(timestep.reshape(-1)[0])     # read once per UNet call, not in each of the 16 fusers
    to[TABLE_KEY] = TokenTable(table, None if step_sigma is None else float(step_sigma), after_last)
    retain = getattr(model_options.get("context_handler"), "latent_retain_index_list", None)
    if retain:
        to[FRAMES_RETAIN_KEY] = [int(j) for j in retain]
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
