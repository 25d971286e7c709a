"""Generate workflows/*.json (UI format) from compact specs, laid out with the running host's /object_info.

Regenerate after a node change (widget order and defaults come from the live node definitions):
    COMFYUI_PATH=/path/to/ComfyUI python scripts/build_workflows.py workflows
"""
from __future__ import annotations

import json
import os
import sys

from instdiff_testkit import comfy_harness
from instdiff_testkit import workflow_convert as wc
from instdiff_testkit.host_session import load_pack

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEMOS = os.path.join(REPO, "tests", "fixtures", "layouts", "official-demos")
CKPT = "v1-5-pruned-emaonly.safetensors"
WEIGHTS = "instancediffusion_sd15_addons.safetensors"
REFINER = "sd_xl_refiner_1.0.safetensors"
NEGATIVE = ("longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
            "worst quality, low quality")
NOTE_COLOR, NOTE_BG = "#432", "#653"
X_LAYOUT, X_COND = 440, 980


def demo(name):
    with open(os.path.join(DEMOS, f"demo_{name}.json")) as f:
        return json.load(f)


class Workflow:
    def __init__(self):
        self.nodes = []
        self.links = []
        self.groups = []
        self._by_id = {}

    # ---- nodes
    def node(self, type_, pos, widgets=None, title=None, size=None, mode=0, controls=None, color=None,
             bgcolor=None):
        info = comfy_harness.object_info(type_)
        widgets = dict(widgets or {})
        controls = dict(controls or {})
        values = []
        for slot in wc.widget_slots(info):
            spec = slot.spec
            if slot.kind == "value":
                if spec.name in widgets:
                    v = widgets.pop(spec.name)
                elif "default" in spec.options:
                    v = spec.options["default"]
                elif spec.type == "COMBO":
                    v = spec.choices[0]
                else:
                    raise KeyError(f"{type_}.{spec.name} needs a value")
                values.append(v)
            elif slot.kind == "control":
                values.append(controls.get(spec.name, "fixed"))
            elif slot.kind == "filter":
                values.append("")
            elif slot.kind == "upload":
                values.append("image")
        if widgets:
            raise KeyError(f"{type_}: unknown widgets {list(widgets)}")
        specs = {s.name: s for s in wc.input_specs(info)}
        inputs = []
        for name, typ, is_widget in wc.expected_inputs(info):
            entry = {"localized_name": name, "name": name, "type": typ}
            if name in specs and specs[name].optional and not is_widget:
                entry["shape"] = 7
            if is_widget:
                entry["widget"] = {"name": name}
            entry["link"] = None
            inputs.append(entry)
        outputs = [{"localized_name": n, "name": n, "type": t, "links": []}
                   for n, t in zip(info["output_name"], info["output"])]
        nid = len(self.nodes) + 1
        n_sock = max(len([i for i in inputs if "widget" not in i]), len(outputs))
        n_wid = len([s for s in wc.widget_slots(info) if s.kind in ("value", "control")])
        multiline = sum(1 for s in wc.input_specs(info) if s.is_widget and s.options.get("multiline"))
        h = 10 + 22 * n_sock + 26 * (n_wid - multiline) + 110 * multiline
        node = {"id": nid, "type": type_, "pos": list(pos), "size": list(size or [320, max(h, 46)]), "flags": {},
                "order": 0, "mode": mode, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": type_}, "widgets_values": values}
        if not inputs:
            del node["inputs"]
        if title:
            node["title"] = title
        if color:
            node["color"], node["bgcolor"] = color, bgcolor
        self.nodes.append(node)
        self._by_id[nid] = node
        return nid

    def note(self, text, pos, size=(X_LAYOUT, 300), title="Read me"):
        nid = len(self.nodes) + 1
        node = {"id": nid, "type": "Note", "pos": list(pos), "size": list(size), "flags": {}, "order": 0,
                "mode": 0, "properties": {}, "widgets_values": [text], "title": title, "color": NOTE_COLOR,
                "bgcolor": NOTE_BG}
        self.nodes.append(node)
        self._by_id[nid] = node
        return nid

    def link(self, src, src_slot, dst, dst_input):
        a, b = self._by_id[src], self._by_id[dst]
        if isinstance(src_slot, str):
            src_slot = [o["name"] for o in a["outputs"]].index(src_slot)
        b_slot = [i["name"] for i in b["inputs"]].index(dst_input)
        typ = a["outputs"][src_slot]["type"]
        lid = len(self.links) + 1
        self.links.append([lid, src, src_slot, dst, b_slot, typ])
        a["outputs"][src_slot]["links"].append(lid)
        assert b["inputs"][b_slot]["link"] is None, (dst, dst_input)
        b["inputs"][b_slot]["link"] = lid
        return lid

    def group(self, title, x, y, w, h, color="#3f789e"):
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [x, y, w, h], "color": color,
                            "font_size": 24, "flags": {}})

    # ---- output
    def _orders(self):
        deps = {n["id"]: set() for n in self.nodes}
        for _lid, a, _s, b, _t, _typ in self.links:
            deps[b].add(a)
        order, done = {}, set()
        while len(done) < len(deps):
            ready = sorted(n for n in deps if n not in done and deps[n] <= done)
            for n in ready:
                order[n] = len(order)
                done.add(n)
        return order

    def to_json(self):
        order = self._orders()
        for n in self.nodes:
            n["order"] = order[n["id"]]
            for o in n.get("outputs", []):
                if not o["links"]:
                    o["links"] = None
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links),
                "nodes": self.nodes, "links": self.links, "groups": self.groups, "config": {},
                "extra": {"ds": {"scale": 0.7, "offset": [560, 80]}}, "version": 0.4}


# ------------------------------------------------------------------------------------------- shared pieces

