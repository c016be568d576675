"""From a fitted body (or bare keypoints) to a `PatchTransform` that places the part image on a canvas.

Two targets:
* **template**: UnitedHuman's canonical canvas, the A-pose BODY_25 template on a 2048 canvas (scaled to any square
  `canvas_size`). The mean SMPL-X body in the prior's relaxed A-pose is calibrated once against the template's
  arm-independent keypoints (a least-squares scale + translation: pixels per model unit ``k0`` and the canvas
  position of the pelvis). At fit time the *canonical body* (mean shape, the fitted pose and orientation, pelvis
  on the template's pelvis, ``k0`` pixels per unit) gives a canvas position for every BODY_25 point. The part is
  then placed by least squares between its observed keypoints and those canonical positions, so only what the
  part shows sets its scale (a face crop is scaled by its face, not by a guessed leg length), while the pose
  the prior extrapolated outside a crop places it (a face crop lands where the fitted body's head is).
* **reference**: the frame of another fitted image (e.g. an aligned full-body photo). Weighted least squares on
  the 25 BODY_25 points: the keypoints both images observe when there are at least 3 of them; otherwise also the
  fits' extrapolated positions (weight `eps`), so a crop with few visible joints still gets a sane scale.
With keypoints only (no fit), the same least squares runs on the observed keypoints alone (the "keypoint
alignment" baseline of the paper's ablation); against the template the arms get a low weight, since the template
is in A-pose.
"""
from __future__ import annotations

import numpy as np
import torch

from ...utils.transform import APOSE_BODY25_2048, APOSE_TEMPLATE_SIZE, PatchTransform
from . import keypoints as kp
from .fit import SMPLXFit, _similarity, prior_mean_pose
from .model import SMPLXBody

ARM_KEYPOINTS = (3, 4, 6, 7)  # elbows and wrists in BODY_25


def template_calibration(body: SMPLXBody) -> dict:
    """Pixels per model unit (`k0`) and pelvis position (`anchor`) of the mean body on the 2048 template."""
    cal = body._cache.get("template_calibration")
    if cal is None:
        d = torch.float64
        with torch.no_grad():
            J = body.joints(torch.zeros(1, 3, dtype=d), torch.tensor(prior_mean_pose()[None], dtype=d),
                            torch.zeros(1, body.num_betas, dtype=d))[0].numpy()
        q = np.stack([J[:, 0], -J[:, 1]], 1)
        src = q[list(kp.BODY25_TO_SMPLX)]
        dst = np.asarray(APOSE_BODY25_2048, dtype=np.float64)
        w = np.ones(25)
        w[list(ARM_KEYPOINTS)] = 0.0
        a, b = _similarity(src, dst, w)
        res = np.linalg.norm(a * src + b - dst, axis=1)
        cal = {"k0": float(a), "anchor": (a * q[0] + b).tolist(), "height": body.rest_height(),
               "residual_px": float((res * w).sum() / w.sum())}
        body._cache["template_calibration"] = cal
    return cal


def _canvas_square(canvas_size) -> tuple[int, int]:
    if isinstance(canvas_size, (tuple, list)):
        return int(canvas_size[0]), int(canvas_size[1])
    return int(canvas_size), int(canvas_size)


def fit_to_template(fit: SMPLXFit, canvas_size: int = 1024, eps: float = 0.02) -> PatchTransform:
    """Place the image of `fit` on the canonical A-pose canvas (`canvas_size` square)."""
    tpl = fit.template
    if not tpl or "canonical_body25" not in tpl:
        raise ValueError("this SMPL-X fit has no template placement (saved by an older version); fit it again")
    r = int(canvas_size) / float(tpl.get("template_size", APOSE_TEMPLATE_SIZE))
    dst = np.asarray(tpl["canonical_body25"], dtype=np.float64) * r
    src, vs = _points(fit)
    a, b = _weighted(src, dst, vs, np.ones(25, bool), eps, max(fit.image_size))
    res = np.linalg.norm(a * src + b - dst, axis=1)
    return PatchTransform(float(a), (float(b[0]), float(b[1])), tuple(fit.image_size),
                          _canvas_square(canvas_size),
                          {"target": "template", "method": "smplx", "residual_px": float(res[vs].mean()),
                           "calibration_residual_px": tpl.get("calibration_residual_px", 0.0) * r})


