"""2-D keypoint formats and their mapping to SMPL-X joints.

`POSE_KEYPOINT` (comfyui_controlnet_aux / OpenPose JSON): a list of frames
``{"people": [{"pose_keypoints_2d": [x, y, c, ...]}], "canvas_width": W, "canvas_height": H}`` in pixels (normalised
[0, 1] coordinates are read too); a missing keypoint is ``(0, 0, 0)``, a present one has c = 1.0 with the raw
detector score under the person's ``"humangen_scores"`` (utils/pose.py): the fit reads the raw scores when
present. The format is told by the number of keypoints:

| n  | format      | order |
|----|-------------|-------|
| 17 | COCO-17     | nose, l-eye, r-eye, l-ear, r-ear, l-sho, r-sho, l-elb, r-elb, l-wri, r-wri, l-hip, r-hip, l-knee, r-knee, l-ank, r-ank |
| 18 | OpenPose-18 | nose, neck, r-sho, r-elb, r-wri, l-sho, l-elb, l-wri, r-hip, r-knee, r-ank, l-hip, l-knee, l-ank, r-eye, l-eye, r-ear, l-ear |
| 25 | BODY_25     | nose, neck, r-sho, r-elb, r-wri, l-sho, l-elb, l-wri, mid-hip, r-hip, r-knee, r-ank, l-hip, l-knee, l-ank, r-eye, l-eye, r-ear, l-ear, l-bigtoe, l-smalltoe, l-heel, r-bigtoe, r-smalltoe, r-heel |
| 33 | mediapipe   | converted by name with `utils.pose.convert_keypoints` (see utils/pose.py) |

SMPL-X joint indices are those of `smplx`'s output (55 skeleton joints, then the vertex landmarks 55 nose,
56 r-eye, 57 l-eye, 58 r-ear, 59 l-ear, 60 l-bigtoe, 61 l-smalltoe, 62 l-heel, 63 r-bigtoe, 64 r-smalltoe,
65 r-heel). Mid-hip maps to the pelvis, as in SMPLify-X.
"""
from __future__ import annotations

import math
from typing import Any

BODY25_NAMES = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "mid_hip",
                "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
                "l_big_toe", "l_small_toe", "l_heel", "r_big_toe", "r_small_toe", "r_heel")
# SMPL-X joint for each BODY_25 keypoint
BODY25_TO_SMPLX = (55, 12, 17, 19, 21, 16, 18, 20, 0, 2, 5, 8, 1, 4, 7, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65)
# per-keypoint weight of the reprojection term (all equal; kept as a table so a detector's bias can be tuned)
BODY25_WEIGHTS = tuple(1.0 for _ in BODY25_NAMES)
# index in BODY_25 of each keypoint of the other formats
COCO17_TO_BODY25 = (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11)
OPENPOSE18_TO_BODY25 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
FORMATS = {17: "coco17", 18: "openpose18", 25: "body25", 33: "mediapipe33"}
TO_BODY25 = {"coco17": COCO17_TO_BODY25, "openpose18": OPENPOSE18_TO_BODY25, "body25": tuple(range(25))}
# limbs of BODY_25 for drawing
BODY25_LIMBS = ((1, 0), (0, 15), (15, 17), (0, 16), (16, 18), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7),
                (1, 8), (8, 9), (9, 10), (10, 11), (11, 22), (22, 23), (11, 24), (8, 12), (12, 13), (13, 14),
                (14, 19), (19, 20), (14, 21))


def detect_format(n: int) -> str:
    if n not in FORMATS:
        raise ValueError(f"unknown keypoint format with {n} keypoints; expected 17 (COCO), 18 (OpenPose), 25 "
                         f"(BODY_25) or 33 (mediapipe)")
    return FORMATS[n]


def to_body25(points) -> list[tuple[float, float, float]]:
    """[(x, y, c)] in COCO-17 / OpenPose-18 / BODY_25 order -> 25 BODY_25 entries (missing ones are (0, 0, 0))."""
    pts = [tuple(float(v) for v in p) for p in points]
    fmt = detect_format(len(pts))
    if fmt == "mediapipe33":  # by joint name, through the pose toolkit (neck/mid-hip derived as midpoints)
        from ...utils.pose import convert_keypoints
        return [tuple(float(v) for v in row) for row in convert_keypoints(pts, "mediapipe33", "body25")]
    out = [(0.0, 0.0, 0.0)] * 25
    for i, j in enumerate(TO_BODY25[fmt]):
        out[j] = pts[i]
    return out


def from_body25(points25, fmt: str) -> list[tuple[float, float, float]]:
    """Inverse of `to_body25` for the keypoints that `fmt` has (mediapipe33 has no inverse: BODY_25 is returned)."""
    return [tuple(points25[j]) for j in TO_BODY25.get(fmt, TO_BODY25["body25"])]


def read_pose_keypoint(pose: Any, frame: int = 0, person: int = 0) -> dict:
    """One person of a POSE_KEYPOINT value -> {"points": [(x, y, c)] (source order), "format", "width", "height"}.

    Accepts a list of frames or a single frame dict. Raises ValueError with what was found.
    """
    frames = pose if isinstance(pose, (list, tuple)) else [pose]
    if not frames:
        raise ValueError("the POSE_KEYPOINT value has no frames")
    if not 0 <= frame < len(frames):
        raise ValueError(f"frame {frame} does not exist (the POSE_KEYPOINT has {len(frames)} frames)")
    f = frames[frame]
    if not isinstance(f, dict) or "people" not in f:
        raise ValueError("a POSE_KEYPOINT frame must be a dict with 'people', 'canvas_width', 'canvas_height'")
    people = f.get("people") or []
    if not 0 <= person < len(people):
        raise ValueError(f"person {person} does not exist (frame {frame} has {len(people)} people)")
    from ...utils import pose as posefmt
    flat = people[person].get("pose_keypoints_2d") or []
    if len(flat) % 3:
        raise ValueError(f"pose_keypoints_2d must hold x, y, c triples; got {len(flat)} numbers")
    w, h = f.get("canvas_width"), f.get("canvas_height")
    if w and h:  # normalised coordinates (comfyui_controlnet_aux's DWPose) become pixels
        f = posefmt.pixel_frame(f)
    scored = posefmt.scored_keypoints(f["people"][person])  # raw detector scores where the pose carries them
    pts = [] if scored is None else [(float(x), float(y), float(c)) for x, y, c in scored]
    if not all(math.isfinite(v) for p in pts for v in p):
        raise ValueError(f"person {person} of frame {frame} has NaN or infinite keypoint values")
    fmt = detect_format(len(pts))
    return {"points": pts, "format": fmt, "width": int(w) if w else None, "height": int(h) if h else None}


def make_pose_keypoint(points, width: int, height: int) -> list[dict]:
    """Build a one-frame, one-person POSE_KEYPOINT from [(x, y, c)] (any supported format), in the pack's
    convention (present keypoints 1.0, raw confidences kept; see utils/pose.py)."""
    from ...utils import pose as posefmt
    person = posefmt.encode_person([tuple(p) for p in points])
    return [{"people": [person], "canvas_width": int(width), "canvas_height": int(height)}]
