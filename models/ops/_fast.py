"""Fast CPU paths (placeholder: delegates to the reference until the fused kernels land)."""
from __future__ import annotations

from .filtered_lrelu import filtered_lrelu_ref
from .upfirdn2d import upfirdn2d_ref


def upfirdn2d_fast(x, f, up, down, padding, flip_filter, gain):
    return upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)


def filtered_lrelu_fast(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter):
    return filtered_lrelu_ref(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)
