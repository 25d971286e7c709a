"""The parity fixtures' weight recipe (fixture README section 1), vectorised with numpy uint64 arithmetic.

Every value of tensor ``t`` (its position in ``keys.json``) at flat index ``i`` is a pure function of
``splitmix64(seed ^ (t << 32) ^ i)``, so any subset of the 1199 official tensors can be generated on its own.
Huge tensors are produced in chunks so the uint64 temporaries stay small (~100 MB peak on top of the result).
"""
from __future__ import annotations

import functools
import json
import math
import os
from typing import Callable

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
CHUNK = 1 << 22   # values per chunk: 4M x 8 bytes = 32 MB per uint64 temporary


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 output for each uint64 state in ``x`` (wrap-around arithmetic; ``x`` is not modified)."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    z ^= z >> np.uint64(30)
    z *= _MUL1
    z ^= z >> np.uint64(27)
    z *= _MUL2
    z ^= z >> np.uint64(31)
    return z


def recipe_values(t: int, seed: int, start: int, stop: int, offset: float, scale: float) -> np.ndarray:
    """float32 values of tensor ``t`` at flat indices ``start..stop-1``."""
    base = np.uint64(seed) ^ (np.uint64(t) << np.uint64(32))
    i = np.arange(start, stop, dtype=np.uint64)
    i ^= base
    h = splitmix64(i)
    h >>= np.uint64(40)
    u = h.astype(np.float64) / float(1 << 24)          # exact: 24-bit integers / 2**24
    w = 2.0 * u - 1.0                                  # exact in float64
    return (float(offset) + float(scale) * w).astype(np.float32)   # round to nearest float32


def recipe_tensor(entry: dict, t: int, seed: int) -> torch.Tensor:
    """The float32 tensor of keys.json ``entry`` (``{key, shape, offset, scale}``) at list position ``t``."""
    shape = tuple(int(s) for s in entry["shape"])
    n = math.prod(shape)
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        out[start:stop] = recipe_values(t, seed, start, stop, entry["offset"], entry["scale"])
    return torch.from_numpy(out.reshape(shape))


@functools.lru_cache(maxsize=4)
def _read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def recipe_entries(parity_dir) -> list[dict]:
    """keys.json: one ``{key, shape, offset, scale}`` per tensor, in tensor-number order."""
    return _read_json(os.path.join(os.fspath(parity_dir), "keys.json"))


def recipe_seed(parity_dir) -> int:
    return int(_read_json(os.path.join(os.fspath(parity_dir), "meta.json"))["seed"])


def recipe_state_dict(parity_dir, select: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """``{key: tensor}`` for every keys.json entry whose key passes ``select`` (all when None), in file order."""
    seed = recipe_seed(parity_dir)
    return {e["key"]: recipe_tensor(e, t, seed)
            for t, e in enumerate(recipe_entries(parity_dir)) if select is None or select(e["key"])}
