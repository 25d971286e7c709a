"""Safe checkpoint reading: every supported format, the streaming, and every kind of bad file."""
from __future__ import annotations

import os
import pickle
import sys
import tracemalloc
import zipfile

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from instdiff_testkit import synthetic_checkpoints as sc
from instancediffusion_core.weights.checkpoint import (
    AddonWeights, CheckpointError, FUSER_SUFFIXES, SD15_FUSER_BLOCKS, addon_group, load_instancediffusion,
    parse_dtype, read_addon_state_dict, save_addons)


def assert_same(got: dict, expected: dict, dtype=None):
    assert set(got) == set(expected)
    for k, v in expected.items():
        want = v if dtype is None else v.to(dtype)
        assert got[k].dtype == want.dtype, k
        assert torch.equal(got[k], want), k


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A synthetic official checkpoint with 8M-value dropped tensors in ``opt`` and ``text_encoder``."""
    path = tmp_path_factory.mktemp("official") / "instancediffusion_sd15.pth"
    stored = sc.write_official_pth(path, big_dropped_values=8_000_000)
    return path, stored


# ------------------------------------------------------------------------------------------------ layout sanity

def test_synthetic_addons_have_the_official_key_layout():
    official = {k for k, _ in sc.official_key_shapes() if sc.is_addon(k)}
    assert set(sc.addon_shapes()) == official
    assert len(official) == 513
    groups = [addon_group(k) for k in official]
    assert groups.count("position_net") == 217 and groups.count("fusers") == 272 and groups.count("scaleu") == 24
    assert {k.split(".transformer_blocks.")[0] for k in official if ".fuser." in k} == set(SD15_FUSER_BLOCKS)
    assert len(sc.base_unet_state_dict()) == 686


# ------------------------------------------------------------------------------------------------ official file

def test_official_file_uses_ema_and_drops_everything_else(official):
    path, stored = official
    w = read_addon_state_dict(path)
    assert w.source_format == "official-pth"
    assert_same(w.tensors, stored["ema"])
    assert not torch.equal(stored["ema"]["scaleu_b_0"], stored["model"]["scaleu_b_0"])  # ema really chosen
    text = "\n".join(w.notes)
    assert "using 'ema'" in text and "686 base-UNet tensors" in text
    assert "opt (3 tensors, 8,000,004 values)" in text and "text_encoder" in text
    assert w.missing_groups == [] and w.warnings == []


def test_official_file_has_the_real_quirks_and_still_loads(official):
    """The synthetic file really has cuda:0 storages and unknown OmegaConf globals (torch.load refuses it)."""
    path, stored = official
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist()[0].startswith("checkpoint_latest/")
        pkl = zf.read("checkpoint_latest/data.pkl")
    assert b"cuda:0" in pkl and b"omegaconf.base" in pkl and b"ContainerMetadata" in pkl and b"_metadata" in pkl
    with pytest.raises(Exception, match="omegaconf|Unsupported global|Weights only load failed"):
        torch.load(path, map_location="cpu", weights_only=True)
    assert "omegaconf" not in sys.modules
    w = read_addon_state_dict(path)
    assert "omegaconf" not in sys.modules                     # placeholders, never imported
    text = "\n".join(w.notes)
    assert "cuda:0" in text and "omegaconf.base.ContainerMetadata" in text and "kept inert" in text
    assert_same(w.tensors, stored["ema"])


def test_official_file_without_ema_uses_model(tmp_path):
    path = tmp_path / "no_ema.pth"
    stored = sc.write_official_pth(path, with_ema=False, location="cpu", inner_folder="archive")
    w = read_addon_state_dict(path)
    assert_same(w.tensors, stored["model"])
    assert "using 'model' (no EMA copy" in "\n".join(w.notes)


def test_ema_without_addons_falls_back_to_model():
    addons = sc.addon_state_dict(6)
    w = read_addon_state_dict({"ema": sc.base_unet_state_dict(1), "model": {**sc.base_unet_state_dict(2), **addons},
                               "iters": 5})
    assert_same(w.tensors, addons)
    assert w.source_format == "official-pth" and "using 'model' ('ema' has no add-on weights)" in w.notes[0]
    assert any("'ema' holds no add-on weights" in n for n in w.warnings)


def test_inner_zip_folder_name_is_arbitrary(tmp_path):
    path = tmp_path / "weights.bin"
    stored = sc.write_official_pth(path, inner_folder="some_run_name_123")
    w = read_addon_state_dict(path)
    assert_same(w.tensors, stored["ema"])
    assert "inner folder 'some_run_name_123'" in w.notes[0]


def test_streaming_reads_only_the_kept_records(official):
    path, stored = official
    w = read_addon_state_dict(path)
    assert len(w.records_read) == len(set(w.records_read)) == 513
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
    kept_bytes = sum(t.numel() * t.element_size() for t in stored["ema"].values())
    assert sum(infos[r].file_size for r in w.records_read) == kept_bytes
    big = [n for n, i in infos.items() if i.file_size == 8_000_000 * 4]
    assert len(big) == 2 and not set(big) & set(w.records_read)   # the opt / text_encoder records: never read


def test_streaming_peak_memory_ignores_dropped_tensors(official):
    """64 MB of dropped tensors in the file; reading allocates about the kept ~1.7 MB (buffers are bytearrays,
    which tracemalloc sees)."""
    path, stored = official
    kept_bytes = sum(t.numel() * t.element_size() for t in stored["ema"].values())
    assert os.path.getsize(path) > 64_000_000
    tracemalloc.start()
    try:
        read_addon_state_dict(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept_bytes <= peak < kept_bytes + 12_000_000


def test_cast_on_read(official):
    path, stored = official
    w = read_addon_state_dict(path, dtype="fp16")
    assert_same(w.tensors, stored["ema"], torch.float16)


# ------------------------------------------------------------------------------------------------ flat state dicts

@pytest.mark.parametrize("prefix", ["", "model.diffusion_model.", "module.", "module.model.diffusion_model."])
def test_flat_state_dict_with_or_without_prefix(tmp_path, prefix):
    addons = sc.addon_state_dict(7)
    sd = {prefix + k: v for k, v in {**sc.base_unet_state_dict(7), **addons}.items()}
    path = tmp_path / "flat.ckpt"
    sc.save_zip({"state_dict": sd, "global_step": 3} if prefix else sd, path)
    w = read_addon_state_dict(path)
    assert w.source_format == "state-dict"
    assert_same(w.tensors, addons)


def test_views_of_shared_storages_are_copied_out(tmp_path):
    addons = sc.addon_state_dict(8)
    shared = torch.arange(12, dtype=torch.float32)
    for k in range(12):
        addons[f"scaleu_s_{k}"] = shared[k:k + 1]                       # 12 views of one storage
    key = "input_blocks.1.1.transformer_blocks.0.fuser.ff.net.2.weight"
    addons[key] = addons[key].t().contiguous().t()                      # non-contiguous view
    assert not addons[key].is_contiguous()
    path = tmp_path / "views.pth"
    sc.save_zip(addons, path)
    w = read_addon_state_dict(path)
    assert_same(w.tensors, addons)
    for k in range(12):
        t = w.tensors[f"scaleu_s_{k}"]
        assert t.untyped_storage().nbytes() == 4                         # not the whole shared storage
    assert w.tensors[key].is_contiguous()
    assert len([r for r in w.records_read]) == len(set(w.records_read))  # shared storage read once


def test_state_dict_objects_are_accepted(official):
    addons = sc.addon_state_dict(9)
    w = read_addon_state_dict({"model.diffusion_model." + k: v for k, v in addons.items()})
    assert_same(w.tensors, addons)
    again = read_addon_state_dict(w)                                    # an AddonWeights is an input too
    assert_same(again.tensors, addons)


# ------------------------------------------------------------------------------------------------ logtd

def test_logtd_files_each_alone(tmp_path):
    paths, addons = sc.write_logtd_files(tmp_path)
    fusers = read_addon_state_dict(paths["fusers"])
    assert fusers.source_format == "logtd-fusers"
    assert_same(fusers.tensors, {k: v for k, v in addons.items() if ".fuser." in k})
    assert fusers.missing_groups == ["position_net", "scaleu"]
    assert any("no position net" in n for n in fusers.warnings)
    posnet = read_addon_state_dict(paths["position_net"])
    assert posnet.source_format == "logtd-position-net"
    assert_same(posnet.tensors, {k: v for k, v in addons.items() if k.startswith("position_net.")})
    scaleu = read_addon_state_dict(paths["scaleu"])
    assert scaleu.source_format == "logtd-scaleu"
    assert_same(scaleu.tensors, {k: v for k, v in addons.items() if k.startswith("scaleu_")})


def test_logtd_files_together_detected_by_content_not_name(tmp_path):
    paths, addons = sc.write_logtd_files(tmp_path)
    renamed = []
    for i, p in enumerate([paths["scaleu"], paths["fusers"], paths["position_net"]]):
        new = tmp_path / f"weights_{i}.bin"
        os.replace(p, new)
        renamed.append(new)
    w = read_addon_state_dict(renamed)
    assert w.source_format == "logtd-scaleu+logtd-fusers+logtd-position-net"
    assert_same(w.tensors, addons)
    assert w.missing_groups == [] and w.warnings == []


def test_logtd_fusers_numbered_by_list_position(tmp_path):
    addons = sc.addon_state_dict(10, groups=("fusers",))
    path = tmp_path / "fusers.ckpt"
    sc.save_zip(sc.logtd_fusers_tree(addons, numbering="ordinal"), path)
    w = read_addon_state_dict(path)
    assert_same(w.tensors, addons)
    assert any("mapped in order" in n for n in w.notes)


def test_duplicate_keys_across_inputs_are_an_error(tmp_path, official):
    paths, _ = sc.write_logtd_files(tmp_path)
    with pytest.raises(CheckpointError, match=r"24 add-on tensors are in both .*instancediffusion_sd15.pth.*scaleu"):
        read_addon_state_dict([official[0], paths["scaleu"]])


# ------------------------------------------------------------------------------------------------ our format

@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_our_safetensors(tmp_path, dtype):
    path = tmp_path / "addons.safetensors"
    sd = sc.write_ours(path, dtype=dtype)
    w = read_addon_state_dict(path)
    assert w.source_format == "instancediffusion-safetensors"
    assert_same(w.tensors, sd)
    assert w.records_read == []


@pytest.mark.parametrize("dtype", [None, "fp16", "bf16"])
def test_save_addons_round_trip(tmp_path, dtype):
    addons = sc.addon_state_dict(11)
    path = tmp_path / "ours.safetensors"
    meta = save_addons(AddonWeights(addons, "official-pth"), path, dtype=dtype, metadata={"note": "test"})
    want = parse_dtype(dtype)
    assert_same(load_file(str(path)), addons, want)                     # the safetensors library reads it
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == meta
    assert meta["format"] == "instancediffusion-addons" and meta["format_version"] == "1"
    assert meta["source_format"] == "official-pth" and meta["note"] == "test"
    assert (meta["position_net_tensors"], meta["fuser_tensors"], meta["fuser_blocks"], meta["scaleu_tensors"]) == \
        ("217", "272", "16", "24")
    assert meta["dtype"] == str(want or torch.float32).replace("torch.", "")
    back = read_addon_state_dict(path)
    assert back.source_format == "instancediffusion-safetensors"
    assert_same(back.tensors, addons, want)


def test_save_addons_rejects_bad_input(tmp_path):
    addons = sc.addon_state_dict(12, groups=("scaleu",))
    with pytest.raises(CheckpointError, match="not InstanceDiffusion add-on keys"):
        save_addons({**addons, "input_blocks.0.0.weight": torch.ones(1)}, tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="must end with .safetensors"):
        save_addons(addons, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="scaleu_s_3' is missing"):
        save_addons({k: v for k, v in addons.items() if k != "scaleu_s_3"}, tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())                                 # nothing half-written


# ------------------------------------------------------------------------------------------------ loading a model

def test_load_instancediffusion_builds_the_addons(official):
    path, stored = official
    addons = load_instancediffusion(path, dtype="fp16")
    summary = addons.summary()
    assert summary["position_net"]["tensors"] == 217 and summary["fusers"]["count"] == 16
    assert summary["scaleu"]["blocks"] == 12 and summary["dtype"] == "float16"
    sd = addons.state_dict()
    assert_same({k: sd[k] for k in stored["ema"]}, stored["ema"], torch.float16)
    assert addons.source_format == "official-pth" and any("using 'ema'" in n for n in addons.load_notes)
    assert not any(p.requires_grad for p in addons.parameters())


def test_partial_weights_policy(tmp_path):
    paths, addons = sc.write_logtd_files(tmp_path)
    with pytest.raises(CheckpointError, match="missing the position net") as err:
        load_instancediffusion(paths["fusers"])
    text = str(err.value)
    assert "fusers 272 tensors" in text and "same folder" in text
    # the advice fits what the user has: the node has no allow_partial switch and takes one file name
    assert "allow_partial=True" not in text and "list of paths" not in text
    with pytest.raises(CheckpointError, match="missing the fusers"):
        load_instancediffusion([paths["position_net"], paths["scaleu"]])
    only_scaleu = load_instancediffusion(paths["scaleu"], allow_partial=True)
    assert only_scaleu.summary()["scaleu"]["blocks"] == 12 and only_scaleu.position_net is None
    no_scaleu = load_instancediffusion([paths["fusers"], paths["position_net"]])   # ScaleU is optional
    assert no_scaleu.summary()["scaleu"]["blocks"] == 0
    assert any("ScaleU will be the identity" in n for n in no_scaleu.load_notes)


# ------------------------------------------------------------------------------------------------ bad files

def test_damaged_groups_are_errors():
    addons = sc.addon_state_dict(13)
    block = "output_blocks.6.1.transformer_blocks.0.fuser."
    with pytest.raises(CheckpointError, match=r"fuser 'output_blocks.6.1.transformer_blocks.0' has 16 of its 17"):
        read_addon_state_dict({k: v for k, v in addons.items() if k != block + "norm2.bias"})
    with pytest.raises(CheckpointError, match="scaleu_b_5' is missing"):
        read_addon_state_dict({k: v for k, v in addons.items() if k != "scaleu_b_5"})
    with pytest.raises(CheckpointError, match="position net is incomplete.*linears_list.3.0.weight"):
        read_addon_state_dict({k: v for k, v in addons.items() if k != "position_net.linears_list.3.0.weight"})
    with pytest.raises(CheckpointError, match="unexpected names"):
        read_addon_state_dict({**addons, block + "attn.to_q.bias": torch.zeros(24)})
    assert len(FUSER_SUFFIXES) == 17


@pytest.mark.parametrize("kind", ["safetensors", "ckpt"])
def test_base_model_is_explained(tmp_path, kind):
    sd = sc.base_model_state_dict()
    path = tmp_path / f"v1-5-pruned-emaonly.{kind}"
    if kind == "safetensors":
        save_file(sd, str(path))
    else:
        sc.save_zip({"state_dict": sd, "global_step": 840000}, path)
    with pytest.raises(CheckpointError) as err:
        read_addon_state_dict(path)
    msg = str(err.value)
    assert "base Stable Diffusion model (686 UNet tensors, 2 VAE/text-encoder" in msg
    assert "0 position_net.*" in msg and "instancediffusion_sd15.pth" in msg and "regular checkpoint loader" in msg


def test_gligen_is_explained(tmp_path):
    path = tmp_path / "gligen_sdxl.safetensors"
    save_file(sc.gligen_state_dict(), str(path))
    with pytest.raises(CheckpointError, match=r"GLIGEN checkpoint, not InstanceDiffusion.*linears_list.*"
                                              r"34 fuser tensors, fuser linear \[16, 2048\].*GLIGENLoader"):
        read_addon_state_dict(path)


def test_truncated_and_corrupt_files(tmp_path, official):
    data = official[0].read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_addon_state_dict(cut)
    # flip bytes inside a record that is kept (its CRC no longer matches)
    with zipfile.ZipFile(official[0]) as zf:
        rec = zf.getinfo(read_addon_state_dict(official[0]).records_read[5])
    with open(official[0], "rb") as f:
        f.seek(rec.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    start = rec.header_offset + 30 + name_len + extra_len
    bad = bytearray(data)
    bad[start:start + 4] = bytes(b ^ 0xFF for b in bad[start:start + 4])
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match="CRC"):
        read_addon_state_dict(corrupt)
    st = tmp_path / "cut.safetensors"
    save_file(sc.addon_state_dict(1, groups=("scaleu",)), str(st))
    st.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_addon_state_dict(st)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"model weights go here\n", "text file, not a checkpoint"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 13600000000\n", "Git LFS pointer"),
    (b"<!DOCTYPE html><html><body>Sign in</body></html>", "HTML"),
    (b'        {"looks": "like a safetensors header but is text"}', "text file"),
    (bytes(range(200, 256)) * 4, "unknown binary format"),
    (b"storages" + bytes(100), "unknown binary format"),   # e.g. the pre-1.6 tar format
])
def test_not_a_checkpoint(tmp_path, content, message):
    path = tmp_path / "instancediffusion_sd15.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_addon_state_dict(path)


def test_other_zip_and_missing_file(tmp_path):
    path = tmp_path / "notes.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_addon_state_dict(path)
    with pytest.raises(CheckpointError, match="no such file"):
        read_addon_state_dict(tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="pass a file path"):
        read_addon_state_dict(42)


# ------------------------------------------------------------------------------------------------ hostile pickles

def test_payloads_are_live(tmp_path):
    """Control: the payloads really run code under a plain unpickler (so the refusals below mean something)."""
    for payload_cls in (sc.SystemPayload, sc.EvalPayload):
        marker = tmp_path / f"control_{payload_cls.__name__}"
        pickle.loads(pickle.dumps(payload_cls(marker)))
        assert marker.exists()


@pytest.mark.parametrize("payload_cls, name", [(sc.SystemPayload, r"(posix|os|nt)\.system"),
                                               (sc.EvalPayload, r"builtins\.eval")])
def test_code_execution_is_refused_without_running(tmp_path, payload_cls, name):
    marker = tmp_path / "pwned"
    path = tmp_path / "instancediffusion_sd15.pth"
    sc.write_hostile_official(path, payload_cls(marker))
    with pytest.raises(CheckpointError, match=rf"refused - the pickle references '{name}'.*Nothing from the file "
                                              rf"was executed"):
        read_addon_state_dict(path)
    assert not marker.exists()
    raw = tmp_path / "raw.ckpt"
    sc.write_raw_pickle(raw, payload_cls(marker))
    with pytest.raises(CheckpointError, match="bare pickle"):
        read_addon_state_dict(raw)
    assert not marker.exists()


def test_unknown_modules_are_never_imported(tmp_path, monkeypatch):
    imported, called = tmp_path / "imported", tmp_path / "called"
    module = sc.make_importable_module(tmp_path, "instdiff_evil_mod", imported, called)
    path = tmp_path / "official.pth"
    sc.write_hostile_official(path, sc.CallPayload(module.boom))
    flat = tmp_path / "flat.pth"
    sc.save_zip({**sc.addon_state_dict(1, groups=("scaleu",)), "scaleu_b_0": sc.CallPayload(module.boom)}, flat)
    imported.unlink()
    del sys.modules["instdiff_evil_mod"]
    monkeypatch.syspath_prepend(str(tmp_path))                           # importable, if anyone tried
    w = read_addon_state_dict(path)                                      # payload in a dropped entry: inert
    assert any("instdiff_evil_mod.boom" in n for n in w.notes)
    with pytest.raises(CheckpointError, match="'scaleu_b_0' is not a plain tensor"):
        read_addon_state_dict(flat)                                      # payload where a weight should be
    assert "instdiff_evil_mod" not in sys.modules
    assert not imported.exists() and not called.exists()


def test_parse_dtype():
    assert parse_dtype("keep") is None and parse_dtype(None) is None
    assert parse_dtype("fp16") is torch.float16 and parse_dtype("BF16") is torch.bfloat16
    assert parse_dtype(torch.float32) is torch.float32
    with pytest.raises(ValueError, match="'int8' is not supported; use 'fp16'"):
        parse_dtype("int8")
