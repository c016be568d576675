"""Latent plumbing for StyleGAN-family generators: seeds, truncation, style mixing, interpolation, batched synthesis.

The HUMANGEN_GENERATOR socket carries a `GeneratorDescriptor`; HUMANGEN_LATENT carries a plain dict:
    {"space": "z" | "w" | "w+", "tensor": Tensor ([N, z_dim] | [N, w_dim] | [N, num_ws, w_dim]),
     "generator_id": str, "num_ws": int, "seeds": list[int] | None, "labels": list[str] | None,
     "z": Tensor | None (the z each w came from, when known),
     "truncation": {"psi": float, "cutoff": int | None, "center": Tensor [w_dim] | None}  (applied to z when mapped)}
Seeds follow upstream exactly: z = np.random.RandomState(seed).randn(1, z_dim).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..utils.latent_png import SPACES, check_latent_structure, latent_from_json, latent_to_json  # noqa: F401


@dataclass
class GeneratorDescriptor:
    """What flows through a HUMANGEN_GENERATOR socket: the module plus facts nodes need without touching it."""

    model: torch.nn.Module  # has .mapping(z, c, ...) and .synthesis(ws, ...)
    kind: str  # 'stylegan2' | 'stylegan3' | ... (model.arch)
    generator_id: str  # stable id: file name + content hash (stored with latents)
    name: str  # display name (file name)
    height: int
    width: int
    z_dim: int
    w_dim: int
    c_dim: int
    num_ws: int
    dtype: str = "fp32"  # 'fp32' | 'reduced' (bf16 on CPU, fp16 on CUDA)
    impl: str = "auto"  # ops path: 'auto' | 'ref' | 'fast'
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_model(cls, G, name: str, generator_id: str | None = None, dtype: str = "fp32", impl: str = "auto"):
        gid = generator_id or f"{name}:{id(G):x}"
        return cls(model=G, kind=getattr(G, "arch", type(G).__name__), generator_id=gid, name=name,
                   height=int(G.img_height), width=int(G.img_width), z_dim=int(G.z_dim), w_dim=int(G.w_dim),
                   c_dim=int(G.c_dim), num_ws=int(G.num_ws), dtype=dtype, impl=impl)

    def synthesis_dtype(self, device) -> torch.dtype:
        if self.dtype == "fp32":
            return torch.float32
        return torch.float16 if torch.device(device).type == "cuda" else torch.bfloat16


def generator_id_for_file(path: str) -> str:
    """'<file name>:<16 hex of the file's full content hash>': two different files never share an id, so a latent
    made for one generator is not silently accepted by another."""
    from ..utils.checkpoints import content_hash
    return f"{os.path.basename(path)}:{content_hash(path)[:16]}"


# ---- seeds and z ------------------------------------------------------------------------------------------------
def parse_seeds(text: str, max_count: int = 4096) -> list[int]:
    """'1,3,5-8' -> [1, 3, 5, 6, 7, 8]. Ranges are inclusive; whitespace ignored. Raises ValueError."""
    return _parse_ranges(text, "seed", 2 ** 32 - 1, "2^32 - 1 (numpy RandomState's limit)", max_count)


def _parse_ranges(text: str, what: str, max_value: int, max_text: str, max_count: int) -> list[int]:
    """Numbers and inclusive ranges ('1,3,5-8') of `what` (a seed, a layer), each <= max_value, at most max_count
    in all. Raises ValueError worded for `what`."""
    out: list[int] = []
    example = "1,3,5-8" if what == "seed" else "4-7"
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        m = re.fullmatch(r"([0-9]{1,20})(?:-([0-9]{1,20}))?", part)  # ASCII digits; 20 covers 2^64
        if not m:
            raise ValueError(f"cannot read {part[:40]!r}: use {what} numbers and ranges like '{example}'")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        if b < a:
            raise ValueError(f"range {part!r} goes backwards")
        if b > max_value:
            raise ValueError(f"{what} {part!r} is above {max_text}")
        if len(out) + (b - a + 1) > max_count:
            raise ValueError(f"more than {max_count} {what}s")
        out.extend(range(a, b + 1))
    if not out:
        raise ValueError(f"no {what}s given")
    return out


def z_from_seeds(seeds: list[int], z_dim: int) -> torch.Tensor:
    """[N, z_dim] float32, row i = np.random.RandomState(seeds[i]).randn(1, z_dim) (upstream's convention)."""
    return torch.from_numpy(np.concatenate([np.random.RandomState(int(s)).randn(1, z_dim) for s in seeds])).float()


@torch.no_grad()
def empirical_w_mean(G, num_samples: int = 10000, seed: int = 123, batch: int = 2000, c=None) -> torch.Tensor:
    """Mean of mapped w over `num_samples` z = RandomState(seed).randn(num_samples, z_dim) -> [w_dim]."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(num_samples, G.z_dim)).float()
    dev = next(G.parameters()).device
    acc = torch.zeros([G.w_dim], dtype=torch.float64, device=dev)
    for i in range(0, num_samples, batch):
        zz = z[i:i + batch].to(dev)
        cc = None if c is None else c.expand(zz.shape[0], -1).to(dev)
        w = G.mapping(zz, cc, truncation_psi=1.0)
        w = w[:, 0] if w.ndim == 3 else w
        acc += w.double().sum(dim=0)
    return (acc / num_samples).float()


def truncate(ws: torch.Tensor, center: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
    """center + psi * (ws - center) on all layers, or only the first `cutoff` (ws [N, num_ws, w_dim])."""
    if psi == 1:
        return ws
    center = center.to(ws.device, ws.dtype)
    if cutoff is None:
        return center.lerp(ws, psi)
    ws = ws.clone()
    ws[:, :cutoff] = center.lerp(ws[:, :cutoff], psi)
    return ws


def make_latent(space: str, tensor: torch.Tensor, gen: GeneratorDescriptor, seeds=None, labels=None, z=None,
                truncation: dict | None = None) -> dict:
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    return {"space": space, "tensor": tensor.detach().float().cpu(), "generator_id": gen.generator_id,
            "num_ws": gen.num_ws, "seeds": list(seeds) if seeds is not None else None,
            "labels": list(labels) if labels is not None else None,
            "z": z.detach().float().cpu() if z is not None else None,
            "truncation": truncation or {"psi": 1.0, "cutoff": None, "center": None}}


@torch.no_grad()
def latent_from_seeds(gen: GeneratorDescriptor, seeds: list[int], psi: float = 1.0, cutoff: int | None = None,
                      center: str = "w_avg", mean_samples: int = 10000, mean_seed: int = 123,
                      space: str = "w+") -> dict:
    """Seeds -> a latent in `space` ('w+' mapped and truncated; 'w' one w per sample; 'z' raw, truncation kept for
    when it is mapped)."""
    G = gen.model
    z = z_from_seeds(seeds, gen.z_dim)
    c_vec = None
    if center == "w_avg":
        if not hasattr(G.mapping, "w_avg"):
            raise ValueError("this generator has no w_avg buffer; use the empirical mean")
        c_vec = G.mapping.w_avg.detach().float().cpu()
    elif center == "empirical_mean":
        c_vec = empirical_w_mean(G, mean_samples, mean_seed).cpu()
    else:
        raise ValueError(f"truncation centre must be 'w_avg' or 'empirical_mean', got {center!r}")
    trunc = {"psi": float(psi), "cutoff": cutoff, "center": c_vec}
    labels = [str(s) for s in seeds]
    if space == "z":
        return make_latent("z", z, gen, seeds, labels, z=z, truncation=trunc)
    ws = map_z(gen, z, trunc)
    if space == "w":
        if cutoff:
            raise ValueError("a truncation cutoff makes the ws differ per layer: use space 'w+' (or no cutoff)")
        return make_latent("w", ws[:, 0], gen, seeds, labels, z=z, truncation=trunc)
    return make_latent("w+", ws, gen, seeds, labels, z=z, truncation=trunc)


@torch.no_grad()
def map_z(gen: GeneratorDescriptor, z: torch.Tensor, truncation: dict | None = None) -> torch.Tensor:
    """z [N, z_dim] -> w+ [N, num_ws, w_dim] with the latent's truncation (centre w_avg unless given)."""
    G = gen.model
    dev = next(G.parameters()).device
    if gen.c_dim > 0:
        raise ValueError("conditional generators need a class label; not supported by the seed nodes yet")
    ws = G.mapping(z.to(dev), None, truncation_psi=1.0).float().cpu()
    t = truncation or {}
    psi = float(t.get("psi", 1.0))
    if psi != 1.0:
        center = t.get("center")
        if center is None:
            center = G.mapping.w_avg.detach().float().cpu()
        ws = truncate(ws, center, psi, t.get("cutoff"))
    return ws


def to_wplus(gen: GeneratorDescriptor, latent: dict) -> torch.Tensor:
    """Any latent -> w+ [N, num_ws, w_dim] (maps z, broadcasts w)."""
    check_latent(latent, gen)
    t = latent["tensor"]
    if latent["space"] == "z":
        return map_z(gen, t, latent.get("truncation"))
    if latent["space"] == "w":
        return t.unsqueeze(1).repeat(1, gen.num_ws, 1)
    return t


def check_latent(latent: dict, gen: GeneratorDescriptor | None = None) -> None:
    """A usable HUMANGEN_LATENT (`check_latent_structure`), shaped for `gen` when given; ValueError otherwise."""
    check_latent_structure(latent)
    if gen is None:
        return
    t = latent["tensor"]
    want = {"z": (gen.z_dim,), "w": (gen.w_dim,), "w+": (gen.num_ws, gen.w_dim)}[latent["space"]]
    if tuple(t.shape[1:]) != want:
        raise ValueError(f"latent {latent['space']} has shape {tuple(t.shape)}, but generator {gen.name} expects "
                         f"[N, {', '.join(map(str, want))}] (latent made for {latent.get('generator_id')!r})")


# ---- style mixing and interpolation ----------------------------------------------------------------------------
def parse_layers(text: str, num_ws: int) -> list[int]:
    """'0-6' / '0,2,4' -> sorted layer indices, each < num_ws."""
    return sorted(set(_parse_ranges(text, "layer", num_ws - 1, f"{num_ws - 1}: this generator has ws 0..{num_ws - 1}",
                                     max_count=64 * num_ws)))  # repeats are allowed and merged


def style_mix(row_ws: torch.Tensor, col_ws: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """Cell (r, c) = row r's w+ with col c's ws at `layers`; returned row-major [R*C, num_ws, w_dim]."""
    R, C = row_ws.shape[0], col_ws.shape[0]
    out = row_ws.unsqueeze(1).repeat(1, C, 1, 1)
    out[:, :, layers] = col_ws.unsqueeze(0)[:, :, layers].expand(R, C, len(layers), -1)
    return out.reshape(R * C, *row_ws.shape[1:])


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation along the last dim (magnitude interpolated linearly); lerp when a ~ b direction.
    Computed in float64 (a float32 norm of large latents overflows to inf, and the result became NaN)."""
    dtype = a.dtype
    a, b, t = a.double(), b.double(), torch.as_tensor(t, dtype=torch.float64)
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(eps), b / nb.clamp_min(eps)
    dot = (ua * ub).sum(-1, keepdim=True).clamp(-1 + eps, 1 - eps)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) / so) * ua + (torch.sin(t * omega) / so) * ub
    lin = ua.lerp(ub, t)
    direction = torch.where(so.abs() < 1e-4, lin, direction)
    return (direction * na.lerp(nb, t)).to(dtype)


def interpolate(a: torch.Tensor, b: torch.Tensor, frames: int, method: str = "lerp") -> torch.Tensor:
    """`frames` steps from a (t=0) to b (t=1) inclusive -> [frames, *a.shape]. (Upstream swaps a and b: not here.)"""
    if frames < 2:
        raise ValueError("frames must be >= 2")
    if method not in ("lerp", "slerp"):
        raise ValueError(f"method must be 'lerp' or 'slerp', got {method!r}")
    ts = torch.linspace(0, 1, frames, dtype=torch.float32)
    out = []
    for t in ts:
        tt = t.reshape([1] * a.ndim)
        out.append(a + (b - a) * tt if method == "lerp" else slerp(a, b, tt))
    return torch.stack(out)


def interpolate_path(points: torch.Tensor, frames_per_segment: int, method: str = "lerp") -> torch.Tensor:
    """Through points[0] -> points[1] -> ... (each segment `frames_per_segment` frames, shared ends not repeated)."""
    segs = []
    for i in range(points.shape[0] - 1):
        seg = interpolate(points[i], points[i + 1], frames_per_segment, method)
        segs.append(seg if i == 0 else seg[1:])
    return torch.cat(segs)


# ---- synthesis -------------------------------------------------------------------------------------------------
def synthesize(gen: GeneratorDescriptor, ws: torch.Tensor, noise_mode: str = "const", batch_size: int = 4,
               device=None, noise_seed: int = 0, on_batch: Callable[[int, int], None] | None = None,
               check_interrupt: Callable[[], None] | None = None,
               style_offsets: dict | None = None) -> torch.Tensor:
    """w+ [N, num_ws, w_dim] -> images float32 [N, C, H, W] (~[-1, 1]) in batches of `batch_size`, on `device`.
    noise_mode 'random' draws from a local generator seeded by `noise_seed` (per image, batch-size independent).
    `style_offsets` {layer: [C]} are S-space edits added to every image's styles (a latent's "style_offsets")."""
    G = gen.model
    if device is None:
        device = next(G.parameters()).device
    dtype = gen.synthesis_dtype(device)
    offsets = {k: v.to(device) for k, v in style_offsets.items()} if style_offsets else None
    out = []
    n = ws.shape[0]
    for i in range(0, n, max(1, int(batch_size))):
        if check_interrupt is not None:
            check_interrupt()
        chunk = ws[i:i + batch_size].to(device)
        with torch.no_grad():
            if noise_mode == "random" and gen.kind == "stylegan2":
                imgs = [G.synthesis(chunk[j:j + 1], noise_mode="random", dtype=dtype, impl=gen.impl,
                                    generator=torch.Generator(device=device).manual_seed(noise_seed + i + j),
                                    style_offsets=offsets)
                        for j in range(chunk.shape[0])]
                img = torch.cat(imgs)
            else:
                img = G.synthesis(chunk, noise_mode=noise_mode, dtype=dtype, impl=gen.impl, style_offsets=offsets)
        out.append(img.float().cpu())
        if on_batch is not None:
            on_batch(min(i + batch_size, n), n)
    return torch.cat(out)


def image_grid(images: torch.Tensor, rows: int, cols: int, pad_value: float = 1.0) -> torch.Tensor:
    """[rows*cols, C, H, W] -> [1, C, rows*H, cols*W] (row-major)."""
    n, c, h, w = images.shape
    assert n == rows * cols, (n, rows, cols)
    return images.reshape(rows, cols, c, h, w).permute(2, 0, 3, 1, 4).reshape(1, c, rows * h, cols * w)


def label_image(img_hwc: np.ndarray, text: str) -> np.ndarray:
    """Draw a small label in the top-left corner of a uint8 HWC image."""
    from PIL import Image, ImageDraw
    im = Image.fromarray(img_hwc)
    d = ImageDraw.Draw(im)
    size = max(8, im.height // 24)
    try:
        from PIL import ImageFont
        font = ImageFont.load_default(size=size)
    except TypeError:  # older Pillow
        font = None
    box = d.textbbox((2, 2), text, font=font)
    d.rectangle([box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2], fill=(0, 0, 0))
    d.text((2, 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(im)


def mixing_grid(row_imgs: np.ndarray, col_imgs: np.ndarray, mixed: np.ndarray, row_labels, col_labels) -> np.ndarray:
    """uint8 grids: top row = column sources, left column = row sources, top-left blank (white), labelled."""
    R, C = row_imgs.shape[0], col_imgs.shape[0]
    h, w, ch = row_imgs.shape[1:]
    canvas = np.full(((R + 1) * h, (C + 1) * w, ch), 255, dtype=np.uint8)
    for c in range(C):
        canvas[0:h, (c + 1) * w:(c + 2) * w] = label_image(col_imgs[c], f"col {col_labels[c]}")
    for r in range(R):
        canvas[(r + 1) * h:(r + 2) * h, 0:w] = label_image(row_imgs[r], f"row {row_labels[r]}")
        for c in range(C):
            canvas[(r + 1) * h:(r + 2) * h, (c + 1) * w:(c + 2) * w] = mixed[r * C + c]
    return canvas


def concat_latents(latents: list[dict]) -> dict:
    """Stack latents of the same space along the batch dim (metadata from the first)."""
    first = dict(latents[0])
    if any(l["space"] != first["space"] for l in latents):
        raise ValueError("cannot stack latents of different spaces")
    first["tensor"] = torch.cat([l["tensor"] for l in latents])
    zs = [l.get("z") for l in latents]
    first["z"] = torch.cat(zs) if all(z is not None for z in zs) else None
    seeds = [l.get("seeds") for l in latents]
    first["seeds"] = sum(seeds, []) if all(s is not None for s in seeds) else None
    first["labels"] = [str(s) for s in first["seeds"]] if first["seeds"] else None
    return first
