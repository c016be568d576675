"""mmpose 1.3 backend (mmcv-lite): top-down RTMPose / HRNet and bottom-up associative embedding, built from the
configs that ship inside the mmpose wheel (`mmpose/.mim/configs`), weights from the user's `models/mmpose` folder.

Top-down models need person boxes; they come from a person mask (`boxes_from_mask`) or the user, so no mmdet
detector checkpoint is needed. Checkpoints load without running pickle code: `.safetensors`, or `.pth` through
`torch.load(weights_only=True)` (numpy arrays in mmpose's `meta` are allow-listed; nothing else).
Images are uint8 RGB [H, W, 3]; results are COCO-17 keypoints in pixels with mmpose's scores as confidence.
"""
from __future__ import annotations

import os

import numpy as np

from ...utils.errors import HumanGenError, UnsupportedCheckpointError

# name -> (mode, config path inside mmpose/.mim/configs). Any other wheel config path (".py") is accepted too.
MMPOSE_CONFIGS: dict[str, tuple[str, str]] = {
    "rtmpose-m_coco_256x192": ("topdown", "body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py"),
    "rtmpose-l_coco_256x192": ("topdown", "body_2d_keypoint/rtmpose/coco/rtmpose-l_8xb256-420e_coco-256x192.py"),
    "rtmpose-s_coco_256x192": ("topdown", "body_2d_keypoint/rtmpose/coco/rtmpose-s_8xb256-420e_coco-256x192.py"),
    "rtmpose-t_coco_256x192": ("topdown", "body_2d_keypoint/rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py"),
    "hrnet-w32_coco_256x192": (
        "topdown", "body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"),
    "hrnet-w48_coco_256x192": (
        "topdown", "body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w48_8xb32-210e_coco-256x192.py"),
    "ae_hrnet-w32_coco_512x512": (
        "bottomup", "body_2d_keypoint/associative_embedding/coco/ae_hrnet-w32_8xb24-300e_coco-512x512.py"),
}


def _import_mmpose():
    from ...utils import compat
    compat.install_import_hook()
    compat.ensure_mmcv_ext_stub()
    try:
        import mmpose
        from mmpose import apis
    except ImportError as exc:
        raise HumanGenError(f"the mmpose backend needs mmpose 1.3 with mmcv-lite ({exc}); install the pack's "
                            f"requirements (python install.py) or use the mediapipe backend.") from None
    return mmpose, apis


def config_path(name: str) -> tuple[str, str]:
    """(mode, absolute config path) for a registry name or a config path inside the wheel's `configs/`."""
    mmpose, _ = _import_mmpose()
    root = os.path.join(os.path.dirname(mmpose.__file__), ".mim", "configs")
    if name in MMPOSE_CONFIGS:
        mode, rel = MMPOSE_CONFIGS[name]
    elif name.endswith(".py"):
        rel = name
        mode = "bottomup" if any(k in name for k in ("associative_embedding", "dekr", "cid")) else "topdown"
    else:
        raise ValueError(f"mmpose: unknown model config {name!r}; known: {sorted(MMPOSE_CONFIGS)} "
                         f"or a path under mmpose/.mim/configs")
    from ...utils.paths import PathOutsideFolderError, confine
    try:
        path = str(confine(root, rel, node="mmpose", input_name="mmpose_config"))  # config files run as Python
    except PathOutsideFolderError:
        path = ""
    if not path or not os.path.isfile(path):
        raise ValueError(f"mmpose: config {rel!r} is not in the installed mmpose wheel ({root})")
    return mode, path


def load_checkpoint_state_dict(path: str) -> dict:
    """A model state dict from an mmpose checkpoint (`{"meta", "state_dict"}` or a bare state dict), safely."""
    import torch
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        obj = load_file(path, device="cpu")
    else:
        from ...utils.checkpoints import load_torch_file
        allowed = [np.ndarray, np.dtype]  # mmpose's meta.dataset_meta holds numpy arrays
        for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
            try:
                import importlib
                m = importlib.import_module(mod)
                allowed += [m._reconstruct, m.scalar]
            except (ImportError, AttributeError):
                pass
        allowed += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "uint8", "bool")]
        obj = load_torch_file(path, allowed_globals=allowed, what="mmpose checkpoint")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise UnsupportedCheckpointError(f"{os.path.basename(path)} holds no state dict of tensors")
    return {k[7:] if k.startswith("module.") else k: v for k, v in obj.items()}


class MMPoseModel:
    """A built mmpose model plus how to run it (`mode` "topdown" or "bottomup")."""

    def __init__(self, model, mode: str, name: str):
        self.model, self.mode, self.name = model, mode, name

    def __repr__(self) -> str:
        return f"MMPoseModel({self.name!r}, mode={self.mode!r})"


