"""filtered_lrelu (StyleGAN3): bias -> upfirdn2d(fu, up, padding, gain up^2) -> lrelu(slope) * gain, clamp ->
upfirdn2d(fd, down).

Shapes: x [N,C,H,W]; fu/fd None, [n] (separable) or [n, n] (radial); b [C] or None; padding [x0,x1,y0,y1].
Output W' = (W*up + px0 + px1 - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down (same for H).
"""
from __future__ import annotations

import math

from ._spec import filter_size, parse_padding, require_output, resolve_impl
from .bias_act import bias_act_ref
from .upfirdn2d import upfirdn2d_ref


def output_size(in_w, in_h, fu, fd, up, down, padding):
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    px0, px1, py0, py1 = parse_padding(padding)
    out_w = (in_w * up + (px0 + px1) - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down
    out_h = (in_h * up + (py0 + py1) - (fu_h - 1) - (fd_h - 1) + (down - 1)) // down
    return out_w, out_h


def filtered_lrelu_ref(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                       clamp=None, flip_filter=False):
    """Reference: three passes over the full upsampled tensor (the oracle; slow and memory hungry)."""
    assert x.ndim == 4, x.shape
    n, c, h, w = x.shape
    out_w, out_h = output_size(w, h, fu, fd, up, down, padding)
    px0, px1, py0, py1 = parse_padding(padding)
    x = bias_act_ref(x, b)
    x = upfirdn2d_ref(x, fu, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)
    x = bias_act_ref(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    x = upfirdn2d_ref(x, fd, down=down, flip_filter=flip_filter)
    assert tuple(x.shape) == (n, c, out_h, out_w), (tuple(x.shape), (n, c, out_h, out_w))
    return x


def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2, clamp=None,
                   flip_filter=False, impl="auto"):
    """Bias, upsample, leaky ReLU, clamp, downsample (alias-free activation of StyleGAN3).

    Args: x [N,C,H,W]; fu up filter, fd down filter (None = identity); b bias [C] (default: None);
    up, down ints (default: 1); padding (default: 0); gain (default: sqrt 2); slope (default: 0.2);
    clamp (default: None); flip_filter (default: False); impl 'ref' | 'fast' | 'auto' (default: 'auto').
    """
    require_output("filtered_lrelu", *output_size(x.shape[3], x.shape[2], fu, fd, up, down, padding), padding)
    if resolve_impl(impl) == "ref":
        return filtered_lrelu_ref(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)
    from . import _fast
    return _fast.filtered_lrelu_fast(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)
