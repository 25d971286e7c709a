"""Read InstanceDiffusion add-on weights from any supported file without executing code from it; write ours.

Supported inputs (the kind is detected from the content, never from the file name):
- the official training checkpoint ``instancediffusion_sd15.pth`` (13.6 GB torch zip: ``model``, ``ema``,
  ``text_encoder``, ``autoencoder``, ``opt``, ... with pickled OmegaConf objects and ``cuda:0`` storages);
- a flat state dict (.pth/.ckpt/.bin, torch zip format) holding the add-on keys, with or without the
  ``module.`` / ``model.diffusion_model.`` / ``diffusion_model.`` prefixes;
- logtd's split files ``fusers.ckpt``, ``position_net.ckpt``, ``scaleu.ckpt`` (singly or together);
- our ``.safetensors`` (official add-on key names, any float dtype).

Why a restricted unpickler instead of ``torch.load``: the official file pickles OmegaConf objects, so
``weights_only=True`` refuses it, and ``weights_only=False`` would run whatever the pickle asks for. Here every
global the pickle names is resolved against a short allow-list (containers, numbers, our own tensor-rebuild
functions); anything else becomes an inert placeholder that is never imported or called, and names that can only
mean code execution (``os.system``, ``builtins.eval``, ...) make the file refused outright.

Why streaming: the pickle is parsed into lazy storage references first, the add-on keys are picked, and only those
storages' zip records are read (records are stored uncompressed, so a read is a seek plus ``readinto``). The
optimizer state, text encoder, VAE and the non-EMA copy are never read, so peak memory is about the size of the
kept tensors (or one tensor when streaming into a file, see ``AddonReader``), not the 13.6 GB of the file.

Partial add-ons (decided here): *reading* accepts any non-empty subset of the three groups (position net,
fusers, ScaleU) and says what is missing in ``notes``, so split files can be inspected or merged later; a group
that is present must be complete (every fuser block has its 17 tensors, every ScaleU block its ``b`` and ``s``,
the position net its core tensors), otherwise the file is treated as damaged. *Loading* for sampling
(``load_instancediffusion``) needs the position net and the fusers by default, because fusers without the
position net have no tokens to attend to and a position net alone changes nothing; ScaleU may be absent (zero
ScaleU weights are the identity). ``allow_partial=True`` lifts that rule for advanced use (e.g. ScaleU only).
"""
from __future__ import annotations

import collections
import json
import math
import os
import pickle
import re
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

__all__ = [
    "CheckpointError", "AddonWeights", "AddonReader", "read_addon_state_dict", "save_addons", "write_addons",
    "load_instancediffusion", "parse_dtype", "addon_group", "group_counts", "FORMAT_NAME", "FORMAT_VERSION",
    "FUSER_SUFFIXES", "SD15_FUSER_BLOCKS", "SD15_COUNTS",
]

FORMAT_NAME = "instancediffusion-addons"
FORMAT_VERSION = "1"

POSITION_NET_PREFIX = "position_net."
FUSER_SUFFIXES = (
    "alpha_attn", "alpha_dense", "linear.weight", "linear.bias",
    "attn.to_q.weight", "attn.to_k.weight", "attn.to_v.weight", "attn.to_out.0.weight", "attn.to_out.0.bias",
    "ff.net.0.proj.weight", "ff.net.0.proj.bias", "ff.net.2.weight", "ff.net.2.bias",
    "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
)
# The 16 SD1.5 transformer blocks that carry a fuser (official state-dict prefixes, transformer block 0).
SD15_INPUT_BLOCKS = (1, 2, 4, 5, 7, 8)
SD15_OUTPUT_BLOCKS = (3, 4, 5, 6, 7, 8, 9, 10, 11)
SD15_FUSER_BLOCKS = tuple([f"input_blocks.{i}.1" for i in SD15_INPUT_BLOCKS] + ["middle_block.1"]
                          + [f"output_blocks.{i}.1" for i in SD15_OUTPUT_BLOCKS])
SD15_COUNTS = {"position_net": 217, "fusers": 272, "scaleu": 24}   # tensors of the official SD1.5 add-ons

# Tensors the position net cannot work without (the ConvNeXt layout is checked by the position net itself).
_POSNET_CORE = (
    ["null_positive_feature", "null_position_feature", "null_point_feature", "null_scribble_feature",
     "null_polygon_feature", "null_seg_feature", "pos_embedding", "in_conv.weight", "in_conv.bias"]
    + [f"linears_list.{m}.{i}.{p}" for m in range(5) for i in (0, 2, 4) for p in ("weight", "bias")]
)
_CONVNEXT_PREFIX = "convnext_tiny_backbone."

_FUSER_KEY = re.compile(r"^(?P<block>input_blocks\.\d+\.\d+|middle_block\.\d+|output_blocks\.\d+\.\d+)"
                        r"\.transformer_blocks\.(?P<j>\d+)\.fuser\.(?P<suffix>.+)$")
_SCALEU_KEY = re.compile(r"^scaleu_(?P<kind>[bs])_(?P<k>\d+)$")
_STRIP_PREFIXES = ("module.", "model.diffusion_model.", "diffusion_model.")
_BASE_UNET_PREFIXES = ("time_embed.", "input_blocks.", "middle_block.", "output_blocks.", "out.", "label_emb.")
_FULL_MODEL_PREFIXES = ("first_stage_model.", "cond_stage_model.", "conditioner.", "model_ema.")
_DIFFUSERS_PREFIXES = ("down_blocks.", "up_blocks.", "mid_block.", "conv_in.", "conv_out.", "time_embedding.")
_GLIGEN_POSNET = ("linears.", "linears_text.", "linears_image.", "null_text_feature", "null_image_feature")
_UNIFUSION_BARE = ("null_", "linears_list.", "in_conv.", _CONVNEXT_PREFIX, "pos_embedding")

OFFICIAL_SOURCE_HINT = ("the official instancediffusion_sd15.pth (Hugging Face xudongw/InstanceDiffusion) or "
                        "logtd's fusers.ckpt + position_net.ckpt + scaleu.ckpt")


class CheckpointError(ValueError):
    """A weights file cannot be used; the message says what was found, what was expected and what to do."""


# ==================================================================================================== results

def addon_group(key: str) -> str | None:
    """``"position_net"``, ``"fusers"`` or ``"scaleu"`` for an official add-on key, else None."""
    if key.startswith(POSITION_NET_PREFIX):
        return "position_net"
    m = _FUSER_KEY.match(key)
    if m is not None and m["suffix"] in FUSER_SUFFIXES:
        return "fusers"
    if _SCALEU_KEY.match(key):
        return "scaleu"
    return None


def _numel(shape) -> int:
    return math.prod(int(s) for s in shape)


