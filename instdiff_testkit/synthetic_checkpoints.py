"""Builders of small synthetic weight files of every kind the checkpoint reader meets.

Shapes are tiny but the key LAYOUT is the real one: the add-on keys are exactly the official SD1.5 add-on keys of
the parity fixture's ``keys.json`` (checked by a test), and the shapes are mutually consistent (text/token width 8,
MLP width 12, ConvNeXt widths 4/4/8/8 with the real 3/3/9/3 depths, fuser widths 16/24/32), so the add-on model can
be built from them. Values are deterministic per (seed, key).

Files are written the way their producers write them: ``torch.save`` (zip format) for the official checkpoint
and logtd's files, safetensors for ours; the official one gets its real quirks (``ema`` + ``model``, OmegaConf
objects in ``config_dict``, ``_metadata`` on state dicts, storages located on ``cuda:0``, inner zip folder
``checkpoint_latest/``).
"""
from __future__ import annotations

import builtins
import collections
import contextlib
import io
import json
import math
import os
import pickle
import shlex
import struct
import sys
import types
import typing
import zipfile
import zlib
from pathlib import Path
from unittest import mock

import torch

from instancediffusion_core.model.keys import FUSER_SUFFIXES, SD15_INPUT_BLOCKS, SD15_OUTPUT_BLOCKS

FIXTURE_KEYS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "parity-public" / "keys.json"

TEXT, MID = 8, 12                               # text / token width, position-net MLP width
CONVNEXT_DIMS, CONVNEXT_DEPTHS = (4, 4, 8, 8), (3, 3, 9, 3)

NUM_FREQS, SCRIBBLE_POINTS, POLYGON_POINTS, SEG_TOKENS, SLOTS = 16, 20, 256, 64, 30
INPUT_BLOCKS, OUTPUT_BLOCKS = SD15_INPUT_BLOCKS, SD15_OUTPUT_BLOCKS
FUSER_WIDTH = {**{f"input_blocks.{i}.1": w for i, w in zip(INPUT_BLOCKS, (16, 16, 24, 24, 32, 32))},
               "middle_block.1": 32,
               **{f"output_blocks.{i}.1": w for i, w in zip(OUTPUT_BLOCKS, (32, 32, 32, 24, 24, 24, 16, 16, 16))}}
SCALEU_WIDTH = {0: 32, 1: 32, 2: 32, 3: 32, 4: 32, 5: 32, 6: 32, 7: 24, 8: 24, 9: 24, 10: 16, 11: 16}


# ---------------------------------------------------------------------------------------------------------------
# key layouts and values

def official_key_shapes() -> list[tuple[str, list[int]]]:
    """(key, full-size shape) of every tensor of the official UNet state dict (``model`` / ``ema``)."""
    with open(FIXTURE_KEYS, encoding="utf-8") as f:
        return [(e["key"], e["shape"]) for e in json.load(f)]


def is_addon(key: str) -> bool:
    return key.startswith(("position_net.", "scaleu_")) or ".fuser." in key