def _weighted(src, dst, vs, vr, eps, size):
    both = vs & vr
    if both.sum() >= 3 and np.ptp(src[both], axis=0).max() > 1e-3 * size:
        w = both.astype(np.float64)  # enough shared observations: the extrapolated joints would only add bias
    else:
        w = np.where(vs, 1.0, eps) * np.where(vr, 1.0, eps)
    a, b = _similarity(src, dst, w)
    if not a > 0:
        raise ValueError("the part and the target do not line up (negative scale); check the keypoints")
    return a, b


def _points(fit: SMPLXFit) -> tuple[np.ndarray, np.ndarray]:
    obs = np.array([(x, y) for x, y, _ in fit.keypoints], dtype=np.float64)
    fitted = np.asarray(fit.fitted_keypoints, dtype=np.float64)
    vis = np.asarray(fit.visible, dtype=bool)
    return np.where(vis[:, None], obs, fitted), vis


def fit_to_reference(fit: SMPLXFit, reference: SMPLXFit, eps: float = 0.02) -> PatchTransform:
    """Place the image of `fit` in the frame of `reference` (same person or a stand-in body)."""
    src, vs = _points(fit)
    dst, vr = _points(reference)
    a, b = _weighted(src, dst, vs, vr, eps, max(fit.image_size))
    both = vs & vr
    res = np.linalg.norm(a * src + b - dst, axis=1)
    return PatchTransform(float(a), (float(b[0]), float(b[1])), tuple(fit.image_size),
                          tuple(reference.image_size),
                          {"target": "reference", "method": "smplx", "shared_keypoints": int(both.sum()),
                           "residual_px": float(res[both].mean()) if both.any() else None})


def _visible(points25, conf_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    xy = np.array([(x, y) for x, y, _ in points25], dtype=np.float64)
    c = np.array([cc for _, _, cc in points25], dtype=np.float64)
    return xy, np.where(c > conf_threshold, c, 0.0)


def _check_spread(src: np.ndarray, w: np.ndarray, what: str) -> None:
    use = w > 0
    if use.sum() < 2 or np.ptp(src[use], axis=0).max() < 1e-6:
        raise ValueError(f"{what}: fewer than 2 distinct visible keypoints; a scale cannot be found")


def keypoints_to_template(points, part_size, canvas_size: int = 1024, conf_threshold: float = 0.2,
                          arm_weight: float = 0.1) -> PatchTransform:
    """Keypoint alignment of a part onto the A-pose template (no body model)."""
    xy, w = _visible(kp.to_body25(points), conf_threshold)
    w = w.copy()
    w[list(ARM_KEYPOINTS)] *= arm_weight
    _check_spread(xy, w, "keypoints")
    dst = np.asarray(APOSE_BODY25_2048, dtype=np.float64) * (int(canvas_size) / APOSE_TEMPLATE_SIZE)
    a, b = _similarity(xy, dst, w)
    return PatchTransform(float(a), (float(b[0]), float(b[1])), (int(part_size[0]), int(part_size[1])),
                          _canvas_square(canvas_size), {"target": "template", "method": "keypoints"})


def keypoints_to_reference(points, part_size, ref_points, ref_size, conf_threshold: float = 0.2) -> PatchTransform:
    """Keypoint alignment of a part onto another image's keypoints (no body model)."""
    xy, w = _visible(kp.to_body25(points), conf_threshold)
    rxy, rw = _visible(kp.to_body25(ref_points), conf_threshold)
    ww = w * rw
    _check_spread(xy, ww, "keypoints shared by the part and the reference")
    a, b = _similarity(xy, rxy, ww)
    return PatchTransform(float(a), (float(b[0]), float(b[1])), (int(part_size[0]), int(part_size[1])),
                          (int(ref_size[0]), int(ref_size[1])), {"target": "reference", "method": "keypoints"})


def rescale_part(tr: PatchTransform, part_size) -> PatchTransform:
    """The same placement for a resized copy of the part image (e.g. keypoints detected on a smaller copy)."""
    h, w = int(part_size[0]), int(part_size[1])
    sy, sx = tr.part_size[0] / h, tr.part_size[1] / w
    if abs(sx - sy) > 0.02 * max(sx, sy):
        raise ValueError(f"the part image {w}x{h} is not a uniformly resized copy of the fitted image "
                         f"{tr.part_size[1]}x{tr.part_size[0]}")
    k = (sx + sy) / 2
    return PatchTransform(tr.scale * k, tr.offset, (h, w), tr.canvas_size, dict(tr.meta))
