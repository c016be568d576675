"""Core-compatible `LoadImage`, `SaveImage`, `PreviewImage` and `ImageScale` for the headless runner.

Same node ids, inputs, outputs and behaviour as current ComfyUI core (nodes.py of v0.33.0: SaveImage and
PreviewImage pass their images on through an IMAGE output named `images`; v0.8.0 had none, so workflows of either
version run; tests/data/object_info holds both hosts' definitions), written for the runner: the
engine registers them only when the ComfyUI host is absent, and they are never part of the pack's
NODE_CLASS_MAPPINGS (inside ComfyUI the real core nodes are used). Folders come from `utils.host` (the runner's
`--input-dir` and `--out`). Unlike core, SaveImage never overwrites a file: it numbers like core
(`prefix_00001_.png`, one past the highest existing number) and skips any name that exists, writing each image to
a temporary file that is then linked into place (utils.paths.write_next_free). Every name from the workflow goes
through utils.paths.confine: LoadImage reads only inside its folder, save prefixes stay inside theirs.
"""
from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import random
import time

from ..utils import host
from ..utils.limits import check_batch_pixels, plain_int
from ..utils.paths import check_output_target, output_target, write_next_free

MAX_RESOLUTION = 16384


def annotated_path(name: str) -> str:
    """Path of a LoadImage value (`name`, `name [output]`, ...), confined to its folder (`host.annotated_path`)."""
    return str(host.annotated_path(name, node="LoadImage", input_name="image"))


