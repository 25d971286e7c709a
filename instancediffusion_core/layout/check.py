"""Plausibility check of a valid layout: things that load fine but tend to render badly.

A layout that passes ``layout.validate`` can still ask the model for something it draws poorly. These checks
are heuristics, tuned to be conservative (a warning should be worth reading) and explainable (every message
says what was measured and what to change). They never modify the layout.

Kinds (``LayoutWarning.kind``):
- ``edge``: the instance's box touches the canvas edge, so the object is cut off (LLM layouts often put feet or
  wheels exactly on the bottom edge, or were clipped there). Bands that span the whole canvas in one direction
  (a road, a river, the sky) are meant to be cut and are not flagged.
- ``too_small``: narrower or lower than 2 latent cells at the generation size; the fusers see the box on the
  latent grid (and coarser), so such an instance has almost no pixels to steer.
- ``duplicate``: two boxes overlap almost completely (IoU >= 0.8 whatever the captions), or strongly
  (IoU >= 0.5) with the same category or nearly the same caption: two instances compete for one object and the
  model tends to merge or double it.
- ``contains``: a box fully contains another box of the same category (a person inside a person): usually one
  object listed twice, or a group box next to its members.
- ``perspective``: two objects that stand on the ground have inconsistent sizes. For categories with a typical
  height (``TYPICAL_HEIGHT_M``) the apparent scale is ``box height / typical height`` (pixels per metre). An
  object whose bottom edge is on the same ground line or higher up (further back) must not have a much larger
  scale than one nearer the viewer; "much" is a factor of ``PERSPECTIVE_FACTOR`` (2.5), wide enough for real
  size spread (a dog, a tall person). "Sitting" and child words adjust a person's height; a size word before
  the noun ("a small dog") widens the height range, and the end of the range that favours the layout is used.
  Lying, riding or flying objects, pairs whose boxes overlap (a person on a bench, a rider on a horse) and
  boxes cut by the bottom edge (their ground contact is unknown) are skipped.

The canvas is taken to be the generation size unless ``generation_size`` says otherwise (the grounding builder
normalises coordinates, so a 512 layout may be generated at 768).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from .frames import is_frame_layouts
from .types import Instance, Layout

KINDS = ("edge", "too_small", "duplicate", "contains", "perspective")

DUPLICATE_IOU_ANY = 0.8          # overlap at which two boxes are one object whatever they say
DUPLICATE_IOU_SIMILAR = 0.5      # overlap at which same-category / same-caption boxes are one object
CAPTION_SIMILARITY = 0.6         # word-set Jaccard above which two captions say the same thing
MIN_LATENT_CELLS = 2             # an instance needs at least this many latent cells across and down
PERSPECTIVE_FACTOR = 2.5         # allowed scale ratio between objects on one ground line (or the back one larger)
GROUND_TOLERANCE = 0.03          # bottoms within this fraction of the canvas height share a ground line
INTERACTION_OVERLAP = 0.2        # intersection / smaller box above which two objects are taken to interact

# Typical standing heights in metres of things that rest on the ground. Deliberately leaves out categories of
# widely varying size (trees, plants, buildings, lamps) and things that fly, hang or sit on furniture.
TYPICAL_HEIGHT_M = {
    "person": 1.7, "man": 1.75, "woman": 1.65, "child": 1.2, "kid": 1.2, "boy": 1.3, "girl": 1.3,
    "dog": 0.6, "cat": 0.3, "horse": 1.6, "cow": 1.5, "sheep": 0.9, "goat": 0.8, "pig": 0.8,
    "elephant": 3.0, "giraffe": 5.0, "zebra": 1.4, "deer": 1.2, "chicken": 0.4,
    "bicycle": 1.0, "motorcycle": 1.1, "car": 1.5, "bus": 3.2, "truck": 3.0, "food truck": 3.0,
    "tractor": 2.5, "forklift": 2.2, "train": 4.0,
    "bench": 0.9, "chair": 0.9, "couch": 0.85, "sofa": 0.85, "dining table": 0.75, "table": 0.75,
    "coffee table": 0.45, "fire hydrant": 0.8, "parking meter": 1.3, "bookshelf": 1.8, "refrigerator": 1.8,
}
# Caption words that change a person's height (sitting people are ~1.3 m from seat to head and the seat is
# what they rest on; children are shorter). Lying or crouching objects have no usable height.
_SITTING = re.compile(r"\b(sitting|seated|sits)\b")
_NO_HEIGHT = re.compile(r"\b(lying|laying|lies|crouching|sleeping|riding|rides|flying|jumping|hanging)\b")
_CHILD = re.compile(r"\b(child|children|kid|kids|boy|girl|toddler|baby)\b")
# Size words widen the typical height range (a "small dog" may be 43 cm, a "large couch" a high-backed one).
_SMALL = re.compile(r"\b(small|little|tiny|puppy|kitten|miniature)\b")
_LARGE = re.compile(r"\b(large|big|huge|giant|tall)\b")
SIZE_WORD_FACTOR = 1.4
_WORD = re.compile(r"[a-z0-9]+")
_STOP_WORDS = {"a", "an", "the", "of", "on", "in", "at", "with", "and", "to", "is", "its", "by", "near", "next"}


@dataclass(frozen=True)
class LayoutWarning:
    """One finding: the instance it is about (slot index), its kind (see ``KINDS``), a readable message, and
    the other instance for pair findings."""
    index: int
    kind: str
    message: str
    other: int | None = None
    frames: tuple[int, ...] | None = None    # on a track (FrameLayouts): the frames it applies to

    def __str__(self) -> str:
        return f"[{self.kind}] instance {self.index}: {self.message}"


# --------------------------------------------------------------------------------------------- geometry helpers

def _area(b) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _intersection(a, b) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def box_iou(a, b) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _contains(outer, inner, tol: float = 1.0) -> bool:
    return (outer[0] - tol <= inner[0] and outer[1] - tol <= inner[1]
            and inner[2] <= outer[2] + tol and inner[3] <= outer[3] + tol)


def _fmt_box(b) -> str:
    return "(" + ", ".join(f"{v:g}" for v in b) + ")"


def _label(layout: Layout, i: int) -> str:
    return f"{i} ({layout.instances[i].caption[:40]!r})"


# --------------------------------------------------------------------------------------------- text helpers

def category_of(inst: Instance) -> str:
    """The instance's ``category``, trimmed and lower-cased ("" when it has none)."""
    return (inst.category or "").strip().lower()


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP_WORDS}