def value(key: str, shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + zlib.crc32(key.encode()))
    return (torch.rand(tuple(shape), generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


def position_net_shapes() -> dict[str, tuple]:
    """Tiny UniFusion shapes under official names (without the ``position_net.`` prefix)."""
    box, point = NUM_FREQS * 8, NUM_FREQS * 4
    scribble, polygon = NUM_FREQS * 4 * SCRIBBLE_POINTS, NUM_FREQS * 4 * POLYGON_POINTS
    seg = 4 * CONVNEXT_DIMS[-1]
    s = {"pos_embedding": (1, SEG_TOKENS, seg), "null_positive_feature": (TEXT,), "null_position_feature": (box,),
         "null_point_feature": (point,), "null_scribble_feature": (scribble,), "null_polygon_feature": (polygon,),
         "null_seg_feature": (seg,), "in_conv.weight": (3, SLOTS, 3, 3), "in_conv.bias": (3,)}
    cb = "convnext_tiny_backbone."
    d = CONVNEXT_DIMS
    s[cb + "downsample_layers.0.0.weight"], s[cb + "downsample_layers.0.0.bias"] = (d[0], 3, 4, 4), (d[0],)
    s[cb + "downsample_layers.0.1.weight"], s[cb + "downsample_layers.0.1.bias"] = (d[0],), (d[0],)
    for i in range(1, 4):
        s[cb + f"downsample_layers.{i}.0.weight"] = s[cb + f"downsample_layers.{i}.0.bias"] = (d[i - 1],)
        s[cb + f"downsample_layers.{i}.1.weight"], s[cb + f"downsample_layers.{i}.1.bias"] = \
            (d[i], d[i - 1], 2, 2), (d[i],)
    for i, depth in enumerate(CONVNEXT_DEPTHS):
        for j in range(depth):
            p = cb + f"stages.{i}.{j}."
            s.update({p + "gamma": (d[i],), p + "dwconv.weight": (d[i], 1, 7, 7), p + "dwconv.bias": (d[i],),
                      p + "norm.weight": (d[i],), p + "norm.bias": (d[i],), p + "pwconv1.weight": (4 * d[i], d[i]),
                      p + "pwconv1.bias": (4 * d[i],), p + "pwconv2.weight": (d[i], 4 * d[i]),
                      p + "pwconv2.bias": (d[i],)})
    for m, width in enumerate((TEXT + box, TEXT + point, TEXT + scribble, TEXT + polygon, seg)):
        p = f"linears_list.{m}."
        s.update({p + "0.weight": (MID, width), p + "0.bias": (MID,), p + "2.weight": (MID, MID),
                  p + "2.bias": (MID,), p + "4.weight": (TEXT, MID), p + "4.bias": (TEXT,)})
    return s


def fuser_shapes(width: int, context: int = TEXT) -> dict[str, tuple]:
    c = width
    return {"alpha_attn": (), "alpha_dense": (), "linear.weight": (c, context), "linear.bias": (c,),
            "attn.to_q.weight": (c, c), "attn.to_k.weight": (c, c), "attn.to_v.weight": (c, c),
            "attn.to_out.0.weight": (c, c), "attn.to_out.0.bias": (c,), "ff.net.0.proj.weight": (8 * c, c),
            "ff.net.0.proj.bias": (8 * c,), "ff.net.2.weight": (c, 4 * c), "ff.net.2.bias": (c,),
            "norm1.weight": (c,), "norm1.bias": (c,), "norm2.weight": (c,), "norm2.bias": (c,)}


def addon_shapes(groups=("position_net", "fusers", "scaleu")) -> dict[str, tuple]:
    out = {}
    if "position_net" in groups:
        out.update({"position_net." + k: v for k, v in position_net_shapes().items()})
    if "fusers" in groups:
        for block, width in FUSER_WIDTH.items():
            out.update({f"{block}.transformer_blocks.0.fuser.{k}": v for k, v in fuser_shapes(width).items()})
    if "scaleu" in groups:
        for k, width in SCALEU_WIDTH.items():
            out[f"scaleu_b_{k}"], out[f"scaleu_s_{k}"] = (width,), (1,)
    return out


def addon_state_dict(seed: int = 0, groups=("position_net", "fusers", "scaleu"), dtype=torch.float32) -> dict:
    """Tiny add-on tensors under the official key names, every value uniform in [-1, 1] (gates included: these
    files test reading and refusing, so names and shapes matter, not whether the fusers are active)."""
    return {k: value(k, s, seed, dtype) for k, s in addon_shapes(groups).items()}


def base_unet_state_dict(seed: int = 0) -> dict:
    """The 686 frozen SD1.5 UNet keys (real names) with tiny shapes: what the official ``model`` also holds."""
    return {k: value(k, [min(int(d), 2) for d in shape], seed) for k, shape in official_key_shapes()
            if not is_addon(k)}


def with_metadata(sd: dict) -> collections.OrderedDict:
    """An OrderedDict with nn.Module's ``_metadata`` attribute, as ``module.state_dict()`` returns."""
    od = collections.OrderedDict(sd)
    od._metadata = collections.OrderedDict([("", {"version": 1}), ("position_net", {"version": 1})])
    return od


# ---------------------------------------------------------------------------------------------------------------
# fake omegaconf (pickled by module + class name; removed again so the loader sees unknown globals)

@contextlib.contextmanager
def fake_omegaconf():
    names = ("omegaconf", "omegaconf.base", "omegaconf.dictconfig", "omegaconf.nodes")
    saved = {n: sys.modules.get(n) for n in names}
    mods = {n: types.ModuleType(n) for n in names}

    def make(mod, cls_name):
        cls = type(cls_name, (), {"__module__": mod, "__qualname__": cls_name,
                                  "__init__": lambda self, **kw: self.__dict__.update(kw)})
        setattr(mods[mod], cls_name, cls)
        return cls

    classes = types.SimpleNamespace(ContainerMetadata=make("omegaconf.base", "ContainerMetadata"),
                                    DictConfig=make("omegaconf.dictconfig", "DictConfig"),
                                    AnyNode=make("omegaconf.nodes", "AnyNode"))
    sys.modules.update(mods)
    try:
        yield classes
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def official_config_dict(oc) -> dict:
    """``vars(OmegaConf config)``: a plain dict whose values are OmegaConf objects, as the trainer saved it."""
    meta = oc.ContainerMetadata(ref_type=typing.Any, object_type=dict, optional=True, key=None,
                                flags={"allow_objects": None}, flags_root=False,
                                resolver_cache=collections.defaultdict(dict), key_type=typing.Any,
                                element_type=typing.Any)
    model_cfg = oc.DictConfig(_metadata=meta, _parent=None, _content={
        "target": oc.AnyNode(_val="ldm.modules.diffusionmodules.openaimodel.UNetModel", _metadata=meta),
        "params": oc.DictConfig(_content={"fuser_type": oc.AnyNode(_val="gatedSA"),
                                          "context_dim": oc.AnyNode(_val=768)})})
    return {"_metadata": meta, "_parent": None, "_flags_cache": {"allow_objects": None},
            "_content": {"model": model_cfg, "batch_size": oc.AnyNode(_val=8)}}


@contextlib.contextmanager
def storage_location(location: str):
    """Make torch.save record every storage as living on ``location`` (e.g. ``cuda:0``) on a CPU-only machine."""
    with mock.patch("torch.serialization.location_tag", lambda storage: location):
        yield


def save_zip(obj, path, inner_folder: str | None = None, location: str | None = None) -> Path:
    """torch.save to ``path``; the zip's inner folder is the stem of the name saved under (``inner_folder``)."""
    path = Path(path)
    target = path if inner_folder is None else path.with_name(inner_folder + ".pth")
    ctx = storage_location(location) if location else contextlib.nullcontext()
    with ctx:
        torch.save(obj, target)
    if target != path:
        os.replace(target, path)
    return path


# ---------------------------------------------------------------------------------------------------------------
# file builders

def write_official_pth(path, ema_seed: int = 1, model_seed: int = 2, with_ema: bool = True,
                       big_dropped_values: int = 0, location: str = "cuda:0",
                       inner_folder: str = "checkpoint_latest", config_extra: dict | None = None) -> dict:
    """The official training checkpoint layout; returns ``{"ema": addons, "model": addons}`` (what was stored).

    ``big_dropped_values``: size of one float32 tensor in ``opt`` and one in ``text_encoder`` (dropped data the
    reader must never read).
    """
    ema_addons = addon_state_dict(ema_seed)
    model_addons = addon_state_dict(model_seed)
    model = with_metadata({**base_unet_state_dict(model_seed), **model_addons})
    big = max(int(big_dropped_values), 4)
    text_encoder = with_metadata({
        "transformer.text_model.embeddings.token_embedding.weight": torch.full((big,), 0.5),
        "transformer.text_model.final_layer_norm.weight": torch.ones(4)})
    autoencoder = with_metadata({"encoder.conv_in.weight": torch.ones(2, 3, 1, 1), "decoder.conv_out.bias":
                                 torch.zeros(3), "quant_conv.weight": torch.ones(2, 2, 1, 1)})
    opt = {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.full((big,), 0.25),
                         "exp_avg_sq": torch.ones(3)}},
           "param_groups": [{"lr": 5e-5, "betas": (0.9, 0.999), "weight_decay": 0.0, "params": [0]}]}
    scheduler = {"base_lrs": [5e-5], "last_epoch": 100, "_step_count": 101, "_last_lr": [5e-5],
                 "lr_lambdas": [None]}
    diffusion = with_metadata({"betas": torch.linspace(0.00085, 0.012, 10),
                               "alphas_cumprod": torch.linspace(1.0, 0.1, 10)})
    with fake_omegaconf() as oc:
        config = official_config_dict(oc)
        config.update(config_extra or {})
        ckpt = {"model": model, "text_encoder": text_encoder, "autoencoder": autoencoder, "opt": opt,
                "scheduler": scheduler, "iters": 100, "config_dict": config, "diffusion": diffusion}
        if with_ema:
            ckpt["ema"] = with_metadata({**base_unet_state_dict(ema_seed), **ema_addons})
        save_zip(ckpt, path, inner_folder=inner_folder, location=location)
    return {"ema": ema_addons, "model": model_addons}


