"""The shipped workflows (workflows/*.json, UI format) against the running ComfyUI with our pack.

For every workflow: each node type exists; saved inputs/outputs/widgets_values fit the nodes' CURRENT definitions
(as `/object_info` reports them, laid out the way the frontend does); links join matching types; and the
workflow, converted to an API prompt the way the frontend converts it and shrunk (2 steps, 1/8 size), runs
through ComfyUI's PromptExecutor on the tiny checkpoint and produces images. Deliberately broken copies show that
a node change (bad value, renamed input, new widget, dropped choice, retyped link) fails these checks.

Workflows with AnimateDiff-Evolved nodes (``ADE_*``: frames_animatediff_context) load that pack into the host first,
read-only (``comfy_harness.load_animatediff_evolved``), and are skipped with the reason where it is absent. They use
no motion model, so they run through the executor like the others (no weights the tests cannot provide).
"""
from __future__ import annotations

import copy
import glob
import json
import os

import numpy as np
import pytest
from PIL import Image

from instdiff_testkit import comfy_harness
from instdiff_testkit import tiny_models
from instdiff_testkit import workflow_convert as wc

WORKFLOW_DIR = os.path.join(comfy_harness.REPO_ROOT, "workflows")
WORKFLOWS = sorted(glob.glob(os.path.join(WORKFLOW_DIR, "*.json")))
REQUIRED = {"boxes_cat_dog_robin", "masks", "points_palm", "scribbles", "multi_instance_sampler",
            "layout_from_json", "iterative_editing", "refiner_cascade"}

CKPT = "v1-5-pruned-emaonly.safetensors"
REFINER = "sd_xl_refiner_1.0.safetensors"
WEIGHTS = "instancediffusion_sd15_addons.safetensors"
MASK_IMAGE = "example.png"        # ships in every ComfyUI's input folder; the test provides one with a painted mask
# The only file names a shipped workflow may use, by the widget that picks them.
PROVIDED_FILES = {"ckpt_name": {CKPT, REFINER}, "weights": {WEIGHTS}, "image": {MASK_IMAGE}}
OFFICIAL_NEGATIVE = ("longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, "
                     "cropped, worst quality, low quality")
SAMPLERS = ("KSampler", "InstanceDiffusionKSampler")
TEST_STEPS = {"KSampler": 2, "InstanceDiffusionKSampler": 3}   # 3 x mis 0.36 -> 1 phase-1 step: both MIS phases run


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _name(path):
    return os.path.splitext(os.path.basename(path))[0]


def _of_type(workflow, type_):
    return [n for n in workflow["nodes"] if n["type"] == type_]


def _values(node):
    return wc.widget_values_by_name(node, comfy_harness.object_info(node["type"]))


def _masked_rgba(size=512):
    """An RGBA picture whose transparent disc is what Load Image turns into a mask (mask = 1 - alpha)."""
    yy, xx = np.mgrid[:size, :size]
    alpha = np.where((xx - 300) ** 2 + (yy - 380) ** 2 < 60 ** 2, 0, 255).astype(np.uint8)
    rgb = np.full((size, size, 3), 128, np.uint8)
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


