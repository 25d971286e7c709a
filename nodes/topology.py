"""Read the structure of the loaded ComfyUI UNet: where its transformer blocks are and how wide they are.

The fusers are looked up by the UNet's real topology (``("input", 4)`` + block_index 0 ->
``input_blocks.4.1.transformer_blocks.0``), not by counting calls, so tiny test UNets, fine-tunes and SD1.5
variants all map correctly and a foreign UNet (SDXL, SD2) is refused before sampling starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class NotAUNetError(ValueError):
    pass


@dataclass
class UNetTopology:
    # (kind, block id, block_index) as ComfyUI reports them in transformer_options -> official fuser key prefix
    prefix_by_block: dict = field(default_factory=dict)
    fuser_widths: dict = field(default_factory=dict)    # official prefix -> transformer width
    scaleu_widths: dict = field(default_factory=dict)   # output block k -> channels of h entering it
    context_dim: int | None = None


def _out_channels(block) -> int | None:
    for layer in reversed(list(block)):
        ch = getattr(layer, "out_channels", None)
        if isinstance(ch, int):
            return ch
    return None


def _transformer_layers(block):
    """(position in block, transformer module) for every SpatialTransformer-like layer of one UNet block."""
    for j, layer in enumerate(block):
        tbs = getattr(layer, "transformer_blocks", None)
        if tbs is not None:
            yield j, tbs


def unet_topology(model) -> UNetTopology:
    """Topology of a ComfyUI MODEL (ModelPatcher) or BaseModel or the diffusion model itself."""
    dm = model
    for attr in ("model", "diffusion_model"):
        if hasattr(dm, attr) and not hasattr(dm, "input_blocks"):
            dm = getattr(dm, attr)
    if not all(hasattr(dm, a) for a in ("input_blocks", "middle_block", "output_blocks")):
        raise NotAUNetError(
            f"InstanceDiffusion needs an SD1.5-style UNet; this model's diffusion model is "
            f"{type(dm).__name__}, which has no input/middle/output blocks. Load an SD1.5 checkpoint."
        )
    topo = UNetTopology()
    groups = [("input", "input_blocks", list(dm.input_blocks)),
              ("middle", "middle_block", [dm.middle_block]),
              ("output", "output_blocks", list(dm.output_blocks))]
    for kind, key, blocks in groups:
        for bid, block in enumerate(blocks):
            for j, tbs in _transformer_layers(block):
                for t, tb in enumerate(tbs):
                    base = f"{key}.{j}" if kind == "middle" else f"{key}.{bid}.{j}"
                    prefix = f"{base}.transformer_blocks.{t}"
                    topo.prefix_by_block[(kind, bid, t)] = prefix
                    topo.fuser_widths[prefix] = int(tb.norm1.normalized_shape[0])
                    attn2 = getattr(tb, "attn2", None)
                    if attn2 is not None and topo.context_dim is None:
                        topo.context_dim = int(attn2.to_k.in_features)
    prev = _out_channels(dm.middle_block)
    for k, block in enumerate(dm.output_blocks):
        if prev is not None:
            topo.scaleu_widths[k] = prev
        prev = _out_channels(block)
    return topo
