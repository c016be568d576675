"""Continuous (any-resolution) rendering for UnitedHuman / AnyRes generators: patch geometry and a canvas renderer.

Geometry (UnitedHuman `util/patch_util.py` convention, reimplemented from gan.md §7.2). A canvas of any size has
normalised coordinates in [-1, 1] on both axes (x right, y down). A square patch covering x in [x0, x1] and
y in [y0, y1] (normalised) is described by the 3×3 matrix

    [[s, 0, tx/2],
     [0, s, ty/2],
     [0, 0,    1]]     with s = (x1 - x0)/2 (half-extent), tx = (x0 + x1)/2, ty = (y0 + y1)/2 (centre).

`1/s` is the zoom relative to the whole canvas (1 = the whole canvas in one patch). Because the translation is only
scaled, such matrices compose by plain matrix product: a sub-patch `L` of a region `R` is the patch `R @ L`.

Renderer. `render_canvas` tiles an N×N view (the whole canvas, or any region given by a transform) with patches of
the generator's native size, row-major, the last row/column shifted inward when N is not a multiple of the patch
size (as upstream, later patches overwrite the overlap). Patches share the latent, so they go through the generator
in batches of `patch_batch`, and each batch is written into a preallocated CPU canvas as soon as it is ready: peak
memory is the canvas plus one batch of activations, whatever N is. Framing follows UnitedHuman's `inference.py`:
the person occupies the central half of the square canvas; `white_bands` paints the outer quarters white (value 1)
and `person` returns only the central N × N/2 (2:1) strip. Patches that would be entirely painted over or cropped
away are not rendered at all.

A generator is anything `render_patch` understands (see there); tests use an analytic stand-in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

FRAMINGS = ("square", "white_bands", "person")
MEAN_MODES = ("sample", "mean_coarse_mix", "sample_and_mix", "only_mean")

# ---- the OpenPose BODY_25 A-pose template of UnitedHuman (`generate_by_keypoints`, apose '015', 2048 canvas) --------
BODY25_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
    "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
    "right_small_toe", "right_heel",
)
APOSE_2048 = (
    (1026, 260), (1024, 456), (868, 456), (823, 734), (812, 990), (1179, 456), (1213, 723), (1224, 990),
    (1024, 957), (912, 957), (912, 1380), (912, 1792), (1124, 957), (1124, 1380), (1113, 1803), (992, 223),
    (1059, 223), (954, 245), (1097, 243), (1146, 1914), (1179, 1892), (1079, 1825), (890, 1914), (857, 1892),
    (946, 1825),
)
TEMPLATE_SIZE = 2048


@dataclass(frozen=True)
class Patch:
    """One tile of a rendered view: its pixel box in the output and its transform (float32 [3,3])."""

    bbox: tuple[int, int, int, int]  # (y0, y1, x0, x1) in output pixels, end-exclusive
    transform: torch.Tensor


# ---- transforms -------------------------------------------------------------------------------------------------
def _matrix(s: float, tx: float, ty: float) -> torch.Tensor:
    m = torch.zeros(3, 3, dtype=torch.float32)
    m[0, 0] = s
    m[1, 1] = s
    m[0, 2] = tx / 2
    m[1, 2] = ty / 2
    m[2, 2] = 1.0
    return m


def transform_from_limits(limits: Sequence[Sequence[float]]) -> torch.Tensor:
    """Transform of the square patch with normalised limits `[(y_min, y_max), (x_min, x_max)]` (float32 [3,3]).

    Computed in float64 and rounded once, as upstream (numpy float64 into a float32 tensor)."""
    (y0, y1), (x0, x1) = limits
    tx, ty = (x0 + x1) / 2, (y0 + y1) / 2
    s = x1 - tx
    if abs(s - (y1 - ty)) > 1e-9:
        raise ValueError(f"patch limits {limits} are not square; continuous patches must be square")
    return _matrix(s, tx, ty)


def box_transform(y0: float, y1: float, x0: float, x1: float, canvas_size: int) -> torch.Tensor:
    """Transform of the square pixel box [y0, y1) × [x0, x1) of a `canvas_size`² canvas."""
    n = float(canvas_size)
    return transform_from_limits([(y0 / n * 2 - 1, y1 / n * 2 - 1), (x0 / n * 2 - 1, x1 / n * 2 - 1)])


def as_matrix(transform) -> torch.Tensor:
    """A float32 [3,3] (or [N,3,3]) tensor from a tensor, an array, nested lists, or any object with `.matrix`
    (e.g. a HUMANGEN_TRANSFORM). Checks the patch convention (equal diagonal scales, no rotation, last row 0 0 1)."""
    m = getattr(transform, "matrix", transform)
    m = torch.as_tensor(np.asarray(m.detach().cpu() if torch.is_tensor(m) else m, dtype=np.float64))
    if m.shape[-2:] != (3, 3) or m.ndim not in (2, 3):
        raise ValueError(f"a patch transform is a 3x3 matrix (or a batch [N,3,3]); got shape {tuple(m.shape)}")
    mm = m.reshape(-1, 3, 3)
    if not bool(torch.isfinite(mm).all()):
        raise ValueError("a patch transform holds NaN or infinite values")
    ok = (mm[:, 0, 0] > 0) & ((mm[:, 0, 0] - mm[:, 1, 1]).abs() <= 1e-6 * mm[:, 0, 0].abs()) \
        & (mm[:, 0, 1] == 0) & (mm[:, 1, 0] == 0) & (mm[:, 2, 0] == 0) & (mm[:, 2, 1] == 0) & (mm[:, 2, 2] == 1)
    if not bool(ok.all()):
        raise ValueError("a patch transform must be [[s,0,tx/2],[0,s,ty/2],[0,0,1]] with s > 0 "
                         f"(UnitedHuman's convention); got {mm[~ok][0].tolist()}")
    return m.to(torch.float32)


def compose(region: torch.Tensor | None, local: torch.Tensor) -> torch.Tensor:
    """The transform of patch `local` (relative to `region`) in canvas coordinates: `region @ local`."""
    if region is None:
        return local
    return (region.double() @ local.double()).to(torch.float32)


def zoom_of(transform: torch.Tensor) -> torch.Tensor:
    """Zoom relative to the whole canvas, `1 / T[..., 0, 0]` (the AnyRes scale input)."""
    return 1 / transform[..., 0, 0]


def covered_box(transform, canvas_size: int) -> tuple[float, float, float, float]:
    """Pixel box (y0, y1, x0, x1) of a `canvas_size`² canvas that a transform's patch covers."""
    m = as_matrix(transform).double()
    s, tx, ty = float(m[0, 0]), 2 * float(m[0, 2]), 2 * float(m[1, 2])
    to_px = lambda v: (v + 1) / 2 * canvas_size  # noqa: E731
    return (to_px(ty - s), to_px(ty + s), to_px(tx - s), to_px(tx + s))