def logtd_fusers_tree(addons: dict, numbering: str = "sd15") -> dict:
    """logtd's fusers.ckpt: ``{group: {block number: {params, state}}}`` (``numbering="ordinal"``: 0..n-1)."""
    tree: dict = {"input_blocks": {}, "middle_block": {}, "output_blocks": {}}
    for group, numbers in (("input_blocks", INPUT_BLOCKS), ("middle_block", (1,)), ("output_blocks", OUTPUT_BLOCKS)):
        for pos, n in enumerate(numbers):
            prefix = "middle_block.1" if group == "middle_block" else f"{group}.{n}.1"
            head = f"{prefix}.transformer_blocks.0.fuser."
            state = collections.OrderedDict((k[len(head):], v) for k, v in addons.items() if k.startswith(head))
            width = state["linear.weight"].shape[0]
            label = str(pos if numbering == "ordinal" else n)
            tree[group][label] = {"params": {"n_heads": 8, "d_head": width // 8, "context_dim": TEXT},
                                  "state": state}
    return tree


def write_logtd_files(directory, seed: int = 3, numbering: str = "sd15") -> tuple[dict, dict]:
    """logtd's three files in ``directory``; returns ({name: path}, the official add-on tensors they hold)."""
    directory = Path(directory)
    addons = addon_state_dict(seed)
    paths = {"fusers": directory / "fusers.ckpt", "position_net": directory / "position_net.ckpt",
             "scaleu": directory / "scaleu.ckpt"}
    save_zip(logtd_fusers_tree(addons, numbering), paths["fusers"])
    save_zip({k[len("position_net."):]: v for k, v in addons.items() if k.startswith("position_net.")},
             paths["position_net"])
    save_zip({str(k): {"scaleu_b": addons[f"scaleu_b_{k}"], "scaleu_s": addons[f"scaleu_s_{k}"]}
              for k in SCALEU_WIDTH}, paths["scaleu"])
    return paths, addons


def write_ours(path, seed: int = 4, dtype=torch.float32) -> dict:
    """Our format written by the safetensors library itself (independent of the writer under test)."""
    from safetensors.torch import save_file
    sd = addon_state_dict(seed, dtype=dtype)
    save_file(sd, str(path), metadata={"format": "instancediffusion-addons", "format_version": "1",
                                       "source": "synthetic", "source_format": "test"})
    return sd


def base_model_state_dict(seed: int = 5) -> dict:
    """A plain SD1.5 checkpoint's keys: prefixed UNet plus VAE and CLIP entries, no add-ons."""
    sd = {"model.diffusion_model." + k: v for k, v in base_unet_state_dict(seed).items()}
    sd["first_stage_model.decoder.conv_out.weight"] = torch.ones(3, 2, 1, 1)
    sd["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = torch.ones(4)
    return sd


def gligen_state_dict(context: int = 2048, width: int = 16) -> dict:
    """GLIGEN naming (ComfyUI's gligen files; SDXL-like 2048 context): fusers + position_net.linears.*."""
    sd = {"position_net.null_positive_feature": torch.zeros(context),
          "position_net.null_position_feature": torch.zeros(64)}
    for i, (o, n) in enumerate(((12, context + 64), (12, 12), (context, 12))):
        sd[f"position_net.linears.{2 * i}.weight"] = torch.zeros(o, n)
        sd[f"position_net.linears.{2 * i}.bias"] = torch.zeros(o)
    for block in ("input_blocks.4.1", "output_blocks.3.1"):
        for k, s in fuser_shapes(width, context).items():
            sd[f"model.diffusion_model.{block}.transformer_blocks.0.fuser.{k}"] = torch.zeros(s)
    return sd


# ---------------------------------------------------------------------------------------------------------------
# hostile pickles

class SystemPayload:
    """Unpickling runs ``os.system('touch <marker>')``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


class EvalPayload:
    """Unpickling runs ``builtins.eval`` of code that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.eval, (f"open({self.marker!r}, 'w').write('ran')",)


def write_hostile_official(path, payload) -> None:
    """A valid official checkpoint whose (dropped) ``config_dict`` carries ``payload``."""
    write_official_pth(path, config_extra={"_payload": payload})


def write_raw_pickle(path, payload) -> None:
    """A bare pickle (no zip container): what pre-1.6 torch.save or pickle.dump produce."""
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"x": payload}}, f, protocol=2)


