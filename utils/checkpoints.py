"""Safe checkpoint loading for GAN generators (and any other state-dict user).

Formats:
- NVIDIA network pickles (`network-snapshot-*.pkl`, StyleGAN-Human v2/v3, PTI outputs, UnitedHuman): read with an
  allow-listed unpickler that NEVER executes the Python source embedded in the file. Every persistent object
  becomes a `PersistentRecord` (class name, sha1 of its module source, state); the generator record
  (`G_ema`, else `G`) is walked into a flat state dict + constructor kwargs. Anything outside `ALLOWED_GLOBALS`
  raises `UnsafeCheckpointError` naming the global.
- `.safetensors`: tensors + `init_kwargs` (json) in the metadata (our export/cache format).
- `.pt` / `.pth` / `.ckpt`: `torch.load(weights_only=True)`.
A converted pickle is cached as safetensors under `cache_dir()` (`$HUMANGEN_CACHE_DIR`, else the user cache
folder), never next to the user's file.

Public API: `read_checkpoint(path) -> Checkpoint`, `generator_kwargs(ck, name)`, `save_generator(G, path)`,
`safe_load_pickle(fileobj)`, `load_torch_file(path)`, `cache_dir()`, `conversion_cache_path(path)`.
Building the generator a checkpoint holds is `models.load_generator(path)` (utils/ never imports models/).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .errors import HumanGenError, UnsafeCheckpointError, UnsupportedCheckpointError, first_line, shown
from .limits import check_archive, parse_json


CACHE_VERSION = "1"
PICKLE_EXTS = (".pkl", ".pickle")
TORCH_EXTS = (".pt", ".pth", ".ckpt", ".bin")


class EasyDict(dict):
    """Stand-in for `dnnlib.EasyDict`: a dict with attribute access (no code from the file)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        del self[name]


@dataclass
class PersistentRecord:
    """What NVIDIA's `persistence._reconstruct_persistent_obj` would have built, without running its source."""

    class_name: str
    module_src_sha1: str
    state: dict
    version: int | None = None
    module_src_len: int = 0

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())