WEIGHTS_TEXT = f"""WEIGHTS
- SD1.5 checkpoint -> ComfyUI/models/checkpoints ({CKPT}, or any SD1.5 fine-tune).
- InstanceDiffusion add-on weights -> ComfyUI/models/instance_diffusion. Get instancediffusion_sd15.pth from huggingface.co/xudongw/InstanceDiffusion. 'Load InstanceDiffusion' reads that .pth directly (safely, no code from the file runs), but it is 13.6 GB and slow to load; convert it once to a ~0.7 GB file, from the ComfyUI folder with ComfyUI's Python:
  python custom_nodes/comfyui-instdiff/instdiff_cli.py convert models/instance_diffusion/instancediffusion_sd15.pth models/instance_diffusion/{WEIGHTS} --dtype fp16
  (inside the pack folder 'python -m instancediffusion_core convert ...' does the same), then press R and pick {WEIGHTS} in 'Load InstanceDiffusion'."""

KNOBS_TEXT = """KNOBS (official defaults)
- Apply UniFusion: strength 1.0; end 0.8 = the official alpha (grounding on the first 80% of the steps; higher = tighter placement, lower = more freedom).
- KSampler: 50 steps, cfg 7.5. The core KSampler has no PLMS: ipndm + ddim_uniform is its closest match (same multistep idea, same timesteps); euler/normal or dpmpp_2m/karras work too. The exact official sampler is 'plms (official)' + 'official' in the InstanceDiffusion KSampler, or the PLMS Sampler / Official Schedule nodes (see official_demo_settings.json). Seed is fixed so the result repeats; set control_after_generate to randomize for variations.
- Negative prompt: the official one.
- InstanceDiffusion Conditioning, modalities auto: scribble if any instance has a scribble, else mask, else point if no instance has a box, else box."""


def base_models(wf, x, y):
    ckpt = wf.node("CheckpointLoaderSimple", (x, y), {"ckpt_name": CKPT}, title="SD1.5 checkpoint")
    weights = wf.node("LoadInstanceDiffusion", (x, y + 140), {"weights": WEIGHTS, "dtype": "auto"})
    return ckpt, weights


def prompts(wf, ckpt, x, y, caption):
    pos = wf.node("CLIPTextEncode", (x, y), {"text": caption}, title="Global prompt (whole scene)",
                  size=[400, 160])
    neg = wf.node("CLIPTextEncode", (x, y + 200), {"text": NEGATIVE}, title="Negative prompt", size=[400, 130])
    wf.link(ckpt, "CLIP", pos, "clip")
    wf.link(ckpt, "CLIP", neg, "clip")
    return pos, neg


def patched_model(wf, ckpt, weights, x, y):
    uni = wf.node("ApplyUniFusion", (x, y), {"strength": 1.0, "start": 0.0, "end": 0.8})
    wf.link(ckpt, "MODEL", uni, "model")
    wf.link(weights, 0, uni, "instdiff")
    scu = wf.node("ApplyScaleU", (x, y + 180))
    wf.link(uni, 0, scu, "model")
    wf.link(weights, 0, scu, "instdiff")
    return scu


def conditioning(wf, pos, ckpt, layout, weights, x, y, title=None):
    cond = wf.node("InstanceDiffusionConditioning", (x, y), {"modalities": "auto"}, title=title)
    wf.link(pos, 0, cond, "positive")
    wf.link(ckpt, "CLIP", cond, "clip")
    wf.link(layout, 0, cond, "layout")
    wf.link(weights, 0, cond, "instdiff")
    return cond


def sampler(wf, model, positive, negative, width, height, x, y, title=None, steps=50, cfg=7.5, seed=0):
    latent = wf.node("EmptyLatentImage", (x, y), {"width": width, "height": height, "batch_size": 1})
    ks = wf.node("KSampler", (x, y + 140), {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "ipndm",
                                            "scheduler": "ddim_uniform", "denoise": 1.0}, title=title)
    wf.link(model, 0, ks, "model")
    wf.link(positive, 0, ks, "positive")
    wf.link(negative, 0, ks, "negative")
    wf.link(latent, 0, ks, "latent_image")
    return ks


def mis_sampler(wf, model, positive, negative, width, height, x, y):
    """Empty latent + InstanceDiffusion KSampler with the official sampler, schedule and multi-instance sampler."""
    latent = wf.node("EmptyLatentImage", (x, y), {"width": width, "height": height, "batch_size": 1})
    ks = wf.node("InstanceDiffusionKSampler", (x, y + 140),
                 {"seed": 0, "steps": 50, "cfg": 7.5, "sampler_name": "plms (official)",
                  "scheduler": "official (ddim_uniform + 1)", "denoise": 1.0, "mis": 0.36, "merge": "mean",
                  "max_batch": 4})
    wf.link(model, 0, ks, "model")
    wf.link(positive, 0, ks, "positive")
    wf.link(negative, 0, ks, "negative")
    wf.link(latent, 0, ks, "latent_image")
    return ks


def decode_save(wf, samples, ckpt, layout, x, y, prefix):
    dec = wf.node("VAEDecode", (x, y), size=[210, 46])
    wf.link(samples, 0, dec, "samples")
    wf.link(ckpt, "VAE", dec, "vae")
    save = wf.node("SaveImage", (x + 360, y), {"filename_prefix": prefix}, size=[400, 440])
    wf.link(dec, 0, save, "images")
    if layout is not None:
        prev = wf.node("InstanceLayoutPreview", (x, y + 480), title="Layout Preview (over the result)")
        wf.link(layout, 0, prev, "layout")
        wf.link(dec, 0, prev, "image")
        show = wf.node("PreviewImage", (x + 360, y + 480), size=[400, 440])
        wf.link(prev, 0, show, "images")
    return dec


def box_chain(wf, layout, annos, x, y, dy=200):
    last = layout
    for i, a in enumerate(annos):
        bx, by, bw, bh = (int(round(v)) for v in a["bbox"])
        n = wf.node("InstanceBox", (x, y + i * dy), {"prompt": a["caption"], "x": bx, "y": by, "width": bw,
                                                     "height": bh}, title=f"Instance {i}: Box")
        wf.link(last, 0, n, "layout")
        last = n
    return last


