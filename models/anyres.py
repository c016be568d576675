"""AnyRes / UnitedHuman generator: StyleGAN3-T extended with a scale-conditioned synthesis (gan.md §7.1).

Key-compatible with chail/anyres-gan `training/networks_stylegan3.py` (the network family inside UnitedHuman's
`network-snapshot-v1.pkl`), built on our StyleGAN3 (`models/stylegan3.py`) through its extension points:

- `scale_norm`: `positive` -> (s - min)/(max - min) + 0.1, `zerocentered` -> 2 (s - min)/(max - min) - 1, with min/max
  from `scale_mapping_kwargs` (no parameters, so no state-dict keys).
- `scale_mapping`: a second MappingNetwork with z_dim = 1 and the mapping kwargs (keys `scale_mapping.fc*`,
  `scale_mapping.w_avg`). Its input normalisation (x * rsqrt(mean(x^2) + 1e-8) over the ONE feature) turns any
  positive normalised scale into ~1.0: with 'positive' normalisation every zoom gets the same mapped scale and zoom
  reaches the network only through the transform. This quirk is the original behaviour and is kept.
- every SynthesisLayer gets `scale_affine` (FC w_dim -> in_channels, bias_init 0); layer i's style code is
  `affine(ws[:, i+1]) + scale_affine(mapped_scale[:, i+1])` (times the ToRGB gain for the last layer).
- synthesis takes an explicit 3×3 `transform` (the patch, see models/continuous.py) for the Fourier input.

`training_mode='global'` checkpoints (no scale branch) build the same class without the scale parts.
"""
from __future__ import annotations

import torch
from torch import nn

from .stylegan3 import Generator as StyleGAN3Generator
from .stylegan3 import SynthesisLayer, SynthesisNetwork
from .stylegan_common import FullyConnectedLayer, MappingNetwork

SCALE_NORMS = ("positive", "zerocentered")


class ScaleNormalize(nn.Module):
    """Maps the raw zoom (1 / T[0,0]) to the scale-mapping input: 'positive' to [0.1, 1.1] over [min, max],
    'zerocentered' to [-1, 1]."""

    def __init__(self, mode: str,  # 'positive' | 'zerocentered'
                 scale_min: float,  # zoom mapped to the low end (scale_mapping_min)
                 scale_max: float):  # zoom mapped to the high end (scale_mapping_max)
        super().__init__()
        if mode not in SCALE_NORMS:
            raise ValueError(f"scale_mapping_norm must be one of {SCALE_NORMS}, got {mode!r}")
        if scale_max == scale_min:
            raise ValueError(f"scale_mapping_min and scale_mapping_max must differ (both {scale_min})")
        self.mode, self.scale_min, self.scale_max = mode, float(scale_min), float(scale_max)

    def forward(self, scale: torch.Tensor) -> torch.Tensor:
        s = (scale - self.scale_min) / (self.scale_max - self.scale_min)
        return s + 0.1 if self.mode == "positive" else 2 * s - 1

    def extra_repr(self) -> str:
        return f"mode={self.mode}, min={self.scale_min:g}, max={self.scale_max:g}"


class AnyResSynthesisLayer(SynthesisLayer):
    """A StyleGAN3 layer with the AnyRes `scale_affine` (when `use_scale_affine`)."""

    def __init__(self, *args, use_scale_affine: bool = True, **kwargs):  # add scale_affine (patch mode)
        super().__init__(*args, **kwargs)
        self.use_scale_affine = use_scale_affine
        if use_scale_affine:
            self.scale_affine = FullyConnectedLayer(self.w_dim, self.in_channels, bias_init=0)


class AnyResSynthesisNetwork(SynthesisNetwork):
    """StyleGAN3 synthesis whose per-layer styles add `scale_affine(mapped_scale[:, i+1])`.

    forward(ws, transform=[N,3,3] | [3,3] | None, mapped_scale=[N|1, num_ws, w_dim] | None, ...)."""

    layer_class = AnyResSynthesisLayer
    scale_mapper = None  # set by Generator: transform [N,3,3] -> mapped scale (a plain callable, not a submodule)

    def _default_mapped_scale(self, transform, n: int, device):
        if self.scale_mapper is None:
            raise ValueError("this AnyRes/UnitedHuman synthesis needs `mapped_scale` (use Generator.synthesize_patch "
                             "or models.render_patch, which compute it)")
        if transform is None:
            transform = torch.eye(3, device=device)
        transform = transform.to(device, torch.float32)
        if transform.ndim == 2:
            transform = transform.unsqueeze(0)
        return self.scale_mapper(transform.expand(n, 3, 3))

    def forward(self, ws, *args, transform=None, mapped_scale=None, **kw):
        """Like StyleGAN3's; without `mapped_scale` it is computed from `transform` (identity = the whole canvas),
        as the official Generator.forward does, so generic StyleGAN callers get the full-body image."""
        if mapped_scale is None and self.scale_mapper is not None:
            mapped_scale = self._default_mapped_scale(transform, ws.shape[0], ws.device)
        return super().forward(ws, *args, transform=transform, mapped_scale=mapped_scale, **kw)

    def layer_styles(self, idx, name, layer, w, mapped_scale=None, **kw):
        s = layer.affine(w)
        if getattr(layer, "use_scale_affine", False):
            if mapped_scale is None:  # e.g. compute_styles (S-space) without a transform: the whole canvas
                mapped_scale = self._default_mapped_scale(None, w.shape[0], w.device)
            assert mapped_scale.ndim == 3 and mapped_scale.shape[1:] == (self.num_ws, self.w_dim), mapped_scale.shape
            s = s + layer.scale_affine(mapped_scale[:, idx + 1].to(torch.float32))
        return s * layer.torgb_gain if layer.is_torgb else s


