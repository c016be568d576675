"""upfirdn2d: upsample (zero insertion), pad/crop, FIR filter, downsample (keep every `down`-th sample).

Shapes: x [N, C, H, W]; f None, [n] (separable) or [fh, fw]. Output
H' = (H*up_y + pad_y0 + pad_y1 - fh + down_y) // down_y (same for W).
The filter is flipped unless `flip_filter` (true convolution), and scaled by gain^(f.ndim/2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._spec import filter_size, parse_padding, parse_scaling, require_output, resolve_impl


def upfirdn2d_ref(x, f=None, up=1, down=1, padding=0, flip_filter=False, gain=1.0):
    """Reference: the literal sequence of passes (zero-insert, pad, depthwise conv, slice)."""
    assert x.ndim == 4, x.shape
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    n, c, h, w = x.shape
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    # zero insertion
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(n, c, h * upy, w * upx)
    # pad, then crop for negative pads
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    # filter
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    else:
        x = F.conv2d(x, f[None, None, None, :].repeat(c, 1, 1, 1), groups=c)
        x = F.conv2d(x, f[None, None, :, None].repeat(c, 1, 1, 1), groups=c)
    return x[:, :, ::downy, ::downx]


def upfirdn2d(x, f=None, up=1, down=1, padding=0, flip_filter=False, gain=1.0, impl="auto"):
    """Upsample, FIR-filter and downsample a batch of 2-D images.

    Args: x [N,C,H,W]; f filter ([n] separable, [fh,fw], or None = identity); up, down int or [x, y]
    (default: 1); padding int, [px, py] or [x0, x1, y0, y1] applied after upsampling (default: 0, negative crops);
    flip_filter (default: False); gain (default: 1); impl 'ref' | 'fast' | 'auto' (default: 'auto').
    """
    fw, fh = filter_size(f)
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = parse_scaling(up), parse_scaling(down), parse_padding(padding)
    require_output("upfirdn2d", (x.shape[3] * upx + px0 + px1 - fw) // downx + 1,
                   (x.shape[2] * upy + py0 + py1 - fh) // downy + 1, padding)
    if resolve_impl(impl) == "ref":
        return upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)
    from . import _fast
    return _fast.upfirdn2d_fast(x, f, up, down, padding, flip_filter, gain)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1.0, impl="auto"):
    """Upsample by `up` with filter f, padding chosen so the output is exactly up x the input."""
    upx, upy = parse_scaling(up)
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1.0, impl="auto"):
    """Downsample by `down` with filter f, padding chosen so the output is exactly 1/down of the input."""
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def filter2d(x, f, padding=0, flip_filter=False, gain=1.0, impl="auto"):
    """Filter with f, padding so that the output has the input's size."""
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
