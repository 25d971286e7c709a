"""Issue #14, "ready for a real GPU": the GPU situations, simulated on a CPU-only machine with ComfyUI's own code.

- Partial loads (``--lowvram``/``--novram``, big batches): ComfyUI's real ``load_models_gpu`` with faked free memory
  (module sizes scaled x1000, so tiny models weigh like real ones and 0.3.64's 128 MB floor still lets them load
  partly) on a stand-in accelerator: ``meta`` + ``StrictDevices`` for placement (any weight left on the wrong device
  fails like on CUDA), and the CPU treated as an accelerator for numbers (ComfyUI's streaming/casting path must give
  bit-identical samples). With ``INSTDIFF_TEST_DEVICE=cuda`` the same scenarios load on the real GPU.
- dtypes: bf16/fp16 UNets and add-ons, fp8-stored UNet and add-ons computing in a working dtype.
- Device syncs: host reads of device tensors issued by the pack during sampling, counted (0 per step).
- ComfyUI's attention for the fusers; ScaleU's FFT fallback; FreeU + ScaleU warning; what is loaded with the UNet.
"""
from __future__ import annotations

import importlib
import logging
import os

import pytest
import torch

import comfy.model_management as mm
import comfy.patcher_extension
import comfy.samplers

from instdiff_testkit import device_checks, tiny_models
from instdiff_testkit.host_fixtures import StubClip, box_layout, instdiff_for, pack_host_ops, sample

SCALE = 1000
META = torch.device("meta")
CPU = torch.device("cpu")
SCENARIOS = ("full", "partial", "novram", "partial_then_full")


@pytest.fixture(scope="module")
def node(pack):
    return {k: cls() for k, cls in pack.NODE_CLASS_MAPPINGS.items()}


@pytest.fixture(scope="module")
def mods(pack):
    def mod(name):
        return importlib.import_module(f"{pack.__name__}.nodes.{name}")
    return mod


class FakeMemory:
    """Free accelerator memory as the test says, model sizes x SCALE, an empty list of loaded models."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.free = 10 ** 15
        size = mm.module_size
        monkeypatch.setattr(mm, "module_size", lambda m: size(m) * SCALE)
        monkeypatch.setattr(mm, "get_free_memory", self.get_free_memory)
        monkeypatch.setattr(mm, "vram_state", mm.VRAMState.NORMAL_VRAM)
        monkeypatch.setattr(mm, "current_loaded_models", [])

    def get_free_memory(self, dev=None, torch_free_too=False):
        return (self.free, self.free) if torch_free_too else self.free

    def scenario(self, name: str, budget: int) -> None:
        """full: plenty; partial (and the first half of partial_then_full): ``budget`` bytes for weights;
        novram: ComfyUI's ``--novram`` (nothing resident)."""
        self.monkeypatch.setattr(mm, "vram_state", mm.VRAMState.NO_VRAM if name == "novram" else
                                 mm.VRAMState.NORMAL_VRAM)
        self.free = 10 ** 15 if name in ("full", "novram") else int(mm.minimum_inference_memory() + budget)

    def plenty(self) -> None:
        self.free = 10 ** 15


@pytest.fixture
def memory(monkeypatch):
    return FakeMemory(monkeypatch)


def _where(module) -> set:
    return {p.device.type for p in module.parameters()}


def _patched(node, unet, instdiff, end=1.0, scaleu=True, start=0.0):
    (m,) = node["ApplyUniFusion"].apply(unet, instdiff, 1.0, start, end)
    if scaleu:
        (m,) = node["ApplyScaleU"].apply(m, instdiff)
    return m


def _conds(node, instdiff, pack_core, boxes=((4, 4, 30, 40),)):
    clip = StubClip()
    (positive,) = node["InstanceDiffusionConditioning"].encode(clip.encode("a scene"), clip,
                                                               box_layout(pack_core, list(boxes)), instdiff, "auto")
    return positive, clip.encode("")


def _check_scenario(name, patchers, loaded_all: bool):
    """What ComfyUI did: everything resident (full), some of each model (partial), nothing (novram)."""
    for p in patchers:
        resident = p.loaded_size() / p.model_size()
        if name == "full" or loaded_all:
            assert resident == pytest.approx(1.0), (name, type(p.model).__name__, resident)
        elif name == "novram":
            assert resident == 0.0, (name, type(p.model).__name__, resident)
        else:
            assert 0.0 < resident < 1.0 and p.model.model_lowvram, (name, type(p.model).__name__, resident)


