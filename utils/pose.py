"""Pose keypoints: the POSE_KEYPOINT type, joint layouts and conversions, pose files, skeleton renderers.

POSE_KEYPOINT (the structure comfyui_controlnet_aux's DWPose/OpenPose nodes use, so poses flow between packs)::

    [  # one frame per batch image
      {"people": [{"pose_keypoints_2d": [x0, y0, c0, x1, y1, c1, ...],   # pixels of the canvas
                   "face_keypoints_2d": None, "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": None,
                   "score": 0.93,                                         # person detection score (optional)
                   "humangen_scores": {"pose_keypoints_2d": [0.98, 0.0, ...]}},  # raw confidences (optional)
                  ...],
       "canvas_width": W, "canvas_height": H},
    ]

Confidences follow comfyui_controlnet_aux: its decoder keeps a keypoint only when c >= 1.0 and its encoder writes
c = 1.0 for every present keypoint and (0, 0, 0) for a missing one. Every POSE_KEYPOINT this pack emits does the
same (body, face and hands): present = (x, y, 1.0), absent = (0, 0, 0). The detector's raw confidences travel per
person under `"humangen_scores"` (a dict keyed like the keypoint lists, same order; a list is left out when its
raw scores are exactly the 0/1 confidences), which other packs ignore. Readers inside the pack
(`person_keypoints`, `frame_people`, `people_array`, `scored_keypoints`, the renderers) give each present keypoint
its raw score when there is one, else the stored confidence, so thresholds work on both our poses and aux's
(whose confidences are all 1.0). `aux_frame` / `aux_person` bring any frame to this convention.

`pose_keypoints_2d` is OpenPose-18 by default (what ControlNet tools expect); 25 points (BODY_25), 17 (COCO-17)
and 33 (mediapipe) are also understood: the layout is read from the number of points. A joint that was not
detected is (0, 0, 0). We write pixels; frames from tools that write coordinates normalised to [0, 1] (aux's
DWPose does) are read correctly too (`pixel_frame`). A person may carry an optional `"score"` (and `"area"`, from
HumanSD files); other keys are kept as they are.

Joint orders (index: name)

| idx | COCO-17 | OpenPose-18 | BODY_25 | mediapipe-33 |
|----:|---------|-------------|---------|--------------|
| 0 | nose | nose | nose | nose |
| 1 | left_eye | neck* | neck* | left_eye_inner |
| 2 | right_eye | right_shoulder | right_shoulder | left_eye |
| 3 | left_ear | right_elbow | right_elbow | left_eye_outer |
| 4 | right_ear | right_wrist | right_wrist | right_eye_inner |
| 5 | left_shoulder | left_shoulder | left_shoulder | right_eye |
| 6 | right_shoulder | left_elbow | left_elbow | right_eye_outer |
| 7 | left_elbow | left_wrist | left_wrist | left_ear |
| 8 | right_elbow | right_hip | mid_hip* | right_ear |
| 9 | left_wrist | right_knee | right_hip | mouth_left |
| 10 | right_wrist | right_ankle | right_knee | mouth_right |
| 11 | left_hip | left_hip | right_ankle | left_shoulder |
| 12 | right_hip | left_knee | left_hip | right_shoulder |
| 13 | left_knee | left_ankle | left_knee | left_elbow |
| 14 | right_knee | right_eye | left_ankle | right_elbow |
| 15 | left_ankle | left_eye | right_eye | left_wrist |
| 16 | right_ankle | right_ear | left_eye | right_wrist |
| 17 | | left_ear | right_ear | left_pinky |
| 18 | | | left_ear | right_pinky |
| 19 | | | left_big_toe | left_index |
| 20 | | | left_small_toe | right_index |
| 21 | | | left_heel | left_thumb |
| 22 | | | right_big_toe | right_thumb |
| 23 | | | right_small_toe | left_hip |
| 24 | | | right_heel | right_hip |
| 25–32 | | | | left/right_knee, left/right_ankle, left/right_heel, left/right_foot_index |

`*` derived joints: neck = midpoint of the shoulders, mid_hip = midpoint of the hips, only when both are present
(confidence > 0); their confidence is the smaller of the two. mediapipe's `*_foot_index` is BODY_25's `*_big_toe`.

Public functions (all coordinates in pixels, keypoint arrays float64 [K, 3] = x, y, confidence):

- layouts: `LAYOUTS`, `COCO17`, `OPENPOSE18`, `BODY25`, `MEDIAPIPE33`, `layout_for_count(n)`,
  `convert_keypoints(kps, src, dst)`.
- POSE_KEYPOINT: `make_frame(people, width, height, layout="openpose18", src_layout=None, scores=None)`,
  `encode_person(body, score=None, face=None, hand_left=None, hand_right=None)` (one person, aux convention),
  `scored_keypoints(person, key)` ([K,3] with raw scores), `aux_person(person)`, `aux_frame(frame)`,
  `as_pose(value)` (validate/normalise; a single frame becomes a list), `frame_size(frame)`,
  `frame_people(frame, layout="coco17")` (list of [K,3]), `people_array(frame, layout="coco17")` ([P,K,3]),
  `person_keypoints(person, layout="coco17")` (one person, as stored), `person_score(person)` (its detection score
  or None), `pixel_frame(frame)` (normalised -> pixels),
  `transform_frame(frame, matrix, width, height)`, `scale_frame(frame, width, height)`.
- files: `load_pose(path, canvas_size=None)`, `save_pose(pose, path, fmt=None)`, and per format
  `load_openpose_json/save_openpose_json`, `load_coco_json/save_coco_json`, `load_humansd_npz/save_humansd_npz`,
  `encode_pose(pose, fmt)` (the bytes of a pose file, for writers that choose the name themselves)
  (the npz loader never runs pickle code: only plain dicts, numbers and numpy arrays are accepted).
- rendering: `render_skeleton(pose, style="humansd"|"openpose", width=None, height=None, threshold=0.05,
  person_threshold=0.0)` -> uint8 [F, H, W, 3]; `render_frame(frame, ...)` -> uint8 [H, W, 3];
  `HUMANSD_LIMBS`, `HUMANSD_COLORS`, `hls_palette(n)`, `OPENPOSE_LIMBS`, `OPENPOSE_COLORS`.
- faces: `face_box_from_keypoints(kps_coco17, threshold=0.3, scale=1.0)` -> (x0, y0, x1, y1, score) or None.

HUMANGEN_FACE_BOX (from HumanGenFaceBox; used by InsetGAN): a dict
`{"boxes": [[[x0, y0, x1, y1, score], ...] per batch image, best first], "canvas_width": W, "canvas_height": H,
"source": "mtcnn" | "mediapipe" | "keypoints"}`, pixels of the image the boxes were found on.
"""
from __future__ import annotations

import colorsys
import io
import json
import math
import os
import pickle
import zipfile
from typing import Any, Iterable, Sequence

import numpy as np

from .limits import (MAX_CANVAS_SIDE, MAX_IMAGE_SIDE, check_archive, check_batch_pixels, check_image_size,
                     plain_int, read_json_file)

