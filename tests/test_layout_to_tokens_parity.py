"""The whole input path: a Layout built from the fixture's scenario -> build_grounding -> position net must give
the OFFICIAL tokens for every config (the module test feeds the fixture's tensors; this one builds them)."""
from __future__ import annotations

import json
import os

import pytest
import torch

from instdiff_testkit import parity
from instdiff_testkit import recipe
from instancediffusion_core.layout.grounding import build_grounding
from instancediffusion_core.model.position_net import DropFlags, PositionNet
from instdiff_testkit.parity_scenario import scenario_layout

TOL = 1e-4
PDIR = parity.parity_dir()
if not os.path.isfile(os.path.join(PDIR, "scenario.json")):
    pytest.skip(f"parity fixtures not found in {PDIR}", allow_module_level=True)


@pytest.fixture(scope="module")
def setup():
    with open(os.path.join(PDIR, "scenario.json")) as f:
        scenario = json.load(f)
    inputs = parity.load_inputs(PDIR)
    if any(float(m.sum()) < 128 for m in inputs["grounding.seg_masks"]):
        pytest.skip("a mask under 128 px: the official polygon sampler draws random pixels there")
    prefix = "position_net."
    sd = recipe.recipe_state_dict(PDIR, select=lambda k: k.startswith(prefix))
    net = PositionNet.from_state_dict({k[len(prefix):]: v for k, v in sd.items()}).eval()
    layout = scenario_layout(scenario)
    n = len(layout.instances)
    text = inputs["grounding.positive_embeddings"][0, :n]
    return net, build_grounding(layout, text), parity.load_meta(PDIR), parity.load_expected(PDIR)


@pytest.mark.parametrize("config", parity.load_meta(PDIR)["posnet_configs"])
def test_layout_to_tokens_matches_official(setup, config):
    net, g, meta, expected = setup
    with torch.no_grad():
        tokens, _ = net(g, DropFlags(**parity.drop_config(meta, config)))
    err = (tokens[0] - expected[f"posnet.{config}.objs"][0]).abs().max().item()
    parity.report(f"layout->tokens {config}", err, TOL)
    assert err <= TOL
