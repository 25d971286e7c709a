"""Layout data type: canonical types, immutability, and validation messages that name index, field, value, fix."""
import math

import numpy as np
import pytest

from instancediffusion_core.layout.types import MAX_INSTANCES, Instance, Layout, LayoutError, validate


def _mask(h=64, w=96, box=(10, 20, 30, 40)):
    m = np.zeros((h, w), dtype=bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


def test_instance_converts_to_canonical_types():
    inst = Instance("a cat", bbox=[1, 2, 30, 40], point=np.array([5, 6]), scribble=[[1, 2], (3, 4)],
                    mask=np.ones((4, 4), dtype=np.uint8))
    assert inst.bbox == (1.0, 2.0, 30.0, 40.0) and all(type(v) is float for v in inst.bbox)
    assert inst.point == (5.0, 6.0)
    assert inst.scribble == ((1.0, 2.0), (3.0, 4.0))
    assert inst.mask.dtype == bool and inst.mask.all()
    assert inst.modalities() == {"box", "point", "scribble", "mask"}


def test_float_mask_is_thresholded_at_half():
    inst = Instance("x", mask=np.array([[0.2, 0.6], [0.5, 1.0]], dtype=np.float32))
    assert inst.mask.tolist() == [[False, True], [False, True]]


def test_instance_and_layout_are_immutable_and_mask_is_a_readonly_copy():
    source = _mask()
    inst = Instance("a cat", mask=source)
    source[:] = False  # the caller's array changing must not change the instance
    assert inst.mask.any()
    with pytest.raises(ValueError):
        inst.mask[0, 0] = True
    with pytest.raises(AttributeError):
        inst.caption = "dog"
    layout = Layout(96, 64, "scene", (inst,))
    with pytest.raises(AttributeError):
        layout.width = 10


def test_with_instance_and_extend_return_new_layouts():
    base = Layout(100, 80, "scene")
    one = base.with_instance(Instance("a", bbox=(0, 0, 10, 10)))
    two = one.with_instance(Instance("b", point=(50, 40)))
    assert len(base.instances) == 0 and len(one.instances) == 1 and len(two.instances) == 2
    merged = one.extend(Layout(100, 80, "other", (Instance("c", scribble=((1, 1), (20, 30))),)))
    assert [i.caption for i in merged.instances] == ["a", "c"] and merged.caption == "scene"
    assert Layout(100, 80).extend(Layout(100, 80, "other")).caption == "other"
    assert two.modalities() == {"box", "point"}
    assert merged.modalities() == {"box", "scribble"}


def test_extend_rejects_other_canvas():
    with pytest.raises(LayoutError, match=r"100x80.*same canvas"):
        Layout(100, 80).extend(Layout(50, 50))


def test_equality_and_hash_include_mask_content():
    a = Instance("cat", bbox=(0, 0, 5, 5), mask=_mask())
    b = Instance("cat", bbox=(0, 0, 5, 5), mask=_mask())
    c = Instance("cat", bbox=(0, 0, 5, 5), mask=_mask(box=(11, 20, 30, 40)))
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert a != Instance("cat", bbox=(0, 0, 5, 5))
    assert Layout(96, 64, "", (a,)) == Layout(96, 64, "", (b,))


@pytest.mark.parametrize("inst, field, fix", [
    (Instance("", bbox=(0, 0, 5, 5)), "caption", "phrase"),
    (Instance("   ", bbox=(0, 0, 5, 5)), "caption", "phrase"),
    (Instance("cat"), "no location", "box, a point"),
    (Instance("cat", bbox=(0, 0, 5)), "bbox", "(x0, y0, x1, y1)"),
    (Instance("cat", bbox=(0, 0, math.nan, 5)), "bbox", "(x0, y0, x1, y1)"),
    (Instance("cat", bbox=(0, 0, math.inf, 5)), "bbox", "(x0, y0, x1, y1)"),
    (Instance("cat", bbox=(10, 10, 10, 20)), "bbox", "zero or negative size"),
    (Instance("cat", bbox=(10, 10, 5, 20)), "bbox", "not (x, y, width, height)"),
    (Instance("cat", bbox=(-1, 0, 5, 5)), "bbox", "outside"),
    (Instance("cat", bbox=(0, 0, 97, 5)), "bbox", "x0 < x1 <= 96"),
    (Instance("cat", bbox=(0, 0, 5, 65)), "bbox", "y0 < y1 <= 64"),
    (Instance("cat", point=(97, 3)), "point", "0 <= x <= 96"),
    (Instance("cat", point=(3,)), "point", "(x, y)"),
    (Instance("cat", point=(3, math.nan)), "point", "(x, y)"),
    (Instance("cat", scribble=((1, 1),)), "scribble", "at least 2"),
    (Instance("cat", scribble=((1, 1), (1, 1))), "scribble", "at least 2"),
    (Instance("cat", scribble=((1, 1), (1, 2, 3))), "scribble", "(x, y)"),
    (Instance("cat", scribble=((1, 1), (100, 2))), "scribble", "point 1"),
    (Instance("cat", mask=np.zeros((64, 96), bool)), "mask", "no pixel"),
    (Instance("cat", mask=np.ones((96, 64), bool)), "mask", "[64, 96]"),
    (Instance("cat", mask=np.ones(5, bool)), "mask", "[64, 96]"),
])
def test_invalid_instance_message_names_index_field_value_and_fix(inst, field, fix):
    good = Instance("ok", bbox=(0, 0, 5, 5))
    with pytest.raises(LayoutError) as err:
        Layout(96, 64, "", (good, inst))
    msg = str(err.value)
    assert msg.startswith("instance 1"), msg
    assert field in msg and fix in msg, msg


def test_bad_value_is_quoted_in_message():
    with pytest.raises(LayoutError, match=r"\(10\.0, 10\.0, 5\.0, 20\.0\)"):
        Layout(96, 64, "", (Instance("cat", bbox=(10, 10, 5, 20)),))


def test_edges_of_the_canvas_are_allowed():
    layout = Layout(96, 64, "", (Instance("a", bbox=(0, 0, 96, 64)), Instance("b", point=(96, 64)),
                                 Instance("c", scribble=((0, 0), (96, 64)))))
    assert len(layout) == 3


@pytest.mark.parametrize("w, h", [(0, 64), (96, -1), (96.5, 64), ("96", 64), (True, 64)])
def test_canvas_size_must_be_positive_int(w, h):
    with pytest.raises(LayoutError, match=r"layout (width|height).*positive whole number"):
        Layout(w, h)


def test_integral_float_canvas_is_accepted():
    assert Layout(96.0, 64).width == 96


def test_more_than_max_instances_is_rejected_with_count():
    insts = tuple(Instance(f"i{k}", point=(k, k)) for k in range(MAX_INSTANCES + 1))
    with pytest.raises(LayoutError, match=r"31 instances.*30 slots; remove 1"):
        Layout(96, 64, "", insts)
    assert len(Layout(96, 64, "", insts[:MAX_INSTANCES])) == MAX_INSTANCES


def test_with_instance_validates_the_new_instance():
    with pytest.raises(LayoutError, match="instance 0"):
        Layout(96, 64).with_instance(Instance("cat", point=(200, 3)))


def test_validate_can_be_called_directly():
    layout = Layout(96, 64, "", (Instance("a", bbox=(0, 0, 5, 5)),))
    validate(layout)  # a valid layout passes again
    object.__setattr__(layout, "instances", (Instance("a", bbox=(0, 0, 500, 5)),))
    with pytest.raises(LayoutError, match="instance 0"):
        validate(layout)


# ------------------------------------------------------------------------------------ error fields, geometry

@pytest.mark.parametrize("inst, index, field", [
    (Instance("", bbox=(0, 0, 4, 4)), 1, "caption"),
    (Instance("a", bbox=(5, 5, 2, 8)), 1, "bbox"),
    (Instance("a", point=(90, 2)), 1, "point"),
    (Instance("a", scribble=((1, 1), (1, 1))), 1, "scribble"),
    (Instance("a", mask=np.zeros((8, 8), bool)), 1, "mask"),
])
def test_layout_error_names_index_and_field(inst, index, field):
    ok = Instance("fine", bbox=(0, 0, 4, 4))
    with pytest.raises(LayoutError) as e:
        Layout(16, 16, "", (ok, inst))
    assert (e.value.index, e.value.field) == (index, field)


def test_too_many_instances_error_has_index_30():
    insts = tuple(Instance(f"o{i}", point=(1, 1)) for i in range(MAX_INSTANCES + 1))
    with pytest.raises(LayoutError) as e:
        Layout(8, 8, "", insts)
    assert (e.value.index, e.value.field) == (MAX_INSTANCES, "instances")


def test_model_box_extent_and_anchor_follow_one_rule():
    mask = np.zeros((20, 20), bool)
    mask[3:7, 5:12] = True
    boxed = Instance("b", bbox=(1, 2, 9, 10), point=(4, 4), mask=mask)
    masked = Instance("m", mask=mask, point=(15, 15))
    scribbled = Instance("s", scribble=((2, 9), (6, 3), (4, 5)))
    pointed = Instance("p", point=(7, 8))
    assert boxed.model_box() == (1, 2, 9, 10) and boxed.extent() == (1, 2, 9, 10)
    assert masked.model_box() == (5.0, 3.0, 12.0, 7.0) == masked.extent()
    assert scribbled.model_box() is None and scribbled.extent() == (2, 3, 6, 9)
    assert pointed.model_box() is None and pointed.extent() is None
    assert boxed.anchor() == ("corner", (1, 2)) and masked.anchor() == ("corner", (5.0, 3.0))
    assert pointed.anchor() == ("point", (7, 8)) and scribbled.anchor() == ("scribble", (2, 9))


def test_only_keeps_one_instance_on_the_same_canvas():
    layout = Layout(32, 16, "scene", (Instance("a", point=(1, 1)), Instance("b", bbox=(2, 2, 8, 8))))
    single = layout.only(1)
    assert (single.width, single.height, single.caption) == (32, 16, "scene")
    assert single.instances == (layout.instances[1],)
    assert layout.only(0, caption="a alone").caption == "a alone"
    with pytest.raises(LayoutError, match="no such instance") as e:
        layout.only(2)
    assert e.value.index == 2