class Generator(StyleGAN3Generator):
    """AnyRes / UnitedHuman generator (StyleGAN3-T + scale-conditioned patches)."""

    arch = "anyres"
    synthesis_class = AnyResSynthesisNetwork

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None,  # MappingNetwork kwargs (also used by scale_mapping)
                 training_mode: str = "patch",  # 'patch' (scale branch) or 'global' (plain SG3 + transform)
                 scale_mapping_kwargs: dict | None = None,  # scale_mapping_min/max/norm
                 **synthesis_kwargs):  # SynthesisNetwork / SynthesisLayer kwargs
        if "360" in str(training_mode):
            raise ValueError(f"AnyRes training_mode {training_mode!r} (360° panoramas) is not supported")
        patch = "patch" in str(training_mode)
        synthesis_kwargs.pop("fov", None)
        super().__init__(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs=mapping_kwargs,
                         use_scale_affine=patch, **synthesis_kwargs)
        self.training_mode = training_mode
        self.scale_mapping_kwargs = dict(scale_mapping_kwargs or {})
        if patch:
            smk = self.scale_mapping_kwargs
            missing = {"scale_mapping_min", "scale_mapping_max"} - set(smk)
            if missing:
                raise ValueError(f"training_mode 'patch' needs scale_mapping_kwargs {sorted(missing)}")
            self.scale_norm = ScaleNormalize(smk.get("scale_mapping_norm", "positive"), smk["scale_mapping_min"],
                                             smk["scale_mapping_max"])
            mkw = dict(num_layers=2, w_avg_beta=0.998)
            mkw.update(mapping_kwargs or {})
            self.scale_mapping = MappingNetwork(z_dim=1, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mkw)
            self.synthesis.scale_mapper = self.map_scale

    @property
    def source_sha1(self) -> str | None:
        """sha1 of the module source embedded in the .pkl this was loaded from (diagnostics; never executed)."""
        return (getattr(self, "source_info", None) or {}).get("module_src_sha1")

    @property
    def has_scale_branch(self) -> bool:
        return hasattr(self, "scale_mapping")

    def map_scale(self, transform: torch.Tensor, c=None) -> torch.Tensor | None:
        """transform [N,3,3] -> mapped scale [N, num_ws, w_dim] (None without a scale branch)."""
        if not self.has_scale_branch:
            return None
        scale = 1 / transform[:, 0:1, 0].to(torch.float32)  # [N, 1]: zoom relative to the canvas
        return self.scale_mapping(self.scale_norm(scale), c)

    def synthesize_patch(self, ws: torch.Tensor, transform: torch.Tensor, **synthesis_kwargs) -> torch.Tensor:
        """AnyRes's scale-conditioned synthesis (`scale_condition_wrapper`): ws [N, num_ws, w_dim],
        transform [N,3,3] -> [N, C, R, R]; noise const, fp32."""
        transform = transform.to(ws.device, torch.float32)
        if transform.ndim == 2:
            transform = transform.unsqueeze(0).expand(ws.shape[0], 3, 3)
        return self.synthesis(ws, transform=transform, mapped_scale=self.map_scale(transform),
                              noise_mode="const", **synthesis_kwargs)

    def forward(self, z, c=None, transform=None, truncation_psi=1.0, truncation_cutoff=None, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        if transform is None:
            transform = torch.eye(3, device=ws.device).unsqueeze(0).expand(ws.shape[0], 3, 3)
        return self.synthesize_patch(ws, transform, **synthesis_kwargs)

    def extra_repr(self) -> str:
        smk = self.scale_mapping_kwargs
        return (super().extra_repr() + f", training_mode={self.training_mode}, scale_norm="
                f"{smk.get('scale_mapping_norm', '-')}[{smk.get('scale_mapping_min', '-')}, "
                f"{smk.get('scale_mapping_max', '-')}]")


# ---- architecture registry entry (listed in models/gan_registry.py ARCHITECTURES, before stylegan3) -------------
def detect(state_dict: dict, init_kwargs: dict) -> bool:
    """AnyRes/UnitedHuman: `scale_mapping.*` or `*.scale_affine.*` keys, or AnyRes-only kwargs."""
    if any(k.startswith("scale_mapping.") or ".scale_affine." in k for k in state_dict):
        return True
    return bool(init_kwargs.get("scale_mapping_kwargs")) or "training_mode" in init_kwargs


def build(init_kwargs: dict) -> Generator:
    return Generator(**init_kwargs)
