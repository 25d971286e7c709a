"""Non-finite FLOAT inputs through real ComfyUI (issue #16 item 9).

ComfyUI checks a FLOAT widget with ``val < min`` / ``val > max``, which NaN passes: before the check at the node,
``strength=NaN`` "succeeded" with a black image and ``end=NaN`` failed inside the sampler naming neither node nor
field. Every FLOAT input of these nodes now goes through ``nodes.validation.finite`` with the widget's own bounds:
the error names the node's title and the field. (+-inf is already refused by ComfyUI's min/max check on these
widgets, all of which have both bounds; the direct calls show the node refuses it too.)
"""
from __future__ import annotations

import math
import re

import pytest

from instdiff_testkit import comfy_harness
from instdiff_testkit.graph_nodes import provider, sink
from instdiff_testkit.host_fixtures import StubClip

# node key -> its FLOAT fields with a valid value each, and the widget bounds they are checked against
FLOATS = {
    "ApplyUniFusion": {"strength": 1.0, "start": 0.0, "end": 0.8},
    "InstanceDiffusionKSampler": {"cfg": 5.0, "denoise": 1.0, "mis": 0.36},
    "InstanceDiffusionMISGuider": {"cfg": 5.0, "mis": 0.36},
    "InstanceDiffusionOfficialSchedule": {"denoise": 1.0},
}
CASES = [(key, field) for key, fields in FLOATS.items() for field in fields]


@pytest.fixture
def graph_nodes(pack, tiny_sd15, instdiff, monkeypatch):
    import nodes

    clip = StubClip()
    assets = provider("FiniteTestAssets", ("MODEL", "INSTANCEDIFFUSION", "CONDITIONING", "CONDITIONING"),
                      (tiny_sd15, instdiff, clip.encode("a scene"), clip.encode("")))
    monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, "FiniteTestAssets", assets)
    monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, "FiniteTestSink", sink(
        "FiniteTestSink", {"model": "MODEL", "guider": "GUIDER", "sigmas": "SIGMAS", "latent": "LATENT"}))


def _graph(key: str, **floats) -> dict:
    """Node "3" is ``key`` with ``floats`` over the valid values; "1" provides its inputs, "9" takes its output."""
    values = {**FLOATS[key], **floats}
    assets = {"class_type": "FiniteTestAssets", "inputs": {}}
    if key == "ApplyUniFusion":
        node = {"model": ["1", 0], "instdiff": ["1", 1]}
        sink = {"model": ["3", 0]}
    elif key == "InstanceDiffusionKSampler":
        node = {"model": ["1", 0], "seed": 0, "steps": 1, "sampler_name": "euler", "scheduler": "normal",
                "positive": ["1", 2], "negative": ["1", 3], "latent_image": ["2", 0], "merge": "mean",
                "max_batch": 4}
        sink = {"latent": ["3", 0]}
    elif key == "InstanceDiffusionMISGuider":
        node = {"model": ["1", 0], "positive": ["1", 2], "negative": ["1", 3], "merge": "mean", "max_batch": 4}
        sink = {"guider": ["3", 0]}
    else:
        node = {"model": ["1", 0], "steps": 2}
        sink = {"sigmas": ["3", 0]}
    return {"1": assets,
            "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "3": {"class_type": key, "inputs": {**node, **values}},
            "9": {"class_type": "FiniteTestSink", "inputs": sink}}


@pytest.mark.parametrize("key", list(FLOATS))
def test_the_test_graph_runs_with_finite_values(graph_nodes, run_prompt, key):
    run_prompt(_graph(key))                      # the graph is sound: a failure below is the value's


@pytest.mark.parametrize("key,field", CASES)
def test_nan_that_comfyui_lets_through_is_refused_naming_node_and_field(graph_nodes, run_prompt, pack, key, field):
    title = pack.NODE_DISPLAY_NAME_MAPPINGS[key]
    with pytest.raises(comfy_harness.PromptError) as err:
        run_prompt(_graph(key, **{field: math.nan}))
    first = str(err.value).splitlines()[0]
    assert first.startswith(f"node 3 ({key}) raised ValueError"), first
    assert f"{title}: {field} is nan; it must be a finite number" in first, first


@pytest.mark.parametrize("value", [math.inf, -math.inf])
@pytest.mark.parametrize("key,field", CASES)
def test_infinity_never_reaches_the_sampler(graph_nodes, run_prompt, key, field, value):
    with pytest.raises(comfy_harness.PromptError) as err:
        run_prompt(_graph(key, **{field: value}))
    text = str(err.value)
    assert f"node 3 ({key})" in text and field in text and "inf" in text, text.splitlines()[:3]


def _call(node, key, **floats):
    """The node's function called directly (no ComfyUI validation): non-float inputs are placeholders, since the
    finite checks come before anything reads them."""
    v = {**FLOATS[key], **floats}
    n = node[key]
    if key == "ApplyUniFusion":
        return n.apply(None, None, v["strength"], v["start"], v["end"])
    if key == "InstanceDiffusionKSampler":
        return n.sample(None, 0, 1, v["cfg"], "euler", "normal", None, None, None, v["denoise"], v["mis"], "mean", 4)
    if key == "InstanceDiffusionMISGuider":
        return n.get_guider(None, None, None, v["cfg"], v["mis"], "mean", 4)
    return n.get_sigmas(None, 2, v["denoise"])


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "0.5", None])
@pytest.mark.parametrize("key,field", CASES)
def test_direct_call_refuses_non_finite_and_non_numbers(node, pack, key, field, value):
    title = re.escape(pack.NODE_DISPLAY_NAME_MAPPINGS[key])
    with pytest.raises(ValueError, match=rf"^{title}: {field} is .*; it must be a "):
        _call(node, key, **{field: value})


def _widget_bounds(pack, key, field):
    kind, opts = pack.NODE_CLASS_MAPPINGS[key].INPUT_TYPES()["required"][field]
    assert kind == "FLOAT"
    return opts["min"], opts["max"]


def test_every_float_widget_of_these_nodes_is_covered(pack):
    for key in FLOATS:
        spec = pack.NODE_CLASS_MAPPINGS[key].INPUT_TYPES()
        floats = {name for part in spec.values() for name, (kind, *_) in part.items() if kind == "FLOAT"}
        assert floats == set(FLOATS[key]), key


@pytest.mark.parametrize("key,field", CASES)
def test_direct_call_checks_the_widget_bounds_and_no_narrower(node, pack, key, field):
    title = pack.NODE_DISPLAY_NAME_MAPPINGS[key]
    low, high = _widget_bounds(pack, key, field)
    for outside in (low - 0.5, high + 0.5):
        with pytest.raises(ValueError, match=rf"^{re.escape(title)}: {field} is {outside:g}; it must be between "
                                             rf"{low:g} and {high:g}$"):
            _call(node, key, **{field: outside})
    for edge in (low, high):             # accepted by the check: the call goes on to the placeholder inputs
        try:
            _call(node, key, **{field: edge})
        except Exception as e:                                         # noqa: BLE001 - any later failure is fine
            assert not str(e).startswith(f"{title}: {field}"), e


def test_end_before_start_names_the_node(node):
    with pytest.raises(ValueError, match=r"^Apply UniFusion \(InstanceDiffusion\): end \(0.2\) is before start "
                                         r"\(0.5\)"):
        _call(node, "ApplyUniFusion", start=0.5, end=0.2)
