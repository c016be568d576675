"""Face boxes: MTCNN (facenet-pytorch's bundled P/R/O-net weights; InsetGAN's official detector), mediapipe face
detection, or boxes derived from body keypoints. Boxes are float64 [N, 5] = (x0, y0, x1, y1, score) in pixels.

MTCNN uses torchvision's `batched_nms`; on CPU-only torch that works through the pack's import hook
(`utils/compat.py`), which the pack's `__init__` installs.
"""
from __future__ import annotations

import numpy as np


def detect_faces_mtcnn(image: np.ndarray, min_confidence: float = 0.9, min_face_size: int = 20,
                       device: str = "cpu") -> np.ndarray:
    """MTCNN on a uint8 RGB image [H, W, 3] -> [N, 5] boxes sorted by score (highest first)."""
    from ...utils import compat
    compat.install_import_hook()
    try:
        from facenet_pytorch.models.mtcnn import MTCNN
    except ImportError as exc:
        from ...utils.errors import HumanGenError
        raise HumanGenError(f"MTCNN needs facenet-pytorch 2.6 ({exc}); install it with "
                            f"`pip install --no-deps facenet-pytorch==2.6.0` or use the mediapipe method.") from None
    import torch
    img = np.ascontiguousarray(np.asarray(image, np.uint8))
    if min(img.shape[:2]) < min_face_size:  # no face fits: MTCNN's image pyramid would be empty (and raise)
        return np.zeros((0, 5))
    # facenet-pytorch loads its bundled P/R/O-net state dicts with torch.load (weights_only by default)
    detector = MTCNN(keep_all=True, min_face_size=int(min_face_size), device=torch.device(device))
    with torch.no_grad():
        boxes, probs = detector.detect(img)
    if boxes is None:
        return np.zeros((0, 5))
    out = np.concatenate([np.asarray(boxes, np.float64).reshape(-1, 4),
                          np.asarray(probs, np.float64).reshape(-1, 1)], axis=1)
    out = out[out[:, 4] >= min_confidence]
    return out[np.argsort(-out[:, 4], kind="stable")]


def faces_from_keypoints(people_coco17, threshold: float = 0.3) -> np.ndarray:
    """Face boxes from COCO-17 keypoints of each person (see `utils.pose.face_box_from_keypoints`) -> [N, 5]."""
    from ...utils.pose import face_box_from_keypoints
    boxes = [face_box_from_keypoints(k, threshold) for k in people_coco17]
    return np.asarray([b for b in boxes if b is not None], np.float64).reshape(-1, 5)


def expand_boxes(boxes: np.ndarray, scale: float = 1.0, square: bool = False) -> np.ndarray:
    """Scale boxes about their centres (optionally to squares of the longer side); scores kept."""
    b = np.asarray(boxes, np.float64).reshape(-1, 5).copy()
    c = (b[:, :2] + b[:, 2:4]) / 2
    half = (b[:, 2:4] - b[:, :2]) / 2 * scale
    if square:
        half = np.repeat(half.max(axis=1, keepdims=True), 2, axis=1)
    b[:, :2], b[:, 2:4] = c - half, c + half
    return b


def boxes_to_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """A float32 [H, W] mask that is 1 inside any box (pixel centres inside the box) and 0 elsewhere."""
    mask = np.zeros((height, width), np.float32)
    ys = np.arange(height) + 0.5
    xs = np.arange(width) + 0.5
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 5)[:, :4]:
        rows = (ys >= y0) & (ys <= y1)
        cols = (xs >= x0) & (xs <= x1)
        mask[np.ix_(rows, cols)] = 1.0
    return mask
