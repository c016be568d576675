"""Write `workflows/<name>.jpg`, the card picture ComfyUI's template browser shows for `workflows/<name>.json`.

    python tools/thumbnails.py [workflows/x.json ...]     (default: every UI workflow)

- A workflow that needs no model files is run through the headless runner on the bundled assets
  (`workflows/assets`), and its card shows the real input beside the real output.
- A workflow that needs model files cannot be run here (HumanGen ships no weights): its card is a drawing of its
  node graph, labelled "Node graph (illustration)", with the model files it needs.

Cards are 512x512 JPEGs (the browser crops cards to a square and prints the title under the card, with a "Node
graph" badge over the top-left corner: the pictures carry no title and keep that corner free).
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile

from PIL import Image, ImageDraw, ImageFont

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 512
BACKGROUND = (32, 32, 36)
NODE = (53, 53, 58)
TITLE = (34, 34, 38)
TEXT = (230, 230, 230)
MUTED = (160, 160, 170)
LINK_COLOURS = {"IMAGE": (100, 181, 246), "MASK": (129, 199, 132), "POSE_KEYPOINT": (255, 167, 38),
                "UPSCALE_MODEL": (186, 104, 200), "LATENT": (255, 128, 171)}
HUMANGEN_LINK = (240, 200, 80)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _pack():
    """The checkout as the package `humangen` (as ComfyUI imports it), for display names and the model table."""
    import importlib.util
    if "humangen" not in sys.modules:
        spec = importlib.util.spec_from_file_location("humangen", os.path.join(ROOT, "__init__.py"),
                                                      submodule_search_locations=[ROOT])
        module = importlib.util.module_from_spec(spec)
        sys.modules["humangen"] = module
        spec.loader.exec_module(module)
    return sys.modules["humangen"]


def _fit(im: Image.Image, w: int, h: int) -> Image.Image:
    im = im.convert("RGB")
    scale = min(w / im.width, h / im.height)
    return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)


def real_output_card(name: str, inputs: list[str], outputs: list[str]) -> Image.Image:
    """Input(s) | arrow | output(s), each fitted into its half, with the workflow's name."""
    card = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(card)
    half = (SIZE - 36) // 2
    top, height = 60, SIZE - 100
    for col, paths in ((0, inputs), (1, outputs)):
        x0 = 12 + col * (half + 12)
        ims = [_fit(Image.open(p), half, height // len(paths)) for p in paths]
        y = top + (height - sum(i.height for i in ims)) // 2
        for im in ims:
            card.paste(im, (x0 + (half - im.width) // 2, y))
            y += im.height
    draw.text((12 + half // 2, SIZE - 22), "input", fill=MUTED, font=_font(20), anchor="mm")
    draw.text((SIZE - 12 - half // 2, SIZE - 22), "output (real run)", fill=MUTED, font=_font(20), anchor="mm")
    return card


def graph_card(name: str, ui: dict, needs: list[str]) -> Image.Image:
    """The node graph drawn from the workflow's own positions and links, labelled as an illustration."""
    pack = _pack()
    titles = dict(pack.NODE_DISPLAY_NAME_MAPPINGS)
    core = {"LoadImage": "Load Image", "SaveImage": "Save Image", "PreviewImage": "Preview Image",
            "ImageScale": "Upscale Image"}
    nodes = {n["id"]: n for n in ui["nodes"]}
    x0 = min(n["pos"][0] for n in nodes.values())
    y0 = min(n["pos"][1] - 30 for n in nodes.values())
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes.values())
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes.values())
    top, bottom = 64, 150  # the browser's badge; caption with the model files
    area_w, area_h = SIZE - 24, SIZE - top - bottom
    s = min(area_w / (x1 - x0), area_h / (y1 - y0))
    ox = 12 + (area_w - (x1 - x0) * s) / 2
    oy = top + (area_h - (y1 - y0) * s) / 2

    def at(x, y):
        return ox + (x - x0) * s, oy + (y - y0) * s

    card = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(card)
    for link in ui["links"]:
        lid, src, src_slot, dst, dst_slot, kind = link[:6]
        a, b = nodes[src], nodes[dst]
        start = at(a["pos"][0] + a["size"][0], a["pos"][1] + 14 + 20 * src_slot)
        dst_slots = [i for i in b.get("inputs") or [] if "widget" not in i]
        slot = next((k for k, i in enumerate(dst_slots) if i.get("link") == lid), dst_slot)
        end = at(b["pos"][0], b["pos"][1] + 14 + 20 * slot)
        colour = LINK_COLOURS.get(kind, HUMANGEN_LINK if str(kind).startswith("HUMANGEN") else (200, 200, 200))
        mid = (start[0] + end[0]) / 2
        points = [_bezier(start, (mid, start[1]), (mid, end[1]), end, t / 20) for t in range(21)]
        draw.line(points, fill=colour, width=max(1, round(3 * s)) + 1)
    font = _font(max(11, min(18, round(15 * s * 1.8))))
    for n in nodes.values():
        (x, y), (w, h) = at(*n["pos"]), (n["size"][0] * s, n["size"][1] * s)
        t = max(6, 30 * s)
        draw.rounded_rectangle((x, y - t, x + w, y + h), radius=max(2, round(8 * s)), fill=NODE,
                               outline=(90, 90, 96))
        draw.rectangle((x + 1, y - t + 1, x + w - 1, y), fill=TITLE)
        title = n.get("title") or titles.get(n["type"]) or core.get(n["type"], n["type"])
        title = title.replace(" (HumanGen)", "")
        while title and draw.textlength(title, font=font) > w - 8:
            title = title[:-2] + "…" if len(title) > 2 else ""
        draw.text((x + 4, y - t / 2), title, fill=TEXT, font=font, anchor="lm")
    cap_y = SIZE - bottom + 12
    draw.text((12, cap_y), "Illustration of the graph, not an output.", fill=(255, 200, 120), font=_font(20))
    lines = _wrap(draw, "Needs model files: " + ", ".join(needs), _font(18), SIZE - 24)
    for i, line in enumerate(lines[:5]):
        draw.text((12, cap_y + 30 + 22 * i), line, fill=TEXT, font=_font(18))
    return card


def _bezier(p0, p1, p2, p3, t):
    u = 1 - t
    return (u ** 3 * p0[0] + 3 * u * u * t * p1[0] + 3 * u * t * t * p2[0] + t ** 3 * p3[0],
            u ** 3 * p0[1] + 3 * u * u * t * p1[1] + 3 * u * t * t * p2[1] + t ** 3 * p3[1])


def _wrap(draw, text, font, width):
    lines, line = [], ""
    for word in text.split(" "):
        trial = (line + " " + word).strip()
        if draw.textlength(trial, font=font) <= width:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + [line] if line else lines


def _run(workflow: str, out: str) -> list[str]:
    subprocess.run([sys.executable, ROOT, "run", workflow, "--input-dir", os.path.join(ROOT, "workflows", "assets"),
                    "--out", out, "--quiet"], check=True)
    return sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".png"))


def make(path: str) -> str:
    name = os.path.splitext(os.path.basename(path))[0]
    with open(path, encoding="utf-8") as f:
        ui = json.load(f)
    models = ui.get("models") or []
    if models:
        card = graph_card(name, ui, [m["name"] for m in models])
    else:
        inputs = [os.path.join(ROOT, "workflows", "assets", n["widgets_values"][0])
                  for n in ui["nodes"] if n["type"] == "LoadImage"]
        with tempfile.TemporaryDirectory() as out:
            card = real_output_card(name, inputs, _run(path, out))
    target = os.path.splitext(path)[0] + ".jpg"
    card.save(target, "JPEG", quality=85, optimize=True)
    return target


if __name__ == "__main__":
    for wf in sys.argv[1:] or sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json"))):
        print(make(wf))