# bounds on what a pose (from a file, a workflow or another node) may hold; see utils/limits.py
MAX_FRAMES = 10_000
MAX_PEOPLE = 1_000
MAX_KEYPOINT_VALUES = 3 * 1_000  # per keypoint list (a whole-body face has 70 points, a hand 21)
MAX_POSE_FILE_BYTES = 64 << 20  # JSON text or uncompressed .npz content
# a COCO dataset of MAX_FRAMES images averaging 100 annotations each (COCO's val2017 keypoints: about 2)
MAX_COCO_ANNOTATIONS = 100 * MAX_FRAMES
# Objects a HumanSD .npz may unpickle to, counted as `_plain` copies them: a pickle can reference one object many
# times (an 810-byte file can stand for 2**30 people), so the file's size alone does not bound the work.
# Per member (one frame): MAX_PEOPLE people of at most 1 dict + 1 list + 17 rows + 51 numbers + a few fields each.
NPZ_OBJECTS_PER_PERSON = 80
MAX_NPZ_FRAME_OBJECTS = MAX_PEOPLE * NPZ_OBJECTS_PER_PERSON
# Per file: HumanSD's layout spends ~67 bytes of pickle an object (dict, keypoints array, score, area: ~270 bytes a
# person), so a genuine file at MAX_POSE_FILE_BYTES holds about half this.
MAX_NPZ_OBJECTS = MAX_POSE_FILE_BYTES // 32

# ---- joint layouts -------------------------------------------------------------------------------------------
COCO17: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle")
OPENPOSE18: tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye",
    "right_ear", "left_ear")
BODY25: tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
    "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
    "right_small_toe", "right_heel")
MEDIAPIPE33: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index")

LAYOUTS: dict[str, tuple[str, ...]] = {
    "coco17": COCO17, "openpose18": OPENPOSE18, "body25": BODY25, "mediapipe33": MEDIAPIPE33}

# joints a layout may lack, computed as the midpoint of two others (only when both are present)
DERIVED_JOINTS: dict[str, tuple[str, str]] = {
    "neck": ("left_shoulder", "right_shoulder"), "mid_hip": ("left_hip", "right_hip")}
# the same anatomical point under two names
EQUIVALENT_JOINTS: dict[str, str] = {
    "left_big_toe": "left_foot_index", "left_foot_index": "left_big_toe",
    "right_big_toe": "right_foot_index", "right_foot_index": "right_big_toe"}


def layout_for_count(n_points: int) -> str:
    """The layout name for a keypoint count (17, 18, 25 or 33); ValueError otherwise."""
    for name, joints in LAYOUTS.items():
        if len(joints) == n_points:
            return name
    raise ValueError(f"pose: {n_points} keypoints per person match no known layout "
                     f"({', '.join(f'{k}={len(v)}' for k, v in LAYOUTS.items())})")


def _layout(name: str) -> tuple[str, ...]:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"pose: unknown keypoint layout {name!r}; known: {sorted(LAYOUTS)}") from None


def convert_keypoints(kps, src: str, dst: str) -> np.ndarray:
    """Convert keypoints [..., K_src, 3] from layout `src` to `dst` -> float64 [..., K_dst, 3].

    Joints are matched by name; neck/mid_hip are derived as midpoints (confidence = min of the two, only when both
    have confidence > 0); joints `src` lacks are (0, 0, 0). Confidence is carried unchanged.
    """
    src_names, dst_names = _layout(src), _layout(dst)
    a = np.asarray(kps, dtype=np.float64)
    if a.ndim < 2 or a.shape[-2:] != (len(src_names), 3):
        raise ValueError(f"pose: expected keypoints [..., {len(src_names)}, 3] for layout {src!r}, got {a.shape}")
    index = {n: i for i, n in enumerate(src_names)}
    out = np.zeros(a.shape[:-2] + (len(dst_names), 3), dtype=np.float64)
    for j, name in enumerate(dst_names):
        if name in index:
            out[..., j, :] = a[..., index[name], :]
        elif EQUIVALENT_JOINTS.get(name) in index:
            out[..., j, :] = a[..., index[EQUIVALENT_JOINTS[name]], :]
        elif name in DERIVED_JOINTS and all(p in index for p in DERIVED_JOINTS[name]):
            pa, pb = (a[..., index[p], :] for p in DERIVED_JOINTS[name])
            ok = (pa[..., 2] > 0) & (pb[..., 2] > 0)
            mid = np.concatenate([(pa[..., :2] + pb[..., :2]) / 2.0,
                                  np.minimum(pa[..., 2:], pb[..., 2:])], axis=-1)
            out[..., j, :] = np.where(ok[..., None], mid, 0.0)
    return out


