"""comfyui_controlnet_aux's POSE_KEYPOINT rules, re-stated in a few lines for the interop tests (aux is not a
dependency and is not imported):
- decoder (`decode_json_as_poses`): a keypoint is kept only when its confidence is >= 1.0, else it is None;
- encoder (`encode_poses_as_dict`): a present keypoint is written (x, y, 1.0), a missing one (0, 0, 0);
- its consumers take coordinates as normalised when every present keypoint has |x| <= 1 and |y| <= 1
  (`is_normalized`), else as pixels.
"""
from __future__ import annotations

KEYS = ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d")


def aux_decode_keypoints(numbers):
    if not numbers:
        return None
    assert len(numbers) % 3 == 0
    return [(x, y) if c >= 1.0 else None for x, y, c in zip(numbers[0::3], numbers[1::3], numbers[2::3])]


def aux_decode(frame):
    people = [{key: aux_decode_keypoints(p.get(key)) for key in KEYS} for p in frame.get("people", [])]
    return people, frame["canvas_height"], frame["canvas_width"]


def aux_encode_keypoints(points):
    if not points:
        return None
    return [v for p in points for v in ((float(p[0]), float(p[1]), 1.0) if p is not None else (0.0, 0.0, 0.0))]


def aux_encode(people, height, width):
    return {"people": [{key: aux_encode_keypoints(p[key]) for key in KEYS} for p in people],
            "canvas_height": height, "canvas_width": width}


def aux_is_normalized(points):
    flags = [0 <= abs(p[0]) <= 1 and 0 <= abs(p[1]) <= 1 for p in points if p is not None]
    return bool(flags) and all(flags)
