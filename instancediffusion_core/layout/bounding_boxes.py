"""ComfyUI's core ``BOUNDING_BOX`` type <-> a still layout (one image), so core detectors (RT-DETR, SAM3, MediaPipe)
and the core bounding-box canvas (Create Bounding Boxes) plug into a layout, and a layout plugs into core nodes
(Draw BBoxes, Create Bounding Boxes, Layers From Bounding Boxes). No ComfyUI import.

The value: a dict (one box), a list of dicts (one image) or a list of lists of dicts (one list per image), each box
``{x, y, width, height}`` in pixels, with ``label`` and ``score`` from detectors (RT-DETR sorts by score) and
``metadata`` from the canvas; parsed by ``frames.bounding_box_frames``.

Rules (decided here):
- into a layout: the boxes of image ``image_index``, matched to the prompt lines as the track node does
  (``frames.py``): ``label``: lines ``label: prompt``, the k-th line with label L gets the k-th box labelled L in
  the list's order (label = ``label`` or ``metadata.label``/``metadata.desc``, case-insensitive); ``order``: line j
  gets box j. A line with no box to get is an error naming the line and the labels present (an instance silently
  missing from a still image is a wrong picture); a box that no line takes is left out with one warning listing
  them. Boxes enter through ``box_fit.fit_box`` (the one box policy: partly outside clipped with a warning,
  entirely outside or no size an error). The box's label becomes the instance's ``category``.
- out of a layout: per image one list of ``{x, y, width, height, label, metadata: {desc}}`` (the keys of RT-DETR's
  boxes, and the canvas' caption field), label and desc the instance's caption, numbers whole where they are;
  a box is the instance's ``extent()`` (its box, else its mask's extent, else its scribble's bounding box); an
  instance with only a point has no box and is left out with a warning. A per-frame layout (track) gives one list
  per frame, with the instances present on that frame.
"""
from __future__ import annotations

from typing import Any

from .box_fit import fit_box, plain_number, shown_box
from .frames import FrameLayouts, bounding_box_frames, box_corners, box_label, parse_prompt_lines
from .types import Instance, Layout, LayoutError

_SHOWN_IGNORED = 8          # boxes named in the "no prompt line" warning before "and N more"