# ---- POSE_KEYPOINT ---------------------------------------------------------------------------------------------
def _is_finite_number(value: Any) -> bool:
    """A real number (not a bool) that float64 holds: JSON integers can be larger (10**400 overflows isfinite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _shown(value: Any, limit: int = 60) -> str:
    """repr() for a message, shortened: a value from a file may be a long list or a very long integer."""
    if isinstance(value, int) and value.bit_length() > 4 * limit:  # repr refuses beyond 4300 digits
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


_KEYPOINT_KEYS = ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d")
SCORES_KEY = "humangen_scores"  # per person: raw detector confidences, keyed like the keypoint lists


def _flat(a: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)]


def _encode_keypoints(kps) -> tuple[list[float], list[float]]:
    """[K,3] with raw confidences -> (aux-style flat list: present (x, y, 1.0), absent (0, 0, 0); raw scores [K])."""
    a = np.asarray(kps, dtype=np.float64).reshape(-1, 3)
    present = a[:, 2] > 0
    out = np.zeros_like(a)
    out[present, :2] = a[present, :2]
    out[present, 2] = 1.0
    return _flat(out), _flat(np.where(present, a[:, 2], 0.0))


def encode_person(body, score: float | None = None, face=None, hand_left=None, hand_right=None) -> dict:
    """One POSE_KEYPOINT person from keypoint arrays [K,3] (pixels, raw confidences; <= 0 = absent), written as
    comfyui_controlnet_aux writes it, with the raw confidences under "humangen_scores" (see the module doc)."""
    person: dict = {}
    raw_scores: dict = {}
    for key, kps in zip(_KEYPOINT_KEYS, (body, face, hand_left, hand_right)):
        if kps is None or np.asarray(kps).size == 0:
            person[key] = None
            continue
        person[key], raw = _encode_keypoints(kps)
        if raw != person[key][2::3]:  # only when the raw scores say more than present/absent
            raw_scores[key] = raw
    if score is not None:
        person["score"] = float(score)
    if raw_scores:
        person[SCORES_KEY] = raw_scores
    return person


def scored_keypoints(person: dict, key: str = "pose_keypoints_2d") -> np.ndarray | None:
    """One keypoint list of a person as float64 [K,3] (as stored: any layout, pixels or normalised) whose third
    column is the raw detector score of each present keypoint when "humangen_scores" has one (> 0), else the stored
    confidence; absent keypoints (stored confidence <= 0) stay 0. None when the person has no such list."""
    flat = person.get(key)
    if not flat:
        return None
    a = np.asarray(flat, dtype=np.float64).reshape(-1, 3).copy()
    scores = person.get(SCORES_KEY)
    raw = scores.get(key) if isinstance(scores, dict) else None
    present = a[:, 2] > 0
    # not ours / damaged (wrong length, not finite numbers): the stored confidences still hold
    if isinstance(raw, (list, tuple)) and len(raw) == len(a) and all(_is_finite_number(v) for v in raw):
        r = np.asarray(raw, dtype=np.float64)  # a point another tool added (raw score 0) keeps its own confidence
        a[:, 2] = np.where(present & (r > 0), r, a[:, 2])
    a[~present, 2] = 0.0
    return a


def aux_person(person: dict) -> dict:
    """A person in the pack's convention (present keypoints 1.0 with raw scores under "humangen_scores", absent
    ones 0,0,0); other keys ("score", "area", ...) are kept."""
    arrays = [scored_keypoints(person, key) for key in _KEYPOINT_KEYS]
    out = encode_person(arrays[0], None, *arrays[1:])
    raw_scores = out.pop(SCORES_KEY, None)
    out.update({k: v for k, v in person.items() if k not in _KEYPOINT_KEYS and k != SCORES_KEY})
    if raw_scores:
        out[SCORES_KEY] = raw_scores
    return out


def aux_frame(frame: dict) -> dict:
    """A frame as the pack emits it: pixel coordinates, every person in the aux convention (`aux_person`)."""
    frame = pixel_frame(frame)
    return {**frame, "people": [aux_person(p) for p in frame["people"]]}


def make_frame(people: Iterable, width: int, height: int, layout: str = "openpose18", src_layout: str | None = None,
               scores: Sequence[float] | None = None) -> dict:
    """One POSE_KEYPOINT frame from per-person keypoint arrays [K,3] (pixels, raw confidences) given in
    `src_layout` (default: `layout`), stored in `layout` ("openpose18" for ControlNet tools), in the aux convention
    (present 1.0, raw confidences under "humangen_scores")."""
    people = list(people)
    if scores is not None and len(scores) != len(people):
        raise ValueError(f"pose: {len(scores)} scores for {len(people)} people")
    out = []
    for i, kps in enumerate(people):
        conv = convert_keypoints(kps, src_layout or layout, layout)
        out.append(encode_person(conv, None if scores is None else scores[i]))
    return {"people": out, "canvas_width": int(width), "canvas_height": int(height)}


def as_pose(value: Any) -> list[dict]:
    """Validate a POSE_KEYPOINT value (a list of frames, or one frame dict) and return the list of frames."""
    frames = [value] if isinstance(value, dict) else value
    if isinstance(frames, (list, tuple)) and len(frames) > MAX_FRAMES:
        raise ValueError(f"pose: {len(frames)} frames, more than the limit of {MAX_FRAMES}")
    if not isinstance(frames, (list, tuple)) or not frames:
        raise ValueError("pose: POSE_KEYPOINT must be a non-empty list of frames "
                         "{'people': [...], 'canvas_width': W, 'canvas_height': H}")
    for f, frame in enumerate(frames):
        if not isinstance(frame, dict) or not isinstance(frame.get("people"), list):
            raise ValueError(f"pose: frame {f} has no 'people' list")
        for key in ("canvas_width", "canvas_height"):
            v = frame.get(key)
            if not isinstance(v, (int, float)) or not _is_finite_number(v) or v <= 0 or int(v) != v:
                raise ValueError(f"pose: frame {f} has no valid {key!r} (got {_shown(v)})")
        check_image_size(frame["canvas_width"], frame["canvas_height"], "pose", "canvas",
                         max_side=MAX_CANVAS_SIDE, what=f"frame {f} canvas")
        _check_people(f, frame["people"])
    return list(frames)


_PERSON_NUMBERS = ("score", "area")  # optional per-person numbers (detection score, HumanSD's area)


def _check_people(frame_index: int, people: Any) -> None:
    """The people of frame `frame_index`: at most MAX_PEOPLE dicts whose keypoint lists are flat x,y,c lists of
    finite numbers (the body's in a known layout) and whose optional "score"/"area" are finite numbers."""
    if not isinstance(people, list):
        raise ValueError(f"pose: frame {frame_index} has no 'people' list")
    if len(people) > MAX_PEOPLE:
        raise ValueError(f"pose: frame {frame_index} has {len(people)} people, more than the limit of {MAX_PEOPLE}")
    for p, person in enumerate(people):
        if not isinstance(person, dict):
            raise ValueError(f"pose: frame {frame_index} person {p} is not a dict of keypoint lists")
        for key in _KEYPOINT_KEYS:
            values = person.get(key)
            if values is None:
                continue
            if not isinstance(values, (list, tuple)) or len(values) > MAX_KEYPOINT_VALUES or any(
                    isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
                raise ValueError(f"pose: frame {frame_index} person {p}: {key} must be a flat list of numbers")
            if not all(_is_finite_number(v) for v in values):
                raise ValueError(f"pose: frame {frame_index} person {p}: {key} holds NaN or infinite values (refused)")
            if len(values) % 3:
                raise ValueError(f"pose: frame {frame_index} person {p}: {key} length {len(values)} is not x,y,c "
                                 f"triples")
        for key in _PERSON_NUMBERS:
            v = person.get(key)
            if v is not None and not _is_finite_number(v):
                raise ValueError(f"pose: frame {frame_index} person {p}: {key} must be a number (got {_shown(v)})")
        kps = person.get("pose_keypoints_2d")
        if kps:
            layout_for_count(len(kps) // 3)


def frame_size(frame: dict) -> tuple[int, int]:
    """(width, height) of a frame's canvas."""
    return int(frame["canvas_width"]), int(frame["canvas_height"])


def _normalised(values) -> bool:
    a = np.asarray(values, dtype=np.float64).reshape(-1, 3)
    p = a[a[:, 2] > 0, :2]
    return len(p) > 0 and float(np.abs(p).max()) <= 1.5


def pixel_frame(frame: dict) -> dict:
    """The frame with pixel coordinates. Some POSE_KEYPOINT producers write coordinates normalised to [0, 1] of
    the canvas; each keypoint array whose present points all lie within 1.5 is taken as normalised and scaled by
    the canvas size (no real pose spans less than 2 pixels). Frames already in pixels are returned unchanged."""
    w, h = frame_size(frame)
    if w <= 2 or h <= 2 or not any(p.get(k) and _normalised(p[k]) for p in frame["people"] for k in _KEYPOINT_KEYS):
        return frame
    people = []
    for person in frame["people"]:
        new = dict(person)
        for key in _KEYPOINT_KEYS:
            if new.get(key) and _normalised(new[key]):
                a = np.asarray(new[key], dtype=np.float64).reshape(-1, 3).copy()
                ok = a[:, 2] > 0
                a[ok, 0] *= w
                a[ok, 1] *= h
                new[key] = [float(v) for v in a.reshape(-1)]
        people.append(new)
    return {**frame, "people": people}


def person_keypoints(person: dict, layout: str = "coco17") -> np.ndarray:
    """One person's body keypoints converted to `layout` -> float64 [K,3] (zeros if the person has none); the
    confidence column holds the raw detector scores where the person carries them (`scored_keypoints`)."""
    arr = scored_keypoints(person)
    if arr is None:
        return np.zeros((len(_layout(layout)), 3))
    return convert_keypoints(arr, layout_for_count(arr.shape[0]), layout)


def frame_people(frame: dict, layout: str = "coco17") -> list[np.ndarray]:
    """The people of a frame as keypoint arrays [K,3] in `layout` (pixels; normalised input is scaled)."""
    return [person_keypoints(p, layout) for p in pixel_frame(frame)["people"]]


def people_array(frame: dict, layout: str = "coco17") -> np.ndarray:
    """The people of a frame as one array [P, K, 3] in `layout` (P may be 0)."""
    people = frame_people(frame, layout)
    if not people:
        return np.zeros((0, len(_layout(layout)), 3))
    return np.stack(people)


def _transform_flat(values, matrix: np.ndarray):
    if not values:
        return values
    a = np.asarray(values, dtype=np.float64).reshape(-1, 3).copy()
    ok = a[:, 2] > 0
    with np.errstate(over="ignore"):  # a point far off the canvas may overflow to inf: drawing skips such points
        xy = a[ok, :2] @ matrix[:, :2].T + matrix[:, 2]
    a[ok, :2] = xy
    return [float(v) for v in a.reshape(-1)]


def transform_frame(frame: dict, matrix, width: int, height: int) -> dict:
    """Apply a 2x3 affine `matrix` (x' = M @ [x, y, 1]) to every present keypoint (body, face, hands) of a frame
    and set the new canvas size. Absent keypoints stay (0, 0, 0); the result is in the aux convention."""
    m = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    frame = pixel_frame(frame)
    people = []
    for person in frame["people"]:
        new = dict(person)
        for key in _KEYPOINT_KEYS:
            if new.get(key):
                new[key] = _transform_flat(new[key], m)
        people.append(aux_person(new))
    out = {k: v for k, v in frame.items() if k not in ("people", "canvas_width", "canvas_height")}
    out.update(people=people, canvas_width=int(width), canvas_height=int(height))
    return out


def scale_frame(frame: dict, width: int, height: int) -> dict:
    """Rescale a frame's keypoints to a canvas of width x height."""
    w0, h0 = frame_size(frame)
    return transform_frame(frame, [[width / w0, 0, 0], [0, height / h0, 0]], width, height)


# ---- files -------------------------------------------------------------------------------------------------------
def _atomic_write(path: str, data: bytes) -> None:
    """Write `data` exclusively (`utils.paths.write_exclusive`): never half-written, never replacing a file."""
    from .paths import write_exclusive
    write_exclusive(path, data, node="HumanGen pose")


def _read_json(path: str):
    """A pose JSON file, bounded in size and nesting (`limits.read_json_file`); any failure is a ValueError."""
    return read_json_file(path, f"pose: {os.path.basename(path)}", MAX_POSE_FILE_BYTES)


def _infer_canvas(people_kps: list[np.ndarray]) -> tuple[int, int]:
    pts = [k[k[:, 2] > 0, :2] for k in people_kps]
    pts = [p for p in pts if len(p)]
    if not pts:
        raise ValueError("pose: the file has no canvas size and no keypoints to infer it from; give canvas_size")
    allp = np.concatenate(pts)
    if not np.isfinite(allp).all():
        raise ValueError("pose: the keypoints hold NaN or infinite values (refused)")
    w, h = float(allp[:, 0].max() + 1), float(allp[:, 1].max() + 1)
    if w > MAX_CANVAS_SIDE or h > MAX_CANVAS_SIDE:
        raise ValueError(f"pose: keypoints reach ({w:.0f}, {h:.0f}), beyond the largest canvas ({MAX_CANVAS_SIDE}); "
                         f"give canvas_size")
    return max(1, int(math.ceil(w))), max(1, int(math.ceil(h)))


def load_openpose_json(path: str, canvas_size: tuple[int, int] | None = None) -> list[dict]:
    """OpenPose JSON: one frame (OpenPose's own output `{"version", "people": [...]}`, canvas optional) or a list
    of frames (comfyui_controlnet_aux's saved POSE_KEYPOINT). `canvas_size` (W, H) fills a missing canvas. The
    frames come back in the aux convention (OpenPose's raw confidences move to "humangen_scores"), in pixels."""
    data = _read_json(path)
    frames = [data] if isinstance(data, dict) else data
    if not isinstance(frames, list):
        raise ValueError(f"pose: {path} is not OpenPose JSON (a frame dict or a list of frames)")
    out = []
    for f, frame in enumerate(frames):
        if not isinstance(frame, dict) or "people" not in frame:
            raise ValueError(f"pose: {path} is not OpenPose JSON (a frame has no 'people')")
        frame = dict(frame)
        if "canvas_width" not in frame or "canvas_height" not in frame:
            if not canvas_size:  # the canvas comes from the points, read before as_pose checks the frame
                _check_people(f, frame["people"])
            w, h = canvas_size or _infer_canvas([person_keypoints(p, "body25") for p in frame["people"]])
            frame["canvas_width"], frame["canvas_height"] = int(w), int(h)
        out.append(frame)
    return [aux_frame(f) for f in as_pose(out)]


def openpose_json_bytes(pose) -> bytes:
    """POSE_KEYPOINT as a JSON list of frames (comfyui_controlnet_aux layout and confidences; raw scores under
    "humangen_scores", so the file loads back exactly)."""
    return json.dumps([aux_frame(f) for f in as_pose(pose)], indent=1).encode("utf-8")


def save_openpose_json(pose, path: str) -> str:
    _atomic_write(path, openpose_json_bytes(pose))
    return path


def load_coco_json(path: str, canvas_size: tuple[int, int] | None = None) -> list[dict]:
    """COCO keypoints JSON, either a dataset dict (`images` + `annotations`, keypoints x,y,v with v in {0,1,2};
    confidences come from the optional `keypoint_scores` we write, else 1.0 for v > 0) or a results list
    (`[{"image_id", "keypoints": [x, y, score, ...], "score"}]`). One frame per image, in `images` order, then one
    per image id that only annotations name (in the order they first appear)."""
    name = os.path.basename(path)
    data = _read_json(path)
    if isinstance(data, dict) and "annotations" in data:
        images = data.get("images") or []
        anns = data["annotations"]
        results = False
    elif isinstance(data, list):
        images, anns, results = [], data, True
    else:
        raise ValueError(f"pose: {path} is not COCO keypoint JSON (no 'annotations' and not a results list)")
    if not isinstance(images, list):
        raise ValueError(f"pose: {name}: 'images' must be a list of image objects")
    if not isinstance(anns, list):
        raise ValueError(f"pose: {name}: 'annotations' must be a list of annotation objects")
    # counted before any work: each image is a frame, and the annotations are read once each below
    if len(images) > MAX_FRAMES:
        raise ValueError(f"pose: {name}: {len(images)} images, more than the limit of {MAX_FRAMES}")
    if len(anns) > MAX_COCO_ANNOTATIONS:
        raise ValueError(f"pose: {name}: {len(anns)} annotations, more than the limit of {MAX_COCO_ANNOTATIONS}")
    order = []  # image ids, one per frame
    sizes = {}  # image id -> (width, height); missing ones come from canvas_size or the points
    for i, im in enumerate(images):
        if not isinstance(im, dict):
            raise ValueError(f"pose: {name}: image {i} is not an object")
        image_id = im.get("id")
        if image_id is None or not _is_coco_id(image_id):
            raise ValueError(f"pose: {name}: image {i}: id must be a number or text (got {_shown(image_id)})")
        w, h = im.get("width"), im.get("height")
        if any(v and not _is_finite_number(v) for v in (w, h)):
            raise ValueError(f"pose: {name}: image {i}: width and height must be positive whole numbers "
                             f"(got {_shown(w)}, {_shown(h)})")
        order.append(image_id)
        sizes[image_id] = (w, h)
    people_of: dict = {}  # image id -> [(keypoints [17,3], score or None)], in annotation order
    for i, a in enumerate(anns):
        if not isinstance(a, dict):
            raise ValueError(f"pose: {name}: annotation {i} is not an object")
        image_id = a.get("image_id")
        if image_id is not None and not _is_coco_id(image_id):
            raise ValueError(f"pose: {name}: annotation {i}: image_id must be a number or text "
                             f"(got {_shown(image_id)})")
        if image_id not in sizes:
            if len(order) >= MAX_FRAMES:
                raise ValueError(f"pose: {name}: the annotations name more than {MAX_FRAMES} images, the limit")
            order.append(image_id)
            sizes[image_id] = (None, None)
        if "keypoints" not in a:  # another category
            continue
        people = people_of.setdefault(image_id, [])
        if len(people) >= MAX_PEOPLE:
            raise ValueError(f"pose: {name}: image {_shown(image_id)} has more than {MAX_PEOPLE} people, the limit")
        people.append(_coco_person(a, results, f"pose: {name}: annotation {i}"))
    frames = []
    for image_id in order:
        people = people_of.get(image_id, [])
        keypoints = [k for k, _ in people]
        w, h = sizes[image_id]
        if not w or not h:
            w, h = canvas_size or _infer_canvas(keypoints)
        frame = make_frame(keypoints, w, h, layout="openpose18", src_layout="coco17")
        for person, (_, score) in zip(frame["people"], people):
            if score is not None:
                person["score"] = float(score)
        frames.append(frame)
    if not frames:
        raise ValueError(f"pose: {path} holds no images or annotations")
    return as_pose(frames)


def _is_coco_id(value: Any) -> bool:
    return isinstance(value, str) or _is_finite_number(value)


def _coco_person(a: dict, results: bool, where: str) -> tuple[np.ndarray, float | None]:
    """One COCO annotation -> (keypoints [17,3] with confidences, absent points 0; its score or None)."""
    try:
        values = np.asarray(a["keypoints"], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where}: keypoints must be 17 x, y, v triples (51 numbers)") from None
    if values.size != 3 * len(COCO17):
        raise ValueError(f"{where}: keypoints must be 17 x, y, v triples (51 numbers), got {values.size} numbers")
    k = values.reshape(len(COCO17), 3).copy()
    if not results:
        if "keypoint_scores" in a:
            try:
                scores = np.asarray(a["keypoint_scores"], dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                scores = None
            if scores is None or scores.shape != (len(COCO17),):
                raise ValueError(f"{where}: keypoint_scores must be 17 numbers")
            k[:, 2] = scores
        else:
            k[:, 2] = (k[:, 2] > 0).astype(np.float64)
        k[k[:, 2] <= 0] = 0.0
    score = a.get("score")
    if score is not None and not _is_finite_number(score):
        raise ValueError(f"{where}: score must be a number (got {_shown(score)})")
    return k, score


def coco_json_bytes(pose) -> bytes:
    """POSE_KEYPOINT as a COCO keypoints dataset (one image per frame; v = 2 where confidence > 0, the confidences
    themselves in `keypoint_scores`, so the file loads back exactly)."""
    frames = as_pose(pose)
    images, anns = [], []
    for f, frame in enumerate(frames):
        frame = pixel_frame(frame)
        w, h = frame_size(frame)
        images.append({"id": f + 1, "width": w, "height": h, "file_name": f"frame_{f:05d}.png"})
        for person in frame["people"]:
            k = person_keypoints(person, "coco17")
            vis = k[:, 2] > 0
            flat = []
            for (x, y, c), v in zip(k, vis):
                flat += [float(x), float(y), 2 if v else 0]
            box = [0.0, 0.0, 0.0, 0.0]
            if vis.any():
                x0, y0 = k[vis, :2].min(0)
                x1, y1 = k[vis, :2].max(0)
                box = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            ann = {"id": len(anns) + 1, "image_id": f + 1, "category_id": 1, "keypoints": flat,
                   "num_keypoints": int(vis.sum()), "keypoint_scores": [float(c) for c in k[:, 2]],
                   "bbox": box, "area": float(person.get("area", box[2] * box[3])), "iscrowd": 0}
            if "score" in person:
                ann["score"] = float(person["score"])
            anns.append(ann)
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO17),
                            "skeleton": [[a + 1, b + 1] for _, a, b in HUMANSD_LIMBS]}]}
    return json.dumps(data, indent=1).encode("utf-8")


