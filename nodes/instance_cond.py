"""What the instance tokenizer attaches to a positive conditioning entry.

It travels under ``cond[1]["instance_diffusion"]``; ComfyUI keeps unknown keys through ``convert_cond`` and
``process_conds``, and every cond dict gets a ``uuid`` that the UniFusion wrapper uses to find these tokens for
its batch chunk. A negative never carries it, so it gets the null grounding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .patching import COND_KEY  # noqa: F401  (the key this data travels under)


@dataclass
class InstancePrompt:
    """One instance's own prompt for the multi-instance sampler: its phrase encoded as a full prompt."""
    caption: str
    cond: torch.Tensor            # [1, 77*k, 768] CLIP hidden states of the phrase
    pooled: torch.Tensor | None   # [1, 768] (unprojected pooled output)


@dataclass
class InstanceConditioning:
    tokens: torch.Tensor                      # [1, 184, D] grounding tokens of the whole layout (CPU, float32)
    layout: Any                               # instancediffusion_core.layout.Layout
    config: str                               # drop configuration used ("box", "mask", "point", "scribble")
    prompts: list = field(default_factory=list)   # list[InstancePrompt], one per instance
    # Computes the single-instance tokens [n, 184, D] on first use (only the multi-instance sampler needs them).
    _single_tokens_fn: Callable[[], torch.Tensor] | None = None
    _single_tokens: torch.Tensor | None = None

    def single_instance_tokens(self) -> torch.Tensor:
        """Tokens with only instance i in slot 0, for i in 0..n-1 (one batched position-net run, then cached)."""
        if self._single_tokens is None:
            if self._single_tokens_fn is None:
                raise RuntimeError("this InstanceConditioning was built without single-instance tokens")
            self._single_tokens = self._single_tokens_fn()
        return self._single_tokens

    def for_instance(self, i: int) -> "InstanceConditioning":
        """The conditioning data of instance i alone (slot 0), as the multi-instance sampler's phase 1 uses it."""
        tokens = self.single_instance_tokens()[i:i + 1]
        sub_layout = self.layout.only(i, caption=self.prompts[i].caption if self.prompts else "")
        return InstanceConditioning(tokens=tokens, layout=sub_layout, config=self.config,
                                    prompts=[self.prompts[i]] if self.prompts else [])
