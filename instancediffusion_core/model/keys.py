"""The official add-on key names: the one place that spells them.

The model modules build their parameters under these names, the weight readers map every file format onto them,
and the test kit writes random weights with them, so a name is never written twice.
"""
from __future__ import annotations

import re

POSITION_NET_PREFIX = "position_net."
CONVNEXT_PREFIX = "convnext_tiny_backbone."           # inside the position net
# The 17 tensors of one fuser, relative to ``<block>.transformer_blocks.<j>.fuser.``.
FUSER_SUFFIXES = (
    "alpha_attn", "alpha_dense", "linear.weight", "linear.bias",
    "attn.to_q.weight", "attn.to_k.weight", "attn.to_v.weight", "attn.to_out.0.weight", "attn.to_out.0.bias",
    "ff.net.0.proj.weight", "ff.net.0.proj.bias", "ff.net.2.weight", "ff.net.2.bias",
    "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
)
FUSER_GATES = ("alpha_attn", "alpha_dense")          # scalar tanh gates
# The 16 SD1.5 transformer blocks that carry a fuser (official state-dict prefixes, transformer block 0).
SD15_INPUT_BLOCKS = (1, 2, 4, 5, 7, 8)
SD15_OUTPUT_BLOCKS = (3, 4, 5, 6, 7, 8, 9, 10, 11)
SD15_FUSER_BLOCKS = tuple([f"input_blocks.{i}.1" for i in SD15_INPUT_BLOCKS] + ["middle_block.1"]
                          + [f"output_blocks.{i}.1" for i in SD15_OUTPUT_BLOCKS])
SD15_COUNTS = {"position_net": 217, "fusers": 272, "scaleu": 24}   # tensors of the official SD1.5 add-ons
GROUPS = ("position_net", "fusers", "scaleu")

# Tensors the position net cannot work without (the ConvNeXt layout is checked by the position net itself).
POSNET_CORE = (
    ["null_positive_feature", "null_position_feature", "null_point_feature", "null_scribble_feature",
     "null_polygon_feature", "null_seg_feature", "pos_embedding", "in_conv.weight", "in_conv.bias"]
    + [f"linears_list.{m}.{i}.{p}" for m in range(5) for i in (0, 2, 4) for p in ("weight", "bias")]
)

# ``<block>.transformer_blocks.<j>.fuser.<suffix>`` with an SD-style block path.
FUSER_KEY = re.compile(r"^(?P<block>input_blocks\.\d+\.\d+|middle_block\.\d+|output_blocks\.\d+\.\d+)"
                       r"\.transformer_blocks\.(?P<j>\d+)\.fuser\.(?P<suffix>.+)$")
# Any ``<prefix>.fuser.<suffix>`` (the add-on module accepts any prefix: tiny test UNets have other block paths).
ANY_FUSER_KEY = re.compile(r"^(?P<prefix>.+)\.fuser\.(?P<suffix>.+)$")
SCALEU_KEY = re.compile(r"^scaleu_(?P<kind>[bs])_(?P<k>\d+)$")


def fuser_key(block: str, suffix: str, transformer_index: int = 0) -> str:
    """The official key of one fuser tensor, e.g. ``input_blocks.1.1.transformer_blocks.0.fuser.alpha_attn``."""
    return f"{block}.transformer_blocks.{transformer_index}.fuser.{suffix}"


def scaleu_keys(k: int) -> tuple[str, str]:
    """``(scaleu_b_<k>, scaleu_s_<k>)``: backbone and skip scale of decoder block ``k``."""
    return f"scaleu_b_{k}", f"scaleu_s_{k}"
