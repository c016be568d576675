"""The pose editor inside a real ComfyUI, in headless Chromium (optional: skipped unless COMFYUI_PATH points at a
ComfyUI checkout and a Chromium is installed; COMFYUI_PYTHON / COMFYUI_EXTRA_SITE as for the other host tests).

Loads workflows/pose_edit_to_skeleton.json in the real frontend, checks the editor widget shows the saved edit
before any run, queues it, drags one joint with real mouse events (Delete then hides it without deleting the node, Ctrl+Z
brings it back), queues again and checks that the saved POSE_KEYPOINT moved exactly that joint by that offset; then saves the workflow (UI and API format) and reloads it,
and the edit is still there."""
from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from cdp import Page, chromium, find_chromium
from comfy_server import COMFYUI, comfyui_server
from hgtest import ROOT

CHROMIUM = find_chromium()
pytestmark = [pytest.mark.comfyui, pytest.mark.slow,
              pytest.mark.skipif(not COMFYUI, reason="set COMFYUI_PATH to a ComfyUI checkout to run"),
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (apt-get install -y chromium)")]
WORKFLOW = json.loads((ROOT / "workflows" / "pose_edit_to_skeleton.json").read_text())
EDITOR = "app.graph.getNodeById(3).humangenPoseEditor"
EDIT_VALUE = "app.graph.getNodeById(3).widgets.find(w => w.name === 'pose_edit').value"
BODY = "pose_keypoints_2d"


def _history(url):
    return json.loads(urllib.request.urlopen(url + "/history", timeout=10).read())


async def _queue(page, url):
    before = set(_history(url))
    await page.eval("app.queuePrompt(0, 1).then(() => true)")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        new = {k: v for k, v in _history(url).items() if k not in before}
        done = [v for v in new.values() if v.get("status", {}).get("completed") or
                v.get("status", {}).get("status_str") == "error"]
        if done:
            assert done[0]["status"]["status_str"] == "success", done[0]["status"]
            return done[0]
        await asyncio.sleep(0.5)
    raise TimeoutError("the prompt did not finish in 180 s")


async def _uncover(page, x, y, timeout=60):
    """A fresh ComfyUI profile opens the template browser once its templates have loaded (any time in the first
    seconds): close whatever covers the editor at (x, y) before dragging there."""
    top = f"(() => {{ const e = document.elementFromPoint({x}, {y}); const out = []; let n = e;" \
          " while (n && out.length < 6) { out.push(n.tagName + '.' + String(n.className).slice(0, 50)); n = n.parentElement; }" \
          " return out; })()"
    deadline = time.monotonic() + timeout
    while True:
        chain = await page.eval(top)
        if chain and chain[0].startswith("CANVAS.hg-pe-canvas"):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"something covers the pose editor: {chain}")
        await page.key("Escape", "Escape", 27)
        await page.eval("[...document.querySelectorAll('button')].filter(b => /close/i.test("
                        "(b.getAttribute('aria-label') || '') + ' ' + b.className)).forEach(b => b.click()), true")
        await asyncio.sleep(0.5)


def _saved_pose(base: Path, entry) -> dict:
    f = entry["outputs"]["6"]["files"][0]
    return json.loads((base / "output" / f["subfolder"] / f["filename"]).read_text())[0]


