"""Cost of the multi-instance sampler vs a plain KSampler, measured in one run, beside the theory.

For n = 1, 4, 8 instances: wall time of InstanceDiffusion KSampler (phase 1 batched with max_batch=n+1, and
sequential with max_batch=1) divided by the plain KSampler's, next to the UNet-evaluation ratio
((n+1)*m + (S-m)) / S. Then the official PLMS sampler: CFG evaluations counted in the run next to the official
count (n+1)(m+1) + (S-m) (each input pays the 2-evaluation first step; phase 2 continues the global history),
and the wall-time ratio to a plain PLMS run (S + 1 evaluations). Uses the full SD1.5 topology at reduced width (model_channels 64, random weights) on a
32x32 latent so UNet time dominates; CPU.

COMFYUI_PATH=/path/to/ComfyUI python bench/mis_cost.py [--steps 10] [--mis 0.36] [--channels 64] [--latent 32]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from instdiff_testkit.host_session import load_pack


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--mis", type=float, default=0.36)
    ap.add_argument("--channels", type=int, default=64, help="UNet model_channels (SD1.5 is 320)")
    ap.add_argument("--latent", type=int, default=32, help="latent side (image side / 8)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per variant (median)")
    args = ap.parse_args(argv)

    host, pack = load_pack()
    if host is None:
        print(pack)
        return 2

    from instdiff_testkit import tiny_models
    from instdiff_testkit.host_fixtures import StubClip, box_layout, instdiff_for, sample

    core = pack.instancediffusion_core
    unet = tiny_models.tiny_sd15_patcher(model_channels=args.channels)
    instdiff = instdiff_for(core, unet)
    nodes = {k: c() for k, c in pack.NODE_CLASS_MAPPINGS.items()}
    (model,) = nodes["ApplyUniFusion"].apply(unet, instdiff, 1.0, 0.0, 0.8)
    (model,) = nodes["ApplyScaleU"].apply(model, instdiff)
    mis_ksample = pack.nodes.mis.mis_ksample
    side = args.latent * 8
    latent = torch.zeros(1, 4, args.latent, args.latent)
    clip = StubClip()
    S, m = args.steps, core.sampling.schedule.mis_steps(args.steps, args.mis)
    print(f"ComfyUI {host['version']}; UNet SD1.5 topology at {args.channels} channels, latent {args.latent}x"
          f"{args.latent}, {S} euler steps, mis {args.mis} -> m = {m}, cfg 7.5 (cond+uncond), CPU "
          f"{torch.get_num_threads()} threads")

    def timed(fn):
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return sorted(times)[len(times) // 2]

    print(f"{'n':>3} {'theory':>8} {'batched':>8} {'sequential':>10}   (wall time ratio MIS / plain KSampler)")
    runs = []
    for n in (1, 4, 8):
        boxes = [(side * (i % 4) / 4, side * (i // 4) / 2, side * (i % 4 + 1) / 4, side * (i // 4 + 1) / 2)
                 for i in range(n)]
        layout = box_layout(core, boxes, width=side, height=side, captions=[f"object {i}" for i in range(n)])
        (pos,) = nodes["InstanceDiffusionConditioning"].encode(clip.encode("a scene"), clip, layout, instdiff, "auto")
        neg = clip.encode("")
        pos[0][1]["instance_diffusion"].single_instance_tokens()      # once per prompt, not part of sampling
        plain = timed(lambda: sample(model, pos, neg, latent, steps=S, cfg=7.5))
        batched = timed(lambda: mis_ksample(model, 0, S, 7.5, "euler", "normal", pos, neg, {"samples": latent},
                                            1.0, args.mis, "mean", n + 1))
        sequential = timed(lambda: mis_ksample(model, 0, S, 7.5, "euler", "normal", pos, neg, {"samples": latent},
                                               1.0, args.mis, "mean", 1))
        theory = ((n + 1) * m + (S - m)) / S
        print(f"{n:>3} {theory:8.2f} {batched / plain:8.2f} {sequential / plain:10.2f}"
              f"   (plain {plain:.2f} s, batched {batched:.2f} s, sequential {sequential:.2f} s)")
        runs.append((n, pos, neg))

    plms = pack.nodes.plms
    counted = model.clone()
    rows = {"n": 0}

    def count(apply, args_):
        rows["n"] += int(args_["input"].shape[0])
        return apply(args_["input"], args_["timestep"], **args_["c"])
    counted.set_model_unet_function_wrapper(count)

    def evaluations(fn):
        rows["n"] = 0
        fn()
        return rows["n"] / (2 * latent.shape[0])          # cond + uncond rows per CFG evaluation

    print(f"\nofficial PLMS + official schedule, {S} steps, m = {m}:")
    print(f"{'n':>3} {'CFG evals':>9} {'official':>9} {'time ratio':>10} {'eval ratio':>10}   (vs plain PLMS)")
    for n, pos, neg in runs:
        def run(mis, model_=model):
            return mis_ksample(model_, 0, S, 7.5, plms.PLMS_NAME, plms.OFFICIAL_SCHEDULER, pos, neg,
                               {"samples": latent}, 1.0, mis, "mean", n + 1)
        plain_evals, mis_evals = evaluations(lambda: run(0.0, counted)), evaluations(lambda: run(args.mis, counted))
        official = core.sampling.plms.cfg_evaluations(S, m, n)
        assert plain_evals == core.sampling.plms.cfg_evaluations(S, 0, n)
        plain_t, mis_t = timed(lambda: run(0.0)), timed(lambda: run(args.mis))
        print(f"{n:>3} {mis_evals:9.0f} {official:9d} {mis_t / plain_t:10.2f} {official / (S + 1):10.2f}"
              f"   (plain PLMS {plain_t:.2f} s, {plain_evals:.0f} evals; MIS {mis_t:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
