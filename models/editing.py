"""Latent editing for StyleGAN2/3 generators: closed-form SeFa, W+ direction edits, style-space (S) edits.

Conventions (gan.md §8):
- W+ routing, StyleGAN2: `b4.conv1` uses w0 (torgb w1); block `b(2^(k+2))`, k >= 1: conv0 uses w(2k-1), conv1 w(2k),
  torgb w(2k+1). StyleGAN3: `input` uses w0, layer `L{i}_*` uses w(i+1); the last layer is the ToRGB.
- SeFa (Shen & Zhou 2021): stack the conv `affine.weight` rows [C_l, w_dim] of the layers fed by the chosen W+
  indices (ToRGB excluded), optionally normalise rows, eigen-decompose AᵀA; directions sorted by eigenvalue.
- StyleGAN-Human's shipped SeFa edit is `w_l += 2·α·n` on layers 4–7. Our `strength` is added as `w_l += strength·n`
  (so upstream α corresponds to strength = 2α).
- S-space codes are the conv affine outputs (ToRGB excluded), indexed in synthesis order: for StyleGAN2 1024,
  0 = b4.conv1, 1/2 = b8.conv0/conv1, ... 15/16 = b1024.conv0/conv1.
"""
from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np
import torch

from ..utils.errors import HumanGenError, UnsafeCheckpointError, UnsupportedCheckpointError, first_line, shown

@dataclass(frozen=True)
class StyleLayer:
    """One S-space code: the synthesis layer name ('b8.conv0', 'L3_52_512'), its W+ index, its channel count."""
    name: str
    w_index: int
    channels: int


def style_layers(G) -> list[StyleLayer]:
    """The conv layers whose affine outputs form the S space (ToRGB excluded), in synthesis order."""
    synthesis = G.synthesis
    index = synthesis.ws_index()
    layers = [StyleLayer(n, index[n], synthesis.get_submodule(n).affine.weight.shape[0])
              for n in synthesis.style_layer_names(include_torgb=False)]
    if not layers:
        raise HumanGenError("no StyleGAN2/3 synthesis affine layers found in this generator")
    return layers


@dataclass
class Directions:
    """k directions in W (unit rows) with optional names and the eigenvalues/scores that ranked them."""
    vectors: torch.Tensor  # [k, w_dim] float32
    names: list[str] = field(default_factory=list)
    values: torch.Tensor | None = None
    layers: list[int] | None = None  # the W+ indices they were computed for (a default for applying them)

    def __post_init__(self):
        if self.vectors.ndim == 1:
            self.vectors = self.vectors[None]
        if self.vectors.ndim != 2:
            raise HumanGenError(f"directions must be [k, w_dim], got {tuple(self.vectors.shape)}")
        self.vectors = self.vectors.detach().float().cpu()
        if not self.names:
            self.names = [f"direction {i}" for i in range(len(self.vectors))]

    def pick(self, which: int | str) -> torch.Tensor:
        if isinstance(which, str) and not re.fullmatch(r"-?[0-9]{1,9}", which):  # ASCII digits only ('²' is not)
            if which not in self.names:
                raise HumanGenError(f"no direction named {shown(which)}; available: {self.names[:20]}"
                                    + (f" ... ({len(self.names)} in all)" if len(self.names) > 20 else ""))
            return self.vectors[self.names.index(which)]
        i = int(which)
        if not -len(self.vectors) <= i < len(self.vectors):
            raise HumanGenError(f"direction index {i} out of range: there are {len(self.vectors)} directions")
        return self.vectors[i]


