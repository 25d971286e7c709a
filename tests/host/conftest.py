"""Host tier: tests that run against a real ComfyUI checkout (COMFYUI_PATH, or the ComfyUI this repo sits in).

Without a host no test module here is imported: each is reported as one skipped item with the reason. With one,
ComfyUI is imported at collection time (test modules may import `comfy.*` at top level) and the session fixtures
below give:
  comfy_host     host facts + temporary output/temp/input/user folders (autouse: nothing is written to the host)
  models_dir     {"instance_diffusion": dir, "checkpoints": dir} registered with folder_paths
  comfy_nodes    ComfyUI's extra nodes loaded once (comfy_extras + custom nodes, our pack linked in)
  pack           our pack's module as ComfyUI imported it; pack_core = its own instancediffusion_core
  tiny_checkpoint  {"name", "path"} of a tiny SD1.5 checkpoint in models_dir["checkpoints"]
  tiny_sd15      one shared tiny SD1.5 ModelPatcher (clone it before patching)
  node, base, instdiff   every node instance by key; the tiny UNet; add-on weights sized for it (module scope)
  run_prompt     comfy_harness.run_prompt, after the extra nodes are loaded
"""
from __future__ import annotations

import os

import pytest

from instdiff_testkit import comfy_harness

HOST_ROOT, NO_HOST_REASON = comfy_harness.find_comfyui_root()
HOST = comfy_harness.import_host(HOST_ROOT) if HOST_ROOT else None

if HOST is None:
    class _NoHostItem(pytest.Item):
        def runtest(self):
            pytest.skip(NO_HOST_REASON)

        def reportinfo(self):
            return self.path, 0, f"{self.path.name}: needs a ComfyUI host"

    class _NoHostModule(pytest.Module):
        """Does not import the test module (it may import comfy at top level): one skipped item stands for it,
        so `pytest tests/host` without a host reports skips and exits 0 instead of 'no tests collected'."""

        def collect(self):
            item = _NoHostItem.from_parent(self, name="needs_comfyui_host")
            item.add_marker(pytest.mark.skip(reason=NO_HOST_REASON))
            return [item]

    def pytest_pycollect_makemodule(module_path, parent):
        return _NoHostModule.from_parent(parent, path=module_path)


def pytest_report_header(config):
    if HOST is None:
        return f"host tier: {NO_HOST_REASON}"
    stubbed = f", stubbed: {', '.join(HOST['stubbed'])}" if HOST["stubbed"] else ""
    return f"host tier: ComfyUI {HOST['version']} at {HOST['root']}{stubbed}"


@pytest.fixture(scope="session", autouse=True)
def comfy_host(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_host")
    dirs = comfy_harness.set_io_directories(str(base / "io"))
    models = comfy_harness.register_model_folders(str(base / "models"))
    return {**HOST, "dirs": dirs, "models": models, "base": str(base)}


@pytest.fixture(scope="session")
def models_dir(comfy_host):
    return comfy_host["models"]


@pytest.fixture(scope="session")
def comfy_nodes(comfy_host):
    return comfy_harness.load_extra_nodes(os.path.join(comfy_host["base"], "custom_nodes"))


@pytest.fixture(scope="session")
def pack(comfy_nodes):
    if not os.path.isfile(comfy_harness.pack_init_file()):
        pytest.skip("the pack's root __init__.py does not exist yet: ComfyUI has nothing to import")
    module, error = comfy_harness.loaded_pack_or_error(comfy_nodes)
    if module is None:
        pytest.fail(error, pytrace=False)
    return module


@pytest.fixture(scope="session")
def pack_core(pack):
    return comfy_harness.pack_submodule(pack, "instancediffusion_core")


def _checkpoint_cache_dir(request, tmp_path_factory) -> str:
    """pytest's cache keeps the ~340 MB file between sessions; a fresh temp dir when the cache is disabled."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return str(cache.mkdir("comfyui-instdiff-tiny-checkpoint"))
    return str(tmp_path_factory.mktemp("tiny_checkpoint"))


@pytest.fixture(scope="session")
def tiny_checkpoint(request, tmp_path_factory, models_dir):
    from instdiff_testkit import tiny_models

    cache_dir = _checkpoint_cache_dir(request, tmp_path_factory)
    path = tiny_models.tiny_checkpoint_file(cache_dir)
    for stale in os.listdir(cache_dir):      # older builder versions
        if stale != os.path.basename(path) and stale.startswith("instdiff_tiny_sd15_"):
            os.remove(os.path.join(cache_dir, stale))
    name = os.path.basename(path)
    link = os.path.join(models_dir["checkpoints"], name)
    if not os.path.lexists(link):
        os.symlink(path, link)
    return {"name": name, "path": path}


@pytest.fixture(scope="session")
def tiny_sd15():
    from instdiff_testkit import tiny_models

    return tiny_models.tiny_sd15_patcher()


@pytest.fixture(scope="session")
def run_prompt(comfy_nodes):
    return comfy_harness.run_prompt


@pytest.fixture(scope="module")
def node(pack):
    """One instance of every node of the pack, by node key (nodes are stateless)."""
    return {k: cls() for k, cls in pack.NODE_CLASS_MAPPINGS.items()}


@pytest.fixture(scope="module")
def base(tiny_sd15):
    return tiny_sd15


@pytest.fixture(scope="module")
def instdiff(pack_core, base):
    """INSTANCEDIFFUSION weights sized for the shared tiny SD1.5 UNet."""
    from instdiff_testkit.host_fixtures import instdiff_for
    return instdiff_for(pack_core, base)
