"""Stored pose edits of HumanGenPoseEditor: parse, check and apply them to an input POSE_KEYPOINT frame.

The browser editor (`web/pose_editor/pose_state.js`) writes the edit into the node's `pose_edit` widget; this module
applies it the same way, so the headless runner and the API need no browser. Both sides are checked against the
shared cases in `tests/js/fixtures/pose_edit_cases.json`. Format (version 1), coordinates in pixels of
`canvas_width` x `canvas_height`::

    {"format": "humangen_pose_edit", "version": 1, "canvas_width": W, "canvas_height": H,
     "input": {frame} | null,            # the input frame the edit was made on (to show it, and to see changes)
     "people": [
       {"source": 0, "deleted": true},                                          # an input person removed
       {"source": 1, "keypoints": {"pose_keypoints_2d": {"4": [x, y], "7": null}}},   # moved / hidden points
       {"source": 1, "parts": {"hand_left_keypoints_2d": [x, y, c, ...] | null}},      # a part replaced
       {"source": null, "person": {"pose_keypoints_2d": [...], ...}}]}         # a person added in the editor

Input people the edit does not name pass through unchanged; added people follow the input people. An edited
keypoint gets confidence 1.0 (0, 0, 0 when hidden), and its raw score under `humangen_scores` becomes 1.0 / 0.0, so
thresholds downstream keep what the user placed. When the input has changed since the edit, each edit is kept where
its person and keypoint still exist (coordinates rescaled to a new canvas size) and the report says what was kept
and dropped.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from .limits import JSONTextError, parse_json

EDIT_FORMAT = "humangen_pose_edit"
EDIT_VERSION = 1
MAX_CHARS = 1_000_000  # the stored JSON (shared with pose_state.js LIMITS)
MAX_PEOPLE = 64
MAX_POINTS = 200
MAX_CANVAS = 8192
PART_KEYS = ("face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d", "pose_keypoints_2d")
MOVED_TOLERANCE = 0.5  # pixels: an input keypoint further than this from the one the edit was made on has moved
# bound on every number of an edit: the editor keeps points on its canvas, hand-written edits may go well off it;
# rescaled to another canvas and rounded (`_round2`) such numbers stay far from float overflow
MAX_COORDINATE = 100 * MAX_CANVAS


def _round2(v: float) -> float:
    """JavaScript's Math.round(v * 100) / 100 (half up), so both sides write the same numbers."""
    return math.floor(v * 100 + 0.5) / 100


