"""`HUMANGEN_TRANSFORM`: a similarity (uniform scale + translation) that places a part image on a canvas.

Shared by the SMPL-X transformer (which computes it) and the continuous-GAN region renderer (which renders the
region a part covers). No torch/numpy at import time.

Conventions
-----------
* Pixel coordinates are continuous with pixel edges at integers: pixel ``i`` spans ``[i, i+1]``, its centre is
  ``i + 0.5``. A box is ``(x0, y0, x1, y1)`` in these coordinates.
* A frame (canvas or part image) of ``H x W`` pixels has *normalised* coordinates in ``[-1, 1]`` over its
  enclosing, centred square of side ``L = max(H, W)``: ``u = 2 * (x + (L - W) / 2) / L - 1`` (same for y).
  For a square canvas this is UnitedHuman's canvas coordinate; for a 2:1 (H = 2W) full-body canvas the image
  occupies the central half ``u in [-0.5, 0.5]``, exactly UnitedHuman's layout (outer quarters white).
* UnitedHuman's patch convention (``util/patch_util.py``, gan.md §7.2): a square patch with normalised limits
  ``x in [tx-s, tx+s]``, ``y in [ty-s, ty+s]`` has the 3x3 matrix ``[[s, 0, tx/2], [0, s, ty/2], [0, 0, 1]]``.
  Note the halved translation: the matrix is *not* the coordinate map; ``canvas_u = s * patch_u + 2 * M[0, 2]``.
  The generator's zoom is ``1 / M[0, 0]``.
* ``PatchTransform.matrix`` describes the part image's enclosing square in that convention, so rendering a patch
  with ``matrix`` reproduces exactly the canvas region that the part image (plus its square padding) covers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

# UnitedHuman's A-pose BODY_25 template on a 2048 x 2048 canvas (util/patch_util.py, `apose_source='015'`).
# Order: OpenPose BODY_25 (nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist, mid-hip,
# r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear, l-big-toe, l-small-toe, l-heel,
# r-big-toe, r-small-toe, r-heel). The body occupies the central half of the canvas in x (512..1536).
APOSE_TEMPLATE_SIZE = 2048
APOSE_BODY25_2048: tuple[tuple[float, float], ...] = (
    (1026, 260), (1024, 456), (868, 456), (823, 734), (812, 990),
    (1179, 456), (1213, 723), (1224, 990), (1024, 957), (912, 957),
    (912, 1380), (912, 1792), (1124, 957), (1124, 1380), (1113, 1803),
    (992, 223), (1059, 223), (954, 245), (1097, 243), (1146, 1914),
    (1179, 1892), (1079, 1825), (890, 1914), (857, 1892), (946, 1825),
)


def apose_template(canvas_size: int = APOSE_TEMPLATE_SIZE) -> list[tuple[float, float]]:
    """The A-pose BODY_25 template scaled to a square canvas of ``canvas_size`` pixels."""
    k = canvas_size / APOSE_TEMPLATE_SIZE
    return [(x * k, y * k) for x, y in APOSE_BODY25_2048]


def patch_matrix(y_limits: Sequence[float], x_limits: Sequence[float]) -> list[list[float]]:
    """UnitedHuman's ``construct_transformation_matrix([(y0, y1), (x0, x1)])`` (normalised limits, square patch)."""
    tx = (x_limits[0] + x_limits[1]) / 2
    ty = (y_limits[0] + y_limits[1]) / 2
    s = x_limits[1] - tx
    if abs(s - (y_limits[1] - ty)) > 1e-9:
        raise ValueError(f"patch limits must describe a square, got x {tuple(x_limits)} and y {tuple(y_limits)}")
    return [[s, 0.0, tx / 2], [0.0, s, ty / 2], [0.0, 0.0, 1.0]]


def keypoint_zoom_matrix(index: int, crop_size: int = 256, scale: float = 6) -> list[list[float]]:
    """UnitedHuman's ``generate_by_keypoints``: a ``crop_size`` patch centred on template keypoint ``index`` of a
    canvas of ``crop_size * scale`` pixels (the A-pose template scaled from 2048). Use for "zoom on face/hand"."""
    if not 0 <= index < len(APOSE_BODY25_2048):
        raise ValueError(f"keypoint index must be in 0..24 (BODY_25), got {index}")
    div = APOSE_TEMPLATE_SIZE // crop_size  # upstream integer-divides here; keep it for identical matrices
    ax = APOSE_BODY25_2048[index][0] / div * scale - crop_size // 2
    ay = APOSE_BODY25_2048[index][1] / div * scale - crop_size // 2
    n = crop_size * scale
    return patch_matrix((ay / n * 2 - 1, (ay + crop_size) / n * 2 - 1), (ax / n * 2 - 1, (ax + crop_size) / n * 2 - 1))


