"""Tiled image-to-image inference with linear feathering across tile overlaps.

Real-ESRGAN's own tiler pastes the centre of each padded tile without blending, which leaves faint seams where the
receptive fields differ. Here overlapping tiles are blended with separable linear ramps: inside the overlap of two
neighbouring tiles one weight rises from 0 to 1 while the other falls from 1 to 0, so the weights sum to 1 at every
output pixel (and the accumulated weight is divided out, which keeps that true even where three tiles meet).

Shapes: images are [B, C, H, W] float in [0, 1]; a model maps [1, C, h, w] -> [1, C_out, h*scale, w*scale].
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

log = logging.getLogger("humangen.upscale")

TileCallback = Callable[[int, int], None]  # (tiles done, tiles total)


# ---- tile geometry ------------------------------------------------------------------------------------------
Span = tuple[int, int]  # (start, length) along one axis, in input pixels


def tile_spans(size: int, tile: int, overlap: int, align: int = 1) -> list[Span]:
    """(start, length) of at most `tile`-long tiles covering [0, size), neighbours overlapping by >= `overlap`.

    Uses the fewest tiles that fit, then shrinks them evenly so each overlap is close to the requested one: the
    extra work of tiling is about (n - 1) * overlap / size, instead of a full-size last tile that mostly repeats its
    neighbour. Starts are multiples of `align` (pixel-unshuffle models such as Real-ESRGAN x2plus then see the same
    sub-pixel grid as one untiled pass); the last tile ends exactly at `size`."""
    align = max(1, int(align))
    if tile <= 0 or tile >= size:
        return [(0, size)]
    # work in units of `align` pixels, all integers
    units = math.ceil(size / align)
    t = max(1, tile // align)
    o = min(math.ceil(overlap / align), t - 1)
    if t >= units:
        return [(0, size)]
    n = max(2, math.ceil((units - o) / (t - o)))
    length = math.ceil((units + (n - 1) * o) / n)  # <= t; neighbours then overlap by >= o units
    starts = [(i * (units - length)) // (n - 1) for i in range(n)]
    spans = []
    for s0 in starts:
        start = s0 * align
        spans.append((start, min(length * align, size - start)))
    return spans


def _ramp(width: int, margin: int):
    """Rising weights over `width` output pixels: 0 for `margin` pixels, linear over the middle, 1 for the last
    `margin` pixels. ramp(k) + ramp(width - 1 - k) == 1 for every k (values sit at pixel centres)."""
    import torch
    inner = width - 2 * margin
    t = (torch.arange(width, dtype=torch.float32) - margin + 0.5) / inner
    return t.clamp_(0.0, 1.0)


def axis_weights(spans: Sequence[Span], scale: int, index: int, margin: float = 0.25):
    """1-D blending weight of tile `index` along one axis, in output pixels ([length * scale] float32).

    The weight rises across the overlap with the previous tile and falls across the overlap with the next one; at
    the image border (no neighbour) it stays 1. The ramp skips `margin` (a fraction of the overlap) at each end:
    the pixels nearest a tile's own edge, where its zero padding distorts the output most, get weight 0 and the
    neighbour covers them fully. A rising and a falling ramp over the same overlap add up to exactly 1."""
    import torch

    start, length = spans[index]
    w = torch.ones(length * scale, dtype=torch.float32)
    if index > 0:
        p_start, p_len = spans[index - 1]
        width = max(min(p_start + p_len - start, length), 0) * scale
        if width:
            w[:width] = _ramp(width, int(width * margin))
    if index + 1 < len(spans):
        width = max(min(start + length - spans[index + 1][0], length), 0) * scale
        if width:
            w[length * scale - width:] *= _ramp(width, int(width * margin)).flip(0)
    return w


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one [H, W] image go."""
    height: int
    width: int
    tile: int       # 0 = the whole image in one piece
    overlap: int
    ys: tuple[Span, ...]
    xs: tuple[Span, ...]

    @classmethod
    def make(cls, height: int, width: int, tile: int, overlap: int, align: int = 1) -> "TilePlan":
        if tile < 0 or overlap < 0:
            raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be >= 0")
        if tile and overlap >= tile:
            raise ValueError(f"overlap ({overlap}) must be smaller than the tile size ({tile})")
        return cls(height, width, tile, overlap, tuple(tile_spans(height, tile, overlap, align)),
                   tuple(tile_spans(width, tile, overlap, align)))

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)


