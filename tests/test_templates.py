"""The pack's workflows as ComfyUI templates: one template folder, UI-format files only, a real JPEG card picture
per workflow (`<name>.jpg`, what the template browser shows), and the "HumanGen" category label for the folder
names the pack is installed under."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from hgtest import ROOT

WORKFLOWS = ROOT / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
# what ComfyUI's custom-node manager serves as templates: the first of these folders that exists
TEMPLATE_FOLDERS = ("example_workflows", "example", "examples", "workflow", "workflows")


def test_exactly_one_template_folder_of_ui_workflows():
    assert [d for d in TEMPLATE_FOLDERS if (ROOT / d).is_dir()] == ["workflows"]
    for path in UI_FILES:  # opening a card loads it like a dropped file: it must be the UI format
        data = json.loads(path.read_text())
        assert isinstance(data.get("nodes"), list) and "links" in data, path.name
    assert UI_FILES and all((WORKFLOWS / "api" / p.name).is_file() for p in UI_FILES)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_every_workflow_has_a_card_picture(path):
    card = path.with_suffix(".jpg")
    assert card.is_file(), f"missing {card.name}: run python tools/thumbnails.py {path.relative_to(ROOT)}"
    assert card.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG magic, whatever the name says
    with Image.open(card) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        assert 256 <= min(im.size) and max(im.size) <= 1024 and 0.5 <= im.width / im.height <= 2
        colours = im.convert("L").getextrema()
        assert colours[1] - colours[0] > 64, "a blank picture"
    assert 5_000 < card.stat().st_size < 300_000


def test_no_card_without_its_workflow():
    assert sorted(p.stem for p in WORKFLOWS.glob("*.jpg")) == sorted(p.stem for p in UI_FILES)


def test_template_category_is_labelled_for_the_usual_folder_names():
    labels = json.loads((ROOT / "locales" / "en" / "main.json").read_text())["templateWorkflows"]["category"]
    # a git clone keeps the repository's name; the registry and Manager use the node id (pyproject's name)
    import tomllib
    node_id = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    for folder in ("ComfyUI-HumanGen", node_id):
        assert labels.get(folder) == "HumanGen", folder
