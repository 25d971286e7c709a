"""Helpers for the official parity fixtures (tests/fixtures/parity-public/README.md explains the files).

The directory comes from env ``INSTDIFF_PARITY_DIR`` when set (e.g. a private fixture set with the same
layout), else the public set shipped in the repo.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

ENV_VAR = "INSTDIFF_PARITY_DIR"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "parity-public"


def parity_dir() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def available(pdir=None) -> bool:
    pdir = Path(pdir or parity_dir())
    return all((pdir / name).is_file() for name in ("meta.json", "keys.json", "inputs.safetensors",
                                                     "expected.safetensors"))


@functools.lru_cache(maxsize=4)
def _meta(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@functools.lru_cache(maxsize=8)
def _tensors(path: str) -> dict[str, torch.Tensor]:
    return load_file(path)


def load_meta(pdir=None) -> dict:
    return _meta(str(Path(pdir or parity_dir()) / "meta.json"))


def load_inputs(pdir=None) -> dict[str, torch.Tensor]:
    """inputs.safetensors as a fresh dict (tensors shared with a cache: do not modify them in place)."""
    return dict(_tensors(str(Path(pdir or parity_dir()) / "inputs.safetensors")))


def load_expected(pdir=None) -> dict[str, torch.Tensor]:
    return dict(_tensors(str(Path(pdir or parity_dir()) / "expected.safetensors")))


def drop_config(meta: dict, name: str) -> dict[str, bool]:
    """``{"boxes", "points", "scribbles", "masks"}`` flags of config ``name`` (meta's ``test_drop_*`` entries)."""
    return {k[len("test_drop_"):]: bool(v) for k, v in meta["configs"][name].items()}


GROUNDING_NAMES = ("boxes", "masks", "positive_embeddings", "points", "scribbles", "polygons")


def grounding_from_inputs(inputs: dict[str, torch.Tensor], batch_index: int | None = None) -> dict[str, torch.Tensor]:
    """The position-net input dict from ``grounding.*`` inputs, with dense ``segs`` rebuilt as the README says:
    ``segs = zeros(B, 30, H, W); segs[0, seg_slots[k]] = seg_masks[k]``.

    ``batch_index`` None keeps the whole batch; an int keeps that element only (batch 1).
    """
    g = {name: inputs[f"grounding.{name}"] for name in GROUNDING_NAMES}
    masks, slots = inputs["grounding.seg_masks"], inputs["grounding.seg_slots"]
    b, n = g["masks"].shape
    segs = torch.zeros(b, n, *masks.shape[-2:], dtype=torch.float32)
    for mask, slot in zip(masks, slots.tolist()):
        segs[0, int(slot)] = mask
    g["segs"] = segs
    if batch_index is not None:
        g = {k: v[batch_index:batch_index + 1].clone() for k, v in g.items()}
    return g


def max_abs_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    if tuple(got.shape) != tuple(expected.shape):
        raise AssertionError(f"shape {list(got.shape)} != expected {list(expected.shape)}")
    return (got.detach().double() - expected.double()).abs().max().item() if got.numel() else 0.0


def report(name: str, err: float, tol: float) -> None:
    """Print the observed error (run pytest with -s or -rA to see it)."""
    status = "ok" if err <= tol else "FAIL"
    print(f"[parity] {name}: max abs err {err:.3e} (tol {tol:.0e}) {status}")


def numpy_inputs_and_scenario(pdir=None):
    """``(inputs as numpy arrays, scenario.json)`` of a parity set; skips the calling test when the set is missing."""
    import pytest
    from safetensors.numpy import load_file as load_numpy

    pdir = Path(pdir or parity_dir())
    if not (pdir / "inputs.safetensors").is_file():
        pytest.skip(f"parity fixture not found: {pdir / 'inputs.safetensors'}")
    with open(pdir / "scenario.json") as f:
        return load_numpy(str(pdir / "inputs.safetensors")), json.load(f)