# ------------------------------------------------------------------------------------------------ 1. partial loads

def _meta_forward(m, patching, tokens):
    """One UNet call (cond + uncond) with our patches on the stand-in device, devices checked strictly."""
    to = {"patches": m.model_options["transformer_options"]["patches"], "uuids": ["u", None],
          "cond_or_uncond": [0, 1], patching.TABLE_KEY: patching.TokenTable({"u": tokens}, step_sigma=1.0)}
    x = torch.zeros(2, 4, 8, 8, device=META)
    with torch.no_grad(), device_checks.StrictDevices():
        out = m.model.diffusion_model(x, timesteps=torch.ones(2, device=META),
                                      context=torch.zeros(2, 77, 768, device=META), transformer_options=to)
    assert out.shape == x.shape and out.device == META


@pytest.mark.skipif(tiny_models.test_device().type != "cpu", reason="the meta stand-in is for CPU-only machines")
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_partial_loads_leave_no_weight_on_the_wrong_device(node, pack_core, mods, memory, scenario):
    """Fusers and ScaleU run with every weight where ComfyUI's (partial) load put it. Fails with plain torch.nn
    layers: ComfyUI leaves layers it cannot stream on the CPU."""
    patching, host_ops = mods("patching"), mods("host_ops")
    unet = tiny_models.tiny_sd15_patcher(load_device=META)
    instdiff = instdiff_for(pack_core, unet)
    host_ops.host_weights(instdiff)._null = torch.zeros(1, 184, 768)   # meta has no values to compute them from
    m = _patched(node, unet, instdiff)
    (fusers,) = m.model_patches_models()
    memory.scenario(scenario, budget=int(0.4 * fusers.model_size()))
    mm.load_models_gpu([m])
    _check_scenario(scenario, [m, fusers], loaded_all=False)
    tokens = torch.randn(1, 184, 768)                                  # CPU, as the conditioning carries them
    _meta_forward(m, patching, tokens)
    if scenario == "partial_then_full":
        memory.plenty()
        mm.load_models_gpu([m])
        _check_scenario(scenario, [m, fusers], loaded_all=True)
        assert _where(fusers.model) == {"meta"}
        _meta_forward(m, patching, tokens)


@pytest.mark.skipif(tiny_models.test_device().type != "cpu", reason="the meta stand-in is for CPU-only machines")
@pytest.mark.parametrize("scenario", ("partial", "novram"))
def test_position_net_runs_partly_loaded(pack_core, mods, memory, scenario):
    """The position net (null features, ConvNeXt gamma and channels-first norms are non-leaf parameters ComfyUI
    never moves) computes on the load device with the rest of it wherever the load left it."""
    host_ops = mods("host_ops")
    unet = tiny_models.tiny_sd15_patcher(load_device=META)
    instdiff = instdiff_for(pack_core, unet)
    host = host_ops.host_weights(instdiff)
    memory.scenario(scenario, budget=int(0.9 * host.position_net.model_size()))   # its polygon MLP is ~70%
    device = host.load_position_net()
    _check_scenario(scenario, [host.position_net], loaded_all=False)
    net = host.position_net.model
    layout = pack_core.layout
    mask = torch.zeros(64, 64)
    mask[8:40, 8:40] = 1
    lay = layout.Layout(width=64, height=64).with_instance(layout.Instance(caption="a", mask=mask))
    g = pack_core.layout.grounding.build_grounding(lay, torch.randn(1, 768))
    # segs stay on the CPU: which images have seg pixels is a value the net reads (meta has none); it moves those
    g = {k: (v if k == "segs" else v.to(device)) for k, v in g.items()}
    with torch.no_grad(), device_checks.StrictDevices():
        tokens, _ = net(g, pack_core.model.DROP_CONFIGS["mask"])
        null = net.null_tokens(device=device)
    assert tokens.device == META and null.device == META and tokens.shape == null.shape


def _cpu_as_accelerator(monkeypatch):
    """ComfyUI treats the CPU like any accelerator (partial loads, streamed/cast layers) in this test."""
    monkeypatch.setattr(mm, "is_device_cpu", lambda device: False)


