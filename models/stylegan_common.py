"""Pieces shared by StyleGAN2 and StyleGAN3: the fully-connected layer and the mapping network.

State-dict names follow NVIDIA's (`fc{i}.weight`, `embed.*`, `w_avg`), so official weights load with strict=True.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .ops import bias_act


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) along `dim`."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """y = act(x @ (weight * lr_mul / sqrt(in)).T + bias * lr_mul). Weight stored as [out, in]."""

    def __init__(self, in_features: int,  # input features
                 out_features: int,  # output features
                 bias: bool = True,  # learn a bias
                 activation: str = "linear",  # an entry of ops.ACTIVATIONS
                 lr_multiplier: float = 1.0,  # learning-rate multiplier (runtime weight gain)
                 weight_init: float = 1.0,  # initial weight std (SG3 uses 0 for the input affine)
                 bias_init=0.0):  # initial bias (scalar or per-feature list)
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) * (weight_init / lr_multiplier))
        if bias:
            b = torch.broadcast_to(torch.as_tensor(bias_init, dtype=torch.float32), [out_features])
            self.bias = nn.Parameter(b.clone() / lr_multiplier)
        else:
            self.bias = None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor, impl: str = "auto") -> torch.Tensor:
        assert x.ndim == 2 and x.shape[1] == self.in_features, (x.shape, self.in_features)
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation, impl=impl)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class MappingNetwork(nn.Module):
    """z (and optional class c) -> w broadcast to [N, num_ws, w_dim], with truncation toward `w_avg`."""

    def __init__(self, z_dim: int,  # latent z size (0 = none)
                 c_dim: int,  # conditioning label size (0 = none)
                 w_dim: int,  # intermediate latent size
                 num_ws: int | None,  # number of ws to broadcast to (None = return [N, w_dim])
                 num_layers: int = 8,  # mapping layers (SG2: 8, SG3: 2)
                 embed_features: int | None = None,  # label embedding size (default: w_dim)
                 layer_features: int | None = None,  # hidden size (default: w_dim)
                 activation: str = "lrelu",  # hidden activation
                 lr_multiplier: float = 0.01,  # learning-rate multiplier of the FC layers
                 w_avg_beta: float | None = 0.995):  # EMA decay of w_avg (training only; None = no w_avg)
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                                          lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                update_emas: bool = False, impl: str = "auto") -> torch.Tensor:
        x = None
        if self.z_dim > 0:
            assert z is not None and z.ndim == 2 and z.shape[1] == self.z_dim, (getattr(z, "shape", None), self.z_dim)
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            assert c is not None and c.ndim == 2 and c.shape[1] == self.c_dim, (getattr(c, "shape", None), self.c_dim)
            y = normalize_2nd_moment(self.embed(c.to(torch.float32), impl=impl))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x, impl=impl)
        if update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


class SynthesisSize:
    """Output size of a synthesis network from `img_resolution` (the height) and `square` (False: StyleGAN-Human's
    2:1, width = height / 2)."""

    img_resolution: int
    square: bool

    @property
    def img_height(self) -> int:
        return self.img_resolution

    @property
    def img_width(self) -> int:
        return self.img_resolution if self.square else self.img_resolution // 2


class GeneratorBase(nn.Module):
    """Shared Generator surface: `mapping`, `synthesis`, z/c/w dims, num_ws, img_resolution/height/width."""

    arch = "base"

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)

    @property
    def img_height(self) -> int:
        return self.synthesis.img_height

    @property
    def img_width(self) -> int:
        return self.synthesis.img_width

    def style_layer_names(self, include_torgb: bool = False) -> list[str]:
        """Names of the layers whose affine output is an S-space code (see `synthesis.compute_styles`)."""
        return self.synthesis.style_layer_names(include_torgb)

    def extra_repr(self) -> str:
        return (f"arch={self.arch}, z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, "
                f"num_ws={self.num_ws}, img={self.img_height}x{self.img_width}")


def resolve_dtype(dtype) -> torch.dtype:
    """None/'fp32' -> float32; 'bf16'/'fp16' or a torch dtype -> that dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype must be one of {sorted(table)} or a torch.dtype, got {dtype!r}")
    return table[dtype]