def save_coco_json(pose, path: str) -> str:
    _atomic_write(path, coco_json_bytes(pose))
    return path


class _UnsafePoseFile(pickle.UnpicklingError):
    """A pose file's pickle names a global outside the numpy-only allow-list."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, dtypes and scalars, plus plain containers; refuses every other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            if name == "_reconstruct":  # the bounded one: a large shape here is memory the file never held
                from .checkpoints import bounded_numpy_reconstruct
                return bounded_numpy_reconstruct
            import importlib
            return getattr(importlib.import_module(module), name)
        raise _UnsafePoseFile(f"the pickle refers to the global '{module}.{name}', which is not allowed in a pose "
                              f"file")


def _safe_npy_object_array(fh, where: str = "pose: the npz array") -> np.ndarray:
    """One .npy member (`where` names it in errors): numeric arrays read directly, object arrays through
    `_NumpyOnlyUnpickler`."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except ValueError as exc:  # numpy's own words on a damaged header
        raise ValueError(f"{where} is not a numpy array file ({str(exc)[:200]})") from None
    if not dtype.hasobject:
        count = int(np.prod(shape)) if shape else 1
        raw = fh.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise ValueError(f"{where} is truncated: its header declares {count} values of {dtype.itemsize} bytes")
        data = np.frombuffer(raw, dtype=dtype, count=count)
        return data.reshape(shape, order="F" if fortran else "C")
    obj = _NumpyOnlyUnpickler(fh).load()
    if not isinstance(obj, np.ndarray):
        raise ValueError(f"{where} is not a numpy array")
    return obj


