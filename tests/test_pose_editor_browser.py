"""The pose editor component in a real browser: Debian's Chromium, headless, driven over the DevTools protocol
(tests/cdp.py) on tests/browser/pose_editor_page.html served from 127.0.0.1. Real mouse events drag a joint by a
known offset, a keypoint is deleted with the Delete key, Ctrl+Z undoes it; the serialised edit is checked, then
applied by the node itself. The screenshot is left in test-artifacts/ (ignored by git) and the test's tmp dir.

Skipped only when no Chromium is installed (.ci/install-chromium installs Debian's `chromium`)."""
from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from cdp import Page, chromium, find_chromium, serve_directory
from hgtest import ROOT

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found: install Debian's chromium "
                                "(sudo apt-get install -y chromium, as .ci/install-chromium does) or set "
                                "HUMANGEN_CHROMIUM to a Chromium binary")
BODY = "pose_keypoints_2d"
ARTIFACTS = ROOT / "test-artifacts"
INPUT = json.loads((ROOT / "tests" / "browser" / "astronaut_pose.json").read_text())[0]

JOINT_ON_SCREEN = """(() => {
  const r = editor.view.canvas.getBoundingClientRect();
  const p = editor.model.point({person: %d, part: "pose_keypoints_2d", index: %d});
  const [sx, sy] = editor.view.toScreen(p.x, p.y);
  return {x: r.left + sx, y: r.top + sy, px: p.x, py: p.y, zoom: editor.view.zoom, visible: p.v};
})()"""


async def _session(base: str, devtools: str, tmp_path):
    page = await Page.open(devtools)
    try:
        await page.goto(f"{base}/tests/browser/pose_editor_page.html")
        await page.wait_for("window.ready === true || window.loadError")
        assert await page.eval("window.loadError || null") is None
        result = {}

        # 0. a click on a joint selects it: the buttons for a selected point and person come alive
        buttons = "Object.fromEntries([...editor.element.querySelectorAll('button')].map(b => [b.dataset.action, !b.disabled]))"
        result["buttons_before_click"] = await page.eval(buttons)
        e = await page.eval(JOINT_ON_SCREEN % (0, 6))
        await page.click(e["x"], e["y"])
        result["buttons_after_click"] = await page.eval(buttons)

        # 1. drag the right wrist (joint 4) by (+40, -30) screen pixels with real mouse events
        j = await page.eval(JOINT_ON_SCREEN % (0, 4))
        assert j["visible"] and 1.0 < j["zoom"] < 2.0
        await page.drag(j["x"], j["y"], j["x"] + 40, j["y"] - 30)
        result["after_drag"] = json.loads(await page.eval("editor.getValue()"))
        result["joint"] = j
        result["moved_on_screen"] = await page.eval(JOINT_ON_SCREEN % (0, 4))

        # 2. select the left elbow (joint 6) with a click, delete it with the Delete key
        e = await page.eval(JOINT_ON_SCREEN % (0, 6))
        await page.click(e["x"], e["y"])
        await page.key("Delete", "Delete", 46)
        result["after_delete"] = json.loads(await page.eval("editor.getValue()"))
        result["status"] = await page.eval("editor.element.querySelector('.hg-pe-status').textContent")
        await page.screenshot(tmp_path / "pose_editor_deleted.png")

        # 3. undo with Ctrl+Z: the elbow is back, the drag stays
        await page.key("z", "KeyZ", 90, modifiers=2)
        result["after_undo"] = json.loads(await page.eval("editor.getValue()"))
        result["changes"] = await page.eval("window.changes.length")
        result["help"] = await page.eval("editor.element.querySelector('.hg-pe-help').textContent")
        await page.eval("editor.view.draw(), true")
        result["screenshot"] = await page.screenshot(tmp_path / "pose_editor.png")
        result["errors"] = list(page.errors)
        return result
    finally:
        await page.close()


