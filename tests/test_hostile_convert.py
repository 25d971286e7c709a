"""The converter and its CLI on careless and hostile input (issue #16): it never destroys its input or files it
did not create, writes only files that build a model, and reports failures without a traceback."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from instdiff_testkit import synthetic_checkpoints as sc
from instancediffusion_core import __main__ as cli
from instancediffusion_core.weights.checkpoint import CheckpointError, load_instancediffusion, save_addons
from instancediffusion_core.weights.convert import convert

FUSER = "input_blocks.1.1.transformer_blocks.0.fuser."


def ours(path, seed=4, **replace):
    sd = sc.addon_state_dict(seed)
    sd.update(replace)
    save_file(sd, str(path))
    return sd


def run(capsys, *args):
    rc = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ------------------------------------------------------------------------------------------------ own files

def test_an_input_named_like_the_temporary_file_survives(tmp_path, capsys):
    """``convert m.safetensors.partial m.safetensors``: the old writer used '<out>.partial' and truncated it."""
    src = tmp_path / "m.safetensors.partial"
    sd = ours(src)
    before = src.read_bytes()
    rc, out, err = run(capsys, "convert", src, tmp_path / "m.safetensors")
    assert rc == 0, err
    assert src.read_bytes() == before
    got = load_file(str(tmp_path / "m.safetensors"))
    assert set(got) == set(sd) and all(torch.equal(got[k], v) for k, v in sd.items())


def test_an_unrelated_partial_file_is_never_deleted(tmp_path, capsys):
    src, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    ours(src)
    keep = tmp_path / "out.safetensors.partial"
    keep.write_bytes(b"somebody else's download")
    assert run(capsys, "convert", src, out)[0] == 0
    assert keep.read_bytes() == b"somebody else's download"
    # and when the conversion fails half-way, only the converter's own temporary file goes
    bad = tmp_path / "bad.safetensors"
    ours(bad, **{FUSER + "alpha_attn": torch.zeros(4)})
    rc, _, err = run(capsys, "convert", bad, tmp_path / "out2.safetensors")
    assert rc == 1 and "gates" in err
    assert keep.read_bytes() == b"somebody else's download"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors", "in.safetensors", "out.safetensors",
                                                          "out.safetensors.partial"]


def test_the_output_keeps_the_usual_permissions(tmp_path, capsys):
    src, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    ours(src)
    assert run(capsys, "convert", src, out)[0] == 0
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
def test_output_equal_to_an_input_is_refused(tmp_path, capsys, spelling):
    src = tmp_path / "w.safetensors"
    ours(src)
    before = src.read_bytes()
    out = {"same": src, "dotted": tmp_path / "." / "w.safetensors"}.get(spelling)
    if spelling == "symlink":
        out = tmp_path / "link.safetensors"
        os.symlink(src, out)
    elif spelling == "hardlink":
        out = tmp_path / "hard.safetensors"
        os.link(src, out)
    rc, _, err = run(capsys, "convert", src, out, "--overwrite")
    assert rc == 1 and "is also an input" in err and "Traceback" not in err
    assert src.read_bytes() == before


def test_a_directory_as_output_is_an_error_without_traceback(tmp_path, capsys):
    src = tmp_path / "in.safetensors"
    ours(src)
    folder = tmp_path / "out.safetensors"
    folder.mkdir()
    rc, _, err = run(capsys, "convert", src, folder, "--overwrite")
    assert rc == 1 and "is a directory" in err
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_an_unwritable_folder_is_an_error_without_traceback(tmp_path, capsys):
    src = tmp_path / "in.safetensors"
    ours(src)
    rc, _, err = run(capsys, "convert", src, tmp_path / "missing" / "out.safetensors")
    assert rc == 1 and "does not exist" in err


# ------------------------------------------------------------------------------------------------ shapes

@pytest.mark.parametrize("name, replace, message", ids=["heads", "gate", "scaleu", "ff", "context"], argvalues=[
    ("heads", {k: sc.value(k, s, 0) for k, s in
               ((FUSER + k, s) for k, s in sc.fuser_shapes(12).items())}, "not divisible by n_heads=8"),
    ("gate", {FUSER + "alpha_dense": torch.zeros(3)}, "gates alpha_attn and alpha_dense are scalars"),
    ("scaleu", {"scaleu_s_4": torch.zeros(3)}, "scaleu_s_4 hold one value"),
    ("ff", {FUSER + "ff.net.2.weight": torch.zeros(16, 16)}, "ff.net.2.weight"),
    ("context", {k: sc.value(k, s, 0) for k, s in
                 ((FUSER + k, s) for k, s in sc.fuser_shapes(16, context=12).items())}, "different widths"),
])
def test_shapes_that_cannot_build_a_model_are_never_written(tmp_path, capsys, name, replace, message):
    src, out = tmp_path / f"{name}.safetensors", tmp_path / "out.safetensors"
    ours(src, **replace)
    rc, _, err = run(capsys, "convert", src, out)
    assert rc == 1 and message in err, err
    assert not out.exists()
    with pytest.raises(CheckpointError, match="model|scalars"):            # the loader says the same, no RuntimeError
        load_instancediffusion(src)
    with pytest.raises(CheckpointError):
        save_addons({**sc.addon_state_dict(4), **replace}, tmp_path / "direct.safetensors")
    assert not (tmp_path / "direct.safetensors").exists()


def test_logtd_fusers_with_impossible_shapes_are_refused(tmp_path):
    addons = sc.addon_state_dict(5, groups=("fusers",))
    addons["output_blocks.3.1.transformer_blocks.0.fuser.alpha_attn"] = torch.zeros(2, 2)
    path = tmp_path / "fusers.ckpt"
    sc.save_zip(sc.logtd_fusers_tree(addons), path)
    with pytest.raises(CheckpointError, match="output_blocks.3.1.transformer_blocks.0.fuser.alpha_attn' has shape "
                                              r"\[2, 2\]"):
        convert([path], tmp_path / "out.safetensors", allow_partial=True)
    assert not (tmp_path / "out.safetensors").exists()


def test_an_expanded_tensor_never_becomes_a_big_output_file(tmp_path, capsys):
    src = tmp_path / "expanded.pth"
    sd = sc.addon_state_dict(6)
    sd["scaleu_b_0"] = torch.ones(1).expand(2 ** 24)
    sc.save_zip(sd, src)
    rc, _, err = run(capsys, "convert", src, tmp_path / "out.safetensors")
    assert rc == 1 and "expanded" in err
    assert not (tmp_path / "out.safetensors").exists()


def test_valid_files_still_convert_and_load(tmp_path):
    src, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    ours(src)
    report = convert([src], out, dtype="fp16")
    assert report.counts["fusers"]["tensors"] == 272
    assert load_instancediffusion(out).summary()["dtype"] == "float16"