def _square_offset(height: float, width: float) -> tuple[float, float, float]:
    side = max(height, width)
    return side, (side - width) / 2, (side - height) / 2


def _check_size(name: str, size) -> None:
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"PatchTransform {name} must be (height, width) > 0, got {size}")


@dataclass(frozen=True)
class PatchTransform:
    """A part image placed on a canvas: ``canvas_xy = scale * part_xy + offset`` (pixels).

    Attributes:
        scale: canvas pixels per part pixel (> 0).
        offset: (bx, by) canvas pixel position of the part's pixel origin.
        part_size: (height, width) of the part image.
        canvas_size: (height, width) of the canvas.
        meta: free-form provenance (target kind, method, residuals); not used in the maths.
    """

    scale: float
    offset: tuple[float, float]
    part_size: tuple[int, int]
    canvas_size: tuple[int, int]
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"PatchTransform scale must be a positive finite number, got {self.scale}")
        if len(self.offset) != 2 or not all(math.isfinite(v) for v in self.offset):
            raise ValueError(f"PatchTransform offset must be two finite numbers, got {self.offset}")
        _check_size("part_size", self.part_size)
        _check_size("canvas_size", self.canvas_size)
        if not math.isfinite(self.scale * max(max(self.part_size), max(self.canvas_size))):
            raise ValueError(f"PatchTransform scale {self.scale} overflows at these sizes")

    # -- point maps ----------------------------------------------------------------------------------------------
    def part_to_canvas(self, points):
        """Map [(x, y), ...] part pixels -> canvas pixels (lists of tuples, or any [N, 2] array-like)."""
        return [(self.scale * x + self.offset[0], self.scale * y + self.offset[1]) for x, y in points]

    def canvas_to_part(self, points):
        return [((x - self.offset[0]) / self.scale, (y - self.offset[1]) / self.scale) for x, y in points]

    # -- regions -------------------------------------------------------------------------------------------------
    @property
    def region(self) -> tuple[float, float, float, float]:
        """The canvas box (x0, y0, x1, y1) covered by the whole part image (unclipped, float)."""
        h, w = self.part_size
        (x0, y0), (x1, y1) = self.part_to_canvas([(0.0, 0.0), (float(w), float(h))])
        return (x0, y0, x1, y1)

    @property
    def region_clipped(self) -> tuple[int, int, int, int] | None:
        """The covered region rounded outward to whole canvas pixels and clipped to the canvas; None if outside."""
        x0, y0, x1, y1 = self.region
        H, W = self.canvas_size
        box = (max(0, math.floor(x0 + 1e-6)), max(0, math.floor(y0 + 1e-6)),
               min(W, math.ceil(x1 - 1e-6)), min(H, math.ceil(y1 - 1e-6)))
        return box if box[2] > box[0] and box[3] > box[1] else None

    @property
    def matrix(self) -> list[list[float]]:
        """3x3 patch-convention matrix of the part's enclosing square in the canvas's normalised coordinates."""
        h, w = self.part_size
        H, W = self.canvas_size
        l, qx, qy = _square_offset(h, w)
        L, cx, cy = _square_offset(H, W)
        s = self.scale * l / L
        tx = 2 * (self.scale * (l / 2 - qx) + self.offset[0] + cx) / L - 1
        ty = 2 * (self.scale * (l / 2 - qy) + self.offset[1] + cy) / L - 1
        return [[s, 0.0, tx / 2], [0.0, s, ty / 2], [0.0, 0.0, 1.0]]

    @property
    def zoom(self) -> float:
        """The generator's scale condition ``1 / matrix[0][0]`` (1 = the part square spans the whole canvas)."""
        return 1.0 / self.matrix[0][0]

    @classmethod
    def from_matrix(cls, matrix, part_size: Sequence[int], canvas_size: Sequence[int], meta: dict | None = None):
        """Inverse of `matrix`: rebuild the pixel similarity from a patch-convention 3x3 matrix."""
        m = [[float(v) for v in row] for row in matrix]
        _check_size("part_size", part_size)
        _check_size("canvas_size", canvas_size)
        if abs(m[0][0] - m[1][1]) > 1e-9 or abs(m[0][1]) > 1e-9 or abs(m[1][0]) > 1e-9:
            raise ValueError(f"not a patch-convention matrix (uniform scale, no rotation): {m}")
        h, w = int(part_size[0]), int(part_size[1])
        H, W = int(canvas_size[0]), int(canvas_size[1])
        l, qx, qy = _square_offset(h, w)
        L, cx, cy = _square_offset(H, W)
        a = m[0][0] * L / l
        bx = (2 * m[0][2] + 1) * L / 2 - cx - a * (l / 2 - qx)
        by = (2 * m[1][2] + 1) * L / 2 - cy - a * (l / 2 - qy)
        return cls(a, (bx, by), (h, w), (H, W), dict(meta or {}))

    @classmethod
    def from_box(cls, box: Sequence[float], part_size: Sequence[int], canvas_size: Sequence[int],
                 meta: dict | None = None):
        """The transform that puts the part image exactly on canvas box (x0, y0, x1, y1) (aspect must match)."""
        x0, y0, x1, y1 = (float(v) for v in box)
        _check_size("part_size", part_size)
        h, w = int(part_size[0]), int(part_size[1])
        a = (x1 - x0) / w
        if abs((y1 - y0) / h - a) > 1e-6 * max(1.0, a):
            raise ValueError(f"box {tuple(box)} does not have the part's aspect ratio ({w}x{h})")
        return cls(a, (x0, y0), (h, w), (int(canvas_size[0]), int(canvas_size[1])), dict(meta or {}))

    def inverse(self) -> "PatchTransform":
        """The canvas placed in the part image's frame (the same convention, roles swapped)."""
        return PatchTransform(1.0 / self.scale, (-self.offset[0] / self.scale, -self.offset[1] / self.scale),
                              self.canvas_size, self.part_size, dict(self.meta, inverse=True))

    def then(self, other: "PatchTransform") -> "PatchTransform":
        """Compose: first self (part -> canvas A), then other (A -> canvas B)."""
        if tuple(other.part_size) != tuple(self.canvas_size):
            raise ValueError(f"cannot compose: canvas {self.canvas_size} is not the next part {other.part_size}")
        return PatchTransform(self.scale * other.scale,
                              (other.scale * self.offset[0] + other.offset[0],
                               other.scale * self.offset[1] + other.offset[1]),
                              self.part_size, other.canvas_size, dict(self.meta))

    # -- serialisation -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "offset": list(self.offset), "part_size": list(self.part_size),
                "canvas_size": list(self.canvas_size), "matrix": self.matrix, "region": list(self.region),
                "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> "PatchTransform":
        return cls(float(d["scale"]), (float(d["offset"][0]), float(d["offset"][1])),
                   (int(d["part_size"][0]), int(d["part_size"][1])),
                   (int(d["canvas_size"][0]), int(d["canvas_size"][1])), dict(d.get("meta", {})))

    def matrix_tensor(self, device=None, dtype=None):
        """The matrix as a torch [3, 3] tensor (float32 by default), e.g. for ``G.synthesis(transform=...)``."""
        import torch
        return torch.tensor(self.matrix, dtype=dtype or torch.float32, device=device)


