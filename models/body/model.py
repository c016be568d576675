"""Loading the user's SMPL-X model (`smplx` package) and a fast, differentiable joints-only forward pass.

The model files come from https://smpl-x.is.tue.mpg.de (free registration; the licence forbids redistribution, so
HumanGen never ships them): ``SMPLX_NEUTRAL.npz`` / ``SMPLX_MALE.npz`` / ``SMPLX_FEMALE.npz``, placed in the
``smplx`` model folder directly or in its ``smplx/`` sub-folder (the layout ``smplx.create`` expects).

`SMPLXBody.joints()` evaluates only what 2-D fitting needs: the 55 skeleton joints (J_regressor on the shaped
template, then forward kinematics) and the 11 vertex landmarks (nose, eyes, ears, toes, heels; linear blend skinning
with pose blend shapes on those vertices only). It equals `smplx.SMPLX.forward(...).joints[:, :66]` (a test checks)
at a fraction of the cost, in float64.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass, field

import numpy as np
import torch

from ...utils.errors import HumanGenError, UnsupportedCheckpointError, first_line

SMPLX_URL = "https://smpl-x.is.tue.mpg.de"
GENDERS = ("neutral", "male", "female")
NUM_LANDMARKS = 11  # nose, r-eye, l-eye, r-ear, l-ear, l-bigtoe, l-smalltoe, l-heel, r-bigtoe, r-smalltoe, r-heel
NUM_JOINTS = 55 + NUM_LANDMARKS
FK_JOINTS = 25  # body chain, jaw, eyes


class SMPLXModelMissing(HumanGenError):
    """The SMPL-X model file for the requested gender is not in the model folder (`pkl_found`: the path of the
    unusable .pkl release found instead, or None)."""

    def __init__(self, message: str, pkl_found: str | None = None):
        super().__init__(message)
        self.pkl_found = pkl_found


def model_filename(gender: str) -> str:
    if gender.lower() not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
    return f"SMPLX_{gender.upper()}.npz"


def find_model_file(gender: str, search_dirs, *, node: str = "HumanGenSMPLXLoader", input_name: str = "gender"):
    """Path of ``SMPLX_<GENDER>.npz`` in any of `search_dirs` or their ``smplx/`` sub-folder, or a clear error."""
    name = model_filename(gender)
    pkl_found = None
    for d in search_dirs:
        for sub in ("", "smplx", os.path.join("models", "smplx")):
            cand = os.path.join(d, sub, name)
            if os.path.isfile(cand):
                return cand
            pkl = cand[:-4] + ".pkl"
            if os.path.isfile(pkl):
                pkl_found = pkl
    where = " or ".join(os.path.join(d, name) for d in search_dirs) or name
    sub_where = " / ".join(os.path.join(d, "smplx", name) for d in search_dirs)
    msg = (f"{node}: input '{input_name}': the SMPL-X model file {name} was not found. Put it at {where}"
           f"{' (or ' + sub_where + ')' if sub_where else ''}. Download 'SMPL-X v1.1 (NPZ)' from {SMPLX_URL} "
           f"(free registration; the SMPL-X licence forbids redistribution, so HumanGen cannot ship it).")
    if pkl_found:
        msg += (f" Found {pkl_found}, but the .pkl release stores chumpy objects that cannot be loaded safely: "
                f"use the .npz file of the same release.")
    raise SMPLXModelMissing(msg, pkl_found)


def _object_members(path: str) -> list[str]:
    """Names of the arrays in an .npz whose dtype needs pickle (read from the .npy headers, nothing unpickled)."""
    bad = []
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                with zf.open(member) as fh:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        _, _, dtype = np.lib.format.read_array_header_1_0(fh)
                    else:
                        _, _, dtype = np.lib.format.read_array_header_2_0(fh)
                if dtype.hasobject:
                    bad.append(member[:-4] if member.endswith(".npy") else member)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise UnsupportedCheckpointError(f"{os.path.basename(path)} is not a readable .npz archive (corrupt or "
                                         f"truncated: {str(exc)[:160]}). Fix: re-download the SMPL-X model from "
                                         f"{SMPLX_URL}.") from exc
    return bad


MAX_SMPLX_BYTES = 2 << 30  # uncompressed; the official v1.1 files are a few hundred MB


def _check_model_arrays(z, name: str) -> None:
    """The shapes SMPL-X's code relies on, checked up front so a wrong file fails here with a clear message
    instead of an IndexError deep inside smplx."""
    def arr(key):
        return z[key]
    v = arr("v_template")
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 1:
        raise UnsupportedCheckpointError(f"{name}: v_template has shape {v.shape}, expected [vertices, 3]")
    nv = v.shape[0]
    f = arr("f")
    if f.ndim != 2 or f.shape[1] != 3 or f.size == 0 or f.min() < 0 or f.max() >= nv:
        raise UnsupportedCheckpointError(f"{name}: faces 'f' do not index the {nv} vertices")
    kt = arr("kintree_table")
    if kt.ndim != 2 or kt.shape[0] != 2 or kt.shape[1] < 55:
        raise UnsupportedCheckpointError(f"{name}: kintree_table has shape {kt.shape}, expected [2, 55]")
    nj = kt.shape[1]
    checks = {"J_regressor": (nj, nv), "weights": (nv, nj)}
    for key, shape in checks.items():
        if arr(key).shape != shape:
            raise UnsupportedCheckpointError(f"{name}: {key} has shape {arr(key).shape}, expected {shape}")
    sd = arr("shapedirs")
    if sd.ndim != 3 or sd.shape[:2] != (nv, 3):
        raise UnsupportedCheckpointError(f"{name}: shapedirs has shape {sd.shape}, expected [{nv}, 3, betas]")
    lmk = arr("lmk_faces_idx")
    if lmk.size and (lmk.min() < 0 or lmk.max() >= f.shape[0]):
        raise UnsupportedCheckpointError(f"{name}: lmk_faces_idx does not index the {f.shape[0]} faces")
    for key in ("v_template", "shapedirs", "J_regressor", "weights"):
        if not np.isfinite(arr(key)).all():
            raise UnsupportedCheckpointError(f"{name}: {key} holds NaN or infinite values")


REQUIRED_KEYS = ("v_template", "f", "J_regressor", "weights", "kintree_table", "shapedirs", "posedirs",
                 "hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr", "lmk_faces_idx",
                 "lmk_bary_coords")


@dataclass(eq=False)
class SMPLXBody:
    """`HUMANGEN_SMPLX_MODEL`: the loaded `smplx.SMPLX` module plus float64 tensors for fast joint evaluation."""

    module: torch.nn.Module
    path: str
    gender: str
    num_betas: int
    num_expression: int
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def faces(self) -> np.ndarray:
        return np.asarray(self.module.faces, dtype=np.int64)

    def _buffers(self) -> dict:
        if not self._cache:
            from smplx.lbs import batch_rodrigues
            m = self.module
            d = torch.float64
            vt = m.v_template.detach().to(d)
            sd = m.shapedirs.detach().to(d)[:, :, : self.num_betas]
            jr = m.J_regressor.detach().to(d)
            idx = m.vertex_joint_selector.extra_joints_idxs[:NUM_LANDMARKS].long()
            nv = vt.shape[0]
            parents = m.parents.detach().long().tolist()
            lw = m.lbs_weights.detach().to(d)[idx]
            # only the body chain (0..21), jaw and eyes (22..24) move the landmarks; hands stay at their mean pose.
            # Any (tiny) weight on a hand joint is dropped and the rest renormalised.
            dropped = float(lw[:, FK_JOINTS:].abs().sum(1).max())
            if dropped > 1e-3:
                logging.getLogger("humangen").warning("%s: landmark vertices carry %.3g skinning weight on hand "
                                                      "joints; ignored by the fast joint evaluation", self.path,
                                                      dropped)
            lw = lw[:, :FK_JOINTS] / lw[:, :FK_JOINTS].sum(1, keepdim=True).clamp_min(1e-8)
            lw = torch.cat([lw, torch.zeros(lw.shape[0], 55 - FK_JOINTS, dtype=d)], 1)
            posedirs = m.posedirs.detach().to(d).reshape(-1, nv, 3)[:, idx, :]  # [486, 11, 3]
            pose_mean = m.pose_mean.detach().to(d).reshape(-1, 3)
            rot_mean = batch_rodrigues(pose_mean)
            feat_mean = (rot_mean[1:] - torch.eye(3, dtype=d)).reshape(-1)
            feat_mean[: 21 * 9] = 0  # the body part of the pose feature is computed per call
            l_template = vt[idx] + torch.einsum("p,pnc->nc", feat_mean, posedirs)
            # forward kinematics by tree level (a handful of batched matmuls instead of one per joint)
            level = [0] * FK_JOINTS
            for j in range(1, FK_JOINTS):
                level[j] = level[parents[j]] + 1
            order = sorted(range(FK_JOINTS), key=lambda j: (level[j], j))
            pos = {j: i for i, j in enumerate(order)}
            levels = []
            for lv in range(max(level) + 1):
                js = [j for j in order if level[j] == lv]
                levels.append((torch.tensor(js), torch.tensor([pos[parents[j]] if j else 0 for j in js])))
            inv = torch.tensor([pos[j] for j in range(FK_JOINTS)])
            self._cache.update(
                j_template=(jr @ vt)[:FK_JOINTS], j_dirs=torch.einsum("jv,vck->jck", jr, sd)[:FK_JOINTS],
                l_template=l_template, l_dirs=sd[idx], l_posedirs=posedirs[: 21 * 9], l_weights=lw[:, :FK_JOINTS],
                parents=torch.tensor(parents[:FK_JOINTS]), levels=levels, inv_order=inv,
                pose_mean=pose_mean[:FK_JOINTS], v_template=vt, shapedirs=sd)
        return self._cache

    def joints(self, global_orient, body_pose, betas):
        """[B,3], [B,63], [B,K] (float64) -> SMPL-X joints [B, 66, 3]: skeleton 0..54 (hand joints are filled with
        their wrist position; fitting does not use them) and the landmarks 55..65."""
        from smplx.lbs import batch_rodrigues
        b = self._buffers()
        B = global_orient.shape[0]
        d = global_orient.dtype
        k = betas.shape[-1]
        J = b["j_template"] + (b["j_dirs"][..., :k] @ betas[:, None, :, None])[..., 0]  # [B,25,3]
        pose = torch.cat([global_orient.reshape(B, 1, 3), body_pose.reshape(B, 21, 3),
                          torch.zeros(B, 3, 3, dtype=d)], 1) + b["pose_mean"]
        rot = batch_rodrigues(pose.reshape(-1, 3)).reshape(B, FK_JOINTS, 3, 3)
        parents = b["parents"]
        rel = torch.cat([J[:, :1], J[:, 1:] - J[:, parents[1:]]], 1)
        G_levels: list = []
        done = None
        for js, ppos in b["levels"]:
            R, t = rot[:, js], rel[:, js]
            if done is None:
                GR, Gt = R, t
            else:
                pR, pt = done[0][:, ppos], done[1][:, ppos]
                GR = pR @ R
                Gt = pt + (pR @ t[..., None])[..., 0]
            G_levels.append((GR, Gt))
            done = (torch.cat([g[0] for g in G_levels], 1), torch.cat([g[1] for g in G_levels], 1))
        GR, Gt = done[0][:, b["inv_order"]], done[1][:, b["inv_order"]]  # world rotations / joint positions
        feat = (rot[:, 1:22] - torch.eye(3, dtype=d)).reshape(B, 1, -1)
        lv = b["l_template"] + (b["l_dirs"][..., :k] @ betas[:, None, :, None])[..., 0]
        lv = lv + (feat @ b["l_posedirs"].reshape(21 * 9, -1)).reshape(B, -1, 3)
        # linear blend skinning of the landmarks: v' = (sum_j w_j GR_j) v + sum_j w_j (Gt_j - GR_j J_j)
        w = b["l_weights"]
        A_t = Gt - (GR @ J[..., None])[..., 0]
        TR = (w @ GR.reshape(B, FK_JOINTS, 9)).reshape(B, -1, 3, 3)
        landmarks = (TR @ lv[..., None])[..., 0] + w @ A_t
        hands = Gt[:, [20] * 15 + [21] * 15]
        return torch.cat([Gt, hands, landmarks], 1)

    def rest_height(self, betas=None) -> float:
        """Height (max - min y) of the shaped template mesh in model units (metres for the real model)."""
        b = self._buffers()
        v = b["v_template"]
        if betas is not None:
            bt = torch.as_tensor(np.asarray(betas, dtype=np.float64))[: b["shapedirs"].shape[-1]]
            v = v + torch.einsum("k,vck->vc", bt, b["shapedirs"][..., : bt.shape[0]])
        return float(v[:, 1].max() - v[:, 1].min())

    @torch.no_grad()
    def vertices(self, global_orient, body_pose, betas) -> np.ndarray:
        """Full mesh vertices [V, 3] (float32, numpy) of one body through `smplx`'s own forward pass."""
        m = self.module
        f = torch.float32
        betas = torch.as_tensor(np.asarray(betas), dtype=f).reshape(1, -1)
        nb = m.shapedirs.shape[-1]
        betas = torch.nn.functional.pad(betas, (0, max(0, nb - betas.shape[1])))[:, :nb]
        out = m(betas=betas, global_orient=torch.as_tensor(np.asarray(global_orient), dtype=f).reshape(1, 3),
                body_pose=torch.as_tensor(np.asarray(body_pose), dtype=f).reshape(1, 63),
                left_hand_pose=torch.zeros(1, m.left_hand_pose.shape[-1]),
                right_hand_pose=torch.zeros(1, m.right_hand_pose.shape[-1]),
                jaw_pose=torch.zeros(1, 3), leye_pose=torch.zeros(1, 3), reye_pose=torch.zeros(1, 3),
                expression=torch.zeros(1, m.num_expression_coeffs), transl=torch.zeros(1, 3), return_verts=True)
        return out.vertices[0].numpy()

    def __repr__(self) -> str:
        return f"SMPLXBody({self.name}, gender={self.gender}, betas={self.num_betas}, expr={self.num_expression})"


