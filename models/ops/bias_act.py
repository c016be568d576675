"""bias_act: x + b (broadcast along `dim`), activation, gain, clamp.

Shapes: x any [..], b [x.shape[dim]] or None. Returns a tensor shaped like x.
Order (both paths): add bias -> act(x, alpha) -> * gain -> clamp(-clamp, clamp) when clamp >= 0.
"""
from __future__ import annotations

import torch

from ._spec import ACTIVATIONS, resolve_impl


def _params(act, alpha, gain, clamp):
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; known: {sorted(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp


def bias_act_ref(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """Reference: separate passes, autograd-friendly."""
    spec, alpha, gain, clamp = _params(act, alpha, gain, clamp)
    if b is not None:
        assert b.ndim == 1 and b.shape[0] == x.shape[dim], (b.shape, x.shape, dim)
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def bias_act_fast(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """Fast: one new buffer, then in-place passes (falls back to the reference when autograd needs the graph)."""
    if torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad)):
        return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    spec, alpha, gain, clamp = _params(act, alpha, gain, clamp)
    if spec.inplace is None:
        return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    if b is not None:
        assert b.ndim == 1 and b.shape[0] == x.shape[dim], (b.shape, x.shape, dim)
        x = x + b.to(x.dtype).reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    elif act != "linear" or gain != 1 or clamp >= 0:
        x = x.clone()
    x = spec.inplace(x, alpha)
    if gain != 1:
        x.mul_(gain)
    if clamp >= 0:
        x.clamp_(-clamp, clamp)
    return x


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None, impl="auto"):
    """Bias + activation + gain + clamp. act in ACTIVATIONS (default: 'linear'); alpha/gain default to the
    activation's table entry; clamp None = no clamp. impl: 'ref' | 'fast' | 'auto' (default: 'auto')."""
    if resolve_impl(impl) == "ref":
        return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    return bias_act_fast(x, b, dim, act, alpha, gain, clamp)