class _ObjectBudget:
    """Counts the objects `_plain` copies out of one .npz pose file: at most MAX_NPZ_FRAME_OBJECTS per member and
    MAX_NPZ_OBJECTS in all."""

    def __init__(self, file_name: str):
        self.file_name, self.member, self.in_member, self.in_file = file_name, "", 0, 0

    def start_member(self, member: str) -> None:
        self.member, self.in_member = member, 0

    def take(self) -> None:
        self.in_member += 1
        self.in_file += 1
        hint = "is one object referenced over and over? A genuine HumanSD file holds 4 objects a person"
        if self.in_member > MAX_NPZ_FRAME_OBJECTS:
            raise ValueError(f"pose: {self.file_name}: {self.member} unpickles to more than {MAX_NPZ_FRAME_OBJECTS} "
                             f"objects, more than a frame of {MAX_PEOPLE} people takes ({hint})")
        if self.in_file > MAX_NPZ_OBJECTS:
            raise ValueError(f"pose: {self.file_name}: the arrays unpickle to more than {MAX_NPZ_OBJECTS} objects "
                             f"in all ({hint})")


def _plain(value, budget: _ObjectBudget):
    """Check that an unpickled value holds only dicts, lists, strings, numbers and numeric numpy arrays; the copy
    is a tree, so each object is counted against `budget` every time it is referenced."""
    budget.take()
    if isinstance(value, dict):
        return {str(k): _plain(v, budget) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, budget) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            return [_plain(v, budget) for v in value.reshape(-1)]
        return value
    if isinstance(value, (str, bool, int, float, np.number, np.bool_)) or value is None:
        return value
    raise ValueError(f"pose: unexpected {type(value).__name__} in the pose file")


