"""Recognise which weights layout a loaded checkpoint holds and map its add-on tensors to the official key names.

Layouts read: the official training checkpoint (``ema``/``model``), logtd's split files (fusers, ScaleU, bare
position net), flat state dicts with wrapper prefixes. Layouts refused with a pointer to the right loader: GLIGEN,
diffusers, base Stable Diffusion models. Values are passed through untouched (tensors or lazy references), so
nothing is read here.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from ..model.keys import CONVNEXT_PREFIX, FUSER_SUFFIXES, POSITION_NET_PREFIX, SD15_INPUT_BLOCKS, SD15_OUTPUT_BLOCKS
from .key_groups import addon_group, strip_prefixes
from .errors import OFFICIAL_SOURCE_HINT, CheckpointError, cut_text, short_repr
from .safe_pickle import Inert, LazyTensor

_BASE_UNET_PREFIXES = ("time_embed.", "input_blocks.", "middle_block.", "output_blocks.", "out.", "label_emb.")
_FULL_MODEL_PREFIXES = ("first_stage_model.", "cond_stage_model.", "conditioner.", "model_ema.")
_DIFFUSERS_PREFIXES = ("down_blocks.", "up_blocks.", "mid_block.", "conv_in.", "conv_out.", "time_embedding.")
_GLIGEN_POSNET = ("linears.", "linears_text.", "linears_image.", "null_text_feature", "null_image_feature")
_UNIFUSION_BARE = ("null_", "linears_list.", "in_conv.", CONVNEXT_PREFIX, "pos_embedding")


def is_tensor(v) -> bool:
    """A real tensor or a not-yet-read one from a torch zip."""
    return isinstance(v, (torch.Tensor, LazyTensor))


def _count_tensors(obj, limit: int = 1_000_000) -> tuple[int, int]:
    """(tensors, values) inside a nested container, without reading anything (cycle-safe)."""
    seen, stack, n, values = set(), [obj], 0, 0
    while stack and n < limit:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if is_tensor(o):
            n += 1
            values += math.prod(o.shape)
        elif isinstance(o, Mapping):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
    return n, values


def _fmt_count(n: int, values: int) -> str:
    return f"{n} tensors, {values:,} values" if n else "no tensors"


def _int_keys(mapping: Mapping) -> dict[int, Any] | None:
    out = {}
    for k, v in mapping.items():
        if isinstance(k, int) and not isinstance(k, bool):
            out[k] = v
        elif isinstance(k, str) and k.isascii() and k.isdigit() and len(k) <= 9:
            out[int(k)] = v
        else:
            return None
    return out


def _looks_logtd_fusers(tree: Mapping) -> bool:
    if not tree or not set(tree) <= {"input_blocks", "middle_block", "output_blocks"}:
        return False
    return all(isinstance(v, Mapping) and all(isinstance(e, Mapping) and "state" in e for e in v.values())
               for v in tree.values())


def _looks_logtd_scaleu(tree: Mapping) -> bool:
    entries = _int_keys(tree)
    return bool(entries) and all(isinstance(v, Mapping) and ("scaleu_b" in v or "scaleu_s" in v)
                                 for v in entries.values())


def _looks_official(tree: Mapping) -> bool:
    return any(isinstance(tree.get(k), Mapping) and any(is_tensor(v) for v in tree[k].values())
               for k in ("ema", "model"))


def _logtd_block_map(group: str, numbers: list[int], notes: list[str]) -> dict[int, str]:
    """logtd's block numbers -> official prefixes (SD1.5 numbers as is; 0..n-1 list positions mapped in order)."""
    def prefix(n: int) -> str:
        return "middle_block.1" if group == "middle_block" else f"{group}.{n}.1"

    expected = {"input_blocks": list(SD15_INPUT_BLOCKS), "middle_block": [1],
                "output_blocks": list(SD15_OUTPUT_BLOCKS)}[group]
    if sorted(numbers) == expected:
        return {n: prefix(n) for n in numbers}
    if sorted(numbers) == list(range(len(expected))):
        notes.append(f"{group}: fusers numbered 0..{len(expected) - 1} were mapped in order to the SD1.5 blocks "
                     f"{expected}")
        return {n: prefix(expected[n]) for n in numbers}
    if group == "middle_block":
        raise CheckpointError(f"logtd fusers file: middle_block has entries {sorted(numbers)}; expected one ('1')")
    notes.append(f"warning: {group}: fuser block numbers {sorted(numbers)} are not the SD1.5 layout {expected}; "
                 f"used as block numbers")
    return {n: prefix(n) for n in numbers}


