"""mediapipe 0.10.21 detectors: pose (33 landmarks, `model_complexity=1`), its person segmentation, selfie
segmentation and face detection.

Only 0.10.21's wheel bundles these `.tflite` models (later releases ship none and would try to download), so any
other version is refused with a clear message, and only the bundled models are ever requested (pose
`model_complexity` 0 and 2 are not bundled and would download: never used). Nothing here downloads.

Images are uint8 RGB [H, W, 3]; keypoints come back in pixels (x = landmark.x * W) with mediapipe's
`visibility` as the confidence.
"""
from __future__ import annotations

import os

import numpy as np

from ...utils.errors import HumanGenError
from ...utils.host import quiet_native_logs

REQUIRED_VERSION = "0.10.21"
_BUNDLED = {
    "pose": ("modules/pose_detection/pose_detection.tflite", "modules/pose_landmark/pose_landmark_full.tflite"),
    "selfie": ("modules/selfie_segmentation/selfie_segmentation.tflite",),
    "selfie_landscape": ("modules/selfie_segmentation/selfie_segmentation_landscape.tflite",),
    "face": ("modules/face_detection/face_detection_full_range_sparse.tflite",
             "modules/face_detection/face_detection_short_range.tflite"),
}


class MediapipeUnavailable(HumanGenError):
    """mediapipe is missing, a version without bundled models, or lacks a bundled model file."""


def mediapipe_module(what: str = "pose"):
    """Import mediapipe, check it is 0.10.21 with the bundled `what` models, and return its `solutions`."""
    try:
        import mediapipe
    except ImportError as exc:
        raise MediapipeUnavailable(
            f"mediapipe is not installed ({exc}). Install it with "
            f"`pip install --no-deps mediapipe=={REQUIRED_VERSION}` (see requirements-nodeps.txt).") from None
    version = getattr(mediapipe, "__version__", "?")
    if version != REQUIRED_VERSION:
        raise MediapipeUnavailable(
            f"mediapipe {version} is installed, but HumanGen needs mediapipe=={REQUIRED_VERSION}: it is the last "
            f"release whose wheel bundles the pose, segmentation and face models (later releases download them at "
            f"run time, which HumanGen never does). Fix: `pip install --no-deps mediapipe=={REQUIRED_VERSION}`, or "
            f"choose the mmpose backend.")
    root = os.path.dirname(mediapipe.__file__)
    missing = [f for f in _BUNDLED[what] if not os.path.exists(os.path.join(root, f))]
    if missing:
        raise MediapipeUnavailable(f"mediapipe {version} lacks its bundled model files {missing}; reinstall "
                                   f"mediapipe=={REQUIRED_VERSION}.")
    with quiet_native_logs():
        from mediapipe.python import solutions
    return solutions


def _rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"mediapipe: expected a uint8 RGB image [H, W, 3], got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)


def detect_pose(image: np.ndarray, *, min_detection_confidence: float = 0.5, segmentation: bool = True):
    """Run mediapipe Pose (model_complexity=1, static image) on a uint8 RGB image.

    Returns (keypoints, mask): keypoints float64 [P, 33, 3] (P = 0 or 1; x, y in pixels, visibility as confidence),
    mask float32 [H, W] in [0, 1] (the pose model's person segmentation; zeros when no person or not requested).
    """
    solutions = mediapipe_module("pose")
    img = _rgb(image)
    h, w = img.shape[:2]
    with quiet_native_logs(), solutions.pose.Pose(
            static_image_mode=True, model_complexity=1, enable_segmentation=segmentation,
            min_detection_confidence=float(min_detection_confidence)) as model:
        result = model.process(img)
    mask = np.zeros((h, w), np.float32)
    if result.pose_landmarks is None:
        return np.zeros((0, 33, 3)), mask
    kps = np.array([[lm.x * w, lm.y * h, lm.visibility] for lm in result.pose_landmarks.landmark], np.float64)
    if segmentation and result.segmentation_mask is not None:
        mask = np.clip(np.asarray(result.segmentation_mask, np.float32), 0.0, 1.0)
    return kps[None], mask


def segment(image: np.ndarray, method: str = "selfie") -> np.ndarray:
    """Person mask float32 [H, W] in [0, 1]. method: "selfie" (general model), "selfie_landscape", or "pose"
    (the pose model's segmentation, best for full bodies; zeros when no person is found)."""
    if method == "pose":
        return detect_pose(image, segmentation=True)[1]
    if method not in ("selfie", "selfie_landscape"):
        raise ValueError(f"mediapipe: unknown segmentation method {method!r}")
    solutions = mediapipe_module(method)
    img = _rgb(image)
    with quiet_native_logs(), solutions.selfie_segmentation.SelfieSegmentation(
            model_selection=0 if method == "selfie" else 1) as model:
        result = model.process(img)
    return np.clip(np.asarray(result.segmentation_mask, np.float32), 0.0, 1.0)


def detect_faces(image: np.ndarray, min_confidence: float = 0.5) -> np.ndarray:
    """mediapipe face detection (full-range model) -> float64 [N, 5] boxes (x0, y0, x1, y1, score) in pixels."""
    solutions = mediapipe_module("face")
    img = _rgb(image)
    h, w = img.shape[:2]
    with quiet_native_logs(), solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=float(min_confidence)) as model:
        result = model.process(img)
    boxes = []
    for det in result.detections or []:
        rb = det.location_data.relative_bounding_box
        x0, y0 = rb.xmin * w, rb.ymin * h
        boxes.append((x0, y0, x0 + rb.width * w, y0 + rb.height * h, float(det.score[0])))
    return np.asarray(boxes, np.float64).reshape(-1, 5)
