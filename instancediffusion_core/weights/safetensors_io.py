"""Our safetensors file: the format's identity, a reader of its header, and a writer that streams tensor by tensor.

Reading goes through ``safetensors.safe_open`` (no pickle, memory-mapped); only the tensors asked for are loaded.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import struct
from typing import Any, Callable, Mapping

import torch

from .errors import CheckpointError

FORMAT_NAME = "instancediffusion-addons"      # metadata "format" of the files we write
FORMAT_VERSION = "1"

ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool}
ST_NAMES = {v: k for k, v in ST_DTYPES.items()}


class SafetensorsRef:
    """One tensor of a safetensors file as its header describes it; nothing is loaded."""
    __slots__ = ("key", "shape", "dtype")

    def __init__(self, key: str, shape: tuple, dtype: torch.dtype):
        self.key, self.shape, self.dtype = key, shape, dtype


class SafetensorsFile:
    """The header of a safetensors file (``metadata``, ``refs``: key -> ``SafetensorsRef``); tensors on demand."""

    def __init__(self, path: str, label: str):
        from safetensors import safe_open
        self.label = label
        try:
            self._handle = safe_open(path, framework="pt", device="cpu")
            self.metadata = self._handle.metadata() or {}
            self.refs: dict[str, SafetensorsRef] = {}
            for key in self._handle.keys():
                sl = self._handle.get_slice(key)
                self.refs[key] = SafetensorsRef(key, tuple(sl.get_shape()),
                                                ST_DTYPES.get(sl.get_dtype(), torch.float32))
        except Exception as exc:
            raise CheckpointError(f"{label}: cannot read this safetensors file ({exc}); it is truncated or corrupt, "
                                  f"copy or convert it again") from None

    def tensor(self, ref: SafetensorsRef) -> torch.Tensor:
        try:
            return self._handle.get_tensor(ref.key)
        except Exception as exc:
            raise CheckpointError(f"{self.label}: cannot read tensor '{ref.key}' ({exc}); the file is "
                                  f"corrupt") from None


def write_safetensors(path: str, specs: list[tuple[str, torch.dtype, tuple]],
                      produce: Callable[[str], torch.Tensor], metadata: Mapping[str, str]) -> int:
    """Write a safetensors file tensor by tensor (the header is built from ``specs`` first); returns its size.

    Writing ourselves instead of ``safetensors.torch.save_file`` keeps one tensor in memory at a time (the library
    serialises every tensor to bytes before writing). The file is written to a new temporary file next to ``path``
    (created exclusively, so it is never an existing file, e.g. an input named ``<out>.partial``) and renamed at the
    end, so an interrupted run never leaves a half-written file under the final name; on failure only that
    temporary file is removed.
    """
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for key, dtype, shape in specs:
        if dtype not in ST_NAMES:
            raise CheckpointError(f"tensor '{key}': dtype {dtype} cannot be stored in safetensors here")
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[key] = {"dtype": ST_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
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
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise CheckpointError(f"cannot write '{path}' ({exc.strerror or exc}); check that it is not a folder "
                                  f"and that the folder is writable") from None
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)                     # ours: created exclusively above
        raise
    return os.path.getsize(path)


def _create_temp(path: str) -> tuple[int, str]:
    """A new file next to ``path`` (``O_EXCL``: never an existing one), mode 0666 minus the umask like a plain
    ``open`` (``tempfile.mkstemp`` would make it 0600)."""
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(64):
        tmp = os.path.join(folder, f".{base}.{secrets.token_hex(6)}.partial")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise CheckpointError(f"cannot create a file in '{folder}' ({exc.strerror or exc}); check that the "
                                  f"folder exists and is writable") from None
    raise CheckpointError(f"cannot create a temporary file in '{folder}'")