def make_importable_module(directory, name: str, imported_marker, called_marker):
    """A module in ``directory`` that writes ``imported_marker`` when imported and ``called_marker`` when its
    ``boom()`` runs; imported once here (to pickle a reference to ``boom``), then forgotten again."""
    directory = Path(directory)
    (directory / f"{name}.py").write_text(
        f"open({str(imported_marker)!r}, 'w').write('imported')\n"
        f"def boom(*args):\n    open({str(called_marker)!r}, 'w').write('called')\n    return 0\n")
    sys.path.insert(0, str(directory))
    try:
        module = __import__(name)
    finally:
        sys.path.remove(str(directory))
    return module


class CallPayload:
    """Unpickling calls ``func()`` (a function of a module the loader must never import)."""

    def __init__(self, func):
        self.func = func

    def __reduce__(self):
        return self.func, ()


# ---------------------------------------------------------------------------------------------------------------
# hostile containers: pickles and zips written by hand, so every declared size can lie

class TensorSpec:
    """A tensor as the pickle declares it: storage ``key`` of ``numel`` elements (``storage_type`` e.g.
    ``FloatStorage``) viewed with ``shape``/``stride`` from ``offset``. Nothing about it has to be true."""

    def __init__(self, key: str, shape, stride=None, offset: int = 0, numel: int | None = None,
                 storage_type: str = "FloatStorage"):
        shape = tuple(int(s) for s in shape)
        if stride is None:
            stride, step = [], 1
            for s in reversed(shape):
                stride.insert(0, step)
                step *= max(s, 1)
        self.key, self.shape, self.stride, self.offset = str(key), shape, tuple(stride), int(offset)
        self.numel = int(numel) if numel is not None else max(1, math.prod(shape))
        self.storage_type = storage_type