def group_counts(shapes: Mapping[str, Sequence[int]]) -> dict:
    """Per group: tensors, parameters and (fusers) blocks / (scaleu) blocks, from ``{key: shape}``."""
    out = {g: {"tensors": 0, "params": 0} for g in ("position_net", "fusers", "scaleu")}
    fuser_blocks, scaleu_blocks = set(), set()
    for key, shape in shapes.items():
        group = addon_group(key)
        if group is None:
            continue
        out[group]["tensors"] += 1
        out[group]["params"] += _numel(shape)
        if group == "fusers":
            fuser_blocks.add(key.split(".fuser.")[0])
        elif group == "scaleu":
            scaleu_blocks.add(int(_SCALEU_KEY.match(key)["k"]))
    out["fusers"]["blocks"] = len(fuser_blocks)
    out["scaleu"]["blocks"] = len(scaleu_blocks)
    return out


@dataclass
class AddonWeights:
    """Add-on tensors under their official key names, plus what the reader found, kept and dropped.

    ``records_read`` lists the zip records (storages) that were actually read - an audit of the streaming: the
    optimizer state, text encoder, VAE and the non-EMA copy never appear there.
    """
    tensors: dict[str, torch.Tensor]
    source_format: str
    notes: list[str] = field(default_factory=list)
    records_read: list[str] = field(default_factory=list)

    def counts(self) -> dict:
        return group_counts({k: tuple(t.shape) for k, t in self.tensors.items()})

    @property
    def missing_groups(self) -> list[str]:
        counts = self.counts()
        return [g for g in ("position_net", "fusers", "scaleu") if counts[g]["tensors"] == 0]

    @property
    def warnings(self) -> list[str]:
        return [n for n in self.notes if n.startswith("warning:")]


# ==================================================================================================== dtypes

_DTYPE_NAMES = {
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}


def parse_dtype(value: Any) -> torch.dtype | None:
    """None / ``"keep"`` -> None (keep stored dtypes); ``"fp16"|"bf16"|"fp32"`` (or a torch float dtype)."""
    if value is None or (isinstance(value, str) and value.lower() == "keep"):
        return None
    if isinstance(value, torch.dtype):
        if value in (torch.float16, torch.bfloat16, torch.float32):
            return value
    elif isinstance(value, str) and value.lower() in _DTYPE_NAMES:
        return _DTYPE_NAMES[value.lower()]
    raise ValueError(f"dtype {value!r} is not supported; use 'fp16', 'bf16', 'fp32' or 'keep' (None)")


def _cast(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None and t.is_floating_point() and t.dtype != dtype:
        return t.to(dtype)
    return t


# ============================================================================================ restricted unpickler

class _Inert:
    """Stand-in for a global the pickle names but we do not trust: records its arguments, runs nothing."""
    _global = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["args"] = args
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["state"] = state

    def __repr__(self):
        return f"<inert {self._global}>"


class _StorageType:
    """What a ``torch.FloatStorage``-like global resolves to: just its element dtype."""
    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: torch.dtype):
        self.name, self.dtype = name, dtype

    def __setstate__(self, state):
        raise CheckpointError("malformed pickle: state applied to a storage type")


class _LazyStorage:
    """A storage record of the zip (``data/<key>``) that has not been read."""
    __slots__ = ("key", "dtype", "numel", "location")

    def __init__(self, key: str, dtype: torch.dtype, numel: int, location: str):
        self.key, self.dtype, self.numel, self.location = key, dtype, numel, location

    def __setstate__(self, state):
        raise CheckpointError("malformed pickle: state applied to a storage")


class _LazyTensor:
    """A tensor view (offset, size, stride) of a lazy storage; becomes a tensor only if its key is kept."""
    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage: _LazyStorage, offset: int, shape: tuple, stride: tuple):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    @property
    def dtype(self) -> torch.dtype:
        return self.storage.dtype

    def __setstate__(self, state):
        raise CheckpointError("malformed pickle: state applied to a tensor")


def _int_tuple(value, what: str) -> tuple:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                        for v in value):
        raise CheckpointError(f"malformed pickle: tensor {what} {value!r} is not a tuple of integers")
    return tuple(value)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None):
    """Our replacement for ``torch._utils._rebuild_tensor_v2``: returns a lazy reference, reads nothing."""
    if not isinstance(storage, _LazyStorage):
        raise CheckpointError(f"malformed pickle: a tensor refers to {type(storage).__name__}, not to a storage")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise CheckpointError(f"malformed pickle: tensor storage offset {storage_offset!r}")
    shape, strides = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(shape) != len(strides) or any(s < 0 for s in shape) or any(s < 0 for s in strides):
        raise CheckpointError(f"malformed pickle: tensor size {shape} / stride {strides}")
    return _LazyTensor(storage, storage_offset, shape, strides)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """``torch._utils._rebuild_parameter[_with_state]``: a parameter is just its data here."""
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    """``torch._tensor._rebuild_from_type_v2``: only our own rebuild functions are ever called."""
    if func in (_rebuild_tensor, _rebuild_parameter) and isinstance(args, tuple):
        return func(*args)
    return _Inert(func, new_type, args, state)


def _safe_encode(text="", encoding="latin1", errors="strict"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (str -> bytes, nothing else)."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "utf-8",
                                                                               "utf8", "ascii"):
        raise CheckpointError(f"malformed pickle: _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode(encoding, errors)


def _safe_bytes(*args):
    """``bytes``/``bytearray`` from data only (never ``bytes(n)``: a size argument would be a memory bomb)."""
    if not args:
        return b""
    data = args[0]
    if isinstance(data, str):
        return _safe_encode(data, *(args[1:2] or ("utf-8",)))
    if isinstance(data, (bytes, bytearray, list, tuple)):
        return bytes(data)
    raise CheckpointError(f"malformed pickle: bytes({type(data).__name__})")


def _safe_reconstructor(cls, base, state=None):
    """``copyreg._reconstructor``: plain containers are rebuilt, anything else becomes inert."""
    if isinstance(cls, type) and issubclass(cls, _Inert):
        return cls()
    if cls in (dict, list, set, collections.OrderedDict) and base is cls:
        return cls() if state is None else cls(state)
    return _Inert(cls, base, state)


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): tuple,
    ("_codecs", "encode"): _safe_encode,
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    ("builtins", "bytes"): _safe_bytes,
    ("builtins", "bytearray"): _safe_bytes,
}
_SAFE_BUILTINS = {"set": set, "frozenset": frozenset, "dict": dict, "list": list, "tuple": tuple, "int": int,
                  "float": float, "complex": complex, "bool": bool, "str": str, "slice": slice, "object": object}