def keypoint_transform(keypoint: int | str, zoom: float) -> torch.Tensor:
    """Transform of a patch centred on a BODY_25 keypoint of UnitedHuman's A-pose template, `zoom`× the canvas.

    Equals upstream `generate_by_keypoints(idx, crop_size, scale=zoom)` for every crop size dividing 2048 (the centre
    is the template point on the 2048 canvas; the patch half-extent is 1/zoom); here it is defined for any zoom."""
    if isinstance(keypoint, str) and keypoint not in BODY25_NAMES:
        raise ValueError(f"{keypoint[:40]!r} is not a BODY_25 keypoint name ({', '.join(BODY25_NAMES)})")
    idx = BODY25_NAMES.index(keypoint) if isinstance(keypoint, str) else int(keypoint)
    if not 0 <= idx < len(APOSE_2048):
        raise ValueError(f"keypoint index {idx} is not a BODY_25 index (0..24)")
    if not zoom > 0:
        raise ValueError(f"zoom must be > 0, got {zoom}")
    x, y = APOSE_2048[idx]
    half = TEMPLATE_SIZE / 2
    cx, cy, s = x / half - 1, y / half - 1, 1.0 / zoom
    return transform_from_limits([(cy - s, cy + s), (cx - s, cx + s)])


# ---- patch grids ------------------------------------------------------------------------------------------------
def patch_grid(size: int, patch_size: int, region: torch.Tensor | None = None) -> list[Patch]:
    """Tiles of a `size`² view with `patch_size`² patches, row-major; the last row/column shifts inward when `size`
    is not a multiple (upstream `generate_full_from_patches`). `region` (a transform) places the view in the
    canvas; None = the whole canvas. A view smaller than one patch is one patch (render then resample)."""
    size, patch_size = int(size), int(patch_size)
    if size < 1 or patch_size < 1:
        raise ValueError(f"size and patch_size must be >= 1, got {size}, {patch_size}")
    if size <= patch_size:
        return [Patch((0, size, 0, size), compose(region, _matrix(1.0, 0.0, 0.0)))]
    starts = [min(v, size - patch_size) for v in range(0, size, patch_size)]
    patches = []
    for y in starts:
        for x in starts:
            local = box_transform(y, y + patch_size, x, x + patch_size, size)
            patches.append(Patch((y, y + patch_size, x, x + patch_size), compose(region, local)))
    return patches