def load_humansd_npz(path: str, canvas_size: tuple[int, int] | None = None) -> list[dict]:
    """HumanSD's `.npz`: `arr_0` (and `arr_1`, ... for more frames we write) = object array of dicts
    `{"keypoints": [17,3], "score", "area"}` in pixels. Loaded WITHOUT `np.load(allow_pickle=True)`: the pickle
    stream is read by an unpickler that can only rebuild numpy arrays/scalars and plain containers.
    Canvas size: our files store `canvas_sizes` [F,2] (W,H); otherwise `canvas_size` or inferred from the points."""
    try:
        return _load_humansd_npz(path, canvas_size)
    except _UnsafePoseFile as exc:
        raise ValueError(f"pose: {os.path.basename(path)} refused: {exc}; loading it could run code from the "
                         f"file, which HumanGen never does") from None
    except (pickle.UnpicklingError, EOFError, KeyError, IndexError, TypeError, AttributeError, OverflowError,
            RecursionError, zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"pose: {os.path.basename(path)} is not a readable HumanSD .npz pose file "
                         f"({type(exc).__name__}: {str(exc)[:200]})") from None


def _load_humansd_npz(path: str, canvas_size: tuple[int, int] | None) -> list[dict]:
    name = os.path.basename(path)
    try:
        check_archive(path, "pose", "file", max_bytes=MAX_POSE_FILE_BYTES, max_members=MAX_FRAMES + 1,
                      what="HumanSD .npz pose file")
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"pose: {name} is not an .npz file") from None
    budget = _ObjectBudget(name)

    def member(key: str):
        with zf.open(key + ".npy") as fh:
            array = _safe_npy_object_array(io.BytesIO(fh.read()), f"pose: {name}: {key}")
        budget.start_member(key)
        return _plain(array, budget)

    with zf:
        names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        keys = sorted((n for n in names if n.startswith("arr_") and plain_int(n[4:]) is not None),
                      key=lambda n: plain_int(n[4:]))
        if not keys:
            raise ValueError(f"pose: {name} has no 'arr_0' (HumanSD pose file)")
        sizes = _npz_canvas_sizes(member("canvas_sizes"), name) if "canvas_sizes" in names else None
        frames = []
        for f, key in enumerate(keys):
            people, extras = _npz_people(member(key), f"pose: {name}: {key}")
            if sizes is not None and f < len(sizes):
                w, h = (int(v) for v in sizes[f])
            else:
                w, h = canvas_size or _infer_canvas(people)
            frame = make_frame(people, w, h, layout="openpose18", src_layout="coco17")
            for person, extra in zip(frame["people"], extras):
                person.update(extra)
            frames.append(frame)
    return as_pose(frames)


def _npz_canvas_sizes(value, name: str) -> np.ndarray:
    """Our `canvas_sizes` member -> int64 [F, 2] (width, height); as_pose checks the values themselves."""
    try:
        sizes = np.asarray(value, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError, OverflowError):
        sizes = None
    if sizes is None or not (np.abs(sizes) < 2 ** 31).all():  # also refuses NaN and inf
        raise ValueError(f"pose: {name}: canvas_sizes must be [frames, 2] numbers (width, height)")
    return sizes.astype(np.int64)


