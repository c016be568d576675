"""Loading image-to-image models (upscalers, face restorers) through spandrel, safely.

spandrel detects the architecture purely from state-dict keys and shapes (ESRGAN/Real-ESRGAN RRDBNet incl. the
pixel-unshuffle x2/x1 variants, SRVGG Compact, SwinIR, HAT, GFPGAN, RestoreFormer, ...). We never let it open
files itself: its `.pt` path tries `torch.jit.load` first, which is not a plain-tensor load. Instead:

1. `load_state_dict(path)`: safetensors, or `torch.load(weights_only=True)` for .pth/.pt/.ckpt/.bin;
2. `canonicalize(sd)`: unwrap `params_ema` (preferred) / `params` / `state_dict` / ..., strip `module.` prefixes;
3. `build_registry(allow_extra)`: a *local* copy of spandrel's registry. `spandrel_extra_arches` (non-commercial
   licences: CodeFormer, ...) is imported lazily and added to that copy only when the caller opts in; when not,
   extra architectures some other code put into the global registry are filtered out of our copy.
4. `load_descriptor(...)`: detect + build, and insist on a single-image model (`ImageModelDescriptor`).

The result is spandrel's `ImageModelDescriptor`, i.e. exactly ComfyUI's `UPSCALE_MODEL` value, in eval mode on CPU.
"""
from __future__ import annotations

import os
from typing import Any, Iterable

from ...utils.checkpoints import check_weights
from ...utils.errors import HumanGenError, UnsupportedCheckpointError

SAFE_EXTENSIONS = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
EXTRA_ARCHES_PACKAGE = "spandrel_extra_arches"
EXTRA_ARCHES_PIN = "spandrel-extra-arches==0.2.0"
# Wrapper keys, most preferred first (Real-ESRGAN/basicsr keep the EMA weights in `params_ema`).
_WRAPPER_KEYS = ("params_ema", "params-ema", "params", "state_dict", "model_state_dict", "model", "net", "g_ema")
_PREFIXES = ("module.", "netG.", "model_ema.")


class ExtraArchesMissingError(HumanGenError):
    """The user opted in to spandrel_extra_arches, but the package is not installed."""


