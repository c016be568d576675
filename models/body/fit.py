"""SMPLify-style fitting of SMPL-X (orientation, body pose, shape, weak-perspective camera) to 2-D keypoints.

Projection (weak perspective, the viewer on +Z looking down -Z, image y down):
``p = s * (X, -Y) + (tx, ty)`` for a joint ``(X, Y, Z)`` of the posed body (global orientation applied), `s` in
pixels per model unit (metre). A body facing the camera faces +Z, so its left side (+X) is on the image's right.

Objective (residuals in units of 1 % of the projected body height, so crops and full bodies behave alike):
* robust reprojection: Geman-McClure on every visible keypoint, weighted by its confidence;
* pose prior: a Gaussian around a relaxed A-pose (per-joint stiffness: spine and neck stiffer, hinge joints' off
  axes stiff), annealed over the stages; no VPoser (its checkpoints are not loadable safely; see README);
* joint limits: knees and elbows bend one way only (hinge penalties), SMPLify's sign convention;
* shape prior: L2 on betas;
* orientation term against depth ambiguity: the body's up axis should stay in the image plane (no lean toward or
  away from the camera that foreshortening cannot tell apart), plus a weak upright term.
Schedule: camera + global orientation first (pose held at the prior mean), then pose + shape in three annealed
stages. L-BFGS with a strong-Wolfe line search in float64; deterministic (no randomness anywhere).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from . import keypoints as kp
from .model import SMPLXBody


class FitError(ValueError):
    """The keypoints cannot constrain a fit (too few visible, degenerate)."""


@dataclass
class FitSettings:
    conf_threshold: float = 0.2      # keypoints with confidence <= this are hidden
    min_visible: int = 3             # fewer visible keypoints than this is an error
    camera_steps: int = 3            # L-BFGS outer steps (each up to `inner_iterations`) for stage 1
    pose_steps: tuple = (2, 2, 3)    # outer steps of the three annealed pose+shape stages
    inner_iterations: int = 20
    pose_prior: tuple = (4.0, 0.4, 0.04)
    shape_prior: tuple = (1.0, 0.1, 0.02)
    limit_weight: float = 100.0
    orientation_weight: float = 10.0
    upright_weight: float = 0.1
    robust_sigma: float = 10.0       # Geman-McClure scale, in % of body height
    fit_shape: bool = True


# prior mean: relaxed A-pose (shoulders down ~57 degrees); body_pose index = (joint - 1) * 3 + axis
TORSO = ("nose", "neck", "r_shoulder", "l_shoulder", "mid_hip", "r_hip", "l_hip", "r_eye", "l_eye", "r_ear", "l_ear")


def prior_mean_pose() -> np.ndarray:
    m = np.zeros(63)
    m[(16 - 1) * 3 + 2] = -1.0   # left shoulder about z
    m[(17 - 1) * 3 + 2] = 1.0    # right shoulder about z
    return m


def _pose_stiffness() -> np.ndarray:
    w = np.ones((21, 3))
    for j in (3, 6, 9):              # spine
        w[j - 1] = 4.0
    for j in (12, 15):               # neck, head
        w[j - 1] = 2.0
    for j in (4, 5):                 # knees: hinge about x
        w[j - 1, 1:] = 20.0
    for j in (18, 19):               # elbows: hinge about y
        w[j - 1, 0] = 20.0
        w[j - 1, 2] = 20.0
    for j in (10, 11, 13, 14):       # feet, collars
        w[j - 1] = 4.0
    return w.reshape(-1)


def _joint_limits(body_pose):
    # SMPLify: penalise knees bending forward (x < 0) and elbows bending backward (left y > 0, right y < 0)
    bp = body_pose.reshape(-1, 21, 3)
    terms = [torch.relu(-bp[:, 3, 0]), torch.relu(-bp[:, 4, 0]), torch.relu(bp[:, 17, 1]), torch.relu(-bp[:, 18, 1])]
    return sum((t ** 2).sum() for t in terms)


def _rotate(aa, v):
    from smplx.lbs import batch_rodrigues
    return batch_rodrigues(aa.reshape(-1, 3))[0] @ v


@dataclass
class SMPLXFit:
    """`HUMANGEN_SMPLX_FIT` (one body): parameters, camera, fitted 2-D keypoints and the fit error."""

    betas: list
    global_orient: list
    body_pose: list
    camera: dict                      # {"scale": px per unit, "tx": px, "ty": px, "model": "weak_perspective"}
    image_size: tuple                 # (height, width)
    keypoint_format: str
    keypoints: list                   # input [(x, y, c)] in BODY_25 order (missing: c = 0)
    fitted_keypoints: list            # fitted [(x, y)] in BODY_25 order
    joints2d: list                    # all 66 projected SMPL-X joints [(x, y)]
    visible: list                     # bool per BODY_25 keypoint used by the fit
    fit_error_px: float               # confidence-weighted mean reprojection error on the visible keypoints
    keypoint_errors_px: list
    gender: str = "neutral"
    model_name: str = ""
    facing: str = "camera"
    expression: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    # canonical placement on UnitedHuman's 2048 A-pose template, computed at fit time so that placing the part
    # needs no model: {"canonical_body25": where the mean-shape body in the fitted pose puts each BODY_25 point}
    template: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["version"] = 1
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SMPLXFit":
        d = dict(d)
        d.pop("version", None)
        d["image_size"] = tuple(d["image_size"])
        names = set(cls.__dataclass_fields__)
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown SMPL-X fit fields {sorted(unknown)}")
        return cls(**d)

    def save(self, path: str) -> str:
        """Write JSON exclusively (`utils.paths.write_exclusive`): never half-written, never replacing a file."""
        from ...utils.paths import write_exclusive
        path = os.path.abspath(path)
        write_exclusive(path, json.dumps(self.to_dict()).encode("utf-8"), node="HumanGenSMPLXFit")
        return path

    @classmethod
    def load(cls, path: str) -> "SMPLXFit":
        from ...utils.limits import read_json_file
        return cls.from_dict(read_json_file(path))


def project(joints, s, t):
    """[B,N,3] joints, scale [B], translation [B,2] -> pixels [B,N,2]."""
    xy = torch.stack([joints[..., 0], -joints[..., 1]], -1)
    return s[:, None, None] * xy + t[:, None, :]


def _similarity(src: np.ndarray, dst: np.ndarray, w: np.ndarray):
    """Weighted least-squares dst ~ a * src + b (uniform scale, translation)."""
    w = w / w.sum()
    ms, md = (w[:, None] * src).sum(0), (w[:, None] * dst).sum(0)
    ds, dd = src - ms, dst - md
    den = (w * (ds ** 2).sum(1)).sum()
    a = (w * (ds * dd).sum(1)).sum() / max(den, 1e-12)
    return a, md - a * ms


def _facing(points25) -> str:
    votes = 0.0
    for left, right in ((5, 2), (12, 9), (16, 15), (18, 17)):
        xl, _, cl = points25[left]
        xr, _, cr = points25[right]
        if cl > 0 and cr > 0:
            votes += (xl - xr)
    return "away" if votes < 0 else "camera"


@contextlib.contextmanager
def _one_thread():
    """The fit runs thousands of tiny tensor ops: intra-op threads only add synchronisation (3x slower on a busy
    2-core machine). Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def fit_smplx(body: SMPLXBody, points, image_size, *, settings: FitSettings | None = None,
              callback: Callable[[int, int], None] | None = None) -> SMPLXFit:
    """Fit one body to keypoints.

    Args:
        body: the loaded SMPL-X model.
        points: [(x, y, c)] in COCO-17, OpenPose-18 or BODY_25 order (pixels).
        image_size: (height, width) of the image the keypoints belong to.
        settings: schedule and weights (default: FitSettings()).
        callback: called as callback(step, total) after every optimiser step; may raise to interrupt.
    Returns:
        SMPLXFit. Raises FitError when fewer than `settings.min_visible` keypoints are visible.
    """
    # ComfyUI runs every node under torch.inference_mode(): re-enable autograd for the optimiser, and drop joint
    # buffers cached under inference mode (inference tensors cannot be saved for backward).
    with _one_thread(), torch.inference_mode(False), torch.enable_grad():
        if any(isinstance(v, torch.Tensor) and v.is_inference() for v in body._cache.values()):
            body._cache.clear()
        return _fit(body, points, image_size, settings or FitSettings(), callback)


