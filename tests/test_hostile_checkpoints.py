"""Tiny hostile weight files that run no code but would exhaust memory or CPU, or change the loader (issue #16).

Every file is built here (``instdiff_testkit.synthetic_checkpoints``): a few KB each, read in well under a second
by the fixed reader. Memory is measured with tracemalloc (the reader's buffers are bytearrays / bytes, which it
sees); nothing asserts wall-clock time except as a ratio of two sizes measured in one run.
"""
from __future__ import annotations

import collections
import os
import time
import tracemalloc

import pytest

from instdiff_testkit.timing import per_call_seconds
import torch

from instdiff_testkit import synthetic_checkpoints as sc
from instancediffusion_core.weights import safe_pickle
from instancediffusion_core.weights.checkpoint import CheckpointError, read_addon_state_dict
from instancediffusion_core.weights.key_groups import strip_prefixes

MB = 1 << 20


def peak_bytes(fn):
    """(result or exception, peak bytes traced while ``fn`` ran)."""
    tracemalloc.start()
    try:
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - returned to the test
            out = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak


def scaleu_file(path, lie=None, records=None):
    tree, recs = sc.scaleu_specs(lie)
    recs.update(records or {})
    return sc.write_torch_zip(path, sc.torch_pickle(tree), recs)




# ------------------------------------------------------------------------------------------------ unbounded repr

def test_short_repr_of_a_shared_list_dag_is_bounded():
    from instancediffusion_core.weights.errors import short_repr

    dag = sc.shared_list_dag(40)                    # repr would be 2**40 items long
    text = short_repr(dag, 80)
    assert len(text) <= 80 and text.startswith("[[")
    assert short_repr(10 ** 5000).startswith("<int of")
    assert len(short_repr("x" * 10_000_000, 50)) <= 50
    od = collections.OrderedDict((str(i), [i] * 1000) for i in range(1000))
    assert len(short_repr(od, 100)) <= 100


def test_a_shared_list_dag_where_a_weight_should_be_is_refused_quickly(tmp_path):
    """1.7 KB file: the old error message formatted repr(value) first, which never finished."""
    path = tmp_path / "dag.pth"
    sc.save_zip({**sc.addon_state_dict(1, groups=("scaleu",)), "scaleu_b_0": sc.shared_list_dag(40)}, path)
    assert os.path.getsize(path) < 8192
    with pytest.raises(CheckpointError, match=r"'scaleu_b_0' is not a plain tensor in the file \(\[\[\["):
        read_addon_state_dict(path)


def test_a_tuple_dag_as_a_dict_key_is_refused(tmp_path):
    """Hashing a 40-level tuple DAG (a dict key) is 2**40 steps inside one opcode; keys must be shallow."""
    key: tuple = ()
    for _ in range(40):
        key = (key, key)
    path = tmp_path / "dagkey.pth"
    sc.write_torch_zip(path, b"\x80\x02}" + sc.pickle_ops(key) + b"K\x01s.", {})   # {key: 1}, never hashed here
    with pytest.raises(CheckpointError, match="dict key or set item is a tuple nested"):
        read_addon_state_dict(path)


def test_str_of_a_dag_is_refused(tmp_path):
    """REDUCE builtins.str(dag): str of a container is its repr, which never finishes for a shared DAG."""
    pkl = b"\x80\x02cbuiltins\nstr\n" + sc.pickle_ops(sc.shared_list_dag(40)) + b"\x85R."
    path = tmp_path / "str.pth"
    sc.write_torch_zip(path, pkl, {})
    with pytest.raises(CheckpointError, match=r"malformed pickle: str\("):
        read_addon_state_dict(path)


# ------------------------------------------------------------------------------------------------ memory

def test_a_zero_stride_view_is_not_expanded_into_a_huge_tensor(tmp_path):
    """One float viewed as 2**26 (the issue: 2**28 = 1 GiB) by stride 0: refused instead of copied out."""
    path = tmp_path / "expanded.pth"
    addons = sc.addon_state_dict(2, groups=("scaleu",))
    addons["scaleu_b_0"] = torch.ones(1).expand(2 ** 26)
    sc.save_zip(addons, path)
    assert os.path.getsize(path) < 64 * 1024
    with pytest.raises(CheckpointError, match=r"expanded \(zero-stride or overlapping\) view.*268,435,456 bytes"):
        read_addon_state_dict(path)


def test_overlapping_strides_beyond_the_storage_are_refused(tmp_path):
    path = tmp_path / "overlap.pth"
    scaleu_file(path, lie={"scaleu_b_0": sc.TensorSpec("0", (4096, 32), stride=(0, 1), numel=32)})
    with pytest.raises(CheckpointError, match="131,072 elements but its storage holds 32"):
        read_addon_state_dict(path)


