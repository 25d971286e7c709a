"""Open one input - a file of either container, or an in-memory state dict - as a ``Source`` of add-on tensors.

A ``Source`` knows every kept key's shape and dtype before any tensor data is read, and reads one on request;
which container a file is comes from its first bytes, never from its name.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from .key_groups import strip_prefixes
from .file_layouts import extract_addons, prefix_bare_position_net, select_addons
from .errors import CheckpointError, cut_text, short_repr
from .safe_pickle import LazyTensor
from .safetensors_io import FORMAT_NAME, SafetensorsFile
from .torch_zip import TorchZip


@dataclass
class Source:
    """One opened input: official add-on key -> ref (tensor, lazy tensor or safetensors ref), and a reader."""
    label: str
    source_format: str
    refs: dict[str, Any]
    notes: list[str]
    fetch: Callable[[Any], torch.Tensor]     # ref -> tensor (of its stored dtype)
    close: Callable[[], None] = lambda: None
    records_read: list[str] = field(default_factory=list)   # zip records read so far (streaming audit)

    def __post_init__(self):
        self.shapes = {k: tuple(v.shape) for k, v in self.refs.items()}
        self.dtypes = {k: v.dtype for k, v in self.refs.items()}


def _decodes(head: bytes) -> bool:
    """UTF-8 text (a multi-byte character cut at the end of ``head`` still counts)."""
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3


def sniff(path: str, label: str) -> str:
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


def open_torch_zip(path: str, label: str) -> Source:
    z = TorchZip(path, label)
    try:
        tree, unpickler = z.load_tree()
        refs, fmt, notes = extract_addons(tree, label)
        for k, v in refs.items():
            if not isinstance(v, LazyTensor):
                raise CheckpointError(f"{label}: '{cut_text(k, 120)}' is not a plain tensor in the file "
                                      f"({short_repr(v, 60)}); unsupported "
                                      f"tensor encoding")
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
    return Source(label, fmt, refs, notes, z.fetcher(refs.values()), z.close, z.records_read)


def open_safetensors(path: str, label: str) -> Source:
    st = SafetensorsFile(path, label)
    meta = st.metadata
    if meta.get("format") == FORMAT_NAME:
        fmt = "instancediffusion-safetensors"
        notes = [f"{label}: our add-on safetensors (format version {meta.get('format_version', '?')}, "
                 f"converted from {meta.get('source_format', '?')} '{meta.get('source', '?')}')"]
    else:
        fmt = "safetensors"
        notes = [f"{label}: safetensors state dict"]
    flat = {strip_prefixes(key): ref for key, ref in st.refs.items()}
    bare = prefix_bare_position_net(flat)
    if bare is not None:
        flat = bare
        notes.append(f"{label}: UniFusion state dict without prefix (position net)")
    return Source(label, fmt, select_addons(flat, label, notes), notes, st.tensor)


def open_mapping(sd: Mapping, label: str) -> Source:
    refs, fmt, notes = extract_addons(sd, label)
    for k, v in refs.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{label}: '{k}' is a {type(v).__name__}, expected a torch.Tensor")
    return Source(label, fmt, refs, notes, lambda t: t)


def open_path(path, label: str) -> Source:
    """A file of either container; ``sniff`` explains every other kind of file."""
    path = os.fspath(path)
    return open_torch_zip(path, label) if sniff(path, label) == "zip" else open_safetensors(path, label)