def _fit(body, points, image_size, st, callback) -> SMPLXFit:
    fmt = kp.detect_format(len(points))
    p25 = kp.to_body25(points)
    H_img, W_img = int(image_size[0]), int(image_size[1])
    d = torch.float64
    conf = np.array([c if c > st.conf_threshold else 0.0 for _, _, c in p25])
    xy = np.array([(x, y) for x, y, _ in p25], dtype=np.float64)
    visible = conf > 0
    n_vis = int(visible.sum())
    if n_vis < st.min_visible:
        raise FitError(f"only {n_vis} keypoints are visible (confidence > {st.conf_threshold}); the fit needs at "
                       f"least {st.min_visible}")
    spread = np.ptp(xy[visible], axis=0).max()
    if spread < 1e-3 * max(H_img, W_img, 1):
        raise FitError("the visible keypoints all sit on one spot; they cannot fix a scale")
    weights = conf * np.array(kp.BODY25_WEIGHTS)
    jidx = torch.tensor(kp.BODY25_TO_SMPLX)

    K = body.num_betas
    mean_pose = torch.tensor(prior_mean_pose(), dtype=d)[None]
    stiff = torch.tensor(_pose_stiffness(), dtype=d)[None]
    facing = _facing(p25)
    go0 = [0.0, math.pi, 0.0] if facing == "away" else [0.0, 0.0, 0.0]
    global_orient = torch.tensor([go0], dtype=d)
    betas = torch.zeros(1, K, dtype=d)
    with torch.no_grad():
        j0 = body.joints(global_orient, mean_pose, betas)[0, jidx].numpy()
    q0 = np.stack([j0[:, 0], -j0[:, 1]], 1)
    a, b = _similarity(q0[visible], xy[visible], weights[visible])
    if not a > 0:
        a = abs(a) if abs(a) > 0 else max(H_img, W_img) / 2.0
        b = (weights[visible, None] * xy[visible]).sum(0) / weights[visible].sum() - a * q0[visible].mean(0)
    unit = a * body.rest_height() / 100.0  # 1 % of the projected body height, in pixels
    log_s = torch.tensor([math.log(a)], dtype=d, requires_grad=True)
    t = torch.tensor(np.asarray(b, dtype=np.float64)[None], dtype=d, requires_grad=True)
    global_orient.requires_grad_(True)
    body_pose = mean_pose.clone().requires_grad_(True)
    betas.requires_grad_(True)
    target = torch.tensor(xy, dtype=d)[None]
    w = torch.tensor(weights, dtype=d)[None]
    # stage 1 (camera + orientation) looks at the torso and head only, as SMPLify does, when enough is visible
    torso = np.zeros(25)
    torso[[kp.BODY25_NAMES.index(n) for n in TORSO]] = 1.0
    w_torso = torch.tensor(weights * torso, dtype=d)[None] if (visible & (torso > 0)).sum() >= 3 else w
    sig2 = st.robust_sigma ** 2
    up = torch.tensor([0.0, 1.0, 0.0], dtype=d)

    def objective(pose_w: float, shape_w: float, with_pose: bool):
        s = log_s.exp()
        J = body.joints(global_orient, body_pose, betas)[:, jidx]
        r = (project(J, s, t) - target) / unit
        e2 = (r ** 2).sum(-1)
        data = ((w if with_pose else w_torso) * sig2 * e2 / (sig2 + e2)).sum()
        u = _rotate(global_orient, up)
        loss = data + st.orientation_weight * u[2] ** 2 + st.upright_weight * (1.0 - u[1])
        if with_pose:
            loss = loss + pose_w * (stiff * (body_pose - mean_pose) ** 2).sum() + shape_w * (betas ** 2).sum()
            loss = loss + st.limit_weight * _joint_limits(body_pose)
        return loss

    stages = [([log_s, t, global_orient], st.camera_steps, 0.0, 0.0, False)]
    shape_on = st.fit_shape and K > 0
    for i, n in enumerate(st.pose_steps):
        params = [log_s, t, global_orient, body_pose] + ([betas] if shape_on else [])
        stages.append((params, n, st.pose_prior[i], st.shape_prior[i], True))
    total = sum(n for _, n, *_ in stages)
    step = 0
    for params, n, pw, sw, with_pose in stages:
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=st.inner_iterations, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-10, tolerance_change=1e-12, history_size=20)

        def closure():
            opt.zero_grad()
            loss = objective(pw, sw, with_pose)
            loss.backward()
            return loss

        for _ in range(n):
            opt.step(closure)
            step += 1
            if callback is not None:
                callback(step, total)

    with torch.no_grad():
        s = log_s.exp()
        J = body.joints(global_orient, body_pose, betas)
        p_all = project(J, s, t)[0].numpy()
        s, t = float(s), t.detach()
    fitted = p_all[list(kp.BODY25_TO_SMPLX)]
    err = np.linalg.norm(fitted - xy, axis=1)
    fit_err = float((err * weights)[visible].sum() / weights[visible].sum())
    from .placement import template_calibration  # placement builds on this module
    cal = template_calibration(body)
    with torch.no_grad():  # the canonical body: mean shape, the fitted pose and orientation
        Jc = body.joints(global_orient.detach(), body_pose.detach(), torch.zeros_like(betas))[0].numpy()
    qc = np.stack([Jc[:, 0], -Jc[:, 1]], 1)
    canon = cal["k0"] * (qc[list(kp.BODY25_TO_SMPLX)] - qc[0]) + np.asarray(cal["anchor"])
    template = {"canonical_body25": canon.tolist(), "template_size": 2048,
                "calibration_residual_px": cal["residual_px"]}
    return SMPLXFit(
        template=template,
        betas=betas.detach()[0].tolist(), global_orient=global_orient.detach()[0].tolist(),
        body_pose=body_pose.detach()[0].tolist(),
        camera={"scale": float(s), "tx": float(t[0, 0]), "ty": float(t[0, 1]), "model": "weak_perspective"},
        image_size=(H_img, W_img), keypoint_format=fmt, keypoints=[list(map(float, p)) for p in p25],
        fitted_keypoints=fitted.tolist(), joints2d=p_all.tolist(), visible=visible.tolist(),
        fit_error_px=fit_err, keypoint_errors_px=[float(e) if v else -1.0 for e, v in zip(err, visible)],
        gender=body.gender, model_name=body.name, facing=facing,
        expression=[0.0] * body.num_expression, settings=json.loads(json.dumps(asdict(st))))


def body_joints_3d(body: SMPLXBody, fit: SMPLXFit) -> np.ndarray:
    """The fitted body's 66 joints [66, 3] (global orientation applied) in model units."""
    d = torch.float64
    with torch.no_grad():
        J = body.joints(torch.tensor([fit.global_orient], dtype=d), torch.tensor([fit.body_pose], dtype=d),
                        torch.tensor([fit.betas], dtype=d)[:, : body.num_betas])
    return J[0].numpy()


__all__ = ["FitSettings", "FitError", "SMPLXFit", "fit_smplx", "project", "prior_mean_pose", "body_joints_3d"]