def test_a_zip_record_claiming_1_gib_is_refused_before_allocating(tmp_path):
    """Pickle and zip headers both claim 1 GiB for a 128-byte record: checked against the real file first."""
    gib = 1 << 30
    real = b"\0" * 128
    lie = sc.ZipEntry("archive/data/0", real, file_size=gib, compress_size=gib)
    path = tmp_path / "claims.pth"
    scaleu_file(path, lie={"scaleu_b_0": sc.TensorSpec("0", (gib // 4,))}, records={"0": lie})
    out, peak = peak_bytes(lambda: read_addon_state_dict(path))
    assert isinstance(out, CheckpointError) and "past the end" in str(out), out
    assert peak < 32 * MB


def test_a_deflated_record_cannot_claim_more_than_deflate_can_expand(tmp_path):
    gib = 1 << 30
    lie = sc.ZipEntry("archive/data/0", sc.deflate([b"\0" * 4096]), method=8, file_size=gib)
    path = tmp_path / "ratio.pth"
    scaleu_file(path, lie={"scaleu_b_0": sc.TensorSpec("0", (gib // 4,))}, records={"0": lie})
    out, peak = peak_bytes(lambda: read_addon_state_dict(path))
    assert isinstance(out, CheckpointError) and "more than deflate can expand" in str(out), out
    assert peak < 32 * MB


def test_decompression_is_bounded_by_the_declared_size(tmp_path):
    """A deflated record declared as 128 bytes whose stream inflates to 64 MB: only 128 bytes are inflated."""
    stream = sc.deflate(b"\0" * MB for _ in range(64))
    assert len(stream) < MB
    entry = sc.ZipEntry("archive/data/0", stream, method=8, file_size=128, crc=sc.zlib.crc32(b"\0" * 128))
    path = tmp_path / "inflate.pth"
    scaleu_file(path, records={"0": entry})
    out, peak = peak_bytes(lambda: read_addon_state_dict(path))
    assert not isinstance(out, Exception), out
    assert torch.equal(out.tensors["scaleu_b_0"], torch.zeros(32))
    assert peak < 16 * MB


def test_a_pickle_of_100_million_none_opcodes_is_refused_unread(tmp_path):
    """458 KB on disk, 100 MB of pickle: refused by its declared size (the old reader added ~674 MB)."""
    pkl = sc.deflate([b"\x80\x02"] + [b"N" * MB] * 100 + [b"."])
    path = tmp_path / "nones.pth"
    sc.write_raw_zip(path, [sc.ZipEntry("archive/data.pkl", pkl, method=8, file_size=2 + 100 * MB + 1,
                                        crc=0)])
    out, peak = peak_bytes(lambda: read_addon_state_dict(path))
    assert isinstance(out, CheckpointError) and "MAX_PICKLE_BYTES" in str(out), out
    assert peak < 16 * MB


def test_opcode_count_and_time_are_bounded(tmp_path, monkeypatch):
    path = tmp_path / "many_ops.pth"
    sc.write_torch_zip(path, b"\x80\x02" + b"N" * 200_000 + b"}.", {})
    monkeypatch.setattr(safe_pickle, "MAX_PICKLE_OPS", 50_000, raising=False)
    with pytest.raises(CheckpointError, match=r"more than 50,000 opcodes \(MAX_PICKLE_OPS"):
        read_addon_state_dict(path)
    monkeypatch.setattr(safe_pickle, "MAX_PICKLE_OPS", 10_000_000, raising=False)
    monkeypatch.setattr(safe_pickle, "MAX_PICKLE_SECONDS", 0.0, raising=False)
    with pytest.raises(CheckpointError, match=r"took more than 0 s \(MAX_PICKLE_SECONDS"):
        read_addon_state_dict(path)


def test_a_length_inside_the_pickle_is_checked_before_allocating(tmp_path):
    """BYTEARRAY8 of 2**36 bytes in a 20-byte pickle: refused before the bytearray is made."""
    pkl = b"\x80\x05\x96" + (1 << 36).to_bytes(8, "little") + b"."
    path = tmp_path / "bytearray.pth"
    sc.write_torch_zip(path, pkl, {})
    out, peak = peak_bytes(lambda: read_addon_state_dict(path))
    assert isinstance(out, CheckpointError) and "asks for 68,719,476,736 more bytes" in str(out), out
    assert peak < 16 * MB


# ------------------------------------------------------------------------------------------------ raw exceptions

@pytest.mark.parametrize("spec", ids=["numel0", "offset", "stride"], argvalues=[
    sc.TensorSpec("0", (0, 2 ** 64), stride=(1, 1), numel=32),    # numel 0, a size no int64 holds
    sc.TensorSpec("0", (32,), offset=2 ** 70, numel=32),
    sc.TensorSpec("0", (32,), stride=(2 ** 63,), numel=32),
])
def test_sizes_beyond_int64_are_checkpoint_errors(tmp_path, spec):
    path = tmp_path / "overflow.pth"
    scaleu_file(path, lie={"scaleu_b_0": spec})
    with pytest.raises(CheckpointError, match="malformed pickle"):
        read_addon_state_dict(path)


def test_a_storage_size_that_disagrees_with_its_record_is_refused_at_parse_time(tmp_path):
    path = tmp_path / "numel.pth"
    scaleu_file(path, lie={"scaleu_b_0": sc.TensorSpec("0", (32,), numel=2 ** 70)})
    with pytest.raises(CheckpointError, match="malformed pickle: storage size"):
        read_addon_state_dict(path)
    scaleu_file(path, lie={"scaleu_b_0": sc.TensorSpec("0", (32,), numel=64)})
    with pytest.raises(CheckpointError, match=r"declared as 64 x FloatStorage = 256 bytes but its record in the zip "
                                              r"holds 128"):
        read_addon_state_dict(path)


# ------------------------------------------------------------------------------------------------ the loader itself

@pytest.mark.parametrize("target", ["torch._utils\n_rebuild_tensor_v2", "collections\nOrderedDict",
                                    "torch\nfloat32", "copyreg\n_reconstructor"],
                         ids=["rebuild_tensor", "OrderedDict", "dtype", "reconstructor"])
def test_state_is_never_applied_to_allow_listed_functions_or_classes(tmp_path, target):
    """BUILD with (None, {'__defaults__': ...}) on an allow-listed global would setattr on the loader's own
    function (for the life of the process); only placeholders and ordered dicts take state."""
    before = {f: f.__defaults__ for f in (safe_pickle._rebuild_tensor, safe_pickle._safe_reconstructor)}
    state = sc.pickle_ops((None, {"__defaults__": (True, "pwned", None), "__doc__": "pwned"}))
    pkl = b"\x80\x02c" + target.encode() + b"\n" + state + b"b."
    path = tmp_path / "build.pth"
    sc.write_torch_zip(path, pkl, {})
    try:
        with pytest.raises(CheckpointError, match=r"applies state \(BUILD\)"):
            read_addon_state_dict(path)
        assert {f: f.__defaults__ for f in before} == before
        assert safe_pickle._rebuild_tensor.__doc__ != "pwned"
    finally:
        for f, defaults in before.items():
            f.__defaults__ = defaults


def test_metadata_state_on_ordered_dicts_still_loads(tmp_path):
    """nn.Module.state_dict()'s '_metadata' is the one BUILD real checkpoints need."""
    path = tmp_path / "meta.pth"
    addons = sc.addon_state_dict(3, groups=("scaleu",))
    sc.save_zip(sc.with_metadata(addons), path)
    assert set(read_addon_state_dict(path).tensors) == set(addons)


def test_a_name_twice_in_the_zip_is_refused(tmp_path):
    """zipfile silently uses the last of two records with one name; which one torch meant is a guess."""
    tree, records = sc.scaleu_specs()
    twin = sc.ZipEntry("archive/data/0", b"\x01" * 128)
    path = tmp_path / "twice.pth"
    sc.write_torch_zip(path, sc.torch_pickle(tree), records, extra_entries=[twin])
    with pytest.raises(CheckpointError, match=r"holds 1 names twice \(e.g. 'archive/data/0'\)"):
        read_addon_state_dict(path)


def test_unknown_classes_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(safe_pickle, "MAX_INERT_GLOBALS", 8, raising=False)
    pkl = b"\x80\x02(" + b"".join(b"cmod%d\nCls\n" % i for i in range(20)) + b"l."
    path = tmp_path / "classes.pth"
    sc.write_torch_zip(path, pkl, {})
    with pytest.raises(CheckpointError, match="more than 8 different unknown classes"):
        read_addon_state_dict(path)


def test_stripping_key_prefixes_is_linear():
    """A key of n 'module.' prefixes: stripping by repeated slicing was O(n^2)."""
    small, big = "module." * 20_000 + "scaleu_b_0", "module." * 160_000 + "scaleu_b_0"
    assert strip_prefixes(big) == "scaleu_b_0"
    ratio = per_call_seconds(lambda: strip_prefixes(big)) / per_call_seconds(lambda: strip_prefixes(small))
    assert ratio < 24, f"8x longer key took {ratio:.1f}x as long (quadratic would be 64x)"


def test_the_official_layout_still_reads_with_every_guard(tmp_path):
    path = tmp_path / "instancediffusion_sd15.pth"
    stored = sc.write_official_pth(path)
    w = read_addon_state_dict(path)
    assert set(w.tensors) == set(stored["ema"])
    assert all(torch.equal(w.tensors[k], v) for k, v in stored["ema"].items())
