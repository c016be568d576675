"""The shipped UI workflows look tidy when opened in ComfyUI: no node covers another (title bars included, with
each node at least as large as the frontend draws it) and every node is wide enough for its title (plus the
pack badge the frontend shows beside it), its socket labels and its widget labels."""
from __future__ import annotations

import json

import pytest

from hgtest import ROOT
from humangen import NODE_DISPLAY_NAME_MAPPINGS

WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: the title bar is drawn above `pos`
SLOT_HEIGHT = 20  # LiteGraph.NODE_SLOT_HEIGHT
WIDGET_HEIGHT = 24  # a widget row (20) plus the gap between rows
CHAR = 7.5  # mean advance of the 14 px title font, generous for mixed-case text
BADGE = 100  # the node-source badge ("HumanGen", or the folder name) drawn in a custom node's title bar
CORE_TITLES = {"LoadImage": "Load Image", "SaveImage": "Save Image", "PreviewImage": "Preview Image",
               "ImageScale": "Upscale Image", "Note": "Note", "MarkdownNote": "Note"}


def title_of(node: dict) -> str:
    return node.get("title") or NODE_DISPLAY_NAME_MAPPINGS.get(node["type"]) or CORE_TITLES.get(node["type"],
                                                                                               node["type"])


def min_size(node: dict) -> tuple[float, float]:
    """The smallest box the frontend draws this node in: title (+ badge), socket rows, widget rows."""
    slots_in = [i for i in node.get("inputs") or [] if "widget" not in i]
    outputs = node.get("outputs") or []
    widgets = len(node.get("widgets_values") or []) if isinstance(node.get("widgets_values"), list) else 0
    badge = BADGE if node["type"].startswith("HumanGen") else 0
    longest_in = max((len(i.get("label") or i["name"]) for i in slots_in), default=0)
    longest_out = max((len(o.get("label") or o["name"]) for o in outputs), default=0)
    width = max(CHAR * len(title_of(node)) + 40 + badge, CHAR * (longest_in + longest_out) + 60)
    height = max(len(slots_in), len(outputs)) * SLOT_HEIGHT + widgets * WIDGET_HEIGHT + 14
    return width, height


def box(node: dict) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 as drawn: the saved size grown to the minimum, the title bar above `pos`."""
    (x, y), (w, h) = node["pos"], node["size"]
    mw, mh = min_size(node)
    return x, y - TITLE_HEIGHT, x + max(w, mw), y + max(h, mh)


def overlaps(a, b, gap: float = 0.0) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_node_covers_another(path):
    nodes = json.loads(path.read_text())["nodes"]
    boxes = [(n["id"], title_of(n), box(n)) for n in nodes]
    clashes = [(a[:2], b[:2]) for i, a in enumerate(boxes) for b in boxes[i + 1:] if overlaps(a[2], b[2])]
    assert clashes == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_node_is_large_enough_for_its_labels(path):
    small = []
    for n in json.loads(path.read_text())["nodes"]:
        (w, h), (mw, mh) = n["size"], min_size(n)
        if w < mw or h < mh:
            small.append((n["id"], title_of(n), (w, h), (round(mw), round(mh))))
    assert small == []


def test_the_checks_catch_what_they_should():
    a = {"id": 1, "type": "HumanGenInsetGAN", "pos": [0, 0], "size": [340, 200], "widgets_values": [0] * 11,
         "inputs": [{"name": n} for n in ("body_generator", "body_latent", "face_generator", "face_latent")],
         "outputs": [{"name": "image"}]}
    b = dict(a, id=2, pos=[0, 260])  # clear of a's saved box, but not of the box the frontend draws
    assert min_size(a)[1] > 260 and overlaps(box(a), box(b))
    assert min_size(a)[0] > 340  # "InsetGAN Face/Body Optimizer (HumanGen)" + badge does not fit in 340 px
