"""Relative timing for tests that compare two sizes in one run (never absolute timing asserts)."""
from __future__ import annotations

import time


def per_call_seconds(fn, min_total=0.05):
    """Seconds per call of ``fn``, repeated until ``min_total`` has passed; the best of 3 such batches."""
    best = None
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_total:
                break
        best = elapsed / n if best is None else min(best, elapsed / n)
    return best