class _StorageRef:
    def __init__(self, spec: TensorSpec):
        self.spec = spec


class _TorchLikePickler(pickle.Pickler):
    """Pickles ``TensorSpec`` exactly as ``torch.save`` pickles a tensor (``_rebuild_tensor_v2`` + a persistent
    storage id), whatever the spec claims."""

    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            s = obj.spec
            return ("storage", getattr(torch, s.storage_type), s.key, "cpu", s.numel)
        return None

    def reducer_override(self, obj):
        if isinstance(obj, TensorSpec):
            return (torch._utils._rebuild_tensor_v2,
                    (_StorageRef(obj), obj.offset, obj.shape, obj.stride, False, collections.OrderedDict()))
        return NotImplemented


def torch_pickle(tree) -> bytes:
    """``data.pkl`` bytes for ``tree`` (containers with ``TensorSpec`` values), protocol 2 as torch writes."""
    buf = io.BytesIO()
    _TorchLikePickler(buf, protocol=2).dump(tree)
    return buf.getvalue()


def pickle_ops(value, protocol: int = 2) -> bytes:
    """The opcodes that push ``value`` (a pickle without its PROTO header and STOP), to splice into hand-made
    pickles."""
    data = pickle.dumps(value, protocol=protocol)
    assert data[:2] == b"\x80" + bytes([protocol]) and data[-1:] == b"."
    return data[2:-1]


