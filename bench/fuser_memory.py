"""Peak memory of ONE full-size fuser forward vs the attn1 of the same block (CPU float32, or CUDA fp16/fp32).

Why: the official fuser attends over (Nv + 184) tokens; a naive implementation materialises B*H*(Nv+184)^2
scores (17.6 GB at 1024 px). Ours must stay in the same class as the UNet's own attn1.

Method: every measurement runs in a fresh subprocess. The child builds the module and inputs, resets the
kernel's peak-RSS counter (``/proc/self/clear_refs`` <- 5), runs one forward under ``no_grad`` and reports
``VmHWM - VmRSS(before)``: the true peak of extra resident memory (weights and inputs excluded). glibc's dynamic
mmap threshold is pinned (``MALLOC_MMAP_THRESHOLD_``) so large buffers are real mmaps returned on free, not
recycled heap pages that would hide growth. Linux only.

On CUDA (``--device cuda``, default dtype fp16) everything runs in this process: ``torch.cuda.max_memory_allocated``
after ``reset_peak_memory_stats`` minus the memory held before the forward (weights and inputs excluded), and the
forward's time between ``torch.cuda.synchronize`` calls (median of ``--repeats``, after a warm-up).

    python bench/fuser_memory.py            # block width 320, 8 heads, batch 2, 512/768/1024 px, CPU float32
    python bench/fuser_memory.py --device cuda --dtype fp16
    python bench/fuser_memory.py --sizes 64,128     # a quick dry run
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

WIDTH, HEADS, BATCH, TOKENS, TOKEN_DIM = 320, 8, 2, 184, 768
IMAGE_SIZES = (512, 768, 1024)          # latent /8, first block keeps the latent grid: 64, 96, 128


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def build(kind: str, side: int, device="cpu", dtype=None):
    """(run, x) for one forward of ``kind`` (fuser / attn1 / ff) at latent side ``side``."""
    import torch
    from torch import nn

    from instancediffusion_core.model.fuser import Fuser, sdpa_attention

    dtype = dtype or torch.float32
    torch.manual_seed(0)
    nv = side * side
    x = torch.randn(BATCH, nv, WIDTH).to(device=device, dtype=dtype)
    if kind == "fuser":
        module = Fuser(WIDTH, TOKEN_DIM, HEADS).eval()
        with torch.no_grad():
            module.alpha_attn.fill_(0.5)
            module.alpha_dense.fill_(0.5)
        module.to(device=device, dtype=dtype)
        objs = torch.randn(BATCH, TOKENS, TOKEN_DIM).to(device=device, dtype=dtype)
        run = lambda: module(x, objs)  # noqa: E731
    elif kind == "ff":  # the block's own GEGLU feed-forward (LN, C -> 8C, gate, 4C -> C), plus the residual
        from instancediffusion_core.model.fuser import GEGLUFeedForward

        norm = nn.LayerNorm(WIDTH).to(device=device, dtype=dtype)
        ff = GEGLUFeedForward(WIDTH).to(device=device, dtype=dtype)
        run = lambda: x + ff(norm(x))  # noqa: E731
    else:  # attn1: LN + q/k/v/out projections + SDPA over the Nv visual tokens, plus the residual
        norm = nn.LayerNorm(WIDTH).to(device=device, dtype=dtype)
        q, k, v = (nn.Linear(WIDTH, WIDTH, bias=False).to(device=device, dtype=dtype) for _ in range(3))
        out = nn.Linear(WIDTH, WIDTH).to(device=device, dtype=dtype)

        def run():
            z = norm(x)
            return x + out(sdpa_attention(q(z), k(z), v(z), HEADS))
    return run, x


def measure_cuda(kind: str, side: int, device, dtype, repeats: int = 5) -> dict:
    import torch

    run, x = build(kind, side, device, dtype)
    with torch.no_grad():
        run()                                            # warm-up (kernel selection, workspaces)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        y = run()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del y
        times = []
        for _ in range(repeats):
            torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            run()
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
    return {"kind": kind, "side": side, "peak_mib": peak / 2 ** 20, "seconds": statistics.median(times)}


def child(kind: str, side: int) -> dict:
    import torch

    run, x = build(kind, side)
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=2, metavar=("KIND", "SIDE"), help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help="cpu (subprocess RSS) or cuda[:i] (allocator peak)")
    ap.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None, help="cuda only (default fp16)")
    ap.add_argument("--sizes", default=",".join(map(str, IMAGE_SIZES)), help="image sides in px (latent = side / 8)")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    if args.device.startswith("cuda"):
        import torch

        device = torch.device(args.device)
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype or "fp16"]
        measure_on = lambda kind, side: measure_cuda(kind, side, device, dtype)  # noqa: E731
        where = f"{torch.cuda.get_device_name(device)}, {dtype}; allocator peak of one forward"
        elem = torch.finfo(dtype).bits // 8
    else:
        measure_on = measure
        where = "float32, CPU; peak extra RSS of one forward"
        elem = 4
    print(f"fuser width {WIDTH}, {HEADS} heads, batch {BATCH}, {TOKENS} grounding tokens, {where} "
          f"(weights and inputs excluded)")
    header = (f"{'image':>6} {'grid':>8} {'Nv':>6} | {'fuser MiB':>9} {'attn1 MiB':>9} {'ratio':>5} "
              f"{'ff MiB':>7} | {'fuser s':>7} {'attn1 s':>7} | {'naive (Nv+184)^2':>21}")
    print(header)
    print("-" * len(header))
    for image in sizes:
        side = image // 8
        nv = side * side
        fuser, attn1, ff = measure_on("fuser", side), measure_on("attn1", side), measure_on("ff", side)
        naive_gib = BATCH * HEADS * (nv + TOKENS) ** 2 * elem / 2 ** 30
        print(f"{image:>6} {f'{side}x{side}':>8} {nv:>6} | {fuser['peak_mib']:>9.1f} {attn1['peak_mib']:>9.1f} "
              f"{fuser['peak_mib'] / attn1['peak_mib']:>5.2f} {ff['peak_mib']:>7.1f} | "
              f"{fuser['seconds']:>7.2f} {attn1['seconds']:>7.2f} | "
              f"{naive_gib:>17.2f} GiB")
    print("ff = the transformer block's own GEGLU feed-forward at the same width, for scale: the fuser is one "
          "attention\nover Nv+184 tokens plus one such feed-forward, with no (Nv+184)^2 term. naive = the score "
          "matrix a full\n(Nv+184)^2 self-attention would hold in this dtype.")


if __name__ == "__main__":
    main()