def _reconstruct_persistent_obj(meta):
    """Replacement for `torch_utils.persistence._reconstruct_persistent_obj`: returns a record, never execs."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafeCheckpointError(f"unsupported persistent-object record (type {meta.get('type') if isinstance(meta, dict) else type(meta).__name__!r})")
    src = meta.get("module_src") or ""
    if not isinstance(src, str):
        src = str(src)
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise UnsafeCheckpointError("persistent-object record has a non-dict state")
    return PersistentRecord(class_name=str(meta.get("class_name")), module_src_sha1=hashlib.sha1(src.encode()).hexdigest(),
                            state=state, version=meta.get("version"), module_src_len=len(src))


class _TFNetworkStub(dict):
    """Placeholder for `dnnlib.tflib.network.Network` (TensorFlow pickles): recognised only to refuse clearly."""

    def __setstate__(self, state):
        self["_tf_state"] = state


def _load_storage_from_bytes(b: bytes):
    """A tensor storage an NVIDIA pickle holds as the bytes of a torch.save archive, refused before inflation if
    that archive is a zip bomb (the pickle itself can be small)."""
    import torch
    if zipfile.is_zipfile(io.BytesIO(b)):
        check_archive(b, "HumanGen", "file", max_bytes=MAX_CHECKPOINT_BYTES, what="tensor storage")
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


def _check_tensor_views(obj, name: str, depth: int = 0) -> None:
    """Refuse a tensor that holds more elements than its storage (a stride-0 view: a 600-byte file can declare
    2^31 elements, which the first copy materialises). Walks the dicts, lists and tuples torch.load returns."""
    import torch
    if depth > 64:
        raise UnsupportedCheckpointError(f"{name}: nested more than 64 levels deep; not a checkpoint")
    if isinstance(obj, torch.Tensor):
        if obj.layout is not torch.strided or obj.is_quantized or obj.is_nested:
            raise UnsupportedCheckpointError(
                f"{name}: holds a {str(obj.layout).replace('torch.', '')}{' quantized' if obj.is_quantized else ''} "
                f"tensor; model files store plain dense tensors. Fix: use the official release file.")
        if obj.numel() * obj.element_size() > obj.untyped_storage().nbytes():
            raise UnsupportedCheckpointError(
                f"{name}: a tensor of shape {tuple(obj.shape)} repeats the {obj.untyped_storage().nbytes()} bytes "
                "stored for it (a stride-0 view); checkpoints store every value. Fix: use the official release "
                "file.")
    elif isinstance(obj, dict):
        for value in obj.values():
            _check_tensor_views(value, name, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _check_tensor_views(value, name, depth + 1)


def _rebuild_tensor_checked(storage, *args):
    """torch._utils._rebuild_tensor_v2 for the NVIDIA-pickle unpickler, refusing stride-0 views as they appear."""
    import torch._utils as tu
    tensor = tu._rebuild_tensor_v2(storage, *args)
    _check_tensor_views(tensor, "checkpoint")
    return tensor


def _finite(tensor) -> bool:
    """No NaN or infinity in a floating-point tensor. aminmax is one pass without a temporary (17x faster than
    isfinite().all() on a CPU: a fraction of a second for a 5 GB model); NaN propagates into its min and max."""
    import torch
    try:
        low, high = torch.aminmax(tensor)
    except (RuntimeError, NotImplementedError):  # dtypes without aminmax (float8)
        return bool(torch.isfinite(tensor.float()).all())
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def check_weights(named_tensors, name: str, fix: str | None = None) -> None:
    """Refuse model weights no network can use: complex tensors, and NaN or infinity in floating-point ones (a
    damaged download or a bad half-precision conversion; the images would be NaN, black or noise). Checked
    when a model loads, one tensor at a time. `fix` replaces the generic advice (e.g. with a download link)."""
    import torch
    for key, tensor in named_tensors:
        if not isinstance(tensor, torch.Tensor):
            continue
        if tensor.is_complex():
            raise UnsupportedCheckpointError(f"{name}: {str(key)[:80]} holds complex numbers; model weights are "
                                             f"real. Fix: {fix or 'use the official release file.'}")
        if tensor.is_floating_point() and tensor.numel() and not _finite(tensor):
            raise UnsupportedCheckpointError(f"{name}: {str(key)[:80]} holds NaN or infinite values (a damaged file "
                                             f"or a bad conversion). Fix: "
                                             f"{fix or 'download it again, or convert it again from the original.'}")


MAX_RECONSTRUCT_ELEMENTS = 1 << 16


def bounded_numpy_reconstruct(subtype, shape, dtype):
    """numpy's `_reconstruct` for the allow-listed unpicklers. numpy's own pickles call it with shape (0,) and then
    fill the array from the file's bytes (`__setstate__`); a large shape here allocates memory the file never held
    (a 100-byte pickle asked for 2 GB), so it is refused."""
    try:
        from numpy._core import multiarray as ma  # numpy 2
    except ImportError:  # numpy 1
        from numpy.core import multiarray as ma
    dims = shape if isinstance(shape, (tuple, list)) else (shape,)
    count = 1
    for n in dims:
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise UnsupportedCheckpointError(f"a pickled numpy array has the shape {shape!r}")
        count *= n
    if count > MAX_RECONSTRUCT_ELEMENTS:
        raise UnsupportedCheckpointError(f"a pickled numpy array declares {count} elements before its data (numpy "
                                         "writes 0); not a file numpy wrote")
    return ma._reconstruct(subtype, shape, dtype)


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    if not isinstance(obj, str):
        raise UnsafeCheckpointError("_codecs.encode called with a non-string")
    import codecs
    return codecs.encode(obj, encoding, errors)


def _rebuild_from_type_v2(func, new_type, args, state):
    import torch
    if new_type not in (torch.Tensor, torch.nn.Parameter):
        raise UnsafeCheckpointError(f"tensor subclass {new_type!r} is not allowed")
    ret = func(*args)
    if type(ret) is not new_type:
        ret = ret.as_subclass(new_type)
    return ret


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import numpy as np
    import torch
    import torch._utils as tu
    try:
        from numpy._core import multiarray as ma  # numpy 2
    except ImportError:  # numpy 1
        from numpy.core import multiarray as ma
    table: dict[tuple[str, str], Any] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("dnnlib", "EasyDict"): EasyDict,
        ("dnnlib.tflib.network", "Network"): _TFNetworkStub,
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("_codecs", "encode"): _codecs_encode,  # protocol-2 pickles store bytes as encode(str, 'latin1')
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("builtins", "complex"): complex,
        ("__builtin__", "set"): set,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_checked,
        ("torch._utils", "_rebuild_parameter"): tu._rebuild_parameter,
        ("torch._utils", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch", "Tensor"): torch.Tensor,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    if hasattr(tu, "_rebuild_parameter_with_state"):
        table[("torch._utils", "_rebuild_parameter_with_state")] = tu._rebuild_parameter_with_state
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "_reconstruct")] = bounded_numpy_reconstruct
        table[(mod, "scalar")] = ma.scalar
    for name in ("float16", "float32", "float64", "bfloat16", "int8", "uint8", "int16", "int32", "int64", "bool"):
        table[("torch", name)] = getattr(torch, name)
    for name in ("FloatStorage", "HalfStorage", "DoubleStorage", "BFloat16Storage", "LongStorage", "IntStorage",
                 "ByteStorage", "BoolStorage", "CharStorage", "ShortStorage"):
        if hasattr(torch, name):
            table[("torch", name)] = getattr(torch, name)
    for name in ("float16", "float32", "float64", "int8", "uint8", "int16", "int32", "int64", "bool_"):
        table[("numpy", name)] = getattr(np, name)
    return table


_ALLOWED: dict[tuple[str, str], Any] | None = None


def allowed_globals() -> dict[tuple[str, str], Any]:
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = _allowed_globals()
    return _ALLOWED


class SafeUnpickler(pickle.Unpickler):
    """Unpickler whose `find_class` only resolves `allowed_globals()`; persistent ids are refused."""

    def find_class(self, module: str, name: str):
        obj = allowed_globals().get((module, name))
        if obj is None:
            raise UnsafeCheckpointError(
                f"refusing to load: the pickle references the global '{module}.{name}', which is not on the "
                f"allow-list of plain network data (it could run code). Only NVIDIA network pickles "
                f"(persistent records, tensors, numpy arrays, EasyDicts) are accepted.")
        return obj

    def persistent_load(self, pid):
        raise UnsafeCheckpointError(f"refusing to load: unexpected persistent id {str(pid)[:80]!r} in the pickle")


def safe_load_pickle(fileobj) -> Any:
    """Unpickle with the allow-list. Raises UnsafeCheckpointError / UnsupportedCheckpointError (corrupt data)."""
    try:
        return SafeUnpickler(fileobj).load()
    except HumanGenError:  # already says what is wrong
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RuntimeError, MemoryError, UnicodeDecodeError, OverflowError) as exc:
        raise UnsupportedCheckpointError(
            f"the pickle is truncated or corrupt ({type(exc).__name__}: {str(exc)[:200]}). Download the file "
            f"again and check its size/hash.") from exc


# ---- records -> state dict + kwargs ------------------------------------------------------------------------------
def record_state_dict(rec: PersistentRecord, prefix: str = "") -> "OrderedDict[str, Any]":
    """Flatten a module record: `_parameters` and `_buffers` (minus non-persistent ones), recursing `_modules`."""
    import torch
    out: OrderedDict[str, Any] = OrderedDict()
    st = rec.state
    skip = set(st.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for k, v in (st.get(group) or {}).items():
            if v is None or (group == "_buffers" and k in skip):
                continue
            if not isinstance(v, torch.Tensor):
                raise UnsupportedCheckpointError(f"{prefix}{k}: expected a tensor, found {type(v).__name__}")
            out[prefix + k] = v.detach().clone() if isinstance(v, torch.nn.Parameter) else v
    for k, child in (st.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise UnsupportedCheckpointError(f"{prefix}{k}: unexpected module object {type(child).__name__}")
        out.update(record_state_dict(child, prefix + k + "."))
    return out


_GEN_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


def record_init_kwargs(rec: PersistentRecord) -> dict:
    kw = rec.init_kwargs
    for name, value in zip(_GEN_POSITIONAL, rec.init_args):
        kw.setdefault(name, value)
    return kw


@dataclass
class Checkpoint:
    """A generator checkpoint read from disk: state dict, constructor kwargs and provenance."""

    state_dict: dict
    init_kwargs: dict
    source_format: str  # 'nvidia-pkl' | 'safetensors' | 'torch'
    path: str = ""
    info: dict = field(default_factory=dict)


def _pick_generator(obj, path: str) -> tuple[PersistentRecord, str]:
    if isinstance(obj, PersistentRecord):
        return obj, "<top>"
    values = list(obj.values()) if isinstance(obj, dict) else list(obj) if isinstance(obj, (tuple, list)) else [obj]
    if any(isinstance(o, _TFNetworkStub) for o in values):
        raise UnsupportedCheckpointError(
            f"{os.path.basename(path)} is a TensorFlow (dnnlib.tflib) pickle, e.g. StyleGAN-Human v1 / StyleGAN1. "
            f"Only PyTorch StyleGAN2-ADA/StyleGAN3 pickles are supported.")
    if isinstance(obj, dict):
        for key in ("G_ema", "g_ema", "G"):
            if isinstance(obj.get(key), PersistentRecord):
                return obj[key], key
            if isinstance(obj.get(key), _TFNetworkStub):
                raise UnsupportedCheckpointError(
                    f"{os.path.basename(path)}: '{key}' is a TensorFlow network; only PyTorch pickles are supported.")
        keys = sorted(map(str, obj))[:10]
        raise UnsupportedCheckpointError(
            f"{os.path.basename(path)}: no generator found (looked for 'G_ema', then 'G'; the file has keys {keys}).")
    raise UnsupportedCheckpointError(f"{os.path.basename(path)}: unexpected pickle content {type(obj).__name__}")


def read_nvidia_pickle(path: str) -> Checkpoint:
    """NVIDIA network pkl -> Checkpoint of its G_ema (else G), without executing embedded code."""
    with open(path, "rb") as f:
        obj = safe_load_pickle(f)
    rec, key = _pick_generator(obj, path)
    sd = record_state_dict(rec)
    kw = record_init_kwargs(rec)
    if not sd:
        raise UnsupportedCheckpointError(f"{os.path.basename(path)}: the generator record '{key}' holds no tensors")
    info = {"class_name": rec.class_name, "module_src_sha1": rec.module_src_sha1, "key": key}
    return Checkpoint(sd, kw, "nvidia-pkl", path, info)


def read_safetensors(path: str) -> Checkpoint:
    from safetensors import safe_open
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types; re-raised with context
        raise UnsupportedCheckpointError(
            f"{os.path.basename(path)}: not a readable .safetensors file (truncated or corrupt: "
            f"{type(exc).__name__}: {str(exc)[:200]}).") from exc
    try:
        kw = parse_json(meta["init_kwargs"], f"{os.path.basename(path)}: init_kwargs metadata") \
            if "init_kwargs" in meta else {}
    except ValueError as exc:
        raise UnsupportedCheckpointError(f"{exc}. Fix: save the generator again.") from None
    if not isinstance(kw, dict):
        raise UnsupportedCheckpointError(f"{os.path.basename(path)}: init_kwargs metadata must be a JSON object. "
                                         f"Fix: save the generator again.")
    info = {k: v for k, v in meta.items() if k != "init_kwargs"}
    return Checkpoint(sd, kw, "safetensors", path, info)


MAX_CHECKPOINT_BYTES = 64 << 30  # uncompressed size of a zip-based torch checkpoint


def _refused_global(text: str) -> str | None:
    """The global torch's weights-only loader refused, from its message (never its advice, which says to turn the
    safety off)."""
    import re
    for pattern in (r"unsupported GLOBAL ([\w.]+)", r"GLOBAL ([\w.]+) was not an allowed global",
                    r"global '([\w.]+)'"):
        found = re.search(pattern, text, re.IGNORECASE)
        if found:
            return found.group(1)
    return None


def load_torch_file(path: str, *, allowed_globals: list | None = None, what: str = "checkpoint",
                    node: str = "HumanGen", input_name: str = "file"):
    """`torch.load(path, map_location='cpu', weights_only=True)` (plus `allowed_globals`, e.g. numpy scalars) with
    clear errors. A file that needs code execution raises UnsafeCheckpointError naming the refused global; a
    truncated, corrupt or wrong-kind file raises UnsupportedCheckpointError; a zip bomb is refused before it is
    inflated. Torch's own advice to retry with weights_only=False is never passed on."""
    import torch
    name = os.path.basename(path)
    if zipfile.is_zipfile(path):
        check_archive(path, node, input_name, max_bytes=MAX_CHECKPOINT_BYTES, what=f"torch {what}")
    try:
        if allowed_globals:
            with torch.serialization.safe_globals(allowed_globals):
                loaded = torch.load(path, map_location="cpu", weights_only=True)
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        refused = _refused_global(text)
        if refused:
            raise UnsafeCheckpointError(
                f"{name}: refused to load: the pickle refers to {refused}, which is outside the allow-list of plain "
                f"tensors, so loading it could execute code from the file (HumanGen never does that). Fix: use a "
                f".safetensors version of this {what}, or the official release file.") from exc
        raise UnsupportedCheckpointError(
            f"{name}: not a readable PyTorch {what}: the pickle is truncated or corrupt, or stores objects other "
            f"than plain tensors (which HumanGen does not load). Fix: download it again and check its size/hash, or "
            f"use a .safetensors version.") from exc
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError, TypeError,
            AttributeError, MemoryError, OverflowError, UnicodeDecodeError) as exc:
        first = first_line(exc, 160)
        if isinstance(exc, OSError):  # e.g. "[Errno 22] Invalid argument" from a read past a truncated end
            first = "the file ends early or cannot be read"
        hint = " TorchScript archives are not supported (they contain code)." if "constants.pkl" in str(exc) else ""
        raise UnsupportedCheckpointError(
            f"{name}: truncated or corrupt, or not a PyTorch {what} ({type(exc).__name__}: {first}). Fix: download it "
            f"again and check its size/hash.{hint}") from exc
    _check_tensor_views(loaded, name)
    return loaded


