"""Node registry. Each module in NODE_MODULES (one per capability) exports NODE_CLASS_MAPPINGS and
NODE_DISPLAY_NAME_MAPPINGS; they are merged here in this explicit order. Node ids are stable: never rename one
(keep an alias instead), because saved workflows store them.

A module that fails to import is logged and skipped so the rest of the pack still loads in ComfyUI
(FAILED_MODULES lists them; a test requires it to be empty). Heavy dependencies are imported inside the node
functions; when one is missing there, the error says which package and how to install it. Every node function is
wrapped once here (`_guard`): inputs are checked (finite numbers in their declared range, bounded text without NUL
bytes) and stray low-level errors become a HumanGenError naming the node.
"""
from __future__ import annotations

import functools
import importlib
import logging

# import name -> what to install (most come from requirements.txt; these two go in with --no-deps)
_PIP_NAMES = {"cv2": "opencv-python-headless", "mediapipe": "mediapipe==0.10.21 (with --no-deps)",
              "facenet_pytorch": "facenet-pytorch==2.6.0 (with --no-deps)", "skimage": "scikit-image",
              "PIL": "pillow", "mmcv": "mmcv-lite", "open_clip": "open-clip-torch"}


# Low-level errors that bad files or values raise deep inside numpy/torch/zipfile/pickle; at the node boundary they
# become a HumanGenError naming the node (the original stays chained for the log). Interrupts, out-of-memory and the
# host's own exceptions are not in this list and pass through unchanged.
_STRAY_ERRORS: tuple[type[BaseException], ...] = (
    KeyError, IndexError, ValueError, TypeError, ZeroDivisionError, OverflowError, AssertionError, RecursionError,
    EOFError, OSError, UnicodeError, MemoryError, RuntimeError, AttributeError)
# The same kind of error from libraries whose exceptions derive from Exception alone: (module, class name). Looked
# up only when the library is already loaded, so the guard imports nothing.
_LIBRARY_ERRORS: tuple[tuple[str, str], ...] = (("cv2", "error"), ("PIL.Image", "DecompressionBombError"),
                                                 ("huggingface_hub.errors", "StrictDataclassError"),
                                                 ("safetensors", "SafetensorError"))


def _stray_errors() -> tuple[type[BaseException], ...]:
    import sys
    found = tuple(getattr(sys.modules[module], name) for module, name in _LIBRARY_ERRORS
                  if module in sys.modules and isinstance(getattr(sys.modules[module], name, None), type))
    return _STRAY_ERRORS + found


def _number_specs(cls: type) -> dict[str, tuple[str, dict]]:
    """{input name: (INT|FLOAT, options)} from the class's INPUT_TYPES (computed once per class)."""
    cached = cls.__dict__.get("_humangen_number_specs")
    if cached is not None:
        return cached
    specs: dict[str, tuple[str, dict]] = {}
    try:
        declared = cls.INPUT_TYPES()
    except Exception:  # noqa: BLE001 - a listing problem must not stop the node; checks then rely on the host
        declared = {}
    for group in ("required", "optional"):
        for name, spec in (declared.get(group) or {}).items():
            if isinstance(spec, (list, tuple)) and spec and spec[0] in ("INT", "FLOAT"):
                specs[name] = (spec[0], spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    setattr(cls, "_humangen_number_specs", specs)
    return specs


def _check_inputs(node_id: str, cls: type, arguments: dict) -> None:
    """The same checks for every node: numbers finite and within their declared range, texts without NUL bytes
    and of bounded length. Widgets enforce ranges in the UI; workflows from files and API clients do not."""
    import math

    from ..utils import limits
    from ..utils.errors import NodeInputError
    specs = _number_specs(cls)
    for name, value in arguments.items():
        if isinstance(value, str):
            # TEXT_LIMITS {input: chars} lets a node bound one text input itself (a longer limit, its own message)
            own_limit = getattr(cls, "TEXT_LIMITS", {}).get(name)
            if own_limit is None:
                limits.check_text(value, node_id, name)
        elif isinstance(value, float) and not math.isfinite(value):
            raise NodeInputError(node_id, name, f"{value!r} is not a finite number.",
                                 fix="give a finite number (NaN and infinity are refused).")
        elif type(value).__module__.startswith("torch") and getattr(value, "is_floating_point", None) \
                and value.is_floating_point():  # IMAGE, MASK and other tensors
            limits.check_finite(value, node_id, name, "tensor")
        if name in specs and isinstance(value, (int, float)) and not isinstance(value, bool):
            kind, opts = specs[name]
            low, high = opts.get("min"), opts.get("max")
            if kind == "INT" and int(value) != value:
                raise NodeInputError(node_id, name, f"{value!r} is not a whole number.")
            if (low is not None and value < low) or (high is not None and value > high):
                raise NodeInputError(node_id, name, f"{value!r} is out of range.",
                                     fix=f"use a value between {low} and {high}.")


def _guard(node_id: str, cls: type) -> None:
    """Wrap the node's function: inputs are checked first (`_check_inputs`); a missing third-party package becomes
    an error naming it and the fix; a stray low-level error becomes a HumanGenError naming the node."""
    import inspect
    fn = getattr(cls, cls.FUNCTION)
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        from ..utils.errors import HumanGenError, first_line
        try:
            bound = signature.bind_partial(*args, **kwargs).arguments
        except TypeError:
            bound = dict(kwargs)
        _check_inputs(node_id, cls, {k: v for k, v in bound.items() if k not in ("self", "cls")})
        try:
            return fn(*args, **kwargs)
        except HumanGenError:
            raise
        except ModuleNotFoundError as exc:
            root = (exc.name or "").split(".")[0]
            if not root or root == __name__.split(".")[0]:
                raise  # one of our own modules: a packaging bug, not a missing dependency
            raise HumanGenError(
                f"{node_id}: the Python package '{root}' is not installed ({exc}). Fix: run `python install.py` in "
                f"the HumanGen folder with ComfyUI's Python (it installs {_PIP_NAMES.get(root, root)} and the "
                f"rest), then restart ComfyUI.") from exc
        except Exception as exc:  # noqa: BLE001 - re-raised below unless it is a stray low-level error
            if not isinstance(exc, _stray_errors()):
                raise
            from ..utils import host
            if host.is_oom(exc):
                raise  # the host frees memory and reports out-of-memory itself
            text = first_line(exc, 300)
            raise HumanGenError(
                f"{node_id}: could not process its inputs ({type(exc).__name__}{': ' + text if text else ''}). "
                f"Fix: check the connected values and the chosen files (a damaged or wrong kind of file, or an "
                f"input of the wrong size, causes this).") from exc

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
        _guard(_node_id, _cls)
        NODE_CLASS_MAPPINGS[_node_id] = _cls
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
