"""Upscale an image batch with a spandrel model: precision choice, tiling with OOM back-off, output rescale, masks.

The public entry point is `upscale(desc, image, ...)`; it takes and returns [B, C, H, W] float in [0, 1] and knows
nothing about ComfyUI: progress, interrupt and memory release arrive as callbacks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from .tiled import TileCallback, TilePlan, tiled_apply, with_tile_backoff

log = logging.getLogger("humangen.upscale")

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
RESAMPLE = ("auto", "area", "bicubic", "bilinear")
MASK_MODES = ("resize", "model")


def pick_dtype(desc, device, precision: str = "auto"):
    """The compute dtype for `desc` on `device`.

    auto: fp32 on CPU (fp16/bf16 convolutions are slow there); on CUDA bf16 when the model and the GPU support it
    (fp16's range overflows in some SR nets), else fp16 when the model supports half, else fp32; on MPS fp16 when
    supported. An explicit fp16/bf16 that the model does not support is an error (spandrel marks those archs)."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    half, bf16 = bool(getattr(desc, "supports_half", False)), bool(getattr(desc, "supports_bfloat16", False))
    name = getattr(getattr(desc, "architecture", None), "name", type(desc).__name__)
    if precision == "fp32":
        return torch.float32
    if precision == "fp16":
        if not half:
            raise ValueError(f"{name} does not support fp16 (spandrel: supports_half=False); use bf16 or fp32")
        return torch.float16
    if precision == "bf16":
        if not bf16:
            raise ValueError(f"{name} does not support bf16 (spandrel: supports_bfloat16=False); use fp32")
        return torch.bfloat16
    dev = torch.device(device)
    if dev.type == "cuda":
        if bf16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if half else torch.float32
    if dev.type == "mps" and half:
        return torch.float16
    return torch.float32


def resize(x, size: tuple[int, int], mode: str = "auto"):
    """Resize [B, C, H, W] to `size` (H, W): area when shrinking, bicubic (clamped) when enlarging under 'auto'."""
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode not in RESAMPLE:
        raise ValueError(f"resample must be one of {RESAMPLE}, got {mode!r}")
    if mode == "auto":
        mode = "area" if size[0] <= x.shape[-2] and size[1] <= x.shape[-1] else "bicubic"
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False,
                         antialias=size[0] < x.shape[-2] or size[1] < x.shape[-1]).clamp_(0.0, 1.0)


def output_size(height: int, width: int, out_scale: float) -> tuple[int, int]:
    return max(1, round(height * out_scale)), max(1, round(width * out_scale))


@dataclass
class UpscaleResult:
    image: object           # [B, C, H', W'] float32 in [0, 1]
    mask: object | None     # [B, H', W'] float32 or None
    tile: int               # tile size that finally ran (0 = untiled)
    net_scale: int