def load_smplx(gender: str, search_dirs, *, num_betas: int = 10, num_expression: int = 10,
               node: str = "HumanGenSMPLXLoader", tmp_dir: str | None = None) -> SMPLXBody:
    """Find and load ``SMPLX_<GENDER>.npz``. Arrays that would need pickle (e.g. ``joint2num`` in the official
    file) are dropped: the file is re-packed without them into a temporary file first, so nothing is unpickled.
    A damaged, wrong-kind or oversized file raises UnsupportedCheckpointError naming the node and the file."""
    path = find_model_file(gender, search_dirs, node=node)
    name = os.path.basename(path)
    try:
        from ...utils.limits import check_archive
        check_archive(path, node, "gender", max_bytes=MAX_SMPLX_BYTES, what="SMPL-X .npz model")
        return _load_smplx_file(path, gender, num_betas, num_expression, node, tmp_dir)
    except SMPLXModelMissing:
        raise
    except HumanGenError as exc:
        from ...utils.errors import for_input
        raise for_input(exc, node, "gender", f"use SMPLX_*.npz from {SMPLX_URL}.") from exc
    except (ValueError, KeyError, IndexError, TypeError, RuntimeError, OSError, EOFError, AssertionError,
            ZeroDivisionError, zipfile.BadZipFile) as exc:
        raise UnsupportedCheckpointError(
            f"{node}: input 'gender': {name} is not a usable SMPL-X model ({type(exc).__name__}: "
            f"{first_line(exc, 160)}). Fix: use SMPLX_*.npz from {SMPLX_URL}.") from exc