def _npz_people(items, where: str) -> tuple[list[np.ndarray], list[dict]]:
    """One HumanSD frame (a numeric array [P,17,3] or a list of {"keypoints": [17,3], "score", "area"}) ->
    (keypoints [17,3] per person, missing points zeroed; {"score", "area"} per person). `where` names the member."""
    if isinstance(items, np.ndarray):  # a numeric array [P,17,3]
        if items.size % (3 * len(COCO17)):
            raise ValueError(f"{where} is a numeric array of shape {items.shape}; expected [people, 17, 3]")
        items = items.reshape(-1, len(COCO17), 3)
        if len(items) > MAX_PEOPLE:
            raise ValueError(f"{where} holds {len(items)} people, more than the limit of {MAX_PEOPLE}")
        items = [{"keypoints": k} for k in items]
    people, extras = [], []
    for p, item in enumerate(items):
        if not isinstance(item, dict) or "keypoints" not in item:
            raise ValueError(f"{where} must hold dicts with 'keypoints' [17,3]")
        try:
            k = np.asarray(item["keypoints"], dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            k = None
        if k is None or k.shape != (len(COCO17), 3):
            got = "" if k is None else f" (got shape {k.shape})"
            raise ValueError(f"{where} person {p}: keypoints must be 17 rows of x, y, score numbers{got}")
        people.append(np.where((k[:, 2:] > 0), k, 0.0))  # HumanSD marks missing points (-1, -1, 0)
        extra = {}
        for field in _PERSON_NUMBERS:
            if field in item:
                try:
                    extra[field] = float(item[field])
                except (TypeError, ValueError, OverflowError):
                    extra[field] = math.nan
                if not math.isfinite(extra[field]):
                    raise ValueError(f"{where} person {p}: {field} must be a number (got {_shown(item[field])})")
        extras.append(extra)
    return people, extras


def humansd_npz_bytes(pose) -> bytes:
    """POSE_KEYPOINT as HumanSD's `.npz` (`arr_0` = object array of {"keypoints": float32 [17,3], "score",
    "area"}; frame i in `arr_i`; canvas sizes in `canvas_sizes`). Missing points are written (-1, -1, 0) as in
    HumanSD's data; keypoints are float32 as HumanSD expects (exact for float32 values)."""
    frames = as_pose(pose)
    arrays = {}
    for f, frame in enumerate(frames):
        frame = pixel_frame(frame)
        items = np.empty(len(frame["people"]), dtype=object)
        for p, person in enumerate(frame["people"]):
            k = person_keypoints(person, "coco17").astype(np.float32)
            k[k[:, 2] <= 0] = (-1.0, -1.0, 0.0)
            vis = k[:, 2] > 0
            score = person.get("score", float(k[vis, 2].mean()) if vis.any() else 0.0)
            if "area" in person:
                area = float(person["area"])
            elif vis.any():
                span = k[vis, :2].max(0) - k[vis, :2].min(0)
                area = float(span[0] * span[1])
            else:
                area = 0.0
            items[p] = {"keypoints": k, "score": float(score), "area": area}
        arrays[f"arr_{f}"] = items
    arrays["canvas_sizes"] = np.asarray([frame_size(fr) for fr in frames], dtype=np.int64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_humansd_npz(pose, path: str) -> str:
    if not path.endswith(".npz"):
        path += ".npz"
    _atomic_write(path, humansd_npz_bytes(pose))
    return path


POSE_FORMATS = ("openpose_json", "coco_json", "humansd_npz")


def _detect_format(path: str) -> str:
    if path.lower().endswith(".npz"):
        return "humansd_npz"
    data = _read_json(path)
    if isinstance(data, dict) and "annotations" in data:
        return "coco_json"
    if isinstance(data, list) and data and isinstance(data[0], dict) and "image_id" in data[0]:
        return "coco_json"
    return "openpose_json"


def load_pose(path: str, canvas_size: tuple[int, int] | None = None, fmt: str | None = None) -> list[dict]:
    """Load OpenPose JSON, COCO JSON or HumanSD npz (format from `fmt` or sniffed) as POSE_KEYPOINT."""
    fmt = fmt or _detect_format(path)
    loader = {"openpose_json": load_openpose_json, "coco_json": load_coco_json,
              "humansd_npz": load_humansd_npz}.get(fmt)
    if loader is None:
        raise ValueError(f"pose: unknown pose format {fmt!r}; known: {POSE_FORMATS}")
    try:
        return loader(path, canvas_size)
    except (KeyError, IndexError, TypeError, AttributeError, RecursionError, OverflowError) as exc:
        raise ValueError(f"pose: {os.path.basename(path)} does not have the structure of a {fmt} pose file "
                         f"({type(exc).__name__}: {str(exc)[:120]})") from None


def encode_pose(pose, fmt: str) -> bytes:
    """The bytes of a pose file in format `fmt` (one of POSE_FORMATS)."""
    encoder = {"openpose_json": openpose_json_bytes, "coco_json": coco_json_bytes,
               "humansd_npz": humansd_npz_bytes}.get(fmt)
    if encoder is None:
        raise ValueError(f"pose: unknown pose format {fmt!r}; known: {POSE_FORMATS}")
    return encoder(pose)


def save_pose(pose, path: str, fmt: str | None = None) -> str:
    """Save POSE_KEYPOINT; format from `fmt` or the file ending (.npz -> HumanSD, else OpenPose JSON)."""
    fmt = fmt or ("humansd_npz" if path.lower().endswith(".npz") else "openpose_json")
    if fmt == "humansd_npz" and not path.endswith(".npz"):
        path += ".npz"
    _atomic_write(path, encode_pose(pose, fmt))
    return path


# ---- rendering ---------------------------------------------------------------------------------------------------
def hls_palette(n: int, h: float = 0.01, l: float = 0.6, s: float = 0.65) -> list[tuple[float, float, float]]:
    """seaborn's `color_palette("hls", n)` (hues i/n + h, lightness l, saturation s) as RGB floats in [0,1]."""
    hues = np.linspace(0, 1, n + 1)[:-1]
    hues += h
    hues %= 1
    hues -= hues.astype(int)
    return [colorsys.hls_to_rgb(float(x), l, s) for x in hues]


# HumanSD (diffusion.md §1.3): [colour index, a, b] on COCO-17; no shoulder-shoulder or hip-hip edge.
HUMANSD_LIMBS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 1), (1, 0, 2), (2, 1, 3), (3, 2, 4), (4, 3, 5), (5, 4, 6), (6, 5, 7), (7, 6, 8), (8, 7, 9), (9, 8, 10),
    (10, 5, 11), (11, 6, 12), (12, 11, 13), (13, 12, 14), (14, 13, 15), (15, 14, 16))
HUMANSD_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    tuple(int(255 * c) for c in rgb) for rgb in hls_palette(len(HUMANSD_LIMBS)))  # RGB
HUMANSD_LINE_WIDTH = 10

# OpenPose-18 limbs (1-based pairs, as the ControlNet annotator lists them); only the first 17 are drawn.
OPENPOSE_LIMBS: tuple[tuple[int, int], ...] = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13), (13, 14),
    (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (3, 17), (6, 18))
OPENPOSE_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))  # RGB
OPENPOSE_STICK_WIDTH = 4
RENDER_STYLES = ("humansd", "openpose")


# OpenCV takes int32 points (and shifts them 16 bits inside), so keypoints far off the canvas, or made huge by
# rescaling, must not reach it: a limb reaching past this box is cut where it leaves the box, along the limb, so its
# visible part keeps its place and direction; joints past it are not drawn (they are far off any canvas we draw).
# Everything within the box goes to OpenCV exactly as before (HumanSD's drawing stays bit-identical).
DRAW_BOUND = float(2 ** 20)


def _in_draw_box(x: float, y: float) -> bool:
    return abs(x) <= DRAW_BOUND and abs(y) <= DRAW_BOUND  # False for NaN and inf


def _limb_in_draw_box(xa: float, ya: float, xb: float, yb: float) -> tuple[float, float, float, float] | None:
    """The part of the segment a-b inside the draw box as (xa, ya, xb, yb): the values themselves when both ends are
    inside, else cut at the box's edges (Liang-Barsky); None when no part is inside or an end is not finite."""
    if _in_draw_box(xa, ya) and _in_draw_box(xb, yb):
        return xa, ya, xb, yb
    if not all(math.isfinite(v) for v in (xa, ya, xb, yb)):
        return None
    swapped = max(abs(xa), abs(ya)) > max(abs(xb), abs(yb))
    if swapped:  # step from the nearer end, so a far end of 1e300 does not swamp the visible part in rounding
        xa, ya, xb, yb = xb, yb, xa, ya
    dx, dy = xb - xa, yb - ya
    if not (math.isfinite(dx) and math.isfinite(dy)):
        return None
    t_enter, t_leave = 0.0, 1.0
    for p, q in ((-dx, xa + DRAW_BOUND), (dx, DRAW_BOUND - xa), (-dy, ya + DRAW_BOUND), (dy, DRAW_BOUND - ya)):
        if p == 0:
            if q < 0:  # parallel to this edge, outside it
                return None
        elif p < 0:
            t_enter = max(t_enter, q / p)
        else:
            t_leave = min(t_leave, q / p)
    if t_enter > t_leave:
        return None
    ends = [min(max(v, -DRAW_BOUND), DRAW_BOUND)  # rounding may step a hair past the edge
            for t in (t_enter, t_leave) for v in (xa + t * dx, ya + t * dy)]
    return (ends[2], ends[3], ends[0], ends[1]) if swapped else (ends[0], ends[1], ends[2], ends[3])


