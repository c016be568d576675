"""Specs shared by the reference and the fast op paths: activation table, filter/padding helpers, impl switch.

Both paths read `ACTIVATIONS` (name -> function, default alpha, default gain), so a new activation is added once.
`resolve_impl(impl)` turns 'auto' into the path to run: `$HUMANGEN_OPS_IMPL` ('ref'|'fast') if set, else 'fast'.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

IMPLS = ("ref", "fast", "auto")


@dataclass(frozen=True)
class ActSpec:
    func: Callable  # (x, alpha) -> tensor (out of place)
    def_alpha: float  # default slope/alpha (default: 0)
    def_gain: float  # default output gain (default: 1)
    inplace: Callable | None = None  # in-place variant used by the fast path when no grad is needed
    # (grad, y, alpha) -> grad * act'(x), read from the output y = act(x) (or any positive multiple of it): lets the
    # fast path keep only its output for backward, as NVIDIA's bias_act kernel does
    grad_from_output: Callable | None = None


ACTIVATIONS: dict[str, ActSpec] = {
    "linear": ActSpec(lambda x, a: x, 0.0, 1.0, lambda x, a: x, lambda g, y, a: g),
    "relu": ActSpec(lambda x, a: F.relu(x), 0.0, math.sqrt(2), lambda x, a: F.relu_(x),
                    lambda g, y, a: torch.ops.aten.threshold_backward(g, y, 0)),
    "lrelu": ActSpec(lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2), lambda x, a: F.leaky_relu_(x, a),
                     lambda g, y, a: torch.ops.aten.leaky_relu_backward(g, y, a, True)),
    "tanh": ActSpec(lambda x, a: torch.tanh(x), 0.0, 1.0, lambda x, a: x.tanh_()),
    "sigmoid": ActSpec(lambda x, a: torch.sigmoid(x), 0.0, 1.0, lambda x, a: x.sigmoid_()),
    "elu": ActSpec(lambda x, a: F.elu(x), 0.0, 1.0, lambda x, a: F.elu_(x)),
    "selu": ActSpec(lambda x, a: F.selu(x), 0.0, 1.0, lambda x, a: F.selu_(x)),
    "softplus": ActSpec(lambda x, a: F.softplus(x), 0.0, 1.0, None),
    "swish": ActSpec(lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2), None),
}


def resolve_impl(impl: str | None) -> str:
    """'ref' | 'fast' | 'auto' (or None) -> 'ref' | 'fast'. 'auto' reads $HUMANGEN_OPS_IMPL (default: 'fast')."""
    if impl is None or impl == "auto":
        impl = os.environ.get("HUMANGEN_OPS_IMPL", "fast")
        if impl not in ("ref", "fast"):
            impl = "fast"
    if impl not in ("ref", "fast"):
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    return impl


def needs_grad(*tensors) -> bool:
    """Whether autograd will record an op on these tensors (None entries ignored): grad mode is on and one of them
    requires grad. The fast paths run in place, fold constants and skip saving inputs only when this is False."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def conv_layout(weight) -> torch.memory_format:
    """Memory format for the input of a convolution with `weight`: channels-last (oneDNN's fast layout), except
    where the weight learns (PTI) on a CPU without AVX-512. There oneDNN's channels-last weight gradient measured
    2.3-4.8x slower than NCHW's (3x3 convolutions, 128-512 channels, AMD EPYC with AVX2), enough to make a PTI step
    slower than the reference path, which runs NCHW."""
    if weight.device.type == "cpu" and needs_grad(weight) and not _cpu_has_avx512():
        return torch.contiguous_format
    return torch.channels_last


def blocked_depthwise(device) -> bool:
    """Whether a large depthwise convolution runs faster on channel blocks (memory [N*C/8, H, W, 8], the nChw8c
    layout oneDNN's AVX2 kernels compute in) than on channels-last: on a CPU without AVX-512. There a 12x12 stride-2
    depthwise filter of SG3-R's bands measured 3-4x faster on blocks (288 channels, 42x544: 5-7 ms against
    21.6 ms channels-last; AMD EPYC with AVX2); with AVX-512 channels-last is already fast."""
    return torch.device(device).type == "cpu" and not _cpu_has_avx512()


@functools.lru_cache(maxsize=None)
def _cpu_has_avx512() -> bool:
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def parse_scaling(s) -> tuple[int, int]:
    """int or [sx, sy] -> (sx, sy)."""
    if isinstance(s, int):
        s = [s, s]
    sx, sy = (int(v) for v in s)
    if sx < 1 or sy < 1:
        raise ValueError(f"up/down factors must be >= 1, got {s}")
    return sx, sy


def parse_padding(padding) -> tuple[int, int, int, int]:
    """int, [px, py] or [x0, x1, y0, y1] -> (x0, x1, y0, y1). Negative values crop."""
    if isinstance(padding, int):
        padding = [padding, padding]
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    if len(padding) != 4:
        raise ValueError(f"padding must have 1, 2 or 4 entries, got {padding}")
    return tuple(padding)  # type: ignore[return-value]


def require_output(op: str, out_w: int, out_h: int, padding) -> None:
    """A padding (negative: a crop) that leaves no output sample is an error in either implementation (the literal
    slicing of the reference would wrap around instead)."""
    if out_w < 1 or out_h < 1:
        raise ValueError(f"{op}: padding {list(parse_padding(padding))} leaves a {out_w}x{out_h} output; "
                         "crop less or pad more")


def filter_size(f) -> tuple[int, int]:
    """(width, height) of a FIR filter (None -> 1x1; 1-D [n] -> separable n x n; 2-D [h, w])."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return int(f.shape[0]), int(f.shape[0])
    return int(f.shape[-1]), int(f.shape[0])


def setup_filter(f, normalize: bool = True, flip_filter: bool = False, gain: float = 1.0, separable=None,
                 device=None) -> torch.Tensor:
    """FIR taps -> float32 filter tensor, as NVIDIA's setup_filter: [n] becomes the outer product [n, n] unless
    `separable` (default: n >= 8); normalised to sum 1 (default: True); times gain^(ndim/2)."""
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32, device=device)
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    return f * (gain ** (f.ndim / 2))
