"""Start a real ComfyUI (`COMFYUI_PATH`) with this pack for the optional host tests; one place for all of them.

`comfyui_server(base)` runs `main.py --cpu --listen 127.0.0.1` on a free port with `--base-directory base` whose
custom_nodes/ holds only a link to this checkout, waits until it answers, yields its URL, and stops it.
COMFYUI_PYTHON picks the host interpreter (default: this one). COMFYUI_EXTRA_CUSTOM_NODES (os.pathsep-separated
folders) links other node packs beside it, e.g. comfyui_controlnet_aux for the interop checks.
COMFYUI_EXTRA_SITE (os.pathsep-separated) is appended to the host's sys.path (the pack's requirements when the host
venv lacks them). When the host's torchvision cannot import (a CUDA build on CPU torch), the host gets the pack's own
fix (utils/compat.py) through a sitecustomize; a working torchvision is left alone.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hgtest import ROOT

COMFYUI = os.environ.get("COMFYUI_PATH")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shim(base: Path, python: str, env: dict) -> None:
    probe = subprocess.run([python, "-c", "import torchvision"], capture_output=True, text=True, timeout=120)
    broken_torchvision = "torchvision::nms does not exist" in probe.stderr
    extra = [p for p in os.environ.get("COMFYUI_EXTRA_SITE", "").split(os.pathsep) if p]
    if not (broken_torchvision or extra):
        return
    shim = base / "shim"
    shim.mkdir(exist_ok=True)
    code = f"import sys\nsys.path.extend({extra!r})\n"
    if broken_torchvision:
        code += ("import importlib.util\n"
                 f"spec = importlib.util.spec_from_file_location('_humangen_compat', {str(ROOT / 'utils' / 'compat.py')!r})\n"
                 "module = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(module)\n"
                 "module.install_import_hook()\n")
    (shim / "sitecustomize.py").write_text(code)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH")]))


def host_environment(base: Path, extra_env: dict | None = None) -> tuple[str, dict]:
    """The host's interpreter (COMFYUI_PYTHON, default this one) and the environment to start it with: the
    torchvision fix and COMFYUI_EXTRA_SITE through a sitecustomize in base/shim where needed. For the server and for
    the checks that run ComfyUI's modules in a process of their own."""
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    env = dict(os.environ, **(extra_env or {}))
    _shim(base, python, env)
    return python, env


@contextlib.contextmanager
def comfyui_server(base: Path, *, extra_env: dict | None = None, timeout: float = 300):
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / "humangen"
    if not link.exists():
        os.symlink(ROOT, link)
    for other in filter(None, os.environ.get("COMFYUI_EXTRA_CUSTOM_NODES", "").split(os.pathsep)):
        other_link = base / "custom_nodes" / Path(other).name
        if not other_link.exists():
            os.symlink(other, other_link)
    python, env = host_environment(base, extra_env)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = base / "comfyui.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                 "--base-directory", str(base)], cwd=COMFYUI, stdout=log, stderr=subprocess.STDOUT,
                                env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(url + "/system_stats", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("ComfyUI did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
