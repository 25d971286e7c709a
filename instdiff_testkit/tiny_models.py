"""Tiny, deterministic models built from the REAL ComfyUI classes of the host under test.

Why tiny: the host tier must run on 2 CPU cores in seconds, yet exercise ComfyUI's own UNet, samplers and
loaders (not a mock). Why deterministic: ComfyUI builds layers with `comfy.ops.disable_weight_init`, which leaves
`torch.empty` garbage in every weight (host notes, trap 3), so every tensor is filled here from a seed and its
key name - the values do not depend on module creation order, device or host version.

Requires the host to be imported first (tests/host/conftest.py does that).
"""
from __future__ import annotations

import math
import os
import zlib

import torch

from instancediffusion_core.model.keys import FUSER_GATES, FUSER_SUFFIXES

# Official SD1.5 topology (what ComfyUI's model detection reports for a real SD1.5 UNet), channels left open.
SD15_TOPOLOGY = {
    "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "out_channels": 4,
    "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_middle": 1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_linear_in_transformer": False, "context_dim": 768,
    "use_temporal_resblock": False, "use_temporal_attention": False,
}

# SD2.x: same layout as SD1.5, 1024-wide context (OpenCLIP-H), linear transformer projections.
SD2_TOPOLOGY = {**SD15_TOPOLOGY, "use_linear_in_transformer": True, "context_dim": 1024}

# SDXL: 3 levels, 2048-wide context, ADM input; transformer depths cut from (2, 10) to 1 to stay tiny.
SDXL_TOPOLOGY = {
    "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "out_channels": 4,
    "num_res_blocks": [2, 2, 2], "channel_mult": [1, 2, 4],
    "transformer_depth": [0, 0, 1, 1, 1, 1], "transformer_depth_middle": 1,
    "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1],
    "use_linear_in_transformer": True, "context_dim": 2048,
    "use_temporal_resblock": False, "use_temporal_attention": False,
}

# The tiny SD1.5 *checkpoint file*: ComfyUI only detects SD1.5 at 320 channels and a 768 context, so those stay
# and the depth is cut instead: 2 levels of 320 channels, 1 res block and 1 transformer block each (CLIP-L is
# full size, its shape is fixed), so the file is ~340 MB in fp16 and builds in ~2 s.
CHECKPOINT_UNET = {
    **SD15_TOPOLOGY, "model_channels": 320, "num_res_blocks": [1, 1], "channel_mult": [1, 1],
    "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
}
CHECKPOINT_VERSION = "v1"  # bump when the file layout or values change (the cached file name carries it)

DEVICE_ENV = "INSTDIFF_TEST_DEVICE"   # where the host tier's models load: cpu (default) or e.g. cuda on a GPU machine


def test_device() -> torch.device:
    """The load device of the models the host tier builds (``INSTDIFF_TEST_DEVICE``, default ``cpu``); weights are
    offloaded to the CPU, as ComfyUI does on a GPU machine."""
    return torch.device(os.environ.get(DEVICE_ENV, "").strip() or "cpu")


# ---------------------------------------------------------------------------------------------------------------
# deterministic values

def _generator(seed: int, key: str) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(key.encode())) % (2 ** 63))


def value_rule(key: str, shape) -> tuple[float, float]:
    """(offset, half-width) of the uniform distribution for one tensor, chosen by its key name.

    Mirrors the parity fixture's recipe table (tests/fixtures/parity-public/README.md section 1): unit-variance
    linears/convs, norms near identity, gates and ScaleU parameters in their active range.
    """
    leaf = key.rsplit(".", 1)[-1]
    if leaf in FUSER_GATES:
        return 0.5, 0.1                    # tanh(alpha) ~ 0.38..0.54: fusers clearly active
    if key.startswith("scaleu_b_"):
        return 0.0, 0.5
    if key.startswith("scaleu_s_"):
        return 0.3, 0.2
    if leaf.startswith("null_"):
        return 0.0, 0.5
    if leaf == "pos_embedding":
        return 0.0, 0.02
    if leaf == "gamma":
        return 0.3, 0.1
    if leaf == "vae_scale":
        return 0.18215, 0.0                # SD1.5 latent scale, as ComfyUI's VAELoader sets it for TAESD
    if leaf == "vae_shift":
        return 0.0, 0.0
    if leaf == "weight" and len(shape) >= 2:
        fan_in = max(1, math.prod(shape[1:]))
        return 0.0, math.sqrt(3.0 / fan_in)
    if leaf == "weight":
        return 1.0, 0.1
    if leaf == "bias":
        return 0.0, 0.02
    return 0.0, 0.1


