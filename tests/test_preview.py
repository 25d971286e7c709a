"""Layout preview: colours at known pixels, scaling over another image size, and the preview CLI."""
import json

import numpy as np
from PIL import Image

from instancediffusion_core.layout.types import Instance, Layout
from instancediffusion_core.layout.preview import BACKGROUND, MASK_ALPHA, cli_main, draw_layout, instance_colour


def _layout():
    mask = np.zeros((100, 200), bool)
    mask[50:90, 130:190] = True
    return Layout(200, 100, "scene", (
        Instance("box", bbox=(20, 10, 120, 60)),
        Instance("mask", mask=mask),
        Instance("point", point=(60, 85)),
        Instance("scribble", scribble=((140, 10), (190, 10))),
    ))


def _px(img, x, y):
    return tuple(int(v) for v in np.asarray(img)[y, x])


def test_distinct_colours_for_30_instances():
    colours = [instance_colour(i) for i in range(30)]
    assert len(set(colours)) == 30


def test_pixels_on_blank_canvas():
    img = draw_layout(_layout())
    assert img.size == (200, 100) and img.mode == "RGB"
    c0, c1, c2, c3 = (instance_colour(i) for i in range(4))
    assert _px(img, 70, 10) == c0 and _px(img, 70, 59) == c0 and _px(img, 119, 40) == c0  # box edges
    assert _px(img, 100, 45) == BACKGROUND  # inside an unfilled box
    assert _px(img, 5, 5) == BACKGROUND  # outside everything
    blended = tuple(int(round(b * (1 - MASK_ALPHA) + c * MASK_ALPHA)) for b, c in zip(BACKGROUND, c1))
    assert _px(img, 170, 80) == blended  # mask fill is translucent
    assert _px(img, 189, 80) == c1  # mask outline (last mask column)
    assert _px(img, 60, 85) == c2  # point marker
    assert _px(img, 165, 10) == c3  # scribble polyline


def test_label_is_drawn_at_the_box_corner():
    img = np.asarray(draw_layout(_layout()))
    c0 = np.array(instance_colour(0))
    label = img[12:22, 22:60]
    assert (label == c0).all(axis=-1).mean() > 0.4  # label background in the instance colour
    assert (label != c0).any(axis=-1).any()  # with text on it


def test_drawing_over_an_image_of_another_size_scales_coordinates():
    base = np.full((200, 400, 3), 40, dtype=np.uint8)
    img = draw_layout(_layout(), image=base)
    assert img.size == (400, 200)
    assert _px(img, 140, 20) == instance_colour(0)  # top edge of the box, scaled x2
    assert _px(img, 200, 90) == (40, 40, 40)  # box interior shows the image
    c1 = instance_colour(1)
    blended = tuple(int(round(40 * (1 - MASK_ALPHA) + c * MASK_ALPHA)) for c in c1)
    assert _px(img, 340, 160) == blended
    assert _px(img, 120, 170) == instance_colour(2)  # point (60, 85) -> (120, 170)


def test_float_image_pil_image_and_explicit_size():
    as_float = draw_layout(_layout(), image=np.full((100, 200, 3), 0.5, dtype=np.float32))
    assert _px(as_float, 100, 45) == (128, 128, 128)
    as_pil = draw_layout(_layout(), image=Image.new("L", (200, 100), 10))
    assert _px(as_pil, 100, 45) == (10, 10, 10)
    bigger = draw_layout(_layout(), size=(400, 200))
    assert bigger.size == (400, 200) and _px(bigger, 140, 20) == instance_colour(0)


def test_layout_is_not_modified_by_drawing():
    layout = _layout()
    snapshot = [(i.bbox, i.point, i.scribble, None if i.mask is None else i.mask.copy()) for i in layout.instances]
    draw_layout(layout, size=(50, 25))
    for inst, (bbox, point, scribble, mask) in zip(layout.instances, snapshot):
        assert (inst.bbox, inst.point, inst.scribble) == (bbox, point, scribble)
        assert mask is None or np.array_equal(inst.mask, mask)


def test_cli_writes_png_and_reports_decision(tmp_path, capsys):
    doc = {"caption": "c", "width": 256, "height": 128,
           "annos": [{"caption": "wide car", "bbox": [60, 20, 250, 100]}, {"caption": "dog", "point": [30, 40]}]}
    src = tmp_path / "layout.json"
    src.write_text(json.dumps(doc))
    out = tmp_path / "preview.png"
    assert cli_main([str(src), str(out), "--size", "512x256"]) == 0
    printed = capsys.readouterr().out
    assert "bbox format xyxy" in printed and "impossible" in printed and "wrote" in printed
    img = Image.open(out)
    assert img.format == "PNG" and img.size == (512, 256)
    assert _px(img.convert("RGB"), 200, 40) == instance_colour(0)  # top edge y=20 -> 40 at 2x
    # forcing the official format: 60 + 250 > 256, so the box is clipped and the CLI says so
    assert cli_main([str(src), str(tmp_path / "b.png"), "--bbox-format", "xywh"]) == 0
    assert "clipped" in capsys.readouterr().out


def test_cli_errors_return_non_zero(tmp_path, capsys):
    assert cli_main([str(tmp_path / "missing.json"), str(tmp_path / "x.png")]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli_main(["only-one-arg"]) == 2
    assert cli_main([str(tmp_path / "a.json"), str(tmp_path / "x.png"), "--size", "big"]) == 2
    assert not (tmp_path / "x.png").exists()


def test_track_frame_colours_follow_the_slot_not_the_position():
    """A track (FrameLayouts) drawn frame by frame the way Layout Preview does it: slot 0 is absent on frame 1,
    slots 1 and 2 keep their frame-0 colours (box outlines and label backgrounds), and their labels keep the
    slot numbers."""
    from instancediffusion_core.layout.frames import FrameLayouts

    a = Instance("a red ball", bbox=(10, 10, 60, 60))
    b = Instance("a cat", bbox=(80, 20, 140, 80))
    c = Instance("a dog", bbox=(150, 30, 195, 90))
    track = FrameLayouts(200, 100, "scene", ("a red ball", "a cat", "a dog"), ((a, b, c), (None, b, c)))
    pics = []
    for f in range(2):
        slots = track.frame_slots(f)
        pics.append(draw_layout(track.frame(f), indices=[i for i, _ in slots]))
    for x, y, slot in ((110, 79, 1), (139, 50, 1), (172, 89, 2), (194, 60, 2)):   # bottom / right edges
        assert _px(pics[0], x, y) == _px(pics[1], x, y) == instance_colour(slot)
    assert _px(pics[1], 35, 59) == BACKGROUND                                          # slot 0 is gone
    assert _px(pics[1], 110, 79) != instance_colour(0)                                 # not shifted onto slot 0
    # label backgrounds (top-left of each box) are identical on both frames
    f0, f1 = np.asarray(pics[0]), np.asarray(pics[1])
    assert np.array_equal(f0[22:30, 82:120], f1[22:30, 82:120])
    assert np.array_equal(f0[32:40, 152:190], f1[32:40, 152:190])
    # without indices the old behaviour (position = colour) is what frame 1 would show: a different picture
    assert _px(draw_layout(track.frame(1)), 110, 79) == instance_colour(0)


def test_indices_must_match_the_instances():
    import pytest
    from instancediffusion_core.layout.types import LayoutError

    with pytest.raises(LayoutError, match="2 indices for 4 instances"):
        draw_layout(_layout(), indices=[0, 1])
