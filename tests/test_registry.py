"""Registry and installer readiness: pyproject.toml has what the ComfyUI registry needs, the icon it points at is
in the repository, and requirements.txt is safe for ComfyUI-Manager, which pip-installs it one line at a time with
no options (before it runs install.py)."""
from __future__ import annotations

import re
import tomllib

from PIL import Image

from hgtest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _lines(name):
    return [line.strip() for line in (ROOT / name).read_text().splitlines() if line.strip()]


def test_pyproject_has_what_the_registry_needs():
    project, comfy = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    assert re.fullmatch(r"[a-z][a-z0-9._-]*", project["name"]) and "comfyui" not in project["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["description"] and project["urls"]["Repository"].startswith("https://github.com/")
    assert (ROOT / project["license"]["file"]).is_file()
    assert comfy["PublisherId"] and comfy["DisplayName"] == "HumanGen"
    assert isinstance(comfy["includes"], list) and all((ROOT / d).exists() for d in comfy["includes"])
    assert comfy["requires-comfyui"].startswith(">=")
    # the icon is served from the repository itself: the file must exist where the URL points
    repo = project["urls"]["Repository"].removeprefix("https://github.com/")
    assert comfy["Icon"] == f"https://raw.githubusercontent.com/{repo}/main/icon.png"
    with Image.open(ROOT / "icon.png") as icon:
        assert icon.format == "PNG" and icon.size == (400, 400)  # registry: at most 800x400


def test_dependencies_mirror_requirements_txt():
    assert PYPROJECT["project"]["dependencies"] == _lines("requirements.txt")


def test_requirements_txt_is_safe_line_by_line():
    lines = _lines("requirements.txt")
    special = {re.split(r"[=<>]", line)[0].lower() for f in ("requirements-build.txt", "requirements-nodeps.txt")
               for line in _lines(f) if not line.startswith("#")}
    for line in lines:
        assert not line.startswith(("#", "-")), f"{line!r}: some Manager versions hand comments and options to pip"
        assert re.fullmatch(r"[A-Za-z0-9._-]+", line), f"{line!r}: no pins (ComfyUI packs must not pin)"
        assert line.lower() not in {"torch", "torchvision", "torchaudio", "xformers"} | special, line
    assert {"xtcocotools", "mmpose"} <= special
    install = (ROOT / "install.py").read_text()
    assert '"requirements-build.txt"' in install and '"requirements-nodeps.txt"' in install


def test_changelog_names_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {PYPROJECT['project']['version']}" in text and "## Unreleased" in text