def _sampled(node, pack_core, load_device, end=0.5):
    unet = tiny_models.tiny_sd15_patcher(load_device=load_device)
    instdiff = instdiff_for(pack_core, unet)
    positive, negative = _conds(node, instdiff, pack_core)
    m = _patched(node, unet, instdiff, end=end)
    return m, positive, negative


@pytest.fixture(scope="module")
def cpu_reference(node, pack_core):
    m, positive, negative = _sampled(node, pack_core, CPU)
    return sample(m, positive, negative, torch.zeros(1, 4, 8, 8), steps=4)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_partial_loads_sample_like_the_full_cpu_run(node, pack_core, memory, monkeypatch, cpu_reference, scenario):
    """Real sampling after each kind of load; the CPU-as-accelerator run must be bit-identical to the plain CPU run
    (same math through ComfyUI's cast/stream path), a real GPU run close to it."""
    device = tiny_models.test_device()
    if device.type == "cpu":
        _cpu_as_accelerator(monkeypatch)
    m, positive, negative = _sampled(node, pack_core, device)
    (fusers,) = m.model_patches_models()
    memory.scenario(scenario, budget=int(0.4 * fusers.model_size()))
    out = sample(m, positive, negative, torch.zeros(1, 4, 8, 8), steps=4)
    _check_scenario(scenario, [m, fusers], loaded_all=False)
    if scenario == "partial_then_full":
        memory.plenty()
        out = sample(m, positive, negative, torch.zeros(1, 4, 8, 8), steps=4)
        _check_scenario(scenario, [m, fusers], loaded_all=True)
    if device.type == "cpu":
        assert torch.equal(out, cpu_reference)
    else:
        torch.testing.assert_close(out, cpu_reference, rtol=2e-3, atol=2e-3)


# ------------------------------------------------------------------------------------------------ 2. dtypes

