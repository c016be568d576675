"""PNGs that carry their StyleGAN latent: a `humangen_latent` text chunk (JSON, base64 float32) plus the
generator id, ComfyUI's `prompt`/`workflow` chunks when given. Files are written exclusively (`utils.paths`)."""
from __future__ import annotations

import json
import os
import re

LATENT_KEY = "humangen_latent"
GENERATOR_KEY = "humangen_generator"
SPACES = ("z", "w", "w+")  # of a HUMANGEN_LATENT: {"space", "tensor" [N, w_dim] or [N, num_ws, w_dim], ...}


def check_latent_structure(latent) -> None:
    """A HUMANGEN_LATENT dict: a known space, a non-empty tensor of that space's rank, finite. ValueError otherwise
    (`models.gan_latents.check_latent` adds the generator's shape)."""
    import torch
    if not isinstance(latent, dict) or latent.get("space") not in SPACES or not isinstance(latent.get("tensor"),
                                                                                          torch.Tensor):
        raise ValueError("expected a HUMANGEN_LATENT (dict with space z/w/w+ and tensor)")
    ndim = {"z": 2, "w": 2, "w+": 3}[latent["space"]]
    if latent["tensor"].ndim != ndim or latent["tensor"].shape[0] == 0:
        raise ValueError(f"a {latent['space']} latent must be a non-empty tensor with {ndim} dimensions, got shape "
                         f"{tuple(latent['tensor'].shape)}")
    if not bool(torch.isfinite(latent["tensor"]).all()):
        raise ValueError("the latent holds NaN or infinite values (refused: they render as black images)")


def latent_to_json(latent: dict, index: int | None = None) -> str:
    """Serialise a latent (or item `index` of it) as JSON: space, generator_id, shape, base64 float32 data."""
    import base64
    t = latent["tensor"] if index is None else latent["tensor"][index:index + 1]
    z = latent.get("z")
    if z is not None and index is not None:
        z = z[index:index + 1] if z.shape[0] == latent["tensor"].shape[0] else None
    tr = dict(latent.get("truncation") or {})
    center = tr.pop("center", None)

    def enc(x):
        return None if x is None else {"shape": list(x.shape), "dtype": "float32",
                                       "data": base64.b64encode(x.float().contiguous().numpy().tobytes()).decode()}
    seeds = latent.get("seeds")
    if seeds is not None and index is not None and len(seeds) == latent["tensor"].shape[0]:
        seeds = [seeds[index]]
    return json.dumps({"version": 1, "space": latent["space"], "generator_id": latent.get("generator_id"),
                       "num_ws": latent.get("num_ws"), "seeds": seeds, "tensor": enc(t), "z": enc(z),
                       "truncation": {**tr, "center": enc(center)}})


def latent_from_json(text: str) -> dict:
    """The latent `latent_to_json` wrote (bounded JSON; malformed text raises ValueError, KeyError or TypeError)."""
    import base64

    import numpy as np
    import torch

    from .limits import parse_json
    d = parse_json(text, "stored latent")

    def dec(e):
        if e is None:
            return None
        arr = np.frombuffer(base64.b64decode(e["data"]), dtype=np.float32).reshape(e["shape"])
        return torch.from_numpy(arr.copy())
    tr = dict(d.get("truncation") or {})
    tr["center"] = dec(tr.get("center"))
    seeds = d.get("seeds")
    return {"space": d["space"], "tensor": dec(d["tensor"]), "generator_id": d.get("generator_id"),
            "num_ws": d.get("num_ws"), "seeds": seeds, "labels": [str(s) for s in seeds] if seeds else None,
            "z": dec(d.get("z")), "truncation": tr}


def _next_counter(folder: str, base: str) -> int:
    pat = re.compile(re.escape(base) + r"_(\d{5,})_\.png$")
    nums = [int(m.group(1)) for f in (os.listdir(folder) if os.path.isdir(folder) else []) if (m := pat.match(f))]
    return max(nums, default=0) + 1


