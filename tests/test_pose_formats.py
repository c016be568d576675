"""utils/pose.py: layouts, conversions, POSE_KEYPOINT helpers, file round trips, the safe npz loader, renderers."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from humangen.utils import pose as P

# diffusion.md §1.3 (computed from seaborn's hls formula there): colour index -> RGB
DOC_HUMANSD_TABLE = {
    0: (219, 94, 86), 1: (219, 144, 86), 2: (219, 194, 86), 3: (194, 219, 86), 4: (145, 219, 86),
    5: (95, 219, 86), 6: (86, 219, 127), 7: (86, 219, 177), 8: (86, 211, 219), 9: (86, 161, 219),
    10: (86, 111, 219), 11: (111, 86, 219), 12: (160, 86, 219), 13: (210, 86, 219), 14: (219, 86, 178),
    15: (219, 86, 128)}
DOC_HUMANSD_LIMBS = [(0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7), (6, 8), (7, 9), (8, 10), (5, 11),
                     (6, 12), (11, 13), (12, 14), (13, 15), (14, 16)]


def random_coco(seed=0, n=1, w=640, h=480, missing=(3,)):
    rng = np.random.default_rng(seed)
    k = np.concatenate([rng.uniform(1, w - 1, (n, 17, 1)), rng.uniform(1, h - 1, (n, 17, 1)),
                        rng.uniform(0.1, 1.0, (n, 17, 1))], axis=-1)
    k = k.astype(np.float32).astype(np.float64)  # every format stores these exactly
    k[:, list(missing)] = 0.0
    return k


# a spread-out standing person on a 512 x 1024 canvas (COCO-17, all confident)
STANDING = np.array([
    [256, 110, 0.9], [286, 80, 0.9], [226, 80, 0.9], [336, 110, 0.9], [176, 110, 0.9],
    [356, 260, 0.9], [156, 260, 0.9], [420, 420, 0.9], [92, 420, 0.9], [470, 580, 0.9], [42, 580, 0.9],
    [320, 560, 0.9], [192, 560, 0.9], [340, 760, 0.9], [172, 760, 0.9], [360, 960, 0.9], [152, 960, 0.9]], float)


def test_layout_tables():
    assert len(P.COCO17) == 17 and len(P.OPENPOSE18) == 18 and len(P.BODY25) == 25 and len(P.MEDIAPIPE33) == 33
    assert P.OPENPOSE18[1] == "neck" and P.BODY25[8] == "mid_hip" and P.MEDIAPIPE33[11] == "left_shoulder"
    assert [P.layout_for_count(n) for n in (17, 18, 25, 33)] == ["coco17", "openpose18", "body25", "mediapipe33"]
    with pytest.raises(ValueError, match="19 keypoints"):
        P.layout_for_count(19)


def test_conversion_neck_and_midhip_and_confidence():
    k = random_coco()[0]
    op = P.convert_keypoints(k, "coco17", "openpose18")
    np.testing.assert_allclose(op[1, :2], (k[5, :2] + k[6, :2]) / 2)
    assert op[1, 2] == min(k[5, 2], k[6, 2])
    np.testing.assert_array_equal(op[2], k[6])   # right shoulder
    np.testing.assert_array_equal(op[17], np.zeros(3))  # left ear missing stays missing (coco index 3)
    b = P.convert_keypoints(k, "coco17", "body25")
    np.testing.assert_allclose(b[8, :2], (k[11, :2] + k[12, :2]) / 2)
    assert (b[19:] == 0).all()  # no feet in COCO
    k2 = k.copy()
    k2[5] = 0  # one shoulder missing -> no neck
    assert (P.convert_keypoints(k2, "coco17", "openpose18")[1] == 0).all()


@pytest.mark.parametrize("via", [("openpose18",), ("body25",), ("mediapipe33",), ("openpose18", "body25",
                                                                                   "mediapipe33")])
def test_conversions_round_trip_exactly(via):
    k = random_coco(1, n=3)
    cur, layout = k, "coco17"
    for nxt in via:
        cur, layout = P.convert_keypoints(cur, layout, nxt), nxt
    np.testing.assert_array_equal(P.convert_keypoints(cur, layout, "coco17"), k)


def test_mediapipe_feet_map_to_body25():
    mp = np.zeros((33, 3))
    mp[31] = (10, 20, 0.7)  # left_foot_index
    mp[30] = (5, 6, 0.5)    # right_heel
    b = P.convert_keypoints(mp, "mediapipe33", "body25")
    np.testing.assert_array_equal(b[P.BODY25.index("left_big_toe")], (10, 20, 0.7))
    np.testing.assert_array_equal(b[P.BODY25.index("right_heel")], (5, 6, 0.5))
    with pytest.raises(ValueError, match=r"\[..., 17, 3\]"):
        P.convert_keypoints(np.zeros((18, 3)), "coco17", "body25")


def test_frame_structure_matches_controlnet_aux():
    k = random_coco(2, n=2)
    frame = P.make_frame(list(k), 640, 480, src_layout="coco17", scores=[0.5, 0.25])
    json.dumps(frame)  # plain JSON
    assert frame["canvas_width"] == 640 and frame["canvas_height"] == 480
    person = frame["people"][0]
    assert len(person["pose_keypoints_2d"]) == 54 and person["score"] == 0.5
    assert {"face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d"} <= set(person)
    np.testing.assert_array_equal(P.people_array(frame, "coco17"), k)
    assert P.as_pose(frame) == [frame]
    with pytest.raises(ValueError, match="canvas_width"):
        P.as_pose([{"people": []}])
    with pytest.raises(ValueError, match="x,y,c triples"):
        P.as_pose([{"people": [{"pose_keypoints_2d": [1, 2]}], "canvas_width": 4, "canvas_height": 4}])


def test_transform_and_scale_frame():
    k = random_coco(3)
    frame = P.make_frame(list(k), 640, 480, src_layout="coco17")
    out = P.transform_frame(frame, [[2, 0, 10], [0, 2, -5]], 1280, 960)
    got = P.people_array(out)[0]
    ok = k[0, :, 2] > 0
    np.testing.assert_allclose(got[ok, :2], k[0, ok, :2] * 2 + [10, -5])
    assert (got[~ok] == 0).all() and P.frame_size(out) == (1280, 960)
    half = P.scale_frame(frame, 320, 240)
    np.testing.assert_allclose(P.people_array(half)[0][ok, :2], k[0, ok, :2] / 2)


@pytest.mark.parametrize("fmt,ext", [("openpose_json", ".json"), ("coco_json", ".json"), ("humansd_npz", ".npz")])
def test_file_round_trips_are_lossless(tmp_path, fmt, ext):
    frames = [P.make_frame(list(random_coco(4, n=2)), 640, 480, src_layout="coco17", scores=[0.75, 0.5]),
              P.make_frame(list(random_coco(5, n=1, w=300, h=200)), 300, 200, src_layout="coco17", scores=[0.25])]
    path = P.save_pose(frames, str(tmp_path / f"pose{ext}"), fmt)
    back = P.load_pose(path)  # format sniffed
    assert len(back) == 2
    for a, b in zip(frames, back):
        assert P.frame_size(a) == P.frame_size(b)
        np.testing.assert_array_equal(P.people_array(a), P.people_array(b))
        assert [p["score"] for p in a["people"]] == [p["score"] for p in b["people"]]
    again = P.save_pose(back, str(tmp_path / f"again{ext}"), fmt)
    np.testing.assert_array_equal(P.people_array(P.load_pose(again)[1]), P.people_array(frames[1]))


def test_openpose_json_single_frame_from_openpose(tmp_path):
    k = random_coco(6)[0]
    body25 = P.convert_keypoints(k, "coco17", "body25")
    data = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": body25.reshape(-1).tolist()}]}
    (tmp_path / "op.json").write_text(json.dumps(data))
    frames = P.load_pose(str(tmp_path / "op.json"), canvas_size=(640, 480))
    assert P.frame_size(frames[0]) == (640, 480)
    np.testing.assert_array_equal(P.people_array(frames[0], "coco17")[0], k)


def test_humansd_npz_as_humansd_writes_it(tmp_path):
    """HumanSD's own format: arr_0 = object array of dicts, missing points (-1,-1,0), numpy scalars."""
    k = random_coco(7, n=2)[..., :].astype(np.float32)
    k[0, 3] = (-1, -1, 0)
    items = np.empty(2, dtype=object)
    for i in range(2):
        items[i] = {"keypoints": k[i], "score": np.float32(0.5 + i / 4), "area": np.float64(1234.5)}
    np.savez(tmp_path / "demo.npz", items)
    frames = P.load_pose(str(tmp_path / "demo.npz"), canvas_size=(640, 480))
    got = P.people_array(frames[0], "coco17")
    assert (got[0, 3] == 0).all()
    np.testing.assert_array_equal(got[1], k[1])
    assert frames[0]["people"][1]["score"] == 0.75 and frames[0]["people"][0]["area"] == 1234.5
    # and what we write is readable by HumanSD's own call
    path = P.save_pose(frames, str(tmp_path / "ours.npz"), "humansd_npz")
    arr = np.load(path, allow_pickle=True)["arr_0"]  # (our own file, written just now)
    assert arr[0]["keypoints"].dtype == np.float32 and arr[0]["keypoints"].shape == (17, 3)
    np.testing.assert_array_equal(arr[0]["keypoints"][3], (-1, -1, 0))


