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
import torch.nn.functional as F

from . import _workspace as workspace
from ._fast import _ceil_div
from ._frozen import caching, derived
from ._spec import conv_layout, needs_grad, resolve_impl
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


def _per_sample_weights_cheaper(x, weight, up=1, styles=None) -> bool:
    """Folding styles into per-sample weights costs O*I*k*k per sample; scaling input and output costs
    (I + O) * H * W. Pick the cheaper (high-resolution layers: fold; low-resolution wide layers: scale).
    Under autograd with a frozen weight (projection, InsetGAN: only latents learn) always scale: the convolution's
    backward then needs only the input gradient, while per-sample weights need the weight gradient too (a second
    GEMM as large as the forward one) just to reach the styles."""
    if styles is not None and needs_grad(x, styles) and not weight.requires_grad:
        return False
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
    inplace = not needs_grad(x, weight, styles)
    if _per_sample_weights_cheaper(x, weight, up, styles):
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
        if demodulate:
            w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, -1, 1, 1, 1)
        y = _per_sample(x, w.to(dtype), lambda xi, wi: conv2d_resample(
            xi, wi, f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight, impl="fast"))
        if noise is not None:
            y = y.add_(noise.to(dtype)) if inplace else y + noise.to(dtype)
        return y
    operand, energy = _shared_kernel(weight, dtype, up, demodulate)
    x = x.contiguous(memory_format=conv_layout(weight)) * styles.to(dtype).reshape(n, -1, 1, 1)
    x = conv2d_resample(x, operand, f=resample_filter, up=up, down=down, padding=padding,
                        flip_weight=flip_weight, impl="fast")
    if demodulate:
        d = _demodulation(energy, styles).to(dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            return torch.addcmul(noise.to(dtype), x, d)
        return x.mul_(d) if inplace else x * d
    if noise is not None:
        x = x.add_(noise.to(dtype)) if inplace else x + noise.to(dtype)
    return x


CL = torch.channels_last


def _per_sample(x, w, fn):
    """Run fn(x_i [1,I,H,W], w_i [O,I,k,k]) per sample in `conv_layout` (channels-last, oneDNN's fast path, where
    it is fast; a grouped convolution would force NCHW) and stack the results."""
    x = x.contiguous(memory_format=conv_layout(w))
    if x.shape[0] == 1:
        return fn(x, w[0])
    return torch.cat([fn(x[j:j + 1], w[j]) for j in range(x.shape[0])])


def _per_sample_pointwise(x, w, bias):
    """1x1 convolution with per-sample weights w [N, O, I, 1, 1] (inference): per sample one GEMM
    [H*W, I] @ [I, O] (+ bias) over channels-last pixels, written into a workspace tensor. On a CPU, MKL's GEMM runs
    StyleGAN3's shapes 10-35 % faster than oneDNN's 1x1 convolution, and the output comes from the arena (no page
    faults for a fresh 100 MB tensor)."""
    n, i, h, wd = x.shape
    o = w.shape[1]
    x = x.contiguous(memory_format=CL)
    out = workspace.empty([n, o, h, wd], x.dtype, x.device, channels_last=True)
    for j in range(n):
        pixels = x[j].permute(1, 2, 0).reshape(h * wd, i)  # a view: channels-last memory
        result = out[j].permute(1, 2, 0).view(h * wd, o)
        weight = w[j].reshape(o, i).t()
        if bias is None:
            torch.mm(pixels, weight, out=result)
        else:
            torch.addmm(bias, pixels, weight, out=result)
    return out


def _kernel_energy(w) -> torch.Tensor:
    """sum over the kernel of w^2 -> [O, I] float32. Summed over the flattened kernel: the same additions in the
    same order as over dims [2, 3], about a third faster on a CPU."""
    return w.float().square().reshape(*w.shape[:2], -1).sum(-1)


class _KernelEnergy(torch.autograd.Function):
    """sum over the kernel of w^2 -> [O, I] float32; backward one product, 2 w g. Autograd's square-then-sum makes
    three weight-sized temporaries in its backward: with PTI's learned weights that was a fifth of a bf16 step on a
    CPU. (The forward keeps square-then-sum: the same rounding as the reference, which long optimisations amplify.)"""

    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return _kernel_energy(w)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        return w * (2 * g).to(w.dtype)[:, :, None, None]


def _sq_sum(weight) -> torch.Tensor:
    """sum over the kernel of weight^2 -> [O, I] float32 (once per frozen weight inside `frozen_weights()`)."""
    return derived(weight, "sq_sum", _KernelEnergy.apply)


class _LearnedKernel(torch.autograd.Function):
    """A learned weight's two uses on the shared-weight path in one autograd node: the convolution operand (the
    weight in the compute dtype) and the kernel energy [O, I] float32 (None without demodulation). Its backward
    makes the weight's gradient in one pass over the weight, operand gradient + 2 w g_energy. As separate nodes,
    each gradient took passes of its own and autograd summed them in another: passes over cold weights that were
    a quarter of a bf16 PTI step on a CPU."""

    @staticmethod
    def forward(ctx, w, dtype, energy):
        ctx.save_for_backward(w)
        return w.to(dtype), (_kernel_energy(w) if energy else None)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_operand, g_energy):
        (w,) = ctx.saved_tensors
        grad = None if g_operand is None else g_operand.to(w.dtype, memory_format=torch.contiguous_format)
        if g_energy is not None:
            coefficient = (2 * g_energy).to(w.dtype)[:, :, None, None]
            grad = w * coefficient if grad is None else grad.addcmul_(w, coefficient)
        return grad, None, None