_COMPAT_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg", "UserDict": "collections"}
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}
# Modules whose globals only make sense to run code, touch files or the network. Refusing them is a courtesy
# (clear error instead of a silently inert placeholder); safety does not depend on this list being complete.
_FORBIDDEN_MODULES = (
    "os", "posix", "nt", "subprocess", "sys", "importlib", "runpy", "shutil", "socket", "pty", "pickle",
    "_pickle", "marshal", "types", "ctypes", "code", "codeop", "webbrowser", "multiprocessing", "threading",
    "signal", "operator", "functools", "inspect", "pdb", "bdb", "timeit", "platform", "asyncio", "pip",
    "setuptools", "urllib", "http", "ftplib", "smtplib", "tempfile", "pathlib", "io", "_io", "glob", "zipimport",
    "__main__", "torch.hub", "torch.serialization", "torch.jit", "torch.ops", "numpy.testing", "numpy.f2py",
)
_FORBIDDEN_BUILTINS = {"eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr",
                       "globals", "locals", "vars", "input", "breakpoint", "help", "exit", "quit", "memoryview",
                       "type", "super", "print", "dir", "apply", "execfile", "file", "reload"}


def _forbidden(module: str, name: str) -> bool:
    if module == "builtins":
        return name in _FORBIDDEN_BUILTINS or name.startswith("__")
    return any(module == m or module.startswith(m + ".") for m in _FORBIDDEN_MODULES)