class _Evil:
    def __reduce__(self):
        return (eval, ("1",))  # builtins.eval: never rebound (Ray, once imported, rebinds print)


def test_npz_loader_never_runs_pickle_code(tmp_path):
    items = np.empty(1, dtype=object)
    items[0] = {"keypoints": np.zeros((17, 3), np.float32), "payload": _Evil()}
    np.savez(tmp_path / "evil.npz", items)
    with pytest.raises(ValueError, match="refused.*builtins.eval.*could run code"):
        P.load_pose(str(tmp_path / "evil.npz"))
    items[0] = "not a dict"
    np.savez(tmp_path / "str.npz", items)
    with pytest.raises(ValueError, match="dicts with 'keypoints'"):
        P.load_pose(str(tmp_path / "str.npz"), canvas_size=(10, 10))
    (tmp_path / "junk.npz").write_bytes(b"no zip")
    with pytest.raises(ValueError, match="not a readable HumanSD .npz pose file"):
        P.load_pose(str(tmp_path / "junk.npz"))


def test_coco_dataset_visibility_flags(tmp_path):
    k = random_coco(8)[0]
    flat = []
    for x, y, c in k:
        flat += [x, y, 2 if c > 0 else 0]
    data = {"images": [{"id": 7, "width": 640, "height": 480}],
            "annotations": [{"image_id": 7, "keypoints": flat, "category_id": 1}]}
    (tmp_path / "coco.json").write_text(json.dumps(data))
    got = P.people_array(P.load_pose(str(tmp_path / "coco.json"))[0])[0]
    np.testing.assert_array_equal(got[:, :2], k[:, :2])
    np.testing.assert_array_equal(got[:, 2], (k[:, 2] > 0).astype(float))