def _image_files(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    out = []
    for f in os.listdir(folder):
        if os.path.isfile(os.path.join(folder, f)):
            kind = mimetypes.guess_type(f)[0] or ""
            if kind.startswith("image/"):
                out.append(f)
    return sorted(out)


class LoadImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (_image_files(host.input_dir()), {"image_upload": True})}}

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"
    DESCRIPTION = "Loads an image (all frames of the same size as a batch) and its alpha as a mask (1 - alpha)."

    def load_image(self, image):
        from PIL import Image, UnidentifiedImageError

        from ..utils.errors import NodeInputError, first_line
        from ..utils.limits import MAX_CANVAS_SIDE, LimitExceededError
        path = annotated_path(image)
        if not os.path.isfile(path):  # a pipe or a device would block or never end; a folder is no image
            raise NodeInputError("LoadImage", "image", f"{image!r} is not a file in its folder (missing, or a "
                                 "folder, pipe or device).", fix="pick an image file from the input folder.")
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as exc:  # Pillow's own bound, checked from the header at open
            raise LimitExceededError("LoadImage", "image", f"{image!r} declares too many pixels ({exc}).",
                                     fix=f"use an image of at most {MAX_CANVAS_SIDE} pixels a side.") from None
        except UnidentifiedImageError:
            raise NodeInputError("LoadImage", "image", f"{image!r} is not an image (no format Pillow reads).",
                                 fix="pick a PNG, JPEG or WebP file.") from None
        except OSError as exc:  # vanished or unreadable since validation
            raise NodeInputError("LoadImage", "image", f"{image!r} cannot be opened ({first_line(exc)}).",
                                 fix="check that the file is in the input folder and readable.") from None
        with img:
            try:
                return self._frames(img, image)
            except (OSError, SyntaxError, EOFError, ValueError) as exc:  # Pillow's errors for damaged pixel data
                if isinstance(exc, NodeInputError):
                    raise
                raise NodeInputError("LoadImage", "image", f"{image!r} is damaged or truncated ({first_line(exc)}).",
                                     fix="save or upload the image again.") from None

    @staticmethod
    def _frames(img, image):
        import numpy as np
        import torch
        from PIL import ImageOps, ImageSequence

        from ..utils.image import pil_rgb
        from ..utils.limits import MAX_CANVAS_SIDE, MAX_IMAGE_FRAMES, LimitExceededError, check_image_size
        # the header is read, no pixel yet: an untrusted file's declared size and frame count are bounded first
        check_image_size(*img.size, "LoadImage", "image", max_side=MAX_CANVAS_SIDE)
        if getattr(img, "n_frames", 1) > MAX_IMAGE_FRAMES:
            raise LimitExceededError("LoadImage", "image", f"{image!r} has {img.n_frames} frames, more than the limit "
                                     f"of {MAX_IMAGE_FRAMES}.", fix="split the animation into shorter files.")
        frames, masks = [], []
        size = None
        for frame in ImageSequence.Iterator(img):
            frame = ImageOps.exif_transpose(frame)
            rgb = pil_rgb(frame)
            if size is None:
                size = rgb.size
            if rgb.size != size:
                continue
            frames.append(torch.from_numpy(np.asarray(rgb).astype(np.float32) / 255.0)[None])
            if "A" in frame.getbands():
                alpha = np.asarray(frame.getchannel("A")).astype(np.float32) / 255.0
                mask = 1.0 - torch.from_numpy(alpha)
            elif frame.mode == "P" and "transparency" in frame.info:
                alpha = np.asarray(frame.convert("RGBA").getchannel("A")).astype(np.float32) / 255.0
                mask = 1.0 - torch.from_numpy(alpha)
            else:
                mask = torch.zeros((64, 64), dtype=torch.float32)
            masks.append(mask[None])
            if img.format == "MPO":
                break
        if len(frames) > 1:
            return (torch.cat(frames, 0), torch.cat(masks, 0))
        return (frames[0], masks[0])

    @classmethod
    def IS_CHANGED(cls, image):
        digest = hashlib.sha256()
        with open(annotated_path(image), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        try:
            path = annotated_path(image)
        except ValueError as exc:
            return str(exc)
        if not os.path.exists(path):
            return (f"Invalid image file: {image}: no such file in {os.path.dirname(path)} "
                    "(pass --input-dir or copy the image there)")
        if not os.path.isfile(path):  # a pipe or a device would block IS_CHANGED's read forever
            return f"Invalid image file: {image!r} is not a file in its folder (missing, or a folder, pipe or device)"
        return True


def _compute_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    for key, value in (("%width%", width), ("%height%", height), ("%year%", now.tm_year),
                       ("%month%", f"{now.tm_mon:02}"), ("%day%", f"{now.tm_mday:02}"),
                       ("%hour%", f"{now.tm_hour:02}"), ("%minute%", f"{now.tm_min:02}"),
                       ("%second%", f"{now.tm_sec:02}")):
        prefix = prefix.replace(key, str(value))
    return prefix


def _next_counter(folder: str, filename: str) -> int:
    """One past the highest `<filename>_<NNNNN>_...` number in `folder` (core's rule), 1 when none."""
    best = 0
    if os.path.isdir(folder):
        want = os.path.normcase(filename) + "_"
        for f in os.listdir(folder):
            if os.path.normcase(f[: len(want)]) != want:
                continue
            number = plain_int(f[len(want):].split("_")[0])
            if number is not None:
                best = max(best, number)
    return best + 1


class SaveImage:
    def __init__(self):
        self.output_dir = None  # resolved at call time (the runner's --out)
        self.type = "output"
        self.prefix_append = ""
        self.compress_level = 4

    def _folder(self) -> str:
        return self.output_dir or host.output_dir()

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": "The prefix for the file to save. "
                                               "This may include formatting information such as %date:yyyy-MM-dd% "
                                               "or %Empty Latent Image.width% to include values from nodes."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        """The prefix is checked before any node of the job runs (a job with two saves never ends half-written)."""
        if isinstance(filename_prefix, str) and "%" in filename_prefix:
            filename_prefix = _compute_vars(filename_prefix, 1, 1)
        return check_output_target(host.output_dir(), filename_prefix, node=cls.__name__, empty_ok=True)

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        import numpy as np
        from PIL import Image
        from PIL.PngImagePlugin import PngInfo

        prefix = filename_prefix + self.prefix_append
        if "%" in prefix:
            prefix = _compute_vars(prefix, images[0].shape[1], images[0].shape[0])
        # subfolders are fine; `..`, absolute prefixes and symlinks out of the folder are refused
        node = type(self).__name__
        root = self._folder()
        folder_path, filename = output_target(root, prefix, node=node, empty_ok=True)
        folder = str(folder_path)
        subfolder = os.path.relpath(folder, os.path.realpath(root)).replace(os.sep, "/")
        subfolder = "" if subfolder == "." else subfolder
        counter = _next_counter(folder, filename)
        results = []
        for batch_number, image in enumerate(images):
            array = np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8)
            img = Image.fromarray(array)
            metadata = PngInfo()
            if prompt is not None:
                metadata.add_text("prompt", json.dumps(prompt))
            for key, value in (extra_pnginfo or {}).items():
                metadata.add_text(key, json.dumps(value))
            base = filename.replace("%batch_num%", str(batch_number))
            tried = [counter]

            def name_for(n: int, base=base, tried=tried) -> str:
                tried[0] = n
                return f"{base}_{n:05}_.png"  # 5 digits, more past 99999: the counter never wraps

            # written once to a temporary file, then linked to the first free name: never replaces a file, never
            # leaves a half-written one (also when the job is interrupted)
            path = write_next_free(
                folder, name_for, counter, node=node,
                data=lambda tmp, img=img, metadata=metadata: img.save(tmp, format="PNG", pnginfo=metadata,
                                                                      compress_level=self.compress_level))
            results.append({"filename": path.name, "subfolder": subfolder, "type": self.type})
            counter = tried[0] + 1
        return {"ui": {"images": results}, "result": (images,)}