class ZipEntry:
    """One record of a hand-written zip: ``data`` is written as given (already compressed for ``method`` 8);
    ``file_size``, ``compress_size`` and ``crc`` default to the truth and may lie."""

    def __init__(self, name: str, data: bytes, method: int = zipfile.ZIP_STORED, file_size: int | None = None,
                 compress_size: int | None = None, crc: int | None = None):
        self.name, self.data, self.method = name, bytes(data), method
        self.file_size = len(self.data) if file_size is None else int(file_size)
        self.compress_size = len(self.data) if compress_size is None else int(compress_size)
        self.crc = zlib.crc32(self.data) if crc is None else int(crc)


def write_raw_zip(path, entries) -> Path:
    """A zip with exactly these records (local headers, central directory, end record), sizes as declared; more
    than 4 GiB is written as a ZIP64 extra field."""
    path = Path(path)
    central = []
    with open(path, "wb") as f:
        for e in entries:
            name = e.name.encode()
            offset = f.tell()
            big = e.file_size >= 0xFFFFFFFF or e.compress_size >= 0xFFFFFFFF
            extra = struct.pack("<HHQQ", 1, 16, e.file_size, e.compress_size) if big else b""
            sizes = (0xFFFFFFFF, 0xFFFFFFFF) if big else (e.compress_size, e.file_size)
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45 if big else 20, 0, e.method, 0, 0x21, e.crc,
                                *sizes, len(name), len(extra)))
            f.write(name + extra + e.data)
            central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45 if big else 20, 45 if big else 20, 0,
                                       e.method, 0, 0x21, e.crc, *sizes, len(name), len(extra), 0, 0, 0, 0, offset)
                           + name + extra)
        start = f.tell()
        for c in central:
            f.write(c)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), f.tell() - start, start, 0))
    return path


def write_torch_zip(path, pkl: bytes, records: dict, folder: str = "archive", extra_entries=()) -> Path:
    """A torch-style checkpoint: ``<folder>/data.pkl`` (the given bytes), ``<folder>/data/<key>`` for each record
    (bytes, or a ready ``ZipEntry``), ``byteorder`` and ``version``; ``extra_entries`` appended as given."""
    entries = [ZipEntry(f"{folder}/data.pkl", pkl), ZipEntry(f"{folder}/byteorder", b"little")]
    for key, data in records.items():
        entries.append(data if isinstance(data, ZipEntry) else ZipEntry(f"{folder}/data/{key}", data))
    entries.append(ZipEntry(f"{folder}/version", b"3\n"))
    return write_raw_zip(path, list(entries) + list(extra_entries))


def scaleu_specs(lie: dict | None = None) -> tuple[dict, dict]:
    """The 24 ScaleU tensors as specs (one storage each) and their real float32 bytes; ``lie`` replaces specs by
    key (e.g. ``{"scaleu_b_0": TensorSpec("0", (2**28,))}``)."""
    tree, records = {}, {}
    for n, (k, width) in enumerate(SCALEU_WIDTH.items()):
        for kind, shape in (("b", (width,)), ("s", (1,))):
            key = f"{2 * n + (kind == 's')}"
            tree[f"scaleu_{kind}_{k}"] = TensorSpec(key, shape)
            records[key] = struct.pack(f"<{math.prod(shape)}f", *([0.5] * math.prod(shape)))
    tree.update(lie or {})
    return tree, records


def deflate(data_chunks, level: int = 1) -> bytes:
    """Raw deflate (zip method 8) of the concatenated chunks, compressed as a stream (never held whole)."""
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return b"".join([c.compress(chunk) for chunk in data_chunks] + [c.flush()])


def shared_list_dag(levels: int):
    """``[a, a]`` nested ``levels`` deep with every level one shared list: a few hundred bytes pickled (the memo
    shares it), ``2**levels`` items when walked or printed."""
    a: list = []
    for _ in range(levels):
        a = [a, a]
    return a