def test_hls_palette_matches_doc_table():
    assert P.HUMANSD_COLORS == tuple(DOC_HUMANSD_TABLE[i] for i in range(16))
    assert [(a, b) for _, a, b in P.HUMANSD_LIMBS] == DOC_HUMANSD_LIMBS
    assert [i for i, _, _ in P.HUMANSD_LIMBS] == list(range(16))


def test_humansd_renderer_colours_at_limb_midpoints():
    frame = P.make_frame([STANDING], 512, 1024, src_layout="coco17")
    img = P.render_skeleton([frame], "humansd")[0]
    assert img.shape == (1024, 512, 3) and img.dtype == np.uint8
    for idx, a, b in P.HUMANSD_LIMBS:
        mx = int((int(STANDING[a, 0]) + int(STANDING[b, 0])) / 2)
        my = int((int(STANDING[a, 1]) + int(STANDING[b, 1])) / 2)
        assert tuple(img[my, mx]) == DOC_HUMANSD_TABLE[idx], (idx, a, b)
    # no shoulder-shoulder and no hip-hip edge; background black
    assert tuple(img[260, 256]) == (0, 0, 0) and tuple(img[560, 256]) == (0, 0, 0)
    assert tuple(img[5, 5]) == (0, 0, 0)
    # line width 10 (limb 14: 13-15 is near-vertical at x~350, y 760..960): ~10 px across
    row = img[860, 300:400]
    assert 9 <= int((row.max(axis=1) > 0).sum()) <= 12
    # end dots of radius 5 at a wrist (limb 8: 7-9 ends at (470, 580))
    assert tuple(img[580, 474]) == DOC_HUMANSD_TABLE[8] and tuple(img[580, 477]) == (0, 0, 0)