def _from_logtd_fusers(tree: Mapping, label: str) -> tuple[dict, str, list[str]]:
    notes = [f"{label}: logtd fusers file ({', '.join(tree)})"]
    refs, heads = {}, set()
    for group, entries in tree.items():
        numbered = _int_keys(entries)
        if numbered is None:
            raise CheckpointError(f"{label}: logtd fusers file: '{group}' has non-numeric block keys "
                                  f"{short_repr(list(entries)[:6])}; expected block numbers like '1', '2', '4'")
        for n, prefix in _logtd_block_map(group, sorted(numbered), notes).items():
            entry = numbered[n]
            state, params = entry.get("state"), entry.get("params")
            if not isinstance(state, Mapping):
                raise CheckpointError(f"{label}: logtd fusers file: {group}[{n}]['state'] is "
                                      f"{type(state).__name__}, expected a state dict")
            if isinstance(params, Mapping) and isinstance(params.get("n_heads"), int):
                heads.add(params["n_heads"])
            for k, v in state.items():
                if not is_tensor(v):
                    continue
                suffix = k.split("fuser.", 1)[1] if "fuser." in k else k
                refs[f"{prefix}.transformer_blocks.0.fuser.{suffix}"] = v
    if heads and heads != {8}:
        notes.append(f"warning: logtd fusers declare n_heads {sorted(heads)}; the official SD1.5 fusers use 8")
    return refs, "logtd-fusers", notes


def _from_logtd_scaleu(tree: Mapping, label: str) -> tuple[dict, str, list[str]]:
    refs = {}
    for k, entry in sorted(_int_keys(tree).items()):
        for kind in ("b", "s"):
            v = entry.get(f"scaleu_{kind}")
            if is_tensor(v):
                refs[f"scaleu_{kind}_{k}"] = v
    return refs, "logtd-scaleu", [f"{label}: logtd ScaleU file ({len(tree)} blocks)"]


def _flat_tensors(sd: Mapping, label: str, notes: list[str]) -> dict[str, Any]:
    flat, skipped = {}, 0
    for k, v in sd.items():
        if not isinstance(k, str):
            skipped += 1
            continue
        if is_tensor(v):
            flat[strip_prefixes(k)] = v
        elif addon_group(strip_prefixes(k)) is not None:
            raise CheckpointError(f"{label}: '{cut_text(strip_prefixes(k), 120)}' is not a plain tensor in the file "
                                  f"({short_repr(v, 60)}); "
                                  f"unsupported tensor encoding or a tampered file")
        else:
            skipped += 1
    if skipped:
        notes.append(f"{label}: ignored {skipped} non-tensor entries")
    return flat


def prefix_bare_position_net(flat: Mapping[str, Any]) -> dict[str, Any] | None:
    """``flat`` under ``position_net.`` keys if it is a bare UniFusion state dict (logtd's position_net.ckpt keeps
    the position net without its prefix), else None."""
    keys = list(flat)
    if ("null_positive_feature" in keys and any(k.startswith("linears_list.") for k in keys)
            and all(k.startswith(_UNIFUSION_BARE) for k in keys)):
        return {POSITION_NET_PREFIX + k: v for k, v in flat.items()}
    return None


def select_addons(flat: Mapping[str, Any], label: str, notes: list[str]) -> dict[str, Any]:
    """The add-on keys of a flat state dict; CheckpointError for GLIGEN, diffusers, base models, unknown dicts."""
    keys = list(flat)
    posnet = [k[len(POSITION_NET_PREFIX):] for k in keys if k.startswith(POSITION_NET_PREFIX)]
    bare_gligen = "null_positive_feature" in keys and any(k.startswith("linears.") for k in keys)
    if bare_gligen or (any(k.startswith(_GLIGEN_POSNET) for k in posnet)
                       and not any(k.startswith("linears_list.") for k in posnet)):
        fusers = sum(1 for k in keys if ".fuser." in k)
        context = next((tuple(flat[k].shape) for k in keys if k.endswith(".fuser.linear.weight")), None)
        raise CheckpointError(
            f"{label}: this is a GLIGEN checkpoint, not InstanceDiffusion (its position net has "
            f"position_net.linears.* - GLIGEN naming - and no position_net.linears_list.*; {fusers} fuser tensors"
            + (f", fuser linear {list(context)}" if context else "") + ", no scaleu_*). Load it with ComfyUI's "
            f"GLIGENLoader. InstanceDiffusion weights come from {OFFICIAL_SOURCE_HINT}.")
    kept = {k: v for k, v in flat.items() if addon_group(k) is not None}
    bad_fuser = [k for k in keys if ".fuser." in k and k not in kept]
    if bad_fuser and not kept:
        if any(k.startswith(_DIFFUSERS_PREFIXES) for k in bad_fuser):
            raise CheckpointError(
                f"{label}: InstanceDiffusion-like weights in diffusers layout ({len(bad_fuser)} fuser tensors such "
                f"as '{bad_fuser[0]}'); only the CompVis/official key layout is read. Use {OFFICIAL_SOURCE_HINT}.")
    if bad_fuser:
        raise CheckpointError(f"{label}: {len(bad_fuser)} fuser tensors with unexpected names, e.g. "
                              f"{short_repr(bad_fuser[:3], 300)}; expected <block>.transformer_blocks.<j>.fuser.<one of "
                              f"{len(FUSER_SUFFIXES)} official suffixes>. The file is damaged or another model")
    if not kept:
        base = sum(1 for k in keys if k.startswith(_BASE_UNET_PREFIXES))
        full = sum(1 for k in keys if k.startswith(_FULL_MODEL_PREFIXES))
        diffusers = sum(1 for k in keys if k.startswith(_DIFFUSERS_PREFIXES))
        if base or full or diffusers:
            raise CheckpointError(
                f"{label}: this is a base Stable Diffusion model ({base} UNet tensors, {full} VAE/text-encoder "
                f"tensors, {diffusers} diffusers-layout tensors) with none of the InstanceDiffusion add-on weights "
                f"(0 position_net.*, 0 *.fuser.*, 0 scaleu_*; the official SD1.5 add-ons have 217 + 272 + 24). "
                f"Load it as the base model with the regular checkpoint loader; the add-on weights come from "
                f"{OFFICIAL_SOURCE_HINT}.")
        raise CheckpointError(f"{label}: {len(keys)} tensors but none of the InstanceDiffusion add-on weights "
                              f"(position_net.*, <block>.transformer_blocks.0.fuser.*, scaleu_b_k/scaleu_s_k); "
                              f"first keys {short_repr(keys[:5], 300)}. Expected {OFFICIAL_SOURCE_HINT}.")
    dropped = len(keys) - len(kept)
    if dropped:
        base = sum(1 for k in keys if k not in kept and k.startswith(_BASE_UNET_PREFIXES))
        other = dropped - base
        notes.append(f"{label}: dropped {base} base-UNet tensors (the add-ons work on any SD1.5 UNet)"
                     + (f" and {other} other tensors" if other else ""))
    return kept


