"""Groups of official add-on keys (names in ``model.keys``): which group a key is in, counts, completeness."""
from __future__ import annotations

import collections
import math
from typing import Mapping, Sequence

from ..model.keys import (CONVNEXT_PREFIX, FUSER_KEY, FUSER_SUFFIXES, GROUPS, POSITION_NET_PREFIX, POSNET_CORE,
                          SCALEU_KEY, SD15_FUSER_BLOCKS)
from .errors import CheckpointError

_STRIP_PREFIXES = ("module.", "model.diffusion_model.", "diffusion_model.")


def strip_prefixes(key: str) -> str:
    """Drop the wrapper prefixes (``module.``, ``model.diffusion_model.``, ...) training code puts before keys."""
    start, changed = 0, True
    while changed:                     # an index, not repeated slicing: a key of a million prefixes stays linear
        changed = False
        for p in _STRIP_PREFIXES:
            if key.startswith(p, start):
                start, changed = start + len(p), True
    return key[start:] if start else key


def addon_group(key: str) -> str | None:
    """``"position_net"``, ``"fusers"`` or ``"scaleu"`` for an official add-on key, else None."""
    if key.startswith(POSITION_NET_PREFIX):
        return "position_net"
    m = FUSER_KEY.match(key)
    if m is not None and m["suffix"] in FUSER_SUFFIXES:
        return "fusers"
    if SCALEU_KEY.match(key):
        return "scaleu"
    return None


def group_counts(shapes: Mapping[str, Sequence[int]]) -> dict:
    """Per group: tensors, parameters and (fusers) blocks / (scaleu) blocks, from ``{key: shape}``."""
    out = {g: {"tensors": 0, "params": 0} for g in GROUPS}
    fuser_blocks, scaleu_blocks = set(), set()
    for key, shape in shapes.items():
        group = addon_group(key)
        if group is None:
            continue
        out[group]["tensors"] += 1
        out[group]["params"] += math.prod(int(s) for s in shape)
        if group == "fusers":
            fuser_blocks.add(key.split(".fuser.")[0])
        elif group == "scaleu":
            scaleu_blocks.add(int(SCALEU_KEY.match(key)["k"]))
    out["fusers"]["blocks"] = len(fuser_blocks)
    out["scaleu"]["blocks"] = len(scaleu_blocks)
    return out


def validate_groups(shapes: Mapping[str, tuple]) -> list[str]:
    """Raise for damaged groups (incomplete fuser/ScaleU block, position net without core tensors); notes.

    A missing group is only noted (split files are read one at a time); a half-present group means damage.
    """
    notes = []
    fusers: dict[str, set] = collections.defaultdict(set)
    scaleu: dict[int, set] = collections.defaultdict(set)
    posnet = set()
    for key in shapes:
        group = addon_group(key)
        if group == "fusers":
            block, suffix = key.split(".fuser.")
            fusers[block].add(suffix)
        elif group == "scaleu":
            m = SCALEU_KEY.match(key)
            scaleu[int(m["k"])].add(m["kind"])
        elif group == "position_net":
            posnet.add(key[len(POSITION_NET_PREFIX):])
    for block, suffixes in sorted(fusers.items()):
        missing = [s for s in FUSER_SUFFIXES if s not in suffixes]
        if missing:
            raise CheckpointError(f"fuser '{block}' has {len(suffixes)} of its {len(FUSER_SUFFIXES)} tensors "
                                  f"(missing {missing[:5]}{' ...' if len(missing) > 5 else ''}); the file is "
                                  f"damaged or only partly converted")
    for k, kinds in sorted(scaleu.items()):
        if kinds != {"b", "s"}:
            missing = "scaleu_s" if "s" not in kinds else "scaleu_b"
            raise CheckpointError(f"ScaleU block {k}: '{missing}_{k}' is missing (each block needs scaleu_b_{k} "
                                  f"and scaleu_s_{k}); the file is damaged")
    if posnet:
        missing = [k for k in POSNET_CORE if k not in posnet]
        if not any(k.startswith(CONVNEXT_PREFIX) for k in posnet):
            missing.append(CONVNEXT_PREFIX + "*")
        if missing:
            raise CheckpointError(f"the position net is incomplete: {len(posnet)} tensors, missing "
                                  f"{len(missing)} required ones such as "
                                  f"{[POSITION_NET_PREFIX + m for m in missing[:4]]}; the file is damaged or not an "
                                  f"InstanceDiffusion position net")
    counts = group_counts(shapes)
    if not posnet:
        notes.append("warning: no position net (position_net.*): the fusers get no instance tokens from this file; "
                     "add position_net.ckpt or use the official file")
    if not fusers:
        notes.append("warning: no fusers (*.fuser.*): grounding will not reach the UNet; add fusers.ckpt or use the "
                     "official file")
    if not scaleu:
        notes.append("warning: no ScaleU weights (scaleu_b_k/scaleu_s_k): ScaleU will be the identity")
    got_blocks = {b.rsplit(".transformer_blocks.", 1)[0] for b in fusers}
    if fusers and got_blocks != set(SD15_FUSER_BLOCKS):
        notes.append(f"note: {len(got_blocks)} fuser blocks; the official SD1.5 add-ons have 16")
    if scaleu and set(scaleu) != set(range(12)):
        notes.append(f"note: ScaleU blocks {sorted(scaleu)}; the official SD1.5 add-ons have 0..11")
    notes.append("kept: " + ", ".join(
        f"{name} {counts[g]['tensors']} tensors ({counts[g]['params']:,} params"
        + (f", {counts[g]['blocks']} blocks" if g != "position_net" else "") + ")"
        for g, name in (("position_net", "position net"), ("fusers", "fusers"), ("scaleu", "ScaleU"))))
    return notes