def test_humansd_renderer_threshold_and_empty_people():
    k = STANDING.copy()
    k[9, 2] = 0.05  # left wrist at the threshold: not drawn (strictly greater is required)
    frame = P.make_frame([k, np.zeros((17, 3))], 512, 1024, src_layout="coco17")
    img = P.render_frame(frame, "humansd", threshold=0.05)
    assert tuple(img[500, 445]) == (0, 0, 0)  # midpoint of limb 8 (elbow-wrist) is empty
    assert tuple(img[340, 388]) == DOC_HUMANSD_TABLE[6]
    # rescaling to another canvas moves the skeleton with it
    small = P.render_frame(frame, "humansd", width=256, height=512)
    assert small.shape == (512, 256, 3) and tuple(small[170, 194]) == DOC_HUMANSD_TABLE[6]


def test_openpose_renderer():
    frame = P.make_frame([STANDING], 512, 1024, src_layout="coco17")
    img = P.render_frame(frame, "openpose")
    neck = (256, 260)  # shoulder midpoint; joint dot colour 1 at full strength
    assert tuple(img[neck[1], neck[0]]) == P.OPENPOSE_COLORS[1]
    # limb 6 (neck -> right hip, 1-based (2, 9)) at 60 % of its colour at the midpoint
    mx, my = (256 + 192) // 2, (260 + 560) // 2
    assert tuple(img[my, mx]) == tuple(int(c * 0.6) for c in P.OPENPOSE_COLORS[6])
    # ear-shoulder limbs are not drawn
    assert tuple(img[185, 346]) == (0, 0, 0)
    with pytest.raises(ValueError, match="style"):
        P.render_frame(frame, "pretty")


def test_face_box_from_keypoints():
    box = P.face_box_from_keypoints(STANDING)
    x0, y0, x1, y1, s = box
    assert x0 < 176 and x1 > 336 and y0 < 80 and y1 > 110 and s == pytest.approx(0.9)
    k = STANDING.copy()
    k[:5, 2] = 0
    assert P.face_box_from_keypoints(k) is None


def test_normalised_frames_are_read_as_pixels():
    k = random_coco(9)[0]
    frame = P.make_frame([k], 640, 480, src_layout="coco17")
    norm = P.make_frame([k / [640, 480, 1]], 640, 480, src_layout="coco17")
    np.testing.assert_allclose(P.people_array(norm)[0], k, atol=1e-9)
    np.testing.assert_array_equal(P.render_frame(norm), P.render_frame(frame))
    moved = P.transform_frame(norm, [[1, 0, 5], [0, 1, 0]], 640, 480)
    np.testing.assert_allclose(P.people_array(moved)[0][k[:, 2] > 0, 0], k[k[:, 2] > 0, 0] + 5, atol=1e-9)
    assert P.pixel_frame(frame) is frame


@pytest.mark.parametrize("text,message", [
    (b"[" * 100 + b"]" * 100, "pose: deep.json: JSON nested too deeply (more than 64 levels)"),
    (b"[" * 100_000 + b"]" * 100_000, "pose: deep.json: JSON nested too deeply (more than 64 levels)"),
    (b'{"people": [\xff]}', "pose: deep.json: not valid JSON (not UTF-8 text: byte 12)"),
    (b'{"people": [', "pose: deep.json: not valid JSON"),
])
def test_pose_json_has_the_workflow_reader_limits(tmp_path, text, message):
    """Pose files and workflows go through one bounded JSON reader (`utils.limits.parse_json`)."""
    from humangen.runner.workflow import WorkflowError, parse_json
    path = tmp_path / "deep.json"
    path.write_bytes(text)
    with pytest.raises(ValueError) as pose_error:
        P.load_openpose_json(str(path))
    assert str(pose_error.value).startswith(message)
    with pytest.raises(WorkflowError) as workflow_error:
        parse_json(text, "pose: deep.json")
    assert str(workflow_error.value) == str(pose_error.value)
