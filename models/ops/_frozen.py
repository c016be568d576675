"""Weights held constant over many calls: derived tensors computed once per scope.

An optimisation loop that learns only latents (projection, InsetGAN) runs the same frozen generator a few hundred
times, and every modulated convolution re-derives the same things from its weight each time: the sum of squares
over the kernel for demodulation and, in reduced precision, the weight's cast (together a fifth of a bf16 projection
step on a CPU), and oneDNN's copy of it into its channels-last layout. Inside `frozen_weights()` those derived
tensors are computed once per weight and reused.

Only weights that do not require grad are cached; an entry is used only while the weight's version counter (bumped
by every in-place update, including an optimizer's) and storage are unchanged, so a weight that does change is
re-derived. Inference tensors carry no version counter and are never cached, nor is anything under inference mode
(its results could not be saved for a later backward). Entries live until the scope ends.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

import torch

_store: contextvars.ContextVar[dict | None] = contextvars.ContextVar("humangen_frozen_weights", default=None)


@contextlib.contextmanager
def frozen_weights():
    """Cache weight-derived tensors (see the module docstring) until the block ends; nested scopes share one."""
    token = _store.set({"produced": set()} if _store.get() is None else _store.get())
    try:
        yield
    finally:
        _store.reset(token)


def caching() -> bool:
    """Whether a `frozen_weights()` scope is open (outside one, `derived` computes on every call)."""
    return _store.get() is not None


def derived(weight: torch.Tensor, tag, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """fn(weight), computed once per (weight, tag) inside a `frozen_weights()` scope. Cached only for parameters and
    for tensors this cache produced (so per-call tensors cannot pile up in the scope); outside a scope, for a weight
    that requires grad or has no version counter, or under inference mode, computed every call."""
    store = _store.get()
    if store is None or weight.requires_grad or torch.is_inference(weight) or torch.is_inference_mode_enabled() \
            or not (isinstance(weight, torch.nn.Parameter) or id(weight) in store["produced"]):
        return fn(weight)
    key = (id(weight), tag)
    stamp = (weight._version, weight.data_ptr())
    hit = store.get(key)
    if hit is not None and hit[0] is weight and hit[1] == stamp:
        return hit[2]
    value = fn(weight)
    store["produced"].add(id(value))
    store[key] = (weight, stamp, value)  # holding the weight keeps its id from being reused by another tensor
    return value


__all__ = ["caching", "derived", "frozen_weights"]