class TransformList(list):
    """Several `PatchTransform`s (one per batch image); ``.matrix`` is the [N, 3, 3] stack, so consumers that read
    ``.matrix`` (e.g. the continuous-GAN region renderer) take a batch as readily as a single transform."""

    @property
    def matrix(self) -> list:
        return [t.matrix for t in self]


def warp_to_canvas(image, transform: PatchTransform, *, mode: str = "bilinear", antialias: bool = True):
    """Warp a part image onto the canvas.

    Args:
        image: torch float [B, C, h, w] (any value range) with (h, w) == transform.part_size.
        transform: the placement.
        mode: 'bilinear' or 'nearest' (default: 'bilinear').
        antialias: when the part is shrunk (scale < 1), low-pass it first (area-style) so it does not alias.
    Returns:
        (warped [B, C, H, W], coverage mask [B, 1, H, W] in [0, 1]); outside the part both are 0.
    """
    import torch
    import torch.nn.functional as F

    if image.ndim != 4 or tuple(image.shape[-2:]) != tuple(transform.part_size):
        raise ValueError(f"image must be [B, C, {transform.part_size[0]}, {transform.part_size[1]}], "
                         f"got {tuple(image.shape)}")
    B, C, h, w = image.shape
    H, W = transform.canvas_size
    x = image.float()
    sx = sy = transform.scale
    if antialias and transform.scale < 1.0:
        nh, nw = max(1, round(h * transform.scale)), max(1, round(w * transform.scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        # keep the exact geometry: the resized image still spans the part's full extent
        sx, sy = transform.scale * w / nw, transform.scale * h / nh
    hh, ww = x.shape[-2:]
    ones = torch.ones((B, 1, hh, ww), dtype=x.dtype, device=x.device)
    xs = (torch.arange(W, dtype=torch.float64, device=x.device) + 0.5 - transform.offset[0]) / sx  # resized px
    ys = (torch.arange(H, dtype=torch.float64, device=x.device) + 0.5 - transform.offset[1]) / sy
    gx = (2 * xs / ww - 1).to(x.dtype)
    gy = (2 * ys / hh - 1).to(x.dtype)
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None].expand(B, H, W, 2)
    warped = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
    mask = F.grid_sample(ones, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return warped, mask.clamp(0, 1)


__all__ = ["APOSE_TEMPLATE_SIZE", "APOSE_BODY25_2048", "apose_template", "patch_matrix", "keypoint_zoom_matrix",
           "PatchTransform", "TransformList", "warp_to_canvas"]
