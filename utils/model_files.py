"""The one table of model files HumanGen knows: which folder each goes in, a direct link to the file and its
licence, and which files a workflow needs.

Everything that tells a user about model files reads this module:
- the runner checks `needed_files(prompt)` before it starts (any workflow, UI or API format, shipped or not);
- a node that cannot find its file raises `utils.host.missing_model_error` (from `model_path` / `require_files`),
  built from `describe` and `still_needed` here;
- the ComfyUI frontend's missing-models panel reads the `models` list (`name`, `url`, `directory`) of a UI
  workflow: for the shipped workflows that list is `frontend_models(prompt)`, written by
  `python . models --write workflows/<name>.json` (the runner) and checked by a test, so it cannot drift.

A file is found when `<model folder>/<name>` or `<model folder>/<alternative>` exists (the documented layouts).
No ComfyUI or torch import here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable

from .limits import plain_int
from .paths import PathOutsideFolderError, confine


@dataclass(frozen=True)
class ModelFile:
    folder: str  # HumanGen / ComfyUI model folder name (the frontend's `directory`)
    name: str  # path inside the folder, exactly as the loader's COMBO lists it
    url: str  # a link to the file itself (not a repository's front page)
    license: str
    how: str = ""  # what else to do when the link alone is not enough (log in, a folder, rename)
    direct: bool = True  # False: `url` is the closest official link (a login page's download, a folder)

    @property
    def alternatives(self) -> tuple[str, ...]:
        return alternatives(self.folder, self.name)

    @property
    def places(self) -> tuple[str, ...]:
        return (self.name, *self.alternatives)


# Other documented places of a file inside its folder: StyleGAN-Human's latent_direction/ copied as a folder rather
# than its contents, smplx.create's models/smplx/smplx/ layout; channel statistics as .pkl instead of .csv.
_PREFIXES = {"stylegan_directions": "latent_direction/", "smplx": "smplx/"}


def alternatives(folder: str, name: str) -> tuple[str, ...]:
    names = [name] + ([name[:-4] + ".pkl"] if name.endswith("/statis.csv") else [])
    prefix = _PREFIXES.get(folder)
    out = names[1:] + ([prefix + n for n in names] if prefix else [])
    return tuple(out)


_SGH_LICENSE = "StyleGAN-Human: non-commercial research use only (NVIDIA Source Code License-NC, SHHQ terms)"
_SGH_RAW = "https://raw.githubusercontent.com/stylegan-human/StyleGAN-Human/main/latent_direction/"


def _drive(file_id: str) -> str:
    return f"https://drive.google.com/uc?export=download&id={file_id}"


def _direction(path: str) -> ModelFile:
    # StyleGAN-Human's latent_direction/: its contents, or the folder itself, go in models/stylegan_directions
    return ModelFile("stylegan_directions", path, _SGH_RAW + path, _SGH_LICENSE)


STYLESPACE_LAYERS = range(16)  # StyleGAN-Human ships style_vect_mean_0..15 per attribute
STYLESPACE_STATISTICS = {"upper_length": (5,), "bottom_length": (3, 4, 5)}  # ss_statics it ships

KNOWN_FILES: tuple[ModelFile, ...] = (
    ModelFile("stylegan", "stylegan_human_v2_1024.pkl", _drive("1FlAb1rYa0r_--Zj_ML8e6shmaF28hQb5"), _SGH_LICENSE),
    ModelFile("stylegan", "stylegan_human_v2_512.pkl", _drive("1dlFEHbu-WzQWJl7nBBZYcTyo000H9hVm"), _SGH_LICENSE),
    ModelFile("stylegan", "stylegan_human_v3_512.pkl", _drive("1_274jk_N6WSCkKWeu7hjHycqGvbuOFf5"), _SGH_LICENSE),
    ModelFile("stylegan", "ffhq.pkl", _drive("125OG7SMkXI-Kf2aqiwLLHyCvSW-gZk3M"),
              "NVIDIA Source Code License-NC (StyleGAN2 FFHQ 1024, as linked by StyleGAN-Human's InsetGAN demo)"),
    *(_direction(f"sefa/{a}.pt") for a in ("upper_length", "bottom_length")),
    *(_direction(f"ss/{a}/style_vect_mean_{i}.pkl") for a in STYLESPACE_STATISTICS for i in STYLESPACE_LAYERS),
    *(_direction(f"ss_statics/{a}_statis/{i}/statis.csv") for a, ls in STYLESPACE_STATISTICS.items() for i in ls),
    ModelFile("lpips", "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
              "BSD-3-Clause (torchvision)"),
    ModelFile("lpips", "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
              "BSD-3-Clause (torchvision)"),
    ModelFile("unitedhuman", "network-snapshot-v1.pkl", _drive("1sgtMRWZJ1v4rVzQUaMNeZ8oGv01CyHqm"),
              "non-commercial research use only (UnitedHuman has no licence file; its code derives from Adobe's "
              "anyres-gan and NVIDIA StyleGAN3, both non-commercial)"),
    ModelFile("humansd", "humansd-v1.ckpt",
              "https://drive.google.com/drive/folders/1NLQAlF7i0zjEpd-XY0EcVw9iXP5bB5BJ",
              "CreativeML Open RAIL++-M (derived from Stable Diffusion 2.1; HumanSD code Apache-2.0)",
              how="the authors publish it only in this Google Drive folder: download the file humansd-v1.ckpt "
                  "from it", direct=False),
    *(ModelFile("smplx", f"SMPLX_{g}.npz", "https://download.is.tue.mpg.de/download.php?domain=smplx"
                "&sfile=models_smplx_v1_1.zip",
                "SMPL-X Model License (non-commercial research; registration required; no redistribution)",
                how="register and log in at https://smpl-x.is.tue.mpg.de first; the zip holds "
                    f"models/smplx/SMPLX_{g}.npz (use the .npz, not the .pkl)",
                direct=False) for g in ("NEUTRAL", "MALE", "FEMALE")),
    ModelFile("parts2whole", "Parts2Whole", "https://huggingface.co/huanngzh/Parts2Whole/tree/main",
              "Apache-2.0 weights tag (code MIT); derived from Stable Diffusion 1.5 (CreativeML OpenRAIL-M) and CLIP",
              how="a whole diffusers-format folder, not one file: `git clone https://huggingface.co/huanngzh/"
                  "Parts2Whole` inside the parts2whole model folder", direct=False),
    ModelFile("segformer", "segformer_b2_clothes", "https://huggingface.co/mattmdjaga/segformer_b2_clothes/tree/main",
              "MIT (model card)", how="a transformers folder (config.json + model.safetensors): `git clone "
              "https://huggingface.co/mattmdjaga/segformer_b2_clothes` inside the segformer model folder",
              direct=False),
    ModelFile("upscale_models", "RealESRGAN_x4plus.pth",
              "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth", "BSD-3-Clause"),
    ModelFile("face_restore", "GFPGANv1.4.pth",
              "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth",
              "Apache-2.0 (GFPGAN; check the model's own terms)"),
)

_BY_PLACE = {(f.folder, p): f for f in KNOWN_FILES for p in f.places}


def lookup(folder: str, name: str) -> ModelFile | None:
    return _BY_PLACE.get((folder, (name or "").replace("\\", "/")))


# ---- which files a workflow needs ---------------------------------------------------------------------------------
# (class_type, input) -> model folder, for inputs whose value is a file (or folder) name in that folder
FILE_INPUTS: dict[tuple[str, str], str] = {
    ("HumanGenStyleGANLoader", "model_name"): "stylegan",
    ("HumanGenLoadDirections", "file"): "stylegan_directions",
    ("HumanGenUnitedHumanLoader", "model_name"): "unitedhuman",
    ("HumanGenHumanSDLoader", "ckpt_name"): "humansd",
    ("HumanGenHumanSDConvert", "ckpt_name"): "humansd",
    ("HumanGenParts2WholeLoader", "model_name"): "parts2whole",
    ("HumanGenPartsFromSegmentation", "segformer"): "segformer",
    ("HumanGenPoseDetect", "mmpose_checkpoint"): "mmpose",
    ("HumanGenUpscaleModelLoader", "model_name"): "upscale_models",
    ("HumanGenFaceRefineUpscale", "face_model_name"): "face_restore",
    ("UpscaleModelLoader", "model_name"): "upscale_models",  # the core loader: same folder
}
LPIPS_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
# InsetGAN's lpips_net "auto" follows the schedule (= models.insetgan.SCHEDULES[...].lpips_net; a test checks it)
INSETGAN_AUTO_LPIPS = {"stylegan-human": "alex", "official-loose": "vgg", "official-inset": "vgg"}


@dataclass(frozen=True)
class Need:
    folder: str
    name: str
    node_id: str
    class_type: str
    input_name: str
    known: ModelFile | None = field(default=None, compare=False)

    @property
    def places(self) -> tuple[str, ...]:
        return (self.name, *alternatives(self.folder, self.name))


def _placeholder(value: Any) -> bool:
    # "(none)", "(no files in models/x)": a COMBO's stand-in when nothing is installed, not a file
    return not isinstance(value, str) or not value or value.startswith("(")


def _needs_of_node(ctype: str, inputs: dict) -> Iterable[tuple[str, str, str]]:
    """(folder, name, input) for one API node; inputs that are links are skipped (not known before the run)."""
    def value(name, default=None):
        v = inputs.get(name, default)
        return None if isinstance(v, list) else v  # a link

    for (node_type, input_name), folder in FILE_INPUTS.items():
        if node_type == ctype and not _placeholder(value(input_name)):
            if ctype == "HumanGenPoseDetect" and not str(value("backend", "")).startswith("mmpose"):
                continue
            if ctype == "HumanGenFaceRefineUpscale" and isinstance(inputs.get("face_model"), list):
                continue  # a linked face_model replaces the file
            yield folder, value(input_name), input_name
    if ctype in ("HumanGenProjectImage", "HumanGenPTI", "HumanGenInsetGAN"):
        net = value("lpips_net", "vgg" if ctype == "HumanGenProjectImage" else "alex")
        if net == "auto":
            net = INSETGAN_AUTO_LPIPS.get(value("schedule", "stylegan-human"), "alex")
        if net in LPIPS_FILES:
            yield "lpips", LPIPS_FILES[net], "lpips_net"
    elif ctype == "HumanGenSMPLXLoader" and isinstance(value("gender", "neutral"), str):
        yield "smplx", f"SMPLX_{value('gender', 'neutral').upper()}.npz", "gender"
    elif ctype == "HumanGenStyleSpaceEdit" and not _placeholder(value("attribute")):
        attr = value("attribute")
        if value("method", "all_layers") == "one_layer":
            layer = int(value("layer", 5))
            yield "stylegan_directions", f"ss/{attr}/style_vect_mean_{layer}.pkl", "layer"
            yield "stylegan_directions", f"ss_statics/{attr}_statis/{layer}/statis.csv", "layer"
        else:
            for i in STYLESPACE_LAYERS:
                yield "stylegan_directions", f"ss/{attr}/style_vect_mean_{i}.pkl", "attribute"


def needed_files(prompt: dict) -> list[Need]:
    """Every model file an API prompt needs, once each, in node-id order (the same for a UI workflow and its API
    twin, whatever order the nodes are stored in)."""
    def order(nid):
        text = str(nid)
        number = plain_int(text)
        return (0, number, "") if number is not None else (1, 0, text)

    out: dict[tuple[str, str], Need] = {}
    for nid, node in sorted((prompt or {}).items(), key=lambda item: order(item[0])):
        if not isinstance(node, dict) or str(nid).startswith("_"):
            continue
        ctype = node.get("class_type", "")
        for folder, name, input_name in _needs_of_node(ctype, node.get("inputs") or {}):
            name = name.replace("\\", "/")
            out.setdefault((folder, name), Need(folder, name, str(nid), ctype, input_name, lookup(folder, name)))
    return list(out.values())


def find(need: Need | ModelFile, dirs: list[str]) -> str | None:
    """The path where the file is, or None (names that leave the folder are never found)."""
    for root in dirs:
        for place in need.places:
            try:
                path = confine(root, place)
            except PathOutsideFolderError:
                continue
            if path.exists():
                return str(path)
    return None


def frontend_models(prompt: dict) -> list[dict]:
    """The workflow's `models` list as ComfyUI's frontend reads it (name, url, directory): known files only."""
    return [{"name": n.name, "url": n.known.url, "directory": n.folder} for n in needed_files(prompt) if n.known]


# ---- messages ---------------------------------------------------------------------------------------------------
def describe(folder: str, name: str, dirs: list[str]) -> str:
    """'<name>' goes in <folder dir>: download <url> (licence ...; how ...). One line per file."""
    where = dirs[0] if dirs else f"models/{folder}"
    known = lookup(folder, name)
    text = f"'{name}' -> put it in the '{folder}' model folder ({where})"
    if known is None:
        return text + "; HumanGen has no download link for this file: use the one from where you got the workflow"
    text += f"; download: {known.url}"
    if known.how:
        text += f" ({known.how})"
    if known.alternatives:
        text += f"; also found as {' or '.join(known.alternatives)} inside that folder"
    return text + f"; licence: {known.license}"


def missing(prompt: dict, dirs_of) -> list[Need]:
    """The needs of `prompt` whose file is not in its folder; `dirs_of(folder)` gives the folder's directories."""
    return [n for n in needed_files(prompt) if find(n, _dirs(dirs_of, n.folder)) is None]


def _dirs(dirs_of, folder: str) -> list[str]:
    try:
        return list(dirs_of(folder))
    except KeyError:
        return [os.path.join(os.environ.get("HUMANGEN_MODELS_DIR") or "models", folder)]


def still_needed(prompt: dict | None, dirs_of, *, besides: tuple[str, str]) -> str:
    """' This workflow also still needs: ...' for the other missing files of `prompt`, or ''."""
    if not isinstance(prompt, dict):
        return ""
    others = [n for n in missing(prompt, dirs_of) if (n.folder, n.name) != besides]
    if not others:
        return " Nothing else this workflow needs is missing."
    return " This workflow also still needs: " + "; ".join(
        describe(n.folder, n.name, _dirs(dirs_of, n.folder)) for n in others) + "."
