"""Optional: the pack inside a real ComfyUI. Skipped unless COMFYUI_PATH points at a ComfyUI checkout.

Starts `main.py --cpu --listen 127.0.0.1` on a free port with a throw-away `--base-directory` whose custom_nodes/
holds only a link to this checkout, then checks: no IMPORT FAILED for the pack, /object_info lists every node id,
the runner's core-compatible nodes declare exactly what the host's do, and every workflow that needs no model
files runs through the runner's --server mode. COMFYUI_PYTHON selects the host's interpreter (default: this one);
see docs/comfyui-host.md for a CPU set-up. When that interpreter's torchvision cannot import (a CUDA
build on CPU torch), the host process gets the pack's own torchvision fix (utils/compat.py) via sitecustomize.
"""
from __future__ import annotations

import json
import shutil
import urllib.request

import pytest

from comfy_server import COMFYUI, comfyui_server
from hgtest import COMFYUI_SKIP_REASON
from hgtoys import ASSETS, WORKFLOWS
from humangen import NODE_CLASS_MAPPINGS
from humangen.runner.cli import main
from humangen.runner.core_nodes import NODE_CLASS_MAPPINGS as CORE
from humangen.runner.workflow import needs_models_of

pytestmark = [pytest.mark.comfyui,
              pytest.mark.skipif(not COMFYUI, reason=COMFYUI_SKIP_REASON)]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy-base")
    (base / "input").mkdir()
    shutil.copy(ASSETS / "astronaut.png", base / "input")
    with comfyui_server(base, timeout=180) as url:
        yield url, base


def test_pack_imports_and_registers_every_node(comfy):
    url, base = comfy
    text = (base / "comfyui.log").read_text()
    assert not [line for line in text.splitlines() if "IMPORT FAILED" in line and "humangen" in line], text[-3000:]
    info = json.loads(urllib.request.urlopen(url + "/object_info", timeout=60).read())
    missing = sorted(set(NODE_CLASS_MAPPINGS) - set(info))
    assert missing == []
    for node_id in NODE_CLASS_MAPPINGS:
        assert info[node_id]["category"].startswith("HumanGen")


def test_core_compatible_nodes_match_the_host(comfy):
    url, _ = comfy
    info = json.loads(urllib.request.urlopen(url + "/object_info", timeout=60).read())
    for node_id, cls in CORE.items():
        ours = json.loads(json.dumps(cls.INPUT_TYPES()))
        theirs = info[node_id]["input"]
        if node_id == "LoadImage":  # the file lists differ (different input folders)
            ours["required"]["image"][0] = theirs["required"]["image"][0] = []
        assert ours == theirs, node_id
        assert list(cls.RETURN_TYPES) == info[node_id]["output"]
        assert bool(getattr(cls, "OUTPUT_NODE", False)) == info[node_id]["output_node"]


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.json")) + sorted((WORKFLOWS / "api").glob("*.json")),
                         ids=lambda p: str(p.relative_to(WORKFLOWS)))
def test_workflows_run_on_the_host(comfy, path, tmp_path):
    if needs_models_of(json.loads((WORKFLOWS / path.name).read_text())):
        pytest.skip("needs model files")
    url, _ = comfy
    code = main(["run", str(path), "--server", url, "--input-dir", str(ASSETS), "--out", str(tmp_path),
                 "--quiet", "--timeout", "300"])
    assert code == 0
    assert list(tmp_path.rglob("*.png"))
