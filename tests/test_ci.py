"""CI runs exactly the README's commands, and the README's set-up commands exist."""
from __future__ import annotations

import re

from hgtest import ROOT


def _code_block_after(heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def test_ci_runs_the_readme_test_command_after_install():
    test_commands = _code_block_after("Test")
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.strip().startswith("#")]
    assert ci[-len(test_commands):] == test_commands
    assert ".venv/bin/python install.py --dev" in ci


def test_readme_setup_commands():
    setup = _code_block_after("Set up")
    assert setup[0].startswith("python install.py")
    assert setup[1].startswith("python . run workflows/")
    workflow = setup[1].split()[3]
    assert (ROOT / workflow).exists()