def standard(wf, name, caption, layout_out, width, height, note, prefix=None, cond_y=0):
    """Models + prompts + conditioning + patched model + sampler + decode/save/preview around a layout."""
    wf.note(note, (-520, 0), size=(480, 800))
    ckpt, weights = base_models(wf, 0, 0)
    pos, neg = prompts(wf, ckpt, 0, 330, caption)
    cx = X_COND
    cond = conditioning(wf, pos, ckpt, layout_out, weights, cx, cond_y)
    model = patched_model(wf, ckpt, weights, cx, cond_y + 200)
    ks = sampler(wf, model, cond, neg, width, height, cx + 360, cond_y)
    decode_save(wf, ks, ckpt, layout_out, cx + 720, cond_y, prefix or f"instdiff/{name}")
    return ckpt, weights, pos, neg, cond, model, ks


# ------------------------------------------------------------------------------------------- workflows

def boxes_cat_dog_robin():
    d = demo("cat_dog_robin")
    wf = Workflow()
    canvas = wf.node("InstanceLayout", (X_LAYOUT, 0), {"width": d["width"], "height": d["height"]})
    last = box_chain(wf, canvas, d["annos"], X_LAYOUT, 130)
    note = f"""InstanceDiffusion: placing objects with BOXES (the official cat / dog / robin demo)

HOW IT WORKS
'Instance Layout' is the canvas (its pixels are the coordinate system). Each 'Instance: Box' adds one object: its own prompt and a box (x, y = top-left corner, width, height in canvas pixels). Chain more boxes to add objects (up to 30). 'InstanceDiffusion Conditioning' turns the layout into grounding tokens on the positive prompt; 'Apply UniFusion' and 'Apply ScaleU' add the InstanceDiffusion layers to the model. The Layout Preview draws the boxes over the result so you can check the placement.

{KNOBS_TEXT}

{WEIGHTS_TEXT}

The official command also uses the multi-instance sampler (mis 0.36): see multi_instance_sampler.json."""
    standard(wf, "cat_dog_robin", d["caption"], last, d["width"], d["height"], note)
    return wf


def points_palm():
    d = demo("palm_point")
    wf = Workflow()
    canvas = wf.node("InstanceLayout", (X_LAYOUT, 0), {"width": d["width"], "height": d["height"]})
    last = canvas
    for i, a in enumerate(d["annos"]):
        px, py = (int(round(v)) for v in a["point"])
        n = wf.node("InstancePoint", (X_LAYOUT, 130 + i * 150), {"prompt": a["caption"], "x": px, "y": py},
                    title=f"Instance {i}: Point")
        wf.link(last, 0, n, "layout")
        last = n
    note = f"""InstanceDiffusion: placing objects with single POINTS (the official Palma de Mallorca demo, 768x512)

HOW IT WORKS
Each 'Instance: Point' adds one object with its own prompt and a single point (x, y in canvas pixels) that the object should cover. Points give the model the most freedom: it decides the size and shape. With no boxes in the layout, 'modalities: auto' picks the official point configuration.
The canvas (Instance Layout) and the image (Empty Latent Image) are both 768x512 here; coordinates are relative to the canvas, so another image size keeps the placement.

{KNOBS_TEXT}

{WEIGHTS_TEXT}"""
    standard(wf, "palm_points", d["caption"], last, d["width"], d["height"], note)
    return wf


SCRIBBLES = [
    ("a snowy mountain range", "0,230 80,150 150,210 230,120 320,200 400,140 510,220"),
    ("a red and yellow hot air balloon", "340,70 385,62 415,95 405,150 372,172 342,150 330,105"),
    ("a winding blue river", "40,500 110,440 200,450 270,400 350,380 430,330 505,300"),
    ("a small wooden cabin with a chimney", "90,330 150,318 170,360 110,372"),
]


def scribbles():
    wf = Workflow()
    canvas = wf.node("InstanceLayout", (X_LAYOUT, 0), {"width": 512, "height": 512})
    last = canvas
    for i, (cap, pts) in enumerate(SCRIBBLES):
        n = wf.node("InstanceScribble", (X_LAYOUT, 130 + i * 230), {"prompt": cap, "points": pts},
                    title=f"Instance {i}: Scribble", size=[320, 200])
        wf.link(last, 0, n, "layout")
        last = n
    note = f"""InstanceDiffusion: placing objects with SCRIBBLES

HOW IT WORKS
Each 'Instance: Scribble' adds one object with its own prompt and a free polyline through it: 'x,y' pairs in canvas pixels separated by spaces or new lines (at least 2 points; it is resampled to the model's 20 points). A scribble says roughly where the object runs (a river along a curve, a mountain ridge); the model fills in its extent. With any scribble in the layout, 'modalities: auto' picks the official scribble configuration.
Tip: the 'Instance Layout Editor' node draws scribbles with the mouse.

{KNOBS_TEXT}

{WEIGHTS_TEXT}"""
    standard(wf, "scribbles", "a red and yellow hot air balloon over a winding river in a green valley, a small "
             "wooden cabin, snowy mountains in the background, sunny day, high quality photo",
             last, 512, 512, note)
    return wf


def masks():
    d = demo("corgi_kitchen")
    wf = Workflow()
    load = wf.node("LoadInstanceLayout", (X_LAYOUT, 0), {"file": "(use json_text)", "json_text": json.dumps(d),
                                                    "bbox_format": "auto", "truncate": False},
                   title="Load Layout (official corgi demo, RLE masks)", size=[500, 260])
    img = wf.node("LoadImage", (X_LAYOUT, 300), {"image": "example.png"},
                  title="Load Image (paint a mask here)", size=[500, 420])
    add = wf.node("InstanceMask", (X_LAYOUT, 760), {"prompt": "a vase of red tulips", "mask_index": 0},
                  title="Instance: Mask (bypassed: Ctrl+B)", mode=wc.MODE_BYPASS,
                  size=[500, 110])
    wf.link(load, "layout", add, "layout")
    wf.link(img, "MASK", add, "mask")
    note = f"""InstanceDiffusion: placing objects with MASKS (the official corgi demo)

HOW IT WORKS
'Load Layout' reads a layout in the official InstanceDiffusion JSON format; here the corgi demo is pasted into json_text, so the workflow runs without extra files. To use a file instead, put the .json into ComfyUI/input (or input/layouts) and choose it in 'file'. Masks (COCO RLE or polygons) give the model each object's exact shape; instances without a mask use their box. The file's own caption is not used here: the global prompt is typed in 'Global prompt' (Load Layout also outputs it as 'caption').
This layout has one box beyond the canvas (kitchen counter): it is clipped, and Load Layout's 'report' output says so (connect it to a Preview Any node to read it).

YOUR OWN MASK
Open 'Load Image' (any picture of the canvas size, 512x512), right click > Open in MaskEditor, paint the object's area, save. Then select 'Instance: Mask' and press Ctrl+B to un-bypass it: it appends that instance (prompt 'a vase of red tulips') to the loaded layout. Painted pixels are the instance; the mask must have the canvas size. With any mask in the layout, 'modalities: auto' picks the official mask configuration.

{KNOBS_TEXT}

{WEIGHTS_TEXT}"""
    standard(wf, "corgi_masks", d["caption"], add, d["width"], d["height"], note, cond_y=0)
    return wf