def _labels_present(boxes: list[dict]) -> str:
    counts: dict[str, int] = {}
    for d in boxes:
        label = box_label(d) or "(no label)"
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{k!r} ({n})" for k, n in counts.items()) or "none (the image has no boxes)"


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def layout_from_bounding_boxes(value: Any, prompts_text: str, width: int, height: int, match: str = "label",
                               image_index: int = 0, first_index: int = 0) -> tuple[Layout, list[str]]:
    """(Layout of ``width`` x ``height`` with one instance per prompt line, warnings) from the boxes of image
    ``image_index`` of a BOUNDING_BOX value (module rules). ``first_index`` is the slot of the first new instance
    in the layout it will be appended to (for the messages)."""
    frames = bounding_box_frames(value)
    if isinstance(image_index, bool) or not isinstance(image_index, int) or image_index < 0:
        raise LayoutError(f"image_index: {image_index!r} is not a whole number >= 0", field="image_index")
    if image_index >= len(frames):
        raise LayoutError(f"image_index: {image_index} but the bboxes hold {len(frames)} image(s) (indices "
                          f"0..{len(frames) - 1}); pick one of them", field="image_index")
    lines = parse_prompt_lines(prompts_text, match)
    numbers = [n for n, raw in enumerate((prompts_text or "").splitlines(), start=1) if raw.strip()]
    texts = [raw.strip() for raw in (prompts_text or "").splitlines() if raw.strip()]
    boxes = frames[image_index]
    img = f"image {image_index}"

    picked: list[int] = []
    if match == "order":
        for j in range(len(lines)):
            if j >= len(boxes):
                raise LayoutError(f"prompts line {numbers[j]} ({texts[j][:50]!r}): match 'order' gives it box {j} "
                                  f"but {img} has {len(boxes)} box(es); remove the line, or give more boxes",
                                  index=first_index + j, field="prompts")
            picked.append(j)
    else:
        by_label: dict[str, list[int]] = {}
        for j, d in enumerate(boxes):
            by_label.setdefault(box_label(d) if isinstance(d, dict) else "", []).append(j)
        used: dict[str, int] = {}
        for s, (label, _p) in enumerate(lines):
            k = used.get(label, 0)
            used[label] = k + 1
            cands = by_label.get(label, [])
            if k >= len(cands):
                have = (f"no box labelled {label!r} in {img}" if not cands else
                        f"it is the {_ordinal(k + 1)} line with label {label!r} but {img} has {len(cands)} such "
                        f"box(es)")
                hint = ("these boxes carry no labels (Create Bounding Boxes gives none): set match to 'order'"
                        if boxes and all(not isinstance(d, dict) or not box_label(d) for d in boxes) else
                        "use one of those labels, remove the line, or set match to 'order'")
                raise LayoutError(f"prompts line {numbers[s]} ({texts[s][:50]!r}): {have}; labels present: "
                                  f"{_labels_present(boxes)}; {hint}", index=first_index + s, field="prompts")
            picked.append(cands[k])

    warnings: list[str] = []
    instances = []
    for s, ((label, prompt), j) in enumerate(zip(lines, picked)):
        d = boxes[j]
        corners = box_corners(d, f"{img} box {j}")
        i = first_index + s
        given = (f"{img} box {j} {{x: {shown_box([d['x']])[0]}, y: {shown_box([d['y']])[0]}, width: "
                 f"{shown_box([d['width']])[0]}, height: {shown_box([d['height']])[0]}}}")
        box, warning = fit_box(corners, width, height, f"instance {i} ({prompt[:40]!r})", index=i, field="bbox",
                               given=given)
        if warning:
            warnings.append(warning)
        instances.append(Instance(caption=prompt, bbox=box, category=box_label(d) if label is None else label))

    taken = set(picked)
    ignored = [j for j in range(len(boxes)) if j not in taken]
    if ignored:
        named = [f"box {j}" + (f" ({box_label(boxes[j])!r})" if isinstance(boxes[j], dict) and box_label(boxes[j])
                               else "") for j in ignored[:_SHOWN_IGNORED]]
        more = f" and {len(ignored) - _SHOWN_IGNORED} more" if len(ignored) > _SHOWN_IGNORED else ""
        warnings.append(f"bboxes: {len(ignored)} box(es) of {img} match no prompt line and are left out: "
                        f"{', '.join(named)}{more}; add a prompt line for each box you want")
    return Layout(width, height, "", tuple(instances)), warnings


def _boxes_of(slots, where: str, warnings: list[str]) -> list[dict]:
    out = []
    for i, inst in slots:
        box = inst.extent()
        if box is None:
            warnings.append(f"{where}instance {i} ({inst.caption[:40]!r}) has only a point, no box; left out of the "
                            f"bounding boxes")
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        out.append({"x": plain_number(x0), "y": plain_number(y0), "width": plain_number(x1 - x0),
                        "height": plain_number(y1 - y0),
                    "label": inst.caption, "metadata": {"desc": inst.caption}})
    return out


def bounding_boxes_with_warnings(layout: Layout | FrameLayouts) -> tuple[list[list[dict]], list[str]]:
    """(BOUNDING_BOX value, warnings) of a layout (one list) or a per-frame layout (one list per frame)."""
    warnings: list[str] = []
    if isinstance(layout, FrameLayouts):
        frames = [_boxes_of(layout.frame_slots(f), f"frame {f} ", warnings) for f in range(layout.num_frames)]
        return frames, warnings
    if not isinstance(layout, Layout):
        raise LayoutError(f"layout: expected a layout (from 'Instance Layout' or a layout node), got "
                          f"{type(layout).__name__}", field="layout")
    return [_boxes_of(enumerate(layout.instances), "", warnings)], warnings


def layout_to_bounding_boxes(layout: Layout | FrameLayouts) -> list[list[dict]]:
    """ComfyUI's BOUNDING_BOX value of a layout (module rules); see ``bounding_boxes_with_warnings``."""
    return bounding_boxes_with_warnings(layout)[0]