# ---- files --------------------------------------------------------------------------------------------------
def load_state_dict(path: str) -> dict[str, Any]:
    """Read a checkpoint file without executing code. Returns the raw (not yet canonical) mapping.

    Raises UnsupportedCheckpointError for unknown extensions and unreadable/corrupt files, UnsafeCheckpointError
    for pickles that need globals outside torch's weights-only allow-list (such a file could run code).
    """
    name = os.path.basename(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in SAFE_EXTENSIONS:
        raise UnsupportedCheckpointError(
            f"{name}: unsupported file type {ext or '(none)'!r}; expected one of {', '.join(SAFE_EXTENSIONS)}.")
    if not os.path.isfile(path):
        raise HumanGenError(f"{name}: file not found at {path}.")
    if os.path.getsize(path) == 0:
        raise UnsupportedCheckpointError(f"{name}: the file is empty (0 bytes); download it again.")
    if ext == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return dict(load_file(path, device="cpu"))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise UnsupportedCheckpointError(
                f"{name}: not a readable safetensors file ({exc}); the file is probably corrupt or truncated, "
                f"download it again.") from exc
    from ...utils.checkpoints import load_torch_file
    obj = load_torch_file(path, what="upscaler checkpoint")
    if not isinstance(obj, dict):
        raise UnsupportedCheckpointError(
            f"{name}: holds a {type(obj).__name__}, not a state dict (a mapping of parameter names to tensors).")
    return obj


# ---- state dicts --------------------------------------------------------------------------------------------
def canonicalize(sd: dict[str, Any], *, name: str = "checkpoint") -> dict[str, Any]:
    """Unwrap training wrappers (`params_ema` before `params`), drop non-tensor entries, strip common prefixes."""
    import torch

    for _ in range(3):  # wrappers can nest ({'state_dict': {'params_ema': ...}})
        for key in _WRAPPER_KEYS:
            inner = sd.get(key)
            if isinstance(inner, dict) and any(isinstance(v, (torch.Tensor, dict)) for v in inner.values()):
                sd = inner
                break
        else:
            if len(sd) == 1 and isinstance(next(iter(sd.values())), dict):
                sd = next(iter(sd.values()))
                continue
            break
    tensors = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise UnsupportedCheckpointError(
            f"{name}: no tensors found (top-level keys: {sorted(map(str, sd))[:8]}); not a model checkpoint.")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    _check_layer_numbers(tensors, name)
    return tensors


def _check_layer_numbers(tensors: dict[str, Any], name: str) -> None:
    """Refuse sizes that do not come from the file's data, before spandrel builds from them: a key numbering a
    layer far beyond the tensors (spandrel sizes layer lists from the highest number, so three tensors named up to
    `body.40003` built 20000 layers, 3 GB; in a genuine file no number exceeds twice the tensor count, even with
    parameter-free layers between), and empty tensors (an 8 KB SwinIR file declared window and mask sizes in empty
    tensors' shapes and built 3.9 GB of buffers)."""
    limit = 2 * len(tensors) + 64
    for key, tensor in tensors.items():
        if tensor.numel() == 0 and tensor.dim() > 0:  # spandrel reads window sizes and counts from shape[0]
            raise UnsupportedCheckpointError(
                f"{name}: {key[:80]} is an empty tensor of shape {tuple(tensor.shape)[:4]}; a genuine model stores "
                f"values in every tensor (spandrel would size the network from the empty one). Fix: use the "
                f"original release file.")
        numbers = [part for part in key.split(".") if part.isascii() and part.isdigit()]  # int("²") fails
        if numbers and (max(map(len, numbers)) >= 12 or max(map(int, numbers)) > limit):
            raise UnsupportedCheckpointError(
                f"{name}: the key {key[:80]!r} numbers a layer beyond anything the file's {len(tensors)} tensors "
                f"could hold (a damaged or hostile file: the network would be built with that many layers). Fix: "
                f"use the original release file.")


# ---- registry -----------------------------------------------------------------------------------------------
def _is_extra(support) -> bool:
    return type(support.architecture).__module__.split(".")[0] == EXTRA_ARCHES_PACKAGE


def build_registry(allow_extra: bool = False):
    """A local spandrel ArchRegistry: the main architectures, plus spandrel_extra_arches when `allow_extra`.

    The global `spandrel.MAIN_REGISTRY` is never modified (we add to a copy)."""
    import importlib

    from ...utils import compat
    compat.ensure_torchvision_ops()  # spandrel imports torchvision (LaMa); CPU torch needs the nms shim first
    from spandrel import ArchRegistry, MAIN_REGISTRY

    registry = ArchRegistry()
    registry.add(*[s for s in MAIN_REGISTRY.architectures("insertion") if not _is_extra(s)])
    if allow_extra:
        try:
            extra = importlib.import_module(EXTRA_ARCHES_PACKAGE)
        except ImportError as exc:
            raise ExtraArchesMissingError(
                f"extra architectures were requested but the optional package {EXTRA_ARCHES_PACKAGE} is not "
                f"installed ({exc}). Install it with `pip install -c constraints.txt {EXTRA_ARCHES_PIN}` (its "
                f"architectures, e.g. CodeFormer, carry non-commercial licences), or turn the option off.") from exc
        registry.add(*extra.EXTRA_REGISTRY.architectures("insertion"), ignore_duplicates=True)
    return registry


def architecture_ids(registry) -> list[str]:
    return [str(s.architecture.id) for s in registry.architectures("detection")]


# ---- descriptors --------------------------------------------------------------------------------------------
def load_descriptor(source: str | dict, *, allow_extra: bool = False, name: str | None = None,
                    purposes: Iterable[str] | None = None):
    """Load a single-image model from a file path or a state dict; returns a spandrel ImageModelDescriptor.

    Args:
        source: path of a checkpoint (.safetensors/.pth/.pt/.ckpt/.bin) or an already loaded mapping.
        allow_extra: also detect spandrel_extra_arches architectures (non-commercial licences; opt-in).
        name: shown in error messages (default: the file name).
        purposes: accepted descriptor purposes (e.g. {"FaceSR"}); None accepts every single-image model.
    """
    from spandrel import ImageModelDescriptor, UnsupportedModelError

    if isinstance(source, (str, os.PathLike)):
        name = name or os.path.basename(source)
        raw = load_state_dict(os.fspath(source))
    else:
        name = name or "state dict"
        raw = source
    sd = canonicalize(raw, name=name)
    check_weights(sd.items(), name)
    registry = build_registry(allow_extra)
    try:
        desc = registry.load(sd)
    except UnsupportedModelError:
        extra_note = "" if allow_extra else (
            f" Non-commercial architectures (CodeFormer, ...) need the '{EXTRA_ARCHES_PACKAGE}' option.")
        sample = ", ".join(sorted(sd)[:5])
        raise UnsupportedCheckpointError(
            f"{name}: not an image model spandrel recognises (keys start {sample}, ...). Looked for: "
            f"{', '.join(architecture_ids(registry))}.{extra_note}") from None
    except (KeyError, RuntimeError, ValueError, IndexError, TypeError, AssertionError, ZeroDivisionError) as exc:
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 300 else detail[:300] + " ..."
        raise UnsupportedCheckpointError(
            f"{name}: looks like a known architecture but its tensors do not fit it ({type(exc).__name__}: "
            f"{detail}); the file may be incomplete or a variant spandrel does not support.") from exc
    if not isinstance(desc, ImageModelDescriptor):
        raise UnsupportedCheckpointError(
            f"{name}: is a {desc.architecture.name} model ({desc.purpose}), which needs a mask as well; only "
            f"single-image models (upscalers, restorers) can be used here.")
    if purposes is not None and desc.purpose not in set(purposes):
        raise UnsupportedCheckpointError(
            f"{name}: is a {desc.architecture.name} model for {desc.purpose!r}; expected {sorted(purposes)}.")
    return desc.eval()


def describe(desc) -> str:
    """One line about a descriptor, for logs and errors."""
    return (f"{desc.architecture.name} x{desc.scale} ({desc.purpose}, {desc.input_channels}->{desc.output_channels} "
            f"channels, tags {list(desc.tags)})")
