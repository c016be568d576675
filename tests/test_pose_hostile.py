"""utils/pose.py and utils/pose_edit.py on hostile or malformed input (cases found by fuzzing): every one is a clear
ValueError or a bounded, correct result, never a raw exception, a hang or a crash inside OpenCV."""
from __future__ import annotations

import json

import numpy as np
import pytest

from humangen.utils import pose as P
from humangen.utils import pose_edit as E

BODY = "pose_keypoints_2d"


# ---- HumanSD .npz: a pickle that shares one object many times ----------------------------------------------------
def _shared_npz(path, depth):
    """An .npz of under 1 KB whose pickle references one list twice per level: 2**depth people once expanded."""
    x = [{"keypoints": np.ones((17, 3), np.float32)}]
    for _ in range(depth):
        x = [x, x]
    items = np.empty(1, dtype=object)
    items[0] = x
    np.savez(path, arr_0=items)
    return str(path)


@pytest.mark.timeout(60)
def test_npz_with_shared_objects_is_refused_without_expanding_them(tmp_path):
    with pytest.raises(ValueError, match=r"pose: b18\.npz: .*more than \d+ objects"):
        P.load_pose(_shared_npz(tmp_path / "b18.npz", 18))
    # 2**60 people if expanded: fails as fast as the one above
    with pytest.raises(ValueError, match=r"more than \d+ objects"):
        P.load_pose(_shared_npz(tmp_path / "b60.npz", 60))


def test_npz_objects_are_bounded_over_the_whole_file(tmp_path, monkeypatch):
    """Many members each under the per-frame bound still meet the bound for the file."""
    monkeypatch.setattr(P, "MAX_NPZ_OBJECTS", 1000)
    items = np.empty(100, dtype=object)
    for i in range(100):
        items[i] = {"keypoints": np.zeros((17, 3), np.float32), "score": 0.5, "area": 1.0}
    np.savez(tmp_path / "long.npz", **{f"arr_{f}": items for f in range(5)})
    with pytest.raises(ValueError, match=r"pose: long\.npz: the arrays unpickle to more than 1000 objects in all"):
        P.load_pose(str(tmp_path / "long.npz"), canvas_size=(64, 64))
    monkeypatch.setattr(P, "MAX_NPZ_OBJECTS", 5 * 401)
    assert len(P.load_pose(str(tmp_path / "long.npz"), canvas_size=(64, 64))) == 5


def test_npz_object_limit_leaves_room_for_genuine_files(tmp_path):
    """A HumanSD file at the people limit, keypoints as nested lists (the most objects a person takes), loads."""
    rng = np.random.default_rng(0)
    items = np.empty(P.MAX_PEOPLE, dtype=object)
    for i in range(P.MAX_PEOPLE):
        k = np.concatenate([rng.uniform(1, 100, (17, 2)), np.full((17, 1), 0.5)], axis=1)
        items[i] = {"keypoints": k.tolist(), "score": 0.5, "area": 10.0}
    np.savez(tmp_path / "crowd.npz", arr_0=items)
    frames = P.load_pose(str(tmp_path / "crowd.npz"), canvas_size=(128, 128))
    assert len(frames[0]["people"]) == P.MAX_PEOPLE


@pytest.mark.parametrize("arr_0, problem", [
    (np.zeros(50, np.float32), r"arr_0 is a numeric array of shape \(50,\); expected \[people, 17, 3\]"),
    ([{"keypoints": [["a"] * 3] * 17}], r"arr_0 person 0: keypoints must be 17 rows of x, y, score numbers"),
    ([{"keypoints": np.zeros((16, 3))}], r"arr_0 person 0: keypoints must be 17 rows of x, y, score numbers "
                                         r"\(got shape \(16, 3\)\)"),
    ([{"keypoints": np.zeros((17, 3)), "score": "abc"}], r"arr_0 person 0: score must be a number"),
    ([{"keypoints": np.zeros((17, 3)), "area": [1]}], r"arr_0 person 0: area must be a number"),
])
def test_npz_content_errors_name_file_person_and_problem(tmp_path, arr_0, problem):
    if isinstance(arr_0, list):
        items = np.empty(len(arr_0), dtype=object)
        items[:] = arr_0
        arr_0 = items
    np.savez(tmp_path / "x.npz", arr_0=arr_0)
    with pytest.raises(ValueError, match=r"^pose: x\.npz: " + problem):
        P.load_pose(str(tmp_path / "x.npz"), canvas_size=(64, 64))