def save_pngs_with_latent(images, latent: dict, output_dir: str, prefix: str, prompt=None, extra_pnginfo=None, *,
                          node: str = "HumanGenSaveImageWithLatent"):
    """Save IMAGE [B,H,W,3] as PNGs; image i gets latent item i (the whole latent if the counts differ).
    Returns ComfyUI ui entries [{'filename', 'subfolder', 'type': 'output'}].

    The prefix is confined to `output_dir` (subfolders allowed, '..' and absolute paths refused); each file is
    written exclusively under the next free counter (`utils.paths.write_next_free`), which keeps counting past
    99999, so no existing file is ever replaced and none is left half-written. Errors are NodeInputErrors naming
    the input at fault."""
    from PIL.PngImagePlugin import PngInfo

    from .errors import NodeInputError
    from .image import check_image, comfy_to_uint8
    from .limits import check_finite
    from .paths import output_target, write_next_free
    try:
        check_latent_structure(latent)
    except ValueError as exc:
        raise NodeInputError(node, "latent", str(exc), fix="connect a HUMANGEN_LATENT output.") from None
    check_finite(latent["tensor"], node, "latent", "latent")
    images = check_image(images, node, "images")
    folder_path, base = output_target(output_dir, prefix, node=node)
    folder = str(folder_path)
    root = os.path.realpath(output_dir)
    n_lat = latent["tensor"].shape[0]
    arr = comfy_to_uint8(images)
    counter = _next_counter(folder, base)
    results = []
    for i in range(arr.shape[0]):
        info = PngInfo()
        info.add_text(LATENT_KEY, latent_to_json(latent, i if n_lat == arr.shape[0] else None))
        info.add_text(GENERATOR_KEY, str(latent.get("generator_id")))
        if prompt is not None:
            info.add_text("prompt", json.dumps(prompt))
        for k, v in (extra_pnginfo or {}).items():
            info.add_text(k, json.dumps(v))

        def write(tmp, image=arr[i], info=info):
            from PIL import Image
            Image.fromarray(image).save(tmp, format="PNG", pnginfo=info, compress_level=4)

        path = write_next_free(folder, lambda n: f"{base}_{n:05}_.png", counter, data=write, node=node)
        counter = int(path.name[len(base) + 1:-len("_.png")]) + 1
        sub = os.path.relpath(folder, root).replace(os.sep, "/")
        results.append({"filename": path.name, "subfolder": "" if sub == "." else sub, "type": "output"})
    return results


def read_png_latent(path: str, *, node: str = "HumanGenLoadLatentFromImage", input_name: str = "image"):
    """-> (latent dict, IMAGE [1,H,W,3]). NodeInputError if the PNG has no HumanGen latent, a damaged one, one
    holding NaN/inf, or a size over the pack's image limit (checked before the pixels are decoded)."""
    from PIL import Image, UnidentifiedImageError

    from .errors import LimitExceededError, NodeInputError
    from .limits import check_image_size
    name = os.path.basename(path)
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as exc:  # declared size far over PIL's pixel limit (checked at open)
        raise LimitExceededError(node, input_name, f"{name}: {str(exc)[:200]}",
                                 fix="use a smaller image.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, ValueError) as exc:  # ValueError: an oversized
        raise NodeInputError(node, input_name, f"{name} is not a readable PNG ({str(exc)[:200]}).",  # text chunk
                             fix="use a PNG saved by HumanGen Save Image With Latent.") from None
    with im:
        check_image_size(im.size[0], im.size[1], node, input_name)
        try:
            return _latent_and_image(im, name, node, input_name)
        except (OSError, SyntaxError, EOFError, ValueError) as exc:
            if isinstance(exc, NodeInputError):
                raise
            raise NodeInputError(node, input_name, f"{name}: the PNG is damaged or truncated ({exc}).",
                                 fix="save or upload the image again.") from None


def _latent_and_image(im, name: str, node: str, input_name: str):
    from .errors import NodeInputError
    from .image import pil_to_comfy
    from .limits import check_finite
    text = getattr(im, "text", {}) or {}
    if LATENT_KEY not in text:
        raise NodeInputError(node, input_name, f"{name} carries no HumanGen latent (no '{LATENT_KEY}' PNG "
                             f"chunk).", fix="use a PNG saved by HumanGen Save Image With Latent.")
    try:
        latent = latent_from_json(text[LATENT_KEY])
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise NodeInputError(node, input_name, f"{name}: the stored latent is damaged ({type(exc).__name__}: "
                             f"{str(exc)[:200]}).", fix="save the image again.") from None
    try:
        check_latent_structure(latent)
    except ValueError as exc:
        raise NodeInputError(node, input_name, f"{name}: the stored latent is not usable ({exc}).",
                             fix="use a PNG saved by HumanGen Save Image With Latent.") from None
    for key in ("tensor", "z"):
        check_finite(latent.get(key), node, input_name, f"stored latent ({name})")
    check_finite((latent.get("truncation") or {}), node, input_name, f"stored truncation ({name})")
    return latent, pil_to_comfy(im)