def deterministic_tensor(key: str, shape, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform values offset +- half-width (see `value_rule`), from a generator seeded by (seed, key)."""
    shape = tuple(int(s) for s in shape)
    offset, half = value_rule(key, shape)
    u = torch.rand(shape, generator=_generator(seed, key), dtype=torch.float32)
    return (offset + half * (2.0 * u - 1.0)).to(dtype)


def init_module_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter and floating buffer of `module` in place with `deterministic_tensor` values."""
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if tensor.is_floating_point():
                tensor.copy_(deterministic_tensor(name, tensor.shape, seed, tensor.dtype))
    return module


# ---------------------------------------------------------------------------------------------------------------
# tiny UNets as real ModelPatchers

def _tiny_patcher(config_cls, topology: dict, dtype, seed: int, model_channels: int, head_channels=None,
                  load_device=None, manual_cast_dtype=None):
    import comfy.model_patcher

    unet_config = {**topology, "model_channels": int(model_channels)}
    model_config = config_cls(unet_config)
    if head_channels is not None:          # SD2/SDXL use 64-wide heads: more than a tiny level has
        model_config.unet_config["num_head_channels"] = int(head_channels)
    model_config.set_inference_dtype(dtype, manual_cast_dtype)
    model = model_config.get_model({}, device=torch.device("cpu"))
    if manual_cast_dtype is not None:              # e.g. fp8 storage: fill in float32, then store as `dtype`
        model.diffusion_model.to(torch.float32)
    init_module_(model.diffusion_model, seed)
    if manual_cast_dtype is not None:
        model.diffusion_model.to(dtype)
    model.eval()
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device or test_device(), offload_device=cpu)


def tiny_sd15_patcher(dtype: torch.dtype = torch.float32, seed: int = 0, model_channels: int = 32, load_device=None,
                      manual_cast_dtype: torch.dtype | None = None):
    """`comfy.supported_models.SD15` with the full SD1.5 topology (16 transformer blocks, 12 output blocks,
    context 768, 8 heads) but `model_channels` wide; a real `ModelPatcher` loading on `load_device` (default
    `test_device()`), offloaded to the CPU. `manual_cast_dtype`: store in `dtype` (e.g. fp8), compute in this one,
    as ComfyUI does under `--fp8_e4m3fn-unet`."""
    import comfy.supported_models

    return _tiny_patcher(comfy.supported_models.SD15, SD15_TOPOLOGY, dtype, seed, model_channels,
                         load_device=load_device, manual_cast_dtype=manual_cast_dtype)


