"""Unpickle a torch checkpoint's ``data.pkl`` without importing or running anything the pickle names.

Why not ``torch.load``: the official file pickles OmegaConf objects, so ``weights_only=True`` refuses it, and
``weights_only=False`` would run whatever the pickle asks for. Here every global is resolved against a short
allow-list (containers, numbers, our own tensor-rebuild functions); anything else becomes an inert placeholder that
is never imported or called, and names that can only mean code execution (``os.system``, ``builtins.eval``, ...)
make the file refused outright. Tensors come out as lazy references: no storage is read here.

A pickle that runs no code can still exhaust memory or CPU, so the reader is Python's pure-Python unpickler with
every opcode counted and the hostile ones checked (decided here):
- the pickle is at most ``MAX_PICKLE_BYTES`` (the official 13.6 GB checkpoint's is about 1 MB), at most
  ``MAX_PICKLE_OPS`` opcodes (it has about 0.2 M) and ``MAX_PICKLE_SECONDS`` of work; a length inside the pickle
  is checked against what is left of it before anything is allocated (``BYTEARRAY8`` allocates first otherwise);
- the C unpickler is not used: its memo is an array indexed by the pickle's own numbers (``LONG_BINPUT 2**31``
  allocates 16 GB) and it gives no hook between opcodes;
- calls (``REDUCE``) go only to our functions, inert placeholders and argument-checked stand-ins of the builtin
  constructors: ``str(x)`` of a pickled DAG (40 levels of shared lists: a 2**40-character repr) or hashing a DAG of
  tuples (a dict key, a set item) never finishes, so keys and set items are shallow values;
- state (``BUILD``) is applied only to our inert placeholders and to ordered dicts (``_metadata``), never to an
  allow-listed function or class: ``setattr(_rebuild_tensor, "__defaults__", ...)`` would rewrite this loader for
  the life of the process; ``NEWOBJ``/``INST``/``OBJ`` only build inert placeholders;
- a tensor view never has more elements than its storage (a zero-stride view of one float would become a 1 GiB
  tensor), sizes, strides and offsets stay below 2**48, and every storage's declared size is checked against its
  record in the zip before any data is read.
"""
from __future__ import annotations

import collections
import math
import pickle
import re
import struct
import time
from typing import Any, Mapping

import torch

from .errors import OFFICIAL_SOURCE_HINT, CheckpointError, short_repr

MAX_PICKLE_BYTES = 64 << 20          # bytes of data.pkl (official: ~1 MB)
MAX_PICKLE_OPS = 4_000_000           # opcodes (official: ~0.2 M; ~70 bytes of memory each at most)
MAX_PICKLE_SECONDS = 30.0            # wall time of the whole unpickling (official: well under a second)
MAX_INERT_GLOBALS = 256              # distinct unknown classes (official: 5); each one is a new class object
MAX_DIM = 1 << 48                    # any tensor size, stride, offset or storage size beyond this is corrupt
_KEY_ITEMS = 256                     # elements of a tuple used as a dict key or set item
_KEY_DEPTH = 4                       # nesting of such a tuple
_LINE_BYTES = 1 << 16                # one text line of a protocol-0 opcode
_CHUNK = 1 << 20


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

    def _record_items(self, items) -> None:
        """Items a pickle appends or sets on a placeholder (e.g. a ``defaultdict``): kept as a list, never hashed."""
        self.__dict__.setdefault("items", []).extend(items)

    def __repr__(self):
        return f"<inert {self._global[:80]}>"


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


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _int_tuple(value, what: str) -> tuple:
    if not isinstance(value, (tuple, list)) or len(value) > 64 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_DIM for v in value):
        raise CheckpointError(f"malformed pickle: tensor {what} {short_repr(value)} is not a tuple of at most 64 "
                              f"integers in [0, 2**48)")
    return tuple(value)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None):
    """Our replacement for ``torch._utils._rebuild_tensor_v2``: returns a lazy reference, reads nothing.

    The view must lie inside its storage and have no more elements than it: an expanded view (stride 0, or
    overlapping strides) of a small storage would otherwise become a huge tensor when it is copied out."""
    if not isinstance(storage, LazyStorage):
        raise CheckpointError(f"malformed pickle: a tensor refers to {type(storage).__name__}, not to a storage")
    if isinstance(storage_offset, bool) or not isinstance(storage_offset, int) or not 0 <= storage_offset < MAX_DIM:
        raise CheckpointError(f"malformed pickle: tensor storage offset {short_repr(storage_offset)}")
    shape, strides = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise CheckpointError(f"malformed pickle: tensor size {list(shape)} / stride {list(strides)}")
    numel = math.prod(shape)
    if numel > 0:
        last = storage_offset + sum((s - 1) * st for s, st in zip(shape, strides))
        if last >= storage.numel:
            raise CheckpointError(f"malformed pickle: a tensor view {list(shape)} (offset {storage_offset}, stride "
                                  f"{list(strides)}) reaches past its storage of {storage.numel:,} elements; the "
                                  f"file is corrupt")
        if numel > storage.numel:
            raise CheckpointError(
                f"refused - a tensor view {list(shape)} (stride {list(strides)}) has {numel:,} elements but its "
                f"storage holds {storage.numel:,}: an expanded (zero-stride or overlapping) view, which would take "
                f"{numel * element_size(storage.dtype):,} bytes once read. Weights never need this; the file is "
                f"corrupt or hostile")
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
    if (not isinstance(text, str) or not isinstance(encoding, str) or errors != "strict"
            or encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "utf-8", "utf8", "ascii")):
        raise CheckpointError(f"malformed pickle: _codecs.encode({type(text).__name__}, {short_repr(encoding)})")
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


