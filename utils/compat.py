"""Compatibility fixes for third-party packages, applied lazily and only when needed.

1. torchvision: on CPU-only torch, pip picks a CUDA build of torchvision whose import fails with
   "operator torchvision::nms does not exist" (its C extension cannot load). transformers, diffusers, spandrel and
   mmpose all import torchvision, so before the first `import torchvision` we define the `torchvision::nms`
   (and `qnms`) operator schemas with a pure-torch CPU kernel. `install_import_hook()` (called by the pack's
   `__init__`, costing no import) does this just in time, the first time anything imports torchvision.
2. mmcv-lite has no compiled `mmcv._ext`; mmpose imports `mmcv.ops` in one head. `ensure_mmcv_ext_stub()` puts
   a module with `__spec__.loader = None` there, which mmengine reads as "mmcv-full not available".
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading

_lock = threading.Lock()
_nms_done = False


def nms_reference(boxes, scores, iou_threshold: float):
    """Greedy non-maximum suppression on CPU. boxes [N,4] (x1,y1,x2,y2), scores [N] -> kept indices, by score."""
    import torch
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True)
    suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        xx1 = torch.maximum(x1[i], x1)
        yy1 = torch.maximum(y1[i], y1)
        xx2 = torch.minimum(x2[i], x2)
        yy2 = torch.minimum(y2[i], y2)
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[i] + areas - inter).clamp(min=1e-12)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def ensure_torchvision_ops() -> None:
    """Define `torchvision::nms`/`qnms` with CPU kernels unless a working torchvision already did."""
    global _nms_done
    with _lock:
        if _nms_done:
            return
        _nms_done = True
        if "torchvision" in sys.modules:
            return  # already imported (e.g. by the ComfyUI host): nothing to fix, and nothing we could fix
        import torch
        try:
            if torch._C._dispatch_has_kernel_for_dispatch_key("torchvision::nms", "CPU"):
                return
        except RuntimeError:
            pass  # "operator torchvision::nms does not exist": define it below
        try:
            lib = torch.library.Library("torchvision", "DEF")
        except RuntimeError:  # namespace exists already: only add what is missing
            lib = torch.library.Library("torchvision", "FRAGMENT")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.impl("nms", nms_reference, "CPU")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.impl("qnms", lambda d, s, t: nms_reference(d.dequantize(), s.dequantize(), t), "CPU")
        ensure_torchvision_ops._lib = lib  # keep the registration alive
        _defined_by_us.append(True)


_defined_by_us: list[bool] = []


def _mark_ops_available(torchvision_module) -> None:
    # torchvision gates its Python ops on "did _C load"; ours are registered, so nms/batched_nms may run.
    if _defined_by_us:
        torchvision_module.extension._has_ops = lambda: True


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    """Runs `ensure_torchvision_ops()` right before the first import of torchvision, then steps aside.

    It stays installed until torchvision is actually executed: a mere `importlib.util.find_spec("torchvision")`
    probe (mediapipe, transformers and others do that) must not use it up, or the later real import would miss
    `_mark_ops_available` and torchvision's `nms` would refuse to run."""

    _busy = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision" or self._busy:
            return None
        ensure_torchvision_ops()
        import importlib.util
        self._busy = True
        try:
            spec = importlib.util.find_spec("torchvision")  # the real finders (we answer None while busy)
        finally:
            self._busy = False
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        hook = self

        def exec_then_mark(module):
            exec_module(module)
            _mark_ops_available(module)
            try:
                sys.meta_path.remove(hook)
            except ValueError:
                pass

        spec.loader.exec_module = exec_then_mark
        return spec


def ensure_torchvision():
    """Import torchvision (working nms on CPU-only torch) and return it."""
    install_import_hook()
    import torchvision
    return torchvision


def install_import_hook() -> None:
    if "torchvision" in sys.modules or any(isinstance(f, _TorchvisionHook) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionHook())


def ensure_mmcv_ext_stub() -> None:
    """Make `import mmcv._ext` succeed on mmcv-lite (see module docstring)."""
    if "mmcv._ext" in sys.modules:
        return
    try:
        import importlib.util
        if importlib.util.find_spec("mmcv._ext") is not None:
            return  # a full mmcv with compiled ops
    except (ImportError, ValueError):
        pass
    import types
    stub = types.ModuleType("mmcv._ext")
    stub.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", None)

    def _missing(name):
        if name.startswith("__"):  # inspect/pickle probe dunders (`__file__`, ...): plain "not there"
            raise AttributeError(name)

        def unavailable(*args, **kwargs):
            raise ImportError(f"mmcv._ext.{name} needs the compiled mmcv (mmcv-lite is installed); "
                              "this model head is not supported")

        # mmcv's ext_loader asserts `hasattr(ext, fun)` at import: exist, fail only when called
        return unavailable

    stub.__getattr__ = _missing
    sys.modules["mmcv._ext"] = stub