def _draw_humansd(canvas: np.ndarray, people: list[np.ndarray], threshold: float) -> None:
    import cv2
    for kpts in people:
        if np.sum(kpts) <= 0:  # HumanSD skips empty people
            continue
        for idx, a, b in HUMANSD_LIMBS:
            if kpts[a, 2] > threshold and kpts[b, 2] > threshold:
                color = HUMANSD_COLORS[idx]
                limb = _limb_in_draw_box(kpts[a, 0], kpts[a, 1], kpts[b, 0], kpts[b, 1])
                if limb is not None:
                    cv2.line(canvas, (int(limb[0]), int(limb[1])), (int(limb[2]), int(limb[3])), color,
                             HUMANSD_LINE_WIDTH)
                for j in (a, b):
                    if _in_draw_box(kpts[j, 0], kpts[j, 1]):
                        cv2.circle(canvas, (int(kpts[j, 0]), int(kpts[j, 1])), HUMANSD_LINE_WIDTH // 2, color, -1)


def _draw_openpose(canvas: np.ndarray, people: list[np.ndarray], threshold: float) -> np.ndarray:
    """ControlNet (1.1 annotator) body style on OpenPose-18 points: 17 filled ellipse limbs (stick width 4), the
    limb layer dimmed to 60 %, then joint dots of radius 4."""
    import cv2
    for kpts in people:
        for i in range(17):
            a, b = OPENPOSE_LIMBS[i][0] - 1, OPENPOSE_LIMBS[i][1] - 1
            if not (kpts[a, 2] > threshold and kpts[b, 2] > threshold):
                continue
            limb = _limb_in_draw_box(kpts[a, 0], kpts[a, 1], kpts[b, 0], kpts[b, 1])
            if limb is None:
                continue
            xs, ys = (limb[0], limb[2]), (limb[1], limb[3])
            mx, my = float(np.mean(xs)), float(np.mean(ys))
            length = math.hypot(xs[0] - xs[1], ys[0] - ys[1])
            angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
            poly = cv2.ellipse2Poly((int(mx), int(my)), (int(length / 2), OPENPOSE_STICK_WIDTH), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, poly, OPENPOSE_COLORS[i])
    canvas = (canvas * 0.6).astype(np.uint8)
    for kpts in people:
        for i in range(18):
            if kpts[i, 2] > threshold and _in_draw_box(kpts[i, 0], kpts[i, 1]):
                cv2.circle(canvas, (int(kpts[i, 0]), int(kpts[i, 1])), 4, OPENPOSE_COLORS[i], thickness=-1)
    return canvas


def person_score(person: dict) -> float | None:
    """A person's detection score (the optional "score" key), or None when the pose carries none or a malformed one
    (`as_pose` refuses those; a frame that skipped it is drawn as if it had no score)."""
    score = person.get("score")
    return float(score) if _is_finite_number(score) else None


def _check_render_size(w: int, h: int, explicit: bool) -> None:
    check_image_size(w, h, "pose", "width" if explicit else "canvas", max_side=MAX_IMAGE_SIDE,
                     what="skeleton image" if explicit else "pose canvas (rendered)")


def render_frame(frame: dict, style: str = "humansd", width: int | None = None, height: int | None = None,
                 threshold: float = 0.05, person_threshold: float = 0.0) -> np.ndarray:
    """Render one frame's skeletons -> uint8 RGB [H, W, 3] on black.

    style "humansd": exactly HumanSD's `draw_humansd_skeleton` (COCO-17, 16 limbs, line width 10, end dots radius 5,
    seaborn hls colours, coordinates truncated with int(), later strokes over earlier ones). style "openpose":
    ControlNet's OpenPose body style on OpenPose-18 (neck = shoulder midpoint). A keypoint is drawn when its
    confidence > `threshold`; people whose optional "score" is <= `person_threshold` are skipped. With
    width/height the keypoints are rescaled from the frame's canvas to that size. Keypoints more than DRAW_BOUND
    pixels out are not drawn; limbs reaching them are drawn up to that bound, in their own direction.
    """
    if style not in RENDER_STYLES:
        raise ValueError(f"pose: unknown skeleton style {style!r}; known: {RENDER_STYLES}")
    frame = pixel_frame(frame)
    w0, h0 = frame_size(frame)
    w, h = int(width or w0), int(height or h0)
    _check_render_size(w, h, explicit=bool(width))
    if (w, h) != (w0, h0):
        frame = scale_frame(frame, w, h)
    persons = [p for p in frame["people"] if (score := person_score(p)) is None or score > person_threshold]
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    if style == "humansd":
        _draw_humansd(canvas, [person_keypoints(p, "coco17") for p in persons], threshold)
        return canvas
    return _draw_openpose(canvas, [person_keypoints(p, "openpose18") for p in persons], threshold)


def render_skeleton(pose, style: str = "humansd", width: int | None = None, height: int | None = None,
                    threshold: float = 0.05, person_threshold: float = 0.0) -> np.ndarray:
    """Render every frame of a POSE_KEYPOINT -> uint8 [F, H, W, 3] (see `render_frame`). Frames with different
    canvas sizes need an explicit width and height."""
    frames = as_pose(pose)
    if not frames:
        raise ValueError("pose: no frames to render")
    sizes = {frame_size(pixel_frame(f)) for f in frames}
    if (width is None or height is None) and len(sizes) > 1:
        raise ValueError(f"pose: frames have different canvas sizes {sorted(sizes)}; give width and height")
    w, h = (width, height) if width and height else next(iter(sizes))
    _check_render_size(w, h, explicit=bool(width and height))  # before anything is allocated or drawn
    check_batch_pixels(len(frames), w, h, "pose", "pose", what="skeleton images")
    out = np.empty((len(frames), h, w, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = render_frame(frame, style, width, height, threshold, person_threshold)
    return out


# ---- faces -------------------------------------------------------------------------------------------------------
def face_box_from_keypoints(kps, threshold: float = 0.3, scale: float = 1.0):
    """A square face box from COCO-17 head points (nose, eyes, ears) -> (x0, y0, x1, y1, score) or None.

    Centre = mean of the present head points; side = max(2.2 x their largest distance from the centre,
    0.45 x the shoulder width when both shoulders are present), times `scale`. Score = mean head confidence."""
    k = np.asarray(kps, dtype=np.float64).reshape(17, 3)
    head = k[:5][k[:5, 2] > threshold]
    if len(head) < 2:
        return None
    centre = head[:, :2].mean(0)
    spread = float(np.abs(head[:, :2] - centre).max())
    side = 2.2 * spread
    if k[5, 2] > threshold and k[6, 2] > threshold:
        side = max(side, 0.45 * float(np.hypot(*(k[5, :2] - k[6, :2]))))
    side *= scale
    if side <= 1:
        return None
    half = side / 2
    return (float(centre[0] - half), float(centre[1] - half), float(centre[0] + half), float(centre[1] + half),
            float(head[:, 2].mean()))


__all__ = [
    "COCO17", "OPENPOSE18", "BODY25", "MEDIAPIPE33", "LAYOUTS", "DERIVED_JOINTS", "EQUIVALENT_JOINTS",
    "layout_for_count", "convert_keypoints", "SCORES_KEY", "encode_person", "scored_keypoints", "aux_person",
    "aux_frame", "make_frame", "as_pose", "frame_size", "person_keypoints",
    "frame_people", "people_array", "pixel_frame", "transform_frame", "scale_frame", "POSE_FORMATS", "load_pose",
    "save_pose",
    "load_openpose_json", "save_openpose_json", "load_coco_json", "save_coco_json", "load_humansd_npz",
    "save_humansd_npz", "encode_pose", "hls_palette", "HUMANSD_LIMBS", "HUMANSD_COLORS", "HUMANSD_LINE_WIDTH", "OPENPOSE_LIMBS",
    "OPENPOSE_COLORS", "RENDER_STYLES", "render_frame", "render_skeleton", "face_box_from_keypoints",
]