def layout_from_json():
    d = demo("teddy_bear_castle")
    wf = Workflow()
    load = wf.node("LoadInstanceLayout", (X_LAYOUT, 0), {"file": "(use json_text)",
                                                    "json_text": json.dumps(d, indent=1),
                                                    "bbox_format": "auto", "truncate": False},
                   title="Load Layout (InstanceDiffusion JSON)", size=[500, 420])
    blank = wf.node("InstanceLayoutPreview", (X_LAYOUT, 460), title="Layout Preview (before sampling)")
    wf.link(load, "layout", blank, "layout")
    show = wf.node("PreviewImage", (X_LAYOUT, 560), size=[500, 440])
    wf.link(blank, 0, show, "images")
    note = f"""InstanceDiffusion: a layout from a JSON FILE (official demo format)

HOW IT WORKS
'Load Layout' reads the official InstanceDiffusion demo format: {{"caption", "width", "height", "annos": [{{"caption", "bbox": [x, y, w, h], "mask", "point", "scribble"}}]}}. Put .json files into ComfyUI/input (or input/layouts) and choose one in 'file' (press R to refresh the list), or paste JSON into json_text (used when file is '(use json_text)'); the teddy-bear demo is pasted here.
- caption output: the file's global caption, wired into the global prompt's text here (so the prompt box ignores its own text).
- bbox_format auto: LLM-written layouts often use [x1, y1, x2, y2]; auto decides per file; the report output says what it chose and what it clipped.
- truncate: keep the first 30 instances of bigger layouts instead of failing.
The first Layout Preview shows the layout right away; the second draws it over the result.

{KNOBS_TEXT}

{WEIGHTS_TEXT}"""
    ckpt, weights, pos, neg, cond, model, ks = standard(wf, "from_json", d["caption"], load, d["width"],
                                                        d["height"], note)
    # the file's caption drives the global prompt
    wf.link(load, "caption", pos, "text")
    return wf


def iterative_editing():
    r4, r5 = demo("iterative_r4"), demo("iterative_r5")
    base = dict(r4)
    base["annos"] = r4["annos"][:-1]
    moved_a, moved_b = r4["annos"][-1], r5["annos"][-1]
    assert base["annos"] == r5["annos"][:-1] and moved_a["caption"] == moved_b["caption"]
    wf = Workflow()
    load = wf.node("LoadInstanceLayout", (X_LAYOUT, 0), {"file": "(use json_text)", "json_text": json.dumps(base),
                                                    "bbox_format": "auto", "truncate": False},
                   title="Load Layout (iterative demo without the candle)", size=[500, 260])
    box_a = box_chain(wf, load, [moved_a], X_LAYOUT, 300)
    wf._by_id[box_a]["title"] = "A: the candle where it was"
    box_b = box_chain(wf, load, [moved_b], X_LAYOUT, 520)
    wf._by_id[box_b]["title"] = "B: the candle moved right"
    wf.note(f"""InstanceDiffusion: ITERATIVE EDITING (same seed, one instance moved)

HOW IT WORKS
Both branches share everything (the loaded layout of 18 instances, the prompts, the model, the seed) except the last instance: branch A puts 'a lighted candle on a table' at x=460, branch B moves it to x=576 (the official iterative demo, rounds r4 -> r5). Same seed + same layout elsewhere = the rest of the picture stays close while the edited object moves. The two results and their layouts are stitched side by side.
Edit one instance node (or the JSON) and queue again; keep the seed fixed. Both KSamplers must have the same seed and settings.
The official demo renders 768x512 with the multi-instance sampler (mis 0.2); this one uses the plain KSampler (see multi_instance_sampler.json).

{KNOBS_TEXT}

{WEIGHTS_TEXT}""", (-520, 0), size=(480, 800))
    ckpt, weights = base_models(wf, 0, 0)
    pos, neg = prompts(wf, ckpt, 0, 330, r4["caption"])
    cx = X_COND
    cond_a = conditioning(wf, pos, ckpt, box_a, weights, cx, 0, title="Conditioning A")
    cond_b = conditioning(wf, pos, ckpt, box_b, weights, cx, 200, title="Conditioning B")
    model = patched_model(wf, ckpt, weights, cx, 420)
    ks_a = sampler(wf, model, cond_a, neg, r4["width"], r4["height"], cx + 360, 0, title="KSampler A")
    ks_b = sampler(wf, model, cond_b, neg, r4["width"], r4["height"], cx + 360, 460, title="KSampler B")
    x = cx + 720
    dec_a = wf.node("VAEDecode", (x, 0), size=[210, 46])
    wf.link(ks_a, 0, dec_a, "samples")
    wf.link(ckpt, "VAE", dec_a, "vae")
    dec_b = wf.node("VAEDecode", (x, 100), size=[210, 46])
    wf.link(ks_b, 0, dec_b, "samples")
    wf.link(ckpt, "VAE", dec_b, "vae")
    stitch = wf.node("ImageStitch", (x, 200), {"direction": "right", "match_image_size": True,
                                                "spacing_width": 16, "spacing_color": "white"},
                     title="Side by side: A | B")
    wf.link(dec_a, 0, stitch, "image1")
    wf.link(dec_b, 0, stitch, "image2")
    save = wf.node("SaveImage", (x + 360, 0), {"filename_prefix": "instdiff/iterative_A_B"}, size=[640, 480])
    wf.link(stitch, 0, save, "images")
    prev_a = wf.node("InstanceLayoutPreview", (x, 420), title="Layout A over result A")
    wf.link(box_a, 0, prev_a, "layout")
    wf.link(dec_a, 0, prev_a, "image")
    prev_b = wf.node("InstanceLayoutPreview", (x, 520), title="Layout B over result B")
    wf.link(box_b, 0, prev_b, "layout")
    wf.link(dec_b, 0, prev_b, "image")
    stitch2 = wf.node("ImageStitch", (x, 620), {"direction": "right", "match_image_size": True,
                                                 "spacing_width": 16, "spacing_color": "white"},
                      title="Layouts side by side: A | B")
    wf.link(prev_a, 0, stitch2, "image1")
    wf.link(prev_b, 0, stitch2, "image2")
    show = wf.node("PreviewImage", (x + 360, 520), size=[640, 480])
    wf.link(stitch2, 0, show, "images")
    return wf


