"""Real ComfyUI, headless, inside the test process: find the host, import it safely, load our pack the way
ComfyUI loads custom nodes, execute API-format prompts and report node definitions like `/object_info`.

Why in-process instead of `main.py`: `main.py --quick-test-for-ci` exits 0 even when a custom node fails to
import, and a server costs seconds per start. The executor used here is ComfyUI's own `execution.PromptExecutor`.
Import traps handled (host notes, section 4): CPU before `comfy.model_management`; `utils.*` before `nodes`
(nodes.py puts comfy/ on sys.path, after which `import utils.x` finds comfy/utils.py); host root first on
sys.path and the repo root never on it (our `nodes/` package would shadow ComfyUI's `nodes`).
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import logging
import os
import sys
import types
import uuid

REPO_ROOT = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
PACK_DIR_NAME = "comfyui-instdiff"
ENV_VAR = "COMFYUI_PATH"
NO_HOST_REASON = (f"no ComfyUI host: set {ENV_VAR}=/path/to/ComfyUI (a ComfyUI checkout with comfy/ and nodes.py) "
                  f"or put this repo in <ComfyUI>/custom_nodes/{PACK_DIR_NAME}")
# Optional ComfyUI dependencies that core modules import at module level although only a few models use them
# (comfy/sd.py -> comfy/ldm/cascade/stage_c_coder.py imports torchvision for Stable Cascade only; since 0.3x
# comfy/sd.py -> comfy/ldm/lightricks/vae/audio_vae.py imports torchaudio for the audio VAE). The test venv holds
# only the CPU torch: PyPI's torchvision/torchaudio wheels are built against another torch and fail to import
# beside it ("operator torchvision::nms does not exist"), so a broken install is stubbed like a missing one.
STUBBED_WHEN_MISSING = ("torchvision", "torchaudio")


# --------------------------------------------------------------------------------------------- host discovery

def is_comfyui_root(path: str | None) -> bool:
    return bool(path) and os.path.isdir(os.path.join(path, "comfy")) and os.path.isfile(os.path.join(path, "nodes.py"))


def find_comfyui_root(environ=None, repo_root: str = REPO_ROOT) -> tuple[str | None, str]:
    """(host root, "") or (None, reason). `COMFYUI_PATH` wins; else the repo may sit in <ComfyUI>/custom_nodes/."""
    environ = os.environ if environ is None else environ
    configured = environ.get(ENV_VAR, "").strip()
    if configured:
        root = os.path.realpath(os.path.expanduser(configured))
        if is_comfyui_root(root):
            return root, ""
        return None, (f"{ENV_VAR}={configured!r} is not a ComfyUI checkout (needs comfy/ and nodes.py); "
                      f"point it at the ComfyUI root folder")
    parent = os.path.dirname(os.path.abspath(repo_root))
    if os.path.basename(parent) == "custom_nodes" and is_comfyui_root(os.path.dirname(parent)):
        return os.path.realpath(os.path.dirname(parent)), ""
    return None, NO_HOST_REASON


# --------------------------------------------------------------------------------------------- host import

class _Unavailable:
    """Stands in for any attribute of a stubbed package; calling it says which package is missing."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable(f"{self._name}.{attr}")

    def __call__(self, *args, **kwargs):
        raise ImportError(f"{self._name} is unavailable: the test venv has no usable {self._name.split('.')[0]} "
                          f"(stubbed by instdiff_testkit/comfy_harness.py so ComfyUI core imports)")


