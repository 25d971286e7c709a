"""InstanceDiffusion in pure PyTorch (no ComfyUI import): layouts -> grounding tokens -> fusers -> ScaleU.

Submodules: layout / layout_io / grounding (inputs), position_net / fuser / scaleu / addons (the model),
checkpoint / convert (weights), schedule / drop_config (knobs), preview (pictures).
"""
from . import addons, grounding, layout, layout_io, position_net, schedule  # noqa: F401
from .addons import InstanceDiffusionAddons
from .layout import Instance, Layout, LayoutError

__all__ = ["InstanceDiffusionAddons", "Instance", "Layout", "LayoutError"]
