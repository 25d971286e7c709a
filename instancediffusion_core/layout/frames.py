"""Instances over time: one layout per frame (frame = latent batch index), instance slots stable across frames.

``FrameLayouts`` is a canvas, the slot captions (slot i is the same instance on every frame) and, per frame, each
slot's ``Instance`` or ``None`` (absent on that frame: the slot gets the empty grounding, as the official code does
for a missing object: mask 0, zero embedding and coordinates). It travels on the same INSTANCE_LAYOUT socket as a
``Layout``; ``frame(f)`` is the ``Layout`` of the instances present on frame f (for preview and checks).

Rules (decided here):
- keyframes (``interpolate_track``): before the first keyframe the instance is absent; after the last one it holds
  the last keyframe; a ``None`` keyframe removes it from that frame until the next keyframe. Between two present
  keyframes ``linear`` interpolates boxes and points (and scribbles with the same number of points, point by point)
  that both keyframes have; masks, and scribbles whose point counts differ, hold the earlier keyframe (a mask has
  no meaningful in-between without a motion model). ``hold`` keeps the earlier keyframe; ``nearest`` takes the
  nearer keyframe (ties: the earlier one).
- a ComfyUI ``MASK`` batch ``[F, H, W]`` is one mask per frame; an empty frame (no pixel above 0.5) is absent.
- ComfyUI's ``BOUNDING_BOX`` value (``RTDETR_detect``, ``CreateBoundingBoxes``, SAM3): a dict (one box), a list of
  dicts (one frame) or a list of lists of dicts (one list per frame); boxes ``{x, y, width, height}`` in pixels,
  clipped to the canvas (a box with no area left is absent). Matching (``match``):
  ``label``: prompt lines ``label: prompt``; on each frame the k-th line with label L gets the k-th box labelled L
  (in the list's order: RT-DETR sorts by score), label = ``label`` or ``metadata.label``/``metadata.desc``,
  compared case-insensitively; ``order``: line j gets the j-th box of each frame.
- KJNodes / logtd ``TRACKING`` ``{class: {id: [[x0, y0, x1, y1, W, H] | None, ...]}}`` with prompt lines
  ``"id.class": "prompt"``: each line is one instance; ``None`` entries are absent frames; W, H (the canvas) must
  agree across entries; boxes are clipped to the canvas. An unknown class or id, or a track shorter than the others
  (or than ``frames``), is a ``LayoutError`` naming it.
- more frames than requested: the first ones are used; a layout shorter than the batch is an error unless
  ``after_last`` is ``hold`` (the last frame repeats) or ``loop`` (frames repeat from 0); the patch applies this.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .types import MAX_INSTANCES, Instance, Layout, LayoutError, check_instance

MAX_FRAMES = 4096
AFTER_LAST = ("error", "hold", "loop")
INTERPOLATIONS = ("linear", "hold", "nearest")
MATCH_RULES = ("label", "order")


def _frame_error(f: int, err: LayoutError) -> LayoutError:
    return LayoutError(f"frame {f}: {err}", index=err.index, field=err.field)


@dataclass(frozen=True)
class FrameLayouts:
    """Per-frame layouts on one canvas. ``captions[i]`` names slot i; ``frames[f][i]`` is slot i's Instance on
    frame f or None (absent). Validated on construction; every error names the frame, the slot and the field."""
    width: int
    height: int
    caption: str = ""
    captions: tuple[str, ...] = field(default_factory=tuple)
    frames: tuple[tuple[Instance | None, ...], ...] = field(default_factory=tuple)
    after_last: str = "error"

    def __post_init__(self):
        object.__setattr__(self, "captions", tuple(self.captions))
        object.__setattr__(self, "frames", tuple(tuple(row) for row in self.frames))
        n = len(self.captions)
        if not self.frames:
            raise LayoutError("frames: a track needs at least 1 frame; set frames >= 1", field="frames")
        if len(self.frames) > MAX_FRAMES:
            raise LayoutError(f"frames: {len(self.frames)} frames is more than {MAX_FRAMES}; use fewer frames",
                              field="frames")
        if n > MAX_INSTANCES:
            raise LayoutError(f"instance {MAX_INSTANCES}: the track has {n} instances but the model has "
                              f"{MAX_INSTANCES} slots; remove {n - MAX_INSTANCES}", index=MAX_INSTANCES,
                              field="instances")
        if self.after_last not in AFTER_LAST:
            raise LayoutError(f"after_last: {self.after_last!r} is not one of {', '.join(AFTER_LAST)}",
                              field="after_last")
        Layout(self.width, self.height, self.caption)              # canvas checks
        for f, row in enumerate(self.frames):
            if len(row) != n:
                raise LayoutError(f"frame {f}: {len(row)} slots but the track has {n} instances; give every frame "
                                  f"one entry (or None) per instance", field="frames")
            for i, inst in enumerate(row):
                if inst is None:
                    continue
                try:
                    check_instance(inst, i, self.width, self.height)
                except LayoutError as err:
                    raise _frame_error(f, err) from None
                if inst.caption != self.captions[i]:
                    raise LayoutError(f"frame {f} instance {i}: caption {inst.caption!r} differs from the slot's "
                                      f"{self.captions[i]!r}; a slot is one instance on every frame", index=i,
                                      field="caption")

    # -- construction ---------------------------------------------------------------------------------------
    @staticmethod
    def from_layout(layout: Layout, n_frames: int, after_last: str = "error") -> "FrameLayouts":
        """The same layout on ``n_frames`` frames (each instance static)."""
        row = tuple(layout.instances)
        return FrameLayouts(layout.width, layout.height, layout.caption, tuple(i.caption for i in row),
                            (row,) * int(n_frames), after_last)

    def with_track(self, caption: str, track: Sequence[Instance | None]) -> "FrameLayouts":
        """A new FrameLayouts with one more slot: ``track[f]`` on frame f (shorter than the frames: a LayoutError;
        longer: the first frames are used)."""
        track = list(track)
        if len(track) < self.num_frames:
            raise LayoutError(f"instance {len(self.captions)} ({caption[:40]!r}): its track has {len(track)} frames "
                              f"but the layout has {self.num_frames}; give a location (or None) for every frame",
                              index=len(self.captions), field="frames")
        rows = tuple(row + (track[f],) for f, row in enumerate(self.frames))
        return FrameLayouts(self.width, self.height, self.caption, self.captions + (caption,), rows, self.after_last)

    def with_instance(self, inst: Instance) -> "FrameLayouts":
        """A static instance appended to every frame (what the one-instance layout nodes do on a track)."""
        return self.with_track(inst.caption, [inst] * self.num_frames)

    def extend(self, other) -> "FrameLayouts":
        """Append the instances of a ``Layout`` (static) or of another FrameLayouts (frame by frame)."""
        if (other.width, other.height) != (self.width, self.height):
            raise LayoutError(f"extend: canvas {other.width}x{other.height} differs from {self.width}x{self.height}; "
                              f"build both on the same canvas size")
        out = self
        if isinstance(other, FrameLayouts):
            for i, cap in enumerate(other.captions):
                out = out.with_track(cap, [row[i] for row in other.frames])
        else:
            for inst in other.instances:
                out = out.with_instance(inst)
        return out

    def with_frames(self, n_frames: int) -> "FrameLayouts":
        """The first ``n_frames`` frames, or more frames by holding the last one."""
        n = int(n_frames)
        rows = self.frames[:n] + (self.frames[-1],) * max(0, n - len(self.frames))
        return FrameLayouts(self.width, self.height, self.caption, self.captions, rows, self.after_last)

    def with_after_last(self, after_last: str) -> "FrameLayouts":
        return FrameLayouts(self.width, self.height, self.caption, self.captions, self.frames, after_last)

    # -- reading --------------------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def num_instances(self) -> int:
        return len(self.captions)

    @property
    def instances(self) -> tuple[Instance, ...]:
        """One representative per slot (its first present frame), for code that only counts or names slots (the
        one-instance layout nodes append a static instance after it). Grounding, preview and checks use
        ``frame(f)`` / ``frame_slots(f)``; the multi-instance sampler refuses tracks."""
        reps = []
        for i, cap in enumerate(self.captions):
            reps.append(next((row[i] for row in self.frames if row[i] is not None), Instance(caption=cap)))
        return tuple(reps)

    def frame(self, f: int) -> Layout:
        """The Layout of the instances present on frame f (absent slots left out: for drawing and checks only;
        grounding keeps the slots, see ``frame_slots``)."""
        return Layout(self.width, self.height, self.caption, tuple(i for i in self.frames[f] if i is not None))

    def frame_slots(self, f: int) -> list[tuple[int, Instance]]:
        return [(i, inst) for i, inst in enumerate(self.frames[f]) if inst is not None]

    def slot_modalities(self) -> list[set[str]]:
        """Per slot, the locations it has on any frame (for the ``auto`` modality rule)."""
        out = [set() for _ in self.captions]
        for row in self.frames:
            for i, inst in enumerate(row):
                if inst is not None:
                    out[i] |= inst.modalities()
        return out

    def modalities(self) -> set[str]:
        return set().union(*self.slot_modalities()) if self.captions else set()

    def distinct_frames(self) -> tuple[list[int], list[int]]:
        """(first frame index of each distinct frame, for every frame the position of its distinct frame): held
        and static frames share one position-net row."""
        firsts: list[int] = []
        where: list[int] = []
        seen: dict = {}
        for f, row in enumerate(self.frames):
            key = row
            if key not in seen:
                seen[key] = len(firsts)
                firsts.append(f)
            where.append(seen[key])
        return firsts, where


def is_frame_layouts(value: Any) -> bool:
    return isinstance(value, FrameLayouts)


# ---------------------------------------------------------------------------------------------- interpolation
def _lerp(a: Sequence[float], b: Sequence[float], t: float) -> tuple[float, ...]:
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b))


def _between(a: Instance, b: Instance, t: float, mode: str) -> Instance:
    if mode == "hold":
        return a
    if mode == "nearest":
        return a if t <= 0.5 else b
    changes = {}
    if a.bbox is not None and b.bbox is not None:
        changes["bbox"] = _lerp(a.bbox, b.bbox, t)
    if a.point is not None and b.point is not None:
        changes["point"] = _lerp(a.point, b.point, t)
    if a.scribble is not None and b.scribble is not None and len(a.scribble) == len(b.scribble):
        changes["scribble"] = tuple(_lerp(p, q, t) for p, q in zip(a.scribble, b.scribble))
    return a.replace(**changes) if changes else a


def interpolate_track(keyframes: dict[int, Instance | None], n_frames: int, mode: str = "linear") -> list:
    """One Instance (or None) per frame from ``{frame: Instance | None}`` (see the module rules)."""
    if mode not in INTERPOLATIONS:
        raise LayoutError(f"interpolation: {mode!r} is not one of {', '.join(INTERPOLATIONS)}", field="interpolation")
    if not keyframes:
        raise LayoutError("keyframes: none given; write at least one line 'frame: box x,y,width,height'",
                          field="keyframes")
    keys = sorted(keyframes)
    for k in keys:
        if not 0 <= k < n_frames:
            raise LayoutError(f"keyframes: frame {k} is outside the track's {n_frames} frames (0..{n_frames - 1}); "
                              f"raise frames or move the keyframe", field="keyframes")
    out: list = [None] * n_frames
    for j, k in enumerate(keys):
        a = keyframes[k]
        nxt = keys[j + 1] if j + 1 < len(keys) else n_frames
        b = keyframes.get(nxt) if j + 1 < len(keys) else None
        for f in range(k, nxt):
            if a is None:
                out[f] = None
            elif b is None or f == k:
                out[f] = a
            else:
                out[f] = _between(a, b, (f - k) / (nxt - k), mode)
    return out


# --------------------------------------------------------------------------------------------- keyframe text
_KINDS = ("box", "point", "scribble", "mask", "none")
_LINE = re.compile(r"^\s*(\d+)\s*[:=]\s*(.*)$")
_NUM = re.compile(r"[\s,;()\[\]]+")


def _numbers(text: str, where: str) -> list[float]:
    out = []
    for tok in _NUM.split(text.strip()):
        if not tok:
            continue
        try:
            v = float(tok)
        except ValueError:
            v = float("nan")
        if not math.isfinite(v):
            raise LayoutError(f"{where}: {tok[:40]!r} is not a finite number; write pixel numbers like 10,20",
                              field="keyframes")
        out.append(v)
    return out


def parse_keyframes(text: str, caption: str, masks: Sequence[np.ndarray] | None = None) -> dict[int, Instance | None]:
    """Keyframe lines ``frame: box x,y,width,height point x,y scribble x,y x,y ... mask k`` (any of them, in any
    order; ``mask k`` = item k of the mask batch) or ``frame: none`` (absent from that frame). Blank lines and
    lines starting with ``#`` are skipped."""
    out: dict[int, Instance | None] = {}
    for n, raw in enumerate((text or "").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        where = f"keyframes line {n} ({line[:50]!r})"
        if m is None:
            raise LayoutError(f"{where}: expected 'frame: box x,y,width,height' (or point/scribble/mask/none), e.g. "
                              f"'0: box 64,64,128,128'", field="keyframes")
        frame, rest = int(m.group(1)), m.group(2)
        if frame in out:
            raise LayoutError(f"{where}: frame {frame} has a keyframe already; give each frame one line",
                              field="keyframes")
        parts = re.split(r"\b(box|point|scribble|mask|none)\b", rest, flags=re.IGNORECASE)
        if parts[0].strip():
            raise LayoutError(f"{where}: {parts[0].strip()[:30]!r} is not one of {', '.join(_KINDS)}",
                              field="keyframes")
        fields: dict = {}
        absent = False
        for kind, args in zip(parts[1::2], parts[2::2]):
            kind = kind.lower()
            if kind in fields:
                raise LayoutError(f"{where}: '{kind}' given twice", field="keyframes")
            if kind == "none":
                absent = True
                continue
            nums = _numbers(args, where)
            if kind == "box":
                if len(nums) != 4:
                    raise LayoutError(f"{where}: box needs 4 numbers 'x,y,width,height', got {len(nums)}",
                                      field="keyframes")
                fields["bbox"] = (nums[0], nums[1], nums[0] + nums[2], nums[1] + nums[3])
            elif kind == "point":
                if len(nums) != 2:
                    raise LayoutError(f"{where}: point needs 2 numbers 'x,y', got {len(nums)}", field="keyframes")
                fields["point"] = tuple(nums)
            elif kind == "scribble":
                if len(nums) < 4 or len(nums) % 2:
                    raise LayoutError(f"{where}: scribble needs x,y pairs (at least 2 points), got {len(nums)} "
                                      f"numbers", field="keyframes")
                fields["scribble"] = tuple((nums[i], nums[i + 1]) for i in range(0, len(nums), 2))
            else:
                count = 0 if masks is None else len(masks)
                if len(nums) != 1 or not nums[0].is_integer() or not 0 <= nums[0] < count:
                    raise LayoutError(f"{where}: 'mask k' needs the index k of a mask in the mask input (it has "
                                      f"{count}); connect a MASK batch or drop the mask", field="keyframes")
                fields["mask"] = masks[int(nums[0])]
        if absent and fields:
            raise LayoutError(f"{where}: 'none' cannot be combined with a location", field="keyframes")
        if not absent and not fields:
            raise LayoutError(f"{where}: no location; write box/point/scribble/mask or none", field="keyframes")
        out[frame] = None if absent else Instance(caption=caption, **fields)
    return out


# ---------------------------------------------------------------------------------------------------- masks
def track_from_masks(caption: str, masks: np.ndarray) -> list[Instance | None]:
    """One Instance per frame of a bool/float mask batch ``[F, H, W]``; a frame with no pixel set is absent."""
    arr = np.asarray(masks)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise LayoutError(f"mask: shape {tuple(arr.shape)} is not a mask batch [frames, height, width]", field="mask")
    out = []
    for m in arr:
        b = m > 0.5 if np.issubdtype(m.dtype, np.floating) else m.astype(bool)
        out.append(Instance(caption=caption, mask=b) if b.any() else None)
    return out


# -------------------------------------------------------------------------------------------- BOUNDING_BOX
def _clipped_box(x0, y0, x1, y1, width, height):
    x0, x1 = max(0.0, min(float(x0), float(width))), max(0.0, min(float(x1), float(width)))
    y0, y1 = max(0.0, min(float(y0), float(height))), max(0.0, min(float(y1), float(height)))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def bounding_box_frames(value: Any) -> list[list[dict]]:
    """ComfyUI's BOUNDING_BOX value as a list (frames) of lists of box dicts."""
    if value is None:
        return [[]]
    if isinstance(value, dict):
        return [[value]]
    if not isinstance(value, (list, tuple)):
        raise LayoutError(f"bboxes: expected ComfyUI's BOUNDING_BOX (a list of {{x, y, width, height}} per image), "
                          f"got {type(value).__name__}", field="bboxes")
    if not value:
        return [[]]
    if all(isinstance(v, dict) for v in value):
        return [list(value)]
    frames = []
    for f, v in enumerate(value):
        if isinstance(v, dict):
            v = [v]
        if not isinstance(v, (list, tuple)) or not all(isinstance(d, dict) for d in v):
            raise LayoutError(f"bboxes: frame {f} is {type(v).__name__}, not a list of box dicts "
                              f"{{x, y, width, height}}", field="bboxes")
        frames.append(list(v))
    return frames


def box_label(box: dict) -> str:
    meta = box.get("metadata") if isinstance(box.get("metadata"), dict) else {}
    label = box.get("label") or meta.get("label") or meta.get("desc") or ""
    return str(label).strip().lower()


def box_corners(box: Any, where: str) -> tuple[float, float, float, float]:
    """A BOUNDING_BOX dict ``{x, y, width, height}`` as corners ``(x0, y0, x1, y1)`` (not clipped); a
    ``LayoutError`` naming ``where`` when it is not a dict with four finite numbers."""
    if not isinstance(box, dict):
        raise LayoutError(f"bboxes: {where} is {type(box).__name__}, not a box dict {{x, y, width, height}}",
                          field="bboxes")
    try:
        x, y, w, h = (float(box[k]) for k in ("x", "y", "width", "height"))
    except (KeyError, TypeError, ValueError, OverflowError):
        raise LayoutError(f"bboxes: {where} {str(box)[:80]} lacks numeric x, y, width, height", field="bboxes") \
            from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise LayoutError(f"bboxes: {where} {str(box)[:80]} has a number that is not finite", field="bboxes")
    return x, y, x + w, y + h


def _box_of(d: dict, f: int, j: int, width: int, height: int):
    return _clipped_box(*box_corners(d, f"frame {f} box {j}"), width, height)


def parse_prompt_lines(text: str, match: str) -> list[tuple[str | None, str]]:
    """(label, prompt) per non-empty line: ``label: prompt`` for ``match='label'``, ``prompt`` for ``order``."""
    if match not in MATCH_RULES:
        raise LayoutError(f"match: {match!r} is not one of {', '.join(MATCH_RULES)}", field="match")
    out = []
    for n, raw in enumerate((text or "").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if match == "label":
            label, sep, prompt = line.partition(":")
            if not sep or not label.strip() or not prompt.strip():
                raise LayoutError(f"prompts line {n} ({line[:50]!r}): write 'label: prompt', e.g. 'person: a man in "
                                  f"a red coat' (the label as the detector names it), or set match to 'order'",
                                  field="prompts")
            out.append((label.strip().lower(), prompt.strip()))
        else:
            out.append((None, line))
    if not out:
        raise LayoutError("prompts: empty; write one line per instance", field="prompts")
    return out


def tracks_from_bounding_boxes(value: Any, prompts: list[tuple[str | None, str]], width: int, height: int,
                               match: str = "label") -> list[tuple[str, list[Instance | None]]]:
    """(caption, per-frame Instance or None) per prompt line, from a BOUNDING_BOX value (module rules)."""
    frames = bounding_box_frames(value)
    tracks: list[tuple[str, list]] = [(p, []) for _l, p in prompts]
    for f, boxes in enumerate(frames):
        if match == "order":
            picked = [boxes[j] if j < len(boxes) else None for j in range(len(prompts))]
            idx = list(range(len(prompts)))
        else:
            by_label: dict[str, list[int]] = {}
            for j, d in enumerate(boxes):
                by_label.setdefault(box_label(d), []).append(j)
            used: dict[str, int] = {}
            idx = []
            for label, _p in prompts:
                k = used.get(label, 0)
                used[label] = k + 1
                cands = by_label.get(label, [])
                idx.append(cands[k] if k < len(cands) else None)
            picked = [boxes[j] if j is not None else None for j in idx]
        for s, d in enumerate(picked):
            box = None if d is None else _box_of(d, f, idx[s], width, height)
            tracks[s][1].append(None if box is None else Instance(caption=tracks[s][0], bbox=box))
    return tracks


# ------------------------------------------------------------------------------------------------ TRACKING
_PROMPT_ENTRY = re.compile(r'"\s*([^"]+?)\s*"\s*:\s*"((?:[^"\\]|\\.)*)"')


def parse_tracking_prompts(text: str) -> list[tuple[str, str, str]]:
    """``"1.person": "(a man)"`` entries (commas or new lines between them, as KJNodes / logtd write them) ->
    [(id, class, prompt)]."""
    text = (text or "").strip()
    entries = None
    try:
        data = json.loads("{" + text.rstrip(",").strip().lstrip("{").rstrip("}") + "}")
        if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
            entries = list(data.items())
    except ValueError:
        pass
    if entries is None:
        entries = [(m.group(1), m.group(2)) for m in _PROMPT_ENTRY.finditer(text)]
    if not entries:
        raise LayoutError(f"prompt: no '\"id.class\": \"prompt\"' entries in {text[:60]!r}; write e.g. "
                          f"'\"1.person\": \"a man walking\"' (the prompt output of Create InstanceDiffusion "
                          f"Tracking)", field="prompt")
    out = []
    for key, prompt in entries:
        tid, dot, cls = key.partition(".")
        if not dot or not tid.strip().isdigit() or not cls.strip():
            raise LayoutError(f"prompt: key {key!r} is not 'id.class' (e.g. '1.person')", field="prompt")
        out.append((tid.strip(), cls.strip(), prompt))
    return out


def _lookup_track(tracking: dict, tid: str, cls: str):
    if cls not in tracking:
        known = ", ".join(repr(k) for k in tracking) or "none"
        raise LayoutError(f"tracking: class {cls!r} (prompt '{tid}.{cls}') is not in the tracking data (classes: "
                          f"{known}); fix the prompt key or the tracking", field="tracking")
    ids = tracking[cls]
    if not isinstance(ids, dict):
        raise LayoutError(f"tracking: class {cls!r} holds {type(ids).__name__}, not {{id: [boxes per frame]}}",
                          field="tracking")
    for k in (tid, int(tid)):
        if k in ids:
            return ids[k]
    known = ", ".join(str(k) for k in ids) or "none"
    raise LayoutError(f"tracking: id {tid} of class {cls!r} (prompt '{tid}.{cls}') is not tracked (ids: {known}); "
                      f"fix the prompt key or the tracking", field="tracking")


def tracks_from_tracking(tracking: Any, prompt_text: str, frames: int = 0
                         ) -> tuple[int, int, list[tuple[str, list[Instance | None]]]]:
    """(width, height, [(caption, per-frame Instance or None)]) from a TRACKING dict and its prompt lines.
    ``frames`` 0: the tracks' length; otherwise every track needs at least that many frames."""
    if not isinstance(tracking, dict) or not tracking:
        raise LayoutError(f"tracking: expected {{class: {{id: [[x0, y0, x1, y1, W, H] or None per frame]}}}}, got "
                          f"{type(tracking).__name__}", field="tracking")
    entries = parse_tracking_prompts(prompt_text)
    raw = []
    for tid, cls, prompt in entries:
        seq = _lookup_track(tracking, tid, cls)
        if not isinstance(seq, (list, tuple)):
            raise LayoutError(f"tracking: track '{tid}.{cls}' is {type(seq).__name__}, not a list per frame",
                              field="tracking")
        raw.append((f"{tid}.{cls}", prompt, list(seq)))
    lengths = {name: len(seq) for name, _p, seq in raw}
    need = frames or max(lengths.values())
    for name, n in lengths.items():
        if n < need:
            raise LayoutError(f"tracking: track '{name}' has {n} frames but {need} are needed "
                              f"({'the frames input' if frames else 'the longest track'}); extend the track or "
                              f"lower frames", field="tracking")
    size = None
    for name, _p, seq in raw:
        for f, e in enumerate(seq[:need]):
            if e is None:
                continue
            if not isinstance(e, (list, tuple)) or len(e) not in (4, 6) or \
                    not all(isinstance(v, (int, float)) and math.isfinite(v) for v in e):
                raise LayoutError(f"tracking: track '{name}' frame {f}: {str(e)[:60]} is not [x0, y0, x1, y1, W, H] "
                                  f"or None", field="tracking")
            if len(e) == 6:
                wh = (int(e[4]), int(e[5]))
                if size is not None and wh != size:
                    raise LayoutError(f"tracking: track '{name}' frame {f} says the canvas is {wh[0]}x{wh[1]}, "
                                      f"earlier entries {size[0]}x{size[1]}; use one canvas size", field="tracking")
                size = wh
    if size is None:
        raise LayoutError("tracking: no entry gives the canvas size (W, H); use [x0, y0, x1, y1, W, H] entries",
                          field="tracking")
    width, height = size
    tracks = []
    for name, prompt, seq in raw:
        per_frame = []
        for e in seq[:need]:
            box = None if e is None else _clipped_box(e[0], e[1], e[2], e[3], width, height)
            per_frame.append(None if box is None else Instance(caption=prompt, bbox=box))
        tracks.append((prompt, per_frame))
    return width, height, tracks


def frame_layouts_from_tracks(width: int, height: int, tracks: Iterable[tuple[str, Sequence]], caption: str = "",
                              base: Any = None, after_last: str = "error") -> FrameLayouts:
    """Tracks (caption, per-frame Instance or None) on a canvas, appended to ``base`` (a Layout: static
    instances first; a FrameLayouts: its frames; None: an empty canvas)."""
    tracks = list(tracks)
    if not tracks and base is None:
        raise LayoutError("tracks: nothing to place; give at least one instance", field="tracks")
    n = max((len(t) for _c, t in tracks), default=1)
    if isinstance(base, FrameLayouts):
        out = base
    else:
        out = FrameLayouts(width, height, caption, (), ((),) * n, after_last)
        if base is not None:
            out = out.extend(base)
    for cap, track in tracks:
        out = out.with_track(cap, track)
    return out


# ------------------------------------------------------------------------------------------------ grounding
def build_frame_grounding(layouts: FrameLayouts, text_features, frames: Sequence[int], seg_size: int = 512,
                          max_objs: int = MAX_INSTANCES):
    """Grounding tensors of the given frames, batch = ``len(frames)``: slot i = instance i on every frame, an
    absent slot is the empty slot (mask 0, zero embedding and coordinates, as the official code pads). ``text_features``
    ``[n, D]``: one pooled text feature per slot."""
    import torch

    from .grounding import _fill_slot, _text_matrix, null_grounding

    n = layouts.num_instances
    text = _text_matrix(text_features, n) if n else torch.zeros(0, 768 if not hasattr(text_features, "shape")
                                                                else text_features.shape[-1])
    g = null_grounding(len(frames), text.shape[1], seg_size, max_objs)
    for b, f in enumerate(frames):
        one = null_grounding(1, text.shape[1], seg_size, max_objs)
        for slot, inst in layouts.frame_slots(f):
            one["positive_embeddings"][0, slot] = text[slot]
            _fill_slot(one, slot, inst, layouts.width, layouts.height, seg_size)
        for k in g:
            g[k][b] = one[k][0]
    return g