def _is_num(v: Any) -> bool:
    """A number within ±MAX_COORDINATE (NaN, infinity and integers past float's range compare False)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= MAX_COORDINATE


def _check_flat(flat: Any, where: str) -> None:
    if flat is None:
        return
    if (not isinstance(flat, list) or len(flat) % 3 or len(flat) > 3 * MAX_POINTS
            or not all(_is_num(v) for v in flat)):
        raise ValueError(f"{where} must be a list of x, y, confidence numbers (at most {MAX_POINTS} points, "
                         f"within ±{MAX_COORDINATE})")


def _keypoint_index(key: Any) -> int | None:
    """A keypoint key of an edit ("0" .. "199") as an int, else None. Only ASCII digits ("²" is a digit to
    str.isdigit, not to int), and few of them (int() of thousands of digits is refused)."""
    text = str(key)
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        return None
    index = int(text)
    return index if index < MAX_POINTS else None


def parse_edit(value: Any) -> dict | None:
    """The stored edit (JSON text, a dict, or "" / None for no edit) checked -> dict or None.
    Raises ValueError saying what is wrong."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    edit = value
    if isinstance(value, str):
        if len(value) > MAX_CHARS:
            raise ValueError(f"the stored edit is {len(value)} characters; at most {MAX_CHARS}")
        try:
            edit = parse_json(value, "the stored edit")  # bounded nesting
        except JSONTextError as exc:  # worded as the browser's editor words it (web/pose_editor/pose_state.js)
            if exc.problem == JSONTextError.NOT_JSON:
                raise ValueError(f"the stored edit is not JSON ({exc.detail})") from None
            raise
    if not isinstance(edit, dict) or edit.get("format") != EDIT_FORMAT:
        raise ValueError(f"the stored edit is not a {EDIT_FORMAT} object")
    if edit.get("version") != EDIT_VERSION:
        raise ValueError(f"stored edit version {edit.get('version')!r} is not supported (this version reads "
                         f"{EDIT_VERSION})")
    for key in ("canvas_width", "canvas_height"):
        v = edit.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_CANVAS:
            raise ValueError(f"{key} must be an integer in 1..{MAX_CANVAS} (got {v!r})")
    people = edit.get("people")
    if not isinstance(people, list) or len(people) > 2 * MAX_PEOPLE:
        raise ValueError(f"people must be a list of at most {2 * MAX_PEOPLE} entries")
    if sum(1 for e in people if isinstance(e, dict) and e.get("source") is None) > MAX_PEOPLE:
        raise ValueError(f"the edit adds more than {MAX_PEOPLE} people")
    for i, e in enumerate(people):
        if not isinstance(e, dict):
            raise ValueError(f"people[{i}] is not an object")
        src = e.get("source")
        if src is None:
            if not isinstance(e.get("person"), dict):
                raise ValueError(f"people[{i}] (an added person) has no person")
            for key in PART_KEYS:
                _check_flat(e["person"].get(key), f"people[{i}].person.{key}")
            continue
        if not isinstance(src, int) or isinstance(src, bool) or src < 0:
            raise ValueError(f"people[{i}].source must be an input person index or null (got {src!r})")
        for field in ("keypoints", "parts"):  # empty values mean none, as in pose_state.js
            if e.get(field) and not isinstance(e[field], dict):
                raise ValueError(f"people[{i}].{field} must be an object keyed by part "
                                 f"(got {type(e[field]).__name__})")
        for key, points in (e.get("keypoints") or {}).items():
            if key not in PART_KEYS or not isinstance(points, dict):
                raise ValueError(f"people[{i}].keypoints has an unknown part {key!r}")
            for k, xy in points.items():
                if _keypoint_index(k) is None:
                    raise ValueError(f"people[{i}].keypoints.{key}: bad keypoint index {str(k)[:20]!r}")
                if xy is not None and not (isinstance(xy, list) and len(xy) == 2 and all(_is_num(v) for v in xy)):
                    raise ValueError(f"people[{i}].keypoints.{key}.{k} must be [x, y] or null (numbers within "
                                     f"±{MAX_COORDINATE})")
        for key, flat in (e.get("parts") or {}).items():
            if key not in PART_KEYS:
                raise ValueError(f"people[{i}].parts has an unknown part {key!r}")
            _check_flat(flat, f"people[{i}].parts.{key}")
    stored_input = edit.get("input")
    if stored_input is not None:
        from .pose import as_pose
        if not isinstance(stored_input, dict):  # as_pose also takes a list of frames; the edit holds one
            raise ValueError("the edit's stored input must be one pose frame (an object with people, canvas_width "
                             "and canvas_height)")
        try:
            as_pose(stored_input)
        except ValueError as exc:
            raise ValueError(f"the edit's stored input frame is not a pose frame ({exc})") from None
    return edit


@dataclass
class EditReport:
    """What applying an edit did, for the node's UI output."""

    had_edit: bool = False
    had_input: bool = False
    input_changed: bool = False
    applied: int = 0
    over_moved: int = 0
    dropped: list[str] = field(default_factory=list)
    rescaled: tuple[int, int, int, int] | None = None

    def text(self) -> str:
        if not self.had_edit:
            return ("No stored edit: the input pose passes through." if self.had_input
                    else "No stored edit and no input pose: add a person in the editor.")
        if not self.input_changed:
            return f"Applied the stored edit: {self.applied} change(s) to the pose it was made on."
        parts = [f"The input pose changed since the edit: kept {self.applied} change(s)"]
        if self.over_moved:
            parts.append(f" ({self.over_moved} on keypoints that moved in the input)")
        if self.rescaled:
            parts.append(" rescaled from {}x{} to {}x{}".format(*self.rescaled))
        if self.dropped:
            parts.append(f"; dropped {len(self.dropped)}: " + "; ".join(self.dropped[:5])
                         + (" ..." if len(self.dropped) > 5 else ""))
        parts.append(". Press 'Reset to input' in the editor to discard the edit.")
        return "".join(parts)


def _scaled_flat(flat: list | None, fx: float, fy: float) -> list | None:
    """A stored keypoint list on the edit's canvas -> the target canvas: present points (c > 0) scaled and given
    confidence 1.0, absent ones (0, 0, 0)."""
    if flat is None:
        return None
    out: list[float] = []
    for i in range(0, len(flat) - 2, 3):
        x, y, c = flat[i:i + 3]
        out += [_round2(x * fx), _round2(y * fy), 1.0] if c > 0 else [0, 0, 0]
    return out


def _point(flat: list | None, k: int) -> tuple[float, float, float] | None:
    if not flat or 3 * k + 2 >= len(flat):
        return None
    return float(flat[3 * k]), float(flat[3 * k + 1]), float(flat[3 * k + 2])