# ---- COCO JSON ---------------------------------------------------------------------------------------------------
def _coco_ann(image_id, x, **extra):
    return {"image_id": image_id, "keypoints": [x, 5.0, 2] * 17, **extra}


def test_coco_too_many_images_is_refused_before_reading_annotations(tmp_path):
    images = [{"id": i, "width": 8, "height": 8} for i in range(P.MAX_FRAMES + 1)]
    (tmp_path / "many.json").write_text(json.dumps({"images": images, "annotations": []}))
    with pytest.raises(ValueError, match=r"many\.json: 10001 images, more than the limit of 10000"):
        P.load_pose(str(tmp_path / "many.json"))


def test_coco_too_many_annotations_is_refused(monkeypatch):
    ann = _coco_ann(1, 3.0)
    data = {"images": [{"id": 1, "width": 8, "height": 8}], "annotations": [ann] * (P.MAX_COCO_ANNOTATIONS + 1)}
    monkeypatch.setattr(P, "_read_json", lambda path: data)
    with pytest.raises(ValueError, match=rf"{P.MAX_COCO_ANNOTATIONS + 1} annotations, more than the limit of "
                                         rf"{P.MAX_COCO_ANNOTATIONS}"):
        P.load_coco_json("big.json")


class _CountingAnnotation(dict):
    reads = 0

    def get(self, *args):
        type(self).reads += 1
        return super().get(*args)

    def __getitem__(self, key):
        type(self).reads += 1
        return super().__getitem__(key)

    def __contains__(self, key):
        type(self).reads += 1
        return super().__contains__(key)


def test_coco_annotations_are_grouped_in_one_pass(monkeypatch):
    """Each annotation is looked at a bounded number of times, not once per image (20000 x 20000 took minutes)."""
    n = 300
    images = [{"id": i, "width": 16, "height": 16} for i in range(n)]
    anns = [_CountingAnnotation(_coco_ann(i, 3.0)) for i in range(n)]
    monkeypatch.setattr(P, "_read_json", lambda path: {"images": images, "annotations": anns})
    _CountingAnnotation.reads = 0
    assert len(P.load_coco_json("x.json")) == n
    assert _CountingAnnotation.reads <= 20 * n


def test_coco_frame_and_people_order_is_kept(tmp_path):
    images = [{"id": 3, "width": 64, "height": 32}, {"id": 1, "width": 64, "height": 32}]
    anns = [_coco_ann(1, 10.0), _coco_ann(3, 20.0, score=0.5), _coco_ann(9, 30.0), _coco_ann(1, 40.0),
            {"image_id": 3, "category_id": 2}]  # no keypoints: another category, skipped
    (tmp_path / "c.json").write_text(json.dumps({"images": images, "annotations": anns}))
    frames = P.load_pose(str(tmp_path / "c.json"))
    xs = [[P.person_keypoints(p)[0, 0] for p in f["people"]] for f in frames]
    assert xs == [[20.0], [10.0, 40.0], [30.0]]  # images order, then ids only annotations name
    assert frames[0]["people"][0]["score"] == 0.5 and P.frame_size(frames[2]) == (31, 6)


@pytest.mark.parametrize("ann, problem", [
    ({"image_id": 1, "keypoints": [1.0] * 50}, "annotation 1: keypoints must be 17 x, y, v triples (51 numbers), "
                                               "got 50 numbers"),
    ({"image_id": 1, "keypoints": ["a"] * 51}, "annotation 1: keypoints must be 17 x, y, v triples"),
    (_coco_ann(1, 3.0, keypoint_scores=[0.5, 0.5]), "annotation 1: keypoint_scores must be 17 numbers"),
    (_coco_ann(1, 3.0, keypoint_scores="abc"), "annotation 1: keypoint_scores must be 17 numbers"),
    (_coco_ann(1, 3.0, score="abc"), "annotation 1: score must be a number"),
    (_coco_ann([1], 3.0), "annotation 1: image_id must be a number or text"),
    ("x", "annotation 1 is not an object"),
])
def test_coco_annotation_errors_name_file_annotation_and_problem(tmp_path, ann, problem):
    data = {"images": [{"id": 1, "width": 64, "height": 32}], "annotations": [_coco_ann(1, 3.0), ann]}
    (tmp_path / "x.json").write_text(json.dumps(data))
    with pytest.raises(ValueError) as info:
        P.load_pose(str(tmp_path / "x.json"))
    assert str(info.value).startswith(f"pose: x.json: {problem}")