def tiny_sd2_patcher(dtype: torch.dtype = torch.float32, seed: int = 0, model_channels: int = 32):
    """SD2.x-like (`comfy.supported_models.SD20`, context 1024): a wrong base model for InstanceDiffusion."""
    import comfy.supported_models

    return _tiny_patcher(comfy.supported_models.SD20, SD2_TOPOLOGY, dtype, seed, model_channels,
                         head_channels=min(64, model_channels // 2))


def tiny_sdxl_patcher(dtype: torch.dtype = torch.float32, seed: int = 0, model_channels: int = 32):
    """SDXL-like (`comfy.supported_models.SDXL`, context 2048, ADM): a wrong base model for InstanceDiffusion."""
    import comfy.supported_models

    return _tiny_patcher(comfy.supported_models.SDXL, SDXL_TOPOLOGY, dtype, seed, model_channels,
                         head_channels=min(64, model_channels // 2))


def _diffusion_model(patcher_or_model):
    model = getattr(patcher_or_model, "model", patcher_or_model)
    return getattr(model, "diffusion_model", model)


def unet_topology(patcher) -> tuple[dict, dict, int]:
    """(fuser_widths, scaleu_widths, context_dim) of a ComfyUI UNet, read from its real modules.

    fuser_widths: {official fuser prefix, e.g. "input_blocks.1.1.transformer_blocks.0": width} - the module path
    of every `BasicTransformerBlock`, which is where the official checkpoint hangs each `.fuser`.
    scaleu_widths: {output block k: channels of h entering output block k}, recorded by one dummy forward with
    an `output_block_patch` (the hook ScaleU uses), so it is exactly what the patch will see.
    """
    from comfy.ldm.modules.attention import BasicTransformerBlock

    unet = _diffusion_model(patcher)
    fuser_widths, context_dim = {}, None
    for name, module in unet.named_modules():
        if isinstance(module, BasicTransformerBlock):
            fuser_widths[name] = int(module.norm1.normalized_shape[0])
            if context_dim is None:
                context_dim = int(module.attn2.to_k.in_features)

    seen = {}

    def record(h, hsp, transformer_options):
        seen[int(transformer_options["block"][1])] = int(h.shape[1])
        return h, hsp

    levels = len(getattr(unet, "channel_mult", [1, 1, 1, 1]))
    side = 2 ** max(levels - 1, 0)
    base = getattr(patcher, "model", patcher)        # the compute dtype (a manual-cast UNet may store fp8)
    dtype = getattr(base, "manual_cast_dtype", None) or next(unet.parameters()).dtype
    x = torch.zeros(1, int(unet.in_channels), side, side, dtype=dtype)
    context = torch.zeros(1, 1, context_dim or 1, dtype=dtype)
    kwargs = {}
    if getattr(unet, "num_classes", None) is not None:     # SDXL-like: class/ADM vector input
        first = next(m for m in unet.label_emb.modules() if hasattr(m, "in_features"))
        kwargs["y"] = torch.zeros(1, int(first.in_features), dtype=dtype)
    with torch.no_grad():
        unet(x, timesteps=torch.zeros(1), context=context,
             transformer_options={"patches": {"output_block_patch": [record]}}, **kwargs)
    scaleu_widths = dict(sorted(seen.items()))
    return fuser_widths, scaleu_widths, context_dim


# ---------------------------------------------------------------------------------------------------------------
# InstanceDiffusion add-on weights in the official key layout (names from instancediffusion_core.model.keys)


# Fourier widths of the official position net: 16 frequencies x (sin, cos) x coordinates.
BOX_FOURIER, POINT_FOURIER, SCRIBBLE_FOURIER, POLYGON_FOURIER = 4 * 32, 2 * 32, 40 * 32, 512 * 32
MAX_OBJS = 30


def addon_shapes(fuser_widths: dict, scaleu_widths: dict, token_dim: int = 768, text_dim: int = 768,
                 mid_dim: int = 32, convnext_dims=(8, 16, 32, 64), convnext_depths=(1, 1, 1, 1)) -> dict:
    """{official key: shape} for ScaleU, position net (UniFusion + ConvNeXt) and the fusers, in official order."""
    shapes = {}
    for k, ch in sorted(scaleu_widths.items()):
        shapes[f"scaleu_b_{k}"] = (int(ch),)
        shapes[f"scaleu_s_{k}"] = (1,)
    seg_dim = 4 * int(convnext_dims[-1])   # 2x2 patches of the last ConvNeXt stage per seg token
    p = "position_net."
    shapes[p + "pos_embedding"] = (1, 64, seg_dim)
    shapes[p + "null_positive_feature"] = (text_dim,)
    shapes[p + "null_position_feature"] = (BOX_FOURIER,)
    shapes[p + "null_point_feature"] = (POINT_FOURIER,)
    shapes[p + "null_scribble_feature"] = (SCRIBBLE_FOURIER,)
    shapes[p + "null_polygon_feature"] = (POLYGON_FOURIER,)
    shapes[p + "null_seg_feature"] = (seg_dim,)
    shapes[p + "in_conv.weight"] = (3, MAX_OBJS, 3, 3)
    shapes[p + "in_conv.bias"] = (3,)
    cn = p + "convnext_tiny_backbone."
    dims = [int(d) for d in convnext_dims]
    for i, d in enumerate(dims):
        if i == 0:
            shapes[cn + "downsample_layers.0.0.weight"] = (d, 3, 4, 4)
            shapes[cn + "downsample_layers.0.0.bias"] = (d,)
            shapes[cn + "downsample_layers.0.1.weight"] = (d,)
            shapes[cn + "downsample_layers.0.1.bias"] = (d,)
        else:
            shapes[cn + f"downsample_layers.{i}.0.weight"] = (dims[i - 1],)
            shapes[cn + f"downsample_layers.{i}.0.bias"] = (dims[i - 1],)
            shapes[cn + f"downsample_layers.{i}.1.weight"] = (d, dims[i - 1], 2, 2)
            shapes[cn + f"downsample_layers.{i}.1.bias"] = (d,)
    for i, (d, depth) in enumerate(zip(dims, convnext_depths)):
        for j in range(int(depth)):
            s = cn + f"stages.{i}.{j}."
            shapes[s + "gamma"] = (d,)
            shapes[s + "dwconv.weight"] = (d, 1, 7, 7)
            shapes[s + "dwconv.bias"] = (d,)
            shapes[s + "norm.weight"] = (d,)
            shapes[s + "norm.bias"] = (d,)
            shapes[s + "pwconv1.weight"] = (4 * d, d)
            shapes[s + "pwconv1.bias"] = (4 * d,)
            shapes[s + "pwconv2.weight"] = (d, 4 * d)
            shapes[s + "pwconv2.bias"] = (d,)
    branch_inputs = (text_dim + BOX_FOURIER, text_dim + POINT_FOURIER, text_dim + SCRIBBLE_FOURIER,
                     text_dim + POLYGON_FOURIER, seg_dim)
    for b, width in enumerate(branch_inputs):
        s = p + f"linears_list.{b}."
        shapes[s + "0.weight"], shapes[s + "0.bias"] = (mid_dim, width), (mid_dim,)
        shapes[s + "2.weight"], shapes[s + "2.bias"] = (mid_dim, mid_dim), (mid_dim,)
        shapes[s + "4.weight"], shapes[s + "4.bias"] = (token_dim, mid_dim), (token_dim,)
    for prefix, c in fuser_widths.items():
        c = int(c)
        f = f"{prefix}.fuser."
        for suffix, shape in zip(FUSER_SUFFIXES, ((), (), (c, token_dim), (c,), (c, c), (c, c), (c, c), (c, c),
                                                  (c,), (8 * c, c), (8 * c,), (c, 4 * c), (c,), (c,), (c,), (c,),
                                                  (c,))):
            shapes[f + suffix] = shape
    return shapes


def tiny_addon_state_dict(fuser_widths: dict, scaleu_widths: dict, token_dim: int = 768, text_dim: int = 768,
                          mid_dim: int = 32, convnext_dims=(8, 16, 32, 64), convnext_depths=(1, 1, 1, 1),
                          seed: int = 0) -> dict:
    """Official-key add-on weights sized for a (tiny) UNet: deterministic float32 values, moderate scale,
    fuser gates ~0.5 so the fusers are active."""
    shapes = addon_shapes(fuser_widths, scaleu_widths, token_dim, text_dim, mid_dim, convnext_dims,
                          convnext_depths)
    return {key: deterministic_tensor(key, shape, seed) for key, shape in shapes.items()}


# ---------------------------------------------------------------------------------------------------------------
# a tiny SD1.5 checkpoint FILE for CheckpointLoaderSimple

def _meta_state_shapes(module: torch.nn.Module, prefix: str) -> dict:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items() if v.is_floating_point()}


def checkpoint_shapes() -> dict:
    """{key: shape} of the tiny SD1.5 checkpoint: cut-depth UNet (320 ch, context 768), full CLIP-L text
    encoder (ComfyUI's own class, so the layout is what the host expects; no text_projection, like real SD1.5
    files), TAESD-layout VAE. Built on the meta device: no memory, no time."""
    import comfy.clip_model
    import comfy.ops
    import comfy.sd1_clip
    import comfy.supported_models
    import comfy.taesd.taesd
    import json

    meta = torch.device("meta")
    model_config = comfy.supported_models.SD15(dict(CHECKPOINT_UNET))
    model_config.set_inference_dtype(torch.float16, None)
    unet = model_config.get_model({}, device=meta).diffusion_model
    shapes = _meta_state_shapes(unet, "model.diffusion_model.")

    config_path = os.path.join(os.path.dirname(comfy.sd1_clip.__file__), "sd1_clip_config.json")
    with open(config_path) as f:
        clip_config = json.load(f)
    clip = comfy.clip_model.CLIPTextModel(clip_config, torch.float16, meta, comfy.ops.manual_cast)
    shapes.update({k: v for k, v in _meta_state_shapes(clip, "cond_stage_model.transformer.").items()
                   if k.startswith("cond_stage_model.transformer.text_model.")})

    with torch.device("meta"):
        taesd = comfy.taesd.taesd.TAESD()
    shapes.update(_meta_state_shapes(taesd, "first_stage_model."))
    return shapes


def tiny_checkpoint_state_dict(seed: int = 0) -> dict:
    return {key: deterministic_tensor(key, shape, seed, torch.float16) for key, shape in checkpoint_shapes().items()}


def tiny_checkpoint_file(directory, seed: int = 0) -> str:
    """Path of the tiny SD1.5 checkpoint (fp16 safetensors) in `directory`, built there once (~340 MB, ~2 s)."""
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(str(directory), f"instdiff_tiny_sd15_{CHECKPOINT_VERSION}_s{seed}.safetensors")
    if not os.path.isfile(path):
        partial = path + f".{os.getpid()}.partial"
        save_file(tiny_checkpoint_state_dict(seed), partial)
        os.replace(partial, path)
    return path
