"""Per-frame layouts (tracks) in a real ComfyUI: one position-net pass, each batch row grounded by its own frame under
latent batches, cond/uncond chunks and context windows; the sources; MIS refuses tracks."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from instdiff_testkit.host_fixtures import StubClip, box_layout

STEPS = 2


def _close(a, b, rel=1e-5):
    """Equal up to float round-off: the tiny random UNet's latents reach ~1e2, batched and single matmuls differ
    in the last bits (relative error, of the largest value)."""
    err = float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
    return err < rel, err
BOXES = [(0, 0, 24, 24), (20, 8, 56, 40), (36, 30, 64, 64), (4, 40, 30, 62)]     # one per frame, 64x64 canvas


@pytest.fixture(scope="module")
def frames_mod(pack):
    return importlib.import_module(pack.__name__ + ".instancediffusion_core.layout.frames")


@pytest.fixture(scope="module")
def patched(node, base, instdiff):
    (m,) = node["ApplyUniFusion"].apply(base, instdiff, 1.0, 0.0, 1.0)
    (m,) = node["ApplyScaleU"].apply(m, instdiff)
    return m


def _encode(node, instdiff, layout, text="a scene"):
    clip = StubClip()
    (pos,) = node["InstanceDiffusionConditioning"].encode(clip.encode(text), clip, layout, instdiff, "auto")
    return pos, clip.encode("")


def _sample(model, positive, negative, noise, steps=STEPS, cfg=5.0):
    import comfy.sample
    latent = torch.zeros_like(noise)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", positive, negative, latent, seed=0,
                               disable_pbar=True)


def _keyframe_track(node, pack_core, frames, keyframes, after_last="error", prompt="a red ball"):
    start = pack_core.layout.Layout(width=64, height=64)
    (track,) = node["InstanceTrackKeyframes"].add(start, prompt, frames, keyframes, "hold", after_last)
    return track


def _per_frame_track(node, pack_core, n=4):
    lines = "\n".join(f"{f}: box {b[0]},{b[1]},{b[2] - b[0]},{b[3] - b[1]}" for f, b in enumerate(BOXES[:n]))
    return _keyframe_track(node, pack_core, n, lines)


def test_tokens_once_for_all_frames_and_equal_to_single_layouts(node, instdiff, pack_core):
    track = _per_frame_track(node, pack_core)
    pos, _ = _encode(node, instdiff, track)
    tokens = pos[0][1]["instance_diffusion"].tokens
    assert tokens.shape[0] == 4 and tokens.shape[1] == 184
    for f, b in enumerate(BOXES):
        single, _ = _encode(node, instdiff, box_layout(pack_core, [b], captions=["a red ball"]))
        assert torch.allclose(tokens[f], single[0][1]["instance_diffusion"].tokens[0], atol=1e-5), f"frame {f}"


def test_batch_rows_equal_each_row_sampled_alone(node, instdiff, pack_core, patched):
    """4 latents, 4 different per-frame layouts: each output row = sampling that row alone with its own layout."""
    track = _per_frame_track(node, pack_core)
    pos, neg = _encode(node, instdiff, track)
    noise = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    batched = _sample(patched, pos, neg, noise)
    rows = []
    for f, b in enumerate(BOXES):
        single, _ = _encode(node, instdiff, box_layout(pack_core, [b], captions=["a red ball"]))
        rows.append(_sample(patched, single, neg, noise[f:f + 1]))
    alone = torch.cat(rows)
    ok, err = _close(batched, alone)
    assert ok, f"relative error {err:.2e}"
    assert not torch.allclose(alone[0], alone[1], atol=1e-3), "different layouts must give different rows"
    # the static layout of frame 0 on every row is not the track
    static, _ = _encode(node, instdiff, box_layout(pack_core, [BOXES[0]], captions=["a red ball"]))
    assert not torch.allclose(_sample(patched, static, neg, noise), batched, atol=1e-3)


def _context_model(model, length, overlap):
    import comfy.context_windows as cw
    m = model.clone()
    m.model_options["context_handler"] = cw.IndexListContextHandler(
        context_schedule=cw.get_matching_context_schedule("standard_static"),
        fuse_method=cw.get_matching_fuse_method("pyramid"), context_length=length, context_overlap=overlap,
        context_stride=1, closed_loop=False, dim=0)
    cw.create_prepare_sampling_wrapper(m)
    return m


def test_core_context_windows_match_the_unwindowed_run(node, instdiff, pack_core, patched, frames_mod):
    """A per-frame-independent UNet (the tiny SD1.5 has no temporal layers): windows of 3 frames with overlap 1
    over 6 frames must give the unwindowed result, which holds only if each window row gets its own frame."""
    keyframes = "0: box 0,0,20,20\n5: box 40,40,24,24"
    start = pack_core.layout.Layout(width=64, height=64)
    (track,) = node["InstanceTrackKeyframes"].add(start, "a red ball", 6, keyframes, "linear", "error")
    pos, neg = _encode(node, instdiff, track)
    noise = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    steps = 5       # ComfyUI 0.3.64's context handler compares the [B] timestep with the [steps + 1] sigmas
    plain = _sample(patched, pos, neg, noise, steps=steps)
    seen = []
    fuser = instdiff.model.fuser(instdiff.model.fuser_prefixes[0])
    hook = fuser.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    try:
        windowed = _sample(_context_model(patched, 3, 1), pos, neg, noise, steps=steps)
    finally:
        hook.remove()
    assert seen and max(seen) < 12, f"the context windows did not split the 6 frames (batches {sorted(set(seen))})"
    ok, err = _close(windowed, plain)
    assert ok, f"relative error {err:.2e}"
    # and the windows really ran: a static layout gives another result
    static, _ = _encode(node, instdiff, track.frame(0))
    assert not torch.allclose(_sample(patched, static, neg, noise, steps=steps), plain, atol=1e-3)


def test_context_window_equality_needs_the_frame_mapping(node, instdiff, pack_core, patched, frames_mod, pack,
                                                         monkeypatch):
    """The check above is not vacuous: with every window read as frames 0..L-1 the windowed run differs."""
    patching = importlib.import_module(pack.__name__ + ".nodes.patching")
    monkeypatch.setattr(patching, "frames_of_call", lambda _to, _rows: (None, None))
    with pytest.raises(AssertionError, match="relative error"):
        test_core_context_windows_match_the_unwindowed_run(node, instdiff, pack_core, patched, frames_mod)


def test_frames_of_call_reads_windows(pack):
    patching = importlib.import_module(pack.__name__ + ".nodes.patching")

    class Win:
        index_list = [4, 5, 6]
        dim = 0
        total_frames = 8
    assert patching.frames_of_call({"context_window": Win()}, 3) == ([4, 5, 6], 8)
    w = Win()
    w.causal_anchor_index = 3
    assert patching.frames_of_call({"context_window": w}, 4) == ([3, 4, 5, 6], 8)
    assert patching.frames_of_call({"context_window": Win(), patching.FRAMES_RETAIN_KEY: [0]}, 3) == ([0, 5, 6], 8)
    ad = {"ad_params": {"sub_idxs": [2, 3], "full_length": 10}}
    assert patching.frames_of_call(ad, 2) == ([2, 3], 10)
    assert patching.frames_of_call({}, 5) == (None, None)


def test_token_rows_with_frames(pack):
    patching = importlib.import_module(pack.__name__ + ".nodes.patching")
    four = torch.arange(4.0).reshape(4, 1, 1).expand(4, 2, 1)
    assert patching.tokens_for_rows(four, 3, [0, 1, 2])[:, 0, 0].tolist() == [0, 1, 2]   # more frames: first ones
    assert patching.tokens_for_rows(four, 2, [3, 1])[:, 0, 0].tolist() == [3, 1]
    with pytest.raises(patching.TokenRowError, match=r"4 frames.*6 latents"):
        patching.tokens_for_rows(four, 6, list(range(6)))
    with pytest.raises(patching.TokenRowError, match=r"4 frames.*8 latents"):
        patching.tokens_for_rows(four, 2, [0, 1], total_frames=8)
    assert patching.tokens_for_rows(four, 6, list(range(6)), "hold")[:, 0, 0].tolist() == [0, 1, 2, 3, 3, 3]
    assert patching.tokens_for_rows(four, 6, list(range(6)), "loop")[:, 0, 0].tolist() == [0, 1, 2, 3, 0, 1]


def test_short_track_is_a_clear_error_unless_hold(node, instdiff, pack_core, patched):
    track = _keyframe_track(node, pack_core, 2, "0: box 0,0,20,20\n1: box 30,30,20,20")
    pos, neg = _encode(node, instdiff, track)
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with pytest.raises(Exception, match=r"2 frames.*3 latents"):
        _sample(patched, pos, neg, noise, steps=1)
    held = _keyframe_track(node, pack_core, 2, "0: box 0,0,20,20\n1: box 30,30,20,20", after_last="hold")
    pos_h, _ = _encode(node, instdiff, held)
    out = _sample(patched, pos_h, neg, noise, steps=1)
    assert torch.isfinite(out).all()
    # more frames than latents: the first ones
    long_track = _keyframe_track(node, pack_core, 5, "0: box 0,0,20,20\n4: box 30,30,20,20")
    pos_l, _ = _encode(node, instdiff, long_track)
    assert _sample(patched, pos_l, neg, noise, steps=1).shape == noise.shape


def test_absent_frame_gets_the_empty_slot(node, instdiff, pack_core):
    track = _keyframe_track(node, pack_core, 3, "0: box 0,0,20,20\n1: none\n2: box 0,0,20,20")
    pos, _ = _encode(node, instdiff, track)
    tokens = pos[0][1]["instance_diffusion"].tokens
    empty, _ = _encode(node, instdiff, pack_core.layout.Layout(width=64, height=64))
    assert torch.allclose(tokens[1], empty[0][1]["instance_diffusion"].tokens[0], atol=1e-5)
    assert torch.allclose(tokens[0], tokens[2]) and not torch.allclose(tokens[0], tokens[1], atol=1e-4)


def test_mis_refuses_tracks(node, instdiff, pack_core, patched):
    track = _per_frame_track(node, pack_core)
    pos, neg = _encode(node, instdiff, track)
    with pytest.raises(Exception, match="multi-instance sampler does not support per-frame layouts"):
        node["InstanceDiffusionKSampler"].sample(patched, 0, 2, 5.0, "euler", "normal", pos, neg,
                                                 {"samples": torch.zeros(4, 4, 8, 8)}, 1.0, 0.36)


def test_preview_draws_one_picture_per_frame(node, pack_core):
    track = _per_frame_track(node, pack_core)
    (pics,) = node["InstanceLayoutPreview"].draw(track)
    assert pics.shape[0] == 4 and pics.shape[-1] == 3
    assert not torch.equal(pics[0], pics[1])


def test_mask_batch_source(node, pack_core):
    masks = torch.zeros(3, 64, 64)
    masks[0, 0:20, 0:20] = 1
    masks[2, 30:50, 30:50] = 1                     # frame 1 empty: absent
    (track,) = node["InstanceTrackMasks"].add(pack_core.layout.Layout(width=64, height=64), "a cat", masks)
    assert track.num_frames == 3 and track.frames[1] == (None,)
    assert track.frames[2][0].model_box() == (30.0, 30.0, 50.0, 50.0)
    with pytest.raises(ValueError, match="32x32 px but the canvas is 64x64"):
        node["InstanceTrackMasks"].add(pack_core.layout.Layout(width=64, height=64), "a cat", torch.ones(2, 32, 32))


def test_bounding_box_source(node, pack_core):
    bboxes = [[{"x": 0, "y": 0, "width": 10, "height": 10, "label": "person", "score": 0.9},
               {"x": 30, "y": 30, "width": 20, "height": 20, "label": "dog", "score": 0.8}],
              [{"x": 40, "y": 2, "width": 30, "height": 10, "label": "dog", "score": 0.7}],    # clipped to 64
              []]
    canvas = pack_core.layout.Layout(width=64, height=64)
    (track,) = node["InstanceTracksFromBoxes"].add(canvas, bboxes, "dog: a brown dog\nperson: a man", "label")
    assert track.captions == ("a brown dog", "a man") and track.num_frames == 3
    assert track.frames[0][0].bbox == (30.0, 30.0, 50.0, 50.0) and track.frames[0][1].bbox == (0.0, 0.0, 10.0, 10.0)
    assert track.frames[1][0].bbox == (40.0, 2.0, 64.0, 12.0) and track.frames[1][1] is None
    assert track.frames[2] == (None, None)
    (by_order,) = node["InstanceTracksFromBoxes"].add(canvas, bboxes, "first\nsecond", "order")
    assert by_order.frames[0][1].bbox == (30.0, 30.0, 50.0, 50.0)
    with pytest.raises(ValueError, match="label: prompt"):
        node["InstanceTracksFromBoxes"].add(canvas, bboxes, "a dog without label", "label")


def test_tracking_source(node):
    tracking = {"person": {1: [[0, 0, 20, 20, 64, 64], None, [10, 10, 70, 40, 64, 64]]},
                "dog": {2: [[30, 30, 50, 50, 64, 64], [32, 30, 52, 50, 64, 64]]}}
    (track,) = node["InstanceTracksFromTracking"].add(tracking, '"1.person": "(a man)"', 0, "error")
    assert (track.width, track.height, track.num_frames) == (64, 64, 3)
    assert track.frames[1] == (None,) and track.frames[2][0].bbox == (10.0, 10.0, 64.0, 40.0)
    with pytest.raises(ValueError, match=r"id 7 of class 'person'.*ids: 1"):
        node["InstanceTracksFromTracking"].add(tracking, '"7.person": "x"', 0, "error")
    with pytest.raises(ValueError, match=r"class 'cat'"):
        node["InstanceTracksFromTracking"].add(tracking, '"1.cat": "x"', 0, "error")
    with pytest.raises(ValueError, match=r"track '2.dog' has 2 frames but 3"):
        node["InstanceTracksFromTracking"].add(tracking, '"1.person": "a man",\n"2.dog": "a dog"', 0, "error")
    (two,) = node["InstanceTracksFromTracking"].add(tracking, '"1.person": "a man",\n"2.dog": "a dog"', 2, "error")
    assert two.num_frames == 2 and two.captions == ("a man", "a dog")


def test_track_nodes_have_tooltips(pack):
    for key in ("InstanceTrackKeyframes", "InstanceTrackMasks", "InstanceTracksFromBoxes",
                "InstanceTracksFromTracking"):
        spec = pack.NODE_CLASS_MAPPINGS[key].INPUT_TYPES()
        for group in spec.values():
            for name, (_t, opts) in group.items():
                assert opts.get("tooltip"), f"{key}.{name} has no tooltip"


# ------------------------------------------------------------------ AnimateDiff-Evolved's sliding context (optional)
@pytest.fixture(scope="module")
def ad_nodes(comfy_host):
    import nodes
    from instdiff_testkit import comfy_harness
    ok, why = comfy_harness.load_animatediff_evolved(comfy_host["base"])
    if not ok:
        pytest.skip(why)
    return nodes.NODE_CLASS_MAPPINGS


@pytest.mark.parametrize("order", ["evolved_sampling_last", "unifusion_last"])
def test_animatediff_evolved_sliding_context_matches_the_unwindowed_run(node, base, instdiff, pack_core, patched,
                                                                        ad_nodes, order):
    """AnimateDiff-Evolved's sliding context (ad_params["sub_idxs"]) without a motion model: per-frame-independent,
    so the windowed result must equal the plain batch when each window row gets its frame; in either wrapper order
    (its CALC_COND_BATCH wrapper outside or inside ours)."""
    keyframes = "0: box 0,0,20,20\n5: box 40,40,24,24"
    start = pack_core.layout.Layout(width=64, height=64)
    (track,) = node["InstanceTrackKeyframes"].add(start, "a red ball", 6, keyframes, "linear", "error")
    pos, neg = _encode(node, instdiff, track)
    noise = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    plain = _sample(patched, pos, neg, noise)
    (ctx,) = ad_nodes["ADE_StandardStaticContextOptions"]().create_options(3, 1)
    use = ad_nodes["ADE_UseEvolvedSampling"]()
    if order == "evolved_sampling_last":
        (ad_model,) = use.use_evolved_sampling(patched, "use existing", context_options=ctx)
    else:
        (ad_model,) = use.use_evolved_sampling(base, "use existing", context_options=ctx)
        (ad_model,) = node["ApplyUniFusion"].apply(ad_model, instdiff, 1.0, 0.0, 1.0)
        (ad_model,) = node["ApplyScaleU"].apply(ad_model, instdiff)
    seen = []
    fuser = instdiff.model.fuser(instdiff.model.fuser_prefixes[0])
    hook = fuser.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    try:
        windowed = _sample(ad_model, pos, neg, noise)
    finally:
        hook.remove()
    assert seen and max(seen) < 12, f"the sliding context did not split the 6 frames (batches {sorted(set(seen))})"
    ok, err = _close(windowed, plain)
    assert ok, f"relative error {err:.2e}"


def test_position_net_never_runs_while_sampling_a_track(node, instdiff, pack_core, patched):
    calls = []
    hook = instdiff.model.position_net.register_forward_pre_hook(lambda *_a: calls.append(1))
    try:
        track = _per_frame_track(node, pack_core)
        pos, neg = _encode(node, instdiff, track)
        encoded = len(calls)
        _sample(patched, pos, neg, torch.zeros(4, 4, 8, 8), steps=2)
    finally:
        hook.remove()
    assert encoded == 1, "4 distinct frames: one position-net forward (chunks of 4)"
    assert len(calls) == encoded, "no position-net call during sampling"


def test_static_instance_after_a_track_is_on_every_frame(node, pack_core):
    track = _per_frame_track(node, pack_core)
    (more,) = node["InstanceBox"].add(track, "a wooden table", 0, 48, 64, 16)["result"]
    assert more.num_frames == 4 and more.captions[-1] == "a wooden table"
    assert all(row[-1].bbox == (0.0, 48.0, 64.0, 64.0) for row in more.frames)
    with pytest.raises(ValueError, match="the track has 3 frames but the incoming layout has 4"):
        node["InstanceTrackKeyframes"].add(more, "a cat", 3, "0: point 5,5", "linear", "error")


def test_layout_check_node_checks_every_frame_of_a_track(node, pack_core):
    """Layout Check on a track: the ball is cut by the left edge on frames 0-1 only, reported once with them."""
    track = _keyframe_track(node, pack_core, 6, "0: box 0,20,16,16\n2: box 30,20,16,16", prompt="a red ball")
    out = node["InstanceLayoutCheck"].check(track)
    text, passed = out["result"]
    assert passed is track
    lines = [ln for ln in text.splitlines() if ln.startswith("- [")]
    assert len(lines) == 1 and "[edge] instance 0 ('a red ball'): frames 0-1" in lines[0], text
    assert "left edge" in lines[0]
    assert out["ui"]["instdiff_warnings"] == [lines[0][2:]]                 # shown on the node once, not per frame


def test_preview_colours_stay_with_the_slot_when_one_is_absent(node, pack_core):
    """Slot 0 appears on frame 1 only: on frame 0 slot 1 (the table) must keep its frame-1 colour."""
    start = pack_core.layout.Layout(width=64, height=64)
    (track,) = node["InstanceTrackKeyframes"].add(start, "a red ball", 2, "0: none\n1: box 4,4,20,20", "hold",
                                                  "error")
    (track,) = node["InstanceBox"].add(track, "a wooden table", 30, 40, 30, 20)["result"]
    (pics,) = node["InstanceLayoutPreview"].draw(track)
    px = lambda f, x, y: tuple(int(round(float(v) * 255)) for v in pics[f, y, x])
    colour = pack_core.layout.preview.instance_colour
    for x, y in ((45, 59), (59, 50)):                       # the table's bottom and right edges
        assert px(0, x, y) == px(1, x, y) == colour(1)