@pytest.mark.parametrize("images, problem", [
    ([{"id": [1]}], "image 0: id must be a number or text"),
    (["x"], "image 0 is not an object"),
    ({"id": 1}, "'images' must be a list"),
    ([{"id": 1, "width": "wide", "height": 8}], "image 0: width and height must be positive whole numbers"),
])
def test_coco_image_errors(tmp_path, images, problem):
    (tmp_path / "x.json").write_text(json.dumps({"images": images, "annotations": [_coco_ann(1, 3.0)]}))
    with pytest.raises(ValueError) as info:
        P.load_pose(str(tmp_path / "x.json"))
    assert str(info.value).startswith(f"pose: x.json: {problem}")


# ---- OpenPose JSON without a canvas ------------------------------------------------------------------------------
def test_openpose_json_without_canvas_infers_it(tmp_path):
    data = {"version": 1.3, "people": [{"pose_keypoints_2d": [20.0, 30.0, 0.9] * 25}]}
    (tmp_path / "op.json").write_text(json.dumps(data))
    for frames in (P.load_pose(str(tmp_path / "op.json")), P.load_openpose_json(str(tmp_path / "op.json"))):
        assert P.frame_size(frames[0]) == (21, 31)
        np.testing.assert_array_equal(P.person_keypoints(frames[0]["people"][0], "body25")[0], [20.0, 30.0, 0.9])


def test_openpose_json_without_canvas_checks_people_first(tmp_path):
    (tmp_path / "op.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": ["a", 1, 1]}]}))
    with pytest.raises(ValueError, match="person 0: pose_keypoints_2d must be a flat list of numbers"):
        P.load_openpose_json(str(tmp_path / "op.json"))


# ---- numbers JSON can hold but float64 cannot --------------------------------------------------------------------
def test_huge_json_integers_are_the_usual_errors():
    with pytest.raises(ValueError, match="frame 0 has no valid 'canvas_width'"):
        P.as_pose({"people": [], "canvas_width": 10 ** 400, "canvas_height": 8})
    with pytest.raises(ValueError, match="frame 0 person 0: pose_keypoints_2d holds NaN or infinite values"):
        P.as_pose({"people": [{BODY: [10 ** 400, 1, 1] * 18}], "canvas_width": 8, "canvas_height": 8})


# ---- person fields -----------------------------------------------------------------------------------------------
def _person(**extra):
    return {BODY: [10.0, 20.0, 1.0] * 18, **extra}


@pytest.mark.parametrize("score", [[1], "abc", float("inf"), 10 ** 400, True])
def test_malformed_person_score_is_refused_and_ignored(score):
    with pytest.raises(ValueError, match="frame 0 person 0: score must be a number"):
        P.as_pose({"people": [_person(score=score)], "canvas_width": 64, "canvas_height": 64})
    assert P.person_score(_person(score=score)) is None
    assert P.person_score(_person(score=0.25)) == 0.25 and P.person_score(_person()) is None


@pytest.mark.parametrize("raw", [[[1, 1]] * 18, [float("inf")] * 18, ["0.5"] * 18, [10 ** 400] * 18, "x" * 18,
                                 [0.5] * 17])
def test_malformed_raw_scores_are_ignored(raw):
    person = _person(humangen_scores={BODY: raw})
    np.testing.assert_array_equal(P.scored_keypoints(person)[:, 2], np.ones(18))
    assert P.as_pose({"people": [person], "canvas_width": 64, "canvas_height": 64})  # ignored, not refused
    good = _person(humangen_scores={BODY: [0.5] * 18})
    np.testing.assert_array_equal(P.scored_keypoints(good)[:, 2], np.full(18, 0.5))


# ---- rendering keypoints far outside the canvas ------------------------------------------------------------------
def _coco_frame(points, w, h):
    """A frame with the given COCO-17 points {index: (x, y)} present, the rest absent."""
    k = np.zeros((17, 3))
    for i, (x, y) in points.items():
        k[i] = (x, y, 1.0)
    return P.make_frame([k], w, h, src_layout="coco17")


@pytest.mark.parametrize("far", [3e9, 1e12, 1e300])
def test_far_limb_is_drawn_exactly_as_its_part_inside_the_drawable_box(far):
    """Left elbow -> left wrist (HumanSD colour 8) running right off the canvas: the same pixels as a wrist at the
    edge of the box cv2 can draw in."""
    edge = 2.0 ** 20
    got = P.render_frame(_coco_frame({7: (100.0, 20.0), 9: (far, 20.0)}, 400, 40), "humansd")
    want = P.render_frame(_coco_frame({7: (100.0, 20.0), 9: (edge, 20.0)}, 400, 40), "humansd")
    np.testing.assert_array_equal(got, want)
    assert tuple(got[20, 399]) == P.HUMANSD_COLORS[8] and not got[20, :94].any()