def build_model(config: str, checkpoint: str | None = None, device: str = "cpu",
                flip_test: bool | None = None, bottomup_input_size: int | None = None) -> MMPoseModel:
    """Build an mmpose model from a wheel config; load `checkpoint` (strict) if given, else random weights.
    `flip_test` overrides a top-down config's test-time flip averaging (False: about twice as fast).
    `bottomup_input_size` sets the bottom-up network input (default 512; smaller is faster, coarser).

    A checkpoint whose keys do not match the config raises UnsupportedCheckpointError naming both."""
    _, apis = _import_mmpose()
    mode, path = config_path(config)
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    if cfg.model.get("backbone", {}).get("init_cfg") is not None:
        cfg.model.backbone.init_cfg = None  # the configs point at pretrained URLs: never download
    if flip_test is not None and mode == "topdown" and cfg.model.get("test_cfg") is not None:
        cfg.model.test_cfg.flip_test = bool(flip_test)  # (mmpose's AE head only supports its default)
    if bottomup_input_size and mode == "bottomup":
        for step in cfg.test_dataloader.dataset.pipeline:
            if step.get("type") == "BottomupResize":  # output stride is unchanged, so decoding still fits
                step["input_size"] = (int(bottomup_input_size), int(bottomup_input_size))
    model = apis.init_model(cfg, checkpoint=None, device=str(device))
    if checkpoint:
        sd = load_checkpoint_state_dict(checkpoint)
        own = model.state_dict()
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        bad_shape = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
        if missing or bad_shape or len(unexpected) > len(own) // 10:
            raise UnsupportedCheckpointError(
                f"mmpose checkpoint {os.path.basename(checkpoint)} does not fit config {config!r}: "
                f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
                f"{len(bad_shape)} with other shapes {bad_shape[:3]}. Pick the config the checkpoint was trained with.")
        if unexpected:  # a few extra tensors (e.g. training-only buffers) are harmless: say so and skip them
            import logging
            logging.getLogger("humangen").warning("mmpose checkpoint %s: ignoring %d keys the model does not use: %s",
                                                  os.path.basename(checkpoint), len(unexpected), unexpected[:5])
            sd = {k: v for k, v in sd.items() if k in own}
        model.load_state_dict(sd, strict=True)
    model.eval()
    return MMPoseModel(model, mode, config)


def boxes_from_mask(mask: np.ndarray, max_people: int = 1, threshold: float = 0.5,
                    min_area_ratio: float = 0.1) -> np.ndarray:
    """Person boxes from a mask: connected components of `mask > threshold`, largest first, at most `max_people`,
    ignoring those smaller than `min_area_ratio` of the largest -> float64 [N, 4] (x0, y0, x1, y1), pixels."""
    import cv2
    binary = (np.asarray(mask) > threshold).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    comps = sorted(((stats[i, cv2.CC_STAT_AREA], i) for i in range(1, n)), reverse=True)
    if not comps:
        return np.zeros((0, 4))
    largest = comps[0][0]
    boxes = []
    for area, i in comps[:max(1, int(max_people))]:
        if area < min_area_ratio * largest:
            break
        x, y, w, h = (stats[i, k] for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                            cv2.CC_STAT_HEIGHT))
        boxes.append((x, y, x + w, y + h))
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def detect(model: MMPoseModel, image: np.ndarray, boxes: np.ndarray | None = None, max_people: int = 10):
    """Run the model on a uint8 RGB image -> (keypoints float64 [P, 17, 3] COCO-17 pixels, person scores [P]).

    Top-down needs `boxes` [N, 4] (x0, y0, x1, y1); bottom-up finds people itself (best `max_people` kept)."""
    import torch
    _, apis = _import_mmpose()
    img = np.ascontiguousarray(np.asarray(image)[..., ::-1])  # mmpose configs expect BGR (bgr_to_rgb=True)
    with torch.no_grad():
        if model.mode == "topdown":
            if boxes is None or len(boxes) == 0:
                raise ValueError("mmpose: a top-down model needs at least one person box")
            samples = apis.inference_topdown(model.model, img, bboxes=np.asarray(boxes, np.float32),
                                             bbox_format="xyxy")
            kps = [s.pred_instances.keypoints[0] for s in samples]
            scores = [s.pred_instances.keypoint_scores[0] for s in samples]
        else:
            samples = apis.inference_bottomup(model.model, img)
            inst = samples[0].pred_instances
            kps, scores = list(inst.keypoints), list(inst.keypoint_scores)
    if not kps:
        return np.zeros((0, 17, 3)), np.zeros((0,))
    xy = np.asarray(kps, np.float64).reshape(-1, 17, 2)
    sc = np.asarray(scores, np.float64).reshape(-1, 17)
    out = np.concatenate([xy, sc[..., None]], axis=-1)
    person = sc.mean(axis=1)
    order = np.argsort(-person, kind="stable")[:max(1, int(max_people))]
    return out[order], person[order]