def _check_key(value) -> None:
    """A dict key or set item must hash in bounded time: tuples (and slices) of at most ``_KEY_ITEMS`` elements and
    ``_KEY_DEPTH`` levels. Hashing a tuple is not cached, so a DAG of shared tuples (40 levels) never finishes."""
    if type(value) not in (tuple, slice):
        return
    budget, stack = _KEY_ITEMS, [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if type(v) is slice:
            v = (v.start, v.stop, v.step)
        if type(v) is not tuple:
            continue
        budget -= len(v)
        if depth >= _KEY_DEPTH or budget < 0:
            raise CheckpointError(f"refused - a dict key or set item is a tuple nested more than {_KEY_DEPTH} "
                                  f"levels or with more than {_KEY_ITEMS} elements (hashing a shared-tuple DAG "
                                  f"never finishes); weights files use names as keys. The file is corrupt or hostile")
        stack.extend((x, depth + 1) for x in v)


def _keys_checked(pairs):
    """The (key, value) pairs of a mapping or a sequence of pairs, each key checked."""
    if isinstance(pairs, dict):
        return pairs                                 # its keys are hashed already
    if not isinstance(pairs, (list, tuple)):
        raise CheckpointError(f"malformed pickle: a dict built from {type(pairs).__name__}")
    out = []
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise CheckpointError(f"malformed pickle: a dict item {short_repr(pair)} is not a (key, value) pair")
        _check_key(pair[0])
        out.append(tuple(pair))
    return out


def _items_checked(items):
    if not isinstance(items, (list, tuple, set, frozenset, dict, str, bytes)):
        raise CheckpointError(f"malformed pickle: a container built from {type(items).__name__}")
    if isinstance(items, (list, tuple)):
        for item in items:
            _check_key(item)
    return items


def _safe_dict_type(cls):
    def build(*args):
        if not args:
            return cls()
        if len(args) != 1:
            raise CheckpointError(f"malformed pickle: {cls.__name__} with {len(args)} arguments")
        return cls(_keys_checked(args[0]))
    return build


def _safe_set_type(cls):
    def build(*args):
        if not args:
            return cls()
        if len(args) != 1:
            raise CheckpointError(f"malformed pickle: {cls.__name__} with {len(args)} arguments")
        return cls(_items_checked(args[0]))
    return build


def _safe_sequence_type(cls):
    def build(*args):
        if not args:
            return cls()
        if len(args) != 1 or not isinstance(args[0], (list, tuple, set, frozenset, dict, str, bytes)):
            raise CheckpointError(f"malformed pickle: {cls.__name__}({short_repr(args)})")
        return cls(args[0])
    return build


def _atomic(v) -> bool:
    return v is None or isinstance(v, (bool, float, complex)) or (isinstance(v, int) and v.bit_length() <= 4096)


def _safe_number_type(cls):
    def build(*args):
        if len(args) > 2 or not all(_atomic(a) or (isinstance(a, (str, bytes)) and len(a) <= 400) for a in args):
            raise CheckpointError(f"malformed pickle: {cls.__name__}({short_repr(args)})")
        return cls(*args)
    return build


def _safe_str(*args):
    """``str`` of text or a number only (``str`` of a container is its repr, unbounded for a shared DAG)."""
    if not args:
        return ""
    if len(args) == 1 and (isinstance(args[0], str) or _atomic(args[0])):
        return str(args[0])
    raise CheckpointError(f"malformed pickle: str({short_repr(args)})")


def _safe_slice(*args):
    if len(args) > 3 or not all(_atomic(a) for a in args):
        raise CheckpointError(f"malformed pickle: slice({short_repr(args)})")
    return slice(*args)


def _safe_object(*args):
    if args:
        raise CheckpointError("malformed pickle: object() with arguments")
    return object()


# What a call (REDUCE) of an allow-listed builtin type really runs.
_SAFE_CALLS = {
    dict: _safe_dict_type(dict), collections.OrderedDict: _safe_dict_type(collections.OrderedDict),
    set: _safe_set_type(set), frozenset: _safe_set_type(frozenset),
    list: _safe_sequence_type(list), tuple: _safe_sequence_type(tuple),
    int: _safe_number_type(int), float: _safe_number_type(float), complex: _safe_number_type(complex),
    bool: _safe_number_type(bool), str: _safe_str, slice: _safe_slice, object: _safe_object,
}


def _safe_reconstructor(cls, base, state=None):
    """``copyreg._reconstructor``: plain containers are rebuilt, anything else becomes inert."""
    if isinstance(cls, type) and issubclass(cls, Inert):
        return cls()
    if cls in (dict, list, set, collections.OrderedDict) and base is cls:
        return _SAFE_CALLS[cls]() if state is None else _SAFE_CALLS[cls](state)
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
_OUR_FUNCTIONS = frozenset({_rebuild_tensor, _rebuild_parameter, _rebuild_from_type_v2, _safe_encode, _safe_bytes,
                            _safe_reconstructor})
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


class _BoundedReader:
    """The pickle stream, never read past ``limit`` bytes, in chunks: a length inside the pickle larger than what
    is left of it is refused before anything is read or allocated."""

    def __init__(self, raw, limit: int, label: str):
        self.raw, self.left, self.limit, self.label = raw, int(limit), int(limit), label

    def _too_long(self, n: int) -> CheckpointError:
        return CheckpointError(f"{self.label}: the pickle asks for {n:,} more bytes but only {self.left:,} are left "
                               f"in it; the file is corrupt (truncated) or hostile")

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.left
        if n > self.left:
            raise self._too_long(n)
        chunks, want = [], n
        while want > 0:
            data = self.raw.read(min(want, _CHUNK))
            if not data:
                break
            chunks.append(data)
            want -= len(data)
        out = b"".join(chunks)
        self.left -= len(out)
        return out

    def readline(self) -> bytes:
        line = self.raw.readline(min(self.left, _LINE_BYTES))
        self.left -= len(line)
        if line and not line.endswith(b"\n") and len(line) >= _LINE_BYTES:
            raise CheckpointError(f"{self.label}: a text line in the pickle is longer than {_LINE_BYTES:,} bytes; "
                                  f"the file is corrupt or hostile")
        return line


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickles ``data.pkl`` into plain containers, lazy tensors and inert placeholders; imports nothing.

    ``size``: the pickle's size in bytes (at most ``MAX_PICKLE_BYTES``; default that limit); ``record_sizes``:
    bytes of each storage record in the zip (``{key: bytes}``), to check every storage's declared size against
    the file before anything is allocated."""

    dispatch: dict = {}                  # filled below the class: every opcode counted, the hostile ones checked

    def __init__(self, file, label: str, size: int | None = None, record_sizes: Mapping[str, int] | None = None):
        limit = MAX_PICKLE_BYTES if size is None else int(size)
        if limit > MAX_PICKLE_BYTES:
            raise CheckpointError(
                f"{label}: refused - the pickle record (data.pkl) is {limit:,} bytes; the limit is "
                f"{MAX_PICKLE_BYTES:,} (MAX_PICKLE_BYTES; the official 13.6 GB checkpoint's is about 1 MB). The "
                f"file is not an InstanceDiffusion checkpoint, or it is corrupt or hostile")
        self._reader = _BoundedReader(file, limit, label)
        super().__init__(self._reader, encoding="utf-8")
        self.label = label
        self.record_sizes = record_sizes
        self.storages: dict[str, LazyStorage] = {}
        self.locations: set[str] = set()
        self.inert_globals: set[str] = set()
        self._placeholders: dict[tuple[str, str], type] = {}
        self.ops = 0
        self._started = time.monotonic()

    # ---------------------------------------------------------------------------------------------- budget

    def _check_budget(self) -> None:
        if self.ops > MAX_PICKLE_OPS:
            raise CheckpointError(
                f"{self.label}: refused - the pickle has more than {MAX_PICKLE_OPS:,} opcodes (MAX_PICKLE_OPS; the "
                f"official checkpoint has about 0.2 million). Nothing was executed; the file is not an "
                f"InstanceDiffusion checkpoint, or it is corrupt or hostile")
        if time.monotonic() - self._started > MAX_PICKLE_SECONDS:
            raise CheckpointError(
                f"{self.label}: refused - reading the pickle took more than {MAX_PICKLE_SECONDS:g} s "
                f"(MAX_PICKLE_SECONDS; the official checkpoint needs well under a second). The file is corrupt or "
                f"hostile")

    def _refuse(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.label}: refused - the pickle {what}, which a weights file never needs. "
                               f"Nothing from the file was executed; the file is corrupt or hostile")

    # ---------------------------------------------------------------------------------------------- globals

    def find_class(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise CheckpointError(f"{self.label}: malformed pickle (global name is not a string)")
        if len(module) > 200 or len(name) > 200:
            raise CheckpointError(f"{self.label}: malformed pickle: a global name longer than 200 characters "
                                  f"({module[:40]!r}.{name[:40]!r}...)")
        module = _COMPAT_MODULES.get(module, module)
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
            if len(self._placeholders) >= MAX_INERT_GLOBALS:
                raise self._refuse(f"names more than {MAX_INERT_GLOBALS} different unknown classes")
            cls = type("Inert", (Inert,), {"_global": f"{module}.{name}"})
            self._placeholders[key] = cls
            self.inert_globals.add(f"{module}.{name}")
        return cls

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.label}: malformed pickle: unexpected persistent id {short_repr(pid)}")
        _, stype, key, location, numel = pid
        if not isinstance(stype, _StorageType):
            raise CheckpointError(f"{self.label}: unsupported storage type {short_repr(stype)} (expected "
                                  f"torch.*Storage)")
        if not isinstance(key, str) or len(key) > 64 or not re.fullmatch(r"[A-Za-z0-9_]+", key):
            raise CheckpointError(f"{self.label}: malformed pickle: storage key {short_repr(key)}")
        if isinstance(numel, bool) or not isinstance(numel, int) or not 0 <= numel < MAX_DIM:
            raise CheckpointError(f"{self.label}: malformed pickle: storage size {short_repr(numel)}")
        if not isinstance(location, str) or len(location) > 64:
            raise CheckpointError(f"{self.label}: malformed pickle: storage location {short_repr(location)}")
        if self.record_sizes is not None and key in self.record_sizes:
            nbytes = numel * element_size(stype.dtype)
            if nbytes != self.record_sizes[key]:
                raise CheckpointError(
                    f"{self.label}: storage {key} is declared as {numel:,} x {stype.name} = {nbytes:,} bytes but its "
                    f"record in the zip holds {self.record_sizes[key]:,}; the file is corrupt (nothing was read)")
        self.locations.add(location)
        found = self.storages.get(key)
        if found is None:
            found = self.storages[key] = LazyStorage(key, stype.dtype, numel, location)
        elif found.dtype != stype.dtype or found.numel != numel:
            raise CheckpointError(f"{self.label}: malformed pickle: storage {key} declared twice differently")
        return found

    # ---------------------------------------------------------------------------------------------- calls

    def _call(self, func, args):
        if not isinstance(args, tuple):
            raise CheckpointError(f"{self.label}: malformed pickle: call arguments are a {type(args).__name__}")
        try:
            if isinstance(func, type) and issubclass(func, Inert):
                return func(*args)
            if isinstance(func, (type, type(_safe_bytes))) and func in _SAFE_CALLS:
                return _SAFE_CALLS[func](*args)
            if isinstance(func, type(_safe_bytes)) and func in _OUR_FUNCTIONS:
                return func(*args)
        except CheckpointError as exc:
            text = str(exc)
            raise CheckpointError(text if text.startswith(self.label) else f"{self.label}: {text}") from None
        raise self._refuse(f"calls {short_repr(func)}")

    def load_reduce(self):
        stack = self.stack
        args = stack.pop()
        stack[-1] = self._call(stack[-1], args)

    def _new_inert(self, cls, args):
        if not (isinstance(cls, type) and issubclass(cls, Inert)):
            raise self._refuse(f"creates an object of {short_repr(cls)} without calling it (NEWOBJ/INST/OBJ)")
        return cls(*args)

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new_inert(cls, tuple(args) if isinstance(args, tuple) else (args,)))

    def load_newobj_ex(self):
        self.stack.pop()                            # kwargs: placeholders record no keyword arguments
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new_inert(cls, tuple(args) if isinstance(args, tuple) else (args,)))

    def _instantiate(self, klass, args):
        self.append(self._new_inert(klass, tuple(args)))

    def load_build(self):
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        if isinstance(inst, Inert) and not isinstance(inst, type):
            inst.__setstate__(state)
            return
        if type(inst) is collections.OrderedDict and isinstance(state, dict) and all(
                isinstance(k, str) and not k.startswith("__") for k in state):
            inst.__dict__.update(state)              # nn.Module.state_dict()'s '_metadata'
            return
        raise self._refuse(f"applies state (BUILD) to {short_repr(inst)}; only placeholders and ordered dicts take "
                           f"state here")

    # ---------------------------------------------------------------------------------------------- containers

    def _target(self, kinds, what):
        target = self.stack[-1]
        if isinstance(target, Inert) and not isinstance(target, type):
            return None
        if type(target) not in kinds:
            raise self._refuse(f"{what} {short_repr(target)}")
        return target

    def load_setitem(self):
        stack = self.stack
        value = stack.pop()
        key = stack.pop()
        target = self._target((dict, collections.OrderedDict), "sets an item on")
        if target is None:
            stack[-1]._record_items([(key, value)])
            return
        _check_key(key)
        target[key] = value

    def load_setitems(self):
        items = self.pop_mark()
        target = self._target((dict, collections.OrderedDict), "sets items on")
        if target is None:
            self.stack[-1]._record_items(list(zip(items[::2], items[1::2])))
            return
        if len(items) % 2:
            raise CheckpointError(f"{self.label}: malformed pickle: SETITEMS with an odd number of values")
        for i in range(0, len(items), 2):
            _check_key(items[i])
            target[items[i]] = items[i + 1]

    def load_additems(self):
        items = self.pop_mark()
        target = self._target((set,), "adds items to")
        if target is None:
            self.stack[-1]._record_items(items)
            return
        target.update(_items_checked(items))

    def load_frozenset(self):
        self.append(frozenset(_items_checked(self.pop_mark())))

    def load_append(self):
        value = self.stack.pop()
        target = self._target((list,), "appends to")
        if target is None:
            self.stack[-1]._record_items([value])
            return
        target.append(value)

    def load_appends(self):
        items = self.pop_mark()
        target = self._target((list,), "appends to")
        if target is None:
            self.stack[-1]._record_items(items)
            return
        target.extend(items)

    def load_bytearray8(self):
        n, = struct.unpack("<Q", self.read(8))
        if n > self._reader.limit:                 # bytearray(n) would be allocated before reading
            raise self._reader._too_long(n)
        self.append(bytearray(self.read(n)))

    def load_ext(self):
        raise self._refuse("uses the copyreg extension registry (EXT opcodes)")


def _counted(handler):
    def op(self):
        self.ops += 1
        if not self.ops & 0x3FF:
            self._check_budget()
        handler(self)
    op.__name__ = getattr(handler, "__name__", "op")
    return op


def _build_dispatch() -> dict:
    overrides = {
        pickle.REDUCE[0]: RestrictedUnpickler.load_reduce, pickle.BUILD[0]: RestrictedUnpickler.load_build,
        pickle.NEWOBJ[0]: RestrictedUnpickler.load_newobj, pickle.NEWOBJ_EX[0]: RestrictedUnpickler.load_newobj_ex,
        pickle.SETITEM[0]: RestrictedUnpickler.load_setitem, pickle.SETITEMS[0]: RestrictedUnpickler.load_setitems,
        pickle.ADDITEMS[0]: RestrictedUnpickler.load_additems,
        pickle.FROZENSET[0]: RestrictedUnpickler.load_frozenset,
        pickle.APPEND[0]: RestrictedUnpickler.load_append, pickle.APPENDS[0]: RestrictedUnpickler.load_appends,
        pickle.BYTEARRAY8[0]: RestrictedUnpickler.load_bytearray8,
        pickle.EXT1[0]: RestrictedUnpickler.load_ext, pickle.EXT2[0]: RestrictedUnpickler.load_ext,
        pickle.EXT4[0]: RestrictedUnpickler.load_ext,
    }
    table = {code: _counted(overrides.get(code, handler)) for code, handler in pickle._Unpickler.dispatch.items()}
    return table


RestrictedUnpickler.dispatch = _build_dispatch()
