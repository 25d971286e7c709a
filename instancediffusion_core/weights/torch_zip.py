"""Read the zip container ``torch.save`` writes: its pickle, then only the storage records asked for.

Why streaming: the pickle is parsed into lazy storage references first, the caller picks the tensors it keeps,
and only those storages' records are read (torch stores them uncompressed, so a read is a seek plus
``readinto``). Everything else in the file - optimizer state, text encoder, VAE - is never read.
"""
from __future__ import annotations

import collections
import math
import os
import struct
import sys
import zipfile
import zlib
from typing import Callable, Iterable

import torch

from .errors import CheckpointError
from .safe_pickle import LazyStorage, LazyTensor, RestrictedUnpickler


class TorchZip:
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
                unpickler = RestrictedUnpickler(f, self.label)
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

    def read_storage(self, storage: LazyStorage) -> torch.Tensor:
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

    def materialize(self, ref: LazyTensor, flat: torch.Tensor) -> torch.Tensor:
        shape, stride, offset = ref.shape, ref.stride, ref.offset
        if math.prod(shape) > 0:
            last = offset + sum((s - 1) * st for s, st in zip(shape, stride))
            if last >= flat.numel():
                raise CheckpointError(f"{self.label}: a tensor view {list(shape)} (offset {offset}, stride "
                                      f"{list(stride)}) reaches past its storage of {flat.numel()} elements; the "
                                      f"file is corrupt")
        t = torch.as_strided(flat, shape, stride, offset)
        if t.numel() != flat.numel() or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)  # do not keep the rest of a shared storage alive
        return t

    def fetcher(self, refs: Iterable[LazyTensor]) -> Callable[[LazyTensor], torch.Tensor]:
        """Tensor reader for the kept ``refs``: a storage shared by several of them is read once and cached
        only until its last kept tensor is made, so memory stays near one storage at a time."""
        uses = collections.Counter(ref.storage.key for ref in refs)
        cache: dict[str, torch.Tensor] = {}

        def fetch(ref: LazyTensor) -> torch.Tensor:
            key = ref.storage.key
            flat = cache.get(key)
            if flat is None:
                flat = self.read_storage(ref.storage)
                if uses[key] > 1:
                    cache[key] = flat
            t = self.materialize(ref, flat)
            uses[key] -= 1
            if uses[key] <= 0:
                cache.pop(key, None)
            return t

        return fetch
