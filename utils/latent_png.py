"""PNGs that carry their StyleGAN latent: a `humangen_latent` text chunk (JSON, base64 float32) plus the
generator id, ComfyUI's `prompt`/`workflow` chunks when given. Files are written to a temp name, then renamed."""
from __future__ import annotations

import json
import os
import re
import tempfile

LATENT_KEY = "humangen_latent"
GENERATOR_KEY = "humangen_generator"


def _next_counter(folder: str, base: str) -> int:
    pat = re.compile(re.escape(base) + r"_(\d{5})_\.png$")
    nums = [int(m.group(1)) for f in (os.listdir(folder) if os.path.isdir(folder) else []) if (m := pat.match(f))]
    return max(nums, default=0) + 1


def save_pngs_with_latent(images, latent: dict, output_dir: str, prefix: str, prompt=None, extra_pnginfo=None):
    """Save IMAGE [B,H,W,3] as PNGs; image i gets latent item i (the whole latent if the counts differ).
    Returns ComfyUI ui entries [{'filename', 'subfolder', 'type': 'output'}]."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from ..models.gan_latents import check_latent, latent_to_json
    from .image import comfy_to_uint8
    check_latent(latent)
    prefix = (prefix or "HumanGen").replace("\\", "/").strip("/")
    full = os.path.normpath(os.path.join(output_dir, prefix))
    if not full.startswith(os.path.normpath(output_dir) + os.sep):
        raise ValueError(f"filename prefix {prefix!r} points outside the output folder")
    folder, base = os.path.dirname(full), os.path.basename(full)
    os.makedirs(folder, exist_ok=True)
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
        name = f"{base}_{counter + i:05}_.png"
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=folder)
        os.close(fd)
        try:
            Image.fromarray(arr[i]).save(tmp, pnginfo=info, compress_level=4)
            os.replace(tmp, os.path.join(folder, name))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        results.append({"filename": name, "subfolder": os.path.relpath(folder, output_dir).replace(os.sep, "/")
                        if folder != os.path.normpath(output_dir) else "", "type": "output"})
    return results


def read_png_latent(path: str):
    """-> (latent dict, IMAGE [1,H,W,3]). Raises ValueError if the PNG has no HumanGen latent."""
    from PIL import Image

    from ..models.gan_latents import latent_from_json
    from .image import pil_to_comfy
    with Image.open(path) as im:
        text = getattr(im, "text", {}) or {}
        if LATENT_KEY not in text:
            raise ValueError(f"{os.path.basename(path)} carries no HumanGen latent (no '{LATENT_KEY}' PNG chunk)")
        try:
            latent = latent_from_json(text[LATENT_KEY])
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{os.path.basename(path)}: the stored latent is damaged ({exc})") from None
        return latent, pil_to_comfy(im)