def refiner_cascade():
    d = demo("eagle_left")
    wf = Workflow()
    canvas = wf.node("InstanceLayout", (X_LAYOUT, 0), {"width": d["width"], "height": d["height"]})
    last = box_chain(wf, canvas, d["annos"], X_LAYOUT, 130)
    note = f"""InstanceDiffusion + a REFINER pass (the official cascade, eagle demo)

HOW IT WORKS
The left part is the usual InstanceDiffusion generation (boxes: eagle, head, beak, eye). The official code then refines the 512x512 result with SDXL-Refiner-1.0 as img2img: prompt = the global caption, no negative prompt, strength 0.4 (inference.py default 0.35), 20 steps. Here: 'Refiner checkpoint' -> VAE Encode of the first image -> KSampler at denoise 0.4 -> VAE Decode. Both images are saved.

REFINER CHECKPOINT
Pick any checkpoint in 'Refiner checkpoint': sd_xl_refiner_1.0.safetensors (official; from huggingface.co/stabilityai/stable-diffusion-xl-refiner-1.0, into ComfyUI/models/checkpoints), an SDXL base model, or an SD1.5 model you like (even the same one). The refiner does not see the layout: keep denoise at 0.35-0.4 so it only adds detail and does not move objects.
Refiner KSampler: 20 steps, cfg 5.0 (diffusers' SDXL img2img default), euler/normal; seed fixed.

{KNOBS_TEXT}

{WEIGHTS_TEXT}"""
    ckpt, weights, pos, neg, cond, model, ks = standard(wf, "cascade_base", d["caption"], last, d["width"],
                                                        d["height"], note)
    base_dec = next(n["id"] for n in wf.nodes if n["type"] == "VAEDecode")
    y = 1100
    ref = wf.node("CheckpointLoaderSimple", (0, y), {"ckpt_name": REFINER}, title="Refiner checkpoint (pick any)")
    rpos = wf.node("CLIPTextEncode", (X_LAYOUT, y), {"text": d["caption"]}, title="Refiner prompt (global caption)",
                   size=[400, 130])
    wf.link(ref, "CLIP", rpos, "clip")
    rneg = wf.node("CLIPTextEncode", (X_LAYOUT, y + 170), {"text": ""}, title="Refiner negative (empty, as official)",
                   size=[400, 100])
    wf.link(ref, "CLIP", rneg, "clip")
    enc = wf.node("VAEEncode", (X_COND, y), size=[210, 46])
    wf.link(base_dec, 0, enc, "pixels")
    wf.link(ref, "VAE", enc, "vae")
    rks = wf.node("KSampler", (X_COND + 360, y), {"seed": 0, "steps": 20, "cfg": 5.0, "sampler_name": "euler",
                                          "scheduler": "normal", "denoise": 0.4}, title="Refiner KSampler (img2img)")
    wf.link(ref, "MODEL", rks, "model")
    wf.link(rpos, 0, rks, "positive")
    wf.link(rneg, 0, rks, "negative")
    wf.link(enc, 0, rks, "latent_image")
    rdec = wf.node("VAEDecode", (X_COND + 720, y), size=[210, 46])
    wf.link(rks, 0, rdec, "samples")
    wf.link(ref, "VAE", rdec, "vae")
    rsave = wf.node("SaveImage", (X_COND + 1080, y), {"filename_prefix": "instdiff/cascade_refined"}, size=[400, 440])
    wf.link(rdec, 0, rsave, "images")
    wf.group("Refiner pass (img2img, official cascade)", -20, y - 60, X_COND + 1520, 560)
    return wf


def multi_instance_sampler():
    d = demo("cat_dog_robin")
    wf = Workflow()
    canvas = wf.node("InstanceLayout", (X_LAYOUT, 0), {"width": d["width"], "height": d["height"]})
    last = box_chain(wf, canvas, d["annos"], X_LAYOUT, 130)
    note = f"""InstanceDiffusion: the MULTI-INSTANCE SAMPLER (the official cat / dog / robin command, mis 0.36)

HOW IT WORKS
'InstanceDiffusion KSampler' is a KSampler with the official multi-instance sampler (MIS): for the first mis x steps the global prompt and EACH instance alone (its own phrase as the prompt, only its own box) are denoised from the same noise, then the latents are averaged and the global prompt finishes the remaining steps. This reduces attribute leakage between instances (each object keeps its own colour and kind) at the price of more UNet calls: about (n+1) x mis + (1 - mis) times a plain run for n instances.
- mis: 0.36 is the official default (0.2 in the eagle, corgi and iterative demos); keep it below 0.4. 0 = exactly the core KSampler.
- merge: mean is the official rule.
- max_batch: how many of the n+1 inputs share one UNet call (faster on a GPU with free memory; 1 = least memory). Results are the same.
sampler 'plms (official)' + scheduler 'official' are the official sampler: phase 2 continues the global prompt's eps history as the official code does. Other ComfyUI samplers work too; multistep ones (ipndm, dpmpp_2m) then restart their history at the merge.
For SamplerCustomAdvanced, the 'InstanceDiffusion MIS Guider' node gives the same sampler as a GUIDER.

{KNOBS_TEXT}

{WEIGHTS_TEXT}"""
    wf.note(note, (-520, 0), size=(480, 800))
    ckpt, weights = base_models(wf, 0, 0)
    pos, neg = prompts(wf, ckpt, 0, 330, d["caption"])
    cx = X_COND
    cond = conditioning(wf, pos, ckpt, last, weights, cx, 0)
    model = patched_model(wf, ckpt, weights, cx, 200)
    ks = mis_sampler(wf, model, cond, neg, d["width"], d["height"], cx + 360, 0)
    decode_save(wf, ks, ckpt, last, cx + 720, 0, "instdiff/cat_dog_robin_mis")
    return wf


