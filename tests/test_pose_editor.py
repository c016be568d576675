"""HumanGenPoseEditor's execute path (stored edit -> POSE_KEYPOINT + skeleton), utils/pose_edit.py, and the same
apply cases as the JavaScript editor (tests/js/fixtures/pose_edit_cases.json)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hgtest import ROOT
from humangen.nodes.pose_editor import HumanGenPoseEditor, background_preview
from humangen.utils import pose as P
from humangen.utils import pose_edit as E
from humangen.utils.errors import NodeInputError

BODY = "pose_keypoints_2d"
CASES = json.loads((ROOT / "tests" / "js" / "fixtures" / "pose_edit_cases.json").read_text())


def person(dx=0.0, missing=(17,), conf=1.0):
    flat = []
    for i in range(18):
        flat += [0, 0, 0] if i in missing else [100 + 10 * i + dx, 50 + 20 * i, conf]
    return {BODY: flat, "face_keypoints_2d": None, "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": None}


def frame(n=1, w=640, h=480):
    return {"people": [person(200 * p) for p in range(n)], "canvas_width": w, "canvas_height": h}


def edit(people, inp=None, w=640, h=480):
    return json.dumps({"format": "humangen_pose_edit", "version": 1, "canvas_width": w, "canvas_height": h,
                       "input": inp, "people": people})


def run(pose_edit="", pose=None, background=None, width=0, height=0, style="openpose"):
    out = HumanGenPoseEditor().edit(width, height, style, pose_edit, pose=pose, background=background)
    (frames, skeleton) = out["result"]
    return frames, skeleton, out["ui"]


def kp(frame_, p, k, key=BODY):
    return frame_["people"][p][key][3 * k:3 * k + 3]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_apply_matches_the_javascript_editor(case):
    out, _ = E.apply_edit(E.parse_edit(case["edit"]), case["input"],
                          (case.get("width") or 512, case.get("height") or 768))
    assert [p[BODY] for p in out["people"]] == [p[BODY] for p in case["expected"]["people"]]
    for key in ("hand_left_keypoints_2d", "hand_right_keypoints_2d"):
        assert [p.get(key) for p in out["people"]] == [p.get(key) for p in case["expected"]["people"]]
    assert (out["canvas_width"], out["canvas_height"]) == (case["expected"]["canvas_width"],
                                                           case["expected"]["canvas_height"])


def test_stored_edit_moves_hides_deletes_and_adds(standalone_host):
    inp = frame(2)
    added = {BODY: [v for i in range(18) for v in (300 + i, 200 + i, 1)]}
    stored = edit([{"source": 0, "keypoints": {BODY: {"4": [222.25, 111.5], "3": None}}},
                   {"source": 1, "deleted": True}, {"source": None, "person": added}], inp)
    frames, skeleton, ui = run(stored, pose=[inp])
    out = frames[0]
    assert len(frames) == 1 and len(out["people"]) == 2
    assert kp(out, 0, 4) == [222.25, 111.5, 1.0]
    assert kp(out, 0, 3) == [0.0, 0.0, 0.0]
    assert kp(out, 0, 5) == [150, 150, 1.0], "unedited keypoints pass through"
    assert out["people"][1][BODY] == added[BODY]
    assert (out["canvas_width"], out["canvas_height"]) == (640, 480)
    assert tuple(skeleton.shape) == (1, 480, 640, 3) and skeleton.dtype == torch.float32
    # the moved right wrist (OpenPose colour 4 = (170, 255, 0)) is drawn where it was put
    px = (skeleton[0, 111, 222] * 255).round().tolist()
    assert px == [170.0, 255.0, 0.0]
    assert ui["humangen_pose_input"] == [inp]
    assert ui["humangen_edit_report"] == ["Applied the stored edit: 4 change(s) to the pose it was made on."]
    assert ui["humangen_canvas"] == [[640, 480]]
    assert "humangen_background" not in ui, "the background preview is only written inside ComfyUI"
    assert inp == frame(2), "the input pose is not changed"


def test_scores_of_edited_keypoints_follow_the_edit():
    inp = frame(1)
    inp["people"][0]["humangen_scores"] = {BODY: [0.5] * 18}
    stored = edit([{"source": 0, "keypoints": {BODY: {"4": [1, 2], "17": [3, 4], "2": None}}}], inp)
    out, _ = E.apply_edit(E.parse_edit(stored), inp)
    scores = out["people"][0]["humangen_scores"][BODY]
    assert scores[4] == 1.0 and scores[17] == 1.0 and scores[2] == 0.0 and scores[0] == 0.5


def test_no_edit_passes_the_input_through_and_says_so(standalone_host):
    inp = frame(1)
    inp["people"][0][BODY][2] = 0.73  # a raw confidence is not rewritten when nothing is edited
    frames, _, ui = run("", pose=[inp])
    assert frames == [inp]
    assert ui["humangen_edit_report"] == ["No stored edit: the input pose passes through."]


def test_without_a_pose_input_the_pose_stored_with_the_edit_is_used(standalone_host):
    inp = frame(1)
    stored = edit([{"source": 0, "keypoints": {BODY: {"0": [10, 20]}}}], inp)
    frames, _, ui = run(stored)
    assert kp(frames[0], 0, 0) == [10, 20, 1.0]
    assert kp(frames[0], 0, 1) == [110, 70, 1.0]
    assert "stored with the edit was used" in ui["humangen_edit_report"][0]


def test_empty_canvas_from_the_size_widgets_or_the_background(standalone_host):
    frames, skeleton, _ = run("", width=256, height=384)
    assert frames == [{"people": [], "canvas_width": 256, "canvas_height": 384}]
    assert tuple(skeleton.shape) == (1, 384, 256, 3) and float(skeleton.max()) == 0.0
    frames, skeleton, ui = run("", background=torch.zeros(1, 100, 60, 3))
    assert (frames[0]["canvas_width"], frames[0]["canvas_height"]) == (60, 100)
    assert ui["humangen_canvas"] == [[60, 100]]


def test_width_height_rescale_the_output(standalone_host):
    stored = edit([{"source": 0, "keypoints": {BODY: {"4": [320, 240]}}}], frame(1))
    frames, skeleton, _ = run(stored, pose=[frame(1)], width=320, height=240)
    assert kp(frames[0], 0, 4) == [160, 120, 1.0]
    assert tuple(skeleton.shape) == (1, 240, 320, 3)


def test_edits_are_kept_when_the_input_pose_changes(standalone_host):
    old = frame(2)
    stored = edit([{"source": 0, "keypoints": {BODY: {"4": [50, 60], "0": [5, 5]}}},
                   {"source": 1, "keypoints": {BODY: {"1": [7, 7]}}}], old)
    new = frame(1)
    new["people"][0][BODY][12] += 30  # keypoint 4 moved in the new detection; keypoint 0 did not
    frames, _, ui = run(stored, pose=[new])
    assert kp(frames[0], 0, 4) == [50, 60, 1.0]
    assert kp(frames[0], 0, 0) == [5, 5, 1.0]
    assert len(frames[0]["people"]) == 1
    assert ui["humangen_edit_report"] == [
        "The input pose changed since the edit: kept 2 change(s) (1 on keypoints that moved in the input); "
        "dropped 1: person 2 is not in the input (it has 1). Press 'Reset to input' in the editor to discard "
        "the edit."]


def test_edits_follow_a_new_canvas_size(standalone_host):
    stored = edit([{"source": 0, "keypoints": {BODY: {"4": [50, 60]}}}], frame(1))
    big = P.scale_frame(frame(1), 1280, 960)
    frames, _, ui = run(stored, pose=[big])
    assert kp(frames[0], 0, 4) == [100, 120, 1.0]
    assert "rescaled from 640x480 to 1280x960" in ui["humangen_edit_report"][0]


def test_only_the_first_frame_of_a_batch_is_edited(standalone_host):
    stored = edit([{"source": 0, "keypoints": {BODY: {"4": [50, 60]}}}], frame(1))
    frames, skeleton, ui = run(stored, pose=[frame(1), frame(1)])
    assert kp(frames[0], 0, 4) == [50, 60, 1.0] and kp(frames[1], 0, 4) == [140, 130, 1.0]
    assert skeleton.shape[0] == 2
    assert "Only frame 1 of 2 is edited" in ui["humangen_edit_report"][0]


@pytest.mark.parametrize("value, problem", [
    ("{not json", "the stored edit is not JSON"),
    ("[" * 70 + "]" * 70, "the stored edit: JSON nested too deeply (more than 64 levels)"),
    ("[1, 2]", "is not a humangen_pose_edit object"),
    (json.dumps({"format": "humangen_pose_edit", "version": 2}), "stored edit version 2 is not supported"),
    (edit([{"source": -1}]), "people[0].source must be an input person index or null"),
    (edit([{"source": 0, "keypoints": {BODY: {"4": [1, "a"]}}}]), "must be [x, y] or null"),
    (edit([{"source": 0, "keypoints": {"tail_keypoints_2d": {}}}]), "unknown part"),
    (edit([], w=0), "canvas_width must be an integer in 1..8192"),
    (edit([{"source": None, "person": {BODY: [1, 2]}}]), "must be a list of x, y, confidence numbers"),
    (edit([{"source": None, "person": {BODY: []}}] * 65), "the edit adds more than 64 people"),
    (" " * 10 + "x" * E.MAX_CHARS, "characters; at most 1000000"),
])
def test_invalid_stored_edit_is_a_clear_error_naming_node_and_input(standalone_host, value, problem):
    with pytest.raises(NodeInputError) as info:
        run(value, pose=[frame(1)])
    msg = str(info.value)
    assert msg.startswith("HumanGenPoseEditor: input 'pose_edit': ")
    assert problem in msg
    assert "Reset to input" in msg


@pytest.mark.parametrize("width, height, name, problem", [
    (256, 0, "width", "set both width and height"),
    (8, 8, "width", "8 is outside 16..4096"),
    (512, 5000, "height", "5000 is out of range. Fix: use a value between 0 and 4096"),  # the declared range
])
def test_canvas_limits(standalone_host, width, height, name, problem):
    with pytest.raises(NodeInputError) as info:
        run("", pose=[frame(1)], width=width, height=height)
    assert f"HumanGenPoseEditor: input '{name}': {problem}" in str(info.value)


def test_input_canvas_above_the_limit_is_refused(standalone_host):
    with pytest.raises(NodeInputError, match=r"input 'pose': the pose canvas \(9000, 100\) is larger than 8192"):
        run("", pose=[frame(1, w=9000, h=100)])
    with pytest.raises(NodeInputError, match=r"input 'width': the output canvas 5000x100 is larger than 4096"):
        run("", pose=[frame(1, w=5000, h=100)])


def test_bad_pose_input_names_the_input(standalone_host):
    with pytest.raises(NodeInputError, match=r"HumanGenPoseEditor: input 'pose': .*no 'people' list"):
        run("", pose=[{"canvas_width": 10}])


def test_background_preview_is_written_once_inside_the_temp_folder(tmp_path):
    img = torch.zeros(2, 1500, 750, 3)
    img[0, :, :, 0] = 1.0
    entry = background_preview(img, str(tmp_path))
    assert entry["type"] == "temp" and entry["subfolder"] == "humangen_pose_editor"
    path = tmp_path / "humangen_pose_editor" / entry["filename"]
    from PIL import Image
    with Image.open(path) as im:
        assert im.size == (512, 1024)
        assert im.getpixel((10, 10)) == (255, 0, 0)
    mtime = path.stat().st_mtime_ns
    assert background_preview(img, str(tmp_path)) == entry
    assert path.stat().st_mtime_ns == mtime
    assert len(list((tmp_path / "humangen_pose_editor").iterdir())) == 1


def test_node_is_registered_and_the_pack_serves_web():
    import humangen
    from humangen.nodes import NODE_CLASS_MAPPINGS
    assert NODE_CLASS_MAPPINGS["HumanGenPoseEditor"] is HumanGenPoseEditor
    assert humangen.WEB_DIRECTORY == "./web"
    assert (ROOT / "web" / "humangen_pose_editor.js").is_file()
    # widgets_values order the UI relies on: the stored edit is the last widget (the canvas widget follows it)
    assert list(HumanGenPoseEditor.INPUT_TYPES()["required"]) == ["width", "height", "style", "pose_edit"]


def test_skeleton_is_black_without_people(standalone_host):
    _, skeleton, _ = run(edit([{"source": 0, "deleted": True}], frame(1)), pose=[frame(1)])
    assert np.count_nonzero(skeleton.numpy()) == 0


def test_example_workflow_applies_its_saved_edit(tmp_path, capsys):
    """workflows/pose_edit_to_skeleton.json through the headless runner: the saved edit raises the right wrist to
    (60, 300) and hides the left elbow of the detected pose; the rest is the detection."""
    from humangen.runner.cli import main
    stored = json.loads(json.loads((ROOT / "workflows" / "api" / "pose_edit_to_skeleton.json").read_text())
                        ["3"]["inputs"]["pose_edit"])
    code = main(["run", str(ROOT / "workflows" / "pose_edit_to_skeleton.json"), "--input-dir",
                 str(ROOT / "workflows" / "assets"), "--out", str(tmp_path / "out"), "--quiet",
                 "--models-dir", str(tmp_path / "models")])
    assert code == 0, capsys.readouterr().err
    saved = json.loads(next((tmp_path / "out").rglob("pose_edit_to_skeleton_pose_*.json")).read_text())[0]
    flat = saved["people"][0][BODY]
    assert flat[12:15] == [60.0, 300.0, 1.0] and flat[18:21] == [0.0, 0.0, 0.0]
    detected = stored["input"]["people"][0][BODY]
    for k in set(range(18)) - {4, 6}:
        assert flat[3 * k:3 * k + 2] == pytest.approx(detected[3 * k:3 * k + 2], abs=1.0), k
