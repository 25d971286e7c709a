"""Layout-building nodes, Load Layout / Layout Preview, and the weights loader, inside real ComfyUI."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from instdiff_testkit import comfy_harness
from instdiff_testkit import tiny_models


def test_every_node_has_description_category_and_input_tooltips(pack):
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert getattr(cls, "DESCRIPTION", ""), f"{key} has no DESCRIPTION"
        assert cls.CATEGORY.startswith("instance_diffusion"), key
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                opts = entry[1] if len(entry) > 1 else {}
                assert opts.get("tooltip"), f"{key}.{name} has no tooltip"


def test_chained_instance_nodes_build_a_new_layout_each_time(node, pack_core):
    (empty,) = node["InstanceLayout"].make(256, 128)
    (one,) = node["InstanceBox"].add(empty, "a cat", 10, 20, 50, 40)["result"]
    (two,) = node["InstancePoint"].add(one, "a bird", 200, 30)
    (three,) = node["InstanceScribble"].add(two, "a snake", "10,100 60,110\n120,100")
    assert len(empty.instances) == 0 and len(one.instances) == 1, "inputs must never be modified (ComfyUI caches)"
    assert [i.caption for i in three.instances] == ["a cat", "a bird", "a snake"]
    assert three.instances[0].bbox == (10.0, 20.0, 60.0, 60.0)
    assert three.instances[2].scribble == ((10.0, 100.0), (60.0, 110.0), (120.0, 100.0))


def test_mask_node_checks_size_and_emptiness(node, pack_core):
    (layout,) = node["InstanceLayout"].make(64, 48)
    mask = torch.zeros(1, 48, 64)
    mask[0, 10:20, 5:30] = 1.0
    (out,) = node["InstanceMask"].add(layout, "a rug", mask, 0)
    assert out.instances[0].mask.sum() == 10 * 25
    with pytest.raises(ValueError, match=r"mask is 32x48 px but the layout canvas is 64x48"):
        node["InstanceMask"].add(layout, "a rug", torch.ones(1, 48, 32), 0)
    with pytest.raises(ValueError, match="empty"):
        node["InstanceMask"].add(layout, "a rug", torch.zeros(1, 48, 64), 0)


def test_any_node_mixes_modalities_and_names_bad_fields(node):
    (layout,) = node["InstanceLayout"].make(128, 128)
    (out,) = node["InstanceAny"].add(layout, "a kite", box="10,10,40,30", point="30,20", scribble="10,10 50,40")["result"]
    inst = out.instances[0]
    assert inst.bbox == (10.0, 10.0, 50.0, 40.0) and inst.point == (30.0, 20.0) and len(inst.scribble) == 2
    with pytest.raises(ValueError, match="instance 0 box: expected 4 numbers"):
        node["InstanceAny"].add(layout, "a kite", box="10,10,40")
    with pytest.raises(ValueError, match="instance 0"):
        node["InstanceBox"].add(layout, "", 0, 0, 10, 10)            # empty caption


def test_thirty_instances_max(node):
    (layout,) = node["InstanceLayout"].make(512, 512)
    for i in range(30):
        (layout,) = node["InstancePoint"].add(layout, f"thing {i}", 10 + i * 10, 10)
    with pytest.raises(ValueError, match="at most 30"):
        node["InstancePoint"].add(layout, "one too many", 5, 5)


def test_load_layout_from_text_and_preview(node):
    doc = {"caption": "two things", "width": 200, "height": 100,
           "annos": [{"caption": "left", "bbox": [10, 10, 50, 50]}, {"caption": "right", "bbox": [150, 20, 190, 90]}]}
    out = node["LoadInstanceLayout"].load("(use json_text)", json.dumps(doc), "auto", False)
    layout, caption, report = out["result"]
    assert out["ui"]["instdiff_warnings"] == report.splitlines()    # the report also shows on the node
    assert caption == "two things" and len(layout.instances) == 2
    assert "xyxy" in report                           # [150, 20, 190, 90] cannot be x, y, w, h on a 200 px canvas
    (img,) = node["InstanceLayoutPreview"].draw(layout)
    assert img.shape == (1, 100, 200, 3) and img.dtype == torch.float32
    (img2,) = node["InstanceLayoutPreview"].draw(layout, torch.zeros(2, 50, 100, 3))
    assert img2.shape == (2, 50, 100, 3)
    with pytest.raises(ValueError):
        node["LoadInstanceLayout"].load("(use json_text)", '{"width": 10,', "auto", False)


def test_loader_lists_registered_folder_and_refuses_non_instdiff_files(node, models_dir, pack):
    import folder_paths
    from safetensors.torch import save_file

    d = models_dir["instance_diffusion"]
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4)}, os.path.join(d, "plain_sd.safetensors"))
    assert "plain_sd.safetensors" in folder_paths.get_filename_list("instance_diffusion")
    with pytest.raises(ValueError) as err:
        node["LoadInstanceDiffusion"].load("plain_sd.safetensors", "fp32")
    assert "plain_sd" in str(err.value) or "InstanceDiffusion" in str(err.value)


def test_loader_dtype_and_model_patcher(node, models_dir, tiny_sd15):
    from safetensors.torch import save_file
    import comfy.model_patcher

    fw, sw, _ = tiny_models.unet_topology(tiny_sd15)
    save_file(tiny_models.tiny_addon_state_dict(fw, sw), os.path.join(models_dir["instance_diffusion"], "t.safetensors"))
    (w16,) = node["LoadInstanceDiffusion"].load("t.safetensors", "fp16")
    assert isinstance(w16, comfy.model_patcher.ModelPatcher)
    assert {p.dtype for p in w16.model.parameters()} == {torch.float16}
    assert len(w16.model.fuser_prefixes) == 16 and w16.model.position_net is not None


def test_missing_model_folder_does_not_break_registration(pack):
    import folder_paths
    paths = folder_paths.get_folder_paths("instance_diffusion")
    assert any(p.endswith("instance_diffusion") for p in paths)
    # a folder that does not exist just lists nothing
    assert isinstance(pack.NODE_CLASS_MAPPINGS["LoadInstanceDiffusion"].INPUT_TYPES()["required"]["weights"][0], list)


def test_loader_creates_its_model_folder_where_comfyui_keeps_models(pack, comfy_host, models_dir, tmp_path,
                                                                      monkeypatch):
    """models/instance_diffusion exists after the pack loads (a new user sees where the weights go), under ComfyUI's
    models_dir: here the harness's temporary one, never the host tree; an unwritable models dir only lists nothing."""
    import folder_paths

    loader = comfy_harness.pack_submodule(pack, "nodes.loader")
    assert os.path.isdir(os.path.join(folder_paths.models_dir, "instance_diffusion"))
    assert not os.path.realpath(folder_paths.models_dir).startswith(os.path.realpath(comfy_host["root"]) + os.sep)
    assert folder_paths.get_folder_paths("instance_diffusion")[0] == models_dir["instance_diffusion"]

    paths, exts = folder_paths.folder_names_and_paths["instance_diffusion"]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "instance_diffusion", (list(paths), set(exts)))
    fresh = tmp_path / "fresh_install" / "models"
    fresh.mkdir(parents=True)
    monkeypatch.setattr(folder_paths, "models_dir", str(fresh))
    loader.register_model_folders()
    assert (fresh / "instance_diffusion").is_dir()
    assert folder_paths.get_folder_paths("instance_diffusion")[0] == str(fresh / "instance_diffusion")
    assert not (fresh / "instance_models").exists()             # logtd's folders are listed, not created
    assert {".safetensors", ".pth", ".ckpt"} <= set(folder_paths.folder_names_and_paths["instance_diffusion"][1])

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setattr(folder_paths, "models_dir", str(blocker / "models"))
    loader.register_model_folders()                             # cannot create it: registers anyway, no error
    assert folder_paths.get_folder_paths("instance_diffusion")[0] == str(blocker / "models" / "instance_diffusion")