# ---- the tiler ----------------------------------------------------------------------------------------------
def tiled_apply(fn: Callable, x, *, scale: int, tile: int, overlap: int, align: int = 1,
                out_channels: int | None = None,
                on_tile: TileCallback | None = None, done_before: int = 0, total: int | None = None,
                check_interrupt: Callable[[], None] | None = None, output_device=None):
    """Run `fn` over overlapping tiles of `x` and blend the results with linear feathering.

    Args:
        fn: model call, [1, C, h, w] -> [1, C_out, h*scale, w*scale] on any device/dtype (the caller casts).
        x: input [B, C, H, W].
        scale: the model's integer scale factor.
        tile: tile edge in input pixels; 0 = whole image in one call (no tiling).
        overlap: overlap between neighbouring tiles in input pixels (< tile).
        align: tile starts are multiples of this (the model's size_requirements.multiple_of).
        out_channels: C_out (default C).
        on_tile: progress callback (done, total), called after each tile.
        done_before, total: progress offset/total when several images/passes share one bar.
        check_interrupt: raises to stop; called before each tile.
        output_device: where the [B, C_out, H*scale, W*scale] float32 result is accumulated (default x.device).
    Returns:
        float32 tensor [B, C_out, H*scale, W*scale].
    """
    import torch

    if x.ndim != 4:
        raise ValueError(f"expected [B, C, H, W], got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    plan = TilePlan.make(h, w, tile, overlap, align)
    c_out = out_channels or c
    dev = output_device if output_device is not None else x.device
    out = torch.zeros((b, c_out, h * scale, w * scale), dtype=torch.float32, device=dev)
    acc = torch.zeros((1, 1, h * scale, w * scale), dtype=torch.float32, device=dev)
    wy = [axis_weights(plan.ys, scale, i).to(dev) for i in range(len(plan.ys))]
    wx = [axis_weights(plan.xs, scale, i).to(dev) for i in range(len(plan.xs))]
    total = total if total is not None else b * len(plan)
    done = done_before
    for bi in range(b):
        for iy, (y0, th) in enumerate(plan.ys):
            for ix, (x0, tw) in enumerate(plan.xs):
                if check_interrupt is not None:
                    check_interrupt()
                piece = x[bi:bi + 1, :, y0:y0 + th, x0:x0 + tw]
                with torch.inference_mode():
                    y = fn(piece)
                expect = (1, c_out, piece.shape[2] * scale, piece.shape[3] * scale)
                if tuple(y.shape) != expect:
                    raise RuntimeError(f"model returned {tuple(y.shape)} for a tile of {tuple(piece.shape)}; "
                                       f"expected {expect} (scale {scale})")
                weight = wy[iy][:, None] * wx[ix][None, :]
                ys, xs = slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale)
                out[bi:bi + 1, :, ys, xs].addcmul_(y.to(device=dev, dtype=torch.float32), weight)
                if bi == 0:
                    acc[0, 0, ys, xs] += weight
                done += 1
                if on_tile is not None:
                    on_tile(done, total)
    return out.div_(acc.clamp_min_(1e-8))


# ---- out-of-memory back-off ---------------------------------------------------------------------------------
def is_oom(exc: BaseException) -> bool:
    """True for out-of-memory errors on any device (CUDA, MPS, the CPU allocator)."""
    import torch
    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in str(exc).lower())


def with_tile_backoff(run: Callable[[int], object], tile: int, full: int, *, floor: int = 64,
                      on_oom: Callable[[], None] | None = None):
    """Call `run(tile)`; on out-of-memory halve the tile (0 = whole image starts from `full`) down to `floor`.

    Returns (result, tile actually used). Re-raises the OOM when the next size would fall below `floor`."""
    size = tile if tile > 0 else 0
    while True:
        try:
            return run(size), size
        except Exception as exc:  # noqa: BLE001 - filtered by is_oom
            current = size if size > 0 else full
            if not is_oom(exc) or current // 2 < floor:
                raise
            if on_oom is not None:
                on_oom()
            size = current // 2
            log.warning("upscale: out of memory, retrying with tile size %d", size)
