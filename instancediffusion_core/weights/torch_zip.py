"""Read the zip container ``torch.save`` writes: its pickle, then only the storage records asked for.

Why streaming: the pickle is parsed into lazy storage references first, the caller picks the tensors it keeps,
and only those storages' records are read (torch stores them uncompressed, so a read is a seek plus
``readinto``). Everything else in the file - optimizer state, text encoder, VAE - is never read.

Every size the zip declares is checked against the real file before anything is allocated: a record must lie
inside the file, a stored record's size is its compressed size, a deflated record cannot expand more than deflate
can (1032:1), and decompression is bounded by the declared size (read in chunks into the buffer, never more).
A name twice in the zip is refused (``zipfile`` would silently use the last).
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

from .errors import CheckpointError, cut_text
from .safe_pickle import MAX_PICKLE_BYTES, LazyStorage, LazyTensor, RestrictedUnpickler, element_size

_DEFLATE_MAX_RATIO = 1032               # the most deflate can expand (258-byte matches in 2 bits)
_READ_CHUNK = 1 << 20


class TorchZip:
    """The zip container torch.save writes: ``<folder>/data.pkl`` plus one uncompressed record per storage."""

    def __init__(self, path: str, label: str):
        self.path, self.label = path, label
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, ValueError, OverflowError, struct.error, EOFError, NotImplementedError) as exc:
            size = os.path.getsize(path)
            raise CheckpointError(
                f"{label}: the file starts like a torch checkpoint (zip) but its zip directory is missing or "
                f"damaged ({cut_text(exc, 200)}); it is most likely truncated - an incomplete download ({size:,} bytes here; the "
                f"official instancediffusion_sd15.pth is about 13.6 GB). Download it again.") from None
        names = self.zf.namelist()
        dups = sorted(n for n, c in collections.Counter(names).items() if c > 1)
        if dups:
            self.zf.close()
            raise CheckpointError(f"{label}: refused - the zip holds {len(dups)} names twice (e.g. {dups[0][:80]!r}); "
                                  f"a torch checkpoint never does, and which copy counts would be a guess. The file "
                                  f"is corrupt or was tampered with")
        pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            self.zf.close()
            raise CheckpointError(f"{label}: a zip archive but not a PyTorch checkpoint (expected one "
                                  f"'<folder>/data.pkl', found {len(pkls)}; first entries "
                                  f"{[n[:80] for n in names[:6]]})")
        self.prefix = pkls[0][: -len("data.pkl")]       # the inner folder name is arbitrary
        self.fh = open(path, "rb")
        self.real_size = os.fstat(self.fh.fileno()).st_size
        self.byteorder = "little"
        try:
            info = self.zf.getinfo(self.prefix + "byteorder")
            self._check_record(info)
            with self.zf.open(info) as f:
                self.byteorder = f.read(16).decode("ascii", "replace").strip() or "little"
        except KeyError:
            pass
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            self.close()
            raise CheckpointError(f"{label}: the byteorder record is damaged ({cut_text(exc)}); the file is corrupt, "
                                  f"download it again") from None
        except BaseException:
            self.close()
            raise
        data_dir = self.prefix + "data/"
        self.record_sizes = {i.filename[len(data_dir):]: i.file_size for i in self.zf.infolist()
                             if i.filename.startswith(data_dir)}
        self.records_read: list[str] = []

    def close(self):
        self.zf.close()
        fh = getattr(self, "fh", None)
        if fh is not None:
            fh.close()

    def _check_record(self, info: zipfile.ZipInfo) -> None:
        """Refuse a record whose declared sizes do not fit the real file (before anything is allocated)."""
        name = info.filename[:120]
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(f"{self.label}: zip record '{name}' uses compression method {info.compress_type}; "
                                  f"torch checkpoints store records uncompressed (deflate is accepted too)")
        if info.header_offset + 30 + len(info.filename.encode()) + info.compress_size > self.real_size:
            raise CheckpointError(
                f"{self.label}: zip record '{name}' claims {info.compress_size:,} bytes at offset "
                f"{info.header_offset:,}, past the end of the {self.real_size:,}-byte file; the file is truncated or "
                f"corrupt (nothing was allocated). Download it again")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise CheckpointError(f"{self.label}: zip record '{name}' is stored uncompressed but declares "
                                  f"{info.file_size:,} bytes in {info.compress_size:,}; the file is corrupt")
        if (info.compress_type == zipfile.ZIP_DEFLATED
                and info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 1024):
            raise CheckpointError(
                f"{self.label}: zip record '{name}' declares {info.file_size:,} bytes from {info.compress_size:,} "
                f"compressed, more than deflate can expand ({_DEFLATE_MAX_RATIO}:1); the file is corrupt or hostile")

    def load_tree(self):
        info = self.zf.getinfo(self.prefix + "data.pkl")
        self._check_record(info)
        if info.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(
                f"{self.label}: refused - the pickle record (data.pkl) declares {info.file_size:,} bytes; the limit "
                f"is {MAX_PICKLE_BYTES:,} (MAX_PICKLE_BYTES; the official 13.6 GB checkpoint's is about 1 MB). The "
                f"file is not an InstanceDiffusion checkpoint, or it is corrupt or hostile (nothing was unpickled)")
        unpickler = None
        try:
            with self.zf.open(info) as f:
                unpickler = RestrictedUnpickler(f, self.label, size=info.file_size, record_sizes=self.record_sizes)
                tree = unpickler.load()
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, zlib.error) as exc:
            raise CheckpointError(f"{self.label}: the pickle record is damaged ({cut_text(exc)}); the file is "
                                  f"corrupt, download it again") from None
        except MemoryError:
            raise CheckpointError(f"{self.label}: the pickle needs more memory than is available; the file is "
                                  f"corrupt or hostile") from None
        except Exception as exc:  # malformed pickle: UnpicklingError, EOFError, TypeError from bad REDUCE args...
            raise CheckpointError(f"{self.label}: cannot parse the pickle inside the checkpoint "
                                  f"({type(exc).__name__}: {cut_text(exc, 200)}); the file is corrupt or not a torch "
                                  f"checkpoint") from None
        return tree, unpickler

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        self.fh.seek(info.header_offset)
        header = self.fh.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{self.label}: zip record {info.filename[:120]} has a damaged header; the file "
                                  f"is corrupt")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        offset = info.header_offset + 30 + name_len + extra_len
        if offset + info.compress_size > self.real_size:
            raise CheckpointError(f"{self.label}: zip record '{info.filename[:120]}' ends past the end of the file "
                                  f"({offset + info.compress_size:,} > {self.real_size:,} bytes); the file is "
                                  f"truncated, download it again (nothing was allocated)")
        return offset

    def read_storage(self, storage: LazyStorage) -> torch.Tensor:
        """The storage as a flat tensor of its dtype, read straight into memory the tensor then owns."""
        name = f"{self.prefix}data/{storage.key}"
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self.label}: storage record '{name}' is missing from the zip; the file is "
                                  f"corrupt") from None
        itemsize = element_size(storage.dtype)
        nbytes = storage.numel * itemsize
        if info.file_size != nbytes:
            raise CheckpointError(f"{self.label}: storage record '{name}' holds {info.file_size:,} bytes, the pickle "
                                  f"expects {nbytes:,}; the file is corrupt")
        self._check_record(info)
        offset = self._data_offset(info)
        buf = bytearray(nbytes)
        if info.compress_type == zipfile.ZIP_STORED:
            self.fh.seek(offset)
            got = self.fh.readinto(buf) if nbytes else 0
            if got != nbytes:
                raise CheckpointError(f"{self.label}: storage record '{name}' is cut short ({got:,} of {nbytes:,} "
                                      f"bytes); the file is truncated, download it again")
            if zlib.crc32(buf) != info.CRC:
                raise CheckpointError(f"{self.label}: storage record '{name}' fails its CRC check; the file is "
                                      f"corrupt, download it again")
        else:  # torch never compresses storages, but a re-zipped file might: inflate at most the declared size
            view, got = memoryview(buf), 0
            try:
                with self.zf.open(info) as f:
                    while got < nbytes:
                        data = f.read(min(_READ_CHUNK, nbytes - got))
                        if not data:
                            break
                        view[got:got + len(data)] = data
                        got += len(data)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise CheckpointError(f"{self.label}: storage record '{name}' is damaged ({cut_text(exc)})") from None
            finally:
                view.release()
            if got != nbytes:
                raise CheckpointError(f"{self.label}: storage record '{name}' inflates to {got:,} of its {nbytes:,} "
                                      f"bytes; the file is corrupt, download it again")
        self.records_read.append(name)
        flat = torch.frombuffer(buf, dtype=storage.dtype) if nbytes else torch.empty(0, dtype=storage.dtype)
        if self.byteorder != sys.byteorder and itemsize > 1:
            flat = flat.view(torch.uint8).view(-1, itemsize).flip(-1).contiguous().view(storage.dtype).view(-1)
        return flat

    def materialize(self, ref: LazyTensor, flat: torch.Tensor) -> torch.Tensor:
        shape, stride, offset = ref.shape, ref.stride, ref.offset
        if math.prod(shape) > 0:
            last = offset + sum((s - 1) * st for s, st in zip(shape, stride))
            if last >= flat.numel() or math.prod(shape) > flat.numel():
                raise CheckpointError(f"{self.label}: a tensor view {list(shape)} (offset {offset}, stride "
                                      f"{list(stride)}) does not fit its storage of {flat.numel()} elements; the "
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
