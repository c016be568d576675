"""CI runs the README's test command in a fresh virtual environment of its own, installed with install.py from the
project's files, and never touches the checkout's .venv (the environment the README's set-up makes)."""
from __future__ import annotations

import re
import subprocess

from hgtest import ROOT


def _code_block_after(heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def _ci_commands() -> list[str]:
    return [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _ci_venv(ci: list[str]) -> str:
    (assignment,) = [c for c in ci if c.startswith("CI_VENV=")]
    return assignment.split("=", 1)[1]


def test_ci_runs_the_readme_test_command_last():
    test_commands = _code_block_after("Test")
    ci = _ci_commands()
    assert ci[-len(test_commands):] == test_commands


def test_ci_uses_a_fresh_venv_of_its_own_and_installs_with_install_py():
    ci = _ci_commands()
    venv = _ci_venv(ci)
    assert venv.startswith(".ci/") and venv.rstrip("/") not in (".venv", ".ci")
    assert ci.index('rm -rf "$CI_VENV"') < ci.index('python3 -m venv "$CI_VENV"') \
        < ci.index('"$CI_VENV/bin/python" install.py --dev') < ci.index('source "$CI_VENV/bin/activate"')
    assert not any(re.search(r"(^|\s)\.venv\b", c) for c in ci), "CI must leave the checkout's .venv alone"
    # git ignores CI's environment, so it never shows up as a change
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", f"{venv}/bin/python"], cwd=ROOT, timeout=30)
    assert ignored.returncode in (0, 128)  # 128: not a git checkout (an unpacked archive)
    assert "/.ci/venv/" in (ROOT / ".gitignore").read_text().splitlines()


def test_readme_setup_command_runs_the_main_job_through_the_launcher():
    (setup,) = _code_block_after("Set up")
    words = setup.split()
    assert words[:3] == ["python3", "launch.py", "run"]
    assert (ROOT / words[3]).is_file()