EDITOR_LAYOUT = {
    "caption": "a red fox in a meadow, a yellow bird in the sky, a winding path and a small pond",
    "width": 512, "height": 512,
    "annos": [
        {"caption": "a red fox", "bbox": [40, 230, 200, 170]},
        {"caption": "a yellow bird", "point": [390, 90]},
        {"caption": "a winding path", "scribble": [[20, 500], [140, 440], [250, 475], [390, 410], [500, 440]]},
        {"caption": "a small pond", "mask": [[300, 300, 420, 275, 485, 340, 420, 395, 310, 380]]},
    ],
}


def layout_editor():
    wf = Workflow()
    editor = wf.node("InstanceLayoutEditor", (X_LAYOUT, 0), {"width": 512, "height": 512,
                                                             "layout_json": json.dumps(EDITOR_LAYOUT, indent=1)},
                     title="Instance Layout Editor (draw here)", size=[520, 760])
    note = f"""InstanceDiffusion: DRAW the layout in the Instance Layout Editor

HOW IT WORKS
The editor node is the canvas. Pick a tool and draw: Box (drag), Point (click), Scribble (freehand, kept as 20 points), Brush or Polygon (a mask). Every drawn shape is a new instance: type its prompt in the list under the canvas (a phrase such as "a red fox"). Hold Shift to give the SELECTED instance another location (e.g. a box and a mask). Select (V) to move or resize, Delete to remove, Ctrl+Z / Ctrl+Y to undo and redo. The caption field is the global prompt: its output drives CLIP Text Encode here.
This one starts with a fox (box), a bird (point), a path (scribble) and a pond (polygon mask). Run once, then connect the result to the editor's 'background' input to draw over the picture.
Sampling: 'InstanceDiffusion KSampler' with the official PLMS sampler and schedule and the official multi-instance sampler (mis 0.36; 0 = plain sampling, faster).

{KNOBS_TEXT}

{WEIGHTS_TEXT}"""
    wf.note(note, (-520, 0), size=(480, 800))
    ckpt, weights = base_models(wf, 0, 0)
    pos, neg = prompts(wf, ckpt, 0, 330, EDITOR_LAYOUT["caption"])
    wf.link(editor, "caption", pos, "text")
    cx = X_COND + 100
    cond = conditioning(wf, pos, ckpt, editor, weights, cx, 0)
    model = patched_model(wf, ckpt, weights, cx, 200)
    ks = mis_sampler(wf, model, cond, neg, 512, 512, cx + 360, 0)
    decode_save(wf, ks, ckpt, editor, cx + 720, 0, "instdiff/layout_editor")
    return wf


def official_demo_settings():
    d = demo("cat_dog_robin")
    wf = Workflow()
    canvas = wf.node("InstanceLayout", (X_LAYOUT, 0), {"width": d["width"], "height": d["height"]})
    last = box_chain(wf, canvas, d["annos"], X_LAYOUT, 130)
    note = f"""InstanceDiffusion: the OFFICIAL DEMO SETTINGS, node by node (cat / dog / robin)

Everything the official inference.py does, as custom-sampling nodes, so the result follows the official code:
- 'InstanceDiffusion PLMS Sampler (official)': the official PLMS (a 2-evaluation first step, then Adams-Bashforth over the eps history).
- 'InstanceDiffusion Official Schedule': the official 50 timesteps (t = 981, 961, ..., 1; the last step ends at alphas_cumprod[0]).
- 'InstanceDiffusion MIS Guider': cfg 7.5 (the official guidance) and the multi-instance sampler, mis 0.36: the global prompt and each instance alone for the first 18 steps, averaged, then the global prompt continues its own eps history.
- 'Apply UniFusion' end 0.8 = the official alpha: grounding on steps 0..39 of 50, counted by step as the official code does.
- The official negative prompt; the seed drives the starting noise (the official code draws it with torch.manual_seed).
Same nodes with mis 0 = the official plain sampler (PLMSSampler). Swap the sampler or schedule for any ComfyUI one if you prefer speed over fidelity.

{WEIGHTS_TEXT}"""
    wf.note(note, (-520, 0), size=(480, 800))
    ckpt, weights = base_models(wf, 0, 0)
    pos, neg = prompts(wf, ckpt, 0, 330, d["caption"])
    cx = X_COND
    cond = conditioning(wf, pos, ckpt, last, weights, cx, 0)
    model = patched_model(wf, ckpt, weights, cx, 200)
    guider = wf.node("InstanceDiffusionMISGuider", (cx + 360, 0), {"cfg": 7.5, "mis": 0.36, "merge": "mean",
                                                                   "max_batch": 4})
    wf.link(model, 0, guider, "model")
    wf.link(cond, 0, guider, "positive")
    wf.link(neg, 0, guider, "negative")
    plms = wf.node("InstanceDiffusionPLMSSampler", (cx + 360, 230))
    sched = wf.node("InstanceDiffusionOfficialSchedule", (cx + 360, 320), {"steps": 50, "denoise": 1.0})
    wf.link(model, 0, sched, "model")
    noise = wf.node("RandomNoise", (cx + 360, 470), {"noise_seed": 0})
    latent = wf.node("EmptyLatentImage", (cx + 360, 580), {"width": d["width"], "height": d["height"],
                                                           "batch_size": 1})
    run = wf.node("SamplerCustomAdvanced", (cx + 720, 0), size=[320, 120])
    wf.link(noise, 0, run, "noise")
    wf.link(guider, 0, run, "guider")
    wf.link(plms, 0, run, "sampler")
    wf.link(sched, 0, run, "sigmas")
    wf.link(latent, 0, run, "latent_image")
    decode_save(wf, run, ckpt, last, cx + 1080, 0, "instdiff/cat_dog_robin_official")
    return wf


