"""Which official test configuration (modality drop flags) to use for a layout.

The position net drops modalities per configuration, not per instance (spec 1.3.1): a kept modality that an
instance lacks is encoded as Fourier(0), not as the learned null. The ``auto`` rule picks the official config
that keeps exactly what the layout uses, preferring the configs the authors ship for that input type:

- any scribble            -> ``scribble`` (keeps everything)
- else any mask           -> ``mask``     (drops scribbles)
- else no instance has a box (point-only layouts) -> ``point`` (drops boxes and scribbles and masks)
- else                    -> ``box``      (drops scribbles and masks; points are kept)
"""
from __future__ import annotations

CONFIG_NAMES = ("box", "mask", "point", "scribble")


def auto_drop_config(modalities_per_instance: list[set[str]]) -> str:
    """``modalities_per_instance``: for each instance, a subset of {"box", "point", "scribble", "mask"}."""
    used = set().union(*modalities_per_instance) if modalities_per_instance else set()
    if "scribble" in used:
        return "scribble"
    if "mask" in used:
        return "mask"
    if modalities_per_instance and not any("box" in m for m in modalities_per_instance):
        return "point"
    return "box"


def resolve_drop_config(choice: str, modalities_per_instance: list[set[str]]) -> str:
    if choice == "auto":
        return auto_drop_config(modalities_per_instance)
    if choice not in CONFIG_NAMES:
        raise ValueError(f"unknown modality configuration {choice!r}; use one of auto, {', '.join(CONFIG_NAMES)}")
    return choice