@pytest.mark.parametrize("style", P.RENDER_STYLES)
def test_far_diagonal_limb_keeps_its_direction(style):
    far = 3e9  # wrist along direction (2, 1) from the elbow
    got = P.render_frame(_coco_frame({7: (100.0, 100.0), 9: (100.0 + 2 * far, 100.0 + far)}, 400, 300), style)
    ys, xs = np.nonzero(got.any(axis=2))
    assert len(xs)
    if style == "humansd":  # a thick line along the ray, up to the canvas edge
        distance = np.abs((xs - 100.0) - 2 * (ys - 100.0)) / np.sqrt(5.0)
        assert distance.max() <= 6.0 and xs.max() == 399 and xs.min() >= 94
    else:  # the elbow's dot (the limb's ellipse is drawn as OpenPose draws it)
        assert tuple(got[100, 100]) == P.OPENPOSE_COLORS[6]


@pytest.mark.parametrize("style", P.RENDER_STYLES)
@pytest.mark.parametrize("far", [3e9, -3e9, 1e12, 1e300])
def test_pose_entirely_far_away_renders_black(style, far):
    points = {i: (far + 37.0 * i, -far + 11.0 * i) for i in range(17)}
    image = P.render_skeleton([_coco_frame(points, 64, 48)], style)
    assert image.shape == (1, 48, 64, 3) and not image.any()


@pytest.mark.parametrize("style", P.RENDER_STYLES)
def test_keypoints_huge_only_after_rescaling(style):
    """A 4 x 16 canvas rendered 4096 wide: x 1e7 becomes 1e10, and 1e306 overflows to infinity (skipped)."""
    frame = _coco_frame({5: (2.0, 8.0), 7: (1e7, 8.0), 6: (1e306, 8.0), 8: (3.0, 9.0)}, 4, 16)
    image = P.render_skeleton([frame], style, width=4096, height=16)
    assert image.shape == (1, 16, 4096, 3)
    if style == "humansd":  # left shoulder (2048, 8) -> left elbow far right: colour 6 to the edge
        assert tuple(image[0, 8, 4095]) == P.HUMANSD_COLORS[6]