def upscale(desc, image, *, tile: int = 512, overlap: int = 32, out_scale: float = 0.0, resample: str = "auto",
            precision: str = "auto", device=None, mask=None, mask_mode: str = "resize", min_tile: int = 64,
            on_tile: TileCallback | None = None, check_interrupt: Callable[[], None] | None = None,
            free_memory: Callable[[], None] | None = None, output_device=None) -> UpscaleResult:
    """Upscale `image` with the spandrel descriptor `desc`.

    Args:
        desc: spandrel ImageModelDescriptor (ComfyUI's UPSCALE_MODEL), any device/dtype; restored afterwards.
        image: [B, 3, H, W] float in [0, 1] (4 channels: the 4th is alpha and travels like `mask`).
        tile, overlap: tile edge and overlap in input pixels; tile 0 = untiled. The tile is halved on OOM down
            to `min_tile`. Models that tile internally (spandrel ModelTiling.INTERNAL) always run untiled.
        out_scale: final size relative to the input (0 = the network's scale); resized with `resample` after.
        precision: auto | fp32 | bf16 | fp16 (see pick_dtype).
        device: compute device (default: where the model already is).
        mask: optional [B, H, W] (ComfyUI MASK) carried to the output geometry: 'resize' interpolates it
            (bilinear, pixel-centre aligned like the network's grid); 'model' runs it through the network as a grey
            image (Real-ESRGAN's alpha option) and averages the channels.
        on_tile, check_interrupt, free_memory: host callbacks (progress per tile, cancel, release memory on OOM).
        output_device: where results are accumulated (default CPU).
    Returns:
        UpscaleResult(image [B, C, H', W'], mask [B, H', W'] or None, tile used, network scale).
    """
    import torch
    import torch.nn.functional as F

    if image.ndim != 4 or image.shape[1] not in (3, 4):
        raise ValueError(f"expected image [B, 3|4, H, W], got {tuple(image.shape)}")
    if desc.input_channels != 3 or desc.output_channels != 3:  # an IMAGE is RGB (alpha is carried beside it)
        raise ValueError(f"{desc.architecture.name} maps {desc.input_channels} channels to {desc.output_channels}; "
                         f"only RGB models (3 channels in and out) can upscale an IMAGE")
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")
    if out_scale < 0:
        raise ValueError(f"out_scale must be >= 0, got {out_scale}")
    rgb = image[:, :3]
    alpha = image[:, 3] if image.shape[1] == 4 else None
    b, _, h, w = rgb.shape
    if mask is not None:
        if mask.ndim == 2:
            mask = mask[None]
        if tuple(mask.shape[-2:]) != (h, w):
            raise ValueError(f"mask {tuple(mask.shape)} does not match the image size {h}x{w}")
        if mask.shape[0] not in (1, b):
            raise ValueError(f"mask batch {mask.shape[0]} does not match the image batch {b}")
        mask = mask.expand(b, h, w)

    scale = int(desc.scale)
    req = getattr(desc, "size_requirements", None)
    align = max(1, int(getattr(req, "multiple_of", 1) or 1))
    internal = str(getattr(getattr(desc, "tiling", None), "name", "")).upper() == "INTERNAL"
    if internal and tile:
        log.info("upscale: %s tiles internally; running untiled", desc.architecture.name)
        tile = 0
    device = torch.device(device) if device is not None else desc.device
    output_device = torch.device(output_device) if output_device is not None else torch.device("cpu")
    dtype = pick_dtype(desc, device, precision)
    prev_device, prev_dtype = desc.device, desc.dtype
    mask_through_model = mask_mode == "model"
    extra = [t for t in (alpha, mask) if t is not None] if mask_through_model else []

    def model_fn(piece):
        return desc(piece.to(device=device, dtype=dtype)).float()

    def run(tile_size: int):
        # the user's overlap as given; after an OOM halving at most half the (smaller) tile
        ov = 0 if not tile_size else overlap if tile_size == tile else min(overlap, tile_size // 2)
        per_pass = len(TilePlan.make(h, w, tile_size, ov, align)) * b
        total = per_pass * (1 + len(extra))
        kw = dict(scale=scale, tile=tile_size, overlap=ov, align=align, on_tile=on_tile, total=total,
                  check_interrupt=check_interrupt, output_device=output_device)
        out = tiled_apply(model_fn, rgb, out_channels=desc.output_channels, **kw)
        side = [tiled_apply(model_fn, t[:, None].expand(b, 3, h, w), out_channels=desc.output_channels,
                            done_before=per_pass * (i + 1), **kw).mean(1).clamp_(0, 1)
                for i, t in enumerate(extra)]
        return out, side

    desc.to(device=device, dtype=dtype)
    try:
        (out, side), used = with_tile_backoff(run, tile, max(h, w), floor=min_tile, on_oom=free_memory)
    finally:
        desc.to(device=prev_device, dtype=prev_dtype)

    target = output_size(h, w, out_scale) if out_scale > 0 else (h * scale, w * scale)
    out = resize(out.clamp_(0.0, 1.0), target, resample)

    def carry(t, i):
        if t is None:
            return None
        if mask_through_model:
            up = side[i]
        else:
            up = F.interpolate(t[:, None].float().to(output_device), size=(h * scale, w * scale), mode="bilinear",
                               align_corners=False)[:, 0]
        return resize(up[:, None], target, resample)[:, 0].clamp_(0.0, 1.0)

    alpha_up = carry(alpha, 0)
    mask_up = carry(mask, 1 if alpha is not None else 0)
    if alpha_up is not None:
        out = torch.cat([out, alpha_up[:, None]], dim=1)
    return UpscaleResult(out, mask_up, used, scale)