def read_torch(path: str) -> Checkpoint:
    import torch
    obj = load_torch_file(path)
    if not isinstance(obj, dict):
        raise UnsupportedCheckpointError(f"{os.path.basename(path)}: expected a dict, found {type(obj).__name__}")
    kw = obj.get("init_kwargs") or {}
    sd = None
    for key in ("G_ema", "state_dict", "params_ema", "G"):
        if isinstance(obj.get(key), dict):
            sd = obj[key]
            break
    if sd is None:
        sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    if any(k.startswith(("style.", "convs.", "to_rgbs.")) for k in sd):
        raise UnsupportedCheckpointError(
            f"{os.path.basename(path)} is a rosinality-format StyleGAN2 checkpoint (keys style.*/convs.*); load the "
            f"original NVIDIA .pkl instead.")
    return Checkpoint(dict(sd), dict(kw), "torch", path, {})


def read_checkpoint(path: str) -> Checkpoint:
    """Read a generator checkpoint of any supported format (by content, then by extension)."""
    if not os.path.isfile(path):
        raise UnsupportedCheckpointError(f"checkpoint not found: {path}")
    size = os.path.getsize(path)
    if size == 0:
        raise UnsupportedCheckpointError(f"{os.path.basename(path)} is empty (0 bytes): the download is incomplete.")
    with open(path, "rb") as f:
        head = f.read(8)
    low = path.lower()
    if low.endswith(".safetensors"):
        return read_safetensors(path)
    if head.startswith(b"PK\x03\x04") or low.endswith(TORCH_EXTS):
        return read_torch(path)
    if head[:1] == b"\x80" or low.endswith(PICKLE_EXTS):
        return read_nvidia_pickle(path)
    raise UnsupportedCheckpointError(
        f"{os.path.basename(path)}: unknown checkpoint format (expected .pkl, .safetensors, .pt or .pth).")