def caption_similarity(a: str, b: str) -> float:
    """Jaccard similarity of the captions' content words (0..1)."""
    wa, wb = _words(a), _words(b)
    if not wa or not wb:
        return 0.0
    return len(wa & wb) / len(wa | wb)


def _height_key(inst: Instance, caption: str) -> tuple[str, int] | None:
    """(key of ``TYPICAL_HEIGHT_M``, position of the head noun in the caption or -1) for the instance."""
    category = category_of(inst)
    if category:
        words = _WORD.findall(category)
        for key in (category, " ".join(words[-2:]), words[-1] if words else ""):
            if key in TYPICAL_HEIGHT_M:
                match = re.search(rf"\b{re.escape(key)}s?\b", caption)
                return key, (match.start() if match else -1)
        return None
    # no category: the earliest known noun of the caption is taken as its subject
    found = [(m.start(), key) for key in TYPICAL_HEIGHT_M if (m := re.search(rf"\b{re.escape(key)}s?\b", caption))]
    if not found:
        return None
    pos, key = min(found)
    return key, pos


def typical_height(inst: Instance) -> tuple[float, float] | None:
    """Range (low, high) of the instance's plausible real height in metres for the perspective check; None when
    unknown or unusable (category without a typical height, lying/riding/flying...). A size word before the head
    noun ("a small dog") widens the range by ``SIZE_WORD_FACTOR`` in its direction."""
    caption = inst.caption.lower()
    if _NO_HEIGHT.search(caption):
        return None
    found = _height_key(inst, caption)
    if found is None:
        return None
    key, head = found
    height = TYPICAL_HEIGHT_M[key]
    if key in ("person", "man", "woman"):
        if _CHILD.search(caption):
            height = TYPICAL_HEIGHT_M["child"]
        if _SITTING.search(caption):
            height = height * 0.75
    before_head = caption[:head] if head >= 0 else " ".join(caption.split()[:4])
    if _SMALL.search(before_head):
        return height / SIZE_WORD_FACTOR, height
    if _LARGE.search(before_head):
        return height, height * SIZE_WORD_FACTOR
    return height, height


