"""Fast unit tests of the core math modules with tiny random weights (no fixtures, CPU, < a few seconds)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from instancediffusion_core.model.addons import IncompatibleModelError, InstanceDiffusionAddons, fuser_sort_key
from instancediffusion_core.model.convnext import ConvNeXt
from instancediffusion_core.model.fourier import fourier_embed
from instancediffusion_core.model.fuser import Fuser
from instancediffusion_core.model.keys import FUSER_SUFFIXES
from instancediffusion_core.model.position_net import DROP_CONFIGS, DropFlags, PositionNet
from instancediffusion_core.model.scaleu import scaleu

TINY_POSNET = dict(text_dim=12, out_dim=16, mid_dim=24, n_slots=6, num_freqs=4, n_scribble_points=3,
                   n_polygon_points=5, convnext_dims=(4, 8, 8, 16), convnext_depths=(1, 2, 1, 1),
                   n_seg_tokens=4)


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Unit-variance-ish random weights so every branch contributes (zero-init nulls/gates would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                bound = math.sqrt(3.0 / math.prod(p.shape[1:]))
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
            elif name.endswith("alpha_attn") or name.endswith("alpha_dense"):
                p.fill_(0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if name.endswith("norm.weight") else 0.0))
    return module


def tiny_posnet(seed=0) -> PositionNet:
    return randomize_(PositionNet(**TINY_POSNET), seed).eval()


def tiny_grounding(net: PositionNet, batch=2, seg_size=None, with_segs=(True, False), seed=1) -> dict:
    g = torch.Generator().manual_seed(seed)
    n, s = net.n_slots, seg_size or net.seg_size
    out = {
        "boxes": torch.rand(batch, n, 4, generator=g),
        "masks": torch.zeros(batch, n),
        "positive_embeddings": torch.randn(batch, n, net.text_dim, generator=g),
        "points": torch.rand(batch, n, 2, generator=g),
        "scribbles": torch.zeros(batch, n, 2 * net.n_scribble_points),
        "polygons": torch.zeros(batch, n, 2 * net.n_polygon_points),
        "segs": torch.zeros(batch, n, s, s),
    }
    for b in range(batch):
        out["masks"][b, :3] = 1
        out["scribbles"][b, 2] = torch.rand(2 * net.n_scribble_points, generator=g)
        out["polygons"][b, 1] = torch.rand(2 * net.n_polygon_points, generator=g)
        if with_segs[b % len(with_segs)]:
            out["segs"][b, 1, s // 4: s // 2, s // 8: s // 2] = 1
    return out


def reference_tokens(net: PositionNet, g: dict, drop: DropFlags) -> torch.Tensor:
    """Spec 1.3 written out literally: ConvNeXt always run, every keep applied as a multiplication."""
    m = g["masks"][..., None]
    drop_boxes = drop.boxes and not (drop.boxes and drop.points and drop.scribbles and drop.masks)
    zero = torch.zeros_like(m)
    four = lambda x: fourier_embed(x, net.num_freqs)  # noqa: E731
    text = g["positive_embeddings"] * m + (1 - m) * net.null_positive_feature
    e_b = (k := zero if drop_boxes else m) * four(g["boxes"]) + (1 - k) * net.null_position_feature
    e_p = (k := zero if drop.points else m) * four(g["points"]) + (1 - k) * net.null_point_feature
    k = zero if drop.scribbles else ((g["scribbles"].sum(-1, keepdim=True) + m) > 0).float()
    e_s = four(g["scribbles"]) * k + (1 - k) * net.null_scribble_feature
    k = zero if drop.masks else ((g["polygons"].sum(-1, keepdim=True) + m) > 0).float()
    e_poly = four(g["polygons"]) * k + (1 - k) * net.null_polygon_feature
    segs = F.interpolate(g["segs"], size=net.seg_size, mode="nearest")
    feat = net.convnext_tiny_backbone(net.in_conv(segs))
    feat = feat.reshape(feat.shape[0], -1, net.n_seg_tokens).permute(0, 2, 1)
    k_seg = torch.zeros(segs.shape[0]) if drop.masks else (segs.sum((1, 2, 3)) > 0).float()
    k_seg = k_seg.view(-1, 1, 1)
    seg = feat * k_seg + (1 - k_seg) * net.null_seg_feature + net.pos_embedding
    lin = net.linears_list
    return torch.cat([lin[0](torch.cat([text, e_b], -1)), lin[1](torch.cat([text, e_p], -1)),
                      lin[2](torch.cat([text, e_s], -1)), lin[3](torch.cat([text, e_poly], -1)), lin[4](seg)], 1)


class CallCounter:
    def __init__(self, module):
        self.calls, self.batches = 0, []
        module.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.calls += 1
        self.batches.append(args[0].shape[0])


def naive_fuser(f: Fuser, x, objs, scale=1.0):
    """Official GatedSelfAttentionDense: full (Nv+T)^2 self-attention with explicit softmax, then visual rows."""
    nv = x.shape[1]
    z = f.norm1(torch.cat([x, f.linear(objs)], 1))
    b, n, c = z.shape
    h = f.n_heads
    q, k, v = (p(z).view(b, n, h, c // h).permute(0, 2, 1, 3) for p in (f.attn.to_q, f.attn.to_k, f.attn.to_v))
    att = (q @ k.transpose(-1, -2) * (c // h) ** -0.5).softmax(-1)
    a = f.attn.to_out((att @ v).permute(0, 2, 1, 3).reshape(b, n, c))[:, :nv]
    x = x + scale * torch.tanh(f.alpha_attn) * a
    return x + scale * torch.tanh(f.alpha_dense) * f.ff(f.norm2(x))


def tiny_fuser(width=16, context=12, heads=8, seed=0):
    return randomize_(Fuser(width, context, heads), seed).eval()


# ---------------------------------------------------------------------------------------------------- Fourier

def test_fourier_layout_is_frequency_major_with_float32_frequencies():
    x = torch.rand(2, 3, 5)
    out = fourier_embed(x, num_freqs=4, temperature=100)
    assert out.shape == (2, 3, 4 * 2 * 5)
    freqs = 100 ** (torch.arange(4, dtype=torch.float32) / 4)
    for k in range(4):
        for s, fn in enumerate((torch.sin, torch.cos)):
            for d in range(5):
                assert torch.equal(out[..., k * 10 + s * 5 + d], fn(freqs[k] * x[..., d]))


def test_fourier_keeps_half_precision_dtype_but_computes_in_float32():
    x = torch.rand(4, 7)
    out16 = fourier_embed(x.half())
    assert out16.dtype == torch.float16
    assert torch.equal(out16, fourier_embed(x.half().float()).half())


# ---------------------------------------------------------------------------------------------------- ConvNeXt

def test_convnext_dims_and_depths_are_inferred_from_weights():
    net = randomize_(ConvNeXt((8, 16, 32, 64), (1, 2, 1, 3)))
    cfg = ConvNeXt.config_from_state_dict(net.state_dict())
    assert cfg == {"dims": (8, 16, 32, 64), "depths": (1, 2, 1, 3), "in_chans": 3}
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 64, 2, 2) and net.stride == 32


def test_convnext_channels_first_norm_equals_layer_norm_over_channels():
    net = randomize_(ConvNeXt((4, 8), (1, 1)))
    ln = net.downsample_layers[1][0]
    x = torch.randn(2, 4, 5, 3)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (4,), ln.weight, ln.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), ref, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- position net

def test_position_net_sizes_are_inferred_from_state_dict():
    net = tiny_posnet()
    cfg = PositionNet.config_from_state_dict(net.state_dict())
    for key, value in TINY_POSNET.items():
        assert cfg[key] == value, key
    assert cfg["seg_feature_dim"] == 4 * TINY_POSNET["convnext_dims"][-1]
    loaded = PositionNet.from_state_dict(net.state_dict())
    assert loaded.seg_size == net.seg_size == 64 * math.isqrt(TINY_POSNET["n_seg_tokens"])
    g = tiny_grounding(net)
    with torch.no_grad():
        assert torch.equal(loaded(g, DROP_CONFIGS["mask"])[0], net(g, DROP_CONFIGS["mask"])[0])


@pytest.mark.parametrize("config", sorted(DROP_CONFIGS))
def test_position_net_equals_literal_spec_formula(config):
    net = tiny_posnet()
    g = tiny_grounding(net)
    with torch.no_grad():
        tokens, drop_box_mask = net(g, DROP_CONFIGS[config])
        ref = reference_tokens(net, g, DROP_CONFIGS[config])
    assert tokens.shape == (2, 4 * net.n_slots + net.n_seg_tokens, net.out_dim)
    torch.testing.assert_close(tokens, ref, atol=1e-5, rtol=0)
    drop = DROP_CONFIGS[config]
    assert drop_box_mask == (drop.boxes and drop.masks)


def test_position_net_runs_convnext_only_for_images_with_kept_segs():
    net = tiny_posnet()
    counter = CallCounter(net.convnext_tiny_backbone)
    g = tiny_grounding(net, batch=3, with_segs=(True, False, False))
    with torch.no_grad():
        tokens, _ = net(g, DROP_CONFIGS["mask"])
        assert counter.batches == [1]                           # only image 0 has seg pixels
        net(g, DROP_CONFIGS["box"])                             # masks dropped: seg features unused
        net({k: v for k, v in g.items() if k != "segs"}, DROP_CONFIGS["scribble"])
        assert counter.calls == 1
        ref = reference_tokens(net, g, DROP_CONFIGS["mask"])   # runs the ConvNeXt on all 3 images
    assert counter.calls == 2 and counter.batches[-1] == 3
    assert torch.equal(tokens[1:], ref[1:])                     # skipped images: bit-identical
    torch.testing.assert_close(tokens[:1], ref[:1], atol=1e-6, rtol=0)


def test_position_net_resizes_segs_by_nearest_only_when_needed():
    net = tiny_posnet()
    big = tiny_grounding(net, seg_size=2 * net.seg_size)
    small = dict(big, segs=F.interpolate(big["segs"], size=net.seg_size, mode="nearest"))
    with torch.no_grad():
        assert torch.equal(net(big, DROP_CONFIGS["mask"])[0], net(small, DROP_CONFIGS["mask"])[0])


def test_all_drop_flags_keep_boxes_like_the_official_rule():
    net = tiny_posnet()
    g = tiny_grounding(net)
    everything = DropFlags(boxes=True, points=True, scribbles=True, masks=True)
    with torch.no_grad():
        tokens, drop_box_mask = net(g, everything)
        same, _ = net(g, DropFlags(boxes=False, points=True, scribbles=True, masks=True))
    assert not drop_box_mask and torch.equal(tokens, same)


def test_null_tokens_equal_forward_of_zero_input_for_every_config():
    net = tiny_posnet()
    g = {k: torch.zeros_like(v) for k, v in tiny_grounding(net, batch=1).items()}
    counter = CallCounter(net.convnext_tiny_backbone)
    null = net.null_tokens(batch=2)
    assert null.shape == (2, 4 * net.n_slots + net.n_seg_tokens, net.out_dim)
    with torch.no_grad():
        for drop in DROP_CONFIGS.values():
            torch.testing.assert_close(null[1:], net(g, drop)[0], atol=1e-6, rtol=0)
    assert counter.calls == 0


def test_position_net_half_precision_in_and_out():
    net = tiny_posnet()
    g = tiny_grounding(net)
    with torch.no_grad():
        ref = net(g, DROP_CONFIGS["mask"])[0]
        out = net.to(torch.bfloat16)(g, DROP_CONFIGS["mask"])[0]  # float32 inputs are cast to the weights
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_position_net_bad_shape_names_the_field():
    net = tiny_posnet()
    g = tiny_grounding(net)
    g["boxes"] = g["boxes"][:, :-1]
    with pytest.raises(ValueError, match="'boxes'.*expected \\[2, 6, 4\\]"):
        net(g, DROP_CONFIGS["box"])
    with pytest.raises(ValueError, match="'masks' is missing"):
        net({"boxes": torch.zeros(1, 6, 4)}, DROP_CONFIGS["box"])


# ---------------------------------------------------------------------------------------------------- fuser

def test_fuser_scale_zero_returns_x_itself():
    f = tiny_fuser()
    x = torch.randn(2, 9, 16)
    assert f(x, torch.randn(2, 5, 12), scale=0.0) is x


@pytest.mark.parametrize("scale", [1.0, 0.4])
def test_fuser_visual_rows_only_equals_full_attention_reference(scale):
    f = tiny_fuser()
    x, objs = torch.randn(2, 9, 16), torch.randn(2, 7, 12)
    with torch.no_grad():
        out = f(x, objs, scale=scale)
        ref = naive_fuser(f, x, objs, scale=scale)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, x, atol=1e-3)                # the fuser really did something


def test_fuser_attention_callable_gets_visual_queries_and_all_keys():
    f = tiny_fuser()
    x, objs = torch.randn(2, 9, 16), torch.randn(1, 7, 12)      # batch-1 tokens broadcast over the batch
    seen = []

    def attention(q, k, v, heads):
        seen.append((tuple(q.shape), tuple(k.shape), tuple(v.shape), heads))
        b, nq, inner = q.shape
        qh, kh, vh = (t.view(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
        w = (qh @ kh.transpose(-1, -2) / math.sqrt(inner // heads)).softmax(-1)
        return (w @ vh).transpose(1, 2).reshape(b, nq, inner)

    with torch.no_grad():
        torch.testing.assert_close(f(x, objs, attention=attention), f(x, objs), atol=1e-6, rtol=1e-5)
    assert seen == [((2, 9, 16), (2, 16, 16), (2, 16, 16), 8)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fuser_half_precision_returns_input_dtype(dtype):
    f = tiny_fuser()
    x, objs = torch.randn(2, 9, 16), torch.randn(2, 7, 12)
    with torch.no_grad():
        ref = f(x, objs)
        assert f(x.to(dtype), objs).dtype == dtype              # fp32 weights, half input
        half = f.to(dtype)
        out = half(x.to(dtype), objs)                           # half weights compute in half
    assert out.dtype == dtype
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_fuser_rejects_wrong_width_with_a_clear_error():
    with pytest.raises(ValueError, match="16-wide"):
        tiny_fuser()(torch.randn(1, 4, 32), torch.randn(1, 3, 12))


# ---------------------------------------------------------------------------------------------------- ScaleU

def reference_scaleu(h, hs, b, s):
    """Float64 reference: scale DFT bins {0, -1 mod N} on each axis (the centred 2x2 window after fftshift)."""
    hh, ww = hs.shape[-2:]
    x = torch.fft.fft2(hs.double())
    scale = 1 + math.tanh(float(s))
    for i in {0, (-1) % hh}:
        for j in {0, (-1) % ww}:
            x[..., i, j] *= scale
    return h.double() * (1 + torch.tanh(b.double()))[None, :, None, None], torch.fft.ifft2(x).real


@pytest.mark.parametrize("hw", [(8, 8), (5, 9), (7, 4), (1, 3), (2, 1)])
def test_scaleu_matches_bin_reference_for_any_grid(hw):
    h, hs = torch.randn(2, 6, *hw), torch.randn(2, 3, *hw) + 2.0
    b, s = torch.randn(6) * 0.5, torch.tensor([0.3])
    out_h, out_hs = scaleu(h, hs, b, s)
    ref_h, ref_hs = reference_scaleu(h, hs, b, s)
    torch.testing.assert_close(out_h.double(), ref_h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_hs.double(), ref_hs, atol=1e-5, rtol=1e-5)


def test_scaleu_computes_in_float32_for_half_inputs():
    h, hs = torch.randn(1, 4, 6, 10).half(), torch.randn(1, 4, 6, 10).half()
    b, s = (torch.randn(4) * 0.5).half(), torch.tensor([0.4]).half()
    out_h, out_hs = scaleu(h, hs, b, s)
    ref_h, ref_hs = scaleu(h.float(), hs.float(), b.float(), s.float())
    assert out_h.dtype == out_hs.dtype == torch.float16
    assert torch.equal(out_h, ref_h.half()) and torch.equal(out_hs, ref_hs.half())


# ---------------------------------------------------------------------------------------------------- addons

FUSER_WIDTHS = {"input_blocks.1.1.transformer_blocks.0": 8, "input_blocks.10.1.transformer_blocks.0": 16,
                "middle_block.1.transformer_blocks.0": 16, "output_blocks.2.1.transformer_blocks.0": 16,
                "input_blocks.2.1.transformer_blocks.0": 8}


def tiny_addons(seed=0):
    fusers = {p: Fuser(w, TINY_POSNET["out_dim"]) for p, w in FUSER_WIDTHS.items()}
    return randomize_(InstanceDiffusionAddons(PositionNet(**TINY_POSNET), fusers, {3: 16, 11: 8}), seed).eval()


def test_addons_state_dict_uses_official_keys_and_round_trips(tmp_path):
    addons = tiny_addons()
    sd = addons.state_dict()
    fuser_keys = {f"{p}.fuser.{s}" for p in FUSER_WIDTHS for s in FUSER_SUFFIXES}
    scaleu_keys = {f"scaleu_{kind}_{k}" for k in (3, 11) for kind in "bs"}
    posnet_keys = {f"position_net.{k}" for k in addons.position_net.state_dict()}
    assert set(sd) == fuser_keys | scaleu_keys | posnet_keys
    assert "position_net.linears_list.3.4.weight" in sd and sd["scaleu_s_3"].shape == (1,)

    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "addons.safetensors"))
    loaded_sd = load_file(str(tmp_path / "addons.safetensors"))
    loaded = InstanceDiffusionAddons.from_state_dict(loaded_sd)
    assert loaded.state_dict().keys() == sd.keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sd.items())
    # strict assign-load: the parameters are the file's tensors, not copies
    assert loaded.position_net.pos_embedding.data_ptr() == loaded_sd["position_net.pos_embedding"].data_ptr()
    assert loaded.fuser_widths() == FUSER_WIDTHS and loaded.scaleu_widths() == {3: 16, 11: 8}
    assert loaded.token_dim == TINY_POSNET["out_dim"] and loaded.text_dim == TINY_POSNET["text_dim"]


def test_addons_fuser_lookup_and_execution_order():
    addons = tiny_addons()
    assert addons.fuser_prefixes == ["input_blocks.1.1.transformer_blocks.0", "input_blocks.2.1.transformer_blocks.0",
                                     "input_blocks.10.1.transformer_blocks.0", "middle_block.1.transformer_blocks.0",
                                     "output_blocks.2.1.transformer_blocks.0"]
    assert addons.fuser("middle_block.1.transformer_blocks.0").query_dim == 16
    assert addons.fuser("output_blocks.9.1.transformer_blocks.0") is None
    assert fuser_sort_key("input_blocks.10.1") > fuser_sort_key("input_blocks.9.1")


def test_addons_partial_weights_and_apply_scaleu():
    full = tiny_addons().state_dict()
    only_scaleu = InstanceDiffusionAddons.from_state_dict({k: v for k, v in full.items() if k.startswith("scaleu_")})
    assert only_scaleu.position_net is None and only_scaleu.fuser_prefixes == []
    h, hs = torch.randn(1, 16, 4, 6), torch.randn(1, 8, 4, 6)
    out = only_scaleu.apply_scaleu(3, h, hs)
    assert torch.equal(out[0], scaleu(h, hs, full["scaleu_b_3"], full["scaleu_s_3"])[0])
    same = only_scaleu.apply_scaleu(5, h, hs)
    assert same[0] is h and same[1] is hs


def test_addons_from_state_dict_rejects_foreign_and_incomplete_keys():
    sd = tiny_addons().state_dict()
    with pytest.raises(ValueError, match="time_embed.0.weight"):
        InstanceDiffusionAddons.from_state_dict({**sd, "time_embed.0.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="scaleu_s_3"):
        InstanceDiffusionAddons.from_state_dict({k: v for k, v in sd.items() if k != "scaleu_s_3"})
    with pytest.raises(RuntimeError, match="norm2.bias"):
        InstanceDiffusionAddons.from_state_dict(
            {k: v for k, v in sd.items() if k != "middle_block.1.transformer_blocks.0.fuser.norm2.bias"})


def test_check_compatible_accepts_matching_and_explains_sdxl():
    addons = tiny_addons()
    addons.check_compatible(dict(FUSER_WIDTHS), {3: 16, 11: 8, 0: 99}, TINY_POSNET["out_dim"])
    addons.check_compatible({}, {}, None)                       # nothing described: nothing to check
    sdxl_like = {"input_blocks.4.1.transformer_blocks.0": 16, "middle_block.1.transformer_blocks.0": 32}
    with pytest.raises(IncompatibleModelError) as err:
        addons.check_compatible(sdxl_like, {}, 2048)
    msg = str(err.value)
    assert "SD1.5 InstanceDiffusion weights" in msg and "SDXL (context dim 2048)" in msg
    assert "input_blocks.1.1.transformer_blocks.0 (width 8): the model has no such" in msg
    assert "middle_block.1.transformer_blocks.0: weights width 16, model block width 32" in msg
    with pytest.raises(IncompatibleModelError, match="ScaleU output block 11: weights width 8, model width 4"):
        addons.check_compatible({}, {3: 16, 11: 4}, None)
    assert issubclass(IncompatibleModelError, ValueError)


def test_summary_counts_groups():
    addons = tiny_addons()
    s = addons.summary()
    fuser_params = sum(t.numel() for p in FUSER_WIDTHS for t in addons.fuser(p).state_dict().values())
    assert s["fusers"] == {"tensors": 17 * len(FUSER_WIDTHS), "count": len(FUSER_WIDTHS), "params": fuser_params}
    assert s["scaleu"] == {"tensors": 4, "params": 16 + 1 + 8 + 1, "blocks": 2}
    assert s["position_net"]["params"] == sum(p.numel() for p in addons.position_net.parameters())
    assert s["dtype"] == "float32" and addons.to(torch.float16).summary()["dtype"] == "float16"


def test_addons_load_half_and_inference_mode_tensors():
    """ComfyUI reads files inside torch.inference_mode; the weights must still work outside it, in their dtype."""
    with torch.inference_mode():
        sd = {k: v.half() for k, v in tiny_addons().state_dict().items()}
    addons = InstanceDiffusionAddons.from_state_dict(sd)
    assert addons.summary()["dtype"] == "float16"
    fuser = addons.fuser(addons.fuser_prefixes[-1])
    x = torch.randn(1, 5, 16)
    out = fuser(x, torch.randn(1, 3, TINY_POSNET["out_dim"]))   # grad mode on, fp32 input
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
