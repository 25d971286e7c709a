"""A whole API-format graph through ComfyUI's PromptExecutor: checkpoint -> our nodes -> KSampler -> VAEDecode."""
from __future__ import annotations

import os

import pytest

from instdiff_testkit import tiny_models

WEIGHTS = "tiny_instdiff_addons.safetensors"


@pytest.fixture(scope="module")
def weights_file(tiny_checkpoint, models_dir):
    """Tiny add-on weights matching the tiny checkpoint's UNet, in the registered instance_diffusion folder."""
    import comfy.sd
    from safetensors.torch import save_file

    path = os.path.join(models_dir["instance_diffusion"], WEIGHTS)
    if not os.path.exists(path):
        model, *_ = comfy.sd.load_checkpoint_guess_config(tiny_checkpoint["path"], output_vae=False, output_clip=False)
        fw, sw, _ctx = tiny_models.unet_topology(model)
        save_file(tiny_models.tiny_addon_state_dict(fw, sw, seed=3), path)
    return WEIGHTS


def graph(ckpt: str, weights: str, steps: int = 2, strength: float = 1.0) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "LoadInstanceDiffusion", "inputs": {"weights": weights, "dtype": "fp32"}},
        "3": {"class_type": "InstanceLayout", "inputs": {"width": 128, "height": 128}},
        "4": {"class_type": "InstanceBox", "inputs": {"layout": ["3", 0], "prompt": "a red ball",
                                                       "x": 8, "y": 16, "width": 48, "height": 48}},
        "5": {"class_type": "InstancePoint", "inputs": {"layout": ["4", 0], "prompt": "a small bird", "x": 96, "y": 32}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a ball and a bird on grass"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "lowres, bad anatomy"}},
        "8": {"class_type": "InstanceDiffusionConditioning",
              "inputs": {"positive": ["6", 0], "clip": ["1", 1], "layout": ["5", 0], "instdiff": ["2", 0],
                         "modalities": "auto"}},
        "9": {"class_type": "ApplyUniFusion", "inputs": {"model": ["1", 0], "instdiff": ["2", 0],
                                                         "strength": strength, "start": 0.0, "end": 0.8}},
        "10": {"class_type": "ApplyScaleU", "inputs": {"model": ["9", 0], "instdiff": ["2", 0]}},
        "11": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "12": {"class_type": "KSampler", "inputs": {"model": ["10", 0], "seed": 0, "steps": steps, "cfg": 7.5,
                                                    "sampler_name": "euler", "scheduler": "normal",
                                                    "positive": ["8", 0], "negative": ["7", 0],
                                                    "latent_image": ["11", 0], "denoise": 1.0}},
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["1", 2]}},
        "14": {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "instdiff_test"}},
        "15": {"class_type": "InstanceLayoutPreview", "inputs": {"layout": ["5", 0], "image": ["13", 0]}},
        "16": {"class_type": "PreviewImage", "inputs": {"images": ["15", 0]}},
    }


def test_full_graph_executes_and_saves_an_image(run_prompt, tiny_checkpoint, weights_file, pack):
    result = run_prompt(graph(tiny_checkpoint["name"], weights_file))
    assert result["images"].get("14"), "SaveImage wrote no file"
    assert result["images"].get("16"), "the layout preview produced no image"
    from PIL import Image
    with Image.open(result["images"]["14"][0]) as im:
        assert im.size == (128, 128)


def test_bad_layout_value_is_a_clear_node_error(run_prompt, tiny_checkpoint, weights_file, pack):
    from instdiff_testkit.comfy_harness import PromptError

    g = graph(tiny_checkpoint["name"], weights_file)
    g["4"]["inputs"]["x"] = 130            # box 130..178: entirely outside the 128 px canvas (partly: clipped)
    with pytest.raises(PromptError) as err:
        run_prompt(g)
    text = str(err.value)
    assert "instance 0" in text and "entirely outside the 128x128 canvas" in text and "130" in text


def _pixels(result, node_id="14"):
    import numpy as np
    from PIL import Image
    with Image.open(result["images"][node_id][0]) as im:
        return np.asarray(im).copy()


def test_prompts_in_a_row_with_different_layouts_do_not_share_tokens(run_prompt, tiny_checkpoint, weights_file, pack):
    """One executor (its caches and loaded models reused, as a server does): layout A, layout B, layout A again.
    The patch objects are shared by the cached MODEL, so any state kept on them between prompts shows here."""
    import numpy as np

    def prompt(x):
        g = graph(tiny_checkpoint["name"], weights_file)
        g["4"]["inputs"]["x"] = x
        return g

    first = run_prompt(prompt(8))
    a1 = _pixels(first)
    b = _pixels(run_prompt(prompt(64), executor=first["executor"]))
    a2 = _pixels(run_prompt(prompt(8), executor=first["executor"]))
    b_fresh = _pixels(run_prompt(prompt(64)))
    assert np.array_equal(a1, a2), "re-running layout A after B must give A's image again"
    assert np.array_equal(b, b_fresh), "layout B after A must equal B run on its own"
    assert not np.array_equal(a1, b), "moving the box must change the image"
