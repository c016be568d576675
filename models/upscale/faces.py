"""Face refinement after upscaling (the `--face_enhance` step of Real-ESRGAN / Parts2Whole, written for tensors).

1. detect faces and their 5 landmarks with facenet-pytorch's MTCNN (weights ship inside the wheel);
2. align each face to the FFHQ 512x512 template with a similarity transform (least squares on the 5 points);
3. restore the aligned crop with a spandrel face model (GFPGAN, RestoreFormer; CodeFormer via extra arches);
4. warp the result back and blend it in with a feathered mask (linear ramp to 0 at the crop border).

Coordinates are pixels with pixel centres at integers (x right, y down), as MTCNN and OpenCV report them.
Images are [B, 3, H, W] float in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

FACE_SIZE = 512
# The 5-point FFHQ alignment template at 512 px (eye centres, nose tip, mouth corners), as used by GFPGAN's
# face helper; MTCNN reports landmarks in this same order (left eye, right eye, nose, left mouth, right mouth).
FFHQ_TEMPLATE_512 = (
    (192.98138, 239.94708), (318.90277, 240.19360), (256.63416, 314.01935),
    (201.26117, 371.41043), (313.08905, 371.15118),
)
# Architectures whose network works in [-1, 1] while spandrel's descriptor call passes [0, 1] straight through
# and clamps the output to [0, 1] (spandrel 0.4.2 GFPGAN; spandrel_extra_arches CodeFormer). We call the module
# directly with the right normalisation instead. RestoreFormer normalises inside its call_fn: use the descriptor.
SIGNED_FACE_ARCHS = frozenset({"GFPGAN", "CodeFormer"})


@dataclass
class Face:
    box: tuple[float, float, float, float]      # x0, y0, x1, y1
    landmarks: tuple[tuple[float, float], ...]  # 5 points (x, y)
    score: float = 1.0

    def scaled(self, sx: float, sy: float) -> "Face":
        """The same face in an image resized by (sx, sy), pixel-centre aligned."""
        def px(x, s):
            return (x + 0.5) * s - 0.5
        x0, y0, x1, y1 = self.box
        return Face((px(x0, sx), px(y0, sy), px(x1, sx), px(y1, sy)),
                    tuple((px(x, sx), px(y, sy)) for x, y in self.landmarks), self.score)


# ---- detection ----------------------------------------------------------------------------------------------
def detect_faces(images, *, threshold: float = 0.9, min_face_size: int = 20, device="cpu") -> list[list[Face]]:
    """MTCNN faces for each image of [B, 3, H, W] in [0, 1]; a list (per image) of Face, best first."""
    import numpy as np
    import torch

    from ...utils import compat
    compat.ensure_torchvision_ops()  # facenet_pytorch calls torchvision.ops.batched_nms
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, min_face_size=int(min_face_size), device=torch.device(device))
    results: list[list[Face]] = []
    arr = (images[:, :3].detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
    arr = arr.permute(0, 2, 3, 1).cpu().numpy()
    for img in arr:
        faces = []
        if min(img.shape[:2]) < min_face_size:  # no face fits: MTCNN's image pyramid would be empty (and raise)
            results.append(faces)
            continue
        boxes, probs, points = mtcnn.detect(np.ascontiguousarray(img), landmarks=True)
        if boxes is not None:
            for box, p, pts in zip(boxes, probs, points):
                if p is not None and float(p) >= threshold:
                    faces.append(Face(tuple(float(v) for v in box), tuple((float(x), float(y)) for x, y in pts),
                                      float(p)))
        results.append(faces)
    return results


# ---- geometry -----------------------------------------------------------------------------------------------
def similarity_transform(src: Sequence[Sequence[float]], dst: Sequence[Sequence[float]]):
    """2x3 matrix M (float64 tensor) of the similarity (rotation, uniform scale, shift) that best maps src -> dst.

    Least squares over the point pairs with M = [[a, -b, tx], [b, a, ty]] (no reflection)."""
    import torch

    s = torch.as_tensor(src, dtype=torch.float64)
    d = torch.as_tensor(dst, dtype=torch.float64)
    if s.shape != d.shape or s.ndim != 2 or s.shape[1] != 2 or s.shape[0] < 2:
        raise ValueError(f"need matching [N>=2, 2] point sets, got {tuple(s.shape)} and {tuple(d.shape)}")
    n = s.shape[0]
    rows = torch.zeros((2 * n, 4), dtype=torch.float64)
    rows[0::2, 0], rows[0::2, 1], rows[0::2, 2] = s[:, 0], -s[:, 1], 1.0
    rows[1::2, 0], rows[1::2, 1], rows[1::2, 3] = s[:, 1], s[:, 0], 1.0
    a, b, tx, ty = torch.linalg.lstsq(rows, d.reshape(-1, 1)).solution[:, 0]
    return torch.stack([torch.stack([a, -b, tx]), torch.stack([b, a, ty])])


def invert_affine(m):
    import torch
    full = torch.cat([m, torch.tensor([[0.0, 0.0, 1.0]], dtype=m.dtype)], 0)
    return torch.linalg.inv(full)[:2]


def warp(image, m_dst_to_src, out_h: int, out_w: int, *, x0: int = 0, y0: int = 0, mode: str = "bilinear",
         padding: str = "border"):
    """Sample `image` [B, C, H, W] at M @ (x, y, 1) for every output pixel (x, y) of a window that starts at
    (x0, y0) of size out_h x out_w. M maps destination pixel coordinates to source pixel coordinates."""
    import torch
    import torch.nn.functional as F

    _, _, h, w = image.shape
    ys = torch.arange(y0, y0 + out_h, dtype=torch.float64)
    xs = torch.arange(x0, x0 + out_w, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    m = m_dst_to_src.to(torch.float64)
    sx = m[0, 0] * gx + m[0, 1] * gy + m[0, 2]
    sy = m[1, 0] * gx + m[1, 1] * gy + m[1, 2]
    grid = torch.stack([(sx + 0.5) / w * 2 - 1, (sy + 0.5) / h * 2 - 1], -1)[None]
    grid = grid.to(device=image.device, dtype=image.dtype).expand(image.shape[0], -1, -1, -1)
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding, align_corners=False)


def feather_mask(size: int, feather: float, device=None):
    """[size, size] mask: 1 inside, linear ramp to 0 over `feather` (a fraction of size) at every border."""
    import torch
    ramp_px = max(1.0, feather * size)
    t = torch.arange(size, dtype=torch.float32, device=device) + 0.5
    edge = torch.minimum(t, size - t)
    ramp = (edge / ramp_px).clamp(0, 1)
    return ramp[:, None] * ramp[None, :]


# ---- restoration --------------------------------------------------------------------------------------------
def restore_crop(desc, crop):
    """Run a spandrel face model on an aligned crop [1, 3, 512, 512] in [0, 1]; returns [1, 3, 512, 512] in [0, 1]."""
    arch = str(getattr(getattr(desc, "architecture", None), "id", ""))
    if arch in SIGNED_FACE_ARCHS:
        out = desc.model(crop * 2.0 - 1.0)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return ((out.float() + 1.0) * 0.5).clamp(0.0, 1.0)
    return desc(crop).float().clamp(0.0, 1.0)


@dataclass
class RefineResult:
    image: object                 # [B, 3, H, W]
    mask: object                  # [B, H, W] blend weight that was applied
    faces: list[list[Face]] = field(default_factory=list)


def refine_faces(image, faces: list[list[Face]], restore: Callable, *, strength: float = 1.0, feather: float = 0.1,
                 face_size: int = FACE_SIZE, check_interrupt: Callable[[], None] | None = None,
                 on_face: Callable[[int, int], None] | None = None) -> RefineResult:
    """Restore `faces` (per image, in `image` coordinates) and blend them back.

    Args:
        image: [B, 3, H, W] in [0, 1] (the upscaled image).
        faces: per batch item, a list of Face with 5 landmarks.
        restore: crop [1, 3, S, S] in [0, 1] -> same shape (e.g. `lambda c: restore_crop(desc, c)`).
        strength: 0 keeps the input, 1 takes the restored face fully inside the mask.
        feather: width of the mask's linear ramp as a fraction of the aligned crop.
    """
    import torch

    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected [B, 3, H, W], got {tuple(image.shape)}")
    if len(faces) != image.shape[0]:
        raise ValueError(f"faces has {len(faces)} entries for a batch of {image.shape[0]}")
    out = image.detach().float().clone()
    b, _, h, w = out.shape
    weights = torch.zeros((b, h, w), dtype=torch.float32, device=out.device)
    template = [(x * face_size / FACE_SIZE, y * face_size / FACE_SIZE) for x, y in FFHQ_TEMPLATE_512]
    soft = feather_mask(face_size, feather, device=out.device)[None, None]
    total = sum(len(f) for f in faces)
    done = 0
    for bi, image_faces in enumerate(faces):
        for face in image_faces:
            if check_interrupt is not None:
                check_interrupt()
            pts = torch.tensor(face.landmarks, dtype=torch.float64)
            if float((pts - pts.mean(0)).norm(dim=1).max()) < 1.0:
                continue  # degenerate landmarks (all within a pixel): nothing to align to
            to_crop = similarity_transform(face.landmarks, template)   # image -> crop
            to_image = invert_affine(to_crop)                         # crop -> image
            crop = warp(out[bi:bi + 1], to_image, face_size, face_size)
            with torch.inference_mode():
                fixed = restore(crop).float().to(out.device)
            if tuple(fixed.shape) != tuple(crop.shape):
                raise RuntimeError(f"face model returned {tuple(fixed.shape)} for a {tuple(crop.shape)} crop")
            # the crop square's footprint in the image, clipped: only that window is warped back
            corners = torch.tensor([[0, 0, 1], [face_size - 1, 0, 1], [0, face_size - 1, 1],
                                    [face_size - 1, face_size - 1, 1]], dtype=torch.float64) @ to_image.T
            x0, y0 = max(int(corners[:, 0].min().floor()) - 1, 0), max(int(corners[:, 1].min().floor()) - 1, 0)
            x1, y1 = min(int(corners[:, 0].max().ceil()) + 2, w), min(int(corners[:, 1].max().ceil()) + 2, h)
            if x1 <= x0 or y1 <= y0:
                continue
            back = warp(fixed, to_crop, y1 - y0, x1 - x0, x0=x0, y0=y0)
            m = warp(soft, to_crop, y1 - y0, x1 - x0, x0=x0, y0=y0, padding="zeros")  # 0 outside the square
            m = (m * strength)[0, 0]
            region = out[bi, :, y0:y1, x0:x1]
            region.mul_(1 - m).add_(back[0] * m)
            weights[bi, y0:y1, x0:x1] = torch.maximum(weights[bi, y0:y1, x0:x1], m)
            done += 1
            if on_face is not None:
                on_face(done, total)
    return RefineResult(out.clamp_(0, 1), weights, faces)


def refine_with_model(face_desc, image, faces: list[list[Face]], *, device=None, precision: str = "auto",
                      **refine_kwargs) -> RefineResult:
    """`refine_faces` with a spandrel face model on `device` (default: where it is); the model's device and dtype
    are restored afterwards."""
    import torch

    from .upscaler import pick_dtype

    device = torch.device(device) if device is not None else face_desc.device
    dtype = pick_dtype(face_desc, device, precision)
    prev_device, prev_dtype = face_desc.device, face_desc.dtype
    face_desc.to(device=device, dtype=dtype)
    try:
        return refine_faces(image, faces, lambda c: restore_crop(face_desc, c.to(device=device, dtype=dtype)),
                            **refine_kwargs)
    finally:
        face_desc.to(device=prev_device, dtype=prev_dtype)


def upscale_with_faces(desc, face_desc, image, *, detect: Callable | None = None, threshold: float = 0.9,
                       min_face_size: int = 20, strength: float = 1.0, feather: float = 0.1, face_device=None,
                       check_interrupt: Callable[[], None] | None = None,
                       on_face: Callable[[int, int], None] | None = None, upscaled=None, **upscale_kwargs):
    """Upscale `image` [B, 3, H, W] with `desc`, then restore the faces with `face_desc`.

    Faces are detected on the *input* (cheaper, and MTCNN's minimum face size refers to input pixels) and their
    coordinates mapped onto the upscaled image. `detect(images) -> list[list[Face]]` replaces MTCNN (tests, other
    detectors). `upscale_kwargs` go to `upscale()` (tile, overlap, out_scale, precision, device, mask, on_tile, ...).
    `upscaled`: an UpscaleResult of `image` already computed (then `desc` is not used).
    Returns (UpscaleResult with the refined image and the face blend mask as `.mask`, RefineResult)."""
    import torch

    from .upscaler import upscale

    if image.ndim != 4 or image.shape[1] not in (3, 4):
        raise ValueError(f"face refinement takes an image [B, 3|4, H, W], got {tuple(image.shape)}")
    result = upscaled if upscaled is not None else upscale(desc, image, check_interrupt=check_interrupt,
                                                           **upscale_kwargs)
    if detect is None:
        def detect(imgs):
            return detect_faces(imgs, threshold=threshold, min_face_size=min_face_size, device=face_device or "cpu")
    found = detect(image[:, :3])
    h, w = image.shape[-2:]
    oh, ow = result.image.shape[-2:]
    faces = [[f.scaled(ow / w, oh / h) for f in per] for per in found]
    rgb, alpha = result.image[:, :3], result.image[:, 3:]  # an alpha channel is carried, not restored
    refined = refine_with_model(face_desc, rgb, faces, device=face_device, strength=strength,
                                feather=feather, check_interrupt=check_interrupt, on_face=on_face)
    result.image = torch.cat([refined.image, alpha], 1) if alpha.shape[1] else refined.image
    result.mask = refined.mask
    return result, refined
