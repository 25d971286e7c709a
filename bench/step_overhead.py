"""Per-step cost of the InstanceDiffusion patches on the SD1.5 UNet (random weights), like with like, CPU or CUDA.

Variants, each one sampling step = one UNet call on cond+uncond (batch 2), euler, cfg 7.5:
  plain                       the UNet alone
  grounded (UniFusion+ScaleU) fusers in all 16 blocks + ScaleU, inside the grounding window
  after window (ScaleU only)  the same model after the window: fusers skipped, ScaleU only

Like with like: plain and patched use ONE attention backend (default ``pytorch``: SDPA, what ComfyUI uses on an
NVIDIA GPU; ``--attention host`` keeps the host's choice, or name one of ComfyUI's: sub_quad, split, basic), for the
UNet's attention and the fusers' alike (the fusers call ComfyUI's ``optimized_attention``).
FLOPs per step: torch's FlopCounterMode for everything but attention (convs, matmuls), plus attention counted
analytically, 4 * B * Nq * Nk * inner per call (FlopCounterMode counts 0 for SDPA on the CPU, so it is replaced by a
counting stand-in during that one run). ScaleU's FFTs are not counted (O(C * HW * log HW), negligible).
Timing: only the sampler loop (models loaded before it, ``torch.cuda.synchronize`` around it on CUDA); the variant
order rotates every round; min and median of the rounds. Device syncs per step: on CUDA with
``torch.cuda.set_sync_debug_mode`` during the loop (every synchronising call, ComfyUI's own included), on the CPU the
host reads the pack's code issues (what a GPU would wait for); as the slope between two step counts.

    COMFYUI_PATH=/path/to/ComfyUI python bench/step_overhead.py                       # CUDA if present, else CPU
    COMFYUI_PATH=... python bench/step_overhead.py --device cpu --channels 64 --sizes 256 --rounds 2   # reduced
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

from instdiff_testkit.host_session import load_pack

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
VARIANTS = ("plain", "grounded (UniFusion+ScaleU)", "after window (ScaleU only)")


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda[:i]")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="UNet and add-ons (cuda: fp16, cpu: fp32)")
    ap.add_argument("--sizes", default="512,1024", help="image sides in px, comma-separated (latent = side / 8)")
    ap.add_argument("--steps", type=int, default=4, help="sampling steps per timed run (per-step = run / steps)")
    ap.add_argument("--rounds", type=int, default=5, help="timed runs per variant (variant order rotates)")
    ap.add_argument("--channels", type=int, default=320, help="UNet model_channels (SD1.5: 320)")
    ap.add_argument("--attention", default="pytorch", help="pytorch | host | sub_quad | split | basic")
    ap.add_argument("--instances", type=int, default=4, help="boxes in the layout")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps per variant (default: --steps)")
    ap.add_argument("--no-syncs", action="store_true", help="skip the device-sync count (4 extra steps per variant)")
    return ap.parse_args(argv)


class LoopProbe:
    """SAMPLER_SAMPLE wrapper (innermost): times the sampler loop, optionally counting device syncs in it."""

    def __init__(self, device, sync_roots):
        self.device, self.sync_roots = device, sync_roots
        self.seconds: list[float] = []
        self.count_syncs = False
        self.syncs = 0

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, executor, *args, **kwargs):
        if self.count_syncs:
            return self._counted(executor, *args, **kwargs)
        self._sync()
        t = time.perf_counter()
        out = executor(*args, **kwargs)
        self._sync()
        self.seconds.append(time.perf_counter() - t)
        return out

    def _counted(self, executor, *args, **kwargs):
        if self.device.type == "cuda":
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    out = executor(*args, **kwargs)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            self.syncs = sum("synchroniz" in str(w.message) for w in caught)
            return out
        from instdiff_testkit.device_checks import SyncCounter
        counter = SyncCounter(self.sync_roots)
        with counter:
            out = executor(*args, **kwargs)
        self.syncs = counter.total
        return out


def main(argv=None) -> int:
    args = _args(argv)
    host, pack = load_pack()
    if host is None:
        print(pack)
        return 2

    import comfy.ldm.modules.attention as attention
    import comfy.patcher_extension
    import comfy.samplers
    from torch.utils.flop_counter import FlopCounterMode

    from instdiff_testkit import tiny_models
    from instdiff_testkit.host_fixtures import StubClip, box_layout, pack_host_ops

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    dtype = DTYPES[args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    if args.attention != "host":
        fn = getattr(attention, f"attention_{args.attention}")
        attention.optimized_attention = attention.optimized_attention_masked = fn
    attn_name = getattr(attention.optimized_attention, "__name__", str(attention.optimized_attention))
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    core = pack.instancediffusion_core
    host_ops = pack_host_ops(core)
    root = os.path.dirname(os.path.realpath(pack.__file__))
    sync_roots = [os.path.join(root, "nodes"), os.path.join(root, "instancediffusion_core")]
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print("time ratio: of the medians (of min: of the fastest rounds); syncs inside the sampler loop, per step as the "
          "slope between 1 and 3 steps, per run at 1 step")
    print(f"ComfyUI {host['version']}; torch {torch.__version__}; {dev_name}; {dtype}; attention {attn_name} for the "
          f"UNet and the fusers; UNet width {args.channels} (SD1.5: 320)")

    t0 = time.perf_counter()
    torch.manual_seed(0)
    unet = tiny_models.tiny_sd15_patcher(dtype=dtype, model_channels=args.channels, load_device=device)
    fw, sw, _ = tiny_models.unet_topology(unet)
    # the position net only makes the tokens (before sampling); a small one keeps the build fast
    sd = tiny_models.tiny_addon_state_dict(fw, sw)
    addons = core.InstanceDiffusionAddons.from_state_dict(sd).to(dtype).eval().requires_grad_(False)
    del sd
    instdiff = host_ops.weights_patcher(addons, dtype, load_device=device, offload_device=torch.device("cpu"))
    n_fuser = sum(p.numel() for f in addons.fusers() for p in f.parameters())
    print(f"built in {time.perf_counter() - t0:.1f} s: UNet {sum(p.numel() for p in unet.model.parameters()) / 1e6:.0f} M "
          f"params, fusers {n_fuser / 1e6:.0f} M")

    nodes = {k: c() for k, c in pack.NODE_CLASS_MAPPINGS.items()}
    clip = StubClip()
    negative = clip.encode("")
    probe = LoopProbe(device, sync_roots)

    def variant(end):
        m = unet
        if end is not None:
            (m,) = nodes["ApplyUniFusion"].apply(unet, instdiff, 1.0, 0.0, end)
            (m,) = nodes["ApplyScaleU"].apply(m, instdiff)
        m = m.clone()
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, "bench_probe", probe)
        return m

    models = dict(zip(VARIANTS, (variant(None), variant(1.0), variant(0.0))))

    def run(model, positive, latent, noise, steps):
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 50)[:steps + 1]
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(7.5)
        return guider.sample(noise, latent, comfy.samplers.sampler_object("euler"), sigmas, seed=0,
                             disable_pbar=True)

    def flops_of(model, positive, latent, noise):
        """One step: FlopCounterMode without attention + attention counted analytically."""
        counted = [0]
        real = attention.optimized_attention

        def analytic(q, k, v, heads, *a, **kw):
            if kw.get("skip_reshape"):
                b, h, nq, d = q.shape
                nk, inner = k.shape[-2], h * d
                out = torch.zeros_like(q) if kw.get("skip_output_reshape") else q.new_zeros(b, nq, inner)
            else:
                b, nq, inner = q.shape
                nk = k.shape[1]
                out = q.new_zeros(b, nq, inner)
            counted[0] += 4 * b * nq * nk * inner
            return out
        attention.optimized_attention = attention.optimized_attention_masked = analytic
        try:
            counter = FlopCounterMode(display=False)
            with counter:
                run(model, positive, latent, noise, 1)
        finally:
            attention.optimized_attention = attention.optimized_attention_masked = real
        return counter.get_total_flops() + counted[0], counted[0]

    rows = {}
    for side in sizes:
        boxes = [(side * (0.05 + 0.2 * i), side * 0.1, side * (0.2 + 0.2 * i), side * 0.6) for i in range(args.instances)]
        (positive,) = nodes["InstanceDiffusionConditioning"].encode(clip.encode("a scene"), clip,
                                                                   box_layout(core, boxes, width=side, height=side),
                                                                   instdiff, "auto")
        latent = torch.zeros(1, 4, side // 8, side // 8)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
        flops, syncs = {}, {}
        for name, model in models.items():
            run(model, positive, latent, noise, args.warmup or args.steps)   # warm-up: loads, caches, kernels
            flops[name] = flops_of(model, positive, latent, noise)
            syncs[name] = (float("nan"), -1)
            if not args.no_syncs:
                probe.count_syncs = True
                per_run = []
                for steps in (1, 3):
                    run(model, positive, latent, noise, steps)
                    per_run.append(probe.syncs)
                probe.count_syncs = False
                syncs[name] = ((per_run[1] - per_run[0]) / 2, per_run[0])
        times = {name: [] for name in models}
        names = list(models)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:     # rotate the order every round
                probe.seconds.clear()
                run(models[name], positive, latent, noise, args.steps)
                times[name].append(probe.seconds[-1] / args.steps)
        rows[side] = (times, flops, syncs)
        base_t, base_min = statistics.median(times["plain"]), min(times["plain"])
        base_f = flops["plain"][0]
        print(f"\n{side}x{side} px (latent {side // 8}x{side // 8}), batch 2 = cond+uncond, {args.instances} boxes, "
              f"{args.rounds} rounds x {args.steps} steps, {device.type}:")
        print(f"  {'variant':30s} {'min s/step':>10s} {'median':>8s} {'GFLOP/step':>10s} {'(attn)':>7s} "
              f"{'time ratio':>10s} {'(of min)':>8s} {'FLOP ratio':>10s} {'syncs/step':>10s} {'per run':>7s}")
        for name in models:
            t = times[name]
            f, fa = flops[name]
            slope, first = syncs[name]
            print(f"  {name:30s} {min(t):10.4f} {statistics.median(t):8.4f} {f / 1e9:10.1f} {fa / 1e9:7.1f} "
                  f"{statistics.median(t) / base_t:10.3f} {min(t) / base_min:8.3f} {f / base_f:10.3f} {slope:10.1f} "
                  f"{first:7d}")
        if not args.no_syncs:
            extra = syncs[VARIANTS[1]][0] - syncs["plain"][0]
            what = "all synchronising calls" if device.type == "cuda" else "host reads issued by the pack"
            print(f"  extra device syncs per step inside the sampler loop (grounded - plain; {what}): {extra:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
