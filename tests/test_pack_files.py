"""The pack's own source is complete: every relative import in it (including the lazy ones inside node functions,
which a pack import never runs) names a module that exists in the checkout, and no pack source is git-ignored.

Regression: `.gitignore` ignored `/models/parts2whole/` (the user model folder outside ComfyUI), which silently kept
the Parts2Whole code package `models/parts2whole/*.py` out of git; every Parts2Whole node then failed in ComfyUI with
`No module named '...models.parts2whole'`."""
from __future__ import annotations

import ast
import subprocess

import pytest

from hgtest import ROOT

SKIP_DIRS = {"tests", "bench", ".git", "__pycache__", "output", "input"}


def _pack_sources():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in SKIP_DIRS or "__pycache__" in rel.parts or rel.parts[0].startswith("."):
            continue
        if rel.parts[0] == "models" and len(rel.parts) > 2 and not (ROOT / rel.parts[0] / rel.parts[1] /
                                                                     "__init__.py").exists():
            continue  # a user model folder (./models/<kind>/) outside ComfyUI, not code
        yield path


def _exists(module_parts: list[str]) -> bool:
    base = ROOT.joinpath(*module_parts) if module_parts else ROOT
    return (base.with_suffix(".py").is_file() if module_parts else False) or (base / "__init__.py").is_file()


def test_every_relative_import_resolves():
    missing = []
    for path in _pack_sources():
        package = list(path.relative_to(ROOT).parent.parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            target = base + (node.module.split(".") if node.module else [])
            if not _exists(target):
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {'.'.join(target) or '<root>'}")
            elif node.module is None:  # `from .. import name`: name is a submodule
                missing += [f"{path.relative_to(ROOT)}:{node.lineno} {'.'.join(target + [a.name])}"
                            for a in node.names if not _exists(target + [a.name])]
    assert missing == []


def test_no_pack_source_is_git_ignored():
    try:
        out = subprocess.run(["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--directory"],
                             cwd=ROOT, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("needs git on PATH")
    if out.returncode != 0:
        pytest.skip("not a git checkout: run the tests from a git clone")
    ignored = [line for line in out.stdout.splitlines()
               if not any(part in line for part in ("__pycache__", ".pytest_cache", "egg-info"))
               and not line.startswith(".")]  # dot folders such as the virtual environment .ci/run makes
    code = [line for line in ignored if line.endswith(".py") or (
        line.endswith("/") and any((ROOT / line).rglob("*.py")))]
    assert code == []


def test_gitignore_keeps_code_packages_that_share_a_model_folder_name():
    """Each models/<kind>/ that is a code package must not be ignored by the model-folder rules."""
    for pkg in sorted(p.parent for p in (ROOT / "models").glob("*/__init__.py")):
        probe = pkg.relative_to(ROOT) / "__init__.py"
        out = subprocess.run(["git", "check-ignore", "-q", "--no-index", str(probe)], cwd=ROOT, timeout=30)
        if out.returncode == 128:
            pytest.skip("not a git checkout: run the tests from a git clone")
        assert out.returncode == 1, f"{probe} is git-ignored"
