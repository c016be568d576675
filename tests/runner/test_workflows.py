"""Every shipped workflow: only registered node ids (pack + core-compatible), valid links, UI and API twins give
the same prompt, and every workflow that needs no user model files runs through the headless runner."""
from __future__ import annotations

import json

import pytest

from hgtoys import ASSETS, WORKFLOWS
from humangen.runner.cli import main
from humangen.runner.engine import Engine, registry
from humangen.runner.workflow import is_api_format, is_ui_format, load_workflow

UI_FILES = sorted(WORKFLOWS.glob("*.json"))
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
ALL = UI_FILES + API_FILES


def _id(path):
    return str(path.relative_to(WORKFLOWS))


@pytest.fixture
def known(standalone_host):
    standalone_host.input_root = str(ASSETS)
    return Engine(registry())


def test_there_are_workflows_and_every_ui_one_has_an_api_twin():
    assert (WORKFLOWS / "image_scale.json") in UI_FILES
    assert sorted(p.name for p in UI_FILES) == sorted(p.name for p in API_FILES)
    readme = (WORKFLOWS / "README.md").read_text()
    for path in UI_FILES:
        assert f"`{path.name}`" in readme, f"workflows/README.md does not list {path.name}"


@pytest.mark.parametrize("path", UI_FILES, ids=_id)
def test_ui_workflow_structure(path, known):
    data = json.loads(path.read_text())
    assert is_ui_format(data)
    nodes = {n["id"]: n for n in data["nodes"]}
    for node in nodes.values():
        if node["type"] in ("Note", "MarkdownNote", "Reroute", "PrimitiveNode"):
            continue
        assert node["type"] in known.classes, f"{path.name}: node {node['id']} uses unregistered {node['type']}"
    for link in data["links"]:
        lid, src, src_slot, dst, dst_slot, ltype = link[:6]
        assert src in nodes and dst in nodes, f"{path.name}: link {lid} joins missing nodes"
        assert lid in (nodes[src]["outputs"][src_slot].get("links") or []), f"{path.name}: link {lid} (source)"
        assert nodes[dst]["inputs"][dst_slot]["link"] == lid, f"{path.name}: link {lid} (target)"
        if nodes[src]["type"] in known.classes:
            assert known.spec(nodes[src]["type"]).outputs[src_slot] == ltype


@pytest.mark.parametrize("path", API_FILES, ids=_id)
def test_api_workflow_uses_registered_ids_and_valid_links(path, known):
    data = json.loads(path.read_text())
    assert is_api_format(data)
    for nid, node in data.items():
        assert node["class_type"] in known.classes, f"{path.name}: node {nid} uses {node['class_type']}"
        spec = known.spec(node["class_type"])
        for name, value in node["inputs"].items():
            assert spec.input(name) is not None, f"{path.name}: node {nid} has no input {name}"
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                src = data[str(value[0])]
                assert value[1] < len(known.spec(src["class_type"]).outputs)


@pytest.mark.parametrize("path", UI_FILES, ids=_id)
def test_ui_and_api_twins_convert_to_the_same_prompt(path, known):
    ui = load_workflow(str(path), known.specs()).prompt
    api = load_workflow(str(WORKFLOWS / "api" / path.name), known.specs()).prompt

    def strip(p):
        return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in p.items()}

    assert strip(ui) == strip(api)


RUNNABLE = [p for p in ALL if not json.loads((WORKFLOWS / p.name).read_text()).get("models")]


@pytest.mark.parametrize("path", RUNNABLE, ids=_id)
def test_workflow_runs_through_the_runner(path, tmp_path, capsys):
    code = main(["run", str(path), "--input-dir", str(ASSETS), "--out", str(tmp_path / "out"), "--quiet",
                 "--models-dir", str(tmp_path / "models")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "1/1 job(s) ok" in err
    assert any((tmp_path / "out").rglob("*.png")), "the workflow saved nothing"