# --------------------------------------------------------------------------------------------- the checks

def _check_edges(layout: Layout, extents) -> Iterable[LayoutWarning]:
    W, H = layout.width, layout.height
    for i, b in extents:
        x0, y0, x1, y1 = b
        if (x0 <= 0 and x1 >= W) or (y0 <= 0 and y1 >= H):
            continue                                    # a band across the canvas: meant to be cut
        sides = [name for name, hit in (("left", x0 <= 0), ("top", y0 <= 0), ("right", x1 >= W),
                                         ("bottom", y1 >= H)) if hit]
        if sides:
            yield LayoutWarning(i, "edge", (
                f"box {_fmt_box(b)} touches the {' and '.join(sides)} edge of the {W}x{H} canvas, so the object "
                f"is cut off there; move it inside with a margin (or accept a cropped object)"))


def _check_small(layout: Layout, extents, latent_scale: int, generation_size) -> Iterable[LayoutWarning]:
    gw, gh = generation_size or (layout.width, layout.height)
    # pixels of the canvas per latent cell, in each direction
    cell_x = latent_scale * layout.width / gw
    cell_y = latent_scale * layout.height / gh
    for i, b in extents:
        w_cells, h_cells = (b[2] - b[0]) / cell_x, (b[3] - b[1]) / cell_y
        if w_cells < MIN_LATENT_CELLS or h_cells < MIN_LATENT_CELLS:
            yield LayoutWarning(i, "too_small", (
                f"box {_fmt_box(b)} is {w_cells:.1f} x {h_cells:.1f} latent cells at the {gw}x{gh} generation "
                f"size (1 cell = {latent_scale} px); below {MIN_LATENT_CELLS}x{MIN_LATENT_CELLS} the model can "
                f"hardly draw it; enlarge the box to at least {MIN_LATENT_CELLS * cell_x:g} x "
                f"{MIN_LATENT_CELLS * cell_y:g} canvas px or drop the instance"))


def _check_pairs(layout: Layout, extents) -> Iterable[LayoutWarning]:
    insts = layout.instances
    for n, (i, a) in enumerate(extents):
        for j, b in extents[n + 1:]:
            iou = box_iou(a, b)
            same_cat = bool(category_of(insts[i])) and category_of(insts[i]) == category_of(insts[j])
            sim = caption_similarity(insts[i].caption, insts[j].caption)
            if iou >= DUPLICATE_IOU_ANY or (iou >= DUPLICATE_IOU_SIMILAR and (same_cat or sim >= CAPTION_SIMILARITY)):
                why = ("same category" if same_cat else f"similar captions ({sim:.0%} shared words)"
                       if sim >= CAPTION_SIMILARITY else "different captions")
                yield LayoutWarning(j, "duplicate", (
                    f"box {_fmt_box(b)} overlaps instance {_label(layout, i)} {_fmt_box(a)} with IoU {iou:.2f} "
                    f"({why}); two instances in one place compete for the same pixels: merge them or move one"),
                    other=i)
                continue
            if same_cat:
                for outer, inner in ((i, j), (j, i)):
                    ob, ib = (a, b) if outer == i else (b, a)
                    if _contains(ob, ib):
                        yield LayoutWarning(inner, "contains", (
                            f"box {_fmt_box(ib)} lies inside instance {_label(layout, outer)} {_fmt_box(ob)} of "
                            f"the same category {category_of(insts[i])!r}; one object listed twice, or a group "
                            f"box around its members: keep one of them"), other=outer)
                        break


