"""Per-step cost of per-frame grounding (tracks): the ratio grounded / plain with 16 frames vs with 1 frame.

A track's tokens ``[F, 184, D]`` are computed once by the Conditioning node (the position net never runs during
sampling: counted below), and each fuser call only gathers one token row per batch row; so the per-step cost of
UniFusion + ScaleU relative to the plain UNet should not depend on the number of frames. Measured in one run on an
SD1.5-topology UNet (``--channels`` wide, random weights), CPU: FLOPs per step (torch FlopCounterMode: matmul,
conv, attention) and the median wall time per step, for batch 1 with a static layout and batch F with an F-frame
track (a box moving across the frames).

Needs a ComfyUI host: COMFYUI_PATH=/path/to/ComfyUI python bench/frames_cost.py [--frames 16] [--steps 3]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from instdiff_testkit.host_session import load_pack


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16, help="frames of the track (= latent batch)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up call)")
    ap.add_argument("--size", type=int, default=128, help="image side in pixels (latent = size / 8)")
    ap.add_argument("--channels", type=int, default=64, help="UNet model_channels (SD1.5: 320)")
    args = ap.parse_args(argv)

    host, pack = load_pack()
    if host is None:
        print(pack)
        return 2

    import comfy.model_patcher
    import comfy.samplers
    from torch.utils.flop_counter import FlopCounterMode

    from instdiff_testkit import tiny_models
    from instdiff_testkit.host_fixtures import StubClip, instdiff_for

    torch.manual_seed(0)
    print(f"ComfyUI {host['version']}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    unet = tiny_models.tiny_sd15_patcher(model_channels=args.channels)
    core = pack.instancediffusion_core
    instdiff = instdiff_for(core, unet)
    nodes = {k: c() for k, c in pack.NODE_CLASS_MAPPINGS.items()}
    side, n = args.size, args.frames
    canvas = core.layout.Layout(width=side, height=side)
    w = side // 4
    keyframes = f"0: box 0,{side // 3},{w},{w}\n{n - 1}: box {side - w},{side // 3},{w},{w}"
    (track,) = nodes["InstanceTrackKeyframes"].add(canvas, "a red ball", n, keyframes, "linear", "error")
    (static,) = nodes["InstanceBox"].add(canvas, "a red ball", 0, side // 3, w, w)["result"]
    clip = StubClip()
    calls = []
    hook = instdiff.model.position_net.register_forward_pre_hook(lambda *_a: calls.append(1))
    t = time.perf_counter()
    (pos_track,) = nodes["InstanceDiffusionConditioning"].encode(clip.encode("a scene"), clip, track, instdiff, "auto")
    encode_s = time.perf_counter() - t
    (pos_static,) = nodes["InstanceDiffusionConditioning"].encode(clip.encode("a scene"), clip, static, instdiff, "auto")
    encode_calls = len(calls)
    negative = clip.encode("")
    (grounded,) = nodes["ApplyUniFusion"].apply(unet, instdiff, 1.0, 0.0, 1.0)
    (grounded,) = nodes["ApplyScaleU"].apply(grounded, instdiff)
    print(f"Conditioning: {n}-frame track in {encode_s:.2f} s ({encode_calls - 1} position-net forwards for the track, "
          f"distinct frames in chunks; tokens {tuple(pos_track[0][1]['instance_diffusion'].tokens.shape)})")

    def run(model, positive, batch, counter=None):
        latent = torch.zeros(batch, 4, side // 8, side // 8)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 50)[:2]
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(7.5)
        sampler = comfy.samplers.sampler_object("euler")
        if counter is None:
            return guider.sample(noise, latent, sampler, sigmas, seed=0, disable_pbar=True)
        with counter:
            return guider.sample(noise, latent, sampler, sigmas, seed=0, disable_pbar=True)

    variants = {"1 frame plain": (unet, pos_static, 1), "1 frame grounded": (grounded, pos_static, 1),
                f"{n} frames plain": (unet, pos_track, n), f"{n} frames grounded": (grounded, pos_track, n)}
    flops, times = {}, {k: [] for k in variants}
    calls.clear()
    for name, (model, positive, batch) in variants.items():
        run(model, positive, batch)
        counter = FlopCounterMode(display=False)
        run(model, positive, batch, counter)
        flops[name] = counter.get_total_flops()
    for _ in range(args.steps):
        for name, (model, positive, batch) in variants.items():
            t = time.perf_counter()
            run(model, positive, batch)
            times[name].append(time.perf_counter() - t)
    hook.remove()
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    for name in variants:
        print(f"  {name:22s} {med[name]:7.3f} s/step   {flops[name] / 1e9:8.2f} GFLOP/step")
    print(f"position-net forwards during sampling: {len(calls)} (tokens are computed once, by the Conditioning node)")
    print(f"\ngrounded / plain per step ({side}x{side}, cond+uncond, UNet {args.channels} channels, CPU):")
    print(f"  {'':10s} {'time ratio':>10s} {'FLOP ratio':>10s}")
    for label, key in (("1 frame", "1 frame"), (f"{n} frames", f"{n} frames")):
        print(f"  {label:10s} {med[key + ' grounded'] / med[key + ' plain']:10.3f} "
              f"{flops[key + ' grounded'] / flops[key + ' plain']:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