def sefa(G, w_indices: list[int] | None = None, *, num_directions: int = 10,
         normalize_rows: bool = False) -> Directions:
    """Closed-form SeFa directions for the conv layers fed by `w_indices` (all conv layers when None)."""
    layers = style_layers(G)
    chosen = [layer for layer in layers if w_indices is None or layer.w_index in set(w_indices)]
    if not chosen:
        valid = sorted({layer.w_index for layer in layers})
        raise HumanGenError(f"SeFa: no conv layer uses W+ indices {w_indices}; valid indices are {valid}")
    weight = torch.cat([G.synthesis.get_submodule(layer.name).affine.weight.detach().double().cpu()
                        for layer in chosen], 0)
    if normalize_rows:
        weight = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    eigenvalues, eigenvectors = torch.linalg.eigh(weight.T @ weight)
    order = torch.argsort(eigenvalues, descending=True)[:num_directions]
    vectors = eigenvectors[:, order].T.float()
    return Directions(vectors, [f"sefa {i}" for i in range(len(order))], eigenvalues[order].float(),
                      sorted({layer.w_index for layer in chosen}))


MAX_DIRECTIONS = 4096
MAX_W_DIM = 8192
MAX_WS = 1024  # W+ indices a direction file may name (StyleGAN-Human 1024x512 has 18)


def _direction_matrix(tensor, source: str) -> torch.Tensor:
    """A [K, w_dim] float matrix from a loaded array/tensor, or a clear error (no numpy/torch shape errors)."""
    if not isinstance(tensor, torch.Tensor):
        raise HumanGenError(f"{source}: expected direction vectors, found {type(tensor).__name__}")
    if tensor.ndim == 0 or tensor.numel() == 0:
        raise HumanGenError(f"{source}: holds no direction vectors (shape {tuple(tensor.shape)})")
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
        raise HumanGenError(f"{source}: direction vectors must be numbers, found {tensor.dtype}")
    vectors = tensor.float().reshape(-1, tensor.shape[-1])
    if vectors.shape[0] > MAX_DIRECTIONS or vectors.shape[1] > MAX_W_DIM:
        raise HumanGenError(f"{source}: {vectors.shape[0]} vectors of {vectors.shape[1]} values is more than a "
                            f"direction file holds (at most {MAX_DIRECTIONS} x {MAX_W_DIM})")
    if not bool(torch.isfinite(vectors).all()):
        raise HumanGenError(f"{source}: the direction vectors hold NaN or infinite values (refused)")
    return vectors


