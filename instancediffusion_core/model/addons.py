"""All InstanceDiffusion add-on weights as one ``nn.Module`` whose ``state_dict()`` keys are the official names.

Fusers sit in nested ``ModuleDict``s that mirror their UNet path (``input_blocks`` -> ``1`` -> ``1`` ->
``transformer_blocks`` -> ``0`` -> ``fuser``), the ScaleU tensors are top-level parameters ``scaleu_b_<k>`` /
``scaleu_s_<k>`` and the tokenizer is ``position_net``. So ``state_dict()``, ``load_state_dict()``, ``.to()`` and
safetensors round trips need no key mapping, and a partial file (only some fusers, no position net, ...) works.

The layer classes come from an ``ops`` namespace (``ops.py``; default plain ``torch.nn``): a host builds the add-ons
from its own cast-aware layers, or swaps them in later with ``use_ops``, and sets the dtype they compute in with
``set_compute_dtype`` (storage may stay e.g. fp8).
"""
from __future__ import annotations

from collections import Counter
from typing import Mapping

import torch
from torch import nn

from .fuser import Fuser
from .keys import ANY_FUSER_KEY, POSITION_NET_PREFIX, SCALEU_KEY
from .ops import swap_ops
from .position_net import PositionNet
from .scaleu import scaleu

_GROUP_ORDER = {"input_blocks": 0, "middle_block": 1, "output_blocks": 2}
_KNOWN_CONTEXTS = {768: "SD1.x", 1024: "SD2.x", 1280: "SDXL refiner", 2048: "SDXL"}


class IncompatibleModelError(ValueError):
    """The UNet's blocks do not match the add-on weights (wrong base model family or width)."""


def fuser_sort_key(prefix: str) -> tuple:
    """UNet execution order: input blocks ascending, middle, output blocks ascending (numbers compared as ints)."""
    parts = prefix.split(".")
    rank = _GROUP_ORDER.get(parts[0], len(_GROUP_ORDER))
    return (rank, parts[0]) + tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts[1:])


def _common_float_dtype(sd: Mapping[str, torch.Tensor]) -> torch.dtype:
    counts = Counter(t.dtype for t in sd.values() if t.is_floating_point())
    return counts.most_common(1)[0][0] if counts else torch.float32