def _table_and_ball_track(wf, n: int, keyframes: str):
    """The frames workflows' layout: a table on every frame and a ball track over ``n`` frames."""
    canvas = wf.node("InstanceLayout", (X_LAYOUT, 0), {"width": 512, "height": 512})
    table = wf.node("InstanceBox", (X_LAYOUT, 130), {"prompt": "a wooden table", "x": 0, "y": 352, "width": 512,
                                                     "height": 160}, title="Instance 0: Box (every frame)")
    wf.link(canvas, 0, table, "layout")
    track = wf.node("InstanceTrackKeyframes", (X_LAYOUT, 340), {
        "prompt": "a red rubber ball", "frames": n, "keyframes": keyframes,
        "interpolation": "linear", "after_last": "error"}, title="Instance 1: Track (keyframes)", size=[320, 300])
    wf.link(table, 0, track, "layout")
    return track


def _grounded_track(wf, track, scene: str):
    """Checkpoint + add-ons, the prompts, the track's conditioning and the patched model of the frames workflows:
    (checkpoint node, model node, positive node, negative node)."""
    ckpt, weights = base_models(wf, 0, 0)
    pos, neg = prompts(wf, ckpt, 0, 330, scene)
    cond = conditioning(wf, pos, ckpt, track, weights, X_COND, 0)
    return ckpt, patched_model(wf, ckpt, weights, X_COND, 200), cond, neg


def _sample_frames(wf, model, cond, neg, ckpt, track, n: int, cx: int, prefix: str):
    """A batch of ``n`` latents through KSampler (the official settings), the track's per-frame preview, decode
    and save."""
    latent = wf.node("EmptyLatentImage", (cx + 360, 0), {"width": 512, "height": 512, "batch_size": n},
                     title=f"Empty Latent Image ({n} frames)")
    ks = wf.node("KSampler", (cx + 360, 140), {"seed": 0, "steps": 50, "cfg": 7.5, "sampler_name": "ipndm",
                                                "scheduler": "ddim_uniform", "denoise": 1.0})
    wf.link(model, 0, ks, "model")
    wf.link(cond, 0, ks, "positive")
    wf.link(neg, 0, ks, "negative")
    wf.link(latent, 0, ks, "latent_image")
    prev = wf.node("InstanceLayoutPreview", (X_LAYOUT, 680), title="Layout Preview (one picture per frame)")
    wf.link(track, 0, prev, "layout")
    show = wf.node("PreviewImage", (X_LAYOUT, 800), size=[320, 320])
    wf.link(prev, 0, show, "images")
    decode_save(wf, ks, ckpt, track, cx + 720, 0, prefix)


def frames_moving_ball():
    """Per-frame layouts (a track) on a batch of frames, core nodes only (no motion model)."""
    wf = Workflow()
    n = 8
    track = _table_and_ball_track(wf, n, f"0: box 16,160,128,128\n{n - 1}: box 368,160,128,128")
    note = f"""InstanceDiffusion: INSTANCES OVER TIME (per-frame layouts on a batch of {n} frames)

HOW IT WORKS
A track is one layout per frame; the frames are the latent batch indices. 'Instance Track: Keyframes' moves the ball from its box at frame 0 to its box at frame {n - 1} (boxes and points move linearly; masks hold the earlier keyframe; 'frame: none' hides the instance). Instances added before the track (the table) stay on every frame. The Conditioning node computes the grounding tokens of all {n} frames once; each latent of the batch is grounded by its own frame, also under context windows. Set the Empty Latent Image batch_size to the track's frames (a track shorter than the batch is an error unless after_last is hold or loop).

Other sources of tracks: 'Instance Track: Mask Batch' (one mask per frame), 'Instance Tracks: Bounding Boxes' (ComfyUI's BOUNDING_BOX, e.g. RT-DETR on a video, matched by label or order), 'Instance Tracks: TRACKING (KJNodes / logtd)'.

No motion model here: the frames are independent images that share a seed pattern; for video, put the same conditioning into an AnimateDiff-Evolved or other SD1.5 video sampler (AnimateDiff-Evolved is a separate pack). The multi-instance sampler refuses tracks.

{KNOBS_TEXT}

{WEIGHTS_TEXT}"""
    wf.note(note, (-520, 0), size=(480, 800))
    ckpt, model, cond, neg = _grounded_track(wf, track, "a red rubber ball rolling on a wooden table, studio photo")
    _sample_frames(wf, model, cond, neg, ckpt, track, n, X_COND, "instdiff/frames_moving_ball")
    return wf


AD_EVOLVED = "ComfyUI-AnimateDiff-Evolved"


