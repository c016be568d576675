"""Modulated convolutions of StyleGAN2 and StyleGAN3.

Shapes: x [N, I, H, W]; weight [O, I, k, k]; styles [N, I]; noise broadcastable to [N, O, H', W'] or None.
StyleGAN2: w' = weight * s (per input channel); demodulate with rsqrt(sum w'^2 + 1e-8) per output channel.
StyleGAN3: weight and styles are first pre-normalised by their RMS (the styles' RMS over the WHOLE batch, as the
official code does), then modulate/demodulate as above, then multiply by `input_gain` per input channel.
The reference runs one grouped convolution (groups = N); the fast path folds the style into the input and the
demodulation into the output, so every sample shares one weight (one large GEMM instead of N small ones).
"""
from __future__ import annotations

import numpy as np
import torch

from ._spec import resolve_impl
from .conv2d_resample import conv2d_resample


def _fp16_prenorm(x, weight, styles, demodulate):
    if x.dtype == torch.float16 and demodulate:  # avoid fp16 overflow, as the official code does
        o, i, kh, kw = weight.shape
        weight = weight * (1 / np.sqrt(i * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    return weight, styles


def modulated_conv2d_ref(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                         demodulate=True, flip_weight=True):
    """StyleGAN2 modulated conv, reference: per-sample weights, one grouped convolution."""
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    assert styles.shape == (n, i), (styles.shape, (n, i))
    weight, styles = _fp16_prenorm(x, weight, styles, demodulate)
    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
    if demodulate:
        d = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * d.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, i, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, groups=n,
                        flip_weight=flip_weight, impl="ref")
    x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def modulated_conv2d_fast(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                          demodulate=True, flip_weight=True):
    """StyleGAN2 modulated conv, fast: x*s -> shared-weight conv -> *d (+noise), demod coefficients from
    (weight^2 summed over k) @ s^2, never materialising per-sample weights."""
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    assert styles.shape == (n, i), (styles.shape, (n, i))
    weight, styles = _fp16_prenorm(x, weight, styles, demodulate)
    dtype = x.dtype
    x = x * styles.to(dtype).reshape(n, -1, 1, 1)
    x = conv2d_resample(x, weight.to(dtype), f=resample_filter, up=up, down=down, padding=padding,
                        flip_weight=flip_weight, impl="fast")
    if demodulate:
        d = (styles.float().square() @ weight.float().square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, O]
        d = d.to(dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            return torch.addcmul(noise.to(dtype), x, d) if not x.requires_grad else x * d + noise.to(dtype)
        return x.mul_(d) if not (torch.is_grad_enabled() and x.requires_grad) else x * d
    if noise is not None:
        x = x + noise.to(dtype)
    return x


def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                     demodulate=True, flip_weight=True, impl="auto"):
    """StyleGAN2 modulated convolution. up/down ints (default: 1) with resample_filter; padding (default: 0);
    demodulate (default: True); flip_weight (default: True); impl 'ref' | 'fast' | 'auto' (default: 'auto')."""
    fn = modulated_conv2d_ref if resolve_impl(impl) == "ref" else modulated_conv2d_fast
    return fn(x, weight, styles, noise, up, down, padding, resample_filter, demodulate, flip_weight)


def _sg3_weights(weight, styles, demodulate, input_gain):
    n = styles.shape[0]
    o, i, kh, kw = weight.shape
    if demodulate:
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()  # global RMS over batch and channels (official)
    return weight, styles


def modulated_conv2d_sg3_ref(x, weight, styles, demodulate=True, padding=0, input_gain=None):
    """StyleGAN3 modulated conv, reference: per-sample weights, one grouped convolution."""
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    assert styles.shape == (n, i), (styles.shape, (n, i))
    weight, styles = _sg3_weights(weight, styles, demodulate, input_gain)
    w = weight.unsqueeze(0) * styles.reshape(n, 1, i, 1, 1)
    if demodulate:
        d = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * d.reshape(n, o, 1, 1, 1)
    if input_gain is not None:
        w = w * input_gain.expand(n, i).reshape(n, 1, i, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    x = torch.nn.functional.conv2d(x, w.reshape(-1, i, kh, kw).to(x.dtype), padding=padding, groups=n)
    return x.reshape(n, -1, *x.shape[2:])


def modulated_conv2d_sg3_fast(x, weight, styles, demodulate=True, padding=0, input_gain=None):
    """StyleGAN3 modulated conv, fast: fold styles*input_gain into the input and demodulation into the output,
    one shared-weight conv for the batch."""
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    assert styles.shape == (n, i), (styles.shape, (n, i))
    weight, styles = _sg3_weights(weight, styles, demodulate, input_gain)
    scale = styles if input_gain is None else styles * input_gain.expand(n, i)
    dtype = x.dtype
    x = x * scale.to(dtype).reshape(n, i, 1, 1)
    x = torch.nn.functional.conv2d(x, weight.to(dtype), padding=padding)
    if demodulate:
        d = (styles.float().square() @ weight.float().square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
        d = d.to(dtype).reshape(n, o, 1, 1)
        return x.mul_(d) if not (torch.is_grad_enabled() and x.requires_grad) else x * d
    return x


def modulated_conv2d_sg3(x, weight, styles, demodulate=True, padding=0, input_gain=None, impl="auto"):
    """StyleGAN3 modulated convolution. demodulate (default: True); padding (default: 0); input_gain [] or [I]
    or None (default: None); impl 'ref' | 'fast' | 'auto' (default: 'auto')."""
    fn = modulated_conv2d_sg3_ref if resolve_impl(impl) == "ref" else modulated_conv2d_sg3_fast
    return fn(x, weight, styles, demodulate, padding, input_gain)