def _assignable(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in ``dtype``, usable as a parameter here: tensors made under ``torch.inference_mode`` (ComfyUI runs
    nodes in it) can only become parameters inside inference mode, so outside it they are cloned once."""
    t = t.to(dtype)
    if t.is_inference() and not torch.is_inference_mode_enabled():
        t = t.clone()
    return t


class InstanceDiffusionAddons(nn.Module):
    """Optional ``position_net``, any fusers (by official prefix) and any ScaleU blocks."""

    def __init__(self, position_net: PositionNet | None = None, fusers: Mapping[str, Fuser] | None = None,
                 scaleu_widths: Mapping[int, int] | None = None):
        super().__init__()
        self.add_module("position_net", position_net)
        self._fuser_prefixes: list[str] = []
        for prefix in sorted(fusers or {}, key=fuser_sort_key):
            self._install_fuser(prefix, fusers[prefix])
        self._scaleu_blocks: list[int] = []
        for k, width in sorted((scaleu_widths or {}).items()):
            k = int(k)
            self.register_parameter(f"scaleu_b_{k}", nn.Parameter(torch.zeros(int(width))))
            self.register_parameter(f"scaleu_s_{k}", nn.Parameter(torch.zeros(1)))
            self._scaleu_blocks.append(k)

    def _install_fuser(self, prefix: str, fuser: Fuser) -> None:
        parts = prefix.split(".")
        if not prefix or any(not p for p in parts) or parts[0] == "position_net" or parts[0].startswith("scaleu_"):
            raise ValueError(f"fuser prefix {prefix!r} is not a UNet block path like "
                             f"'input_blocks.1.1.transformer_blocks.0'")
        node: nn.Module = self
        for name in parts[:-1]:
            child = node._modules.get(name)
            if child is None:
                child = nn.ModuleDict()
                node.add_module(name, child)
            node = child
        holder = node._modules.get(parts[-1])
        if holder is None:
            holder = nn.ModuleDict()
            node.add_module(parts[-1], holder)
        if "fuser" in holder._modules:
            raise ValueError(f"two fusers for block {prefix!r}")
        holder.add_module("fuser", fuser)
        self._fuser_prefixes.append(prefix)

    # ------------------------------------------------------------------------------------------------ loading

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], n_heads: int = 8,
                        dtype: torch.dtype | None = None, ops=None) -> "InstanceDiffusionAddons":
        """Build from official add-on keys (``position_net.*``, ``<block>.fuser.*``, ``scaleu_[bs]_<k>``), every size
        inferred from the shapes, and load strictly. Tensors already of ``dtype`` (default: the dict's most common
        floating dtype) are used without a copy. ``ops``: the layer classes (see ``ops.py``)."""
        dtype = dtype or _common_float_dtype(sd)
        posnet_sd: dict[str, torch.Tensor] = {}
        fuser_sds: dict[str, dict[str, torch.Tensor]] = {}
        scaleu_sd: dict[int, dict[str, torch.Tensor]] = {}
        unknown = []
        for key, value in sd.items():
            value = _assignable(value, dtype)
            if key.startswith(POSITION_NET_PREFIX):
                posnet_sd[key[len(POSITION_NET_PREFIX):]] = value
            elif (m := ANY_FUSER_KEY.match(key)) is not None:
                fuser_sds.setdefault(m["prefix"], {})[m["suffix"]] = value
            elif (m := SCALEU_KEY.match(key)) is not None:
                scaleu_sd.setdefault(int(m["k"]), {})[m["kind"]] = value
            else:
                unknown.append(key)
        if unknown:
            raise ValueError(f"{len(unknown)} keys are not InstanceDiffusion add-on weights, e.g. {unknown[:5]}; "
                             f"pass only position_net.*, <block>.transformer_blocks.<j>.fuser.* and scaleu_[bs]_<k> "
                             f"(instancediffusion_core.weights.read_addon_state_dict filters a full checkpoint)")
        for k, pair in scaleu_sd.items():
            if set(pair) != {"b", "s"}:
                missing = "scaleu_s" if "s" not in pair else "scaleu_b"
                raise ValueError(f"ScaleU block {k}: '{missing}_{k}' is missing; each block needs scaleu_b_{k} and "
                                 f"scaleu_s_{k}")
            if pair["b"].ndim != 1 or pair["s"].numel() != 1:
                raise ValueError(f"ScaleU block {k}: scaleu_b_{k} must be [C] and scaleu_s_{k} hold one value, got "
                                 f"{list(pair['b'].shape)} and {list(pair['s'].shape)}")

        posnet = PositionNet.from_state_dict(posnet_sd, dtype=dtype, ops=ops) if posnet_sd else None
        fusers = {p: Fuser.from_state_dict(f_sd, n_heads=n_heads, dtype=dtype, ops=ops)
                  for p, f_sd in fuser_sds.items()}
        with torch.device("meta"):
            addons = cls(None, None, {k: pair["b"].numel() for k, pair in scaleu_sd.items()})
        addons.load_state_dict({f"scaleu_{kind}_{k}": t.reshape(addons.get_parameter(f"scaleu_{kind}_{k}").shape)
                                .to(dtype) for k, pair in scaleu_sd.items() for kind, t in pair.items()},
                               strict=True, assign=True)
        addons.add_module("position_net", posnet)
        for prefix in sorted(fusers, key=fuser_sort_key):
            addons._install_fuser(prefix, fusers[prefix])
        return addons

    # ------------------------------------------------------------------------------------------------ placement

    def use_ops(self, ops) -> "InstanceDiffusionAddons":
        """Swap every Linear / LayerNorm / Conv2d for ``ops``' classes in place, keeping the parameter objects (a
        host's cast-aware layers on weights that were built with plain ``torch.nn``). Returns self."""
        swap_ops(self, ops)
        return self

    def set_compute_dtype(self, dtype: torch.dtype | None) -> "InstanceDiffusionAddons":
        """The dtype the position net and the fusers compute in (None: their weights' dtype, float32 for fp8
        weights). Differing from the storage dtype needs cast-aware ``ops``. Returns self."""
        for m in self.modules():
            if isinstance(m, (Fuser, PositionNet)):
                m.compute_dtype = dtype
        return self

    @property
    def compute_dtype(self) -> torch.dtype | None:
        for m in self.modules():
            if isinstance(m, (Fuser, PositionNet)):
                return m.compute_dtype
        return None

    # ------------------------------------------------------------------------------------------------ lookup

    @property
    def fuser_prefixes(self) -> list[str]:
        """Official block prefixes holding a fuser, in UNet execution order."""
        return list(self._fuser_prefixes)

    def fuser(self, prefix: str) -> Fuser | None:
        """The fuser of ``prefix`` (e.g. ``"input_blocks.1.1.transformer_blocks.0"``), or None."""
        if prefix not in self._fuser_prefixes:
            return None
        return self.get_submodule(f"{prefix}.fuser")

    def fuser_widths(self) -> dict[str, int]:
        return {p: self.fuser(p).query_dim for p in self._fuser_prefixes}

    def scaleu_widths(self) -> dict[int, int]:
        return {k: getattr(self, f"scaleu_b_{k}").numel() for k in self._scaleu_blocks}

    @property
    def token_dim(self) -> int | None:
        """Width of the grounding tokens the fusers take (the UNet context width, 768 for SD1.5)."""
        if self._fuser_prefixes:
            return self.fuser(self._fuser_prefixes[0]).context_dim
        return self.position_net.out_dim if self.position_net is not None else None

    @property
    def text_dim(self) -> int | None:
        """Width of the per-instance text feature the position net takes (CLIP-L pooled: 768)."""
        return self.position_net.text_dim if self.position_net is not None else None

    def fusers(self) -> list[Fuser]:
        """The fusers in UNet execution order."""
        return [self.fuser(p) for p in self._fuser_prefixes]

    def apply_scaleu(self, k: int, h: torch.Tensor, hs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ScaleU of output block ``k``; ``(h, hs)`` unchanged when these weights have none for ``k``."""
        if k not in self._scaleu_blocks:
            return h, hs
        return scaleu(h, hs, getattr(self, f"scaleu_b_{k}"), getattr(self, f"scaleu_s_{k}"))

    # ------------------------------------------------------------------------------------------------ checks

    def check_compatible(self, fuser_widths: Mapping[str, int], scaleu_widths: Mapping[int, int],
                         context_dim: int | None) -> None:
        """Raise ``IncompatibleModelError`` when a UNet does not match these weights.

        ``fuser_widths``: the UNet's transformer blocks {official prefix: width}; ``scaleu_widths``: {output block
        k: channels of h entering it}; ``context_dim``: its cross-attention context width. An empty mapping or
        None skips that check (a node that only applies ScaleU need not describe the transformer blocks).
        """
        problems = []
        if context_dim is not None and self.token_dim is not None and int(context_dim) != self.token_dim:
            problems.append(f"context dim: weights {self.token_dim}, model {int(context_dim)}")
        if fuser_widths:
            for prefix, width in self.fuser_widths().items():
                got = fuser_widths.get(prefix)
                if got is None:
                    problems.append(f"fuser {prefix} (width {width}): the model has no such transformer block")
                elif int(got) != width:
                    problems.append(f"fuser {prefix}: weights width {width}, model block width {int(got)}")
        if scaleu_widths:
            for k, width in self.scaleu_widths().items():
                got = scaleu_widths.get(k)
                if got is None:
                    problems.append(f"ScaleU output block {k} (width {width}): the model has no such output block")
                elif int(got) != width:
                    problems.append(f"ScaleU output block {k}: weights width {width}, model width {int(got)}")
        if not problems:
            return
        ours = sorted(set(self.fuser_widths().values()) | set(self.scaleu_widths().values()))
        model_widths = sorted(set(int(w) for w in (fuser_widths or {}).values()))
        looks = _KNOWN_CONTEXTS.get(int(context_dim), "a different architecture") if context_dim else None
        head = (f"These are SD1.5 InstanceDiffusion weights (blocks at widths {ours}, context {self.token_dim}); "
                f"the model does not match")
        if looks is not None and int(context_dim) != self.token_dim:
            head += f": it looks like {looks} (context dim {int(context_dim)})"
        if model_widths:
            head += f", transformer blocks at widths {model_widths}"
        shown = problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
        raise IncompatibleModelError(head + ". Use an SD1.5-family checkpoint. Differences:\n  - "
                                     + "\n  - ".join(shown))

    def summary(self) -> dict:
        """Tensor and parameter counts per group plus dtype(s), for the loader and converter to print."""
        groups = {"position_net": [0, 0], "fusers": [0, 0], "scaleu": [0, 0]}
        dtypes = Counter()
        for name, t in self.state_dict().items():
            group = ("position_net" if name.startswith(POSITION_NET_PREFIX)
                     else "scaleu" if SCALEU_KEY.match(name) else "fusers")
            groups[group][0] += 1
            groups[group][1] += t.numel()
            dtypes[str(t.dtype).replace("torch.", "")] += 1
        out = {g: {"tensors": n, "params": p} for g, (n, p) in groups.items()}
        out["fusers"]["count"] = len(self._fuser_prefixes)
        out["scaleu"]["blocks"] = len(self._scaleu_blocks)
        out["total_params"] = sum(p for _, p in groups.values())
        out["dtype"] = dtypes.most_common(1)[0][0] if len(dtypes) == 1 else dict(dtypes)
        return out
