"""Pictures: the fit preview (projected mesh silhouette + skeleton over the input) and the part-on-canvas composite."""
from __future__ import annotations

import numpy as np
import torch

from ...utils.transform import PatchTransform, warp_to_canvas
from . import keypoints as kp
from .fit import SMPLXFit
from .model import SMPLXBody

FIT_COLOUR = (255, 80, 40)
INPUT_COLOUR = (40, 220, 255)
MESH_COLOUR = np.array([90, 160, 255], dtype=np.float32)


def preview(body: SMPLXBody, fit: SMPLXFit, image: np.ndarray | None = None, *, mesh_alpha: float = 0.45,
            draw_mesh: bool = True, draw_skeleton: bool = True) -> np.ndarray:
    """uint8 [H, W, 3]: the input (or black) with the projected mesh silhouette, the fitted skeleton (orange) and
    the input keypoints (cyan)."""
    import cv2

    H, W = fit.image_size
    canvas = np.zeros((H, W, 3), np.uint8) if image is None else np.ascontiguousarray(image[..., :3]).copy()
    if canvas.shape[:2] != (H, W):
        canvas = cv2.resize(canvas, (W, H), interpolation=cv2.INTER_AREA)
    thick = max(1, round(max(H, W) / 300))
    if draw_mesh:
        verts = body.vertices(fit.global_orient, fit.body_pose, fit.betas)
        s, tx, ty = fit.camera["scale"], fit.camera["tx"], fit.camera["ty"]
        p = np.stack([s * verts[:, 0] + tx, -s * verts[:, 1] + ty], 1)
        mask = np.zeros((H, W), np.uint8)
        tris = np.round(p[body.faces] * 4).astype(np.int32)  # 2 bits of sub-pixel precision
        cv2.fillPoly(mask, list(tris), 255, lineType=cv2.LINE_8, shift=2)
        m = (mask > 0)[..., None].astype(np.float32) * mesh_alpha
        canvas = (canvas.astype(np.float32) * (1 - m) + MESH_COLOUR * m).round().astype(np.uint8)
    if draw_skeleton:
        fitted = np.asarray(fit.fitted_keypoints)
        for i, j in kp.BODY25_LIMBS:
            a, b = tuple(np.round(fitted[i]).astype(int)), tuple(np.round(fitted[j]).astype(int))
            cv2.line(canvas, a, b, FIT_COLOUR, thick, cv2.LINE_AA)
        for (x, y, c), vis in zip(fit.keypoints, fit.visible):
            if vis:
                cv2.circle(canvas, (int(round(x)), int(round(y))), thick + 2, INPUT_COLOUR, thick, cv2.LINE_AA)
    return canvas


def place_part(image: torch.Tensor, tr: PatchTransform, canvas: torch.Tensor | None = None,
               background: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [B, h, w, 3] -> (IMAGE [B, H, W, 3] on the canvas, MASK [B, H, W] coverage).

    With `canvas` (IMAGE of the canvas size), the part is composited over it; otherwise over a flat `background`.
    """
    x = image[..., :3].movedim(-1, 1).float()
    warped, mask = warp_to_canvas(x, tr)
    H, W = tr.canvas_size
    if canvas is not None:
        if tuple(canvas.shape[1:3]) != (H, W):
            raise ValueError(f"the canvas image is {canvas.shape[2]}x{canvas.shape[1]}, the transform's canvas is "
                             f"{W}x{H}")
        base = canvas[..., :3].movedim(-1, 1).float()
        if base.shape[0] != warped.shape[0]:
            base = base.expand(warped.shape[0], -1, -1, -1)
    else:
        base = torch.full_like(warped, float(background))
    # the warp premultiplies by coverage (zero padding): un-premultiplied blend = warped + (1 - mask) * base
    out = warped + (1 - mask) * base
    return out.clamp(0, 1).movedim(1, -1).contiguous(), mask[:, 0].contiguous()
