"""Layouts: the data type, the official JSON format, masks, and what the model sees of them (grounding)."""
from .types import MAX_INSTANCES, MODALITIES, Instance, Layout, LayoutError

__all__ = ["MAX_INSTANCES", "MODALITIES", "Instance", "Layout", "LayoutError"]
