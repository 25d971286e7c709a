"""COCO run-length masks without pycocotools, plus polygon rasterisation.

COCO stores a mask ``[h, w]`` as alternating run lengths of 0s and 1s (starting with 0s) over the pixels in
column-major order. ``counts`` is either a plain list of ints ("uncompressed") or a string: each run is written as
base-64-like characters (offset 48, 5 data bits each, bit 0x20 = "more follows", sign-extended from bit 0x10), and
from the fourth run on (index > 2, as in the C code) only the difference to the run two places back is
stored.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw


class RLEError(ValueError):
    """A COCO mask could not be read; the message says which part is wrong."""


# One run length in a counts string: 5 bits per character, so 8 characters hold 40 bits, far more than any
# canvas has pixels. Without a bound, one number of n continuation characters costs O(n^2) big-integer work.
MAX_RUN_CHARS = 8


def _brief(value: Any, limit: int = 60) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<integer of {value.bit_length()} bits>"
    if isinstance(value, (list, tuple)) and len(value) > 12:
        value = type(value)(value[:12])
        text = repr(value)[:-1] + ", ...]"
    else:
        try:
            text = repr(value)
        except ValueError:                 # e.g. an integer too long to print
            text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def decode_counts_string(text: str | bytes) -> list[int]:
    """Compressed COCO ``counts`` string -> run lengths."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as e:
            raise RLEError(f"counts string has a non-ASCII byte at position {e.start}") from None
    counts: list[int] = []
    p, n = 0, len(text)
    while p < n:
        value, shift, more = 0, 0, True
        while more:
            if p >= n:
                raise RLEError(f"counts string ends inside a number (at character {p}); the string is truncated")
            if shift >= MAX_RUN_CHARS:
                raise RLEError(f"counts string has a run length of more than {MAX_RUN_CHARS} characters (at "
                               f"character {p}); no mask has runs that long, the counts are corrupt")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise RLEError(f"counts string has an invalid character {text[p]!r} at position {p}")
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            p += 1
            shift += 1
            if not more and (c & 0x10):
                value -= 1 << (5 * shift)  # sign-extend
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def encode_counts_string(counts: list[int]) -> str:
    """Run lengths -> compressed COCO ``counts`` string (inverse of ``decode_counts_string``)."""
    out = []
    for i, run in enumerate(counts):
        x = int(run) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as in the C code
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def runs_to_mask(counts: list[int], height: int, width: int) -> np.ndarray:
    """Run lengths (0s first, column-major) -> bool mask ``[height, width]``."""
    counts = [int(c) for c in counts]
    if any(c < 0 for c in counts):
        raise RLEError(f"counts has a negative run length ({_brief(min(counts))}); the mask data is corrupt")
    total = sum(counts)
    if total != height * width:
        raise RLEError(f"counts cover {_brief(total)} pixels but size [{height}, {width}] has {height * width}; the size "
                       f"or the counts are wrong (size is [height, width])")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((width, height)).T.copy()


def mask_to_runs(mask: np.ndarray) -> list[int]:
    """Bool mask ``[h, w]`` -> run lengths (0s first, column-major)."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return runs


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE ``{"size": [h, w], "counts": str | list}`` -> bool mask ``[h, w]``."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        got = sorted(rle) if isinstance(rle, dict) else type(rle).__name__
        raise RLEError(f"an RLE mask needs the keys 'size' and 'counts', got {got}")
    size = rle["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise RLEError(f"RLE 'size' must be [height, width] as two positive integers, got {_brief(size)}")
    h, w = size
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        runs = decode_counts_string(counts)
    elif isinstance(counts, (list, tuple)):
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            raise RLEError("RLE 'counts' list must hold integers (uncompressed COCO RLE)")
        runs = list(counts)
    else:
        raise RLEError(f"RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}")
    return runs_to_mask(runs, h, w)


def encode_rle(mask: np.ndarray) -> dict:
    """Bool mask ``[h, w]`` -> compressed COCO RLE ``{"size": [h, w], "counts": str}``."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise RLEError(f"encode_rle needs a 2-D mask, got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": encode_counts_string(mask_to_runs(mask))}


MAX_COORDINATE = float(1 << 20)    # polygon vertices: far beyond any canvas, still exact for the rasteriser


def _coordinate(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if isinstance(v, int):
        return abs(v) <= MAX_COORDINATE
    return bool(np.isfinite(v)) and abs(v) <= MAX_COORDINATE


def rasterize_polygons(polygons: Any, height: int, width: int) -> np.ndarray:
    """COCO polygon list ``[[x1, y1, x2, y2, ...], ...]`` (pixels) -> bool mask ``[height, width]`` (union of parts,
    filled with PIL, edges included)."""
    if not isinstance(polygons, (list, tuple)):
        raise RLEError(f"a polygon mask must be a list of [x1, y1, x2, y2, ...] lists, got {type(polygons).__name__}")
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for j, poly in enumerate(polygons):
        if (not isinstance(poly, (list, tuple)) or len(poly) < 6 or len(poly) % 2
                or not all(_coordinate(v) for v in poly)):
            raise RLEError(f"polygon {j} must be a flat list of at least 3 (x, y) pairs of finite numbers within "
                           f"+-{MAX_COORDINATE:g} px [x1, y1, x2, y2, x3, y3, ...], got {_brief(poly)}")
        pts = [(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly), 2)]
        draw.polygon(pts, fill=1, outline=1)
    return np.asarray(canvas, dtype=np.uint8) > 0
