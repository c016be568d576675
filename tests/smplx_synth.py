"""A synthetic SMPL-X model file with the real key set and the real vertex count (10475), shaped like a stick
person made of capsules, so that fitting behaves like it does on a body. Built by the tests; never shipped.

Layout: T-pose, metres, Y up, the body faces +Z, the body's left is +X (like SMPL-X). Joint j is the centroid of
8 marker vertices around it (the J_regressor rows). The vertices that smplx's VertexJointSelector picks (nose, eyes,
ears, toes, heels, finger tips) are placed where those landmarks are and skinned to the right joint.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

V = 10475
PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
           20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
           21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53]

_BODY = {
    0: (0.0, 0.0, 0.0), 1: (0.09, -0.08, 0.0), 2: (-0.09, -0.08, 0.0), 3: (0.0, 0.11, -0.01),
    4: (0.10, -0.48, 0.01), 5: (-0.10, -0.48, 0.01), 6: (0.0, 0.24, 0.0), 7: (0.10, -0.88, -0.03),
    8: (-0.10, -0.88, -0.03), 9: (0.0, 0.31, 0.01), 10: (0.11, -0.94, 0.09), 11: (-0.11, -0.94, 0.09),
    12: (0.0, 0.50, -0.01), 13: (0.07, 0.42, 0.0), 14: (-0.07, 0.42, 0.0), 15: (0.0, 0.58, 0.02),
    16: (0.18, 0.44, -0.01), 17: (-0.18, 0.44, -0.01), 18: (0.44, 0.43, -0.02), 19: (-0.44, 0.43, -0.02),
    20: (0.69, 0.43, 0.0), 21: (-0.69, 0.43, 0.0), 22: (0.0, 0.56, 0.06), 23: (0.03, 0.66, 0.08),
    24: (-0.03, 0.66, 0.08),
}
# vertex-joint-selector landmarks: name -> (smplx vertex id, position, skinning joint)
_LANDMARKS = {
    "nose": (9120, (0.0, 0.63, 0.12), 15), "reye": (9929, (-0.032, 0.665, 0.095), 15),
    "leye": (9448, (0.032, 0.665, 0.095), 15), "rear": (616, (-0.075, 0.64, 0.0), 15),
    "lear": (6, (0.075, 0.64, 0.0), 15),
    "LBigToe": (5770, (0.12, -0.97, 0.19), 10), "LSmallToe": (5780, (0.16, -0.97, 0.16), 10),
    "LHeel": (8846, (0.10, -0.97, -0.07), 7), "RBigToe": (8463, (-0.12, -0.97, 0.19), 11),
    "RSmallToe": (8474, (-0.16, -0.97, 0.16), 11), "RHeel": (8635, (-0.10, -0.97, -0.07), 8),
    "lthumb": (5361, (0.78, 0.41, 0.06), 39), "lindex": (4933, (0.86, 0.43, 0.03), 27),
    "lmiddle": (5058, (0.87, 0.43, 0.0), 30), "lring": (5169, (0.86, 0.43, -0.02), 36),
    "lpinky": (5286, (0.84, 0.43, -0.04), 33), "rthumb": (8079, (-0.78, 0.41, 0.06), 54),
    "rindex": (7669, (-0.86, 0.43, 0.03), 42), "rmiddle": (7794, (-0.87, 0.43, 0.0), 45),
    "rring": (7905, (-0.86, 0.43, -0.02), 51), "rpinky": (8022, (-0.84, 0.43, -0.04), 48),
}


def _joints() -> np.ndarray:
    j = np.zeros((55, 3))
    for k, v in _BODY.items():
        j[k] = v
    # fingers: 5 chains of 3 along +x (left) / -x (right) from the wrist, spread in z
    for side, wrist, base in ((1, 20, 25), (-1, 21, 40)):
        for f, dz in enumerate((0.03, 0.0, -0.04, -0.02, 0.05)):  # index, middle, pinky, ring, thumb
            for s in range(3):
                j[base + 3 * f + s] = j[wrist] + (side * (0.08 + 0.025 * s), 0.0 if f != 4 else -0.02, dz)
    return j


def build(num_betas: int = 10, seed: int = 0, pose_blend: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.RandomState(seed)
    J = _joints()
    v = np.zeros((V, 3))
    weights = np.zeros((V, 55))
    used = np.zeros(V, bool)
    landmark_ids = {vid for vid, _, _ in _LANDMARKS.values()}
    for vid, pos, joint in _LANDMARKS.values():
        v[vid] = pos
        weights[vid, joint] = 1.0
        used[vid] = True
    free = iter([i for i in range(V) if i not in landmark_ids])
    jreg = np.zeros((55, V))
    faces: list[tuple[int, int, int]] = []
    # 8 marker vertices per joint (J_regressor = their mean), skinned to the joint itself
    ang = np.arange(8) * 2 * np.pi / 8
    for j in range(55):
        ids = [next(free) for _ in range(8)]
        v[ids] = J[j] + 0.008 * np.stack([np.cos(ang), np.sin(ang), np.zeros(8)], 1)
        weights[ids, j] = 1.0
        jreg[j, ids] = 1.0 / 8
        used[ids] = True
    # capsules along the bones (parent -> child), skinned to the parent joint; grid-triangulated
    bones = [(PARENTS[c], c) for c in range(1, 25)]
    bones += [(15, -1)]  # the head as a short capsule upwards
    rings, per_ring = 10, 12
    for p, c in bones:
        a = J[p]
        b = J[c] if c >= 0 else J[p] + (0, 0.2, 0)
        axis = b - a
        length = np.linalg.norm(axis) + 1e-9
        d = axis / length
        tmp = np.array([0, 0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0, 0])
        e1 = np.cross(d, tmp)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(d, e1)
        radius = 0.09 if p in (0, 3, 6, 9) else (0.08 if c < 0 else 0.05)
        grid = np.zeros((rings, per_ring), int)
        for r in range(rings):
            t = (r + 0.5) / rings
            for k in range(per_ring):
                th = 2 * np.pi * k / per_ring
                vid = next(free)
                grid[r, k] = vid
                v[vid] = a + t * axis + radius * (np.cos(th) * e1 + np.sin(th) * e2)
                weights[vid, p] = 1.0
                used[vid] = True
        for r in range(rings - 1):
            for k in range(per_ring):
                k2 = (k + 1) % per_ring
                faces.append((grid[r, k], grid[r + 1, k], grid[r, k2]))
                faces.append((grid[r + 1, k], grid[r + 1, k2], grid[r, k2]))
    # the remaining vertices: scattered inside the pelvis capsule, skinned to the pelvis
    rest = [i for i in range(V) if not used[i]]
    v[rest] = rng.uniform(-0.05, 0.05, (len(rest), 3))
    weights[rest, 0] = 1.0

    # shape space: 10 (or num_betas) identity dirs + 10 expression dirs (cols 10:20 when K < 400)
    K = max(num_betas, 10) + 10
    shapedirs = np.zeros((V, 3, K))
    y, x = v[:, 1], v[:, 0]
    shapedirs[:, 1, 0] = 0.03 * y                                   # height
    shapedirs[:, 0, 1] = 0.08 * x                                   # width
    shapedirs[:, 1, 2] = 0.06 * np.minimum(y + 0.08, 0.0)           # leg length
    shapedirs[:, 0, 3] = 0.08 * np.sign(x) * np.maximum(np.abs(x) - 0.18, 0.0)  # arm length
    shapedirs[:, 1, 4] = 0.04 * (y > 0.46)                          # neck length
    for k in range(5, K):
        shapedirs[:, :, k] = v @ (rng.randn(3, 3) * 0.01)
    posedirs = np.zeros((V, 3, 486))
    if pose_blend:
        lm = sorted(landmark_ids)
        posedirs[lm] = rng.randn(len(lm), 3, 486) * pose_blend
    return {
        "v_template": v.astype(np.float32),
        "f": np.asarray(faces, dtype=np.int32),
        "J_regressor": jreg.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": np.stack([np.array(PARENTS), np.arange(55)]).astype(np.int64),
        "shapedirs": shapedirs.astype(np.float32),
        "posedirs": posedirs.astype(np.float32),
        "hands_componentsl": np.eye(45, dtype=np.float32),
        "hands_componentsr": np.eye(45, dtype=np.float32),
        "hands_meanl": np.zeros(45, np.float32),
        "hands_meanr": np.zeros(45, np.float32),
        "lmk_faces_idx": np.zeros(51, np.int64),
        "lmk_bary_coords": np.tile(np.array([1.0, 0.0, 0.0], np.float32), (51, 1)),
    }


def write(path: Path, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **build(**kwargs))
    return path
