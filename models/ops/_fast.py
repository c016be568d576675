"""Fast CPU paths for upfirdn2d and filtered_lrelu.

The reference zero-stuffs the upsampled tensor, filters every sample with a grouped convolution in NCHW layout and
then throws away the samples that downsampling drops. Here every FIR pass is one depthwise convolution in
channels-last layout (oneDNN's fast depthwise path): upsampling is a strided *transposed* depthwise convolution
(no zero-stuffed tensor), downsampling a strided convolution (dropped samples are never computed), separable 1-D
filters run as a (1,K) then a (K,1) pass. filtered_lrelu runs bias -> up -> lrelu*gain, clamp (in place) -> down
per chunk of channels, so the upsampled intermediate only ever exists for one chunk (bounded memory).
Results equal the reference up to floating-point summation order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._spec import parse_padding, parse_scaling

CHUNK_ELEMS = 1 << 23  # ~32 MB (fp32) of upsampled intermediate per chunk in filtered_lrelu


CL = torch.channels_last


def _dw(f2d: torch.Tensor, c: int, dtype) -> torch.Tensor:
    """Depthwise weight [C, 1, kh, kw] (a broadcast view: no per-channel copy)."""
    return f2d.to(dtype).reshape(1, 1, *f2d.shape).expand(c, 1, *f2d.shape)


def _crop_pad(y: torch.Tensor, dim: int, start: int, length: int) -> torch.Tensor:
    """y[start:start+length] along dim, zero-padding where the range leaves y (start may be negative)."""
    L = y.shape[dim]
    lo, hi = max(start, 0), min(start + length, L)
    y = y.narrow(dim, lo, max(hi - lo, 0))
    before, after = max(-start, 0), max(start + length - L, 0)
    if before or after:
        pad = [0, 0, 0, 0]
        pad[(0 if dim == 3 else 2)] = before
        pad[(1 if dim == 3 else 3)] = after
        y = F.pad(y, pad)
    return y


def _pass(x: torch.Tensor, f2d: torch.Tensor, up: tuple, down: tuple, pad: tuple) -> torch.Tensor:
    """One 2-D FIR pass with correlation-ready filter semantics of the reference (f2d already flipped/gained for
    correlation, i.e. y = corr(pad(zero_insert(x)), f2d)[::down]); f2d [kh, kw] (kh or kw may be 1)."""
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = pad
    n, c, h, w = x.shape
    kh, kw = f2d.shape
    out_h = (h * upy + py0 + py1 - kh) // downy + 1
    out_w = (w * upx + px0 + px1 - kw) // downx + 1
    if upx == 1 and upy == 1:
        if any(p < 0 for p in pad):
            x = x[:, :, max(-py0, 0): h - max(-py1, 0), max(-px0, 0): w - max(-px1, 0)]
        if any(p > 0 for p in pad):
            x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
        return F.conv2d(x, _dw(f2d, c, x.dtype), stride=(downy, downx), groups=c)
    # zero-insert + correlate == transposed conv with the correlation taps reversed
    y = F.conv_transpose2d(x, _dw(f2d.flip([0, 1]), c, x.dtype), stride=(upy, upx), groups=c)
    full_h, full_w = out_h * downy - (downy - 1), out_w * downx - (downx - 1)  # samples before decimation
    y = _crop_pad(y, 2, kh - 1 - py0, (h * upy + py0 + py1 - kh) + 1)
    y = _crop_pad(y, 3, kw - 1 - px0, (w * upx + px0 + px1 - kw) + 1)
    if downx > 1 or downy > 1:
        y = y[:, :, ::downy, ::downx]
    assert y.shape[2:] == (out_h, out_w) and full_h >= out_h and full_w >= out_w, (y.shape, out_h, out_w)
    return y


def _corr_taps(f, gain: float, flip_filter: bool):
    """Filter -> list of 2-D correlation kernels applied one after the other (1-D f: a (1,K) then a (K,1) pass)."""
    if f is None:
        return [torch.full([1, 1], float(gain))]
    g = f if flip_filter else f.flip(list(range(f.ndim)))
    if f.ndim == 1:
        return [g.reshape(1, -1), (g * gain).reshape(-1, 1)]
    return [g * gain]


def upfirdn2d_fast(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1.0):
    """Same contract as upfirdn2d_ref: depthwise (transposed) convolutions in channels-last layout, upsampling
    without zero-stuffing and strided downsampling (only kept samples are computed)."""
    assert x.ndim == 4, x.shape
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    x = x.contiguous(memory_format=CL)
    kernels = _corr_taps(f, gain, flip_filter)
    if len(kernels) == 1:
        k = kernels[0]
        if (upx > 1 or upy > 1) and (downx > 1 or downy > 1):
            y = _pass(x, k, (upx, upy), (1, 1), (px0, px1, py0, py1))
            return _pass(y, torch.ones([1, 1]), (1, 1), (downx, downy), (0, 0, 0, 0))
        return _pass(x, k, (upx, upy), (downx, downy), (px0, px1, py0, py1))
    kx, ky = kernels  # separable: W pass then H pass
    y = _pass(x, kx, (upx, 1), (downx, 1), (px0, px1, 0, 0))
    return _pass(y, ky, (1, upy), (1, downy), (0, 0, py0, py1))


def filtered_lrelu_fast(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter):
    """Same contract as filtered_lrelu_ref: per chunk of channels, bias -> up (depthwise transposed convs) ->
    lrelu * gain, clamp (in place unless autograd needs the graph) -> down (strided depthwise convs), all in
    channels-last layout; the upsampled intermediate exists only for one chunk at a time."""
    from .filtered_lrelu import output_size
    assert x.ndim == 4, x.shape
    grad_mode = torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))
    n, c, h, w = x.shape
    px0, px1, py0, py1 = parse_padding(padding)
    out_w, out_h = output_size(w, h, fu, fd, up, down, padding)
    x = x.contiguous(memory_format=CL)
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    tmp_per_channel = max(1, n * (h * up + py0 + py1) * (w * up + px0 + px1))
    chunk = max(1, min(c, CHUNK_ELEMS // tmp_per_channel))
    outs = []
    for c0 in range(0, c, chunk):
        y = x[:, c0:c0 + chunk]
        y = upfirdn2d_fast(y, fu, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)
        if grad_mode:
            y = F.leaky_relu(y, slope) * gain
            if clamp is not None and clamp >= 0:
                y = y.clamp(-clamp, clamp)
        else:
            if y.data_ptr() == x.data_ptr():
                y = y.clone()
            if slope != 1:
                F.leaky_relu_(y, slope)
            if gain != 1:
                y.mul_(gain)
            if clamp is not None and clamp >= 0:
                y.clamp_(-clamp, clamp)
        outs.append(upfirdn2d_fast(y, fd, down=down, flip_filter=flip_filter))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    assert out.shape == (n, c, out_h, out_w), (out.shape, (n, c, out_h, out_w))
    return out
