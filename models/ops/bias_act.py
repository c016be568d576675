"""bias_act: x + b (broadcast along `dim`), activation, gain, clamp.

Shapes: x any [..], b [x.shape[dim]] or None. Returns a tensor shaped like x.
Order (both paths): add bias -> act(x, alpha) -> * gain -> clamp(-clamp, clamp) when clamp >= 0.
"""
from __future__ import annotations

import torch

from ._spec import ACTIVATIONS, needs_grad, resolve_impl


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


def _forward_inplace(x, b, dim, spec, alpha, gain, clamp):
    """One new buffer (x + b, or a copy), then the activation, gain and clamp in place."""
    if b is not None:
        assert b.ndim == 1 and b.shape[0] == x.shape[dim], (b.shape, x.shape, dim)
        y = x + b.to(x.dtype).reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    elif spec.func is ACTIVATIONS["linear"].func and gain == 1 and clamp < 0:
        return x
    else:
        y = x.clone()
    y = spec.inplace(y, alpha)
    if gain != 1:
        y.mul_(gain)
    if clamp >= 0:
        y.clamp_(-clamp, clamp)
    return y


class _BiasAct(torch.autograd.Function):
    """bias_act with a backward read from the output alone (NVIDIA's bias_act does the same): the forward keeps one
    tensor instead of one per pass, and the backward is one fused pass per step (clamp mask, activation slope,
    gain) instead of the reference's comparisons, masks and products."""

    @staticmethod
    def forward(ctx, x, b, dim, spec, alpha, gain, clamp):
        y = _forward_inplace(x, b, dim, spec, alpha, gain, clamp)
        y = y.clone() if y is x else y  # an output must not alias an input that autograd tracks
        ctx.save_for_backward(y)
        ctx.params = (dim, spec, alpha, gain, clamp, b is not None)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        dim, spec, alpha, gain, clamp, has_bias = ctx.params
        dx = dy
        if clamp >= 0:  # zero where the output was clamped (|y| = clamp; the reference differs only at exactly clamp)
            dx = torch.ops.aten.hardtanh_backward(dx, y, -clamp, clamp)
        dx = spec.grad_from_output(dx, y, alpha)  # the sign of y is the sign of x + b: gain > 0
        if gain != 1:
            dx = dx * gain if dx is dy else dx.mul_(gain)
        db = None
        if has_bias and ctx.needs_input_grad[1]:
            db = dx.sum([i for i in range(dx.ndim) if i != dim])
        return (dx if ctx.needs_input_grad[0] else None), db, None, None, None, None, None


def bias_act_fast(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """Fast: one new buffer, then in-place passes; under autograd the same forward with a backward from the output
    (activations without `grad_from_output`, negative slopes or gains use the reference)."""
    spec, alpha, gain, clamp = _params(act, alpha, gain, clamp)
    if needs_grad(x, b):
        if spec.grad_from_output is None or alpha < 0 or gain <= 0:
            return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
        return _BiasAct.apply(x, b, dim, spec, alpha, gain, clamp)
    if spec.inplace is None:
        return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    return _forward_inplace(x, b, dim, spec, alpha, gain, clamp)


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None, impl="auto"):
    """Bias + activation + gain + clamp. act in ACTIVATIONS (default: 'linear'); alpha/gain default to the
    activation's table entry; clamp None = no clamp. impl: 'ref' | 'fast' | 'auto' (default: 'auto')."""
    if resolve_impl(impl) == "ref":
        return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    return bias_act_fast(x, b, dim, act, alpha, gain, clamp)