class PreviewImage(SaveImage):
    def __init__(self):
        super().__init__()
        self.type = "temp"
        self.prefix_append = "_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        self.compress_level = 1

    def _folder(self) -> str:
        return host.temp_dir()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    DESCRIPTION = "Preview the images without saving them to the ComfyUI output directory."


def common_upscale(samples, width: int, height: int, method: str, crop: str):
    """[B,C,H,W] -> [B,C,height,width]; `crop="center"` first cuts the source to the target aspect ratio."""
    import torch
    if crop == "center":
        old_w, old_h = samples.shape[-1], samples.shape[-2]
        old_aspect, new_aspect = old_w / old_h, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
        samples = samples[..., y: old_h - y, x: old_w - x]
    if method == "lanczos":
        import numpy as np
        from PIL import Image
        out = []
        for item in samples:
            arr = np.clip(255.0 * item.movedim(0, -1).cpu().numpy(), 0, 255).astype(np.uint8)
            pil = Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr)
            pil = pil.resize((width, height), resample=Image.Resampling.LANCZOS)
            res = torch.from_numpy(np.asarray(pil).astype(np.float32) / 255.0)
            out.append(res[..., None].movedim(-1, 0) if res.ndim == 2 else res.movedim(-1, 0))
        return torch.stack(out).to(samples.device, samples.dtype)
    return torch.nn.functional.interpolate(samples, size=(height, width), mode=method)


class ImageScale:
    upscale_methods = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
    crop_methods = ["disabled", "center"]

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "upscale_method": (cls.upscale_methods,),
                             "width": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                             "height": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                             "crop": (cls.crop_methods,)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"
    DESCRIPTION = "Resizes images to width x height (0 keeps the aspect ratio from the other side)."

    def upscale(self, image, upscale_method, width, height, crop):
        if width == 0 and height == 0:
            return (image,)
        samples = image.movedim(-1, 1)
        given = "height" if width == 0 else "width"  # the input that sets the size when one side follows the aspect
        if width == 0:
            width = max(1, round(samples.shape[3] * height / samples.shape[2]))
        elif height == 0:
            height = max(1, round(samples.shape[2] * width / samples.shape[3]))
        # one side 0 follows the aspect ratio, which can make the other side huge; refused before allocating
        check_batch_pixels(samples.shape[0], width, height, "ImageScale", given)
        return (common_upscale(samples, width, height, upscale_method, crop).movedim(1, -1),)


NODE_CLASS_MAPPINGS = {"LoadImage": LoadImage, "SaveImage": SaveImage, "PreviewImage": PreviewImage,
                       "ImageScale": ImageScale}
