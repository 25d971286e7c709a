"""The converter runs from any folder a user stands in (e.g. the ComfyUI root), not only from the pack folder.

The pack is copied to ``<tmp>/ComfyUI/custom_nodes/comfyui-instdiff`` and its ``instdiff_cli.py`` is run from
``<tmp>/ComfyUI``; the bytecode cache appearing inside the copied core proves the copy (found from the script's own
folder) was used, not the development install.
"""
import os
import shutil
import subprocess
import sys

from safetensors import safe_open

from instdiff_testkit import synthetic_checkpoints as sc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pack_copy(tmp_path):
    root = tmp_path / "ComfyUI"
    pack = root / "custom_nodes" / "comfyui-instdiff"
    pack.mkdir(parents=True)
    shutil.copy(os.path.join(REPO, "instdiff_cli.py"), pack)
    shutil.copytree(os.path.join(REPO, "instancediffusion_core"), pack / "instancediffusion_core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root, pack


def _run(script, args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_help_and_convert_from_the_comfyui_root(tmp_path):
    root, pack = _pack_copy(tmp_path)
    script = os.path.join("custom_nodes", "comfyui-instdiff", "instdiff_cli.py")
    out = _run(script, ["--help"], root)
    assert out.returncode == 0, out.stderr
    assert "convert" in out.stdout and "preview" in out.stdout

    src = tmp_path / "instancediffusion_sd15.pth"
    sc.write_official_pth(src)
    dst = root / "models" / "instance_diffusion" / "addons.safetensors"
    dst.parent.mkdir(parents=True)
    out = _run(script, ["convert", str(src), str(dst), "--dtype", "fp16"], root)
    assert out.returncode == 0, out.stdout + out.stderr
    with safe_open(str(dst), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("position_net.") for k in keys) and any(".fuser." in k for k in keys)
    assert (pack / "instancediffusion_core" / "__pycache__").is_dir(), "the copied pack was not the one imported"
