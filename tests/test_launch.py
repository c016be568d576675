"""launch.py (the README's set-up and test commands) and install.py's stamp: which environment is used, that a
second set-up skips pip, and that `python install.py` (ComfyUI-Manager) still installs into the running Python."""
from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

from hgtest import ROOT, root_script

launch = root_script("launch")


@pytest.fixture
def install(tmp_path, monkeypatch):
    """install.py working on a copy of the project's install files, inside a fake virtual environment in tmp_path;
    pip is recorded, never run."""
    module = root_script("install")
    project = tmp_path / "project"
    project.mkdir()
    for name in module.INSTALL_INPUTS:
        shutil.copy(ROOT / name, project / name)
    monkeypatch.setattr(module, "HERE", str(project))
    env = tmp_path / "venv"
    env.mkdir()
    monkeypatch.setattr(sys, "prefix", str(env))
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path / "base"))
    module.pip_calls = []
    monkeypatch.setattr(module, "_pip", lambda *args: module.pip_calls.append(args))
    return module


def test_second_install_with_if_needed_skips_pip(install, capsys):
    assert install.main(["--dev", "--if-needed"]) == 0
    first = len(install.pip_calls)
    assert first >= 3 and any("requirements-dev.txt" in " ".join(c) for c in install.pip_calls)
    stamp = json.loads(open(install.stamp_path()).read())
    assert stamp == {"hash": install.install_hash(), "dev": True, "ray": False}
    capsys.readouterr()
    assert install.main(["--dev", "--if-needed"]) == 0
    assert len(install.pip_calls) == first  # nothing installed the second time
    assert "up to date" in capsys.readouterr().out
    assert install.main(["--if-needed"]) == 0 and len(install.pip_calls) == first  # a dev install covers runtime


def test_changed_requirements_install_again(install):
    install.main(["--dev", "--if-needed"])
    first = len(install.pip_calls)
    with open(os.path.join(install.HERE, "requirements.txt"), "a") as f:
        f.write("einops\n")
    assert not install.is_up_to_date(dev=True)
    install.main(["--dev", "--if-needed"])
    assert len(install.pip_calls) > first
    assert install.is_up_to_date(dev=True)


def test_a_runtime_install_does_not_cover_the_test_tools(install):
    install.main(["--if-needed"])
    assert install.is_up_to_date(dev=False) and not install.is_up_to_date(dev=True)


def test_plain_install_py_always_installs_into_the_running_python(install, monkeypatch):
    """ComfyUI-Manager runs `python install.py` with the host's Python: no stamp is consulted, and outside a
    virtual environment none is written."""
    install.main([])
    install.main([])
    assert sum("requirements.txt" in " ".join(c) for c in install.pip_calls) == 2
    monkeypatch.setattr(sys, "base_prefix", sys.prefix)  # a system / host Python, not a venv
    assert install.stamp_path() is None
    install.main(["--if-needed"])
    assert sum("requirements.txt" in " ".join(c) for c in install.pip_calls) == 3


def test_launcher_uses_the_active_venv_else_the_checkouts_own(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "prefix", "/some/venv")
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    assert launch.active_python() == sys.executable
    monkeypatch.setattr(sys, "prefix", "/usr")
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    assert launch.active_python() is None
    assert launch.OWN_VENV == os.path.join(str(ROOT), ".venv")


def test_launcher_creates_its_venv_once(monkeypatch, tmp_path):
    calls = []

    def fake_run(cmd, *a, **k):
        calls.append(cmd)
        python = launch.venv_python(str(tmp_path / ".venv"))
        os.makedirs(os.path.dirname(python), exist_ok=True)
        open(python, "w").close()
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(launch.subprocess, "run", fake_run)
    python = launch.ensure_own_venv(str(tmp_path / ".venv"))
    assert calls == [[sys.executable, "-m", "venv", str(tmp_path / ".venv")]]
    assert launch.ensure_own_venv(str(tmp_path / ".venv")) == python and len(calls) == 1


def test_launcher_commands(monkeypatch, capsys):
    assert launch.command_line("run", ["wf.json", "--out", "o"], "PY") == (["PY", str(ROOT), "run", "wf.json",
                                                                           "--out", "o"], None)
    assert launch.command_line("test", ["-x"], "PY") == (["PY", "-m", "pytest", "-q", "-x"], str(ROOT))
    seen = []
    monkeypatch.setattr(launch, "active_python", lambda: "PY")
    monkeypatch.setattr(launch, "setup", lambda python, reinstall=False: seen.append(("setup", python, reinstall)))
    monkeypatch.setattr(launch, "_call", lambda cmd, cwd=None: seen.append((cmd, cwd)) or 7)
    assert launch.main(["test", "tests/test_ci.py"]) == 7
    assert seen == [("setup", "PY", False), (["PY", "-m", "pytest", "-q", "tests/test_ci.py"], str(ROOT))]
    assert launch.main(["setup", "--reinstall"]) == 0 and seen[-1] == ("setup", "PY", True)
    assert launch.main(["bogus"]) == 2
    assert "error: unknown command 'bogus'; the commands are run, test and setup" in capsys.readouterr().err
