"""The converter: ``python -m instancediffusion_core convert ...`` end to end, and the subcommand dispatcher."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from instdiff_testkit import synthetic_checkpoints as sc
from instancediffusion_core import __main__ as cli
from instancediffusion_core.weights.checkpoint import CheckpointError, load_instancediffusion, read_addon_state_dict
from instancediffusion_core.weights.convert import convert


def run_cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run([sys.executable, "-m", "instancediffusion_core", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "instancediffusion_sd15.pth"
    return path, sc.write_official_pth(path, big_dropped_values=1_000_000)


def test_convert_official_to_fp16_end_to_end(tmp_path, official):
    path, stored = official
    out = tmp_path / "instancediffusion_sd15_addons.safetensors"
    res = run_cli("convert", path, out, "--dtype", "fp16", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    got = load_file(str(out))
    assert set(got) == set(stored["ema"])
    for k, v in stored["ema"].items():
        assert got[k].dtype == torch.float16 and torch.equal(got[k], v.half()), k
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["source"] == "instancediffusion_sd15.pth" and meta["source_format"] == "official-pth"
    assert meta["dtype"] == "float16" and meta["fuser_blocks"] == "16"
    report = res.stdout
    assert "source format : official-pth" in report
    assert re.search(r"position net\s+217 tensors\s+251,733 params", report)
    assert re.search(r"fusers\s+272 tensors\s+173,912 params \(16 blocks\)", report)
    assert re.search(r"ScaleU\s+24 tensors\s+340 params \(12 blocks\)", report)
    assert re.search(r"total\s+513 tensors\s+425,985 params", report)
    assert "dtype         : float32 -> float16" in report
    assert re.search(r"output        : .*addons\.safetensors \(\d[\d.,]* (KB|MB)\)", report)
    assert re.search(r"elapsed       : \d+\.\d\d s", report) and re.search(r"peak RSS      : \d", report)
    assert "cuda:0" in report and "using 'ema'" in report
    # what the converter wrote is what the loader builds the model from
    addons = load_instancediffusion(out)
    assert addons.summary()["dtype"] == "float16" and addons.source_format == "instancediffusion-safetensors"


def test_convert_logtd_files_keep_dtype(tmp_path):
    paths, addons = sc.write_logtd_files(tmp_path)
    out = tmp_path / "merged.safetensors"
    res = run_cli("convert", paths["fusers"], paths["position_net"], paths["scaleu"], out)
    assert res.returncode == 0, res.stderr
    got = load_file(str(out))
    assert set(got) == set(addons) and all(torch.equal(got[k], v) for k, v in addons.items())
    assert "logtd-fusers+logtd-position-net+logtd-scaleu" in res.stdout
    assert "float32 -> float32" in res.stdout


def in_process(capsys, *args):
    """The same entry point as ``python -m``, run in this process (saves a torch import per call)."""
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_convert_refuses_partial_and_existing_output(tmp_path, capsys):
    paths, _ = sc.write_logtd_files(tmp_path)
    out = tmp_path / "fusers_only.safetensors"
    code, _, err = in_process(capsys, "convert", paths["fusers"], out)
    assert code == 1 and not out.exists()
    assert "error: the input has no position net" in err and "--allow-partial" in err
    code, _, err = in_process(capsys, "convert", paths["fusers"], out, "--allow-partial", "--dtype", "bf16")
    assert code == 0, err
    assert all(t.dtype == torch.bfloat16 for t in load_file(str(out)).values())
    code, _, err = in_process(capsys, "convert", paths["fusers"], out, "--allow-partial")
    assert code == 1 and "already exists; pass --overwrite" in err
    code, _, err = in_process(capsys, "convert", paths["fusers"], out, "--allow-partial", "--overwrite")
    assert code == 0, err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_convert_reports_bad_input_cleanly(tmp_path, capsys):
    bad = tmp_path / "v1-5.safetensors"
    from safetensors.torch import save_file
    save_file(sc.base_model_state_dict(), str(bad))
    code, _, err = in_process(capsys, "convert", bad, tmp_path / "out.safetensors")
    assert code == 1 and err.startswith("error: ") and "base Stable Diffusion model" in err
    with pytest.raises(SystemExit) as exit_info:
        in_process(capsys, "convert", bad)
    assert exit_info.value.code == 2
    assert "at least one input and the output" in capsys.readouterr().err


def test_convert_function_streams_only_kept_records(tmp_path, official):
    path, stored = official
    out = tmp_path / "x.safetensors"
    report = convert([path], out, dtype="bf16")
    assert report.counts["fusers"]["blocks"] == 16 and report.output_dtypes == ["bfloat16"]
    assert report.output_bytes == os.path.getsize(out)
    assert report.output_bytes < os.path.getsize(path) / 10
    back = read_addon_state_dict(out)
    assert all(torch.equal(back.tensors[k], v.bfloat16()) for k, v in stored["ema"].items())
    with pytest.raises(CheckpointError, match="is also an input"):
        convert([out], out, overwrite=True)


def test_top_level_help_lists_subcommands_even_without_preview(monkeypatch, capsys):
    res = run_cli("--help")
    assert res.returncode == 0 and "convert" in res.stdout and "preview" in res.stdout
    monkeypatch.setitem(sys.modules, "instancediffusion_core.layout.preview", None)   # as if preview.py did not exist
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "convert" in capsys.readouterr().out
    assert cli.main(["preview", "layout.json", "out.png"]) == 1
    assert "preview command is unavailable" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bogus"])
    assert cli.main([]) == 2


def test_preview_subcommand_dispatches(monkeypatch):
    seen = []

    class FakePreview:
        @staticmethod
        def cli_main(argv):
            seen.append(list(argv))
            return 0

    monkeypatch.setitem(sys.modules, "instancediffusion_core.layout.preview", FakePreview)
    assert cli.main(["preview", "a.json", "b.png", "--size", "64x64"]) == 0
    assert seen == [["a.json", "b.png", "--size", "64x64"]]