async def _session(url, devtools, base: Path, tmp_path: Path):
    page = await Page.open(devtools, 1600, 1000)
    try:
        r = {}
        # no first-run template browser over the graph (the frontend's own browser tests set this too)
        req = urllib.request.Request(url + "/settings/Comfy.TutorialCompleted", data=b"true", method="POST")
        urllib.request.urlopen(req, timeout=10).read()
        await page.goto(url + "/")
        await page.wait_for("!!(window.app && window.app.graph)", 90)
        await page.eval(f"app.loadGraphData({json.dumps(WORKFLOW)}).then(() => true)")
        await page.eval("(() => { app.canvas.ds.scale = 1; app.canvas.ds.offset = [-700, 20];"
                        " app.canvas.setDirty(true, true); return true; })()")
        r["before_run"] = await page.eval(f"{EDITOR}.model.toFrame()")
        r["extensions"] = await page.eval("app.extensions.map(e => e.name).filter(n => n.startsWith('HumanGen'))")

        first = await _queue(page, url)
        await page.wait_for(f"{EDITOR}.view.background !== null", 30)
        r["first"] = _saved_pose(base, first)
        r["report"] = await page.eval(f"{EDITOR}.element.querySelector('.hg-pe-status').textContent")

        j = await page.eval(f"""(() => {{ const ed = {EDITOR}; const c = ed.view.canvas;
            const rect = c.getBoundingClientRect(); const k = rect.width / c.offsetWidth;
            const p = ed.model.point({{person: 0, part: '{BODY}', index: 2}}); const [sx, sy] = ed.view.toScreen(p.x, p.y);
            const x = rect.left + sx * k, y = rect.top + sy * k;
            return {{x, y, k, zoom: ed.view.zoom, on_canvas: document.elementFromPoint(x, y) === c}}; }})()""")
        await _uncover(page, j["x"], j["y"])
        await page.drag(j["x"], j["y"], j["x"] + 30, j["y"] + 20)
        r["offset"] = [30 / j["k"] / j["zoom"], 20 / j["k"] / j["zoom"]]
        # Delete hides the selected joint and must not reach ComfyUI (which would delete the selected node);
        # Ctrl+Z brings the joint back
        before = await page.eval(EDIT_VALUE)
        await page.key("Delete", "Delete", 46)
        r["after_delete"] = {"node": await page.eval("!!app.graph.getNodeById(3)"),
                             "hidden": await page.eval(f"!{EDITOR}.model.point({{person: 0, part: '{BODY}', index: 2}}).v")}
        await page.key("z", "KeyZ", 90, modifiers=2)
        r["undo_restores"] = await page.eval(EDIT_VALUE) == before
        second = await _queue(page, url)
        r["second"] = _saved_pose(base, second)
        await page.screenshot(tmp_path / "comfyui_pose_editor.png")

        workflow = await page.eval("app.graph.serialize()")
        r["widgets_values"] = [n for n in workflow["nodes"] if n["id"] == 3][0]["widgets_values"]
        r["api_edit"] = (await page.eval("app.graphToPrompt().then(p => p.output)"))["3"]["inputs"]["pose_edit"]
        r["frame"] = await page.eval(f"{EDITOR}.model.toFrame()")
        await page.eval("app.loadGraphData({nodes: [], links: [], version: 0.4}).then(() => true)")
        await page.eval(f"app.loadGraphData({json.dumps(workflow)}).then(() => true)")
        r["reloaded_frame"] = await page.eval(f"{EDITOR}.model.toFrame()")
        r["reloaded_value"] = await page.eval(EDIT_VALUE)
        r["errors"] = list(page.errors)
        return r
    finally:
        await page.close()


def test_pose_editor_in_comfyui(tmp_path):
    base = tmp_path / "comfy"
    (base / "input").mkdir(parents=True)
    (base / "user").mkdir()
    shutil.copy(ROOT / "workflows" / "assets" / "astronaut.png", base / "input")
    with comfyui_server(base) as url, chromium(CHROMIUM, tmp_path / "browser", 1600, 1000) as devtools:
        r = asyncio.run(asyncio.wait_for(_session(url, devtools, base, tmp_path), 600))
    assert r["errors"] == []
    assert r["extensions"] == ["HumanGen.PoseEditor"]
    kp = lambda flat, k: flat[3 * k:3 * k + 3]  # noqa: E731
    # before any run the widget shows the saved edit on the pose stored with it
    assert kp(r["before_run"]["people"][0][BODY], 4) == [60, 300, 1]
    assert kp(r["before_run"]["people"][0][BODY], 6) == [0, 0, 0]
    first, second = r["first"]["people"][0][BODY], r["second"]["people"][0][BODY]
    assert kp(first, 4) == [60.0, 300.0, 1.0] and kp(first, 6) == [0.0, 0.0, 0.0]
    assert "Applied the stored edit: 2 change(s)" in r["report"]
    # exactly the dragged joint moved, by the drag's offset in pose pixels
    assert r["after_delete"] == {"node": True, "hidden": True} and r["undo_restores"]
    moved = [k for k in range(len(first) // 3) if kp(first, k) != kp(second, k)]
    assert moved == [2]
    want = [first[6] + r["offset"][0], first[7] + r["offset"][1]]
    assert second[6:8] == pytest.approx(want, abs=0.011)
    # saved in the UI workflow and the API prompt; a reload keeps it
    stored = json.loads(r["widgets_values"][3])
    assert r["widgets_values"][:3] == [0, 0, "openpose"] and len(r["widgets_values"]) == 4
    assert stored["people"][0]["keypoints"][BODY]["2"] == pytest.approx(second[6:8], abs=1e-9)
    assert r["api_edit"] == r["widgets_values"][3]
    assert r["reloaded_value"] == r["widgets_values"][3]
    assert r["reloaded_frame"] == r["frame"]
