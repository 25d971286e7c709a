"""Unpickle a torch checkpoint's ``data.pkl`` without importing or running anything the pickle names.

Why not ``torch.load``: the official file pickles OmegaConf objects, so ``weights_only=True`` refuses it, and
``weights_only=False`` would run whatever the pickle asks for. Here every global is resolved against a short
allow-list (containers, numbers, our own tensor-rebuild functions); anything else becomes an inert placeholder that
is never imported or called, and names that can only mean code execution (``os.system``, ``builtins.eval``, ...)
make the file refused outright. Tensors come out as lazy references: no storage is read here.
"""
from __future__ import annotations

import collections
import pickle
import re
from typing import Any

import torch

from .errors import OFFICIAL_SOURCE_HINT, CheckpointError


class Inert:
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


class LazyStorage:
    """A storage record of the zip (``data/<key>``) that has not been read."""
    __slots__ = ("key", "dtype", "numel", "location")

    def __init__(self, key: str, dtype: torch.dtype, numel: int, location: str):
        self.key, self.dtype, self.numel, self.location = key, dtype, numel, location

    def __setstate__(self, state):
        raise CheckpointError("malformed pickle: state applied to a storage")


class LazyTensor:
    """A tensor view (offset, size, stride) of a lazy storage; becomes a tensor only if its key is kept."""
    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage: LazyStorage, offset: int, shape: tuple, stride: tuple):
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
    if not isinstance(storage, LazyStorage):
        raise CheckpointError(f"malformed pickle: a tensor refers to {type(storage).__name__}, not to a storage")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise CheckpointError(f"malformed pickle: tensor storage offset {storage_offset!r}")
    shape, strides = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(shape) != len(strides) or any(s < 0 for s in shape) or any(s < 0 for s in strides):
        raise CheckpointError(f"malformed pickle: tensor size {shape} / stride {strides}")
    return LazyTensor(storage, storage_offset, shape, strides)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """``torch._utils._rebuild_parameter[_with_state]``: a parameter is just its data here."""
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    """``torch._tensor._rebuild_from_type_v2``: only our own rebuild functions are ever called."""
    if func in (_rebuild_tensor, _rebuild_parameter) and isinstance(args, tuple):
        return func(*args)
    return Inert(func, new_type, args, state)


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
    if isinstance(cls, type) and issubclass(cls, Inert):
        return cls()
    if cls in (dict, list, set, collections.OrderedDict) and base is cls:
        return cls() if state is None else cls(state)
    return Inert(cls, base, state)


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


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` into plain containers, lazy tensors and inert placeholders; imports nothing."""

    def __init__(self, file, label: str):
        super().__init__(file, encoding="utf-8")
        self.label = label
        self.storages: dict[str, LazyStorage] = {}
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
            cls = type("Inert", (Inert,), {"_global": f"{module}.{name}"})
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
            found = self.storages[key] = LazyStorage(key, stype.dtype, numel, str(location))
        elif found.dtype != stype.dtype or found.numel != numel:
            raise CheckpointError(f"{self.label}: malformed pickle: storage {key} declared twice differently")
        return found
