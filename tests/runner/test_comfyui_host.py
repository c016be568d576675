"""Optional: the pack inside a real ComfyUI. Skipped unless COMFYUI_PATH points at a ComfyUI checkout.

Starts `main.py --cpu --listen 127.0.0.1` on a free port with a throw-away `--base-directory` whose custom_nodes/
holds only a link to this checkout, then checks: no IMPORT FAILED for the pack, /object_info lists every node id,
the runner's core-compatible nodes declare exactly what the host's do, and every workflow that needs no model
files runs through the runner's --server mode. COMFYUI_PYTHON selects the host's interpreter (default: this one);
see ../shared/docs/comfyui-host.md for a CPU set-up. When that interpreter's torchvision cannot import (a CUDA
build on CPU torch), the host process gets the pack's own torchvision fix (utils/compat.py) via sitecustomize.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from hgtest import ROOT
from hgtoys import ASSETS, WORKFLOWS
from humangen import NODE_CLASS_MAPPINGS
from humangen.runner.cli import main
from humangen.runner.core_nodes import NODE_CLASS_MAPPINGS as CORE
from humangen.runner.workflow import needs_models_of

COMFYUI = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfyui,
              pytest.mark.skipif(not COMFYUI, reason="set COMFYUI_PATH to a ComfyUI checkout to run")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy-base")
    (base / "custom_nodes").mkdir()
    os.symlink(ROOT, base / "custom_nodes" / "humangen")
    (base / "input").mkdir()
    shutil.copy(ASSETS / "astronaut.png", base / "input")
    port = _free_port()
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    env = dict(os.environ)
    probe = subprocess.run([python, "-c", "import torchvision"], capture_output=True, text=True, timeout=120)
    # COMFYUI_EXTRA_SITE: site-packages appended to the host's sys.path (the pack's requirements when the host venv
    # lacks them, e.g. mediapipe/opencv from the project venv)
    extra = [p for p in os.environ.get("COMFYUI_EXTRA_SITE", "").split(os.pathsep) if p]
    if "torchvision::nms does not exist" in probe.stderr or extra:
        shim = base / "shim"
        shim.mkdir()
        code = f"import sys\nsys.path.extend({extra!r})\n"
        if "torchvision::nms does not exist" in probe.stderr:
            code += ("import importlib.util\n"
                     f"spec = importlib.util.spec_from_file_location('_humangen_compat', {str(ROOT / 'utils' / 'compat.py')!r})\n"
                     "module = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(module)\n"
                     "module.install_import_hook()\n")
        (shim / "sitecustomize.py").write_text(code)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH")]))
    log = open(base / "comfyui.log", "w")
    proc = subprocess.Popen([python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                             "--base-directory", str(base)],
                            cwd=COMFYUI, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(url + "/system_stats", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("ComfyUI did not start:\n" + (base / "comfyui.log").read_text()[-3000:])
                time.sleep(0.5)
        yield url, base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


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
