"""conv2d_resample: 2-D convolution with optional FIR up/downsampling (StyleGAN2's `conv2d_resample`).

Shapes: x [N, C_in, H, W]; w [C_out, C_in/groups, kh, kw]; f FIR filter ([fh, fw] or [n]) or None.
`flip_weight=True` means correlation (what conv2d computes); `padding` is applied as in NVIDIA's code, adjusted
for the filter taps so that up=2 doubles and down=2 halves the size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._frozen import derived
from ._spec import filter_size, needs_grad, parse_padding
from .upfirdn2d import upfirdn2d


def _oriented(w, flip_weight):
    """w as a correlation kernel (flip_weight=False: a convolution kernel, flipped)."""
    return w.flip([2, 3]) if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1) else w


def _transposed(w, flip_weight, layout):
    """w [O, I, kh, kw] as conv_transpose2d's kernel [I, O, kh, kw] in `layout`, flipped unless flip_weight."""
    return _oriented(w.transpose(0, 1), not flip_weight).contiguous(memory_format=layout)


class _TransposedKernel(torch.autograd.Function):
    """`_transposed` for a learned weight, with a backward that hands back the gradient contiguous: a
    channels-last [I, O, kh, kw] gradient is a [I*kh*kw, O] matrix, transposed as one (a blocked copy). Through
    autograd's views it came back with O as its fastest dimension, and the sum with the weight's other gradient
    then ran several times slower than between two contiguous ones."""

    @staticmethod
    def forward(ctx, w, flip_weight, layout):
        ctx.flip = flip_weight and (w.shape[2] > 1 or w.shape[3] > 1)  # `_oriented` flips the transposed kernel
        return _transposed(w, flip_weight, layout)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        i, o, kh, kw = g.shape
        if g.is_contiguous(memory_format=torch.channels_last):
            rows = g.permute(0, 2, 3, 1)  # [I, kh, kw, O], a view of channels-last memory
            rows = rows.flip([1, 2]) if ctx.flip else rows
            grad = rows.reshape(i * kh * kw, o).t().contiguous().view(o, i, kh, kw)
        else:
            grad = (g.flip([2, 3]) if ctx.flip else g).transpose(0, 1).contiguous()
        return grad, None, None


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    w = _oriented(w, flip_weight)
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False,
                    impl="auto"):
    """Convolve x with w, upsampling by `up` before and/or downsampling by `down` after with filter f.

    Args: up, down ints (default: 1); padding int/[x,y]/[x0,x1,y0,y1] (default: 0); groups (default: 1);
    flip_weight (default: True = correlation); flip_filter (default: False); impl for the FIR passes.
    """
    assert x.ndim == 4 and w.ndim == 4, (x.shape, w.shape)
    assert isinstance(up, int) and up >= 1 and isinstance(down, int) and down >= 1
    out_channels, in_per_group, kh, kw = w.shape
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    if kw == 1 and kh == 1 and down > 1 and up == 1:  # 1x1 + down: downsample first
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter, impl=impl)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:  # 1x1 + up: convolve first
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter, impl=impl)
    if down > 1 and up == 1:  # filter, then strided conv
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter, impl=impl)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)
    if up > 1:  # transposed strided conv, then filter
        # the transposed conv correlates with the flipped kernel; a frozen weight is transposed and flipped once
        # per `frozen_weights()` scope, into channels-last layout for a channels-last x (oneDNN's layout, which it
        # would otherwise copy the weight into on every call, forward and backward)
        if groups == 1:
            cl = x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)
            layout = torch.channels_last if cl else torch.contiguous_format
            if needs_grad(w):
                w = _TransposedKernel.apply(w, flip_weight, layout)
            else:
                w = derived(w, ("transposed", flip_weight, layout), lambda t: _transposed(t, flip_weight, layout))
        else:
            w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
            w = _oriented(w.reshape(groups * in_per_group, out_channels // groups, kh, kw), not flip_weight)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2,
                      flip_filter=flip_filter, impl=impl)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl=impl)
        return x
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:  # plain conv
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
    x = upfirdn2d(x, (f if up > 1 else None), up=up, padding=[px0, px1, py0, py1], gain=up ** 2,
                  flip_filter=flip_filter, impl=impl)
    x = _conv(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl=impl)
    return x