@pytest.fixture(scope="module")
def provided_files(pack, tiny_checkpoint, models_dir, comfy_host):
    """The files the workflows name, in the harness's temporary folders: the tiny checkpoint under both checkpoint
    names, tiny add-on weights sized for its UNet, an input picture with a painted mask, and the official demo
    layouts (for Load Layout's file list)."""
    import comfy.sd
    from safetensors.torch import save_file

    for name in (CKPT, REFINER):
        link = os.path.join(models_dir["checkpoints"], name)
        if not os.path.lexists(link):
            os.symlink(tiny_checkpoint["path"], link)
    weights = os.path.join(models_dir["instance_diffusion"], WEIGHTS)
    if not os.path.exists(weights):
        model, *_ = comfy.sd.load_checkpoint_guess_config(tiny_checkpoint["path"], output_vae=False,
                                                          output_clip=False)
        fuser_widths, scaleu_widths, _ctx = tiny_models.unet_topology(model)
        save_file(tiny_models.tiny_addon_state_dict(fuser_widths, scaleu_widths, seed=5), weights)
    inputs = comfy_host["dirs"]["input"]
    _masked_rgba().save(os.path.join(inputs, MASK_IMAGE))
    layouts = os.path.join(inputs, "layouts")
    os.makedirs(layouts, exist_ok=True)
    demos = os.path.join(comfy_harness.REPO_ROOT, "tests", "fixtures", "layouts", "official-demos")
    for f in os.listdir(demos):
        with open(os.path.join(demos, f), "rb") as src, open(os.path.join(layouts, f), "wb") as dst:
            dst.write(src.read())
    return {"checkpoints": [CKPT, REFINER], "instance_diffusion": [WEIGHTS], "input": [MASK_IMAGE]}


@pytest.fixture(scope="module")
def executor(comfy_nodes):
    """One executor for the module, like a running server: the checkpoint loads once for all workflows."""
    return comfy_harness._new_executor(comfy_harness.ServerStub())


