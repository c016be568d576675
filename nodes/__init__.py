"""Node registry. Each module in NODE_MODULES (one per capability) exports NODE_CLASS_MAPPINGS and
NODE_DISPLAY_NAME_MAPPINGS; they are merged here in this explicit order. Node ids are stable: never rename one
(keep an alias instead), because saved workflows store them.

A module that fails to import is logged and skipped so the rest of the pack still loads in ComfyUI
(FAILED_MODULES lists them; a test requires it to be empty). Heavy dependencies are imported inside the node
functions; when one is missing there, the error says which package and how to install it (`_explain_missing`).
"""
from __future__ import annotations

import functools
import importlib
import logging

# import name -> what to install (most come from requirements.txt; these two go in with --no-deps)
_PIP_NAMES = {"cv2": "opencv-python-headless", "mediapipe": "mediapipe==0.10.21 (with --no-deps)",
              "facenet_pytorch": "facenet-pytorch==2.6.0 (with --no-deps)", "skimage": "scikit-image",
              "PIL": "pillow", "mmcv": "mmcv-lite", "open_clip": "open-clip-torch"}


def _explain_missing(node_id: str, cls: type) -> None:
    """Wrap the node's function: a missing third-party package becomes an error naming it and the fix."""
    fn = getattr(cls, cls.FUNCTION)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ModuleNotFoundError as exc:
            root = (exc.name or "").split(".")[0]
            if not root or root == __name__.split(".")[0]:
                raise  # one of our own modules: a packaging bug, not a missing dependency
            from ..utils.errors import HumanGenError
            raise HumanGenError(
                f"{node_id}: the Python package '{root}' is not installed ({exc}). Fix: run `python install.py` in "
                f"the HumanGen folder with ComfyUI's Python (it installs {_PIP_NAMES.get(root, root)} and the "
                f"rest), then restart ComfyUI.") from exc

    setattr(cls, cls.FUNCTION, run)

NODE_MODULES: tuple[str, ...] = (
    "stylegan",
    "editing",
    "insetgan",
    "continuous",
    "pose",
    "pose_editor",
    "align",
    "smplx",
    "humansd",
    "parts2whole",
    "upscale",
)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
FAILED_MODULES: dict[str, str] = {}

for _name in NODE_MODULES:
    try:
        _module = importlib.import_module(f".{_name}", __name__)
    except Exception as exc:  # noqa: BLE001 - one broken capability must not hide the others
        logging.getLogger("humangen").exception("HumanGen: could not load nodes/%s.py", _name)
        FAILED_MODULES[_name] = f"{type(exc).__name__}: {exc}"
        continue
    for _node_id, _cls in _module.NODE_CLASS_MAPPINGS.items():
        if _node_id in NODE_CLASS_MAPPINGS:
            raise RuntimeError(f"HumanGen: node id {_node_id} is defined twice (nodes/{_name}.py)")
        _explain_missing(_node_id, _cls)
        NODE_CLASS_MAPPINGS[_node_id] = _cls
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
