"""Weight files: read any supported format without running code from it, build the add-ons, write ours."""
from .checkpoint import AddonReader, AddonWeights, load_instancediffusion, read_addon_state_dict, save_addons
from .errors import CheckpointError

__all__ = ["AddonReader", "AddonWeights", "CheckpointError", "load_instancediffusion", "read_addon_state_dict",
           "save_addons"]