def frames_animatediff_context():
    """A track on 24 frames sampled through AnimateDiff-Evolved's context windows (Use Evolved Sampling + Context
    Options Standard Static), without a motion model; needs the AnimateDiff-Evolved pack."""
    wf = Workflow()
    n, length, overlap = 24, 16, 4
    track = _table_and_ball_track(
        wf, n, f"0: box 16,224,128,128\n{n // 2}: box 192,96,128,128\n{n - 1}: box 368,224,128,128")
    note = f"""InstanceDiffusion + ANIMATEDIFF-EVOLVED CONTEXT WINDOWS (per-frame layouts on {n} frames)

NEEDS the {AD_EVOLVED} pack (github.com/Kosinkadink/{AD_EVOLVED}; ComfyUI Manager: 'AnimateDiff Evolved'). Without it the two purple nodes are missing.

HOW IT WORKS
'Instance Track: Keyframes' moves the ball over {n} frames (frame 0 -> {n // 2} -> {n - 1}, linear); the table is on every frame. The Conditioning node computes the grounding of all {n} frames once. 'Context Options Standard Static' ({length} frames per window, {overlap} overlapping) + 'Use Evolved Sampling' make the KSampler denoise the batch window by window; InstanceDiffusion grounds every latent of a window by its own frame (the window's frame numbers, not its position in the window), so the result is the same as without windows, in less memory. Set the Empty Latent Image batch_size to the track's frames.

MOTION MODEL (optional, for temporal coherence)
This workflow runs without one: the frames are independent images that only share the layout. For an AnimateDiff video, put an SD1.5 motion model (e.g. v3_sd15_mm.ckpt from huggingface.co/guoyww/animatediff) in ComfyUI/models/animatediff_models, add 'Load AnimateDiff Model' -> 'Apply AnimateDiff Model' and connect its M_MODELS to 'Use Evolved Sampling' m_models (beta_schedule autoselect then picks the motion model's schedule) and keep context_length at 16, the window SD1.5 motion models are trained on. The pack's tests run this workflow without a motion model; with one it is untested.

The multi-instance sampler refuses tracks.

{KNOBS_TEXT}

{WEIGHTS_TEXT}"""
    wf.note(note, (-520, 0), size=(480, 900))
    ckpt, model, cond, neg = _grounded_track(wf, track, "a red rubber ball bouncing on a wooden table, studio photo")
    cx = X_COND
    ad_colour, ad_bg = "#323", "#535"
    ctx = wf.node("ADE_StandardStaticContextOptions", (cx, 600),
                  {"context_length": length, "context_overlap": overlap}, title="Context Options (AnimateDiff)",
                  color=ad_colour, bgcolor=ad_bg)
    evolved = wf.node("ADE_UseEvolvedSampling", (cx, 880), {"beta_schedule": "autoselect"},
                      title="Use Evolved Sampling (AnimateDiff)", color=ad_colour, bgcolor=ad_bg)
    wf.link(model, 0, evolved, "model")
    wf.link(ctx, 0, evolved, "context_options")
    _sample_frames(wf, evolved, cond, neg, ckpt, track, n, cx, "instdiff/frames_animatediff_context")
    return wf


BUILDERS = {
    "layout_editor": layout_editor,
    "boxes_cat_dog_robin": boxes_cat_dog_robin,
    "masks": masks,
    "points_palm": points_palm,
    "scribbles": scribbles,
    "layout_from_json": layout_from_json,
    "iterative_editing": iterative_editing,
    "refiner_cascade": refiner_cascade,
    "multi_instance_sampler": multi_instance_sampler,
    "official_demo_settings": official_demo_settings,
    "frames_moving_ball": frames_moving_ball,
    "frames_animatediff_context": frames_animatediff_context,
}
NEEDS_AD_EVOLVED = {"frames_animatediff_context"}     # built only where AnimateDiff-Evolved loads


def layout_subprompt(prompt: dict) -> dict | None:
    """The part of an API prompt that draws the workflow's first layout on a blank canvas (its first Layout Preview,
    without the generated image, and everything upstream of it), ending in a SaveImage; None without a preview."""
    previews = [nid for nid, e in sorted(prompt.items(), key=lambda kv: int(kv[0]))
                if e["class_type"] == "InstanceLayoutPreview"]
    if not previews:
        return None
    blank = [nid for nid in previews if "image" not in prompt[nid]["inputs"]]
    preview = (blank or previews)[0]
    prompt = {**prompt, preview: {**prompt[preview], "inputs": {k: v for k, v in prompt[preview]["inputs"].items()
                                                                if k != "image"}}}
    keep, todo = set(), [preview]
    while todo:
        nid = todo.pop()
        if nid in keep:
            continue
        keep.add(nid)
        todo += [v[0] for v in prompt[nid]["inputs"].values() if isinstance(v, list) and len(v) == 2]
    sub = {nid: prompt[nid] for nid in keep}
    sub["thumb"] = {"class_type": "SaveImage", "inputs": {"images": [preview, 0], "filename_prefix": "thumb"}}
    return sub


def write_thumbnail(data: dict, path: str, width: int = 512) -> bool:
    """``<workflow>.jpg`` for ComfyUI's template browser: the workflow's layout as Layout Preview draws it."""
    from PIL import Image

    sub = layout_subprompt(wc.to_api_prompt(data, comfy_harness.object_info))
    if sub is None:
        return False
    result = comfy_harness.run_prompt(sub)
    with Image.open(result["images"]["thumb"][0]) as im:
        im = im.convert("RGB")
        im = im.resize((width, max(1, round(im.height * width / im.width))), Image.Resampling.LANCZOS)
        im.save(path, quality=88)
    return True


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(__doc__)
        return 2
    out_dir, only = argv[0], argv[1:] or list(BUILDERS)
    host, pack = load_pack(placeholders={"checkpoints": [CKPT, REFINER], "instance_diffusion": [WEIGHTS]})
    if host is None:
        print(pack)
        return 1
    from PIL import Image
    Image.new("RGBA", (512, 512)).save(os.path.join(host["dirs"]["input"], "example.png"))
    os.makedirs(out_dir, exist_ok=True)
    if NEEDS_AD_EVOLVED & set(only):
        ok, why = comfy_harness.load_animatediff_evolved(host["base"])
        if not ok:
            skipped = sorted(NEEDS_AD_EVOLVED & set(only))
            print(f"not building {', '.join(skipped)}: {why}")
            only = [n for n in only if n not in NEEDS_AD_EVOLVED]
    for name in only:
        wf = BUILDERS[name]()
        data = wf.to_json()
        problems = wc.check_workflow(data, comfy_harness.object_info)
        if problems:
            print("\n".join(problems))
            return 1
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        thumb = write_thumbnail(data, os.path.join(out_dir, f"{name}.jpg"))
        print(f"wrote {name}.json: {len(data['nodes'])} nodes, {len(data['links'])} links"
              + (f", thumbnail {name}.jpg" if thumb else ", no layout preview: no thumbnail"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