# ---- infer kwargs for bare state dicts -------------------------------------------------------------------------
def infer_stylegan2_kwargs(sd: dict) -> dict:
    """Constructor kwargs of a StyleGAN2 generator from its tensor shapes (for state dicts saved without them)."""
    res = sorted(int(k.split(".")[1][1:]) for k in sd if k.startswith("synthesis.b") and k.endswith(".conv1.weight"))
    if not res or "mapping.fc0.weight" not in sd:
        raise UnsupportedCheckpointError("cannot infer StyleGAN2 kwargs: synthesis.b*.conv1.weight / mapping.fc0 missing")
    R = res[-1]
    num_map = len({k.split(".")[1] for k in sd if k.startswith("mapping.fc")})
    w_dim = sd["mapping.fc0.weight"].shape[0] if num_map else 0
    w_dim = sd[f"mapping.fc{num_map - 1}.weight"].shape[0]
    c_dim = sd["mapping.embed.weight"].shape[1] if "mapping.embed.weight" in sd else 0
    embed = sd["mapping.embed.weight"].shape[0] if c_dim else 0
    z_dim = sd["mapping.fc0.weight"].shape[1] - embed
    ch = {r: sd[f"synthesis.b{r}.conv1.weight"].shape[0] for r in res}
    channel_max = max(ch.values())
    channel_base = max(r * c for r, c in ch.items() if c < channel_max) if any(c < channel_max for c in ch.values()) \
        else channel_max * R
    const = sd["synthesis.b4.const"]
    arch = "skip" if f"synthesis.b{res[0]}.torgb.weight" in sd and len(res) > 1 and f"synthesis.b{res[1]}.torgb.weight" in sd \
        else ("resnet" if any(k.endswith(".skip.weight") for k in sd) else "orig")
    return {"z_dim": int(z_dim), "c_dim": int(c_dim), "w_dim": int(w_dim), "img_resolution": int(R),
            "img_channels": int(sd[f"synthesis.b{R}.torgb.weight"].shape[0]),
            "square": bool(const.shape[1] == const.shape[2]),
            "mapping_kwargs": {"num_layers": int(num_map)},
            "synthesis_kwargs": {"channel_base": int(channel_base), "channel_max": int(channel_max),
                                 "architecture": arch, "conv_clamp": 256}}