def load_directions(path: str) -> Directions:
    """Read direction files: StyleGAN-Human's `.pt` vectors ([1,512], saved on cuda:0), `.npy`, our safetensors.
    Every failure (unsafe pickle, damaged file, wrong content) is a HumanGenError naming the file."""
    from ..utils.checkpoints import load_torch_file
    ext = os.path.splitext(path)[1].lower()
    name = os.path.splitext(os.path.basename(path))[0]
    source = os.path.basename(path)
    if ext in (".pt", ".pth"):
        obj = load_torch_file(path, what="direction file")
        if isinstance(obj, dict):
            tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if not tensors:
                raise HumanGenError(f"{source}: no tensors inside")
            widths = {v.shape[-1] if v.ndim else 0 for v in tensors.values()}
            if len(widths) != 1:
                raise HumanGenError(f"{source}: the tensors have different widths {sorted(widths)}")
            return Directions(torch.cat([_direction_matrix(v, source) for v in tensors.values()]), list(tensors))
        vectors = _direction_matrix(obj, source)
        return Directions(vectors, [name] if len(vectors) == 1 else [])
    if ext == ".npy":
        try:
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
            if not isinstance(arr, np.ndarray):
                raise UnsupportedCheckpointError(f"{source}: not a .npy array (it is an archive of several arrays)")
            if arr.size > MAX_DIRECTIONS * MAX_W_DIM:
                raise HumanGenError(f"{source}: {arr.size} values is more than a direction file holds")
            if arr.dtype.kind not in "fiu":
                raise HumanGenError(f"{source}: direction vectors must be real numbers, found {arr.dtype}")
            vectors = torch.from_numpy(np.asarray(arr, dtype=np.float32))
        except HumanGenError:
            raise
        except ValueError as exc:
            if "allow_pickle" in str(exc) or "Object arrays" in str(exc) or "Python objects" in str(exc):
                raise UnsafeCheckpointError(f"{source}: the array is pickled Python objects, which HumanGen never "
                                            f"loads (it could execute code). Fix: save plain float vectors.") from exc
            raise UnsupportedCheckpointError(f"{source}: not a readable .npy array (truncated or corrupt: "
                                             f"{str(exc)[:200]}).") from exc
        except (OSError, EOFError, TypeError, OverflowError, zipfile.BadZipFile) as exc:
            raise UnsupportedCheckpointError(f"{source}: not a readable .npy array (truncated or corrupt: "
                                             f"{type(exc).__name__}).") from exc
        vectors = _direction_matrix(vectors, source)
        return Directions(vectors, [name] if len(vectors) == 1 else [])
    if ext == ".safetensors":
        from safetensors import safe_open
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                if "directions" not in f.keys():
                    raise HumanGenError(f"{source}: no 'directions' tensor (keys: {sorted(f.keys())[:8]})")
                vectors = f.get_tensor("directions")
        except HumanGenError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own types; restated with the file name
            raise UnsupportedCheckpointError(f"{source}: not a readable .safetensors file (truncated or corrupt: "
                                             f"{type(exc).__name__}).") from exc
        vectors = _direction_matrix(vectors, source)
        names = [n for n in meta.get("names", "").split("\n") if n] or []
        if names and len(names) != len(vectors):
            raise HumanGenError(f"{source}: damaged 'names' metadata: {len(names)} names for {len(vectors)} vectors")
        try:
            layers = [int(i) for i in meta.get("layers", "").split(",") if i.strip()] or None
            if layers is not None and (len(set(layers)) != len(layers) or not all(0 <= i < MAX_WS for i in layers)):
                raise ValueError
        except ValueError:
            raise HumanGenError(f"{source}: damaged 'layers' metadata {meta.get('layers')[:80]!r} (distinct W+ "
                                f"indices from 0 to {MAX_WS - 1} expected)") from None
        return Directions(vectors, names, None, layers)
    raise HumanGenError(f"{source}: unsupported direction file type {ext!r} (use .pt, .pth, .npy or .safetensors)")


def save_directions(directions: Directions, path: str) -> None:
    """Write exclusively (`utils.paths.write_exclusive`): never half-written, never replacing a file."""
    from safetensors.torch import save_file

    from ..utils.paths import write_exclusive
    meta = {"names": "\n".join(directions.names)}
    if directions.layers:
        meta["layers"] = ",".join(map(str, directions.layers))
    write_exclusive(path, lambda tmp: save_file({"directions": directions.vectors.contiguous()}, tmp, metadata=meta))


def apply_direction(ws: torch.Tensor, direction: torch.Tensor, strength: float,
                    layers: list[int] | None = None) -> torch.Tensor:
    """`ws` [N, num_ws, w_dim] with `w_l += strength · direction` on the W+ indices `layers` (all when None)."""
    if ws.ndim != 3:
        raise HumanGenError(f"apply_direction needs W+ latents [N, num_ws, w_dim], got {tuple(ws.shape)}")
    if direction.numel() != ws.shape[-1]:
        raise HumanGenError(f"direction has {direction.numel()} values but the latent has w_dim {ws.shape[-1]}")
    out = ws.clone()
    idx = list(range(ws.shape[1])) if layers is None else [i for i in layers if 0 <= i < ws.shape[1]]
    if layers is not None and len(idx) != len(set(layers)):
        raise HumanGenError(f"layer indices {layers} out of range for {ws.shape[1]} ws")
    out[:, idx] += strength * direction.to(ws).view(1, 1, -1)
    return out