def _rel_err(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.fixture(scope="module")
def fp32_reference(node, pack_core):
    unet = tiny_models.tiny_sd15_patcher()
    instdiff = instdiff_for(pack_core, unet)
    positive, negative = _conds(node, instdiff, pack_core)
    return sample(_patched(node, unet, instdiff), positive, negative, torch.zeros(1, 4, 8, 8), steps=2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_unet_and_addons(node, pack_core, fp32_reference, dtype):
    """UNet and add-ons stored and computing in fp16/bf16 (what a GPU does): finite, close to fp32."""
    unet = tiny_models.tiny_sd15_patcher(dtype=dtype)
    instdiff = instdiff_for(pack_core, unet, dtype=dtype, compute_dtype=dtype)
    assert {f.compute_dtype for f in instdiff.model.fusers()} == {dtype}
    positive, negative = _conds(node, instdiff, pack_core)
    out = sample(_patched(node, unet, instdiff), positive, negative, torch.zeros(1, 4, 8, 8), steps=2)
    assert torch.isfinite(out).all()
    assert _rel_err(out, fp32_reference) < (0.02 if dtype == torch.float16 else 0.06)


def test_fp8_storage_computes_in_a_working_dtype(node, pack_core, models_dir, monkeypatch):
    """``--fp8_e4m3fn-unet``: the loader's ``auto`` stores the add-ons in fp8 (like the UNet) and computes in what
    ComfyUI's manual-cast rule gives (fp32 on this CPU), on an fp8 UNet with manual casting. It used to compute in
    fp8 and fail in the conditioning node. Exact check: the same as float32 add-ons holding the fp8-rounded values."""
    from safetensors.torch import save_file

    fp8 = torch.float8_e4m3fn
    unet = tiny_models.tiny_sd15_patcher(dtype=fp8, manual_cast_dtype=torch.float32)
    fw, sw, _ = tiny_models.unet_topology(unet)
    sd = tiny_models.tiny_addon_state_dict(fw, sw)
    save_file(sd, os.path.join(models_dir["instance_diffusion"], "fp8.safetensors"))
    monkeypatch.setattr(mm, "unet_dtype", lambda *a, **k: fp8)        # what --fp8_e4m3fn-unet makes it return
    (instdiff,) = node["LoadInstanceDiffusion"].load("fp8.safetensors", "auto")
    assert {p.dtype for p in instdiff.model.parameters()} == {fp8}
    assert {f.compute_dtype for f in instdiff.model.fusers()} == {torch.float32}
    latent = torch.zeros(1, 4, 8, 8)
    positive, negative = _conds(node, instdiff, pack_core)
    out = sample(_patched(node, unet, instdiff), positive, negative, latent, steps=2)
    assert torch.isfinite(out).all()

    rounded = pack_core.InstanceDiffusionAddons.from_state_dict({k: v.to(fp8).float() for k, v in sd.items()})
    ref_weights = pack_host_ops(pack_core).weights_patcher(rounded.eval().requires_grad_(False), torch.float32,
                                                           load_device=unet.load_device, offload_device=CPU)
    ref_pos, ref_neg = _conds(node, ref_weights, pack_core)
    ref = sample(_patched(node, unet, ref_weights), ref_pos, ref_neg, latent, steps=2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)


def test_dtype_rule_on_a_gpu_like_device(mods, monkeypatch):
    """Compute dtype per storage choice where ComfyUI would use fp16 (the manual-cast rule, never fp8)."""
    host_ops = mods("host_ops")
    monkeypatch.setattr(mm, "should_use_fp16", lambda *a, **k: True)
    monkeypatch.setattr(mm, "should_use_bf16", lambda *a, **k: False)
    monkeypatch.setattr(mm, "is_device_cpu", lambda d: False)
    dev = torch.device("meta")
    for storage, compute in ((torch.float8_e4m3fn, torch.float16), (torch.float16, torch.float16),
                             (torch.bfloat16, torch.float16), (torch.float32, torch.float32)):
        assert host_ops.compute_dtype_for(storage, dev) == compute, storage
    monkeypatch.setattr(mm, "unet_dtype", lambda *a, **k: torch.float8_e4m3fn)
    assert host_ops.addon_dtypes("auto", dev) == (torch.float8_e4m3fn, torch.float16)
    assert host_ops.cast_ops(torch.float8_e4m3fn, torch.float16) is importlib.import_module("comfy.ops").manual_cast


# ------------------------------------------------------------------------------------------------ 4. device syncs

def _sync_count(pack, fn) -> device_checks.SyncCounter:
    root = os.path.dirname(os.path.realpath(pack.__file__))
    counter = device_checks.SyncCounter([os.path.join(root, "nodes"), os.path.join(root, "instancediffusion_core")])
    with counter:
        fn()
    return counter


@pytest.mark.parametrize("end", [1.0, 0.5])
def test_no_device_reads_per_step(node, pack, pack_core, end):
    """Sampling reads no device tensor per step. Per run: the schedule once (``host_floats``; on a GPU ComfyUI hands
    the sampler its sigmas on the device) and, with a window that ends early, the one call at the window's edge
    that could belong to either side. Counting reads in the pack's code: on a GPU each is a device
    synchronisation. Before: one ``float(timestep)`` per UNet call plus the schedule's ``.cpu().tolist()``."""
    unet = tiny_models.tiny_sd15_patcher()
    instdiff = instdiff_for(pack_core, unet)
    positive, negative = _conds(node, instdiff, pack_core)
    m = _patched(node, unet, instdiff, end=end)
    counts = {}
    for steps in (4, 8):
        counter = _sync_count(pack, lambda: sample(m, positive, negative, torch.zeros(1, 4, 8, 8), steps=steps))
        counts[steps] = counter.total
        sites = {(site[2], site[3]) for site in counter.calls}
        assert sites <= {("host_floats", "tolist"), ("step_sigma", "__float__")}, dict(counter.calls)
        assert counter.total <= (1 if end == 1.0 else 2), dict(counter.calls)
    assert counts[4] == counts[8], "reads must not grow with the number of steps"


def test_step_clock_matches_the_exact_sigma_rule_for_every_sampler(node, pack_core, mods):
    """For each sampler of this host: the grounding scale the step clock gives every UNet call (no sigma read)
    equals the one the call's exact sigma gives. Samplers the clock does not trust read every sigma."""
    step_clock, patching = mods("step_clock"), mods("patching")
    schedule_mod = pack_core.sampling.schedule
    unet = tiny_models.tiny_sd15_patcher()
    instdiff = instdiff_for(pack_core, unet)
    positive, negative = _conds(node, instdiff, pack_core)
    start, end, steps = 0.2, 0.6, 5
    m = _patched(node, unet, instdiff, start=start, end=end, scaleu=False)
    seen = []

    def record(executor, model, conds, x_in, timestep, model_options, *args, **kwargs):
        to = model_options["transformer_options"]
        exact = schedule_mod.grounding_scale(float(timestep.reshape(-1)[0]), to[patching.SCHEDULE_KEY], start, end)
        clocked = schedule_mod.grounding_scale(to[patching.STEP_SIGMA_KEY], to[patching.SCHEDULE_KEY], start, end)
        seen.append((exact, clocked))
        return [x_in * 0.5 for _ in conds]          # no UNet: only the clock is under test (fast)

    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "record", record)   # innermost
    names = list(comfy.samplers.SAMPLER_NAMES)
    trusted = []
    for name in names:
        seen.clear()
        sample(m, positive, negative, torch.zeros(1, 4, 8, 8), steps=steps, sampler=name)
        assert seen, name
        bad = [i for i, (exact, clocked) in enumerate(seen) if exact != clocked]
        assert not bad, f"{name}: calls {bad} of {len(seen)} get another grounding scale than their sigma gives"
        if step_clock.clock_is_trusted(comfy.samplers.sampler_object(name)):
            trusted.append(name)
    assert {"euler", "dpmpp_2m", "heun", "dpm_2", "uni_pc"} <= set(trusted)
    assert "heunpp2" not in trusted and "dpm_fast" not in trusted


# ------------------------------------------------------------------------------------------------ 5. attention

def test_fusers_use_comfyui_attention(node, pack_core, monkeypatch):
    """The fusers call ``comfy.ldm.modules.attention.optimized_attention`` (the user's backend) with the call's
    transformer_options, and it gives what PyTorch SDPA gives."""
    import comfy.ldm.modules.attention as attention

    unet = tiny_models.tiny_sd15_patcher()
    instdiff = instdiff_for(pack_core, unet)
    positive, negative = _conds(node, instdiff, pack_core)
    m = _patched(node, unet, instdiff, scaleu=False)
    latent = torch.zeros(1, 4, 8, 8)
    via_sdpa = sample(m, positive, negative, latent, steps=1)
    fuser_calls = []
    original = attention.optimized_attention

    def spy(q, k, v, heads, *args, **kwargs):
        if k.shape[1] == q.shape[1] + 184:                 # a fuser: keys over [visual | grounding tokens]
            fuser_calls.append(("transformer_options" in kwargs, heads))
        return original(q, k, v, heads, *args, **kwargs)

    monkeypatch.setattr(attention, "optimized_attention", spy)
    via_host = sample(m, positive, negative, latent, steps=1)
    assert len(fuser_calls) == 16 and all(opts and heads == 8 for opts, heads in fuser_calls)
    torch.testing.assert_close(via_host, via_sdpa, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------ 6. ScaleU's FFT

def test_scaleu_fft_falls_back_to_the_cpu_once(mods, monkeypatch, caplog):
    """A backend whose FFT fails (DirectML, ...) gets ScaleU's skip filter on the CPU, one warning, same result."""
    scaleu_node = mods("scaleu")
    monkeypatch.setattr(scaleu_node, "NO_FFT_DEVICES", set())
    real_fftn, real_scaleu = torch.fft.fftn, scaleu_node.scaleu
    fft_devices, failed = [], []

    def flaky_fftn(x, *args, **kwargs):
        if not failed:                       # the device's first FFT fails, as on a backend without FFT kernels
            failed.append(True)
            fft_devices.append("failed")
            raise RuntimeError("fftn is not implemented on this backend")
        return real_fftn(x, *args, **kwargs)

    def spy(h, hs, b, s, fft_device=None):
        fft_devices.append(fft_device)
        return real_scaleu(h, hs, b, s, fft_device=fft_device)

    params = {0: (torch.randn(6), torch.randn(1))}
    patch = scaleu_node.ScaleUPatch(params)
    h, hs = torch.randn(2, 6, 12, 12), torch.randn(2, 4, 12, 12)
    ref = real_scaleu(h, hs, *params[0])
    monkeypatch.setattr(torch.fft, "fftn", flaky_fftn)
    monkeypatch.setattr(scaleu_node, "scaleu", spy)
    options = {"block": ("output", 0), "patches": {}}
    with caplog.at_level(logging.WARNING):
        first = patch(h, hs, options)
        second = patch(h, hs, options)
    assert fft_devices == [None, "failed", "cpu", "cpu"], "tried on the device once, then straight to the CPU"
    assert sum("torch.fft" in r.getMessage() for r in caplog.records) == 1
    for out in (first, second):
        torch.testing.assert_close(out[0], ref[0])
        torch.testing.assert_close(out[1], ref[1])


def test_scaleu_fft_runs_in_float32_for_half_inputs(pack_core, monkeypatch):
    """fp16 activations on a non-power-of-two grid: the FFT sees float32 (cuFFT's fp16 needs powers of two)."""
    real_fftn = torch.fft.fftn
    dtypes = []
    monkeypatch.setattr(torch.fft, "fftn", lambda x, *a, **k: (dtypes.append(x.dtype), real_fftn(x, *a, **k))[1])
    h, hs = torch.randn(1, 6, 12, 12), torch.randn(1, 4, 12, 12)
    b, s = torch.randn(6), torch.randn(1)
    out = pack_core.model.scaleu(h.half(), hs.half(), b, s)
    ref = pack_core.model.scaleu(h, hs, b, s)
    assert set(dtypes) == {torch.float32} and out[1].dtype == torch.float16
    torch.testing.assert_close(out[1].float(), ref[1], rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------------------------------------ 7. FreeU + ScaleU

def _freeu(comfy_nodes, model):
    import nodes

    cls = nodes.NODE_CLASS_MAPPINGS["FreeU"]
    fn = getattr(cls, "execute", None) or cls().patch
    out = fn(model, 1.1, 1.2, 0.9, 0.2)
    return getattr(out, "result", out)[0]


def _both_warnings(caplog):
    return [r for r in caplog.records if "FreeU" in r.getMessage() and "Apply ScaleU" in r.getMessage()]


def test_freeu_before_scaleu_warns_at_apply(node, pack_core, comfy_nodes, caplog):
    unet = tiny_models.tiny_sd15_patcher()
    instdiff = instdiff_for(pack_core, unet)
    with caplog.at_level(logging.WARNING):
        m = _freeu(comfy_nodes, unet)
        (m,) = node["ApplyScaleU"].apply(m, instdiff)
        positive, negative = _conds(node, instdiff, pack_core)
        sample(m, positive, negative, torch.zeros(1, 4, 8, 8), steps=1)
    assert len(_both_warnings(caplog)) == 1


def test_freeu_after_scaleu_warns_once_at_sampling(node, pack_core, comfy_nodes, caplog):
    unet = tiny_models.tiny_sd15_patcher()
    instdiff = instdiff_for(pack_core, unet)
    with caplog.at_level(logging.WARNING):
        (m,) = node["ApplyScaleU"].apply(unet, instdiff)
        assert not _both_warnings(caplog)
        plain = sample(m, *_conds(node, instdiff, pack_core), torch.zeros(1, 4, 8, 8), steps=1)
        assert not _both_warnings(caplog), "ScaleU alone must not warn"
        m = _freeu(comfy_nodes, m)
        for _ in range(2):
            sample(m, *_conds(node, instdiff, pack_core), torch.zeros(1, 4, 8, 8), steps=1)
    assert len(_both_warnings(caplog)) == 1
    assert torch.isfinite(plain).all()


# ------------------------------------------------------------------------------------------------ 8. what loads

def test_only_the_fusers_load_with_the_unet(node, pack_core, monkeypatch):
    """The position net (~322 MB full size) stays out of the sampling load: the null tokens exist before sampling,
    and the position net is never called while sampling."""
    unet = tiny_models.tiny_sd15_patcher()
    instdiff = instdiff_for(pack_core, unet)
    positive, negative = _conds(node, instdiff, pack_core)
    m = _patched(node, unet, instdiff)
    (fusers,) = m.model_patches_models()
    net = instdiff.model.position_net
    posnet_params = {id(p) for p in net.parameters()}
    assert not posnet_params & {id(p) for p in fusers.model.parameters()}
    assert {id(p) for p in fusers.model.parameters()} == {id(p) for f in instdiff.model.fusers() for p in f.parameters()}
    loaded = []
    real_load = mm.load_models_gpu
    monkeypatch.setattr(mm, "load_models_gpu", lambda models, *a, **k: (loaded.extend(models), real_load(models, *a, **k))[1])

    def refuse(*_args):
        raise AssertionError("the position net ran during sampling")
    handle = net.linears_list[0][0].register_forward_pre_hook(refuse)   # forward and null_tokens both use it
    try:
        out = sample(m, positive, negative, torch.zeros(1, 4, 8, 8), steps=2)
    finally:
        handle.remove()
    assert torch.isfinite(out).all()
    assert all(getattr(p, "model", None) is not net for p in loaded)
