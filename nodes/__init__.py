"""Node registry. Each module in NODE_MODULES (one per capability) exports NODE_CLASS_MAPPINGS and
NODE_DISPLAY_NAME_MAPPINGS; they are merged here in this explicit order. Node ids are stable: never rename one
(keep an alias instead), because saved workflows store them.

A module that fails to import is logged and skipped so the rest of the pack still loads in ComfyUI
(FAILED_MODULES lists them; a test requires it to be empty).
"""
from __future__ import annotations

import importlib
import logging

NODE_MODULES: tuple[str, ...] = (
    "stylegan",
    "editing",
    "insetgan",
    "continuous",
    "pose",
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
        NODE_CLASS_MAPPINGS[_node_id] = _cls
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