def _from_official(tree: Mapping, label: str) -> tuple[dict, str, list[str]]:
    notes = []
    chosen, kept = None, None
    for entry in ("ema", "model"):
        sd = tree.get(entry)
        if not isinstance(sd, Mapping):
            continue
        flat = _flat_tensors(sd, f"{label} [{entry}]", [])
        if any(addon_group(k) is not None for k in flat) or entry == "model" or "model" not in tree:
            entry_notes: list[str] = []
            kept = select_addons(flat, f"{label} [{entry}]", entry_notes)
            chosen = entry
            notes.extend(entry_notes)
            break
        notes.append(f"warning: {label}: 'ema' holds no add-on weights; using 'model'")
    why = ("EMA weights, as the official loader prefers" if chosen == "ema"
           else "'ema' has no add-on weights" if "ema" in tree else "no EMA copy in the file")
    notes.insert(0, f"{label}: official InstanceDiffusion training checkpoint; using '{chosen}' ({why})")
    dropped = []
    for name, value in tree.items():
        if name == chosen:
            continue
        n, values = _count_tensors(value)
        shown = cut_text(name, 80) if isinstance(name, str) else short_repr(name, 80)
        dropped.append(f"{shown} ({_fmt_count(n, values)})" if n else shown)
    if dropped:
        notes.append(f"{label}: dropped entries, never read: {', '.join(dropped)}")
    return kept, "official-pth", notes


def extract_addons(tree, label: str) -> tuple[dict, str, list[str]]:
    """(official add-on key -> value, source format, notes) from an unpickled checkpoint or a state dict."""
    if not isinstance(tree, Mapping):
        raise CheckpointError(f"{label}: the checkpoint holds a {type(tree).__name__}"
                              f"{' (' + tree._global + ')' if isinstance(tree, Inert) else ''}, expected a dict "
                              f"of tensors")
    if _looks_logtd_fusers(tree):
        refs, fmt, notes = _from_logtd_fusers(tree, label)
        return select_addons(refs, label, notes), fmt, notes
    if _looks_logtd_scaleu(tree):
        refs, fmt, notes = _from_logtd_scaleu(tree, label)
        return select_addons(refs, label, notes), fmt, notes
    if _looks_official(tree):
        return _from_official(tree, label)
    notes: list[str] = []
    fmt = "state-dict"
    if isinstance(tree.get("state_dict"), Mapping):
        notes.append(f"{label}: read the 'state_dict' entry")
        tree = tree["state_dict"]
    flat = _flat_tensors(tree, label, notes)
    if not flat:
        raise CheckpointError(f"{label}: no tensors found (top-level keys {short_repr(list(tree)[:8], 300)}); expected "
                              f"{OFFICIAL_SOURCE_HINT} or our .safetensors")
    bare = prefix_bare_position_net(flat)
    if bare is not None:
        flat, fmt = bare, "logtd-position-net"
        notes.append(f"{label}: logtd position-net file (UniFusion state dict without prefix)")
    return select_addons(flat, label, notes), fmt, notes