def framing_box(size: int, framing: str) -> tuple[int, int, int, int]:
    """Output box of a `size`² canvas kept by a framing: everything, or the central half of the columns."""
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")
    if framing == "person":
        return (0, size, size // 4, 3 * size // 4)
    return (0, size, 0, size)


def visible_patches(size: int, patch_size: int, region=None, framing: str = "square") -> list[Patch]:
    """The tiles of `patch_grid` whose pixels survive the framing (the others need not be rendered)."""
    _, _, bx0, bx1 = framing_box(size, framing)
    lo, hi = (size // 4, 3 * size // 4) if framing in ("white_bands", "person") else (0, size)
    keep = []
    for p in patch_grid(size, patch_size, region):
        x0, x1 = p.bbox[2], p.bbox[3]
        if x1 > max(lo, bx0) and x0 < min(hi, bx1):
            keep.append(p)
    return keep


# ---- latents ----------------------------------------------------------------------------------------------------
def empirical_mean_ws(G, num: int = 10000, seed: int = 123) -> torch.Tensor:
    """Mean of `G.mapping` over `num` latents z = RandomState(seed).randn(num, z_dim) (UnitedHuman `inference.py`),
    broadcast to [1, num_ws, w_dim] float32 on G's device. Cached on G per (num, seed)."""
    from .gan_latents import empirical_w_mean
    cache = G.__dict__.setdefault("_humangen_mean_ws", {})
    key = (int(num), int(seed))
    if key not in cache:
        w = empirical_w_mean(G, num_samples=int(num), seed=int(seed))
        cache[key] = w.to(_device_of(G)).reshape(1, 1, -1).repeat(1, G.num_ws, 1)
    return cache[key]


def mix_coarse(ws: torch.Tensor, mean: torch.Tensor, layers: int = 8) -> torch.Tensor:
    """UnitedHuman's mean-coarse mix: the first `layers` ws replaced by the mean's (pose/structure averaged)."""
    out = ws.clone()
    n = max(0, min(int(layers), ws.shape[1]))
    out[:, :n] = mean[:, :n].to(ws)
    return out


def apply_mean_mode(G, ws: torch.Tensor, mode: str = "sample", mix_layers: int = 8, mean_samples: int = 10000,
                    mean_seed: int = 123) -> torch.Tensor:
    """UnitedHuman's mean options on w+ [B, num_ws, w_dim]: 'sample' (unchanged), 'mean_coarse_mix' (first
    `mix_layers` ws from the empirical mean), 'sample_and_mix' (sample then mix, interleaved per latent, as the
    two rows of upstream's `<seed>_combined.png`), 'only_mean' (the mean latent alone, [1, ...])."""
    if mode not in MEAN_MODES:
        raise ValueError(f"mean mode must be one of {MEAN_MODES}, got {mode!r}")
    if mode == "sample":
        return ws
    mean = empirical_mean_ws(G, mean_samples, mean_seed).to(ws)
    if mode == "only_mean":
        return mean
    mixed = mix_coarse(ws, mean, mix_layers)
    if mode == "mean_coarse_mix":
        return mixed
    return torch.stack([ws, mixed], dim=1).flatten(0, 1)


# ---- rendering --------------------------------------------------------------------------------------------------
def _device_of(G) -> torch.device:
    try:
        return next(G.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def patch_size_of(G) -> int:
    return int(G.img_resolution)


def render_patch(G, ws: torch.Tensor, transform, **synthesis_kwargs) -> torch.Tensor:
    """Render the patch(es) at `transform` (AnyRes's scale-conditioned synthesis, noise const, fp32).

    ws [B, num_ws, w_dim]; transform [3,3] (shared) or [N,3,3] (N == B, or B == 1 to share one latent).
    Returns [max(B,N), C, R, R] with R = G.img_resolution, float32 on G's device.
    The generator provides `synthesize_patch(ws, transforms)` (AnyRes / UnitedHuman and test stand-ins) or a
    StyleGAN3 `synthesis(ws, transform=...)` (plain SG3: the transform only moves the Fourier input).
    `synthesis_kwargs` (e.g. impl, dtype) go to the synthesis network."""
    device = _device_of(G)
    t = as_matrix(transform).to(device)
    ws = ws.to(device=device, dtype=torch.float32)
    if ws.ndim != 3:
        raise ValueError(f"ws must be [batch, num_ws, w_dim], got shape {tuple(ws.shape)}")
    t = t.reshape(-1, 3, 3)
    n = max(ws.shape[0], t.shape[0])
    if t.shape[0] not in (1, n) or ws.shape[0] not in (1, n):
        raise ValueError(f"{ws.shape[0]} latents and {t.shape[0]} transforms cannot be paired")
    ws, t = ws.expand(n, -1, -1), t.expand(n, -1, -1)
    with torch.no_grad():
        if hasattr(G, "synthesize_patch"):
            return G.synthesize_patch(ws, t, **synthesis_kwargs)
        return G.synthesis(ws, transform=t, noise_mode="const", **synthesis_kwargs)


def render_canvas(G, ws: torch.Tensor, size: int, *, region=None, framing: str = "square",
                  patch_batch: int = 1, patch_size: int | None = None,
                  callback: Callable[[int, int], None] | None = None, dtype=torch.float32,
                  synthesis_kwargs: dict | None = None) -> torch.Tensor:
    """Render a `size`² view of the continuous canvas patch by patch (see the module docstring).

    ws: [B, num_ws, w_dim]; each latent is rendered separately (patches of one latent are batched together).
    region: None (the whole canvas) or a transform placing the view in the canvas (region of interest at any
      zoom, rendered at `size` pixels). framing: 'square', 'white_bands' (outer quarters white) or 'person'
      (central N × N/2 strip). callback(done, total) after every batch (raise in it to interrupt).
    synthesis_kwargs: passed to the synthesis (e.g. impl='ref', dtype='bf16'); dtype: the canvas dtype.
    Returns [B, C, H, W] (generator range, ~[-1, 1]) on the CPU."""
    size = int(size)
    p = int(patch_size or patch_size_of(G))
    if patch_batch < 1:
        raise ValueError(f"patch_batch must be >= 1, got {patch_batch}")
    region_m = None if region is None else as_matrix(region)
    y0b, y1b, x0b, x1b = framing_box(size, framing)
    patches = visible_patches(size, p, region_m, framing)
    channels = int(getattr(G, "img_channels", 3))
    out = torch.zeros(ws.shape[0], channels, y1b - y0b, x1b - x0b, dtype=dtype)
    total, done = len(patches) * ws.shape[0], 0
    for b in range(ws.shape[0]):
        for i in range(0, len(patches), patch_batch):
            chunk = patches[i:i + patch_batch]
            imgs = render_patch(G, ws[b:b + 1], torch.stack([q.transform for q in chunk]), **(synthesis_kwargs or {}))
            if size < p:  # one patch larger than the view: resample it down
                imgs = F.interpolate(imgs.float(), size=(size, size), mode="area")
            imgs = imgs.to(device="cpu", dtype=dtype)
            for q, img in zip(chunk, imgs):
                _paste(out[b], img, q.bbox, (y0b, x0b))
            done += len(chunk)
            if callback is not None:
                callback(done, total)
    if framing == "white_bands":
        out[..., : size // 4] = 1
        out[..., 3 * size // 4:] = 1
    return out


def _paste(dst: torch.Tensor, img: torch.Tensor, bbox, origin) -> None:
    """Write `img` (covering `bbox` of the full view) into `dst`, whose top-left is `origin` in the full view."""
    y0, y1, x0, x1 = bbox
    oy, ox = origin
    h, w = dst.shape[-2:]
    ya, yb = max(y0 - oy, 0), min(y1 - oy, h)
    xa, xb = max(x0 - ox, 0), min(x1 - ox, w)
    if ya >= yb or xa >= xb:
        return
    dst[:, ya:yb, xa:xb] = img[:, ya + oy - y0: yb + oy - y0, xa + ox - x0: xb + ox - x0]


def to_uint8_unitedhuman(x: torch.Tensor) -> torch.Tensor:
    """UnitedHuman's PNG convention (`renormalize.as_image`): `x*127.5 + 127.5` in float32, clamped, truncated.
    [B,C,H,W] -> uint8 [B,H,W,C] (differs from NVIDIA's `x*127.5+128` by up to one level)."""
    return (x.detach().float() * 127.5 + 127.5).clamp(0, 255).to(torch.uint8).movedim(1, -1).cpu()


__all__ = [
    "FRAMINGS", "BODY25_NAMES", "APOSE_2048", "Patch", "transform_from_limits", "box_transform", "as_matrix",
    "compose", "zoom_of", "covered_box", "keypoint_transform", "patch_grid", "framing_box", "visible_patches",
    "empirical_mean_ws", "mix_coarse", "MEAN_MODES", "apply_mean_mode", "render_patch", "render_canvas",
    "to_uint8_unitedhuman", "patch_size_of",
]
