"""Core modules vs the OFFICIAL InstanceDiffusion outputs (fixture README sections 3-4), float32 on CPU.

Every size, config and case list comes from the fixture's meta.json; the weights are regenerated from the
recipe (only the tensors each case needs) and cached for the session.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from instdiff_testkit import parity
from instdiff_testkit import recipe
from instancediffusion_core.model.addons import InstanceDiffusionAddons
from instancediffusion_core.model.position_net import DropFlags, PositionNet
from instancediffusion_core.model.scaleu import scaleu

TOL = 1e-4

if not parity.available():
    pytest.skip(f"parity fixtures not found in {parity.parity_dir()}", allow_module_level=True)

META = parity.load_meta()
SCALEU_CASES = [(case["block"], grid) for case in META["scaleu"] for grid in case["grids"]]


@pytest.fixture(scope="session")
def pdir():
    return parity.parity_dir()


@pytest.fixture(scope="session")
def inputs(pdir):
    return parity.load_inputs(pdir)


@pytest.fixture(scope="session")
def expected(pdir):
    return parity.load_expected(pdir)


@pytest.fixture(scope="session")
def grounding(inputs):
    return parity.grounding_from_inputs(inputs)


@pytest.fixture(scope="session")
def posnet(pdir):
    sd = recipe.recipe_state_dict(pdir, select=lambda k: k.startswith("position_net."))
    net = PositionNet.from_state_dict({k[len("position_net."):]: v for k, v in sd.items()}).eval()
    return net


@pytest.fixture(scope="session")
def fuser_addons(pdir):
    """Addons holding only the fusers of the fixture's fuser cases (built through the official key names)."""
    blocks = tuple(f"{case['block']}." for case in META["fusers"])
    sd = recipe.recipe_state_dict(pdir, select=lambda k: ".fuser." in k and k.startswith(blocks))
    return InstanceDiffusionAddons.from_state_dict(sd).eval()


@pytest.fixture(scope="session")
def scaleu_addons(pdir):
    blocks = {case["block"] for case in META["scaleu"]}
    pattern = re.compile(r"^scaleu_[bs]_(\d+)$")
    sd = recipe.recipe_state_dict(pdir, select=lambda k: (m := pattern.match(k)) is not None
                                  and int(m.group(1)) in blocks)
    return InstanceDiffusionAddons.from_state_dict(sd)


def _check(name, got, want, tol=TOL):
    err = parity.max_abs_err(got, want)
    parity.report(name, err, tol)
    assert err <= tol, f"{name}: max abs error {err:.3e} > {tol:.0e}"


# ---------------------------------------------------------------------------------------------------- recipe

def test_recipe_reproduces_readme_check_values(pdir):
    assert int(recipe.splitmix64(np.zeros(1, dtype=np.uint64))[0]) == 0xE220A8397B1DCDAF
    entries, seed = recipe.recipe_entries(pdir), recipe.recipe_seed(pdir)
    assert len(entries) == META["n_tensors"]
    checks = re.findall(r"tensor (\d+) \(`([^`]+)`\) starts ([-0-9.e]+), ([-0-9.e]+)", META["check_values"])
    assert checks, "meta.json check_values could not be parsed"
    for t, key, v0, v1 in checks:
        t = int(t)
        assert entries[t]["key"] == key
        got = recipe.recipe_tensor(entries[t], t, seed).flatten()[:2].tolist()
        assert got == [float(v0), float(v1)], (key, got)


def test_recipe_chunks_equal_one_pass(pdir, monkeypatch):
    entries, seed = recipe.recipe_entries(pdir), recipe.recipe_seed(pdir)
    t = next(i for i, e in enumerate(entries) if 1000 < np.prod(e["shape"]) < 200_000)
    whole = recipe.recipe_tensor(entries[t], t, seed)
    monkeypatch.setattr(recipe, "CHUNK", 777)
    assert torch.equal(recipe.recipe_tensor(entries[t], t, seed), whole)


# ---------------------------------------------------------------------------------------------- position net

@pytest.mark.parametrize("config", META["posnet_configs"])
def test_position_net_matches_official(posnet, grounding, expected, config):
    drop = DropFlags(**parity.drop_config(META, config))
    with torch.no_grad():
        objs, drop_box_mask = posnet(grounding, drop)
    _check(f"posnet.{config}.objs", objs, expected[f"posnet.{config}.objs"])
    assert drop_box_mask == bool(expected[f"posnet.{config}.drop_box_mask"].item())


def test_position_net_convnext_out_matches_official(posnet, grounding, expected):
    with torch.no_grad():
        feats = posnet.seg_features(grounding["segs"])
    _check("posnet.convnext_out", feats, expected["posnet.convnext_out"])


def test_null_tokens_equal_the_null_batch_element(posnet, grounding, expected):
    """Batch element 1 is the all-zero (CFG-uncond) input: null_tokens() must reproduce it for every config."""
    null = posnet.null_tokens(batch=1)
    for config in META["posnet_configs"]:
        _check(f"posnet.{config}.objs[null] via null_tokens", null[0], expected[f"posnet.{config}.objs"][1])


# ---------------------------------------------------------------------------------------------------- fusers

@pytest.mark.parametrize("case", META["fusers"], ids=[c["name"] for c in META["fusers"]])
def test_fuser_matches_official(fuser_addons, inputs, expected, case):
    prefixes = [p for p in fuser_addons.fuser_prefixes if p.startswith(case["block"] + ".")]
    assert len(prefixes) == 1, prefixes
    fuser = fuser_addons.fuser(prefixes[0])
    assert fuser.query_dim == case["width"]
    x = inputs[f"fuser.{case['name']}.x"]
    objs = expected[f"posnet.{case['objs_config']}.objs"]
    with torch.no_grad():
        out = fuser(x, objs, scale=case["scale"])
    want = expected[f"fuser.{case['name']}.out"]
    if case["scale"] == 0:
        assert out is x and torch.equal(out, want)
        parity.report(f"fuser.{case['name']}.out", 0.0, 0.0)
    else:
        _check(f"fuser.{case['name']}.out", out, want)


# ---------------------------------------------------------------------------------------------------- ScaleU

@pytest.mark.parametrize("block,grid", SCALEU_CASES, ids=[f"{b}-{g}" for b, g in SCALEU_CASES])
def test_scaleu_matches_official(scaleu_addons, inputs, expected, block, grid):
    h, hs = inputs[f"scaleu.{block}.{grid}.h"], inputs[f"scaleu.{block}.{grid}.hs"]
    case = next(c for c in META["scaleu"] if c["block"] == block)
    assert list(h.shape[-2:]) == case["grids"][grid] and scaleu_addons.scaleu_widths()[block] == h.shape[1]
    out = torch.cat(scaleu_addons.apply_scaleu(block, h, hs), dim=1)
    _check(f"scaleu.{block}.{grid}.out", out, expected[f"scaleu.{block}.{grid}.out"])
    b, s = getattr(scaleu_addons, f"scaleu_b_{block}"), getattr(scaleu_addons, f"scaleu_s_{block}")
    assert torch.equal(torch.cat(scaleu(h, hs, b, s), dim=1), out)