def _check_perspective(layout: Layout, extents) -> Iterable[LayoutWarning]:
    H = layout.height
    tol = GROUND_TOLERANCE * H
    grounded = []
    for i, b in extents:
        heights = typical_height(layout.instances[i])
        if heights is None or b[3] >= H:                    # unknown size, or ground contact below the canvas
            continue
        grounded.append((i, b, heights))
    for n, (i, a, ha) in enumerate(grounded):
        for j, b, hb in grounded[n + 1:]:
            smaller = min(_area(a), _area(b))
            if smaller > 0 and _intersection(a, b) / smaller > INTERACTION_OVERLAP:
                continue                                    # interacting objects (on, riding, next to)
            for (p, pb, hp), (q, qb, hq) in (((i, a, ha), (j, b, hb)), ((j, b, hb), (i, a, ha))):
                if pb[3] > qb[3] + tol:
                    continue                                # p is nearer the viewer: it may be drawn larger
                # scales in px per metre, each taken at the end of its height range that favours the layout
                sp = (pb[3] - pb[1]) / hp[1]
                sq = (qb[3] - qb[1]) / hq[0]
                if sp > PERSPECTIVE_FACTOR * sq:
                    where = "on the same ground line as" if abs(pb[3] - qb[3]) <= tol else "further back than"
                    yield LayoutWarning(p, "perspective", (
                        f"stands {where} instance {_label(layout, q)} (bottoms at y={pb[3]:g} and y={qb[3]:g}) "
                        f"but is drawn {pb[3] - pb[1]:g} px tall for a {_metres(hp)} object vs "
                        f"{qb[3] - qb[1]:g} px for a {_metres(hq)} one: {sp / sq:.1f}x the scale (allowed "
                        f"{PERSPECTIVE_FACTOR:g}x); shrink it, enlarge the other, or move it lower (nearer)"),
                        other=q)


def _metres(heights: tuple[float, float]) -> str:
    low, high = heights
    return f"~{low:.2g} m" if low == high else f"{low:.2g}-{high:.2g} m"


def check_layout(layout: Layout, latent_scale: int = 8,
                 generation_size: tuple[int, int] | None = None) -> list[LayoutWarning]:
    """All findings for ``layout`` in order of kind (``KINDS``) then instance index; empty when nothing is
    suspicious. ``latent_scale`` is the VAE factor (8 for SD1.5); ``generation_size`` ``(width, height)`` is the
    image size the layout will be generated at (default: the canvas)."""
    if not isinstance(layout, Layout):
        raise TypeError(f"check_layout: expected a Layout, got {type(layout).__name__}")
    _check_arguments(latent_scale, generation_size)
    return _run_checks(layout, latent_scale, generation_size)


def _check_arguments(latent_scale, generation_size) -> None:
    if not isinstance(latent_scale, int) or latent_scale <= 0:
        raise ValueError(f"check_layout latent_scale: {latent_scale!r} is not a positive integer; use 8 for SD1.5")
    if generation_size is not None:
        gw, gh = generation_size
        if gw <= 0 or gh <= 0:
            raise ValueError(f"check_layout generation_size: {generation_size!r} must be positive (width, height)")


def _run_checks(layout, latent_scale: int, generation_size) -> list[LayoutWarning]:
    """The checks on anything with ``width``, ``height`` and ``instances`` (an entry may be None: absent)."""
    extents = [(i, e) for i, inst in enumerate(layout.instances)
               if inst is not None and (e := inst.extent()) is not None]
    found = [*_check_edges(layout, extents), *_check_small(layout, extents, latent_scale, generation_size),
             *_check_pairs(layout, extents), *_check_perspective(layout, extents)]
    return sorted(found, key=lambda w: (KINDS.index(w.kind), w.index))


