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


def _per_sample_weights_cheaper(x, weight, up=1) -> bool:
    """Folding styles into per-sample weights costs O*I*k*k per sample; scaling input and output costs
    (I + O) * H * W. Pick the cheaper (high-resolution layers: fold; low-resolution wide layers: scale)."""
    o, i, kh, kw = weight.shape
    h, w = x.shape[2] * up, x.shape[3] * up
    return o * i * kh * kw <= (i + o) * h * w


def modulated_conv2d_fast(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                          demodulate=True, flip_weight=True):
    """StyleGAN2 modulated conv, fast: per layer size, either per-sample modulated weights in one grouped conv
    (high resolution) or x*s -> one shared-weight conv -> *d (low resolution, many channels), with demodulation
    coefficients from (weight^2 summed over k) @ s^2. Noise is added in place when no grad is needed."""
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    assert styles.shape == (n, i), (styles.shape, (n, i))
    weight, styles = _fp16_prenorm(x, weight, styles, demodulate)
    dtype = x.dtype
    inplace = not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or styles.requires_grad))
    if _per_sample_weights_cheaper(x, weight, up):
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
        if demodulate:
            w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, -1, 1, 1, 1)
        y = conv2d_resample(x.reshape(1, -1, *x.shape[2:]), w.reshape(-1, i, kh, kw).to(dtype), f=resample_filter,
                            up=up, down=down, padding=padding, groups=n, flip_weight=flip_weight, impl="fast")
        y = y.reshape(n, -1, *y.shape[2:])
        if noise is not None:
            y = y.add_(noise.to(dtype)) if inplace else y + noise.to(dtype)
        return y
    x = x * styles.to(dtype).reshape(n, -1, 1, 1)
    x = conv2d_resample(x, weight.to(dtype), f=resample_filter, up=up, down=down, padding=padding,
                        flip_weight=flip_weight, impl="fast")
    if demodulate:
        d = (styles.float().square() @ _sq_sum(weight).t() + 1e-8).rsqrt()  # [N, O]
        d = d.to(dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            return torch.addcmul(noise.to(dtype), x, d)
        return x.mul_(d) if inplace else x * d
    if noise is not None:
        x = x.add_(noise.to(dtype)) if inplace else x + noise.to(dtype)
    return x


_SQ_CACHE: dict = {}


def _sq_sum(weight) -> torch.Tensor:
    """sum over the kernel of weight^2 -> [O, I] float32; cached for frozen weights (inference)."""
    if weight.requires_grad:
        return weight.float().square().sum(dim=[2, 3])
    key = (weight.data_ptr(), weight._version, tuple(weight.shape), weight.dtype, weight.device)
    hit = _SQ_CACHE.get(key)
    if hit is None:
        if len(_SQ_CACHE) > 512:
            _SQ_CACHE.clear()
        hit = _SQ_CACHE[key] = weight.float().square().sum(dim=[2, 3])
    return hit


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


def modulated_conv2d_sg3_ref(x, weight, styles, demodulate=True, padding=0, input_gain=None, _d=None):
    """StyleGAN3 modulated conv, reference: per-sample weights, one grouped convolution."""
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    assert styles.shape == (n, i), (styles.shape, (n, i))
    weight, styles = _sg3_weights(weight, styles, demodulate, input_gain)
    w = weight.unsqueeze(0) * styles.reshape(n, 1, i, 1, 1)
    if demodulate:
        d = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * d.reshape(n, o, 1, 1, 1)
    elif _d is not None:  # demodulation precomputed by the caller (weights/styles already pre-normalised)
        w = w * _d.to(w.dtype).reshape(n, o, 1, 1, 1)
    if input_gain is not None:
        w = w * input_gain.expand(n, i).reshape(n, 1, i, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    x = torch.nn.functional.conv2d(x, w.reshape(-1, i, kh, kw).to(x.dtype), padding=padding, groups=n)
    return x.reshape(n, -1, *x.shape[2:])


def modulated_conv2d_sg3_fast(x, weight, styles, demodulate=True, padding=0, input_gain=None):
    """StyleGAN3 modulated conv, fast: per-sample weights for high-resolution layers, otherwise styles*input_gain
    folded into the input and demodulation into the output (one shared-weight conv)."""
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    assert styles.shape == (n, i), (styles.shape, (n, i))
    weight, styles = _sg3_weights(weight, styles, demodulate, input_gain)
    dtype = x.dtype
    if _per_sample_weights_cheaper(x, weight):
        return modulated_conv2d_sg3_ref(x, weight, styles, demodulate=False, padding=padding,
                                        input_gain=input_gain, _d=_sg3_demod(weight, styles) if demodulate else None)
    scale = styles if input_gain is None else styles * input_gain.expand(n, i)
    x = x * scale.to(dtype).reshape(n, i, 1, 1)
    x = torch.nn.functional.conv2d(x, weight.to(dtype), padding=padding)
    if demodulate:
        d = _sg3_demod(weight, styles).to(dtype).reshape(n, o, 1, 1)
        return x.mul_(d) if not (torch.is_grad_enabled() and x.requires_grad) else x * d
    return x


def _sg3_demod(weight, styles):
    return (styles.float().square() @ weight.float().square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, O]


def modulated_conv2d_sg3(x, weight, styles, demodulate=True, padding=0, input_gain=None, impl="auto"):
    """StyleGAN3 modulated convolution. demodulate (default: True); padding (default: 0); input_gain [] or [I]
    or None (default: None); impl 'ref' | 'fast' | 'auto' (default: 'auto')."""
    fn = modulated_conv2d_sg3_ref if resolve_impl(impl) == "ref" else modulated_conv2d_sg3_fast
    return fn(x, weight, styles, demodulate, padding, input_gain)