def _shared_kernel(weight, dtype, up=1, energy=True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(convolution operand, kernel energy or None) for the shared-weight path: a frozen weight's from the
    `frozen_weights()` cache (`_operand`, `_sq_sum`), a learned weight's from one `_LearnedKernel` node."""
    if needs_grad(weight):
        return _LearnedKernel.apply(weight, dtype, energy)
    return _operand(weight, dtype, up), (_sq_sum(weight) if energy else None)


def _operand(weight, dtype, up=1) -> torch.Tensor:
    """weight as the shared-weight convolution takes it (its inputs are channels-last): in the compute dtype and,
    for a frozen weight, in channels-last layout, once per `frozen_weights()` scope. oneDNN otherwise copies an
    NCHW weight into its layout on every call, forward and backward (about 6 % of a projection step). Outside a
    scope that copy is oneDNN's; a learned weight keeps its layout (a copy there would only move to autograd), and
    so does an upsampling one: `conv2d_resample` derives its transposed kernel from the NCHW weight, a fast copy
    (5x slower from channels-last)."""
    if weight.requires_grad or up > 1 or not caching():
        return weight if weight.dtype == dtype else derived(weight, dtype, lambda w: w.to(dtype))
    return derived(weight, ("operand", dtype), lambda w: w.to(dtype, memory_format=CL))


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
        weight = derived(weight, "sg3_rms", lambda w: w * w.square().mean([1, 2, 3], keepdim=True).rsqrt())
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


def modulated_conv2d_sg3_fast(x, weight, styles, demodulate=True, padding=0, input_gain=None, bias=None,
                              channel_multiple=1):
    """StyleGAN3 modulated conv, fast: per-sample weights for high-resolution layers, otherwise styles*input_gain
    folded into the input and demodulation into the output (one shared-weight conv).

    Channel padding (inference): x may carry zero channels after its I real ones (a padded layer's output; their
    weights are zero), and with channel_multiple > 1 the output channels are zero-padded up to a multiple of it:
    oneDNN's depthwise filters in filtered_lrelu run up to 2x faster per channel on such counts (287 -> 288)."""
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    assert styles.shape == (n, i), (styles.shape, (n, i))
    pad_in, pad_out = x.shape[1] - i, _ceil_div(o, channel_multiple) * channel_multiple - o
    assert pad_in >= 0, (x.shape, weight.shape)
    weight, styles = _sg3_weights(weight, styles, demodulate, input_gain)
    dtype = x.dtype
    b = None if bias is None else F.pad(bias.to(dtype), [0, pad_out])
    if _per_sample_weights_cheaper(x, weight, 1, styles):
        w = weight.unsqueeze(0) * styles.reshape(n, 1, i, 1, 1)
        if demodulate:
            w = w * _demodulation(_sq_sum(weight), styles).reshape(n, o, 1, 1, 1)
        if input_gain is not None:
            w = w * input_gain.expand(n, i).reshape(n, 1, i, 1, 1)
        w = F.pad(w, [0, 0, 0, 0, 0, pad_in, 0, pad_out]) if pad_in or pad_out else w
        if kh == kw == 1 and padding == 0 and not needs_grad(x, w):
            return _per_sample_pointwise(x, w.to(dtype), b)
        return _per_sample(x, w.to(dtype), lambda xi, wi: F.conv2d(xi, wi, bias=b, padding=padding))
    scale = styles if input_gain is None else styles * input_gain.expand(n, i)
    scale = F.pad(scale.to(dtype), [0, pad_in]).reshape(n, i + pad_in, 1, 1)
    x = x.contiguous(memory_format=conv_layout(weight)) * scale
    w, energy = _shared_kernel(weight, dtype, energy=demodulate)
    if pad_in or pad_out:
        w = derived(w, ("pad", pad_in, pad_out), lambda t: F.pad(t, [0, 0, 0, 0, 0, pad_in, 0, pad_out]))
    x = F.conv2d(x, w, padding=padding)
    if demodulate:
        d = F.pad(_demodulation(energy, styles).to(dtype), [0, pad_out]).reshape(n, o + pad_out, 1, 1)
        if b is not None:
            return torch.addcmul(b.reshape(1, -1, 1, 1), x, d)
        return x.mul_(d) if not needs_grad(x) else x * d
    return x if b is None else x + b.reshape(1, -1, 1, 1)


def _demodulation(energy, styles):
    """rsqrt(sum over i and the kernel of (w s)^2 + 1e-8) [N, O] float32, from the kernel energy [O, I]
    (`_shared_kernel`) and the styles [N, I]: the shared-weight paths' demodulation (SG2 and SG3)."""
    return (styles.float().square() @ energy.t() + 1e-8).rsqrt()


def modulated_conv2d_sg3(x, weight, styles, demodulate=True, padding=0, input_gain=None, impl="auto", bias=None,
                         channel_multiple=1):
    """StyleGAN3 modulated convolution. demodulate (default: True); padding (default: 0); input_gain [] or [I]
    or None (default: None); impl 'ref' | 'fast' | 'auto' (default: 'auto'); bias [O] added to the output
    (default: None; the fast path folds it into the convolution); channel_multiple: the fast path zero-pads the
    output channels to a multiple of it and takes inputs with trailing zero channels (default: 1, none)."""
    if resolve_impl(impl) == "ref":
        assert channel_multiple == 1 and x.shape[1] == weight.shape[1], "channel padding is a fast-path layout"
        y = modulated_conv2d_sg3_ref(x, weight, styles, demodulate, padding, input_gain)
        return y if bias is None else y + bias.to(y.dtype).reshape(1, -1, 1, 1)
    return modulated_conv2d_sg3_fast(x, weight, styles, demodulate, padding, input_gain, bias, channel_multiple)


def modulated_conv2d_bias_act(x, weight, styles, bias, noise=None, up=1, padding=0, resample_filter=None,
                              flip_weight=True, act="lrelu", gain=None, clamp=None, impl="auto"):
    """One StyleGAN2 synthesis layer: demodulated modulated conv (+noise) then bias_act(act, gain, clamp).

    Reference: `modulated_conv2d_ref` then `bias_act_ref` (the official sequence of passes). Fast (inference):
    the activation gain is folded into the demodulated weights, noise and bias (lrelu(g*v) = g*lrelu(v), g > 0),
    the bias goes into the convolution where there is no upsampling, then lrelu and clamp run in place."""
    from .bias_act import _params, bias_act
    spec, alpha, g, c = _params(act, None, gain, clamp)
    impl = resolve_impl(impl)
    grad = needs_grad(x, weight, styles, bias)
    if impl == "ref" or grad or act not in ("lrelu", "linear", "relu") or g <= 0:
        y = modulated_conv2d(x, weight, styles, noise=noise, up=up, padding=padding, resample_filter=resample_filter,
                             flip_weight=flip_weight, impl=impl)
        return bias_act(y, bias.to(y.dtype), act=act, gain=gain, clamp=clamp, impl=impl)
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    dtype = x.dtype
    weight, styles = _fp16_prenorm(x, weight, styles, True)
    bg = (bias.float() * g).to(dtype)
    if _per_sample_weights_cheaper(x, weight, up):
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
        w = w * ((w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt() * g).reshape(n, -1, 1, 1, 1)
        w = w.to(dtype)
        if up == 1 and padding == kh // 2 and kh == kw:
            fw = (lambda t: t) if flip_weight or kh == 1 else (lambda t: t.flip([2, 3]))
            y = _per_sample(x, w, lambda xi, wi: torch.nn.functional.conv2d(xi, fw(wi), bias=bg, padding=padding))
        else:
            y = _per_sample(x, w, lambda xi, wi: conv2d_resample(
                xi, wi, f=resample_filter, up=up, padding=padding, flip_weight=flip_weight, impl="fast"))
            y = y.add_(bg.reshape(1, -1, 1, 1))
        if noise is not None:
            y.add_((noise.float() * g).to(dtype))
    else:
        operand, energy = _shared_kernel(weight, dtype, up)
        y = conv2d_resample(x.contiguous(memory_format=CL) * styles.to(dtype).reshape(n, -1, 1, 1),
                            operand, f=resample_filter, up=up, padding=padding, flip_weight=flip_weight, impl="fast")
        d = (_demodulation(energy, styles) * g).to(dtype).reshape(n, -1, 1, 1)
        add = bg.reshape(1, -1, 1, 1)
        if noise is not None:
            add = add + (noise.float() * g).to(dtype)
        y = torch.addcmul(add, y, d)
    if act == "lrelu":
        torch.nn.functional.leaky_relu_(y, alpha)
    elif act == "relu":
        torch.nn.functional.relu_(y)
    if c >= 0:
        y.clamp_(-c, c)
    return y
