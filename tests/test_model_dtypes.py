"""The core computes where its input is, in a compute dtype, with the layer classes it is given (issue #14).

No ComfyUI here: ``CAST_OPS`` (weights cast to the input at use, what a host's cast-aware layers do) and the
``meta`` device with ``StrictDevices`` as the stand-in accelerator (any weight used on the wrong device fails).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from instancediffusion_core.model.addons import InstanceDiffusionAddons
from instancediffusion_core.model.fuser import Fuser
from instancediffusion_core.model.ops import CAST_OPS, TORCH_OPS, cast_like, compute_dtype_for, swap_ops
from instancediffusion_core.model.position_net import DROP_CONFIGS, PositionNet
from instdiff_testkit.device_checks import DeviceMismatch, StrictDevices
from test_core_modules import TINY_POSNET, randomize_, tiny_addons, tiny_grounding

META = torch.device("meta")
FP8 = torch.float8_e4m3fn


def _layers(module):
    return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.LayerNorm, nn.Conv2d))]


def test_ops_build_every_layer_and_swap_keeps_the_parameters():
    addons = tiny_addons()
    before = {n: p for n, p in addons.named_parameters()}
    sd = {k: v.clone() for k, v in addons.state_dict().items()}
    n = swap_ops(addons, CAST_OPS)
    assert n == len(_layers(addons)) > 0
    assert all(type(m).__module__ == CAST_OPS.Linear.__module__ for m in _layers(addons))
    after = dict(addons.named_parameters())
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before), "no copies"
    assert addons.state_dict().keys() == sd.keys()
    assert swap_ops(addons, CAST_OPS) == 0, "idempotent"
    built = InstanceDiffusionAddons.from_state_dict(sd, ops=CAST_OPS)
    assert {type(m) for m in _layers(built)} == {type(m) for m in _layers(addons)}


def test_cast_like_is_a_no_op_when_it_can_be():
    ref = torch.zeros(3)
    t = torch.ones(2)
    assert cast_like(t, ref) is t and cast_like(None, ref) is None
    assert cast_like(t, ref.half()).dtype == torch.float16
    assert compute_dtype_for(FP8) == torch.float32 and compute_dtype_for(torch.bfloat16) == torch.bfloat16


def _fp8_rounded(module):
    """The same module with fp8-rounded float32 weights (the exact reference of fp8 storage)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(FP8).float())
    return module


def test_fuser_fp8_storage_computes_in_the_compute_dtype():
    f = randomize_(Fuser(16, 12, 8, ops=CAST_OPS)).eval()
    ref = _fp8_rounded(randomize_(Fuser(16, 12, 8)).eval())
    f8 = f.to(FP8)
    x, objs = torch.randn(2, 9, 16), torch.randn(2, 7, 12)
    with torch.no_grad():
        out = f8(x, objs)                              # compute dtype None -> float32 for fp8 weights
        torch.testing.assert_close(out, ref(x, objs), rtol=1e-5, atol=1e-5)
        f8.compute_dtype = torch.bfloat16
        out16 = f8(x, objs)
    assert out16.dtype == torch.float32 and torch.isfinite(out16).all()
    assert (out16 - out).abs().max() < 0.05 * out.abs().max()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_position_net_half_compute_with_float32_storage(dtype):
    net = randomize_(PositionNet(**TINY_POSNET, ops=CAST_OPS)).eval()
    g = tiny_grounding(net)
    with torch.no_grad():
        ref = net(g, DROP_CONFIGS["mask"])[0]
        net.compute_dtype = dtype
        out = net(g, DROP_CONFIGS["mask"])[0]
        null = net.null_tokens()
    assert out.dtype == dtype and null.dtype == dtype
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_addons_set_compute_dtype_reaches_every_module():
    addons = tiny_addons()
    addons.set_compute_dtype(torch.float16)
    assert addons.compute_dtype == torch.float16
    assert {f.compute_dtype for f in addons.fusers()} == {torch.float16}
    assert addons.position_net.compute_dtype == torch.float16


# --------------------------------------------------------------------------------- weights left on the CPU

def test_fuser_runs_on_the_input_device_with_weights_left_elsewhere():
    """Partial load: some layers on the accelerator (meta here), the rest and the gates still on the CPU."""
    f = randomize_(Fuser(16, 12, 8, ops=CAST_OPS)).eval()
    f.attn.to(META)                                    # "loaded" part; linear, ff, norms and gates stay on the CPU
    x, objs = torch.zeros(2, 9, 16, device=META), torch.zeros(2, 7, 12)
    with torch.no_grad(), StrictDevices():
        out = f(x, objs)
    assert out.device == META and out.shape == x.shape


def test_position_net_runs_on_the_input_device_with_weights_left_elsewhere():
    net = randomize_(PositionNet(**TINY_POSNET, ops=CAST_OPS)).eval()
    net.linears_list[0].to(META)
    g = tiny_grounding(net)
    g = {k: (v if k == "segs" else v.to(META)) for k, v in g.items()}   # segs: keep is a value the net reads
    with torch.no_grad(), StrictDevices():
        tokens, _ = net(g, DROP_CONFIGS["mask"])
        null = net.null_tokens(device=META)
    assert tokens.device == META and null.device == META


def test_strict_devices_catches_what_meta_lets_through():
    """Plain torch layers with a CPU weight and a meta input: meta's linear does not complain, StrictDevices does
    (what CUDA would raise)."""
    f = randomize_(Fuser(16, 12, 8, ops=TORCH_OPS)).eval()
    x, objs = torch.zeros(2, 9, 16, device=META), torch.zeros(2, 7, 12, device=META)
    with torch.no_grad(), pytest.raises(DeviceMismatch):
        with StrictDevices():
            f(x, objs)
