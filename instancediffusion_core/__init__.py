"""InstanceDiffusion in pure PyTorch (no ComfyUI import): layouts -> grounding tokens -> fusers -> ScaleU.

Subpackages, in data-flow order:
  layout/    Layout/Instance, official JSON I/O, masks (RLE, geometry), grounding tensors, layout check, preview
  model/     the add-on model: Fourier features, ConvNeXt, position net, fuser, ScaleU, key names, add-ons module
  weights/   reading any weight file safely (restricted pickle, streaming zip, safetensors), the converter
  sampling/  the grounding schedule and the multi-instance sampler's math
  planner/   an LLM client that writes a layout
``python -m instancediffusion_core convert|preview`` is the CLI.
"""
from .layout.types import Instance, Layout, LayoutError
from .model.addons import InstanceDiffusionAddons

__all__ = ["InstanceDiffusionAddons", "Instance", "Layout", "LayoutError"]