# Generator settings, wherever they sit in the kwargs (mapping_kwargs, synthesis_kwargs, ...): the official
# configs use at most a tenth of each. Counts of layers and filter taps bound the build time too, which the meta
# device does not (a file asking for 300000 mapping layers built for minutes).
_KWARG_LIMITS = {"img_resolution": 8192, "z_dim": 8192, "w_dim": 8192, "c_dim": 8192, "img_channels": 4,
                 "channel_max": 4096, "channel_base": 1 << 22, "num_layers": 64, "num_critical": 64,
                 "filter_size": 64, "lrelu_upsampling": 16, "conv_kernel": 15, "margin_size": 1024,
                 "num_fp16_res": 64}
MAX_KWARG_LIST = 16  # e.g. resample_filter [1, 3, 3, 1]


def generator_kwargs(ck: Checkpoint, name: str) -> dict:
    """The checked constructor kwargs of the generator in `ck`: its own, else inferred from a StyleGAN2 state dict's
    shapes. Raises UnsupportedCheckpointError for files that carry neither or that ask for an absurd network."""
    kw = ck.init_kwargs
    if not kw:
        if "synthesis.b4.const" not in ck.state_dict:
            raise UnsupportedCheckpointError(
                f"{name}: the file carries no constructor kwargs (init_kwargs) and the architecture cannot be "
                f"inferred from tensor shapes; re-save it with HumanGen (save_generator) or use the .pkl.")
        kw = infer_stylegan2_kwargs(ck.state_dict)
    _check_generator_kwargs(kw, name)
    return kw


