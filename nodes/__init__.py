"""ComfyUI node registration (V1 API: works on every ComfyUI release; the V3 API is still marked unstable).

Every module in this package that defines ``NODES = {"Key": (NodeClass, "Display name")}`` is registered, so
adding a node touches only its own file.
"""
import importlib
import pkgutil

from .loader import register_model_folders
from .search_aliases import SEARCH_ALIASES

register_model_folders()

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    _module = importlib.import_module(f".{_info.name}", __name__)
    for _key, (_cls, _name) in getattr(_module, "NODES", {}).items():
        if _key in NODE_CLASS_MAPPINGS:
            raise RuntimeError(f"node key {_key} registered twice ({_module.__name__})")
        NODE_CLASS_MAPPINGS[_key] = _cls
        NODE_DISPLAY_NAME_MAPPINGS[_key] = _name
        if _key in SEARCH_ALIASES:
            _cls.SEARCH_ALIASES = list(SEARCH_ALIASES[_key])