# ---- style space ------------------------------------------------------------------------------------------------
def load_style_vectors(paths: dict[int, str], G) -> dict[str, torch.Tensor]:
    """StyleGAN-Human's `style_vect_mean_{l}.pkl` (numpy pickles, read by the safe unpickler) keyed by S index."""
    from ..utils.checkpoints import safe_load_pickle
    layers = style_layers(G)
    out = {}
    for index, path in paths.items():
        if not 0 <= index < len(layers):
            raise HumanGenError(f"style vector index {index} out of range: the generator has {len(layers)} S codes")
        arr = _style_file(path, lambda p: _read_vector(p, safe_load_pickle))
        if arr.size != layers[index].channels:
            raise HumanGenError(f"{os.path.basename(path)}: {arr.size} values, but S code {index} "
                                f"({layers[index].name}) has {layers[index].channels} channels")
        out[layers[index].name] = torch.from_numpy(arr)
    return out


def style_offsets(G, vectors: dict[str, torch.Tensor], strength: float,
                  *, masks: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Per-layer additive S offsets `strength · vector (⊙ mask)`, for `G.synthesis(..., style_offsets=...)`."""
    known = {layer.name: layer.channels for layer in style_layers(G)}
    offsets = {}
    for name, vector in vectors.items():
        if name not in known:
            raise HumanGenError(f"{name} is not an S-space layer of this generator; layers: {list(known)}")
        v = vector.float().reshape(-1)
        if v.numel() != known[name]:
            raise HumanGenError(f"S vector for {name} has {v.numel()} values, the layer has {known[name]} channels")
        if masks and name in masks:
            v = v * masks[name].float().reshape(-1)
        offsets[name] = strength * v
    return offsets


def channel_mask(strengths, threshold: float) -> torch.Tensor:
    """StyleSpace channel selection: `|statis.strength| > threshold` (upstream τ 0.0028 / 0.003)."""
    s = torch.as_tensor(np.asarray(strengths, dtype=np.float32)).reshape(-1)
    return (s.abs() > threshold).float()


# ---- StyleGAN-Human's shipped style-space assets -------------------------------------------------------------------
# Layout (copy the repo's `latent_direction/` contents, or the folder itself, into models/stylegan_directions):
#   ss/<attribute>/style_vect_mean_<l>.pkl                 numpy float32 vector per S index l
#   ss_statics/<attribute>_statis/<l>/statis.csv | .pkl    per-channel strength of layer l (csv: channel,strength)
def _ss_roots(dirs: list[str]) -> list[str]:
    roots = []
    for d in dirs:
        for base in (d, os.path.join(d, "latent_direction")):
            if os.path.isdir(os.path.join(base, "ss")):
                roots.append(base)
    return roots


def stylespace_attributes(dirs: list[str]) -> list[str]:
    names = set()
    for root in _ss_roots(dirs):
        names.update(n for n in os.listdir(os.path.join(root, "ss")) if os.path.isdir(os.path.join(root, "ss", n)))
    return sorted(names)


def _find(dirs: list[str], *parts: str) -> str | None:
    for root in _ss_roots(dirs):
        base = os.path.abspath(root)
        path = os.path.abspath(os.path.join(base, *parts))
        # parts name files under root ('..' or an absolute part would leave it); links inside are the user's own
        if os.path.commonpath([path, base]) == base and os.path.exists(path):
            return path
    return None


MAX_STYLE_FILE_BYTES = 1 << 20  # StyleGAN-Human's style-space files are a few KB


def _style_file(path: str, parse):
    """parse(path) for one style-space file; a file too large, not a file, unreadable, or holding non-finite
    numbers is one HumanGenError naming it (numpy, csv parsing and the unpickler fail in many ways)."""
    name = os.path.basename(path)
    try:
        if not os.path.isfile(path):
            raise HumanGenError(f"{name}: is not a file")
        if os.path.getsize(path) > MAX_STYLE_FILE_BYTES:
            raise HumanGenError(f"{name}: {os.path.getsize(path)} bytes is more than a style-space file holds "
                                f"(at most {MAX_STYLE_FILE_BYTES})")
        values = parse(path)
    except HumanGenError:
        raise
    except Exception as exc:  # noqa: BLE001 - restated with the file name; the node adds how to fix it
        raise HumanGenError(f"{name}: not a readable style-space file ({type(exc).__name__}: "
                            f"{first_line(exc, 120)})") from exc
    if not np.isfinite(values).all():
        raise HumanGenError(f"{name}: holds NaN or infinite values")
    return values


def _read_vector(path: str, unpickle) -> np.ndarray:
    with open(path, "rb") as f:
        obj = unpickle(f)
    arr = np.asarray(obj)
    if arr.dtype.kind not in "fiu":
        raise HumanGenError(f"{os.path.basename(path)}: expected a vector of numbers, found {arr.dtype}")
    return arr.astype(np.float32).reshape(-1)


def read_channel_strengths(path: str) -> np.ndarray:
    """ss_statics strengths: csv `channel,strength` or a pickled {channel: strength} (safe unpickler)."""
    return _style_file(path, _read_channel_strengths)


def _read_channel_strengths(path: str) -> np.ndarray:
    if path.endswith(".csv"):
        rows = np.genfromtxt(path, delimiter=",", names=True)
        channels = np.asarray(rows["channel"], dtype=np.int64).reshape(-1)
        values = np.asarray(rows["strength"], dtype=np.float32).reshape(-1)
    else:
        from ..utils.checkpoints import safe_load_pickle
        with open(path, "rb") as f:
            table = safe_load_pickle(f)
        if not isinstance(table, dict):
            raise HumanGenError(f"{os.path.basename(path)}: expected a {{channel: strength}} table, found "
                                f"{type(table).__name__}")
        channels = np.asarray([int(k) for k in table], dtype=np.int64)
        values = np.asarray([float(v) for v in table.values()], dtype=np.float32)
    if channels.size and (channels.min() < 0 or channels.max() >= 1 << 16):
        raise HumanGenError(f"{os.path.basename(path)}: channel indices must lie in 0..65535")
    out = np.zeros(int(channels.max()) + 1 if channels.size else 0, dtype=np.float32)
    out[channels] = values
    return out


def stylespace_offsets(G, dirs: list[str], attribute: str, method: str, strength: float, layer: int = 5,
                       threshold: float = 0.0028) -> dict[str, torch.Tensor]:
    """S offsets for StyleGAN-Human's 'InterFaceGAN' (`all_layers`: every shipped vector) or StyleSpace
    (`one_layer`: one layer, channels with |statis strength| > threshold) edit of `attribute`."""
    layers = style_layers(G)
    if method == "all_layers":
        paths = {i: p for i in range(len(layers)) for p in [_find(dirs, "ss", attribute, f"style_vect_mean_{i}.pkl")]
                 if p}
        if not paths:
            raise HumanGenError(f"no ss/{attribute}/style_vect_mean_<l>.pkl files found in {dirs}")
        return style_offsets(G, load_style_vectors(paths, G), strength)
    if method != "one_layer":
        raise HumanGenError(f"method must be 'all_layers' or 'one_layer', got {method!r}")
    vec_path = _find(dirs, "ss", attribute, f"style_vect_mean_{layer}.pkl")
    if vec_path is None:
        raise HumanGenError(f"ss/{attribute}/style_vect_mean_{layer}.pkl not found in {dirs}")
    stat = (_find(dirs, "ss_statics", f"{attribute}_statis", str(layer), "statis.csv")
            or _find(dirs, "ss_statics", f"{attribute}_statis", str(layer), "statis.pkl"))
    if stat is None:
        raise HumanGenError(f"ss_statics/{attribute}_statis/{layer}/statis.csv (or .pkl) not found in {dirs}: "
                            f"StyleGAN-Human ships channel statistics for upper_length layer 5 and bottom_length "
                            f"layers 3, 4, 5")
    vectors = load_style_vectors({layer: vec_path}, G)
    name = layers[layer].name
    strengths = read_channel_strengths(stat)
    mask = torch.zeros(layers[layer].channels)
    selected = channel_mask(strengths, threshold)
    mask[: selected.numel()] = selected[: layers[layer].channels]
    return style_offsets(G, vectors, strength, masks={name: mask})