def _check_generator_kwargs(kw: dict, name: str) -> None:
    """Refuse constructor kwargs that would build an absurdly large network (a hostile file's way to eat memory
    or time): every setting named in _KWARG_LIMITS, at any depth, within its limit; lists short."""
    if not isinstance(kw, dict):
        raise UnsupportedCheckpointError(f"{name}: init_kwargs must be a dict, found {type(kw).__name__}")

    def refuse(key, value, limit):
        raise UnsupportedCheckpointError(f"{name}: implausible generator setting {key}={shown(value)} (limit "
                                         f"{limit}); the file is damaged or not a StyleGAN generator.")

    def check(key: str, value, depth: int) -> None:
        if depth > 8:
            refuse(key, "(nested too deeply)", "8 levels")
        if isinstance(value, dict):
            for inner_key, inner in value.items():
                check(str(inner_key), inner, depth + 1)
        elif isinstance(value, (list, tuple)):
            if len(value) > MAX_KWARG_LIST:
                refuse(key, f"a list of {len(value)} items", f"{MAX_KWARG_LIST} items")
            for item in value:
                check(key, item, depth + 1)
        elif key in _KWARG_LIMITS and value is not None:
            limit = _KWARG_LIMITS[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0 \
                    or value > limit:
                refuse(key, value, limit)

    check("init_kwargs", kw, 0)


# ---- cache ---------------------------------------------------------------------------------------------------------
def cache_dir() -> str:
    """Where converted checkpoints go: $HUMANGEN_CACHE_DIR, else $XDG_CACHE_HOME/humangen, else ~/.cache/humangen,
    else the system temp folder (never next to the user's model)."""
    root = os.environ.get("HUMANGEN_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "humangen")
    return os.path.join(root, "converted")


_DIGESTS: dict[tuple, str] = {}
_DIGESTS_LOCK = threading.Lock()


def content_hash(path: str) -> str:
    """SHA-256 of the whole file, streamed in 4 MiB blocks. Memoised by (resolved path, size, mtime_ns, inode), so
    an unchanged file is read once per process and any change to it (even outside the first/last MiB) is seen."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
    with _DIGESTS_LOCK:
        known = _DIGESTS.get(key)
    if known is not None:
        return known
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    with _DIGESTS_LOCK:
        _DIGESTS[key] = digest
    return digest


def _cache_key(path: str) -> str:
    """The conversion cache's key: the full content hash (two different files never share a cache entry)."""
    return hashlib.sha256(f"{CACHE_VERSION}|{content_hash(path)}".encode()).hexdigest()[:32]


def conversion_cache_path(path: str) -> str | None:
    """Where the safetensors conversion of an NVIDIA pickle at `path` lives (None for other formats, empty or
    missing files: only pickles are converted)."""
    if not (path.lower().endswith(PICKLE_EXTS) and os.path.isfile(path) and os.path.getsize(path) > 0):
        return None
    return os.path.join(cache_dir(), _cache_key(path) + ".safetensors")


def write_safetensors_atomic(path: str, tensors: dict, metadata: dict, *, overwrite: bool = False,
                             node: str = "HumanGen") -> None:
    """Write through `utils.paths.exclusive_writer`: temp file in the same folder, then an exclusive link, so no
    reader sees a half-written file and an existing file is never replaced (unless `overwrite`)."""
    from safetensors.torch import save_file

    from .paths import exclusive_writer
    with exclusive_writer(path, node=node, overwrite=overwrite) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)


def save_generator(G, path: str, extra_metadata: dict | None = None, *, node: str = "HumanGen",
                   overwrite: bool = False) -> None:
    """Save a generator as .safetensors with its constructor kwargs in the metadata (loadable by load_generator).
    An existing file is never replaced (FileExistsRefusedError)."""
    meta = {"format": "humangen-generator", "arch": getattr(G, "arch", ""),
            "init_kwargs": json.dumps(getattr(G, "init_kwargs", {}))}
    meta.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    write_safetensors_atomic(path, {k: v.detach().cpu() for k, v in G.state_dict().items()}, meta, node=node,
                             overwrite=overwrite)