def test_drag_delete_undo_in_headless_chromium(tmp_path, standalone_host):
    with serve_directory(ROOT) as base, chromium(CHROMIUM, tmp_path) as devtools:
        r = asyncio.run(asyncio.wait_for(_session(base, devtools, tmp_path), 120))
    assert r["errors"] == []
    j = r["joint"]
    want = [round(j["px"] + 40 / j["zoom"], 2), round(j["py"] - 30 / j["zoom"], 2)]

    edit = r["after_drag"]
    assert edit["format"] == "humangen_pose_edit" and edit["input"] == INPUT
    assert list(edit["people"][0]["keypoints"][BODY]) == ["4"], "only the dragged joint is stored"
    got = edit["people"][0]["keypoints"][BODY]["4"]
    assert got == pytest.approx(want, abs=0.011)
    assert r["moved_on_screen"]["x"] == pytest.approx(j["x"] + 40, abs=0.05)
    assert r["moved_on_screen"]["y"] == pytest.approx(j["y"] - 30, abs=0.05)

    before, after = r["buttons_before_click"], r["buttons_after_click"]
    assert not before["hidePoint"] and not before["deletePerson"] and not before["flip"]
    assert after["hidePoint"] and after["deletePerson"] and after["flip"] and after["mirror"]
    assert not after["restorePoint"] and not after["undo"] and not after["redo"], "a click is no edit"
    deleted = r["after_delete"]["people"][0]["keypoints"][BODY]
    assert deleted == {"4": got, "6": None}
    assert "left wrist" not in r["status"] and "person 1, pose point 6 (hidden)" in r["status"]

    assert r["after_undo"]["people"][0]["keypoints"][BODY] == {"4": got}
    assert r["changes"] == 3, "drag, delete, undo: one stored-edit change each"
    assert "Del hide point" in r["help"] and "Ctrl+Z undo" in r["help"]

    # the serialised edit drives the node exactly: the joint moved by the offset, nothing else changed
    from humangen.nodes.pose_editor import HumanGenPoseEditor
    out = HumanGenPoseEditor().edit(0, 0, "openpose", json.dumps(r["after_undo"]), pose=[INPUT])["result"][0][0]
    flat, before = out["people"][0][BODY], INPUT["people"][0][BODY]
    assert flat[12:15] == [got[0], got[1], 1.0]
    assert flat[:12] + flat[15:] == before[:12] + before[15:]

    # the screenshot shows the moved joint in its OpenPose colour (right wrist: (170, 255, 0))
    from PIL import Image
    with Image.open(r["screenshot"]) as im:
        assert im.size == (800, 760)
        x, y = round(j["x"] + 40), round(j["y"] - 30)
        assert im.convert("RGB").getpixel((x, y)) == (170, 255, 0)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(r["screenshot"], ARTIFACTS / "pose_editor.png")


async def _glue_session(base: str, devtools: str, tmp_path):
    page = await Page.open(devtools)
    try:
        await page.goto(f"{base}/tests/browser/glue_page.html")
        await page.wait_for("window.ready === true || window.loadError")
        assert await page.eval("window.loadError || null") is None
        r = {"extensions": await page.eval("window.extensionNames"),
             "hidden": await page.eval("(({hidden, type}) => ({hidden, type}))(node.widgets[3])"),
             "size": await page.eval("node.size"),
             "saved_before": await page.eval("node.serialize()")}
        message = {"humangen_pose_input": [INPUT], "humangen_canvas": [[512, 512]],
                   "humangen_background": [{"filename": "astronaut.png", "subfolder": "", "type": "temp"}],
                   "humangen_edit_report": ["No stored edit: the input pose passes through."]}
        await page.eval(f"node.onExecuted({json.dumps(message)}), true")
        await page.wait_for("node.humangenPoseEditor.view.background !== null")
        await page.eval("node.humangenPoseEditor.view.draw(), true")
        j = await page.eval(JOINT_ON_SCREEN.replace("editor.", "node.humangenPoseEditor.") % (0, 4))
        await page.drag(j["x"], j["y"], j["x"] + 25, j["y"] + 15)
        await page.key("Delete", "Delete", 46)  # hides the dragged (selected) joint; ComfyUI must not see it
        r.update(joint=j, stored=await page.eval("node.widgets[3].value"),
                 saved=await page.eval("node.serialize()"), window_keys=await page.eval("window.windowKeys"),
                 status=await page.eval("node.humangenPoseEditor.element.querySelector('.hg-pe-status').textContent"),
                 frame=await page.eval("node.humangenPoseEditor.model.toFrame()"))
        await page.screenshot(tmp_path / "glue.png")
        # "reload the workflow": a new node configured from the saved widgets_values, before any run
        r["reloaded"] = await page.eval("""(() => {
            const saved = node.serialize();
            const again = newNode();
            again.configure(saved);
            return {frame: again.humangenPoseEditor.model.toFrame(), saved: again.serialize()};
        })()""")
        r["errors"] = list(page.errors)
        return r
    finally:
        await page.close()


