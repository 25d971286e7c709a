"""Peak memory of ONE full-size fuser forward vs the attn1 of the same block, CPU float32.

Why: the official fuser attends over (Nv + 184) tokens; a naive implementation materialises B*H*(Nv+184)^2
scores (17.6 GB at 1024 px). Ours must stay in the same class as the UNet's own attn1.

Method: every measurement runs in a fresh subprocess. The child builds the module and inputs, resets the
kernel's peak-RSS counter (``/proc/self/clear_refs`` <- 5), runs one forward under ``no_grad`` and reports
``VmHWM - VmRSS(before)``: the true peak of extra resident memory (weights and inputs excluded). glibc's dynamic
mmap threshold is pinned (``MALLOC_MMAP_THRESHOLD_``) so large buffers are real mmaps returned on free, not
recycled heap pages that would hide growth. Linux only.

    python bench/fuser_memory.py            # block width 320, 8 heads, batch 2, 512/768/1024 px
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

WIDTH, HEADS, BATCH, TOKENS, TOKEN_DIM = 320, 8, 2, 184, 768
IMAGE_SIZES = (512, 768, 1024)          # latent /8, first block keeps the latent grid: 64, 96, 128


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def child(kind: str, side: int) -> dict:
    import torch
    from torch import nn

    from instancediffusion_core.model.fuser import Fuser, sdpa_attention

    torch.manual_seed(0)
    nv = side * side
    x = torch.randn(BATCH, nv, WIDTH)
    if kind == "fuser":
        module = Fuser(WIDTH, TOKEN_DIM, HEADS).eval()
        with torch.no_grad():
            module.alpha_attn.fill_(0.5)
            module.alpha_dense.fill_(0.5)
        objs = torch.randn(BATCH, TOKENS, TOKEN_DIM)
        run = lambda: module(x, objs)  # noqa: E731
    elif kind == "ff":  # the block's own GEGLU feed-forward (LN, C -> 8C, gate, 4C -> C), plus the residual
        from instancediffusion_core.model.fuser import GEGLUFeedForward

        norm, ff = nn.LayerNorm(WIDTH), GEGLUFeedForward(WIDTH)
        run = lambda: x + ff(norm(x))  # noqa: E731
    else:  # attn1: LN + q/k/v/out projections + SDPA over the Nv visual tokens, plus the residual
        norm = nn.LayerNorm(WIDTH)
        q, k, v = (nn.Linear(WIDTH, WIDTH, bias=False) for _ in range(3))
        out = nn.Linear(WIDTH, WIDTH)

        def run():
            z = norm(x)
            return x + out(sdpa_attention(q(z), k(z), v(z), HEADS))
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")
    t0 = time.perf_counter()
    with torch.no_grad():
        y = run()
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    assert y.shape == x.shape
    return {"kind": kind, "side": side, "peak_mib": (peak - before) / 1024, "seconds": seconds}


def measure(kind: str, side: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind, str(side)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=2, metavar=("KIND", "SIDE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    print(f"fuser width {WIDTH}, {HEADS} heads, batch {BATCH}, {TOKENS} grounding tokens, float32, CPU; "
          f"peak extra RSS of one forward (weights and inputs excluded)")
    header = (f"{'image':>6} {'grid':>8} {'Nv':>6} | {'fuser MiB':>9} {'attn1 MiB':>9} {'ratio':>5} "
              f"{'ff MiB':>7} | {'fuser s':>7} {'attn1 s':>7} | {'naive (Nv+184)^2 fp32':>21}")
    print(header)
    print("-" * len(header))
    for image in IMAGE_SIZES:
        side = image // 8
        nv = side * side
        fuser, attn1, ff = measure("fuser", side), measure("attn1", side), measure("ff", side)
        naive_gib = BATCH * HEADS * (nv + TOKENS) ** 2 * 4 / 2 ** 30
        print(f"{image:>6} {f'{side}x{side}':>8} {nv:>6} | {fuser['peak_mib']:>9.1f} {attn1['peak_mib']:>9.1f} "
              f"{fuser['peak_mib'] / attn1['peak_mib']:>5.2f} {ff['peak_mib']:>7.1f} | "
              f"{fuser['seconds']:>7.2f} {attn1['seconds']:>7.2f} | "
              f"{naive_gib:>17.2f} GiB")
    print("ff = the transformer block's own GEGLU feed-forward at the same width, for scale: the fuser is one "
          "attention\nover Nv+184 tokens plus one such feed-forward, with no (Nv+184)^2 term.")


if __name__ == "__main__":
    main()
