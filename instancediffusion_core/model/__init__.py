"""The add-on model in the official key layout: position net (instance tokenizer), fusers, ScaleU."""
from .addons import IncompatibleModelError, InstanceDiffusionAddons
from .fuser import Fuser
from .position_net import DROP_CONFIGS, DropFlags, PositionNet
from .scaleu import scaleu

__all__ = ["IncompatibleModelError", "InstanceDiffusionAddons", "Fuser", "DROP_CONFIGS", "DropFlags", "PositionNet",
           "scaleu"]
