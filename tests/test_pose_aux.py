"""POSE_KEYPOINT interop with comfyui_controlnet_aux, both ways, on a real mediapipe detection of the bundled photo,
with aux's decode/encode rules as re-stated in tests/aux_rules.py (not imported from aux)."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from aux_rules import aux_decode, aux_encode, aux_is_normalized
from hgtoys import ASSETS
from humangen import NODE_CLASS_MAPPINGS as N
from humangen.models.body import keypoints as KP
from humangen.utils import pose as P


# ---- a real detection ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photo():
    return np.asarray(Image.open(ASSETS / "astronaut.png").convert("RGB"))


@pytest.fixture(scope="module")
def detected(photo):
    """HumanGen Pose Detect (mediapipe) on the bundled photo: (POSE_KEYPOINT, the raw detection as OpenPose-18)."""
    from humangen.models import pose as M
    image = torch.from_numpy(photo.astype(np.float32) / 255.0)[None]
    pose, _ = N["HumanGenPoseDetect"]().detect(image, "mediapipe", 0.1, 1, "openpose18")
    raw = P.convert_keypoints(M.detect_mediapipe(photo, 0.1).keypoints[0], "mediapipe33", "openpose18")
    return pose, raw


def test_detection_has_low_and_high_scores(detected):
    # the premise of the interop: raw scores below 1.0 that aux's decoder would drop
    _, raw = detected
    present = raw[:, 2] > 0
    assert 10 <= present.sum() < 18
    assert raw[present, 2].min() < 0.9 and raw[present, 2].max() < 1.0


def test_humangen_pose_keeps_every_detected_keypoint_in_aux(detected):
    pose, raw = detected
    frame = pose[0]
    (person,), height, width = aux_decode(frame)
    assert (width, height) == (512, 512)
    body = person["pose_keypoints_2d"]
    assert len(body) == 18
    for (x, y, c), kept in zip(raw, body):
        if c > 0:
            assert kept == (x, y)  # pixels, exactly
        else:
            assert kept is None
    assert not aux_is_normalized(body)  # aux's consumers read our coordinates as pixels
    # confidences are exactly what aux writes; the raw scores travel beside them
    stored = np.asarray(frame["people"][0]["pose_keypoints_2d"]).reshape(-1, 3)
    assert set(stored[:, 2].tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(stored[raw[:, 2] <= 0], 0.0)
    assert frame["people"][0]["humangen_scores"]["pose_keypoints_2d"] == raw[:, 2].tolist()
    assert 0 < frame["people"][0]["score"] < 1
    # aux re-encoding what it decoded gives back our keypoint list
    assert aux_encode([person], height, width)["people"][0]["pose_keypoints_2d"] == \
        frame["people"][0]["pose_keypoints_2d"]


def _aux_versions(frame):
    """What aux would hand us for the same pose: pixels, and coordinates normalised to the canvas."""
    people, height, width = aux_decode(frame)
    pixels = aux_encode(people, height, width)
    normalised = aux_encode([{k: None if pts is None else [None if p is None else (p[0] / width, p[1] / height)
                                                           for p in pts] for k, pts in person.items()}
                             for person in people], height, width)
    assert "humangen_scores" not in json.dumps(pixels) and aux_is_normalized(
        aux_decode(normalised)[0][0]["pose_keypoints_2d"])
    return {"aux_pixels": [pixels], "aux_normalised": [normalised]}


@pytest.mark.parametrize("style", P.RENDER_STYLES)
def test_aux_poses_render_like_ours(detected, style):
    pose, _ = detected
    ours = P.render_skeleton(pose, style)
    assert (ours > 0).any(axis=-1).sum() > 2000  # a skeleton, not a blank canvas
    for name, aux in _aux_versions(pose[0]).items():
        np.testing.assert_array_equal(P.render_skeleton(aux, style), ours, err_msg=name)
    # and through the node, at another size
    node = N["HumanGenRenderPose"]()
    want = node.render(pose, style, 256, 512, 0.05)[0]
    for name, aux in _aux_versions(pose[0]).items():
        torch.testing.assert_close(node.render(aux, style, 256, 512, 0.05)[0], want, rtol=0, atol=0, msg=name)


def test_aux_poses_align_like_ours(detected, photo):
    pose, _ = detected
    image = torch.from_numpy(photo.astype(np.float32) / 255.0)[None]
    node = N["HumanGenAlignFullBody"]()
    args = ("512x256", -1, True, 0.1, "mediapipe_selfie")
    img, mask, out = node.align(image, *args, pose=pose)
    assert set(np.asarray(out[0]["people"][0]["pose_keypoints_2d"])[2::3].tolist()) == {0.0, 1.0}
    assert "humangen_scores" in out[0]["people"][0]
    for name, aux in _aux_versions(pose[0]).items():
        img2, mask2, out2 = node.align(image, *args, pose=aux)
        torch.testing.assert_close(img2, img, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(mask2, mask, rtol=0, atol=0, msg=name)
        np.testing.assert_allclose(out2[0]["people"][0]["pose_keypoints_2d"],
                                   out[0]["people"][0]["pose_keypoints_2d"], atol=1e-9, err_msg=name)


def test_aux_poses_give_the_same_face_box_and_smplx_points(detected, photo):
    pose, raw = detected
    image = torch.from_numpy(photo.astype(np.float32) / 255.0)[None]
    node = N["HumanGenFaceBox"]()
    box, mask = node.find(image, "keypoints", 0.5, 1.0, False, 1, pose=pose)
    assert len(box["boxes"][0]) == 1 and box["boxes"][0][0][4] < 1.0  # the raw head scores
    read = KP.read_pose_keypoint(pose)
    np.testing.assert_array_equal(np.asarray(read["points"]), raw)
    for name, aux in _aux_versions(pose[0]).items():
        box2, mask2 = node.find(image, "keypoints", 0.5, 1.0, False, 1, pose=aux)
        np.testing.assert_allclose(box2["boxes"][0][0][:4], box["boxes"][0][0][:4], atol=1e-9, err_msg=name)
        assert box2["boxes"][0][0][4] == 1.0
        torch.testing.assert_close(mask2, mask, rtol=0, atol=0, msg=name)
        points = np.asarray(KP.read_pose_keypoint(aux)["points"])
        np.testing.assert_allclose(points[:, :2], raw[:, :2], atol=1e-9, err_msg=name)
        np.testing.assert_array_equal(points[:, 2], (raw[:, 2] > 0).astype(float))


def test_thresholds_use_the_raw_scores(detected):
    pose, raw = detected
    present = np.flatnonzero(raw[:, 2] > 0)
    low = float(np.sort(raw[present, 2])[0])
    high = float(np.sort(raw[present, 2])[-1])
    threshold = (low + high) / 2
    weak = present[raw[present, 2] < threshold]
    # aux keeps every point, we drop the weak ones at this threshold: fewer limb pixels than without it
    drawn = (P.render_skeleton(pose, "openpose", threshold=threshold) > 0).any(-1).sum()
    full = (P.render_skeleton(pose, "openpose", threshold=0.0) > 0).any(-1).sum()
    assert len(weak) and drawn < full
    np.testing.assert_array_equal(P.people_array(pose[0], "openpose18")[0], raw)
    # an edited pose (another tool added a point that has no raw score) keeps that point
    edited = copy.deepcopy(pose[0])
    missing = int(np.flatnonzero(raw[:, 2] <= 0)[0])
    edited["people"][0]["pose_keypoints_2d"][3 * missing: 3 * missing + 3] = [100.0, 200.0, 1.0]
    got = P.people_array(edited, "openpose18")[0]
    assert tuple(got[missing]) == (100.0, 200.0, 1.0)


def test_foreign_raw_confidences_are_brought_to_the_aux_convention(tmp_path):
    # OpenPose's own JSON (and some packs) write raw confidences in the third column
    native = {"version": 1.3, "people": [{"pose_keypoints_2d": [10, 20, 0.4, 30, 40, 0.0, 50, 60, 0.9] + [0] * 45,
                                          "face_keypoints_2d": [1, 2, 0.5, 3, 4, 0.0]}],
              "canvas_width": 64, "canvas_height": 80}
    path = tmp_path / "native.json"
    path.write_text(json.dumps(native))
    (frame,) = P.load_pose(str(path))
    person = frame["people"][0]
    assert person["pose_keypoints_2d"][:9] == [10, 20, 1.0, 0, 0, 0, 50, 60, 1.0]
    assert person["face_keypoints_2d"] == [1, 2, 1.0, 0, 0, 0]
    assert person["humangen_scores"]["pose_keypoints_2d"][:3] == [0.4, 0.0, 0.9]
    assert person["humangen_scores"]["face_keypoints_2d"] == [0.5, 0.0]
    (body,) = aux_decode(frame)[0]
    assert body["pose_keypoints_2d"][:3] == [(10, 20), None, (50, 60)]
    assert body["face_keypoints_2d"] == [(1, 2), None]
    # transforms keep the convention and the raw scores
    moved = P.transform_frame(frame, [[2, 0, 1], [0, 2, 1]], 128, 160)
    assert moved["people"][0]["pose_keypoints_2d"][:3] == [21, 41, 1.0]
    assert moved["people"][0]["humangen_scores"] == person["humangen_scores"]


@pytest.mark.parametrize("fmt,ext", [("openpose_json", ".json"), ("coco_json", ".json"), ("humansd_npz", ".npz")])
def test_pose_files_keep_the_raw_scores(detected, tmp_path, fmt, ext):
    pose, raw = detected
    path = P.save_pose(pose, str(tmp_path / f"pose{ext}"), fmt)
    back = P.load_pose(path, fmt=fmt)
    person = back[0]["people"][0]
    assert set(person["pose_keypoints_2d"][2::3]) == {0.0, 1.0}
    np.testing.assert_array_equal(P.people_array(back[0], "openpose18")[0], raw)
    assert person["humangen_scores"] == pose[0]["people"][0]["humangen_scores"]
    assert person["score"] == pose[0]["people"][0]["score"]
    if fmt == "openpose_json":
        assert back == pose
