"""The host harness itself, against real ComfyUI: discovery, safe import, tiny models, the hooks the pack relies
on (middle_patch, output_block_patch, uuids of a CFG batch), the tiny checkpoint file, the in-process executor,
/object_info, and loading a custom-node pack the way ComfyUI does."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from instdiff_testkit import comfy_harness
from instdiff_testkit import tiny_models

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS_JSON = os.path.join(TESTS_DIR, "fixtures", "parity-public", "keys.json")


# ----------------------------------------------------------------------------------------------- discovery

def _fake_comfyui(path):
    os.makedirs(os.path.join(path, "comfy"), exist_ok=True)
    with open(os.path.join(path, "nodes.py"), "w") as f:
        f.write("# stand-in\n")
    return path


def test_find_root_uses_env_and_explains_a_bad_one(tmp_path):
    host = _fake_comfyui(str(tmp_path / "ComfyUI"))
    root, reason = comfy_harness.find_comfyui_root({"COMFYUI_PATH": host}, repo_root=str(tmp_path / "repo"))
    assert root == os.path.realpath(host) and reason == ""
    root, reason = comfy_harness.find_comfyui_root({"COMFYUI_PATH": str(tmp_path)}, repo_root=host)
    assert root is None and "COMFYUI_PATH" in reason and str(tmp_path) in reason


def test_find_root_from_custom_nodes_location(tmp_path):
    host = _fake_comfyui(str(tmp_path / "ComfyUI"))
    repo = tmp_path / "ComfyUI" / "custom_nodes" / "comfyui-instdiff"
    repo.mkdir(parents=True)
    assert comfy_harness.find_comfyui_root({}, repo_root=str(repo))[0] == os.path.realpath(host)
    root, reason = comfy_harness.find_comfyui_root({}, repo_root=str(tmp_path / "elsewhere" / "repo"))
    assert root is None and reason == comfy_harness.NO_HOST_REASON


def test_without_host_every_module_is_skipped_with_the_reason():
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    if os.path.basename(os.path.dirname(comfy_harness.REPO_ROOT)) == "custom_nodes":
        pytest.skip("this checkout sits in a ComfyUI custom_nodes folder: a host is always found")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           os.path.dirname(os.path.abspath(__file__))],
                          cwd=comfy_harness.REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "no ComfyUI host: set COMFYUI_PATH=" in out
    assert " passed" not in out and "error" not in out.lower()


# ----------------------------------------------------------------------------------------------- safe import

def test_host_imported_on_cpu_and_repo_root_hidden(comfy_host):
    import comfy.model_management
    import nodes
    from comfy.cli_args import args

    assert os.path.realpath(nodes.__file__) == os.path.join(comfy_host["root"], "nodes.py")
    assert args.cpu and comfy.model_management.get_torch_device().type == "cpu"
    assert all(os.path.realpath(p or os.getcwd()) != comfy_harness.REPO_ROOT for p in sys.path)
    import folder_paths
    assert folder_paths.get_output_directory() == comfy_host["dirs"]["output"]


def test_importing_the_host_writes_nothing_into_its_tree(comfy_host):
    """folder_paths creates <base>/input on import; the base must be a scratch folder, never the host root
    (CI checks the trees are untouched; a shared or read-only tree must work)."""
    import folder_paths
    root = comfy_host["root"]
    assert os.path.realpath(folder_paths.base_path) != root
    for path in (folder_paths.models_dir, folder_paths.get_input_directory(), folder_paths.get_output_directory()):
        assert not os.path.realpath(path).startswith(root + os.sep), path


# ----------------------------------------------------------------------------------------------- tiny models

def test_tiny_sd15_has_the_sd15_topology_at_a_tenth_of_the_width(tiny_sd15):
    import comfy.supported_models

    assert type(tiny_sd15.model.model_config) is comfy.supported_models.SD15
    fusers, scaleu, context = tiny_models.unet_topology(tiny_sd15)
    with open(KEYS_JSON) as f:
        official = {e["key"]: e["shape"] for e in json.load(f)}
    official_fusers = {k[:-len(".fuser.linear.weight")]: s[0] for k, s in official.items()
                       if k.endswith(".fuser.linear.weight")}
    official_scaleu = {int(k[len("scaleu_b_"):]): s[0] for k, s in official.items() if k.startswith("scaleu_b_")}
    assert context == 768
    assert list(fusers) == list(official_fusers)                 # same 16 prefixes, same (execution) order
    assert {k: 10 * w for k, w in fusers.items()} == official_fusers
    assert {k: 10 * w for k, w in scaleu.items()} == official_scaleu


def test_addon_shapes_reproduce_the_official_layout():
    with open(KEYS_JSON) as f:
        official = [(e["key"], tuple(e["shape"])) for e in json.load(f)]
    addon = [(k, s) for k, s in official
             if k.startswith(("position_net.", "scaleu_")) or ".fuser." in k]
    fusers = {k[:-len(".fuser.linear.weight")]: s[0] for k, s in addon if k.endswith(".fuser.linear.weight")}
    scaleu = {int(k[len("scaleu_b_"):]): s[0] for k, s in addon if k.startswith("scaleu_b_")}
    shapes = tiny_models.addon_shapes(fusers, scaleu, token_dim=768, text_dim=768, mid_dim=3072,
                                      convnext_dims=(96, 192, 384, 768), convnext_depths=(3, 3, 9, 3))
    ours = list(shapes.items())
    assert sorted(ours) == sorted(addon)
    by_group = lambda items, p: [i for i in items if i[0].startswith(p)]  # noqa: E731
    assert by_group(ours, "position_net.") == by_group(addon, "position_net.")   # official order


def test_tiny_addon_state_dict_is_deterministic_and_active(tiny_sd15):
    fusers, scaleu, _ = tiny_models.unet_topology(tiny_sd15)
    a = tiny_models.tiny_addon_state_dict(fusers, scaleu, seed=3)
    b = tiny_models.tiny_addon_state_dict(fusers, scaleu, seed=3)
    c = tiny_models.tiny_addon_state_dict(fusers, scaleu, seed=4)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert sum(k.endswith(".fuser.alpha_attn") for k in a) == 16 and len([k for k in a if ".fuser." in k]) == 16 * 17
    gates = torch.stack([v for k, v in a.items() if k.endswith(("alpha_attn", "alpha_dense"))])
    assert gates.dim() == 1 and bool((gates.tanh() > 0.3).all())
    assert all(v.dtype == torch.float32 and bool(torch.isfinite(v).all()) for v in a.values())
    assert a["position_net.linears_list.4.0.weight"].shape[1] == 4 * 64 == a["position_net.null_seg_feature"].numel()


def test_wrong_base_models_report_their_context():
    import comfy.supported_models

    sd2, sdxl = tiny_models.tiny_sd2_patcher(), tiny_models.tiny_sdxl_patcher()
    assert type(sd2.model.model_config) is comfy.supported_models.SD20
    assert type(sdxl.model.model_config) is comfy.supported_models.SDXL
    assert tiny_models.unet_topology(sd2)[2] == 1024
    assert tiny_models.unet_topology(sdxl)[2] == 2048


# ----------------------------------------------------------------------------------------------- sampling & hooks

def _conds(seed=0, context_dim=768, tokens=77):
    g = torch.Generator().manual_seed(seed)
    pos = [[torch.randn(1, tokens, context_dim, generator=g), {}]]
    neg = [[torch.randn(1, tokens, context_dim, generator=g), {}]]
    return pos, neg


def _sample(model, seed=0, steps=2, cfg=1.0, size=16):
    import comfy.sample

    latent = torch.zeros(1, 4, size, size)
    noise = comfy.sample.prepare_noise(latent, seed)
    pos, neg = _conds()
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", pos, neg, latent, seed=seed,
                               disable_pbar=True)


def _count_unet_calls(model):
    import comfy.patcher_extension

    calls = []

    def wrapper(executor, *args, **kwargs):
        calls.append(1)
        return executor(*args, **kwargs)

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "harness-count", wrapper)
    return calls


def test_tiny_unet_samples_deterministically(tiny_sd15):
    a = _sample(tiny_sd15, seed=1)
    b = _sample(tiny_sd15, seed=1)
    c = _sample(tiny_sd15, seed=2)
    assert a.shape == (1, 4, 16, 16)
    assert bool(torch.isfinite(a).all()) and a.abs().max() > 0
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def _official_prefix(extra_options) -> str:
    kind, index = extra_options["block"]
    block = {"input": f"input_blocks.{index}.1", "middle": "middle_block.1", "output": f"output_blocks.{index}.1"}
    return f"{block[kind]}.transformer_blocks.{extra_options['block_index']}"


def test_middle_patch_fires_once_per_transformer_block(tiny_sd15):
    fusers, _, _ = tiny_models.unet_topology(tiny_sd15)
    seen = []

    def middle_patch(x, extra_options):
        seen.append((extra_options["transformer_index"], _official_prefix(extra_options), x.shape[-1],
                     extra_options["activations_shape"][1]))
        return x

    m = tiny_sd15.clone()
    m.set_model_patch(middle_patch, "middle_patch")
    unet_calls = _count_unet_calls(m)
    _sample(m, steps=2, cfg=1.0)
    assert len(unet_calls) == 2 and len(seen) == 16 * len(unet_calls)
    for call in range(len(unet_calls)):
        chunk = seen[16 * call:16 * (call + 1)]
        assert [s[0] for s in chunk] == list(range(16))
        assert [s[1] for s in chunk] == list(fusers)          # block/block_index name the official fuser
        assert all(width == fusers[prefix] == channels for _, prefix, width, channels in chunk)


def test_output_block_patch_fires_once_per_output_block(tiny_sd15):
    _, scaleu, _ = tiny_models.unet_topology(tiny_sd15)
    seen = []

    def output_patch(h, hsp, transformer_options):
        seen.append((transformer_options["block"], h.shape[1], hsp.shape[1]))
        return h, hsp

    m = tiny_sd15.clone()
    m.set_model_output_block_patch(output_patch)
    unet_calls = _count_unet_calls(m)
    _sample(m, steps=1, cfg=1.0)
    assert len(unet_calls) == 1 and len(seen) == 12
    assert [s[0] for s in seen] == [("output", k) for k in range(12)]
    assert {k: s[1] for k, s in enumerate(seen)} == scaleu


def test_cfg_batch_carries_one_uuid_per_cond(tiny_sd15):
    import comfy.patcher_extension

    batches, cond_uuids = [], {}

    def middle_patch(x, extra_options):
        if extra_options["transformer_index"] == 0:
            batches.append((list(extra_options["uuids"]), list(extra_options["cond_or_uncond"]), x.shape[0]))
        return x

    def cond_table(executor, model, conds, x_in, timestep, model_options):
        for which, cond_list in enumerate(conds):       # 0 = positive (COND), 1 = negative (UNCOND)
            for c in cond_list or []:
                cond_uuids[c["uuid"]] = which
        return executor(model, conds, x_in, timestep, model_options)

    m = tiny_sd15.clone()
    m.set_model_patch(middle_patch, "middle_patch")
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "harness-uuids", cond_table)
    _sample(m, steps=2, cfg=7.5)
    assert len(batches) == 2
    for uuids, cond_or_uncond, batch in batches:
        assert len(uuids) == 2 and batch == 2 and sorted(cond_or_uncond) == [0, 1]
        assert [cond_uuids[u] for u in uuids] == cond_or_uncond     # each chunk's uuid is its cond's uuid


# ----------------------------------------------------------------------------------------------- checkpoint & executor

def test_tiny_checkpoint_loads_as_sd15(tiny_checkpoint):
    import comfy.sd
    import comfy.supported_models

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(tiny_checkpoint["path"])
    config = model.model.model_config
    assert type(config) is comfy.supported_models.SD15
    assert config.unet_config["model_channels"] == 320 and config.unet_config["context_dim"] == 768
    cond, pooled = clip.encode_from_tokens(clip.tokenize("a red cube"), return_pooled=True)
    assert cond.shape == (1, 77, 768) and bool(torch.isfinite(cond).all())
    image = vae.decode(torch.zeros(1, 4, 8, 8))
    assert image.shape == (1, 64, 64, 3) and bool(torch.isfinite(image).all())


def core_graph(ckpt_name: str, seed: int = 1) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": seed, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "harness"}},
    }


def test_executor_runs_a_core_graph(tiny_checkpoint, run_prompt, comfy_host):
    from PIL import Image

    result = run_prompt(core_graph(tiny_checkpoint["name"]))
    (path,) = result["images"]["7"]
    assert path.startswith(comfy_host["dirs"]["output"]) and os.path.isfile(path)
    with Image.open(path) as image:
        assert image.size == (64, 64)
    assert "execution_success" in [event for event, _ in result["executor"].status_messages]


def test_run_prompt_names_the_node_on_validation_errors(tiny_checkpoint, run_prompt):
    graph = core_graph(tiny_checkpoint["name"])
    graph["1"]["inputs"]["ckpt_name"] = "missing_model.safetensors"
    with pytest.raises(comfy_harness.PromptError) as err:
        run_prompt(graph)
    assert "node 1 (CheckpointLoaderSimple)" in str(err.value) and "missing_model.safetensors" in str(err.value)


class _RaisesAtRun:
    CATEGORY, FUNCTION, RETURN_TYPES, OUTPUT_NODE = "testing", "run", (), True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1})}}

    def run(self, value):
        raise ValueError(f"harness boom {value}")


def test_run_prompt_raises_with_the_node_exception(run_prompt, monkeypatch):
    import nodes

    monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, "HarnessRaisesAtRun", _RaisesAtRun)
    with pytest.raises(comfy_harness.PromptError) as err:
        run_prompt({"9": {"class_type": "HarnessRaisesAtRun", "inputs": {"value": 7}}})
    assert "node 9 (HarnessRaisesAtRun)" in str(err.value) and "harness boom 7" in str(err.value)
    assert err.value.details["exception_type"].endswith("ValueError")


def test_object_info_reports_v1_and_v3_nodes(comfy_nodes):
    import nodes
    from comfy_api.internal import _ComfyNodeInternal

    info = comfy_harness.object_info("KSampler")
    assert info["input"] == nodes.KSampler.INPUT_TYPES()
    assert info["input_order"]["required"] == list(nodes.KSampler.INPUT_TYPES()["required"])
    assert info["output"] == ("LATENT",) and info["name"] == "KSampler" and info["python_module"] == "nodes"
    assert comfy_harness.object_info("SaveImage")["output_node"] is True
    v3 = next(name for name, cls in nodes.NODE_CLASS_MAPPINGS.items() if issubclass(cls, _ComfyNodeInternal))
    v3_info = comfy_harness.object_info(v3)
    assert v3_info["name"] == v3 and "input" in v3_info and "output" in v3_info
    with pytest.raises(KeyError, match="NoSuchNode"):
        comfy_harness.object_info("NoSuchNode")


# ----------------------------------------------------------------------------------------------- custom-node loading

def _write_pack(folder, init_source, extra=None):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "__init__.py"), "w") as f:
        f.write(init_source)
    for name, source in (extra or {}).items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(source)
    return str(folder)


def test_a_pack_loads_like_comfyui_loads_it(tmp_path, monkeypatch):
    import nodes

    monkeypatch.setattr(nodes, "NODE_CLASS_MAPPINGS", dict(nodes.NODE_CLASS_MAPPINGS))
    folder = _write_pack(tmp_path / "custom_nodes" / "harness-fixture-pack",
                         "from .impl import NODE_CLASS_MAPPINGS\n",
                         {"impl.py": "class HarnessFixtureNode:\n    RETURN_TYPES = ()\n    FUNCTION = 'f'\n"
                                     "    @classmethod\n    def INPUT_TYPES(cls):\n        return {}\n"
                                     "NODE_CLASS_MAPPINGS = {'HarnessFixtureNode': HarnessFixtureNode}\n"})
    result = comfy_harness.load_custom_node(folder)
    module, error = comfy_harness.loaded_pack_or_error(result, repo_root=folder)
    assert error is None and result["loaded"]
    impl = comfy_harness.pack_submodule(module, "impl")
    assert nodes.NODE_CLASS_MAPPINGS["HarnessFixtureNode"] is impl.HarnessFixtureNode
    assert impl.HarnessFixtureNode.RELATIVE_PYTHON_MODULE == "custom_nodes.harness-fixture-pack"


def test_a_broken_pack_reports_its_traceback(tmp_path):
    folder = _write_pack(tmp_path / "custom_nodes" / "harness-broken-pack",
                         "raise ImportError('harness-broken-pack cannot import xyz')\n")
    result = comfy_harness.load_custom_node(folder)
    module, error = comfy_harness.loaded_pack_or_error(result, repo_root=folder)
    assert module is None and not result["loaded"]
    assert "Traceback" in error and "cannot import xyz" in error and "__init__.py" in error


def test_our_pack_is_loaded_through_custom_nodes(pack, pack_core, comfy_nodes):
    import nodes

    assert os.path.realpath(pack.__file__) == os.path.join(comfy_harness.REPO_ROOT, "__init__.py")
    assert pack.NODE_CLASS_MAPPINGS, "the pack registers no nodes"
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert nodes.NODE_CLASS_MAPPINGS.get(key) is cls
        assert cls.RELATIVE_PYTHON_MODULE == f"custom_nodes.{comfy_harness.PACK_DIR_NAME}"
    assert pack_core.__name__ == f"{pack.__name__}.instancediffusion_core"
    assert os.path.dirname(os.path.realpath(pack_core.__file__)) == os.path.join(comfy_harness.REPO_ROOT,
                                                                                 "instancediffusion_core")
    assert pack_core is not sys.modules.get("instancediffusion_core")


# ----------------------------------------------------------------------------------------------- CI host setup

def _host_deps():
    import importlib.util

    path = os.path.join(comfy_harness.REPO_ROOT, "scripts", "host_deps.py")
    spec = importlib.util.spec_from_file_location("instdiff_host_deps", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ci_splits_this_hosts_requirements(comfy_host):
    """scripts/host_deps.py (used by .ci/run): never torch/torchvision/torchaudio; the frontend pins apart (one
    folder per host); packages that need torchvision without their dependencies."""
    deps = _host_deps()
    parts = deps.split_requirements(comfy_host["root"])
    names = {k: {deps.normalize(deps._NAME.match(line).group(1)) for line in v} for k, v in parts.items()}
    assert not (set().union(*names.values()) & deps.TORCH)
    assert "comfyui-frontend-package" in names["frontend"] and not (names["venv"] & set(deps.FRONTEND))
    assert any(line.startswith("comfyui-frontend-package==") for line in parts["frontend"])   # pinned per host
    assert names["no_deps"] <= deps.NEEDS_TORCHVISION and {"numpy", "safetensors", "einops"} <= names["venv"]
    assert deps.host_version(comfy_host["root"]) == comfy_host["version"]
    assert deps.frontend_dir("/f", comfy_host["root"]) == f"/f/comfyui-{comfy_host['version']}"


def test_broken_optional_packages_are_stubbed_like_missing_ones(monkeypatch):
    """A torchvision wheel built for another torch raises at import: the harness stubs it as if it were missing."""
    import importlib
    import importlib.machinery

    class BrokenFinder:
        def find_spec(self, name, path=None, target=None):
            if name == "instdiff_broken_pkg":
                return importlib.machinery.ModuleSpec(name, self)

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            raise RuntimeError("operator instdiff_broken_pkg::nms does not exist")

    monkeypatch.setattr(sys, "meta_path", sys.meta_path + [BrokenFinder()])
    with pytest.raises(RuntimeError, match="does not exist"):
        importlib.import_module("instdiff_broken_pkg")
    assert comfy_harness.install_missing_module_stubs(("instdiff_broken_pkg",)) == ["instdiff_broken_pkg"]
    import instdiff_broken_pkg.ops as ops          # noqa: E402  (the stub, found before the broken package)
    assert sys.modules["instdiff_broken_pkg"].__stub__
    with pytest.raises(ImportError, match="instdiff_broken_pkg.ops.nms is unavailable"):
        ops.nms()
    monkeypatch.delitem(sys.modules, "instdiff_broken_pkg")
    monkeypatch.delitem(sys.modules, "instdiff_broken_pkg.ops")
    for finder in sys.meta_path:
        if isinstance(finder, comfy_harness._StubFinder):
            finder.roots.discard("instdiff_broken_pkg")