def _moved(old: tuple | None, new: tuple | None, fx: float, fy: float) -> bool:
    if old is None or new is None:
        return old is not new
    if (old[2] > 0) != (new[2] > 0):
        return True
    return old[2] > 0 and (abs(old[0] * fx - new[0]) > MOVED_TOLERANCE or abs(old[1] * fy - new[1]) > MOVED_TOLERANCE)


def _frames_differ(old: dict | None, new: dict | None) -> bool:
    if old is None or new is None:
        return old is not new
    if (old["canvas_width"], old["canvas_height"]) != (new["canvas_width"], new["canvas_height"]):
        return True
    if len(old["people"]) != len(new["people"]):
        return True
    for a, b in zip(old["people"], new["people"]):
        for key in PART_KEYS:
            fa, fb = a.get(key) or [], b.get(key) or []
            if len(fa) != len(fb) or any(_moved(_point(fa, k), _point(fb, k), 1, 1) for k in range(len(fa) // 3)):
                return True
    return False


def _set_score(person: dict, key: str, k: int, value: float) -> None:
    scores = person.get("humangen_scores")
    if isinstance(scores, dict) and isinstance(scores.get(key), list) and k < len(scores[key]):
        scores[key][k] = value


def apply_edit(edit: dict | None, frame: dict | None, fallback: tuple[int, int] = (512, 768)) -> tuple[dict, EditReport]:
    """Apply a parsed edit (or None) to an input frame (pixels; or None) -> (output frame, report).

    The canvas is the input's, else the edit's, else `fallback` (width, height). The input frame is not changed."""
    report = EditReport(had_edit=edit is not None, had_input=frame is not None)
    if frame is not None:
        width, height = int(frame["canvas_width"]), int(frame["canvas_height"])
    elif edit is not None:
        width, height = edit["canvas_width"], edit["canvas_height"]
    else:
        width, height = fallback
    people = [copy.deepcopy(p) for p in (frame or {}).get("people", [])]
    out_extra = {k: copy.deepcopy(v) for k, v in (frame or {}).items() if k not in ("people", "canvas_width",
                                                                                    "canvas_height")}
    if edit is None:
        return {**out_extra, "people": people, "canvas_width": width, "canvas_height": height}, report

    stored = edit.get("input")
    fx, fy = width / edit["canvas_width"], height / edit["canvas_height"]
    if (edit["canvas_width"], edit["canvas_height"]) != (width, height):
        report.rescaled = (edit["canvas_width"], edit["canvas_height"], width, height)
    report.input_changed = _frames_differ(stored, frame) if stored is not None or frame is not None else False
    deleted: set[int] = set()
    added: list[dict] = []
    for entry in edit["people"]:
        src = entry.get("source")
        if src is None:
            person = {k: copy.deepcopy(v) for k, v in entry["person"].items() if k not in PART_KEYS}
            for key in PART_KEYS:
                person[key] = _scaled_flat(entry["person"].get(key), fx, fy)
            added.append(person)
            report.applied += 1
            continue
        if src >= len(people):
            report.dropped.append(f"person {src + 1} is not in the input (it has {len(people)})")
            continue
        person = people[src]
        stored_person = (stored["people"][src] if stored is not None and src < len(stored["people"]) else None)
        if entry.get("deleted"):
            deleted.add(src)
            report.applied += 1
        for key, flat in (entry.get("parts") or {}).items():
            person[key] = _scaled_flat(flat, fx, fy)
            report.applied += 1
        for key, points in (entry.get("keypoints") or {}).items():
            pts = person.get(key)
            if not pts:
                report.dropped.append(f"person {src + 1} has no {key} in the input")
                continue
            pts = person[key] = [float(v) for v in pts]
            for k_text, xy in points.items():
                k = _keypoint_index(k_text)
                if 3 * k + 2 >= len(pts):
                    report.dropped.append(f"person {src + 1} has no keypoint {k} in {key}")
                    continue
                if stored_person is not None and _moved(_point(stored_person.get(key), k), _point(pts, k), fx, fy):
                    report.over_moved += 1
                if xy is None:
                    pts[3 * k:3 * k + 3] = [0.0, 0.0, 0.0]
                    _set_score(person, key, k, 0.0)
                else:
                    pts[3 * k:3 * k + 3] = [_round2(xy[0] * fx), _round2(xy[1] * fy), 1.0]
                    _set_score(person, key, k, 1.0)
                report.applied += 1
    people = [p for i, p in enumerate(people) if i not in deleted] + added
    return {**out_extra, "people": people, "canvas_width": width, "canvas_height": height}, report


__all__ = ["EDIT_FORMAT", "EDIT_VERSION", "MAX_CHARS", "MAX_PEOPLE", "MAX_POINTS", "MAX_CANVAS", "MAX_COORDINATE",
           "EditReport", "parse_edit", "apply_edit"]
