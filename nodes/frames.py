"""Instances over time: track nodes that build per-frame layouts (``FrameLayouts``) on the INSTANCE_LAYOUT socket,
and what the Conditioning node and Layout Preview do with them.

A track's frames are the latent batch indices (a batch of images, or the frames of a video model). The
Conditioning node runs the position net once per prompt for all frames (distinct frames only, a few per forward)
and attaches tokens ``[F, 184, D]``; the UniFusion patch maps each batch row to its frame (``patching.frames_of_call``:
latent batches, cond/uncond chunks, ComfyUI context windows, AnimateDiff-Evolved sliding context). The rules for
keyframes, masks, BOUNDING_BOX and TRACKING are in ``instancediffusion_core/layout/frames.py``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..instancediffusion_core.layout.frames import (AFTER_LAST, INTERPOLATIONS, MATCH_RULES, FrameLayouts,
                                                   build_frame_grounding, frame_layouts_from_tracks,
                                                   interpolate_track, parse_keyframes, parse_prompt_lines,
                                                   track_from_masks, tracks_from_bounding_boxes, tracks_from_tracking)
from ..instancediffusion_core.layout.preview import draw_layout
from ..instancediffusion_core.layout.types import Layout, LayoutError, MAX_INSTANCES
from .types import CATEGORY, INSTANCE_LAYOUT

_CAT = CATEGORY + "/layout"
POSITION_NET_CHUNK = 4          # distinct frames per position-net forward (segs are 30 x 512 x 512 per frame)
MIS_REFUSAL = ("the multi-instance sampler does not support per-frame layouts (tracks): its per-instance passes "
               "would ground every frame with one layout. Sample the track with KSampler / SamplerCustom (after "
               "Apply UniFusion), or give the multi-instance sampler a single-frame layout.")

_LAYOUT_IN = (INSTANCE_LAYOUT, {"tooltip": "The layout to add this track to: a canvas from 'Instance Layout' (its "
                                           "instances stay on every frame) or another track node's output."})
_PROMPT = ("STRING", {"multiline": False, "default": "",
                      "tooltip": "What this instance is, e.g. 'a red car'. The same instance on every frame."})
_AFTER_LAST = (list(AFTER_LAST), {"default": "error", "tooltip":
    "When the batch has more latents than the track has frames: error (default) names both numbers; hold repeats "
    "the last frame; loop starts again at frame 0. Applies to the whole track layout (the node nearest the "
    "Conditioning decides). A track longer than the batch always uses its first frames."})


def _check_track_frames(layout, n: int, what: str) -> None:
    if isinstance(layout, FrameLayouts) and layout.num_frames != n:
        raise LayoutError(f"{what}: the track has {n} frames but the incoming layout has {layout.num_frames}; give "
                          f"every track node the same number of frames", field="frames")


def _append_tracks(layout, tracks, after_last: str, what: str) -> FrameLayouts:
    if not isinstance(layout, (Layout, FrameLayouts)):
        raise LayoutError(f"{what}: layout must come from 'Instance Layout' or a layout node, got "
                          f"{type(layout).__name__}", field="layout")
    for cap, _t in tracks:
        if not isinstance(cap, str) or not cap.strip():
            raise LayoutError(f"{what}: an instance prompt is empty; write what the instance is", field="prompt")
    if len(layout.instances) + len(tracks) > MAX_INSTANCES:
        raise LayoutError(f"{what}: {len(layout.instances)} + {len(tracks)} instances is more than the model's "
                          f"{MAX_INSTANCES} slots", field="instances")
    out = frame_layouts_from_tracks(layout.width, layout.height, tracks, layout.caption, base=layout)
    return out.with_after_last(after_last)


class InstanceTrackKeyframes:
    DESCRIPTION = ("Adds an instance that moves over the frames of a batch (frame = latent batch index): its box, "
                   "point, scribble or mask at some keyframes, interpolated in between. Boxes, points and scribbles "
                   "with the same number of points move linearly; masks hold the earlier keyframe. Before the first "
                   "keyframe the instance is absent, after the last it stays; 'frame: none' hides it.")
    CATEGORY = _CAT
    FUNCTION = "add"
    RETURN_TYPES = (INSTANCE_LAYOUT,)
    RETURN_NAMES = ("layout",)
    OUTPUT_TOOLTIPS = ("Per-frame layouts (a track); connect to InstanceDiffusion Conditioning or Layout Preview.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "layout": _LAYOUT_IN, "prompt": _PROMPT,
            "frames": ("INT", {"default": 16, "min": 1, "max": 4096, "tooltip":
                "Number of frames of the track; set it to the latent batch size (or video length)."}),
            "keyframes": ("STRING", {"multiline": True, "default": "0: box 32,192,128,128\n15: box 352,192,128,128",
                                     "tooltip": "One line per keyframe: 'frame: box x,y,width,height', 'frame: point "
                                                "x,y', 'frame: scribble x,y x,y ...', 'frame: mask k' (mask k of the "
                                                "mask input), any mix on one line, or 'frame: none' (absent from "
                                                "there to the next keyframe). Canvas pixels, frames from 0."}),
            "interpolation": (list(INTERPOLATIONS), {"default": "linear", "tooltip":
                "linear: boxes, points (and scribbles with equal point counts) move evenly between keyframes, masks "
                "hold; hold: each keyframe stays until the next; nearest: the nearer keyframe."}),
            "after_last": _AFTER_LAST,
        }, "optional": {
            "mask": ("MASK", {"tooltip": "Masks the 'mask k' keyframes refer to (a batch; k = index), canvas size."}),
        }}

    def add(self, layout, prompt, frames, keyframes, interpolation="linear", after_last="error", mask=None):
        what = f"instance {len(layout.instances)} ({str(prompt)[:30]!r}) keyframes"
        _check_track_frames(layout, frames, what)
        masks = None
        if mask is not None:
            arr = mask.detach().cpu().float().numpy()
            arr = arr[None] if arr.ndim == 2 else arr
            if arr.shape[1:] != (layout.height, layout.width):
                raise LayoutError(f"{what}: the masks are {arr.shape[2]}x{arr.shape[1]} px but the canvas is "
                                  f"{layout.width}x{layout.height}; resize the masks", field="mask")
            masks = [m > 0.5 for m in arr]
        track = interpolate_track(parse_keyframes(keyframes, prompt, masks), frames, interpolation)
        return (_append_tracks(layout, [(prompt, track)], after_last, what),)


class InstanceTrackMasks:
    DESCRIPTION = ("Adds an instance placed by one mask per frame: a MASK batch [frames, height, width] (e.g. from a "
                   "segmentation or tracking node). A frame whose mask is empty leaves the instance out of that frame.")
    CATEGORY = _CAT
    FUNCTION = "add"
    RETURN_TYPES = (INSTANCE_LAYOUT,)
    RETURN_NAMES = ("layout",)
    OUTPUT_TOOLTIPS = ("Per-frame layouts (a track).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "layout": _LAYOUT_IN, "prompt": _PROMPT,
            "mask": ("MASK", {"tooltip": "One mask per frame [frames, height, width] of the canvas size; pixels above "
                                         "0.5 belong to the instance. The batch size is the number of frames."}),
            "after_last": _AFTER_LAST,
        }}

    def add(self, layout, prompt, mask, after_last="error"):
        what = f"instance {len(layout.instances)} ({str(prompt)[:30]!r}) mask batch"
        arr = mask.detach().cpu().float().numpy()
        arr = arr[None] if arr.ndim == 2 else arr
        if arr.shape[1:] != (layout.height, layout.width):
            raise LayoutError(f"{what}: the masks are {arr.shape[2]}x{arr.shape[1]} px but the canvas is "
                              f"{layout.width}x{layout.height}; resize the masks or set the canvas", field="mask")
        if isinstance(layout, FrameLayouts) and arr.shape[0] < layout.num_frames:
            raise LayoutError(f"{what}: {arr.shape[0]} masks but the track has {layout.num_frames} frames; give one "
                              f"mask per frame", field="mask")
        track = track_from_masks(prompt, arr)
        return (_append_tracks(layout, [(prompt, track)], after_last, what),)


class InstanceTracksFromBoxes:
    DESCRIPTION = ("Adds instances from ComfyUI's BOUNDING_BOX (e.g. 'Run Real-Time Detection (RT-DETR)' on a video, "
                   "or 'Create Bounding Boxes'): one list of boxes per frame, matched to the prompt lines by label "
                   "('person: a man in a red coat': the k-th line with a label gets the k-th box with that label on "
                   "each frame, in the detector's order) or by order (line j gets box j). A frame without a matching "
                   "box leaves that instance out of the frame.")
    CATEGORY = _CAT
    FUNCTION = "add"
    RETURN_TYPES = (INSTANCE_LAYOUT,)
    RETURN_NAMES = ("layout",)
    OUTPUT_TOOLTIPS = ("Per-frame layouts (a track), one instance per prompt line.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "layout": (INSTANCE_LAYOUT, {"tooltip": "The canvas (set it to the detected images' size: boxes are in "
                                                    "their pixels) or a track to add to."}),
            "bboxes": ("BOUNDING_BOX", {"forceInput": True, "tooltip":
                "Boxes per frame ({x, y, width, height, label}); a single list means the same boxes on every frame."}),
            "prompts": ("STRING", {"multiline": True, "default": "person: a man in a red coat",
                                   "tooltip": "One instance per line. match 'label': 'label: prompt' (the label as the "
                                              "detector names it, e.g. RT-DETR's COCO classes); match 'order': just "
                                              "the prompt."}),
            "match": (list(MATCH_RULES), {"default": "label", "tooltip":
                "label: by the box's label (label, or metadata.label / metadata.desc; RT-DETR gives labels, "
                "Create Bounding Boxes gives none, so use order with it); order: by position in each frame's list."}),
            "after_last": _AFTER_LAST,
        }}

    def add(self, layout, bboxes, prompts, match="label", after_last="error"):
        what = "bounding boxes"
        lines = parse_prompt_lines(prompts, match)
        tracks = tracks_from_bounding_boxes(bboxes, lines, layout.width, layout.height, match)
        if isinstance(layout, FrameLayouts):
            n = len(tracks[0][1])
            if n == 1:
                tracks = [(c, t * layout.num_frames) for c, t in tracks]
            elif n < layout.num_frames:
                raise LayoutError(f"{what}: {n} frames of boxes but the track has {layout.num_frames} frames",
                                  field="bboxes")
        return (_append_tracks(layout, tracks, after_last, what),)


class InstanceTracksFromTracking:
    DESCRIPTION = ("Adds instances from a TRACKING value of KJNodes' 'Create InstanceDiffusion Tracking' or logtd's "
                   "tracking nodes ({class: {id: [[x0, y0, x1, y1, W, H] or None per frame]}}) with their prompt "
                   "('\"1.person\": \"a man walking\"' per instance). None frames leave the instance out; an unknown "
                   "id or a track that is too short is an error naming it.")
    CATEGORY = _CAT
    FUNCTION = "add"
    RETURN_TYPES = (INSTANCE_LAYOUT,)
    RETURN_NAMES = ("layout",)
    OUTPUT_TOOLTIPS = ("Per-frame layouts (a track), one instance per prompt entry.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "tracking": ("TRACKING", {"forceInput": True, "tooltip":
                "Tracking data: {class: {id: [[x0, y0, x1, y1, W, H] or None, ...]}}; W x H is the canvas."}),
            "prompt": ("STRING", {"multiline": True, "default": '"1.person": "a man walking"',
                                  "tooltip": "Entries '\"id.class\": \"prompt\"' separated by commas or new lines (the "
                                             "prompt output of Create InstanceDiffusion Tracking); one instance each."}),
            "frames": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip":
                "Frames to use; 0 = the longest track. Every named track must have at least this many."}),
            "after_last": _AFTER_LAST,
        }, "optional": {
            "layout": (INSTANCE_LAYOUT, {"tooltip": "Optional layout to add to (same canvas as the tracking's W x H); "
                                                    "without it the canvas comes from the tracking."}),
        }}

    def add(self, tracking, prompt, frames=0, after_last="error", layout=None):
        what = "tracking"
        need = frames or (layout.num_frames if isinstance(layout, FrameLayouts) else 0)
        width, height, tracks = tracks_from_tracking(tracking, prompt, need)
        if layout is None:
            layout = Layout(width, height)
        elif (layout.width, layout.height) != (width, height):
            raise LayoutError(f"{what}: the tracking's canvas is {width}x{height} but the layout's is "
                              f"{layout.width}x{layout.height}; use the same size", field="layout")
        return (_append_tracks(layout, tracks, after_last, what),)


# ------------------------------------------------------------------------------- Conditioning and Preview
def encode_frames(positive, clip, layouts: FrameLayouts, patcher, modalities: str):
    """The Conditioning node's path for a track: per-slot phrases once, the position net on each distinct frame
    (``POSITION_NET_CHUNK`` per forward), tokens ``[F, 184, D]`` on the positive."""
    import node_helpers

    from ..instancediffusion_core.model.drop_config import resolve_drop_config
    from ..instancediffusion_core.model.position_net import DROP_CONFIGS
    from .instance_cond import InstanceConditioning
    from .patching import COND_KEY
    from .tokenizer import encode_phrase, run_position_net

    addons = patcher.model
    prompts = [encode_phrase(clip, cap) for cap in layouts.captions]
    text_dim = addons.text_dim
    for i, p in enumerate(prompts):
        if p.pooled is None or p.pooled.shape[-1] != text_dim:
            got = None if p.pooled is None else p.pooled.shape[-1]
            raise ValueError(f"instance {i} ('{p.caption}'): the CLIP gave a pooled feature of width {got}, the "
                             f"InstanceDiffusion weights need {text_dim} (SD1.5 CLIP-L). Use the SD1.5 checkpoint's "
                             f"CLIP.")
    text = torch.cat([p.pooled.reshape(1, -1).float() for p in prompts]) if prompts else torch.zeros(0, text_dim)
    config = resolve_drop_config(modalities, layouts.slot_modalities())
    drop = DROP_CONFIGS[config]
    firsts, where = layouts.distinct_frames()
    parts = []
    for start in range(0, len(firsts), POSITION_NET_CHUNK):
        chunk = firsts[start:start + POSITION_NET_CHUNK]
        parts.append(run_position_net(patcher, build_frame_grounding(layouts, text, chunk), drop))
    distinct = torch.cat(parts)
    tokens = distinct[torch.tensor(where, dtype=torch.long)]

    def refuse():
        raise ValueError(MIS_REFUSAL)

    data = InstanceConditioning(tokens=tokens, layout=layouts, config=config, prompts=prompts,
                                _single_tokens_fn=refuse)
    return node_helpers.conditioning_set_values(positive, {COND_KEY: data})


def draw_frames(layouts: FrameLayouts, image=None) -> torch.Tensor:
    """One picture per frame ``[F, H, W, 3]``; with an image batch, frame f is drawn on image f (the last image
    for frames past the batch)."""
    out = []
    for f in range(layouts.num_frames):
        bg = None
        if image is not None:
            img = image[min(f, image.shape[0] - 1)]
            bg = (img.cpu().numpy() * 255).clip(0, 255).astype(np.uint8)
        slots = layouts.frame_slots(f)                   # colour and label by slot: stable when one is absent
        pic = draw_layout(layouts.frame(f), image=bg, indices=[i for i, _ in slots])
        arr = np.asarray(pic.convert("RGB"), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(arr)[None])
    sizes = {tuple(t.shape) for t in out}
    if len(sizes) > 1:
        raise LayoutError(f"Layout Preview: the frames drew at different sizes {sorted(sizes)}; give images of one "
                          f"size")
    return torch.cat(out)


NODES = {
    "InstanceTrackKeyframes": (InstanceTrackKeyframes, "Instance Track: Keyframes"),
    "InstanceTrackMasks": (InstanceTrackMasks, "Instance Track: Mask Batch"),
    "InstanceTracksFromBoxes": (InstanceTracksFromBoxes, "Instance Tracks: Bounding Boxes"),
    "InstanceTracksFromTracking": (InstanceTracksFromTracking, "Instance Tracks: TRACKING (KJNodes / logtd)"),
}