def test_comfyui_glue_keeps_the_edit_in_the_widget_value(tmp_path):
    mounts = {"/extensions/humangen/": ROOT / "web", "/scripts/": ROOT / "tests" / "browser" / "fake_comfy"}
    with serve_directory(ROOT, mounts) as base, chromium(CHROMIUM, tmp_path) as devtools:
        r = asyncio.run(asyncio.wait_for(_glue_session(base, devtools, tmp_path), 120))
    assert r["errors"] == []
    assert r["extensions"] == ["HumanGen.PoseEditor"]
    assert r["hidden"] == {"hidden": True, "type": "hidden"}, "the raw pose_edit text widget is hidden"
    assert r["size"][0] >= 560 and r["size"][1] >= 640
    assert r["saved_before"]["widgets_values"] == [0, 0, "openpose", ""], "the canvas widget is not serialised"

    j = r["joint"]
    edit = json.loads(r["stored"])
    assert edit["input"] == INPUT
    assert edit["people"] == [{"source": 0, "keypoints": {BODY: {"4": None}}}], "dragged, then hidden with Delete"
    assert r["saved"]["widgets_values"] == [0, 0, "openpose", r["stored"]]
    assert "Delete" not in r["window_keys"], "the editor keeps Delete away from ComfyUI (it would delete the node)"
    assert "No stored edit: the input pose passes through." in r["status"]
    assert r["reloaded"]["saved"] == r["saved"]
    assert r["reloaded"]["frame"] == r["frame"]
    assert r["frame"]["people"][0][BODY][12:15] == [0, 0, 0]
    assert j["visible"]


async def _scaled_session(base: str, devtools: str):
    page = await Page.open(devtools)
    try:
        await page.goto(f"{base}/tests/browser/pose_editor_page.html?scale=0.5")
        await page.wait_for("window.ready === true || window.loadError")
        j = await page.eval(JOINT_ON_SCREEN % (0, 2))  # toScreen is in the editor's own (unscaled) CSS pixels
        rect = await page.eval("(r => [r.left, r.top])(editor.view.canvas.getBoundingClientRect())")
        x, y = rect[0] + (j["x"] - rect[0]) * 0.5, rect[1] + (j["y"] - rect[1]) * 0.5
        await page.drag(x, y, x + 20, y + 10)
        return j, json.loads(await page.eval("editor.getValue()")), list(page.errors)
    finally:
        await page.close()


def test_drag_follows_a_css_zoom_of_the_host(tmp_path):
    """ComfyUI draws DOM widgets scaled by the graph's zoom (a CSS transform): 20 screen pixels at zoom 0.5 are 40
    of the editor's pixels."""
    with serve_directory(ROOT) as base, chromium(CHROMIUM, tmp_path) as devtools:
        j, edit, errors = asyncio.run(asyncio.wait_for(_scaled_session(base, devtools), 120))
    assert errors == []
    got = edit["people"][0]["keypoints"][BODY]["2"]
    assert got == pytest.approx([j["px"] + 40 / j["zoom"], j["py"] + 20 / j["zoom"]], abs=0.011)