def _check_runs(module, name: str) -> None:
    """Run the body model once in its rest pose: arrays whose shapes or values the up-front checks do not cover
    (kinematic tree indices, pose and landmark arrays, hand means) fail here, at load, instead of in a later node;
    a model giving non-finite vertices is refused."""
    import torch
    with torch.no_grad():
        out = module(return_verts=True)
    if not (bool(torch.isfinite(out.vertices).all()) and bool(torch.isfinite(out.joints).all())):
        raise UnsupportedCheckpointError(f"{name}: the model gives NaN or infinite vertices in its rest pose")


def _load_smplx_file(path, gender, num_betas, num_expression, node, tmp_dir) -> SMPLXBody:
    import smplx
    name = os.path.basename(path)
    bad = _object_members(path)
    load_from = path
    tmp = None
    try:
        if bad:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files if k not in bad}
            fd, tmp = tempfile.mkstemp(suffix=".npz", prefix="humangen_smplx_", dir=tmp_dir)
            os.close(fd)
            np.savez(tmp, **arrays)
            load_from = tmp
        with np.load(load_from, allow_pickle=False) as z:
            missing = [k for k in REQUIRED_KEYS if k not in z.files]
            if missing:
                raise UnsupportedCheckpointError(
                    f"{node}: input 'gender': {name} is not an SMPL-X model: it lacks {missing}. Fix: use "
                    f"SMPLX_*.npz from {SMPLX_URL}.")
            _check_model_arrays(z, name)
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints warnings about the shape space size
            module = smplx.SMPLX(load_from, gender=gender.lower(), num_betas=int(num_betas),
                                 num_expression_coeffs=int(num_expression), use_pca=False, flat_hand_mean=False,
                                 ext="npz")
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    _check_runs(module, name)
    nb = int(module.shapedirs.shape[-1])
    return SMPLXBody(module=module, path=path, gender=gender.lower(), num_betas=nb,
                     num_expression=int(module.num_expression_coeffs))
