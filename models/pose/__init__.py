"""Pose toolkit models: detectors (mediapipe, mmpose), person segmentation, face boxes and the full-body aligner.

Entry points (images are uint8 RGB [H, W, 3] numpy arrays, coordinates in pixels):
- `detect_mediapipe(image, keypoint_threshold)` / `detect_mmpose(image, model, ...)` -> `Detection`
- `segment_person(image, method)` -> float32 mask [H, W]
- `align.align_full_body(image, mask, people, ...)` -> `align.AlignResult`
- `faces.detect_faces_mtcnn`, `mediapipe_backend.detect_faces`, `faces.faces_from_keypoints`
- `mmpose_backend.build_model(config, checkpoint)`, `mmpose_backend.MMPOSE_CONFIGS`
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...utils import pose as posefmt

BACKENDS = ("mediapipe", "mmpose_topdown", "mmpose_bottomup")
SEGMENT_METHODS = ("mediapipe_selfie", "mediapipe_selfie_landscape", "mediapipe_pose")


@dataclass
class Detection:
    """People found in one image: keypoints [P, K, 3] (pixels, confidence) in `layout`, person scores [P], and the
    person mask float32 [H, W] when the backend made one."""

    keypoints: np.ndarray
    layout: str
    scores: np.ndarray
    mask: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    def coco17(self) -> list[np.ndarray]:
        return list(posefmt.convert_keypoints(self.keypoints, self.layout, "coco17"))

    def frame(self, width: int, height: int, layout: str = "openpose18") -> dict:
        """This detection as one POSE_KEYPOINT frame (people carry their "score")."""
        return posefmt.make_frame(list(self.keypoints), width, height, layout=layout, src_layout=self.layout,
                                  scores=[float(s) for s in self.scores])


def clean_keypoints(kps: np.ndarray, threshold: float, width: int, height: int) -> np.ndarray:
    """Zero points with confidence <= threshold or outside the canvas (OpenPose's 'not detected'); values are
    rounded to float32 so that every pose file format stores them exactly."""
    k = np.asarray(kps, np.float64).copy()
    bad = (k[..., 2] <= threshold) | (k[..., 0] < 0) | (k[..., 1] < 0) | (k[..., 0] > width) | (k[..., 1] > height)
    k[bad] = 0.0
    return k.astype(np.float32).astype(np.float64)


def _person_scores(k: np.ndarray) -> np.ndarray:
    c = k[..., 2]
    n = np.maximum((c > 0).sum(-1), 1)
    return (c.sum(-1) / n).astype(np.float32).astype(np.float64)


def detect_mediapipe(image: np.ndarray, keypoint_threshold: float = 0.3, min_detection_confidence: float = 0.5,
                     segmentation: bool = True) -> Detection:
    """mediapipe Pose (one person at most) -> Detection in the mediapipe-33 layout, with its person mask."""
    from . import mediapipe_backend
    h, w = image.shape[:2]
    kps, mask = mediapipe_backend.detect_pose(image, min_detection_confidence=min_detection_confidence,
                                              segmentation=segmentation)
    kps = clean_keypoints(kps, keypoint_threshold, w, h)
    keep = (kps[..., 2] > 0).any(-1)
    kps = kps[keep]
    return Detection(kps, "mediapipe33", _person_scores(kps), mask if segmentation else None)


def detect_mmpose(image: np.ndarray, model, keypoint_threshold: float = 0.3, max_people: int = 1,
                  boxes: np.ndarray | None = None, mask: np.ndarray | None = None) -> Detection:
    """mmpose top-down (boxes given, or from `mask`, or from mediapipe's person mask) or bottom-up -> COCO-17."""
    from . import mmpose_backend
    h, w = image.shape[:2]
    if model.mode == "topdown" and (boxes is None or len(boxes) == 0):
        if mask is None:
            mask = segment_person(image, "mediapipe_pose")
        boxes = mmpose_backend.boxes_from_mask(mask, max_people=max_people)
        if len(boxes) == 0:
            return Detection(np.zeros((0, 17, 3)), "coco17", np.zeros((0,)), mask)
    kps, _ = mmpose_backend.detect(model, image, boxes=boxes, max_people=max_people)
    kps = clean_keypoints(kps, keypoint_threshold, w, h)
    keep = (kps[..., 2] > 0).any(-1)
    kps = kps[keep][:max(1, int(max_people))]
    return Detection(kps, "coco17", _person_scores(kps), mask)


def segment_person(image: np.ndarray, method: str = "mediapipe_selfie") -> np.ndarray:
    """Person mask float32 [H, W] in [0, 1] (see SEGMENT_METHODS)."""
    from . import mediapipe_backend
    table = {"mediapipe_selfie": "selfie", "mediapipe_selfie_landscape": "selfie_landscape",
             "mediapipe_pose": "pose"}
    if method not in table:
        raise ValueError(f"segment: unknown method {method!r}; known: {SEGMENT_METHODS}")
    return mediapipe_backend.segment(image, table[method])
