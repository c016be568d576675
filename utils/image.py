"""The one place for image layout conversions.

ComfyUI IMAGE: float32 [B, H, W, C] in [0, 1], C = 3 (RGB). MASK: float32 [B, H, W] (or [H, W]) in [0, 1].
Networks (GANs, VAEs): float [B, C, H, W] in [-1, 1].
NVIDIA's uint8 convention for generator output: `clamp(x * 127.5 + 128, 0, 255)` truncated to uint8.
"""
from __future__ import annotations

import numpy as np


def comfy_to_nchw(image, *, signed: bool = True):
    """IMAGE [B,H,W,C] in [0,1] -> [B,C,H,W] in [-1,1] (signed) or [0,1]."""
    x = image.movedim(-1, 1)
    return x * 2.0 - 1.0 if signed else x


def nchw_to_comfy(x, *, signed: bool = True):
    """[B,C,H,W] in [-1,1] (signed) or [0,1] -> IMAGE [B,H,W,C] in [0,1], float32 on CPU, clamped."""
    if signed:
        x = (x + 1.0) * 0.5
    return x.detach().float().clamp(0.0, 1.0).movedim(1, -1).cpu().contiguous()


def gan_to_uint8(x):
    """Generator output [B,C,H,W] (~[-1,1]) -> uint8 [B,H,W,C] with NVIDIA's rounding: clamp(x*127.5+128)."""
    import torch
    return (x.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).movedim(1, -1).cpu()


def gan_to_comfy(x):
    """Generator output -> IMAGE, exactly the values NVIDIA's scripts would save as PNG (uint8 / 255)."""
    return gan_to_uint8(x).float() / 255.0


def comfy_to_uint8(image) -> np.ndarray:
    """IMAGE [B,H,W,C] or [H,W,C] in [0,1] -> numpy uint8, rounded to nearest."""
    arr = image.detach().cpu().float().clamp(0, 1).numpy()
    return np.round(arr * 255.0).astype(np.uint8)


def uint8_to_comfy(arr: np.ndarray):
    """numpy uint8 [H,W,C] or [B,H,W,C] (C = 1, 3 or 4; alpha dropped) -> IMAGE float32 [B,H,W,3]."""
    import torch
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim == 3:
        a = a[None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    a = a[..., :3]
    return torch.from_numpy(np.ascontiguousarray(a).astype(np.float32) / 255.0)


def pil_rgb(img):
    """A PIL image of any mode as 8-bit RGB. 16- and 32-bit integer pixels are scaled by 1/255 as ComfyUI's LoadImage
    scales mode "I" (PIL's plain RGB conversion would clip them, turning a dark 16-bit image white), float pixels
    ("F", 0..1) by 255."""
    if img.mode.startswith("I;16"):
        img = img.convert("I")
    if img.mode == "I":
        img = img.point(lambda v: v * (1 / 255))
    elif img.mode == "F":
        img = img.point(lambda v: v * 255)
    return img.convert("RGB")


def pil_to_comfy(img):
    """PIL image -> IMAGE [1,H,W,3]."""
    return uint8_to_comfy(np.asarray(pil_rgb(img)))


def comfy_to_pil(image, index: int = 0):
    """IMAGE -> PIL RGB image of batch item `index`."""
    from PIL import Image
    arr = comfy_to_uint8(image[index] if image.ndim == 4 else image)
    return Image.fromarray(arr)


def mask_to_batch(mask):
    """MASK [H,W] or [B,H,W] (or [B,1,H,W]) -> [B,H,W] float32."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim == 4:
        mask = mask[:, 0]
    return mask.float()


def check_mask(mask, node: str, batch: int | None = None, input_name: str = "mask"):
    """Validate a MASK input -> float [B,H,W] (a [H,W] or [B,1,H,W] mask is reshaped): pixels on both sides and a
    batch of 1 (shared) or `batch` (one per image). Raises NodeInputError naming node and input. (NaN and inf are
    refused for every tensor input by the node guard.)"""
    from .errors import NodeInputError
    m = mask_to_batch(mask) if hasattr(mask, "ndim") else None
    if m is None or m.ndim != 3 or 0 in m.shape:
        shape = tuple(getattr(mask, "shape", ()))
        raise NodeInputError(node, input_name, f"expected a MASK [batch, height, width] with pixels, got shape "
                             f"{shape}.", fix="connect the mask that came with this image (LoadImage, a mask editor).")
    if batch is not None and m.shape[0] not in (1, batch):
        raise NodeInputError(node, input_name, f"mask batch {m.shape[0]} does not match the image batch {batch}.",
                             fix="use one mask for all images or one per image.")
    return m


def check_image(image, node: str, input_name: str = "image"):
    """Validate an IMAGE input and return it; raises NodeInputError naming node and input."""
    from .errors import NodeInputError
    if not hasattr(image, "shape") or image.ndim != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(getattr(image, "shape", ()))
        raise NodeInputError(node, input_name, f"expected an IMAGE [batch, height, width, 3], got shape {shape}.",
                             fix="connect an IMAGE output (LoadImage, a sampler) to this input.")
    if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise NodeInputError(node, input_name, f"the image is empty (shape {tuple(image.shape)}).")
    return image[..., :3]
