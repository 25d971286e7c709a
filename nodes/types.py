"""ComfyUI socket type names of this pack and small accessors shared by the nodes."""
from __future__ import annotations

INSTANCEDIFFUSION = "INSTANCEDIFFUSION"   # a ModelPatcher whose .model is an InstanceDiffusionAddons
INSTANCE_LAYOUT = "INSTANCE_LAYOUT"       # an instancediffusion_core.layout.Layout
CATEGORY = "instance_diffusion"


def weights_of(instdiff):
    """The ModelPatcher holding the add-on weights; a clear error for anything else plugged in."""
    model = getattr(instdiff, "model", None)
    if model is None or not hasattr(model, "fuser"):
        raise TypeError(f"expected InstanceDiffusion weights from 'Load InstanceDiffusion', got {type(instdiff).__name__}")
    return instdiff


class ModelPatchNode:
    """Shared shape of the nodes that return a patched clone of a MODEL (the input MODEL is never modified)."""
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("A patched copy of the model; the input model is left unchanged.",)