def _torch_dtype(name: str) -> torch.dtype | None:
    value = vars(torch).get(name)      # plain dict lookup: never triggers torch's lazy submodule imports
    return value if isinstance(value, torch.dtype) else None


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` into plain containers, lazy tensors and inert placeholders; imports nothing."""

    def __init__(self, file, label: str):
        super().__init__(file, encoding="utf-8")
        self.label = label
        self.storages: dict[str, _LazyStorage] = {}
        self.locations: set[str] = set()
        self.inert_globals: set[str] = set()
        self._placeholders: dict[tuple[str, str], type] = {}

    def find_class(self, module, name):
        module = _COMPAT_MODULES.get(module, module)
        if not isinstance(module, str) or not isinstance(name, str):
            raise CheckpointError(f"{self.label}: malformed pickle (global name is not a string)")
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is not None:
            return safe
        if module == "builtins" and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == "torch" and _torch_dtype(name) is not None:
            return _torch_dtype(name)
        if _forbidden(module, name):
            raise CheckpointError(
                f"{self.label}: refused - the pickle references '{module}.{name}', which can only serve to run code "
                f"or reach the system while loading. Nothing from the file was executed. A weights file never "
                f"needs this; get the weights from a trusted source ({OFFICIAL_SOURCE_HINT}).")
        key = (module, name)
        cls = self._placeholders.get(key)
        if cls is None:
            cls = type("Inert", (_Inert,), {"_global": f"{module}.{name}"})
            self._placeholders[key] = cls
            self.inert_globals.add(f"{module}.{name}")
        return cls

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.label}: malformed pickle: unexpected persistent id {pid!r:.80}")
        _, stype, key, location, numel = pid
        if not isinstance(stype, _StorageType):
            raise CheckpointError(f"{self.label}: unsupported storage type {stype!r:.80} (expected torch.*Storage)")
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_]+", key):
            raise CheckpointError(f"{self.label}: malformed pickle: storage key {key!r:.80}")
        if not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{self.label}: malformed pickle: storage size {numel!r:.80}")
        self.locations.add(str(location))
        found = self.storages.get(key)
        if found is None:
            found = self.storages[key] = _LazyStorage(key, stype.dtype, numel, str(location))
        elif found.dtype != stype.dtype or found.numel != numel:
            raise CheckpointError(f"{self.label}: malformed pickle: storage {key} declared twice differently")
        return found


# ==================================================================================================== torch zip reader

class _TorchZip:
    """The zip container torch.save writes: ``<folder>/data.pkl`` plus one uncompressed record per storage."""

    def __init__(self, path: str, label: str):
        self.path, self.label = path, label
        try:
            self.zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            size = os.path.getsize(path)
            raise CheckpointError(
                f"{label}: the file starts like a torch checkpoint (zip) but its zip directory is missing or "
                f"damaged ({exc}); it is most likely truncated - an incomplete download ({size:,} bytes here; the "
                f"official instancediffusion_sd15.pth is about 13.6 GB). Download it again.") from None
        pkls = [n for n in self.zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            names = self.zf.namelist()[:6]
            self.zf.close()
            raise CheckpointError(f"{label}: a zip archive but not a PyTorch checkpoint (expected one "
                                  f"'<folder>/data.pkl', found {len(pkls)}; first entries {names})")
        self.prefix = pkls[0][: -len("data.pkl")]       # the inner folder name is arbitrary
        self.byteorder = "little"
        try:
            info = self.zf.getinfo(self.prefix + "byteorder")
            self.byteorder = self.zf.read(info).decode("ascii", "replace").strip() or "little"
        except KeyError:
            pass
        self.fh = open(path, "rb")
        self.records_read: list[str] = []

    def close(self):
        self.zf.close()
        self.fh.close()

    def load_tree(self):
        unpickler = None
        try:
            with self.zf.open(self.prefix + "data.pkl") as f:
                unpickler = _RestrictedUnpickler(f, self.label)
                tree = unpickler.load()
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, zlib.error) as exc:
            raise CheckpointError(f"{self.label}: the pickle record is damaged ({exc}); the file is corrupt, "
                                  f"download it again") from None
        except Exception as exc:  # malformed pickle: UnpicklingError, EOFError, TypeError from bad REDUCE args...
            raise CheckpointError(f"{self.label}: cannot parse the pickle inside the checkpoint "
                                  f"({type(exc).__name__}: {exc}); the file is corrupt or not a torch "
                                  f"checkpoint") from None
        return tree, unpickler

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        self.fh.seek(info.header_offset)
        header = self.fh.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{self.label}: zip record {info.filename} has a damaged header; the file is "
                                  f"corrupt")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        return info.header_offset + 30 + name_len + extra_len

    def read_storage(self, storage: _LazyStorage) -> torch.Tensor:
        """The storage as a flat tensor of its dtype, read straight into memory the tensor then owns."""
        name = f"{self.prefix}data/{storage.key}"
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self.label}: storage record '{name}' is missing from the zip; the file is "
                                  f"corrupt") from None
        itemsize = torch.empty((), dtype=storage.dtype).element_size()
        nbytes = storage.numel * itemsize
        if info.file_size != nbytes:
            raise CheckpointError(f"{self.label}: storage record '{name}' holds {info.file_size:,} bytes, the pickle "
                                  f"expects {nbytes:,}; the file is corrupt")
        buf = bytearray(nbytes)
        if info.compress_type == zipfile.ZIP_STORED:
            self.fh.seek(self._data_offset(info))
            got = self.fh.readinto(buf) if nbytes else 0
            if got != nbytes:
                raise CheckpointError(f"{self.label}: storage record '{name}' is cut short ({got:,} of {nbytes:,} "
                                      f"bytes); the file is truncated, download it again")
            if zlib.crc32(buf) != info.CRC:
                raise CheckpointError(f"{self.label}: storage record '{name}' fails its CRC check; the file is "
                                      f"corrupt, download it again")
        else:  # torch never compresses storages, but a re-zipped file might
            try:
                buf[:] = self.zf.read(info)
            except (zipfile.BadZipFile, zlib.error) as exc:
                raise CheckpointError(f"{self.label}: storage record '{name}' is damaged ({exc})") from None
        self.records_read.append(name)
        flat = torch.frombuffer(buf, dtype=storage.dtype) if nbytes else torch.empty(0, dtype=storage.dtype)
        if self.byteorder != sys.byteorder and itemsize > 1:
            flat = flat.view(torch.uint8).view(-1, itemsize).flip(-1).contiguous().view(storage.dtype).view(-1)
        return flat

    def materialize(self, ref: _LazyTensor, flat: torch.Tensor) -> torch.Tensor:
        shape, stride, offset = ref.shape, ref.stride, ref.offset
        if _numel(shape) > 0:
            last = offset + sum((s - 1) * st for s, st in zip(shape, stride))
            if last >= flat.numel():
                raise CheckpointError(f"{self.label}: a tensor view {list(shape)} (offset {offset}, stride "
                                      f"{list(stride)}) reaches past its storage of {flat.numel()} elements; the "
                                      f"file is corrupt")
        t = torch.as_strided(flat, shape, stride, offset)
        if t.numel() != flat.numel() or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)  # do not keep the rest of a shared storage alive
        return t


# ==================================================================================================== sniffing

def _decodes(head: bytes) -> bool:
    """UTF-8 text (a multi-byte character cut at the end of ``head`` still counts)."""
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3


def _sniff(path: str, label: str) -> str:
    """``"zip"`` or ``"safetensors"``; a clear CheckpointError for everything else."""
    if not os.path.exists(path):
        raise CheckpointError(f"{label}: no such file")
    if os.path.isdir(path):
        raise CheckpointError(f"{label}: is a directory; pass the weights file itself")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"{label}: the file is empty (0 bytes); the download or copy failed, get it again")
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    looks_text = b"\x00" not in head and _decodes(head)
    if len(head) >= 9 and head[8:9] == b"{" and not looks_text:
        header_len = struct.unpack("<Q", head[:8])[0]
        if header_len > size - 8:
            raise CheckpointError(f"{label}: a safetensors file whose header says {header_len:,} bytes but the file "
                                  f"has {size:,}; it is truncated, copy or download it again")
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise CheckpointError(f"{label}: a bare pickle (legacy torch serialization from before torch 1.6, or "
                              f"pickle.dump). It is not read: only torch's zip format and safetensors are supported. "
                              f"Re-save the state dict with a current torch.save or as safetensors in a trusted "
                              f"environment")
    text = head.lstrip().lower()
    if text.startswith(b"version https://git-lfs"):
        raise CheckpointError(f"{label}: a Git LFS pointer ({size} bytes), not the weights; fetch the real file "
                              f"(git lfs pull, or download it from the model page)")
    if text.startswith((b"<!doctype html", b"<html", b"<?xml")):
        raise CheckpointError(f"{label}: an HTML/XML page, not weights - the download saved an error or login page; "
                              f"download the file itself")
    kind = "a text file" if looks_text else "an unknown binary format"
    raise CheckpointError(f"{label}: {kind}, not a checkpoint (expected a torch .pth/.ckpt/.bin zip or a "
                          f".safetensors file, starting {head[:16]!r})")


# ==================================================================================================== sources

@dataclass
class _Source:
    label: str
    source_format: str
    refs: dict[str, Any]                     # official add-on key -> tensor, _LazyTensor or safetensors key
    notes: list[str]
    fetch: Callable[[Any], torch.Tensor]     # ref -> tensor (of its stored dtype)
    shapes: dict[str, tuple]
    dtypes: dict[str, torch.dtype]
    close: Callable[[], None] = lambda: None
    records_read: list[str] = field(default_factory=list)   # zip records read so far (streaming audit)


def _is_tensor(v) -> bool:
    return isinstance(v, (torch.Tensor, _LazyTensor))


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _STRIP_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def _count_tensors(obj, limit: int = 1_000_000) -> tuple[int, int]:
    """(tensors, values) inside a nested container, without reading anything (cycle-safe)."""
    seen, stack, n, values = set(), [obj], 0, 0
    while stack and n < limit:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if _is_tensor(o):
            n += 1
            values += _numel(o.shape)
        elif isinstance(o, Mapping):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
    return n, values


def _fmt_count(n: int, values: int) -> str:
    return f"{n} tensors, {values:,} values" if n else "no tensors"


def _int_keys(mapping: Mapping) -> dict[int, Any] | None:
    out = {}
    for k, v in mapping.items():
        if isinstance(k, int) and not isinstance(k, bool):
            out[k] = v
        elif isinstance(k, str) and k.isdigit():
            out[int(k)] = v
        else:
            return None
    return out


def _looks_logtd_fusers(tree: Mapping) -> bool:
    if not tree or not set(tree) <= {"input_blocks", "middle_block", "output_blocks"}:
        return False
    return all(isinstance(v, Mapping) and all(isinstance(e, Mapping) and "state" in e for e in v.values())
               for v in tree.values())


def _looks_logtd_scaleu(tree: Mapping) -> bool:
    entries = _int_keys(tree)
    return bool(entries) and all(isinstance(v, Mapping) and ("scaleu_b" in v or "scaleu_s" in v)
                                 for v in entries.values())


def _looks_official(tree: Mapping) -> bool:
    return any(isinstance(tree.get(k), Mapping) and any(_is_tensor(v) for v in tree[k].values())
               for k in ("ema", "model"))


def _logtd_block_map(group: str, numbers: list[int], notes: list[str]) -> dict[int, str]:
    """logtd's block numbers -> official prefixes (SD1.5 numbers as is; 0..n-1 list positions mapped in order)."""
    def prefix(n: int) -> str:
        return "middle_block.1" if group == "middle_block" else f"{group}.{n}.1"

    expected = {"input_blocks": list(SD15_INPUT_BLOCKS), "middle_block": [1],
                "output_blocks": list(SD15_OUTPUT_BLOCKS)}[group]
    if sorted(numbers) == expected:
        return {n: prefix(n) for n in numbers}
    if sorted(numbers) == list(range(len(expected))):
        notes.append(f"{group}: fusers numbered 0..{len(expected) - 1} were mapped in order to the SD1.5 blocks "
                     f"{expected}")
        return {n: prefix(expected[n]) for n in numbers}
    if group == "middle_block":
        raise CheckpointError(f"logtd fusers file: middle_block has entries {sorted(numbers)}; expected one ('1')")
    notes.append(f"warning: {group}: fuser block numbers {sorted(numbers)} are not the SD1.5 layout {expected}; "
                 f"used as block numbers")
    return {n: prefix(n) for n in numbers}


def _from_logtd_fusers(tree: Mapping, label: str) -> tuple[dict, str, list[str]]:
    notes = [f"{label}: logtd fusers file ({', '.join(tree)})"]
    refs, heads = {}, set()
    for group, entries in tree.items():
        numbered = _int_keys(entries)
        if numbered is None:
            raise CheckpointError(f"{label}: logtd fusers file: '{group}' has non-numeric block keys "
                                  f"{list(entries)[:6]}; expected block numbers like '1', '2', '4'")
        for n, prefix in _logtd_block_map(group, sorted(numbered), notes).items():
            entry = numbered[n]
            state, params = entry.get("state"), entry.get("params")
            if not isinstance(state, Mapping):
                raise CheckpointError(f"{label}: logtd fusers file: {group}[{n}]['state'] is "
                                      f"{type(state).__name__}, expected a state dict")
            if isinstance(params, Mapping) and isinstance(params.get("n_heads"), int):
                heads.add(params["n_heads"])
            for k, v in state.items():
                if not _is_tensor(v):
                    continue
                suffix = k.split("fuser.", 1)[1] if "fuser." in k else k
                refs[f"{prefix}.transformer_blocks.0.fuser.{suffix}"] = v
    if heads and heads != {8}:
        notes.append(f"warning: logtd fusers declare n_heads {sorted(heads)}; the official SD1.5 fusers use 8")
    return refs, "logtd-fusers", notes


def _from_logtd_scaleu(tree: Mapping, label: str) -> tuple[dict, str, list[str]]:
    refs = {}
    for k, entry in sorted(_int_keys(tree).items()):
        for kind in ("b", "s"):
            v = entry.get(f"scaleu_{kind}")
            if _is_tensor(v):
                refs[f"scaleu_{kind}_{k}"] = v
    return refs, "logtd-scaleu", [f"{label}: logtd ScaleU file ({len(tree)} blocks)"]


def _flat_tensors(sd: Mapping, label: str, notes: list[str]) -> dict[str, Any]:
    flat, skipped = {}, 0
    for k, v in sd.items():
        if not isinstance(k, str):
            skipped += 1
            continue
        if _is_tensor(v):
            flat[_strip(k)] = v
        elif addon_group(_strip(k)) is not None:
            raise CheckpointError(f"{label}: '{_strip(k)}' is not a plain tensor in the file ({v!r:.60}); "
                                  f"unsupported tensor encoding or a tampered file")
        else:
            skipped += 1
    if skipped:
        notes.append(f"{label}: ignored {skipped} non-tensor entries")
    return flat


def _is_bare_unifusion(keys: Iterable[str]) -> bool:
    keys = list(keys)
    return ("null_positive_feature" in keys and any(k.startswith("linears_list.") for k in keys)
            and all(k.startswith(_UNIFUSION_BARE) for k in keys))


def _select(flat: Mapping[str, Any], label: str, notes: list[str]) -> dict[str, Any]:
    """The add-on keys of a flat state dict; CheckpointError for GLIGEN, diffusers, base models, unknown dicts."""
    keys = list(flat)
    posnet = [k[len(POSITION_NET_PREFIX):] for k in keys if k.startswith(POSITION_NET_PREFIX)]
    bare_gligen = "null_positive_feature" in keys and any(k.startswith("linears.") for k in keys)
    if bare_gligen or (any(k.startswith(_GLIGEN_POSNET) for k in posnet)
                       and not any(k.startswith("linears_list.") for k in posnet)):
        fusers = sum(1 for k in keys if ".fuser." in k)
        context = next((tuple(flat[k].shape) for k in keys if k.endswith(".fuser.linear.weight")), None)
        raise CheckpointError(
            f"{label}: this is a GLIGEN checkpoint, not InstanceDiffusion (its position net has "
            f"position_net.linears.* - GLIGEN naming - and no position_net.linears_list.*; {fusers} fuser tensors"
            + (f", fuser linear {list(context)}" if context else "") + ", no scaleu_*). Load it with ComfyUI's "
            f"GLIGENLoader. InstanceDiffusion weights come from {OFFICIAL_SOURCE_HINT}.")
    kept = {k: v for k, v in flat.items() if addon_group(k) is not None}
    bad_fuser = [k for k in keys if ".fuser." in k and k not in kept]
    if bad_fuser and not kept:
        if any(k.startswith(_DIFFUSERS_PREFIXES) for k in bad_fuser):
            raise CheckpointError(
                f"{label}: InstanceDiffusion-like weights in diffusers layout ({len(bad_fuser)} fuser tensors such "
                f"as '{bad_fuser[0]}'); only the CompVis/official key layout is read. Use {OFFICIAL_SOURCE_HINT}.")
    if bad_fuser:
        raise CheckpointError(f"{label}: {len(bad_fuser)} fuser tensors with unexpected names, e.g. "
                              f"{bad_fuser[:3]}; expected <block>.transformer_blocks.<j>.fuser.<one of "
                              f"{len(FUSER_SUFFIXES)} official suffixes>. The file is damaged or another model")
    if not kept:
        base = sum(1 for k in keys if k.startswith(_BASE_UNET_PREFIXES))
        full = sum(1 for k in keys if k.startswith(_FULL_MODEL_PREFIXES))
        diffusers = sum(1 for k in keys if k.startswith(_DIFFUSERS_PREFIXES))
        if base or full or diffusers:
            raise CheckpointError(
                f"{label}: this is a base Stable Diffusion model ({base} UNet tensors, {full} VAE/text-encoder "
                f"tensors, {diffusers} diffusers-layout tensors) with none of the InstanceDiffusion add-on weights "
                f"(0 position_net.*, 0 *.fuser.*, 0 scaleu_*; the official SD1.5 add-ons have 217 + 272 + 24). "
                f"Load it as the base model with the regular checkpoint loader; the add-on weights come from "
                f"{OFFICIAL_SOURCE_HINT}.")
        raise CheckpointError(f"{label}: {len(keys)} tensors but none of the InstanceDiffusion add-on weights "
                              f"(position_net.*, <block>.transformer_blocks.0.fuser.*, scaleu_b_k/scaleu_s_k); "
                              f"first keys {keys[:5]}. Expected {OFFICIAL_SOURCE_HINT}.")
    dropped = len(keys) - len(kept)
    if dropped:
        base = sum(1 for k in keys if k not in kept and k.startswith(_BASE_UNET_PREFIXES))
        other = dropped - base
        notes.append(f"{label}: dropped {base} base-UNet tensors (the add-ons work on any SD1.5 UNet)"
                     + (f" and {other} other tensors" if other else ""))
    return kept


def _from_official(tree: Mapping, label: str) -> tuple[dict, str, list[str]]:
    notes = []
    chosen, kept = None, None
    for entry in ("ema", "model"):
        sd = tree.get(entry)
        if not isinstance(sd, Mapping):
            continue
        flat = _flat_tensors(sd, f"{label} [{entry}]", [])
        if any(addon_group(k) is not None for k in flat) or entry == "model" or "model" not in tree:
            entry_notes: list[str] = []
            kept = _select(flat, f"{label} [{entry}]", entry_notes)
            chosen = entry
            notes.extend(entry_notes)
            break
        notes.append(f"warning: {label}: 'ema' holds no add-on weights; using 'model'")
    why = ("EMA weights, as the official loader prefers" if chosen == "ema"
           else "'ema' has no add-on weights" if "ema" in tree else "no EMA copy in the file")
    notes.insert(0, f"{label}: official InstanceDiffusion training checkpoint; using '{chosen}' ({why})")
    dropped = []
    for name, value in tree.items():
        if name == chosen:
            continue
        n, values = _count_tensors(value)
        dropped.append(f"{name} ({_fmt_count(n, values)})" if n else str(name))
    if dropped:
        notes.append(f"{label}: dropped entries, never read: {', '.join(dropped)}")
    return kept, "official-pth", notes


def _extract(tree, label: str) -> tuple[dict, str, list[str]]:
    if not isinstance(tree, Mapping):
        raise CheckpointError(f"{label}: the checkpoint holds a {type(tree).__name__}"
                              f"{' (' + tree._global + ')' if isinstance(tree, _Inert) else ''}, expected a dict "
                              f"of tensors")
    if _looks_logtd_fusers(tree):
        refs, fmt, notes = _from_logtd_fusers(tree, label)
        return _select(refs, label, notes), fmt, notes
    if _looks_logtd_scaleu(tree):
        refs, fmt, notes = _from_logtd_scaleu(tree, label)
        return _select(refs, label, notes), fmt, notes
    if _looks_official(tree):
        return _from_official(tree, label)
    notes: list[str] = []
    fmt = "state-dict"
    if isinstance(tree.get("state_dict"), Mapping):
        notes.append(f"{label}: read the 'state_dict' entry")
        tree = tree["state_dict"]
    flat = _flat_tensors(tree, label, notes)
    if not flat:
        raise CheckpointError(f"{label}: no tensors found (top-level keys {list(tree)[:8]}); expected "
                              f"{OFFICIAL_SOURCE_HINT} or our .safetensors")
    if not any(k.startswith(POSITION_NET_PREFIX) for k in flat) and _is_bare_unifusion(flat):
        flat = {POSITION_NET_PREFIX + k: v for k, v in flat.items()}
        fmt = "logtd-position-net"
        notes.append(f"{label}: logtd position-net file (UniFusion state dict without prefix)")
    return _select(flat, label, notes), fmt, notes


def _open_torch_zip(path: str, label: str) -> _Source:
    z = _TorchZip(path, label)
    try:
        tree, unpickler = z.load_tree()
        refs, fmt, notes = _extract(tree, label)
    except BaseException:
        z.close()
        raise
    notes = [f"{label}: torch zip, inner folder '{z.prefix.rstrip('/')}'"] + notes
    odd = sorted(loc for loc in unpickler.locations if loc != "cpu")
    if odd:
        notes.append(f"{label}: storages were saved on {', '.join(odd)}; read on the CPU")
    if unpickler.inert_globals:
        shown = sorted(unpickler.inert_globals)
        notes.append(f"{label}: {len(shown)} unknown pickled classes kept inert (never imported or run): "
                     + ", ".join(shown[:8]) + (" ..." if len(shown) > 8 else ""))
    for k, v in refs.items():
        if not isinstance(v, _LazyTensor):
            raise CheckpointError(f"{label}: '{k}' is not a plain tensor in the file ({v!r:.60}); unsupported "
                                  f"tensor encoding")
    uses = collections.Counter(v.storage.key for v in refs.values())
    cache: dict[str, torch.Tensor] = {}

    def fetch(ref: _LazyTensor) -> torch.Tensor:
        key = ref.storage.key
        flat = cache.get(key)
        if flat is None:
            flat = z.read_storage(ref.storage)
            if uses[key] > 1:
                cache[key] = flat
        t = z.materialize(ref, flat)
        uses[key] -= 1
        if uses[key] <= 0:
            cache.pop(key, None)
        return t

    return _Source(label, fmt, refs, notes, fetch, {k: tuple(v.shape) for k, v in refs.items()},
                   {k: v.dtype for k, v in refs.items()}, z.close, z.records_read)


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


def _open_safetensors(path: str, label: str) -> _Source:
    from safetensors import safe_open
    try:
        handle = safe_open(path, framework="pt", device="cpu")
        meta = handle.metadata() or {}
        shapes, dtypes = {}, {}
        for key in handle.keys():
            sl = handle.get_slice(key)
            shapes[key] = tuple(sl.get_shape())
            dtypes[key] = _ST_DTYPES.get(sl.get_dtype(), torch.float32)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{label}: cannot read this safetensors file ({exc}); it is truncated or corrupt, "
                              f"copy or convert it again") from None
    notes = []
    if meta.get("format") == FORMAT_NAME:
        fmt = "instancediffusion-safetensors"
        notes.append(f"{label}: our add-on safetensors (format version {meta.get('format_version', '?')}, "
                     f"converted from {meta.get('source_format', '?')} '{meta.get('source', '?')}')")
    else:
        fmt = "safetensors"
        notes.append(f"{label}: safetensors state dict")

    class _Shape:  # lets _select read shapes without loading
        __slots__ = ("key", "shape")

        def __init__(self, key, shape):
            self.key, self.shape = key, shape

    flat: dict[str, Any] = {}
    for key in shapes:
        flat[_strip(key)] = _Shape(key, shapes[key])
    if not any(k.startswith(POSITION_NET_PREFIX) for k in flat) and _is_bare_unifusion(flat):
        flat = {POSITION_NET_PREFIX + k: v for k, v in flat.items()}
        notes.append(f"{label}: UniFusion state dict without prefix (position net)")
    refs = _select(flat, label, notes)

    def fetch(ref: _Shape) -> torch.Tensor:
        try:
            return handle.get_tensor(ref.key)
        except Exception as exc:
            raise CheckpointError(f"{label}: cannot read tensor '{ref.key}' ({exc}); the file is corrupt") from None

    return _Source(label, fmt, refs, notes, fetch, {k: tuple(v.shape) for k, v in refs.items()},
                   {k: dtypes[v.key] for k, v in refs.items()})


def _open_mapping(sd: Mapping, label: str) -> _Source:
    refs, fmt, notes = _extract(sd, label)
    for k, v in refs.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{label}: '{k}' is a {type(v).__name__}, expected a torch.Tensor")
    return _Source(label, fmt, refs, notes, lambda t: t, {k: tuple(v.shape) for k, v in refs.items()},
                   {k: v.dtype for k, v in refs.items()})


def _open(item, index: int) -> _Source:
    if isinstance(item, Mapping):
        return _open_mapping(item, f"state dict #{index}")
    if isinstance(item, AddonWeights):
        return _open_mapping(item.tensors, f"add-on weights #{index}")
    if not isinstance(item, (str, os.PathLike)):
        raise CheckpointError(f"checkpoint input #{index} is a {type(item).__name__}; pass a file path, a state "
                              f"dict, or a list of them")
    path = os.fspath(item)
    label = f"'{path}'"
    kind = _sniff(path, label)
    return _open_torch_zip(path, label) if kind == "zip" else _open_safetensors(path, label)


# ==================================================================================================== validation

def _validate_groups(shapes: Mapping[str, tuple]) -> list[str]:
    """Raise for damaged groups (incomplete fuser/ScaleU block, position net without core tensors); notes."""
    notes = []
    fusers: dict[str, set] = collections.defaultdict(set)
    scaleu: dict[int, set] = collections.defaultdict(set)
    posnet = set()
    for key in shapes:
        group = addon_group(key)
        if group == "fusers":
            block, suffix = key.split(".fuser.")
            fusers[block].add(suffix)
        elif group == "scaleu":
            m = _SCALEU_KEY.match(key)
            scaleu[int(m["k"])].add(m["kind"])
        elif group == "position_net":
            posnet.add(key[len(POSITION_NET_PREFIX):])
    for block, suffixes in sorted(fusers.items()):
        missing = [s for s in FUSER_SUFFIXES if s not in suffixes]
        if missing:
            raise CheckpointError(f"fuser '{block}' has {len(suffixes)} of its {len(FUSER_SUFFIXES)} tensors "
                                  f"(missing {missing[:5]}{' ...' if len(missing) > 5 else ''}); the file is "
                                  f"damaged or only partly converted")
    for k, kinds in sorted(scaleu.items()):
        if kinds != {"b", "s"}:
            missing = "scaleu_s" if "s" not in kinds else "scaleu_b"
            raise CheckpointError(f"ScaleU block {k}: '{missing}_{k}' is missing (each block needs scaleu_b_{k} "
                                  f"and scaleu_s_{k}); the file is damaged")
    if posnet:
        missing = [k for k in _POSNET_CORE if k not in posnet]
        if not any(k.startswith(_CONVNEXT_PREFIX) for k in posnet):
            missing.append(_CONVNEXT_PREFIX + "*")
        if missing:
            raise CheckpointError(f"the position net is incomplete: {len(posnet)} tensors, missing "
                                  f"{len(missing)} required ones such as "
                                  f"{[POSITION_NET_PREFIX + m for m in missing[:4]]}; the file is damaged or not an "
                                  f"InstanceDiffusion position net")
    counts = group_counts(shapes)
    if not posnet:
        notes.append("warning: no position net (position_net.*): the fusers get no instance tokens from this file; "
                     "add position_net.ckpt or use the official file")
    if not fusers:
        notes.append("warning: no fusers (*.fuser.*): grounding will not reach the UNet; add fusers.ckpt or use the "
                     "official file")
    if not scaleu:
        notes.append("warning: no ScaleU weights (scaleu_b_k/scaleu_s_k): ScaleU will be the identity")
    sd15_blocks = set(SD15_FUSER_BLOCKS)
    got_blocks = {b.rsplit(".transformer_blocks.", 1)[0] for b in fusers}
    if fusers and got_blocks != sd15_blocks:
        notes.append(f"note: {len(got_blocks)} fuser blocks; the official SD1.5 add-ons have 16")
    if scaleu and set(scaleu) != set(range(12)):
        notes.append(f"note: ScaleU blocks {sorted(scaleu)}; the official SD1.5 add-ons have 0..11")
    notes.append("kept: " + ", ".join(
        f"{name} {counts[g]['tensors']} tensors ({counts[g]['params']:,} params"
        + (f", {counts[g]['blocks']} blocks" if g != "position_net" else "") + ")"
        for g, name in (("position_net", "position net"), ("fusers", "fusers"), ("scaleu", "ScaleU"))))
    return notes


# ==================================================================================================== reader

class AddonReader:
    """Opens one or more inputs, validates the add-on keys without reading data, then yields tensors one by one.

    ``keys``/``shapes``/``dtypes`` (after the optional cast) are known before any tensor is read, so a writer can
    stream tensors to disk with about one tensor in memory. Use as a context manager; ``read_all()`` gives an
    ``AddonWeights``.
    """

    def __init__(self, inputs, dtype: Any = None):
        self.dtype = parse_dtype(dtype)
        items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if not items:
            raise CheckpointError("no checkpoint given; pass a path, a state dict, or a list of them")
        self.sources: list[_Source] = []
        try:
            for i, item in enumerate(items):
                self.sources.append(_open(item, i))
            self._owner: dict[str, _Source] = {}
            for src in self.sources:
                for key in src.refs:
                    if key in self._owner:
                        dups = [k for k in src.refs if k in self._owner]
                        raise CheckpointError(
                            f"{len(dups)} add-on tensors are in both {self._owner[key].label} and {src.label} (e.g. "
                            f"{dups[:3]}); pass each group (position net, fusers, ScaleU) only once")
                    self._owner[key] = src
            self.shapes = {k: s.shapes[k] for k, s in self._owner.items()}
            self.stored_dtypes = {k: s.dtypes[k] for k, s in self._owner.items()}
            self.notes = [n for s in self.sources for n in s.notes] + _validate_groups(self.shapes)
        except BaseException:
            self.close()
            raise
        if len(self.sources) == 1:
            self.source_format = self.sources[0].source_format
        else:
            self.source_format = "+".join(s.source_format for s in self.sources)
        self.keys = list(self._owner)

    @property
    def dtypes(self) -> dict[str, torch.dtype]:
        """dtype of each tensor as it will be returned (after the cast)."""
        return {k: (self.dtype if self.dtype is not None and d.is_floating_point else d)
                for k, d in self.stored_dtypes.items()}

    def tensor(self, key: str) -> torch.Tensor:
        src = self._owner[key]
        t = src.fetch(src.refs[key])
        if tuple(t.shape) != tuple(self.shapes[key]):
            raise CheckpointError(f"{src.label}: tensor '{key}' has shape {list(t.shape)}, the index says "
                                  f"{list(self.shapes[key])}; the file is corrupt")
        return _cast(t, self.dtype)

    @property
    def records_read(self) -> list[str]:
        return [r for s in self.sources for r in s.records_read]

    def read_all(self) -> AddonWeights:
        tensors = {k: self.tensor(k) for k in self.keys}
        return AddonWeights(tensors, self.source_format, list(self.notes), self.records_read)

    def close(self):
        for s in self.sources:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_addon_state_dict(path_or_state_dict, dtype: Any = None) -> AddonWeights:
    """Official add-on tensors from a file, a state dict, or a list of them (merged; a key twice is an error).

    ``dtype`` (``"fp16"``, ``"bf16"``, ``"fp32"``, a torch dtype, or None to keep) casts each floating tensor as
    it is read, so a cast to fp16 never holds the fp32 copy of all tensors at once.
    """
    with AddonReader(path_or_state_dict, dtype) as reader:
        return reader.read_all()


# ==================================================================================================== writer

def _write_safetensors(path: str, specs: list[tuple[str, torch.dtype, tuple]],
                       produce: Callable[[str], torch.Tensor], metadata: Mapping[str, str]) -> int:
    """Write a safetensors file tensor by tensor (the header is built from ``specs`` first); returns its size.

    Writing ourselves instead of ``safetensors.torch.save_file`` keeps one tensor in memory at a time (the library
    serialises every tensor to bytes before writing). The file is written next to ``path`` and renamed at the end,
    so an interrupted run never leaves a half-written file under the final name.
    """
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for key, dtype, shape in specs:
        if dtype not in _ST_NAMES:
            raise CheckpointError(f"tensor '{key}': dtype {dtype} cannot be stored in safetensors here")
        nbytes = _numel(shape) * torch.empty((), dtype=dtype).element_size()
        header[key] = {"dtype": _ST_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    tmp = f"{path}.partial"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for key, dtype, shape in specs:
                t = produce(key)
                if t.dtype != dtype or tuple(t.shape) != tuple(shape):
                    raise CheckpointError(f"tensor '{key}': got {t.dtype} {list(t.shape)}, header says {dtype} "
                                          f"{list(shape)}")
                t = t.detach().to("cpu").contiguous()
                if t.numel():
                    f.write(memoryview(t.view(-1).view(torch.uint8).numpy()))
                del t
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return os.path.getsize(path)


def _format_metadata(shapes: Mapping[str, tuple], dtypes: Mapping[str, torch.dtype], source: str,
                     source_format: str, extra: Mapping[str, Any] | None) -> dict[str, str]:
    counts = group_counts(shapes)
    kinds = sorted({str(d).replace("torch.", "") for d in dtypes.values()})
    meta = {str(k): str(v) for k, v in (extra or {}).items()}
    meta.update({
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "source": os.path.basename(source) if source else "", "source_format": source_format,
        "dtype": ",".join(kinds),
        "position_net_tensors": str(counts["position_net"]["tensors"]),
        "fuser_tensors": str(counts["fusers"]["tensors"]), "fuser_blocks": str(counts["fusers"]["blocks"]),
        "scaleu_tensors": str(counts["scaleu"]["tensors"]), "scaleu_blocks": str(counts["scaleu"]["blocks"]),
    })
    return meta


def _check_output(path) -> str:
    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        raise CheckpointError(f"output '{path}' must end with .safetensors (our add-on format is safetensors)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CheckpointError(f"output folder '{parent}' does not exist; create it first")
    return path


def save_addons(tensors, path, dtype: Any = None, metadata: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Write add-on tensors (official key names only) as our safetensors; returns the metadata written.

    ``tensors``: a ``{key: tensor}`` dict or an ``AddonWeights``. ``metadata`` adds string entries; ``format``,
    ``format_version``, ``source``, ``source_format``, ``dtype`` and the per-group counts are always set.
    """
    path = _check_output(path)
    dtype = parse_dtype(dtype)
    source_format = "state-dict"
    if isinstance(tensors, AddonWeights):
        source_format = tensors.source_format
        tensors = tensors.tensors
    if not isinstance(tensors, Mapping) or not tensors:
        raise CheckpointError("save_addons: 'tensors' must be a non-empty {official add-on key: tensor} dict")
    bad = [k for k in tensors if addon_group(k) is None]
    if bad:
        raise CheckpointError(f"save_addons: {len(bad)} keys are not InstanceDiffusion add-on keys, e.g. {bad[:4]}; "
                              f"filter a full checkpoint with read_addon_state_dict first")
    not_tensor = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if not_tensor:
        raise CheckpointError(f"save_addons: values of {not_tensor[:4]} are not tensors")
    _validate_groups({k: tuple(v.shape) for k, v in tensors.items()})
    keys = sorted(tensors)
    out_dtypes = {k: (dtype if dtype is not None and tensors[k].is_floating_point() else tensors[k].dtype)
                  for k in keys}
    shapes = {k: tuple(tensors[k].shape) for k in keys}
    meta = _format_metadata(shapes, out_dtypes, (metadata or {}).get("source", ""), source_format, metadata)
    _write_safetensors(path, [(k, out_dtypes[k], shapes[k]) for k in keys],
                       lambda k: _cast(tensors[k], dtype), meta)
    return meta


def write_addons(reader: AddonReader, path, metadata: Mapping[str, Any] | None = None,
                 source: str = "") -> tuple[dict[str, str], int]:
    """Stream every tensor of an open ``AddonReader`` into our safetensors format; returns (metadata, size)."""
    path = _check_output(path)
    keys = sorted(reader.keys)
    dtypes = reader.dtypes
    meta = _format_metadata(reader.shapes, dtypes, source, reader.source_format, metadata)
    size = _write_safetensors(path, [(k, dtypes[k], tuple(reader.shapes[k])) for k in keys], reader.tensor, meta)
    return meta, size


# ==================================================================================================== loader

def load_instancediffusion(path_or_state_dict, dtype: Any = None, allow_partial: bool = False):
    """Read the add-on weights and build ``InstanceDiffusionAddons`` (see the module docstring for partial files).

    The module gets ``source_format`` and ``load_notes`` attributes so a node can report what was loaded.
    """
    weights = read_addon_state_dict(path_or_state_dict, dtype=dtype)
    missing = [g for g in weights.missing_groups if g != "scaleu"]
    if missing and not allow_partial:
        names = {"position_net": "the position net (position_net.*, logtd: position_net.ckpt)",
                 "fusers": "the fusers (*.fuser.*, logtd: fusers.ckpt)"}
        have = weights.counts()
        raise CheckpointError(
            f"incomplete InstanceDiffusion weights ({weights.source_format}): missing "
            + " and ".join(names[g] for g in missing)
            + f"; found position net {have['position_net']['tensors']} tensors, fusers {have['fusers']['tensors']} "
              f"tensors, ScaleU {have['scaleu']['tensors']} tensors. Grounding needs both the position net and the "
              f"fusers: load the files together (a list of paths) or use the official file; "
              f"allow_partial=True loads what is there anyway.")
    from .addons import InstanceDiffusionAddons  # lazy: reading files never depends on the model code
    try:
        addons = InstanceDiffusionAddons.from_state_dict(weights.tensors, dtype=parse_dtype(dtype))
    except CheckpointError:
        raise
    except ValueError as exc:
        raise CheckpointError(f"the add-on weights ({weights.source_format}) do not form a valid model: {exc}") \
            from None
    addons.eval().requires_grad_(False)
    addons.source_format = weights.source_format
    addons.load_notes = list(weights.notes)
    return addons