class _StubModule(types.ModuleType):
    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable(f"{self.__name__}.{attr}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots):
        self.roots = set(roots)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []
        module.__stub__ = True


def _unusable(name: str) -> bool:
    """True when `name` is not installed, or installed but fails to import (its partial modules are dropped)."""
    module = sys.modules.get(name)
    if module is not None:
        return bool(getattr(module, "__stub__", False))
    if importlib.util.find_spec(name) is None:
        return True
    try:
        importlib.import_module(name)
        return False
    except Exception:             # e.g. a CUDA/other-torch wheel: RuntimeError "operator ... does not exist"
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        return True


def install_missing_module_stubs(names=STUBBED_WHEN_MISSING) -> list[str]:
    """Stub the optional packages that are missing or fail to import (and only those); returns their names."""
    missing = [n for n in names if _unusable(n)]
    if missing:
        finder = next((f for f in sys.meta_path if isinstance(f, _StubFinder)), None)
        if finder is None:
            finder = _StubFinder(missing)
        else:
            finder.roots.update(missing)
            sys.meta_path.remove(finder)
        sys.meta_path.insert(0, finder)    # first: a broken install must not be found again
    return missing


def _same_path(a: str, b: str) -> bool:
    try:
        return os.path.realpath(a or os.getcwd()) == os.path.realpath(b)
    except OSError:
        return False


def _module_file(name: str):
    module = sys.modules.get(name)
    return getattr(module, "__file__", None) if module is not None else None


_SCRATCH_BASES: list = []


def _scratch_base_directory() -> str:
    """One temporary ComfyUI base folder per process, removed at exit."""
    if not _SCRATCH_BASES:
        import atexit
        import shutil
        import tempfile
        base = tempfile.mkdtemp(prefix="instdiff-host-base-")
        _SCRATCH_BASES.append(base)
        atexit.register(shutil.rmtree, base, True)
    return _SCRATCH_BASES[0]


def import_host(root: str) -> dict:
    """Import ComfyUI from `root` on CPU (idempotent). Returns {"root", "version", "stubbed"}."""
    root = os.path.realpath(root)
    # `python -m pytest` run from the repo puts '' (= the repo root) on sys.path: drop it and any alias of it.
    sys.path[:] = [p for p in sys.path if not _same_path(p, REPO_ROOT) and not _same_path(p, root)]
    sys.path.insert(0, root)

    loaded_nodes = _module_file("nodes")
    if loaded_nodes and not _same_path(os.path.dirname(loaded_nodes), root):
        raise RuntimeError(f"a module named 'nodes' was imported from {loaded_nodes} before ComfyUI's: "
                           f"ComfyUI at {root} cannot be imported in this process")
    stubbed = install_missing_module_stubs()

    import comfy.options  # noqa: F401  (args parsing stays disabled: pytest's argv is not ComfyUI's)
    from comfy.cli_args import args
    if "comfy.model_management" not in sys.modules:
        args.cpu = True
    if "folder_paths" not in sys.modules and not getattr(args, "base_directory", None):
        # folder_paths creates <base>/input when it is imported: with the host root as base that writes into a
        # tree that may be shared or read-only. A scratch base (what `--base-directory` sets) keeps it untouched.
        args.base_directory = _scratch_base_directory()
    for name in ("utils.extra_config", "utils.install_util", "utils.json_util"):
        if os.path.isfile(os.path.join(root, *name.split(".")) + ".py"):
            importlib.import_module(name)
    import folder_paths  # noqa: F401
    import comfy.model_management as mm
    if mm.get_torch_device().type != "cpu":
        raise RuntimeError("comfy.model_management was imported before args.cpu was set: the host is not on CPU")
    import execution  # noqa: F401
    import nodes  # noqa: F401

    version = "unknown"
    try:
        version = importlib.import_module("comfyui_version").__version__
    except Exception:
        pass
    return {"root": root, "version": version, "stubbed": stubbed}


def set_io_directories(base: str) -> dict:
    """Point ComfyUI's output/temp/input/user folders into `base` so tests never write into the host tree."""
    import folder_paths

    dirs = {name: os.path.join(base, name) for name in ("output", "temp", "input", "user")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    folder_paths.set_output_directory(dirs["output"])
    folder_paths.set_temp_directory(dirs["temp"])
    folder_paths.set_input_directory(dirs["input"])
    if hasattr(folder_paths, "set_user_directory"):
        folder_paths.set_user_directory(dirs["user"])
    return dirs


def register_model_folders(base: str, names=("instance_diffusion", "checkpoints")) -> dict:
    """Add `<base>/<name>` to ComfyUI's model search paths, so tests can drop model files there, and make `<base>`
    ComfyUI's `models_dir` (what `--models-directory` sets): packs loaded after this register and create their
    own folders under it (ours: models/instance_diffusion), never in the host tree."""
    import folder_paths

    os.makedirs(base, exist_ok=True)
    folder_paths.models_dir = base
    out = {}
    for name in names:
        path = os.path.join(base, name)
        os.makedirs(path, exist_ok=True)
        folder_paths.add_model_folder_path(name, path)
        out[name] = path
    return out


def _run_maybe_async(value):
    return asyncio.run(value) if inspect.isawaitable(value) else value


# --------------------------------------------------------------------------------------------- loading the pack

class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def pack_init_file(repo_root: str = REPO_ROOT) -> str:
    return os.path.join(repo_root, "__init__.py")


def _pack_already_in_custom_nodes(repo_root: str) -> str | None:
    import folder_paths

    for folder in folder_paths.get_folder_paths("custom_nodes"):
        candidate = os.path.join(folder, os.path.basename(repo_root))
        if os.path.isdir(candidate) and _same_path(candidate, repo_root):
            return candidate
    return None


def find_loaded_pack(repo_root: str = REPO_ROOT):
    """The module ComfyUI created for our pack (its sys.modules name is derived from the load path)."""
    target = os.path.realpath(pack_init_file(repo_root))
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and os.path.realpath(file) == target:
            return module
    return None


def _drop_missing_folders(name: str) -> None:
    """Unregister folders of `name` that do not exist: ComfyUI lists every custom_nodes folder without checking,
    and a host tree without its (empty, so untracked) custom_nodes folder would fail the whole node init."""
    import folder_paths

    entry = folder_paths.folder_names_and_paths.get(name)
    if entry:
        entry[0][:] = [p for p in entry[0] if os.path.isdir(p)]


def load_extra_nodes(custom_nodes_dir: str, repo_root: str = REPO_ROOT, link_pack: bool = True) -> dict:
    """Run `nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False)` once, with our pack linked as
    `<custom_nodes_dir>/comfyui-instdiff` (unless the repo already sits in a custom_nodes folder).

    Returns {"module_path": load path of the pack or None, "failed_extras": [...], "log": [records]}.
    """
    import folder_paths
    import nodes

    module_path = None
    if link_pack and os.path.isfile(pack_init_file(repo_root)):
        module_path = _pack_already_in_custom_nodes(repo_root)
        if module_path is None:
            os.makedirs(custom_nodes_dir, exist_ok=True)
            module_path = os.path.join(custom_nodes_dir, PACK_DIR_NAME)
            if not os.path.lexists(module_path):
                os.symlink(repo_root, module_path, target_is_directory=True)
            folder_paths.add_model_folder_path("custom_nodes", custom_nodes_dir)
    _drop_missing_folders("custom_nodes")

    handler = _Records()
    root_logger = logging.getLogger()
    root_logger.addHandler(handler)
    try:
        failed = _run_maybe_async(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    finally:
        root_logger.removeHandler(handler)
    return {"module_path": module_path, "failed_extras": list(failed or []), "log": handler.records}


def load_custom_node(module_path: str) -> dict:
    """Load ONE custom-node folder or .py file with ComfyUI's own `nodes.load_custom_node` (same result format
    as `load_extra_nodes`); for fixture packs in tests, without re-running the whole extra-node init."""
    import nodes

    handler = _Records()
    root_logger = logging.getLogger()
    root_logger.addHandler(handler)
    try:
        ok = _run_maybe_async(nodes.load_custom_node(module_path, set(), module_parent="custom_nodes"))
    finally:
        root_logger.removeHandler(handler)
    return {"module_path": module_path, "loaded": bool(ok), "failed_extras": [], "log": handler.records}


AD_EVOLVED_PACK = "ComfyUI-AnimateDiff-Evolved"
AD_EVOLVED_ENV = "INSTDIFF_AD_EVOLVED"
AD_EVOLVED_NODE = "ADE_UseEvolvedSampling"       # registered once the pack has loaded


def find_animatediff_evolved(environ=None) -> str | None:
    """The AnimateDiff-Evolved pack folder: ``$INSTDIFF_AD_EVOLVED``, else ``custom_nodes/`` of the host, else a
    ``custom_nodes/`` beside the host tree; None when none has its ``__init__.py``."""
    environ = os.environ if environ is None else environ
    root, _ = find_comfyui_root(environ)
    candidates = [environ.get(AD_EVOLVED_ENV, "")]
    if root:
        candidates += [os.path.join(root, "custom_nodes", AD_EVOLVED_PACK),
                       os.path.join(os.path.dirname(os.path.abspath(root)), "custom_nodes", AD_EVOLVED_PACK)]
    return next((c for c in candidates if c and os.path.isfile(os.path.join(c, "__init__.py"))), None)


def load_animatediff_evolved(base: str) -> tuple[bool, str]:
    """Register AnimateDiff-Evolved's nodes in the running host, read-only: the pack is loaded through a symlink
    in ``<base>/ad_custom_nodes`` (a scratch folder), as ComfyUI loads a custom node folder; nothing is written
    into its tree (run with PYTHONDONTWRITEBYTECODE=1 to keep __pycache__ out too). ``(True, pack folder)``, or
    ``(False, why not)`` when it is absent or fails to load on this host. Loading twice is a no-op."""
    import nodes

    if AD_EVOLVED_NODE in nodes.NODE_CLASS_MAPPINGS:
        return True, "already loaded"
    src = find_animatediff_evolved()
    if src is None:
        return False, (f"{AD_EVOLVED_PACK} not found (set {AD_EVOLVED_ENV}, or put it in custom_nodes/ of the host "
                       f"or beside the host tree)")
    folder = os.path.join(base, "ad_custom_nodes")
    os.makedirs(folder, exist_ok=True)
    link = os.path.join(folder, AD_EVOLVED_PACK)
    if not os.path.lexists(link):
        os.symlink(src, link, target_is_directory=True)
    load_custom_node(link)
    if AD_EVOLVED_NODE not in nodes.NODE_CLASS_MAPPINGS:
        return False, f"{AD_EVOLVED_PACK} ({src}) did not load on this host"
    return True, src


def pack_import_error(load_result: dict) -> str:
    """ComfyUI only logs a failed custom-node import; dig the traceback out of the captured log records."""
    path = load_result.get("module_path") or PACK_DIR_NAME
    records = load_result.get("log", [])
    picked = []
    for i, record in enumerate(records):
        if path in record.getMessage() or PACK_DIR_NAME in record.getMessage():
            if i > 0 and "Traceback" in records[i - 1].getMessage():   # logged just before "Cannot import"
                picked.append(i - 1)
            picked.append(i)
    lines = [records[i].getMessage() for i in sorted(set(picked))]
    return "\n".join(lines) or "no log record mentions the pack (was it linked into a custom_nodes folder?)"


def loaded_pack_or_error(load_result: dict, repo_root: str = REPO_ROOT):
    """(pack module, None) when ComfyUI registered it, else (None, error text with the import traceback)."""
    import nodes

    module = find_loaded_pack(repo_root)
    loaded_dirs = {os.path.realpath(p) for p in getattr(nodes, "LOADED_MODULE_DIRS", {}).values()}
    if module is None or os.path.realpath(repo_root) not in loaded_dirs:
        return None, "ComfyUI could not import the pack:\n" + pack_import_error(load_result)
    return module, None


def pack_submodule(pack, name: str):
    """The pack's OWN copy of a submodule (e.g. instancediffusion_core): the nodes import the core relatively,
    so isinstance checks must use this module, not the pip-installed top-level one."""
    full = f"{pack.__name__}.{name}"
    return sys.modules.get(full) or importlib.import_module(full)


# --------------------------------------------------------------------------------------------- executing prompts

class ServerStub:
    """What `execution.PromptExecutor` needs from `server.PromptServer`; every message is recorded."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.messages = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


class PromptError(RuntimeError):
    """A prompt failed validation or execution; `.details` holds ComfyUI's error structures."""

    def __init__(self, message: str, details=None):
        super().__init__(message)
        self.details = details


def _new_executor(server):
    import execution

    params = inspect.signature(execution.PromptExecutor.__init__).parameters
    if "cache_args" in params:        # ComfyUI >= ~0.4: the executor reads cache_args["ram"] after every node,
        # and since 0.23 cache_args["ram_inactive"] at the start of every prompt (older hosts ignore the key)
        return execution.PromptExecutor(server, cache_args={"lru": 0, "ram": 0.0, "ram_inactive": 0.0})
    return execution.PromptExecutor(server)


def validate_prompt(api_prompt: dict, prompt_id: str | None = None):
    """`execution.validate_prompt` on either signature (sync/async, with or without partial_execution_list)."""
    import execution

    prompt_id = prompt_id or str(uuid.uuid4())
    params = inspect.signature(execution.validate_prompt).parameters
    if "prompt_id" in params:
        args = (prompt_id, api_prompt) + ((None,) if "partial_execution_list" in params else ())
    else:
        args = (api_prompt,)
    return _run_maybe_async(execution.validate_prompt(*args))


def _format_validation(result) -> str:
    _, error, _, node_errors = result
    lines = [f"{error.get('message')}: {error.get('details')}" if error else "validation failed"]
    for node_id, info in (node_errors or {}).items():
        for reason in info.get("errors", []):
            lines.append(f"  node {node_id} ({info.get('class_type')}): {reason.get('message')}: "
                         f"{reason.get('details')}")
    return "\n".join(lines)


def run_prompt(api_prompt: dict, extra_data: dict | None = None, executor=None) -> dict:
    """Validate and execute an API-format prompt through ComfyUI's own executor.

    Returns {"prompt_id", "outputs": ui outputs per node (history format), "history": executor.history_result,
    "images": {node id: [file paths]}, "messages": [(event, data)], "executor": the executor}.
    Raises PromptError with the node errors (validation) or the node's exception and traceback (execution).
    Pass `executor=` to reuse its cache between prompts (as a running server does).
    """
    import folder_paths

    prompt_id = str(uuid.uuid4())
    result = validate_prompt(api_prompt, prompt_id)
    if not result[0]:
        raise PromptError("prompt failed validation:\n" + _format_validation(result), details=result)
    server = executor.server if executor is not None else ServerStub()
    executor = executor or _new_executor(server)
    server.messages.clear()
    executor.execute(api_prompt, prompt_id, extra_data or {}, result[2])
    errors = [data for event, data in executor.status_messages if event == "execution_error"]
    if not executor.success or errors:
        err = errors[0] if errors else {}
        raise PromptError(
            f"node {err.get('node_id')} ({err.get('node_type')}) raised {err.get('exception_type')}: "
            f"{err.get('exception_message')}\n" + "".join(err.get("traceback") or []), details=err)
    history = getattr(executor, "history_result", {}) or {}
    outputs = history.get("outputs", {})
    images = {}
    for node_id, ui in outputs.items():
        for image in (ui or {}).get("images", []) or []:
            base = {"output": folder_paths.get_output_directory(), "temp": folder_paths.get_temp_directory(),
                    "input": folder_paths.get_input_directory()}.get(image.get("type"), "")
            images.setdefault(node_id, []).append(os.path.join(base, image.get("subfolder", ""),
                                                               image["filename"]))
    return {"prompt_id": prompt_id, "outputs": outputs, "history": history, "images": images,
            "messages": list(server.messages), "executor": executor}


# --------------------------------------------------------------------------------------------- /object_info

def object_info(node_type: str) -> dict:
    """What `GET /object_info/<node_type>` returns for one node (server.py's node_info, reproduced)."""
    import folder_paths
    import nodes

    if node_type not in nodes.NODE_CLASS_MAPPINGS:
        raise KeyError(f"node type {node_type!r} is not registered in nodes.NODE_CLASS_MAPPINGS")
    cls = nodes.NODE_CLASS_MAPPINGS[node_type]
    with folder_paths.cache_helper:
        try:
            from comfy_api.internal import _ComfyNodeInternal
        except ImportError:
            _ComfyNodeInternal = ()
        if _ComfyNodeInternal and issubclass(cls, _ComfyNodeInternal):
            return cls.GET_NODE_INFO_V1()
        inputs = cls.INPUT_TYPES()
        info = {
            "input": inputs,
            "input_order": {key: list(value.keys()) for key, value in cls.INPUT_TYPES().items()},
            "output": cls.RETURN_TYPES,
            "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
            "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
            "name": node_type,
            "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node_type, node_type),
            "description": getattr(cls, "DESCRIPTION", ""),
            "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
            "category": getattr(cls, "CATEGORY", "sd"),
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False) == True),  # noqa: E712 (as server.py)
        }
        if hasattr(cls, "OUTPUT_TOOLTIPS"):
            info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
        if getattr(cls, "DEPRECATED", False):
            info["deprecated"] = True
        if getattr(cls, "EXPERIMENTAL", False):
            info["experimental"] = True
        if hasattr(cls, "API_NODE"):
            info["api_node"] = cls.API_NODE
        return info