def test_normal_rendering_is_unchanged_near_the_bound():
    """Points within the drawable box (even far off the canvas) go to OpenCV exactly as before."""
    import cv2
    inside = 2.0 ** 20 - 1
    got = P.render_frame(_coco_frame({7: (10.0, 20.0), 9: (inside, 20.0)}, 64, 40), "humansd")
    want = np.zeros((40, 64, 3), np.uint8)
    cv2.line(want, (10, 20), (int(inside), 20), P.HUMANSD_COLORS[8], P.HUMANSD_LINE_WIDTH)
    cv2.circle(want, (10, 20), P.HUMANSD_LINE_WIDTH // 2, P.HUMANSD_COLORS[8], -1)
    cv2.circle(want, (int(inside), 20), P.HUMANSD_LINE_WIDTH // 2, P.HUMANSD_COLORS[8], -1)
    np.testing.assert_array_equal(got, want)


# ---- pose editor: stored edits -----------------------------------------------------------------------------------
def _edit(people, **extra):
    return {"format": "humangen_pose_edit", "version": 1, "canvas_width": 640, "canvas_height": 480,
            "input": None, "people": people, **extra}


@pytest.mark.parametrize("text, problem", [
    (json.dumps(_edit([{"source": 0, "keypoints": [1]}])), "people[0].keypoints must be an object"),
    (json.dumps(_edit([{"source": 0, "keypoints": "ab"}])), "people[0].keypoints must be an object"),
    (json.dumps(_edit([{"source": 0, "parts": [1]}])), "people[0].parts must be an object"),
    (json.dumps(_edit([{"source": 0, "keypoints": {BODY: {"\u00b2": [1, 2]}}}])),
     "people[0].keypoints.pose_keypoints_2d: bad keypoint index '\u00b2'"),
    (json.dumps(_edit([{"source": 0, "keypoints": {BODY: {"9" * 5000: [1, 2]}}}])),
     "people[0].keypoints.pose_keypoints_2d: bad keypoint index"),
    (json.dumps(_edit([{"source": 0, "keypoints": {BODY: {"4": [1, 2]}}}])).replace("[1,", "[1" + "0" * 400 + ","),
     "people[0].keypoints.pose_keypoints_2d.4 must be [x, y] or null"),
    (json.dumps(_edit([{"source": 0, "keypoints": {BODY: {"4": [1e308, 2]}}}])),
     "people[0].keypoints.pose_keypoints_2d.4 must be [x, y] or null"),
    (json.dumps(_edit([{"source": None, "person": {BODY: [1e308, 1, 1]}}])),
     "people[0].person.pose_keypoints_2d must be a list of x, y, confidence numbers"),
    (json.dumps(_edit([{"source": 0, "parts": {BODY: [1, 1e300, 1]}}])),
     "people[0].parts.pose_keypoints_2d must be a list of x, y, confidence numbers"),
    (json.dumps(_edit([], input=[{"people": [], "canvas_width": 640, "canvas_height": 480}])),
     "the edit's stored input must be one pose frame"),
])
def test_malformed_stored_edit_is_a_clear_value_error(text, problem):
    with pytest.raises(ValueError) as info:
        E.parse_edit(text)
    assert type(info.value) is ValueError and str(info.value).startswith(problem)


def test_coordinate_bound_is_generous_and_named():
    bound = E.MAX_COORDINATE
    assert bound >= 10 * E.MAX_CANVAS
    ok = E.parse_edit(json.dumps(_edit([{"source": 0, "keypoints": {BODY: {"4": [-bound, bound]}}}])))
    out, _ = E.apply_edit(ok, {"people": [{BODY: [1.0, 2.0, 1.0] * 18}], "canvas_width": 640, "canvas_height": 480})
    assert out["people"][0][BODY][12:15] == [-bound, bound, 1.0]
    with pytest.raises(ValueError, match=rf"within \u00b1{bound}"):
        E.parse_edit(json.dumps(_edit([{"source": 0, "keypoints": {BODY: {"4": [bound + 1, 0]}}}])))


def _person18():
    points = np.zeros((18, 3))
    points[:, 0], points[:, 1], points[:, 2] = np.linspace(40, 200, 18), np.linspace(30, 300, 18), 1.0
    return {BODY: points.reshape(-1).tolist()}


@pytest.mark.parametrize("node,side,count", [("HumanGenRenderPose", 8192, 5), ("HumanGenPoseEditor", 4096, 17)])
def test_rendering_many_large_frames_is_refused_before_drawing(node, side, count, standalone_host):
    """Frames x size over the pack's output limit (five frames at 8192² took 10 GB while drawing) are refused
    naming the node and 'pose' before any frame is drawn; one frame fewer is drawn."""
    from humangen import NODE_CLASS_MAPPINGS as N
    from humangen.utils.errors import NodeInputError
    frames = [{"people": [_person18()], "canvas_width": 256, "canvas_height": 320}] * count
    call = {"HumanGenRenderPose": lambda p: N[node]().render(p, "openpose", side, side, 0.0)[0],
            "HumanGenPoseEditor": lambda p: N[node]().edit(side, side, "openpose", "", pose=p)["result"][1]}[node]
    pixels = count * side * side
    with pytest.raises(NodeInputError, match=rf"{node}: input 'pose': {count} skeleton images of {side}x{side} make "
                                             rf"{pixels:,} pixels, more than the limit of 268,435,456"):
        call(frames)
    assert tuple(call(frames[:2]).shape) == (2, side, side, 3)


@pytest.mark.parametrize("person", [
    {BODY: [10, 10, 1] * 5}, {BODY: [10, 10, 1] * 200}, {BODY: [10, 10, 1] * 18, "score": "x"}])
def test_pose_editor_refuses_an_edit_that_adds_an_invalid_person(person, standalone_host):
    """An added person with a keypoint count of no known layout, or a malformed score, is an error on pose_edit
    (it was 'could not process its inputs' from deep inside the renderer)."""
    from humangen import NODE_CLASS_MAPPINGS as N
    from humangen.utils.errors import NodeInputError
    edit = json.dumps({"format": "humangen_pose_edit", "version": 1, "canvas_width": 256, "canvas_height": 320,
                       "people": [{"source": None, "person": person}]})
    with pytest.raises(NodeInputError, match=r"HumanGenPoseEditor: input 'pose_edit': the edit makes an invalid "
                                             r"pose: .* Fix: press 'Reset to input'"):
        N["HumanGenPoseEditor"]().edit(0, 0, "openpose", edit)
