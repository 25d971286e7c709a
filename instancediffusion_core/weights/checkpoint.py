"""Read InstanceDiffusion add-on weights from any supported file without executing code from it; write ours.

Supported inputs (the kind is detected from the content, never from the file name):
- the official training checkpoint ``instancediffusion_sd15.pth`` (13.6 GB torch zip: ``model``, ``ema``,
  ``text_encoder``, ``autoencoder``, ``opt``, ... with pickled OmegaConf objects and ``cuda:0`` storages);
- a flat state dict (.pth/.ckpt/.bin, torch zip format) holding the add-on keys, with or without the
  ``module.`` / ``model.diffusion_model.`` / ``diffusion_model.`` prefixes;
- logtd's split files ``fusers.ckpt``, ``position_net.ckpt``, ``scaleu.ckpt`` (singly or together);
- our ``.safetensors`` (official add-on key names, any float dtype).

This module is the public API; the work is split by job: ``safe_pickle`` (unpickling that runs nothing),
``torch_zip`` (streaming only the kept storages, so peak memory is about the kept tensors, not 13.6 GB),
``addon_layouts`` (which layout a file holds), ``addon_keys`` (official names and group completeness),
``checkpoint_sources`` (opening one input), ``safetensors_io`` (our file).

Partial add-ons (decided here): *reading* accepts any non-empty subset of the three groups (position net,
fusers, ScaleU) and says what is missing in ``notes``, so split files can be inspected or merged later; a group
that is present must be complete (every fuser block has its 17 tensors, every ScaleU block its ``b`` and ``s``,
the position net its core tensors), otherwise the file is treated as damaged. *Loading* for sampling
(``load_instancediffusion``) needs the position net and the fusers by default, because fusers without the
position net have no tokens to attend to and a position net alone changes nothing; ScaleU may be absent (zero
ScaleU weights are the identity). ``allow_partial=True`` lifts that rule for advanced use (e.g. ScaleU only).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ..model.keys import FUSER_SUFFIXES, GROUPS, SD15_COUNTS, SD15_FUSER_BLOCKS
from .key_groups import addon_group, group_counts, validate_groups
from .errors import CheckpointError, cut_text, short_repr
from .sources import Source, open_mapping, open_path
from .safetensors_io import FORMAT_NAME, FORMAT_VERSION, write_safetensors

__all__ = [
    "CheckpointError", "AddonWeights", "AddonReader", "read_addon_state_dict", "save_addons", "write_addons",
    "check_buildable",
    "load_instancediffusion", "parse_dtype", "addon_group", "group_counts", "FORMAT_NAME", "FORMAT_VERSION",
    "FUSER_SUFFIXES", "SD15_FUSER_BLOCKS", "SD15_COUNTS",
]


# ==================================================================================================== results

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
        return [g for g in GROUPS if counts[g]["tensors"] == 0]

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


def _cast_dtype(stored: torch.dtype, dtype: torch.dtype | None) -> torch.dtype:
    """What a tensor stored as ``stored`` becomes: only floating tensors are cast (indices stay integers)."""
    return dtype if dtype is not None and stored.is_floating_point else stored


def _cast(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    target = _cast_dtype(t.dtype, dtype)
    return t if t.dtype == target else t.to(target)


# ==================================================================================================== reader

def _open(item, index: int) -> Source:
    if isinstance(item, Mapping):
        return open_mapping(item, f"state dict #{index}")
    if isinstance(item, AddonWeights):
        return open_mapping(item.tensors, f"add-on weights #{index}")
    if not isinstance(item, (str, os.PathLike)):
        raise CheckpointError(f"checkpoint input #{index} is a {type(item).__name__}; pass a file path, a state "
                              f"dict, or a list of them")
    return open_path(item, f"'{os.fspath(item)}'")


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
        self.sources: list[Source] = []
        try:
            for i, item in enumerate(items):
                self.sources.append(_open(item, i))
            self._owner: dict[str, Source] = {}
            for src in self.sources:
                for key in src.refs:
                    if key in self._owner:
                        dups = [k for k in src.refs if k in self._owner]
                        raise CheckpointError(
                            f"{len(dups)} add-on tensors are in both {self._owner[key].label} and {src.label} (e.g. "
                            f"{short_repr(dups[:3], 300)}); pass each group (position net, fusers, ScaleU) only once")
                    self._owner[key] = src
            self.shapes = {k: s.shapes[k] for k, s in self._owner.items()}
            self.stored_dtypes = {k: s.dtypes[k] for k, s in self._owner.items()}
            self.notes = [n for s in self.sources for n in s.notes] + validate_groups(self.shapes)
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
        return {k: _cast_dtype(d, self.dtype) for k, d in self.stored_dtypes.items()}

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


# ==================================================================================================== shapes

def check_buildable(shapes: Mapping[str, tuple], label: str = "the add-on weights") -> None:
    """Raise ``CheckpointError`` unless the add-on model can be built from tensors of these shapes.

    The model is built on the meta device (no memory, no data read), so every rule the model code has is applied
    exactly as at load time: fuser widths divisible by the 8 heads, scalar gates, consistent feed-forward and
    ConvNeXt sizes, ScaleU skip scales of one value. Across groups, every fuser must take tokens of the same width
    and the position net must produce that width. The converter runs this before writing anything, so a file it
    writes always loads."""
    from ..model.addons import InstanceDiffusionAddons  # lazy: reading files never depends on the model code
    from ..model.keys import ANY_FUSER_KEY, FUSER_GATES

    for key, shape in shapes.items():
        m = ANY_FUSER_KEY.match(key)
        if m is not None and m["suffix"] in FUSER_GATES and len(shape) != 0:
            raise CheckpointError(f"{label}: '{cut_text(key, 120)}' has shape {list(shape)[:8]}; the fuser gates "
                                  f"{' and '.join(FUSER_GATES)} are scalars (shape []). The file is damaged or was "
                                  f"written from another model")
    try:
        fake = {k: torch.empty(tuple(s), device="meta") for k, s in shapes.items()}
        addons = InstanceDiffusionAddons.from_state_dict(fake, dtype=torch.float32)
    except (ValueError, RuntimeError, TypeError, OverflowError, IndexError, KeyError) as exc:
        raise CheckpointError(f"{label}: the tensor shapes do not form an InstanceDiffusion model "
                              f"({cut_text(' '.join(str(exc).split()), 400)}); the file is damaged or holds another "
                              f"model") from None
    contexts = {p: addons.fuser(p).context_dim for p in addons.fuser_prefixes}
    widths = sorted(set(contexts.values()))
    if len(widths) > 1:
        raise CheckpointError(f"{label}: the fusers take tokens of different widths {widths} (linear.weight [C, D]: "
                              f"D); they all read the same position-net tokens, so the file is damaged or mixes "
                              f"models")
    net = addons.position_net
    if net is not None and widths and net.out_dim != widths[0]:
        raise CheckpointError(f"{label}: the position net makes {net.out_dim}-wide tokens but the fusers take "
                              f"{widths[0]}-wide ones; the two groups come from different models")


# ==================================================================================================== writer

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
    if os.path.isdir(path):
        raise CheckpointError(f"output '{path}' is a directory; give the path of a file ending in .safetensors")
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
        raise CheckpointError(f"save_addons: {len(bad)} keys are not InstanceDiffusion add-on keys, e.g. {short_repr(bad[:4], 300)}; "
                              f"filter a full checkpoint with read_addon_state_dict first")
    not_tensor = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if not_tensor:
        raise CheckpointError(f"save_addons: values of {short_repr(not_tensor[:4], 300)} are not tensors")
    validate_groups({k: tuple(v.shape) for k, v in tensors.items()})
    check_buildable({k: tuple(v.shape) for k, v in tensors.items()}, "save_addons")
    keys = sorted(tensors)
    out_dtypes = {k: _cast_dtype(tensors[k].dtype, dtype) for k in keys}
    shapes = {k: tuple(tensors[k].shape) for k in keys}
    meta = _format_metadata(shapes, out_dtypes, (metadata or {}).get("source", ""), source_format, metadata)
    write_safetensors(path, [(k, out_dtypes[k], shapes[k]) for k in keys],
                      lambda k: _cast(tensors[k], dtype), meta)
    return meta


def write_addons(reader: AddonReader, path, metadata: Mapping[str, Any] | None = None,
                 source: str = "") -> tuple[dict[str, str], int]:
    """Stream every tensor of an open ``AddonReader`` into our safetensors format; returns (metadata, size)."""
    path = _check_output(path)
    check_buildable(reader.shapes, reader.source_format)
    keys = sorted(reader.keys)
    dtypes = reader.dtypes
    meta = _format_metadata(reader.shapes, dtypes, source, reader.source_format, metadata)
    size = write_safetensors(path, [(k, dtypes[k], tuple(reader.shapes[k])) for k in keys], reader.tensor, meta)
    return meta, size


# ==================================================================================================== loader

def load_instancediffusion(path_or_state_dict, dtype: Any = None, allow_partial: bool = False):
    """Read the add-on weights and build ``InstanceDiffusionAddons`` (see the module docstring for partial files).

    The module gets ``source_format`` and ``load_notes`` attributes so a node can report what was loaded.
    """
    with AddonReader(path_or_state_dict, dtype) as reader:      # shapes are checked before any tensor is read
        have = group_counts(reader.shapes)
        missing = [g for g in ("position_net", "fusers") if have[g]["tensors"] == 0]
        if missing and not allow_partial:
            _raise_incomplete(reader.source_format, missing, have)
        check_buildable(reader.shapes, reader.source_format)
        weights = reader.read_all()
    from ..model.addons import InstanceDiffusionAddons  # lazy: reading files never depends on the model code
    try:
        addons = InstanceDiffusionAddons.from_state_dict(weights.tensors, dtype=parse_dtype(dtype))
    except CheckpointError:
        raise
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"the add-on weights ({weights.source_format}) do not form a valid model: "
                              f"{cut_text(exc, 400)}") from None
    addons.eval().requires_grad_(False)
    addons.source_format = weights.source_format
    addons.load_notes = list(weights.notes)
    return addons


def _raise_incomplete(source_format: str, missing: list[str], have: dict) -> None:
    names = {"position_net": "the position net (position_net.*, logtd: position_net.ckpt)",
             "fusers": "the fusers (*.fuser.*, logtd: fusers.ckpt)"}
    raise CheckpointError(
        f"incomplete InstanceDiffusion weights ({source_format}): missing "
        + " and ".join(names[g] for g in missing)
        + f"; found position net {have['position_net']['tensors']} tensors, fusers {have['fusers']['tensors']} "
          f"tensors, ScaleU {have['scaleu']['tensors']} tensors. Grounding needs both the position net and the "
          f"fusers: use the official instancediffusion_sd15.pth or a file converted from it, or put all three "
          f"logtd files (fusers.ckpt, position_net.ckpt, scaleu.ckpt) in the same folder (models/instance_diffusion "
          f"or models/instance_models/*) and pick any one of them; the converter's --allow-partial writes a "
          f"partial file on purpose.")