def shrink_for_test(prompt: dict) -> dict:
    """Fewer steps and 1/8 of the image size, in the API prompt only (never in the shipped file)."""
    out = copy.deepcopy(prompt)
    for entry in out.values():
        inputs = entry["inputs"]
        if entry["class_type"] in TEST_STEPS and not isinstance(inputs.get("steps"), list):
            inputs["steps"] = TEST_STEPS[entry["class_type"]]
        if entry["class_type"] == "EmptyLatentImage":
            for key in ("width", "height"):
                inputs[key] = max(64, inputs[key] // 8 // 8 * 8)
    return out


# ------------------------------------------------------------------------------------------------ the set

def test_every_required_workflow_is_shipped():
    assert REQUIRED <= {_name(p) for p in WORKFLOWS}, f"missing: {REQUIRED - {_name(p) for p in WORKFLOWS}}"


# ------------------------------------------------------------------------------------------------ per workflow

AD_EVOLVED_PREFIX = "ADE_"          # AnimateDiff-Evolved's node types


def _needs_ad_evolved(workflow):
    return any(n["type"].startswith(AD_EVOLVED_PREFIX) for n in workflow["nodes"])


@pytest.fixture(params=WORKFLOWS, ids=[_name(p) for p in WORKFLOWS])
def workflow(request):
    data = _load(request.param)
    if _needs_ad_evolved(data):
        request.getfixturevalue("pack")
        ok, why = comfy_harness.load_animatediff_evolved(request.getfixturevalue("comfy_host")["base"])
        if not ok:
            pytest.skip(f"{_name(request.param)} needs {comfy_harness.AD_EVOLVED_PACK}: {why}")
    return data


def test_is_ui_format(workflow):
    assert workflow["version"] == 0.4
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra"):
        assert key in workflow
    for link in workflow["links"]:
        assert len(link) == 6 and isinstance(link[5], str), link


def test_every_node_type_exists(workflow, pack):
    import nodes

    missing = {n["type"] for n in workflow["nodes"]
               if n["type"] not in wc.VIRTUAL_NODE_TYPES and n["type"] not in nodes.NODE_CLASS_MAPPINGS}
    assert not missing, f"node types not registered in this ComfyUI: {missing}"


def test_widgets_inputs_and_links_fit_current_definitions(workflow, provided_files):
    problems = wc.check_workflow(workflow, comfy_harness.object_info)
    assert problems == [], "\n".join(problems)


def test_uses_only_the_documented_file_names(workflow):
    for node in workflow["nodes"]:
        if node["type"] in wc.VIRTUAL_NODE_TYPES:
            continue
        for widget, value in _values(node).items():
            if widget in PROVIDED_FILES:
                assert value in PROVIDED_FILES[widget], (node["id"], widget, value)


def test_has_a_note_on_weights_and_knobs(workflow):
    notes = [n["widgets_values"][0] for n in _of_type(workflow, "Note")]
    assert notes, "every workflow explains itself in a Note node"
    text = "\n".join(notes)
    for needle in ("models/checkpoints", "models/instance_diffusion", "instdiff_cli.py convert",
                   WEIGHTS, "cfg 7.5", "0.8"):
        assert needle in text, f"the Note does not mention {needle!r}"


def test_layout_is_previewed(workflow):
    """Every workflow with a layout draws it: Layout Preview -> (image nodes) -> Preview Image."""
    links = wc._links(workflow)
    reached = {n["id"] for n in _of_type(workflow, "InstanceLayoutPreview")}
    assert reached, "no Layout Preview node"
    while True:
        more = {b for a, _s, b, _t, _ty in links.values() if a in reached} - reached
        if not more:
            break
        reached |= more
    assert reached & {n["id"] for n in _of_type(workflow, "PreviewImage")}


def test_official_knobs(workflow):
    """Defaults of the official README: alpha 0.8, cfg 7.5, 50 steps, official negative prompt, seed fixed."""
    for node in _of_type(workflow, "ApplyUniFusion"):
        assert _values(node) == {"strength": 1.0, "start": 0.0, "end": 0.8}
    conds = {n["id"] for n in _of_type(workflow, "InstanceDiffusionConditioning")}
    links = wc._links(workflow)
    samplers = [n for t in SAMPLERS for n in _of_type(workflow, t)
                if any(links[i["link"]][0] in conds for i in n["inputs"] if i["name"] == "positive")]
    if not samplers and _of_type(workflow, "InstanceDiffusionMISGuider"):
        return              # the custom-sampling path: checked by test_official_sampler_nodes_are_wired_as_...
    assert samplers, "no sampler takes the InstanceDiffusion positive"
    for node in samplers:
        v = _values(node)
        assert (v["steps"], v["cfg"], v["denoise"]) == (50, 7.5, 1.0)
        negative = next(i for i in node["inputs"] if i["name"] == "negative")
        neg_node = next(n for n in workflow["nodes"] if n["id"] == links[negative["link"]][0])
        assert _values(neg_node)["text"] == OFFICIAL_NEGATIVE
        control = node["widgets_values"][1]
        assert control == "fixed", "seed control must stay fixed so a run repeats (and A/B branches match)"
    for node in _of_type(workflow, "InstanceDiffusionKSampler"):
        assert _values(node)["mis"] == 0.36


def test_official_sampler_nodes_are_wired_as_the_official_run(workflow):
    """Where the custom-sampling path is used: MIS guider at cfg 7.5 / mis 0.36 on the grounded positive, the
    official PLMS sampler, and the official schedule at 50 steps, all into one SamplerCustomAdvanced."""
    runs = _of_type(workflow, "SamplerCustomAdvanced")
    guiders = _of_type(workflow, "InstanceDiffusionMISGuider")
    if not guiders:
        pytest.skip("this workflow does not use the custom-sampling nodes")
    links = wc._links(workflow)
    by_id = {n["id"]: n for n in workflow["nodes"]}

    def source(node, name):
        inp = next(i for i in node["inputs"] if i["name"] == name)
        return by_id[links[inp["link"]][0]]

    for guider in guiders:
        assert {k: _values(guider)[k] for k in ("cfg", "mis")} == {"cfg": 7.5, "mis": 0.36}
        assert source(guider, "positive")["type"] == "InstanceDiffusionConditioning"
        assert _values(source(guider, "negative"))["text"] == OFFICIAL_NEGATIVE
    assert runs
    for run in runs:
        assert source(run, "guider")["type"] == "InstanceDiffusionMISGuider"
        assert source(run, "sampler")["type"] == "InstanceDiffusionPLMSSampler"
        sched = source(run, "sigmas")
        assert sched["type"] == "InstanceDiffusionOfficialSchedule"
        assert {k: _values(sched)[k] for k in ("steps", "denoise")} == {"steps": 50, "denoise": 1.0}


def test_runs_through_the_executor(workflow, provided_files, executor, run_prompt):
    prompt = shrink_for_test(wc.to_api_prompt(workflow, comfy_harness.object_info))
    result = run_prompt(prompt, executor=executor)
    saved = [nid for nid, e in prompt.items() if e["class_type"] == "SaveImage"]
    previews = [nid for nid, e in prompt.items() if e["class_type"] == "PreviewImage"]
    assert saved and previews
    for nid in saved + previews:
        files = result["images"].get(nid)
        assert files, f"node {nid} ({prompt[nid]['class_type']}) produced no image"
        with Image.open(files[0]) as im:
            pixels = np.asarray(im.convert("RGB"), dtype=np.float32)
        assert pixels.std() > 0, f"node {nid}: a flat image"
    latent = next(e["inputs"] for e in prompt.values() if e["class_type"] == "EmptyLatentImage")
    with Image.open(result["images"][saved[0]][0]) as im:
        assert im.height == latent["height"]


def test_animatediff_workflow_samples_through_context_windows(pack, comfy_host):
    """frames_animatediff_context: Use Evolved Sampling with Context Options (windows shorter than the batch) is the
    KSampler's model, on top of the InstanceDiffusion-patched model, with no motion model; the track has as many
    frames as the batch."""
    path = os.path.join(WORKFLOW_DIR, "frames_animatediff_context.json")
    wf = _load(path)
    ok, why = comfy_harness.load_animatediff_evolved(comfy_host["base"])
    if not ok:
        pytest.skip(f"frames_animatediff_context needs {comfy_harness.AD_EVOLVED_PACK}: {why}")
    links = wc._links(wf)
    by_id = {n["id"]: n for n in wf["nodes"]}

    def source(node, name):
        inp = next(i for i in node["inputs"] if i["name"] == name)
        return by_id[links[inp["link"]][0]] if inp["link"] is not None else None

    (ks,) = _of_type(wf, "KSampler")
    evolved = source(ks, "model")
    assert evolved["type"] == "ADE_UseEvolvedSampling"
    assert source(evolved, "model")["type"] == "ApplyScaleU"
    assert source(evolved, "m_models") is None                       # no motion model: nothing to download
    ctx = source(evolved, "context_options")
    assert ctx["type"] == "ADE_StandardStaticContextOptions"
    batch = _values(source(ks, "latent_image"))["batch_size"]
    assert _values(ctx)["context_length"] < batch
    (track,) = _of_type(wf, "InstanceTrackKeyframes")
    assert _values(track)["frames"] == batch
    note = _of_type(wf, "Note")[0]["widgets_values"][0]
    assert comfy_harness.AD_EVOLVED_PACK in note and "motion model" in note.lower()


# ------------------------------------------------------------------------------------------------ conversion rules

def test_widget_layout_follows_the_frontend(pack):
    """Seeds get a control value, `control_after_generate: False` suppresses it, uploads add a button value."""
    layout = {t: [(s.name, s.kind) for s in wc.widget_slots(comfy_harness.object_info(t))]
              for t in ("KSampler", "LoadImage", "InstanceLayoutPlanner")}
    assert layout["KSampler"][:2] == [("seed", "value"), ("seed", "control")]
    assert [n for n, k in layout["KSampler"] if k == "value"] == ["seed", "steps", "cfg", "sampler_name",
                                                                 "scheduler", "denoise"]
    assert layout["LoadImage"] == [("image", "value"), ("upload", "upload")]
    assert ("seed", "value") in layout["InstanceLayoutPlanner"]
    assert ("seed", "control") not in layout["InstanceLayoutPlanner"]


def test_linked_widget_becomes_a_link_in_the_prompt(provided_files):
    """layout_from_json drives the global prompt's text from Load Layout's caption output."""
    wf = _load(os.path.join(WORKFLOW_DIR, "layout_from_json.json"))
    prompt = wc.to_api_prompt(wf, comfy_harness.object_info)
    load_id = next(nid for nid, e in prompt.items() if e["class_type"] == "LoadInstanceLayout")
    texts = [e["inputs"]["text"] for e in prompt.values() if e["class_type"] == "CLIPTextEncode"]
    assert [load_id, 1] in texts
    assert all("_meta" in e and e["class_type"] for e in prompt.values())
    assert not any(e["class_type"] in wc.VIRTUAL_NODE_TYPES for e in prompt.values())


def test_bypassed_mask_instance_is_passed_through_then_runs_when_enabled(provided_files, executor, run_prompt):
    """masks.json ships 'Instance: Mask' bypassed (it needs a painted mask): the layout goes around it; enabled,
    it appends the Load Image mask to the corgi layout and the whole graph still runs."""
    wf = _load(os.path.join(WORKFLOW_DIR, "masks.json"))
    (mask_node,) = _of_type(wf, "InstanceMask")
    assert mask_node["mode"] == wc.MODE_BYPASS
    prompt = wc.to_api_prompt(wf, comfy_harness.object_info)
    load_id = next(nid for nid, e in prompt.items() if e["class_type"] == "LoadInstanceLayout")
    assert str(mask_node["id"]) not in prompt
    assert all(e["inputs"]["layout"] == [load_id, 0] for e in prompt.values()
               if e["class_type"] in ("InstanceDiffusionConditioning", "InstanceLayoutPreview"))

    enabled = copy.deepcopy(wf)
    next(n for n in enabled["nodes"] if n["id"] == mask_node["id"])["mode"] = wc.MODE_ALWAYS
    prompt = wc.to_api_prompt(enabled, comfy_harness.object_info)
    assert prompt[str(mask_node["id"])]["inputs"]["mask"][1] == 1          # Load Image's MASK output
    result = run_prompt(shrink_for_test(prompt), executor=executor)
    assert result["images"]


def test_reroute_and_primitive_nodes_convert_like_the_frontend(provided_files):
    """A Reroute in a link and a PrimitiveNode feeding a widget give the same prompt as the direct graph."""
    wf = _load(os.path.join(WORKFLOW_DIR, "boxes_cat_dog_robin.json"))
    before = wc.to_api_prompt(wf, comfy_harness.object_info)
    (ks,) = _of_type(wf, "KSampler")
    model_in = next(i for i in ks["inputs"] if i["name"] == "model")
    lid = model_in["link"]
    link = next(l for l in wf["links"] if l[0] == lid)
    rr_id, prim_id = wf["last_node_id"] + 1, wf["last_node_id"] + 2
    new_l1, new_l2 = wf["last_link_id"] + 1, wf["last_link_id"] + 2
    wf["nodes"].append({"id": rr_id, "type": "Reroute", "pos": [0, 0], "size": [75, 26], "flags": {}, "order": 0,
                        "mode": 0, "inputs": [{"name": "", "type": "*", "link": lid}],
                        "outputs": [{"name": "", "type": "MODEL", "links": [new_l1]}],
                        "properties": {"showOutputText": False, "horizontal": False}})
    link[3], link[4] = rr_id, 0
    wf["links"].append([new_l1, rr_id, 0, ks["id"], ks["inputs"].index(model_in), "MODEL"])
    model_in["link"] = new_l1
    steps_in = next(i for i in ks["inputs"] if i["name"] == "steps")
    wf["nodes"].append({"id": prim_id, "type": "PrimitiveNode", "pos": [0, 0], "size": [210, 82], "flags": {},
                        "order": 0, "mode": 0, "outputs": [{"name": "INT", "type": "INT", "links": [new_l2],
                                                            "widget": {"name": "steps"}}],
                        "properties": {"Run widget replace on values": False}, "widgets_values": [37, "fixed"]})
    wf["links"].append([new_l2, prim_id, 0, ks["id"], ks["inputs"].index(steps_in), "INT"])
    steps_in["link"] = new_l2
    wf["last_node_id"], wf["last_link_id"] = prim_id, new_l2
    assert wc.check_workflow(wf, comfy_harness.object_info) == []
    after = wc.to_api_prompt(wf, comfy_harness.object_info)
    assert after[str(ks["id"])]["inputs"]["steps"] == 37
    after[str(ks["id"])]["inputs"]["steps"] = before[str(ks["id"])]["inputs"]["steps"]
    assert after == before


# ------------------------------------------------------------------------------------------------ breakage is caught

def _broken_copy(name="boxes_cat_dog_robin.json"):
    return _load(os.path.join(WORKFLOW_DIR, name))


def _node(wf, type_):
    return _of_type(wf, type_)[0]


def _set_widget(wf, type_, widget, value):
    node = _node(wf, type_)
    slots = wc.widget_slots(comfy_harness.object_info(type_))
    index = next(i for i, s in enumerate(slots) if s.name == widget and s.kind == "value")
    node["widgets_values"][index] = value
    return node


@pytest.mark.parametrize("type_, widget, value, expect", [
    ("ApplyUniFusion", "end", 1.5, "above its maximum"),
    ("KSampler", "steps", 12.5, "whole number"),
    ("KSampler", "sampler_name", "plms", "not one of the current choices"),
    ("CheckpointLoaderSimple", "ckpt_name", "sd15-not-installed.safetensors", "not one of the current choices"),
    ("InstanceBox", "prompt", 7, "must be text"),
])
def test_a_bad_widget_value_fails_validation(provided_files, type_, widget, value, expect):
    wf = _broken_copy()
    node = _set_widget(wf, type_, widget, value)
    problems = wc.check_workflow(wf, comfy_harness.object_info)
    assert any(f"node {node['id']} " in p and widget in p and expect in p for p in problems), problems
    with pytest.raises(wc.WorkflowError):
        wc.to_api_prompt(wf, comfy_harness.object_info)


def test_comfyui_itself_rejects_the_out_of_range_value(provided_files):
    """Without our checks the same broken value still fails ComfyUI's own validation: the checks agree with it."""
    wf = _broken_copy()
    node = _set_widget(wf, "ApplyUniFusion", "end", 1.5)
    ok, _error, _outputs, node_errors = comfy_harness.validate_prompt(
        wc.to_api_prompt(wf, comfy_harness.object_info, check=False))
    assert not ok and str(node["id"]) in node_errors


def _changed_definitions(type_, change):
    """object_info where one node's definition was changed like a node update would change it."""
    def info(node_type):
        data = copy.deepcopy(comfy_harness.object_info(node_type))
        if node_type == type_:
            change(data)
        return data
    return info


def _rename_input(old, new):
    def change(data):
        for section in ("required", "optional"):
            inputs = data["input"].get(section, {})
            if old in inputs:
                data["input"][section] = {new if k == old else k: v for k, v in inputs.items()}
                data["input_order"][section] = [new if k == old else k for k in data["input_order"][section]]
    return change


def _insert_widget_first(data):
    req = data["input"]["required"]
    data["input"]["required"] = {"guidance": ("FLOAT", {"default": 1.0}), **req}
    data["input_order"]["required"] = ["guidance"] + data["input_order"]["required"]


def _retype_output(data):
    data["output"] = ["MODEL"]


@pytest.mark.parametrize("type_, change, expect", [
    ("InstanceBox", _rename_input("prompt", "text"), "input 'prompt' does not exist any more"),
    ("InstanceDiffusionConditioning", _rename_input("layout", "instances"), "input 'layout' does not exist"),
    ("ApplyUniFusion", _insert_widget_first, "widgets_values saved"),
    ("InstanceLayout", _retype_output, "output 0 is saved as INSTANCE_LAYOUT"),
], ids=["renamed-widget", "renamed-socket", "new-widget", "retyped-output"])
def test_a_node_change_breaks_the_check(provided_files, type_, change, expect):
    wf = _broken_copy()
    problems = wc.check_workflow(wf, _changed_definitions(type_, change))
    assert any(expect in p for p in problems), problems


def test_a_link_between_wrong_types_fails(provided_files):
    wf = _broken_copy()
    cond = _node(wf, "InstanceDiffusionConditioning")
    ckpt = _node(wf, "CheckpointLoaderSimple")
    layout_in = next(i for i in cond["inputs"] if i["name"] == "layout")
    link = next(l for l in wf["links"] if l[0] == layout_in["link"])
    link[1], link[2], link[5] = ckpt["id"], 1, "CLIP"             # CLIP output into the layout input
    ckpt["outputs"][1]["links"].append(link[0])
    problems = wc.check_workflow(wf, comfy_harness.object_info)
    assert any("output type CLIP" in p and "'layout'" in p for p in problems), problems


def test_an_unknown_node_type_fails(provided_files):
    wf = _broken_copy()
    _node(wf, "ApplyScaleU")["type"] = "ApplyScaleU_Renamed"
    problems = wc.check_workflow(wf, comfy_harness.object_info)
    assert any("'ApplyScaleU_Renamed' is not registered" in p for p in problems), problems


# ------------------------------------------------------------------------------------------------ additive changes pass
# A host update that only adds to a core node (ComfyUI 0.26 gave SaveImage and PreviewImage an IMAGE output; nodes
# gain optional inputs all the time) still loads every saved workflow in the frontend: the checks must accept it and
# keep failing on a missing node type, a wrong widget value and a broken link.

def _append_output(type_name):
    def change(data):
        data["output"] = list(data["output"]) + [type_name]
        data["output_name"] = list(data.get("output_name") or data["output"][:-1]) + [type_name]
        data["output_is_list"] = list(data.get("output_is_list") or [False] * (len(data["output"]) - 1)) + [False]
    return change


def _add_optional(name, spec):
    def change(data):
        data["input"].setdefault("optional", {})[name] = spec
        data.setdefault("input_order", {}).setdefault("optional", []).append(name)
    return change


def _both(*changes):
    def change(data):
        for c in changes:
            c(data)
    return change


@pytest.mark.parametrize("type_, change", [
    ("SaveImage", _append_output("IMAGE")),
    ("PreviewImage", _append_output("IMAGE")),
    ("InstanceLayoutPreview", _append_output("MASK")),
    ("KSampler", _add_optional("sigmas_hint", ("SIGMAS",))),
    ("KSampler", _add_optional("shift", ("FLOAT", {"default": 1.5, "min": 0.0, "max": 10.0}))),
    ("CheckpointLoaderSimple", _both(_add_optional("weight_dtype", (["default", "fp8"],)), _append_output("LATENT"))),
], ids=["SaveImage-output", "PreviewImage-output", "our-node-output", "optional-socket", "optional-widget",
        "optional-combo+output"])
def test_an_additive_node_change_passes(provided_files, type_, change):
    wf = _broken_copy()
    infos = _changed_definitions(type_, change)
    assert wc.check_workflow(wf, infos) == []
    prompt = wc.to_api_prompt(wf, infos)
    (node,) = [e for e in prompt.values() if e["class_type"] == type_]
    assert "sigmas_hint" not in node["inputs"]                  # an unconnected new socket is not sent
    if type_ == "KSampler" and "shift" in infos("KSampler")["input"]["optional"]:
        assert node["inputs"]["shift"] == 1.5                   # a new widget is sent with its default, as the frontend
    if type_ == "CheckpointLoaderSimple":
        assert node["inputs"]["weight_dtype"] == "default"


def test_a_workflow_saved_before_image_outputs_passes_on_this_host(provided_files):
    """SaveImage/PreviewImage saved without outputs (ComfyUI < 0.26) pass whether this host has the IMAGE output."""
    wf = _broken_copy()
    for node in wf["nodes"]:
        if node["type"] in ("SaveImage", "PreviewImage"):
            node["outputs"] = []
    assert wc.check_workflow(wf, comfy_harness.object_info) == []


def _append_required_widget(data):
    data["input"]["required"]["shift"] = ("FLOAT", {"default": 1.0})
    data["input_order"]["required"].append("shift")


def _drop_last_output(data):
    data["output"] = list(data["output"])[:-1]


def _add_required_socket(data):
    data["input"]["required"]["vae"] = ("VAE",)
    data["input_order"]["required"].append("vae")


@pytest.mark.parametrize("type_, change, expect", [
    ("KSampler", _append_required_widget, "7 widgets_values saved"),       # required: the workflow must set it
    ("CheckpointLoaderSimple", _drop_last_output, "3 outputs saved, the node now has 2"),
    ("KSampler", _add_required_socket, "the node now has an input 'vae'"),
], ids=["new-required-widget", "removed-output", "new-required-socket"])
def test_a_non_additive_node_change_still_fails(provided_files, type_, change, expect):
    problems = wc.check_workflow(_broken_copy(), _changed_definitions(type_, change))
    assert any(expect in p for p in problems), problems


def _tolerant_infos():
    """Definitions with every kind of additive change at once: breakages must still show through them."""
    changes = {"SaveImage": _append_output("IMAGE"), "KSampler": _add_optional("shift", ("FLOAT", {"default": 1.0})),
               "InstanceBox": _add_optional("weight", ("FLOAT", {"default": 1.0}))}

    def info(node_type):
        data = copy.deepcopy(comfy_harness.object_info(node_type))
        if node_type in changes:
            changes[node_type](data)
        return data
    return info


def _missing_node_type(wf):
    _node(wf, "InstanceDiffusionConditioning")["type"] = "InstanceDiffusionConditioningFromAnotherPack"
    return "'InstanceDiffusionConditioningFromAnotherPack' is not registered"


def _wrong_widget_value(wf):
    ks = _node(wf, "KSampler")
    ks["widgets_values"][ks["widgets_values"].index("ipndm")] = "plms"
    return "'sampler_name' is 'plms', not one of the current choices"


def _link_to_a_deleted_node(wf):
    wf["nodes"] = [n for n in wf["nodes"] if n["type"] != "VAEDecode"]
    return "joins a node that does not exist"


def _input_holds_an_unknown_link(wf):
    next(i for i in _node(wf, "KSampler")["inputs"] if i["name"] == "model")["link"] = 9999
    return "refers to link 9999 which does not exist"


def _output_forgets_its_link(wf):
    _node(wf, "ApplyScaleU")["outputs"][0]["links"] = []
    return "output 0 does not list this link"


@pytest.mark.parametrize("breakage", [_missing_node_type, _wrong_widget_value, _link_to_a_deleted_node,
                                      _input_holds_an_unknown_link, _output_forgets_its_link],
                         ids=["missing-node-type", "wrong-widget-value", "link-to-deleted-node",
                              "input-holds-unknown-link", "output-forgets-link"])
def test_a_breakage_fails_despite_additive_changes(provided_files, breakage):
    infos = _tolerant_infos()
    wf = _broken_copy()
    assert wc.check_workflow(wf, infos) == []
    expect = breakage(wf)
    problems = wc.check_workflow(wf, infos)
    assert any(expect in p for p in problems), problems
    with pytest.raises(wc.WorkflowError):
        wc.to_api_prompt(wf, infos)
