"""What a real ComfyUI serves from the pack for its UI: the template list with a JPEG picture per workflow, the
"HumanGen" category label, and node definitions with display names, descriptions and tooltips everywhere.
Runs only with COMFYUI_PATH (and COMFYUI_PYTHON for ComfyUI's own venv); tested on v0.33.0 and v0.8.0."""
from __future__ import annotations

import json
import urllib.request

import pytest

from comfy_server import COMFYUI, comfyui_server
from hgtest import ROOT

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


def _get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.headers.get("Content-Type", ""), r.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not COMFYUI:
        pytest.skip("set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its interpreter)")
    base = tmp_path_factory.mktemp("comfy-templates")
    (base / "user").mkdir()
    with comfyui_server(base) as url:
        yield url


def test_templates_and_their_pictures_are_served(server):
    names = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
    _, body = _get(server + "/api/workflow_templates")
    assert sorted(json.loads(body)["humangen"]) == names  # the folder the pack sits in under custom_nodes/
    for name in names:
        kind, data = _get(f"{server}/api/workflow_templates/humangen/{name}.jpg")
        assert kind.startswith("image/jpeg") and data[:3] == b"\xff\xd8\xff", name
        _, wf = _get(f"{server}/api/workflow_templates/humangen/{name}.json")
        assert json.loads(wf)["nodes"], name


def test_template_category_label_reaches_the_frontend(server):
    _, body = _get(server + "/i18n")
    assert json.loads(body)["en"]["templateWorkflows"]["category"]["humangen"] == "HumanGen"


def test_node_definitions_carry_names_descriptions_and_tooltips(server):
    _, body = _get(server + "/object_info")
    ours = {k: v for k, v in json.loads(body).items() if k.startswith("HumanGen")}
    assert len(ours) >= 40
    for node_id, info in ours.items():
        assert info["display_name"].endswith(" (HumanGen)"), node_id
        assert info["description"], node_id
        assert len(info.get("output_tooltips") or []) == len(info["output"]), node_id
        for section in ("required", "optional"):
            for name, spec in (info["input"].get(section) or {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name}"
