"""Per-step cost of the InstanceDiffusion patches on a full-size SD1.5 UNet (random weights), CPU.

Measures, in one run, the wall time per sampling step (one UNet call on cond+uncond, batch 2, 512x512 -> 64x64
latent) of: the plain UNet, UniFusion+ScaleU inside the grounding window, and the same after the window (fusers
skipped, ScaleU only); and counts the FLOPs of each UNet call with torch's FlopCounterMode (matmul/conv/attention;
ScaleU's FFTs are not counted: O(C*HW*log HW), negligible). Prints time ratios next to FLOP ratios.

Needs a ComfyUI host: COMFYUI_PATH=/path/to/ComfyUI python bench/step_overhead.py [--steps 3] [--size 512]
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
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up call)")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels (latent = size / 8)")
    ap.add_argument("--instances", type=int, default=4, help="boxes in the layout")
    args = ap.parse_args(argv)

    host, pack = load_pack()
    if host is None:
        print(pack)
        return 2

    import comfy.model_patcher
    import comfy.samplers
    from torch.utils.flop_counter import FlopCounterMode

    from instdiff_testkit import tiny_models
    from instdiff_testkit.host_fixtures import StubClip, box_layout

    torch.manual_seed(0)
    print(f"ComfyUI {host['version']}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    t0 = time.perf_counter()
    unet = tiny_models.tiny_sd15_patcher(model_channels=320)          # the real SD1.5 UNet size
    fw, sw, _ = tiny_models.unet_topology(unet)
    sd = tiny_models.tiny_addon_state_dict(fw, sw, mid_dim=3072, convnext_dims=(96, 192, 384, 768),
                                           convnext_depths=(3, 3, 9, 3))
    core = pack.instancediffusion_core
    addons = core.addons.InstanceDiffusionAddons.from_state_dict(sd).eval().requires_grad_(False)
    del sd
    cpu = torch.device("cpu")
    instdiff = comfy.model_patcher.ModelPatcher(addons, cpu, cpu)
    print(f"built full-size UNet + add-ons in {time.perf_counter() - t0:.1f} s "
          f"({sum(p.numel() for p in addons.parameters()) / 1e6:.0f} M add-on params)")

    nodes = {k: c() for k, c in pack.NODE_CLASS_MAPPINGS.items()}
    side = args.size
    boxes = [(side * (0.05 + 0.2 * i), side * 0.1, side * (0.2 + 0.2 * i), side * 0.6) for i in range(args.instances)]
    layout = box_layout(core, boxes, width=side, height=side)
    clip = StubClip()
    (positive,) = nodes["InstanceDiffusionConditioning"].encode(clip.encode("a scene"), clip, layout, instdiff, "auto")
    negative = clip.encode("")

    def patched(end):
        (m,) = nodes["ApplyUniFusion"].apply(unet, instdiff, 1.0, 0.0, end)
        (m,) = nodes["ApplyScaleU"].apply(m, instdiff)
        return m

    variants = {"plain": unet, "grounded (UniFusion+ScaleU)": patched(1.0), "after window (ScaleU only)": patched(0.0)}
    latent = torch.zeros(1, 4, side // 8, side // 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))

    def run(model, steps, flops=None):
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 50)[:steps + 1]
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(7.5)
        sampler = comfy.samplers.sampler_object("euler")
        if flops is None:
            return guider.sample(noise, latent, sampler, sigmas, seed=0, disable_pbar=True)
        with flops:
            return guider.sample(noise, latent, sampler, sigmas, seed=0, disable_pbar=True)

    flops = {}
    for name, model in variants.items():
        run(model, 1)                                              # warm-up (loads, caches)
        counter = FlopCounterMode(display=False)
        run(model, 1, counter)
        flops[name] = counter.get_total_flops()
    times = {name: [] for name in variants}
    for _ in range(args.steps):                                    # interleaved, so machine load hits all alike
        for name, model in variants.items():
            t = time.perf_counter()
            run(model, 1)
            times[name].append(time.perf_counter() - t)
    results = {}
    for name in variants:
        per_step = sorted(times[name])[len(times[name]) // 2]      # median
        results[name] = (per_step, flops[name])
        print(f"  {name:30s} {per_step:7.2f} s/step (median of {args.steps})   {flops[name] / 1e9:9.1f} GFLOP/step")

    base_t, base_f = results["plain"]
    print(f"\nper-step cost vs plain UNet ({side}x{side}, batch 2 = cond+uncond, {args.instances} boxes, CPU):")
    print(f"  {'variant':30s} {'time ratio':>10s} {'FLOP ratio':>10s}")
    for name, (t, f) in results.items():
        print(f"  {name:30s} {t / base_t:10.3f} {f / base_f:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
