"""Architecture registry for GAN generators (spandrel style): an explicit ordered list of entries, each with a
`detect(state_dict, init_kwargs)` over key sets/kwargs and a `build(init_kwargs)`. Later capabilities (the
continuous/AnyRes generator) register their entry with `register(..., before="stylegan3")`.

`build_generator(init_kwargs, state_dict)` picks the first entry that detects, builds it and loads the weights
with strict=True. `load_generator(path)` reads any supported checkpoint first (utils/checkpoints.py: the safe
readers and the conversion cache) and builds what it holds.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

import torch

from ..utils import checkpoints
from ..utils.errors import UnsupportedCheckpointError, first_line

log = logging.getLogger("humangen")


@dataclass
class ArchEntry:
    name: str
    detect: Callable[[dict, dict], bool]  # (state_dict, init_kwargs) -> bool
    build: Callable[[dict], torch.nn.Module]  # init_kwargs -> module
    looks_for: str  # human description for error messages


def _is_sg3(sd: dict, kw: dict) -> bool:
    if not sd:  # kwargs only: SG3 kwargs are flat (no synthesis_kwargs dict)
        return "img_resolution" in kw and "synthesis_kwargs" not in kw and "scale_mapping_kwargs" not in kw
    return "synthesis.input.freqs" in sd and any(k.startswith("synthesis.L") for k in sd)


def _is_sg2(sd: dict, kw: dict) -> bool:
    return "synthesis.b4.const" in sd or ("synthesis_kwargs" in kw and not any(k.startswith("synthesis.L") for k in sd)
                                          and "synthesis.input.freqs" not in sd and not sd)


def _sg2_kwargs(sd: dict, kw: dict) -> dict:
    kw = dict(kw)
    const = sd.get("synthesis.b4.const")
    if const is not None and "square" not in kw:
        kw["square"] = bool(const.shape[1] == const.shape[2])
    return kw


def _build_sg2(kw: dict):
    from .stylegan2 import Generator
    return Generator(**kw)


def _build_sg3(kw: dict):
    from .stylegan3 import Generator
    return Generator(**kw)


def _sg3_kwargs(sd: dict, kw: dict) -> dict:
    kw = dict(kw)
    if "square" not in kw:
        layers = sorted({k.split(".")[1] for k in sd if k.startswith("synthesis.L")},
                        key=lambda n: int(n[1:].split("_")[0]))
        if layers:
            width = int(layers[-1].split("_")[1])
            kw["square"] = width == int(kw.get("img_resolution", width))
    return kw


def _is_anyres(sd: dict, kw: dict) -> bool:
    from .anyres import detect
    return detect(sd, kw)


def _build_anyres(kw: dict):
    from .anyres import build
    return build(kw)


ARCHITECTURES: list[ArchEntry] = [
    ArchEntry("anyres", _is_anyres, _build_anyres,
              "AnyRes/UnitedHuman: keys scale_mapping.* / synthesis.L*.scale_affine.* or kwargs scale_mapping_kwargs"),
    ArchEntry("stylegan3", _is_sg3, _build_sg3, "StyleGAN3: keys synthesis.input.freqs + synthesis.L*"),
    ArchEntry("stylegan2", _is_sg2, _build_sg2, "StyleGAN2(-ADA): key synthesis.b4.const"),
]
_KWARG_FIXERS: dict[str, Callable[[dict, dict], dict]] = {"stylegan2": _sg2_kwargs, "stylegan3": _sg3_kwargs}


def register(entry: ArchEntry, before: str | None = None,
             fix_kwargs: Callable[[dict, dict], dict] | None = None) -> None:
    """Add an architecture (before the named one, else at the end). Re-registering a name replaces it."""
    for i, e in enumerate(ARCHITECTURES):
        if e.name == entry.name:
            del ARCHITECTURES[i]
            break
    idx = len(ARCHITECTURES)
    if before is not None:
        idx = next((i for i, e in enumerate(ARCHITECTURES) if e.name == before), idx)
    ARCHITECTURES.insert(idx, entry)
    if fix_kwargs is not None:
        _KWARG_FIXERS[entry.name] = fix_kwargs


def detect_architecture(state_dict: dict, init_kwargs: dict | None = None) -> str:
    kw = init_kwargs or {}
    for e in ARCHITECTURES:
        if e.detect(state_dict, kw):
            return e.name
    looked = "; ".join(e.looks_for for e in ARCHITECTURES)
    sample = ", ".join(sorted(state_dict)[:6])
    raise UnsupportedCheckpointError(
        f"unrecognised generator architecture (looked for: {looked}); the checkpoint's first keys are: {sample}")


def build_generator(init_kwargs: dict, state_dict: dict | None = None, *, arch: str | None = None,
                    strict: bool = True) -> torch.nn.Module:
    """Build our generator for `init_kwargs` (official constructor kwargs) and load `state_dict` (strict).

    Returns an eval-mode module with `.mapping(z, c, truncation_psi, truncation_cutoff)`, `.synthesis(ws, ...)`,
    and z_dim, c_dim, w_dim, num_ws, img_resolution, img_channels, img_height, img_width, arch, init_kwargs.
    """
    sd = dict(state_dict or {})
    kw = _plain(init_kwargs or {})
    name = arch or detect_architecture(sd, kw)
    entry = next((e for e in ARCHITECTURES if e.name == name), None)
    if entry is None:
        raise UnsupportedCheckpointError(f"unknown architecture {name!r}; known: {[e.name for e in ARCHITECTURES]}")
    fixer = _KWARG_FIXERS.get(name)
    if fixer is not None:
        kw = fixer(sd, kw)
    try:
        if sd and strict:
            _check_fits(name, entry.build, kw, sd)
        G = entry.build(kw)
    except TypeError as exc:
        raise UnsupportedCheckpointError(f"{name}: cannot build from the checkpoint's constructor kwargs ({exc})") from exc
    if sd:
        G.load_state_dict(sd, strict=strict)  # strict: _check_fits has already matched every key and shape
    G.init_kwargs = kw
    return G.eval().requires_grad_(False)


def _check_fits(name: str, build: Callable[[dict], torch.nn.Module], kw: dict, sd: dict) -> None:
    """Build the network on the meta device (no memory, no arithmetic) and refuse a state dict that does not hold
    exactly its tensors, before the real build allocates anything: a small file whose kwargs describe a huge
    network is refused here instead of costing gigabytes of random weights."""
    with torch.device("meta"):
        skeleton = build(kw)
    expected = {key: tuple(t.shape) for key, t in skeleton.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(key for key in expected if key in sd and tuple(getattr(sd[key], "shape", ())) != expected[key])
    if missing or unexpected or wrong:
        def few(keys):
            return f"{keys[:8]}{'...' if len(keys) > 8 else ''}"
        shapes = "; ".join(f"{key}: file {tuple(getattr(sd[key], 'shape', ()))}, network {expected[key]}"
                           for key in wrong[:4])
        raise UnsupportedCheckpointError(
            f"{name}: the checkpoint does not match the architecture built from its kwargs: missing {few(missing)}, "
            f"unexpected {few(unexpected)}" + (f", wrong shapes ({shapes})" if wrong else ""))


def _plain(obj):
    """EasyDicts/OrderedDicts/numpy scalars -> plain dicts, lists and Python numbers (json-serialisable)."""
    import numpy as np
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def load_generator(path, *, use_cache: bool = True, device=None):
    """Any supported checkpoint -> our generator module (eval, no grad). NVIDIA pickles are converted once and
    cached as safetensors in `checkpoints.cache_dir()`, keyed on the file's content."""
    path = os.fspath(path)
    ck = None
    cached = checkpoints.conversion_cache_path(path) if use_cache else None
    stale = False  # an unreadable cache entry of ours, replaced below
    if cached is not None and os.path.isfile(cached):
        try:
            ck = checkpoints.read_safetensors(cached)
        except UnsupportedCheckpointError:
            log.warning("HumanGen: ignoring unreadable cache file %s", cached)
            ck, stale = None, True
    if ck is None:
        ck = checkpoints.read_checkpoint(path)
    name = os.path.basename(path)
    if not ck.state_dict:
        raise UnsupportedCheckpointError(
            f"{name}: the file holds no tensors (only constructor settings), so there are no weights to load. "
            f"Fix: use the complete generator file.")
    checkpoints.check_weights(ck.state_dict.items(), name)
    try:
        G = build_generator(checkpoints.generator_kwargs(ck, name), ck.state_dict)
    except UnsupportedCheckpointError:
        raise
    except (RuntimeError, ValueError, KeyError, IndexError, TypeError, AttributeError, ZeroDivisionError,
            OverflowError) as exc:
        raise UnsupportedCheckpointError(
            f"{name}: its tensors do not fit a StyleGAN2/StyleGAN3 generator (wrong architecture or damaged file: "
            f"{type(exc).__name__}: {first_line(exc)}).") from exc
    G.source_path = path
    G.source_info = dict(ck.info, format=ck.source_format)
    if cached is not None and ck.source_format == "nvidia-pkl":
        try:
            checkpoints.save_generator(G, cached, {"source": name, **ck.info}, overwrite=stale)
        except FileExistsError:
            pass  # another process converted the same file at the same time: its copy is identical
        except OSError as exc:
            log.warning("HumanGen: could not write the conversion cache %s (%s)", cached, exc)
    if device is not None:
        G.to(device)
    return G