@dataclass(frozen=True)
class _FrameView:
    """One frame of a track as the checks see it: ``instances[slot]`` is the slot's Instance or None, so every
    index (and every "instance N" in a message) is the slot index, the same on every frame."""
    width: int
    height: int
    instances: tuple


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _frame_ranges(frames: list[int]) -> str:
    runs, start, prev = [], None, None
    for f in sorted(frames):
        if start is None:
            start = prev = f
        elif f == prev + 1:
            prev = f
        else:
            runs.append((start, prev))
            start = prev = f
    if start is not None:
        runs.append((start, prev))
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def check_frames(layouts, latent_scale: int = 8,
                 generation_size: tuple[int, int] | None = None) -> list[LayoutWarning]:
    """``check_layout`` on every distinct frame of a track (``FrameLayouts``), each finding reported once with
    the frames it applies to (``LayoutWarning.frames``; the message starts "frames 3-7: ..." or "all 16 frames:
    ..."). Findings are the same when they have the same kind, slot(s) and wording once the numbers are left out
    (a moving box cut by the bottom edge on frames 3-7 is one finding; cut by the left edge on 0-2 and by the
    right one on 10-12, two); the numbers quoted are those of the first frame it applies to. Indices are slot
    indices."""
    _check_arguments(latent_scale, generation_size)
    firsts, where = layouts.distinct_frames()
    frames_of: list[list[int]] = [[] for _ in firsts]
    for f, p in enumerate(where):
        frames_of[p].append(f)
    groups: dict = {}
    for p, f in enumerate(firsts):
        view = _FrameView(layouts.width, layouts.height, tuple(layouts.frames[f]))
        for w in _run_checks(view, latent_scale, generation_size):
            key = (w.kind, w.index, w.other, _NUMBER.sub("#", w.message))
            if key not in groups:
                groups[key] = (w, f, [])
            groups[key][2].extend(frames_of[p])
    n = layouts.num_frames
    out = []
    for w, first, frames in groups.values():
        frames = sorted(frames)
        if len(frames) == n and n > 1:
            where_text = f"all {n} frames"
        elif len(frames) == 1:
            where_text = f"frame {frames[0]}"
        else:
            where_text = f"frames {_frame_ranges(frames)}"
        if len(frames) > 1:
            where_text += f" (numbers of frame {first})"
        out.append(LayoutWarning(w.index, w.kind, f"{where_text}: {w.message}", other=w.other,
                                 frames=tuple(frames)))
    return sorted(out, key=lambda w: (KINDS.index(w.kind), w.index, w.frames[0]))


def check_layout_or_frames(layout, latent_scale: int = 8,
                           generation_size: tuple[int, int] | None = None) -> list[LayoutWarning]:
    """``check_layout`` for a ``Layout``, ``check_frames`` for a track (``FrameLayouts``); what Layout Check
    runs. ``format_warnings(warnings, layout)`` formats either (a track's ``instances`` name its slots)."""
    if is_frame_layouts(layout):
        return check_frames(layout, latent_scale, generation_size)
    return check_layout(layout, latent_scale, generation_size)


def format_warnings(warnings: list[LayoutWarning], layout: Layout | None = None) -> str:
    """Warnings as text, one per line, with a summary line; "layout check: no problems found" when empty."""
    if not warnings:
        return "layout check: no problems found"
    counts = {}
    for w in warnings:
        counts[w.kind] = counts.get(w.kind, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    lines = [f"layout check: {len(warnings)} warning{'s' if len(warnings) != 1 else ''} ({summary})"]
    for w in warnings:
        who = _label(layout, w.index) if layout is not None and w.index < len(layout.instances) else str(w.index)
        lines.append(f"- [{w.kind}] instance {who}: {w.message}")
    return "\n".join(lines)
