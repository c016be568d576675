"""Fast-vs-reference parity of the shared GAN ops (values and gradients), the impl switch, determinism, and the
CUDA path when a GPU is present."""
from __future__ import annotations

import json

import pytest
import torch

from hgtest import FIXTURES, requires_cuda

from humangen.models import ops
from humangen.models.ops import bias_act, conv2d_resample, filtered_lrelu, modulated_conv2d, \
    modulated_conv2d_bias_act, modulated_conv2d_sg3, setup_filter, upfirdn2d
from humangen.models.stylegan3 import design_lowpass_filter

G0 = torch.Generator().manual_seed(0)


def rnd(*shape, grad=False):
    t = torch.randn(*shape, generator=G0)
    return t.requires_grad_(grad)


FILTERS = {
    "none": None,
    "sg2_4x4": setup_filter([1, 3, 3, 1]),
    "firwin12": design_lowpass_filter(12, 3, 4, 32),
    "radial12": design_lowpass_filter(12, 3, 4, 32, radial=True),
    "random3x5": torch.randn(3, 5, generator=torch.Generator().manual_seed(1)),
}
RESAMPLE = [(1, 1, 0), (2, 1, [2, 1, 2, 1]), (1, 2, [1, 1, 1, 1]), (4, 2, [8, 5, -2, -5]), (2, 2, [11, 10, 11, 10]),
            ([2, 1], [1, 2], [1, 0, 2, 3])]


def _grads(fn, inputs, seed=5):
    out = fn(*inputs)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return out.detach(), torch.autograd.grad((out * w).sum(), [i for i in inputs if i.requires_grad])


def _close(a, b, tol=2e-5):
    scale = max(1.0, a.abs().max().item())
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a - b).abs().max().item() <= tol * scale, (a - b).abs().max().item()


@pytest.mark.parametrize("fname", list(FILTERS))
@pytest.mark.parametrize("up,down,pad", RESAMPLE)
def test_upfirdn2d_fast_matches_ref_values_and_grads(fname, up, down, pad):
    f = FILTERS[fname]
    x = rnd(2, 3, 30, 26, grad=True)
    for flip in (False, True):
        a, ga = _grads(lambda t: upfirdn2d(t, f, up, down, pad, flip, gain=3.0, impl="ref"), [x])
        b, gb = _grads(lambda t: upfirdn2d(t, f, up, down, pad, flip, gain=3.0, impl="fast"), [x])
        _close(a, b)
        _close(ga[0], gb[0])
        with torch.no_grad():  # inference path (GEMM row/column passes)
            _close(a, upfirdn2d(x, f, up, down, pad, flip, gain=3.0, impl="fast"))


@pytest.mark.parametrize("fname,up,down,pad", [
    ("sg2_4x4", 1, 1, [2, -1, -4, 11]), ("firwin12", 1, 2, [-5, 15, 14, -4]), ("firwin12", 2, 1, [11, 10, -9, 24]),
    ("random3x5", 2, 2, [-9, 14, 1, 1]), ("none", 1, 1, [-4, 6, 0, 0])])
def test_upfirdn2d_crop_past_the_input(fname, up, down, pad):
    """A negative padding larger than the (upsampled) input crops into the zeros that the other side's padding
    adds, as in the reference's pad-then-slice: values, gradients and the inference path agree (3x3 input)."""
    f = FILTERS[fname]
    x = rnd(2, 3, 3, 3, grad=True)
    a, ga = _grads(lambda t: upfirdn2d(t, f, up, down, pad, impl="ref"), [x])
    b, gb = _grads(lambda t: upfirdn2d(t, f, up, down, pad, impl="fast"), [x])
    _close(a, b)
    _close(ga[0], gb[0])
    with torch.no_grad():
        _close(a, upfirdn2d(x, f, up, down, pad, impl="fast"))
        y = rnd(1, 8, 3, 20)
        fu, fd = design_lowpass_filter(6, 3, 4, 16), design_lowpass_filter(4, 3, 4, 32, radial=True)
        _close(filtered_lrelu(y, fu, fd, None, 1, 2, [2, -1, -4, 11], impl="ref"),
               filtered_lrelu(y, fu, fd, None, 1, 2, [2, -1, -4, 11], impl="fast"))


@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_padding_that_leaves_no_output_is_an_error(impl):
    """Both implementations refuse a crop that leaves nothing (the reference's slicing would wrap around)."""
    x = rnd(1, 3, 11, 16)
    with pytest.raises(ValueError, match=r"upfirdn2d: padding \[-5, -18, 4, -16\] leaves a -11x-3 output"):
        upfirdn2d(x, FILTERS["random3x5"], 1, 1, [-5, -18, 4, -16], impl=impl)
    with pytest.raises(ValueError, match="filtered_lrelu: padding .* leaves a"):
        filtered_lrelu(x, FILTERS["firwin12"], FILTERS["radial12"], None, 2, 2, [-20, 0, 0, 0], impl=impl)


@pytest.mark.parametrize("case", ["up2", "up4_rect_crop", "critical", "torgb"])
def test_filtered_lrelu_fast_matches_ref_values_and_grads(case):
    fu12, fd12 = design_lowpass_filter(12, 3, 4, 32), design_lowpass_filter(12, 3, 4, 32)
    cfg = {"up2": (fu12, design_lowpass_filter(12, 3, 4, 32, radial=True), 2, 2, [11, 10, 11, 10], 2 ** 0.5, 0.2),
           "up4_rect_crop": (design_lowpass_filter(24, 3, 4, 64), design_lowpass_filter(12, 5, 4, 64, radial=True),
                             4, 2, [8, 5, -2, -5], 2 ** 0.5, 0.2),
           "critical": (fu12, fd12, 2, 2, [1, 0, -9, -10], 2 ** 0.5, 0.2),
           "torgb": (None, None, 1, 1, 0, 1.0, 1.0)}[case]
    fu, fd, up, down, pad, gain, slope = cfg
    x = rnd(2, 5, 26, 22, grad=True)
    b = rnd(5, grad=True)
    ref = _grads(lambda t, bb: filtered_lrelu(t, fu, fd, bb, up, down, pad, gain, slope, clamp=1.5, impl="ref"), [x, b])
    fast = _grads(lambda t, bb: filtered_lrelu(t, fu, fd, bb, up, down, pad, gain, slope, clamp=1.5, impl="fast"),
                  [x, b])
    _close(ref[0], fast[0])
    for ga, gb in zip(ref[1], fast[1]):
        _close(ga, gb)
    with torch.no_grad():  # the in-place (no-grad) fast path gives the same values
        _close(ref[0], filtered_lrelu(x, fu, fd, b, up, down, pad, gain, slope, clamp=1.5, impl="fast"))


@pytest.mark.parametrize("path", ["rolling", "blocked"])
@pytest.mark.parametrize("n,c,up,pad,fu_taps,flip,bias", [
    (2, 16, 2, [11, 10, 11, 10], 12, False, True), (1, 8, 4, [8, 5, -2, -5], 24, False, True),
    (2, 16, 2, [1, 0, -9, -10], 12, True, False), (1, 24, 2, [13, 12, 3, 2], 12, False, True),
    (1, 8, 4, [7, 3, 1, 2], 12, False, True)])  # bands whose vertical pass starts on different phases
def test_filtered_lrelu_fast_row_bands(monkeypatch, path, n, c, up, pad, fu_taps, flip, bias):
    """Inference in many bands of output rows, on either banded path: channels-last bands shared through a ring
    (`rolling`, CPUs with AVX-512) or bands of 8-channel blocks (`blocked`, CPUs without). Each must give the
    reference's values for every padding (negative ones crop), up factor, flip_filter, batch and with or without
    a bias, and leave its output channels-last like the other paths."""
    from humangen.models.ops import _fast
    monkeypatch.setattr(_fast, "CHUNK_ELEMS", 3000)  # force many bands of output rows
    monkeypatch.setattr(_fast, "blocked_depthwise", lambda device: path == "blocked")
    taken = []
    for name in ("_filtered_lrelu_blocked", "_filtered_lrelu_rolling"):
        fn = getattr(_fast, name)
        monkeypatch.setattr(_fast, name, lambda *a, _f=fn, _n=name, **k: taken.append(_n) or _f(*a, **k))
    x, b = rnd(n, c, 33, 21), (rnd(c) if bias else None)
    fu = design_lowpass_filter(fu_taps, 3, 4, 16 * up)
    fd = design_lowpass_filter(12, 3, 4, 32, radial=True)
    with torch.no_grad():
        ref = filtered_lrelu(x, fu, fd, b, up, 2, pad, clamp=0.7, flip_filter=flip, impl="ref")
        fast = filtered_lrelu(x, fu, fd, b, up, 2, pad, clamp=0.7, flip_filter=flip, impl="fast")
    assert taken == [f"_filtered_lrelu_{path}"]
    assert fast.is_contiguous(memory_format=torch.channels_last)
    _close(ref, fast)


@pytest.mark.parametrize("avx512,channels,blocked", [(False, 16, True), (True, 16, False), (False, 12, False)])
def test_channel_blocks_only_where_the_cpu_wants_them(monkeypatch, avx512, channels, blocked):
    """Channel blocks on a CPU without AVX-512 and a channel count that splits into blocks of 8; channels-last
    bands (the rolling path) otherwise; never on a GPU."""
    import importlib
    from humangen.models.ops import _fast
    spec = importlib.import_module("humangen.models.ops._spec")
    monkeypatch.setattr(spec, "_cpu_has_avx512", lambda: avx512)
    monkeypatch.setattr(_fast, "CHUNK_ELEMS", 3000)
    assert spec.blocked_depthwise("cpu") is (not avx512) and spec.blocked_depthwise("cuda") is False
    taken = []
    for name in ("_filtered_lrelu_blocked", "_filtered_lrelu_rolling"):
        path = getattr(_fast, name)
        monkeypatch.setattr(_fast, name, lambda *a, _p=path, _n=name, **k: taken.append(_n) or _p(*a, **k))
    x, b = rnd(1, channels, 30, 18), rnd(channels)
    fu, fd = design_lowpass_filter(12, 3, 4, 32), design_lowpass_filter(12, 3, 4, 32, radial=True)
    with torch.no_grad():
        _close(filtered_lrelu(x, fu, fd, b, 2, 2, [11, 10, 11, 10], clamp=0.7, impl="ref"),
               filtered_lrelu(x, fu, fd, b, 2, 2, [11, 10, 11, 10], clamp=0.7, impl="fast"))
    assert taken == ["_filtered_lrelu_blocked" if blocked else "_filtered_lrelu_rolling"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("first", [0, 1])
def test_copy_chunks_is_a_copy(dtype, first):
    """The blocked path's layout copies move whole 16-byte units where offsets allow (first=0) and fall back to a
    plain copy where a view starts off that grid (first=1); either way dst ends up bit-equal to src."""
    from humangen.models.ops._fast import _copy_chunks
    src = torch.randn(3, 5, 7, 16, dtype=dtype)[..., first:first + 8]  # [blocks, rows, cols, 8]
    dst = torch.zeros(5, 7, 3, 8, dtype=dtype)
    _copy_chunks(dst, src.permute(1, 2, 0, 3))
    assert torch.equal(dst, src.permute(1, 2, 0, 3))


@pytest.mark.parametrize("fname,up,pad", [("firwin12", 2, [11, 10, 11, 10]), ("sg2_4x4", 2, [2, 1, 2, 1]),
                                           ("binomial1d", 2, [2, 1, 2, 1]), ("random3x5", 2, [1, 2, 1, 2]),
                                           ("none", 4, 0)])
def test_clamp_bound_holds_for_every_upsampled_sample(fname, up, pad):
    """The fast path skips the clamp pass when max|x| times the up filter's largest phase L1 norm (times up**2 and
    the gain) is within the clamp: that bound must hold for every sample of the upsampled intermediate, also for
    +-1 inputs, which come close to it."""
    from humangen.models.ops._fast import _phase_l1
    f = torch.tensor([1.0, 3, 3, 1]) / 8 if fname == "binomial1d" else FILTERS[fname]  # separable, taps >= 0
    gen = torch.Generator().manual_seed(3)
    for x in (torch.randn(2, 3, 17, 13, generator=gen), torch.randint(0, 2, (2, 3, 17, 13), generator=gen) * 2.0 - 1):
        v = upfirdn2d(x, f, up=up, padding=pad, gain=up ** 2, impl="ref")
        bound = x.abs().max().item() * _phase_l1(f, up) * up ** 2
        assert v.abs().max().item() <= bound * (1 + 1e-6)
    if fname in ("none", "sg2_4x4", "binomial1d"):  # non-negative taps: a constant input reaches the bound (it is tight)
        x = torch.ones(1, 1, 9, 9)
        v = upfirdn2d(x, f, up=up, padding=pad, gain=up ** 2, impl="ref")
        assert v.abs().max().item() == pytest.approx(_phase_l1(f, up) * up ** 2, rel=1e-6)


def test_filtered_lrelu_skips_a_clamp_that_cannot_bind_and_keeps_one_that_can():
    from humangen.models.ops import _fast
    fu, fd = design_lowpass_filter(12, 3, 4, 32), design_lowpass_filter(12, 3, 4, 32, radial=True)
    x, b = rnd(1, 6, 20, 16), rnd(6)
    args = (fu, fd, b, 2, 2, [11, 10, 11, 10], 2 ** 0.5, 0.2)
    peak = (x + b.reshape(1, -1, 1, 1)).abs().max().item()
    loose = peak * _fast._phase_l1(fu, 2) * 4 * 2 ** 0.5 * 1.01  # just above the bound: the clamp cannot bind
    assert _fast._clamp_never_binds(x + b.reshape(1, -1, 1, 1), fu, 2, 2 ** 0.5, 0.2, loose)
    assert not _fast._clamp_never_binds(x + b.reshape(1, -1, 1, 1), fu, 2, 2 ** 0.5, 0.2, loose / 1.02)
    # inference adds the bias inside the up pass: the bound on x alone must grow by max|b|
    x_only = x.abs().max().item() * _fast._phase_l1(fu, 2) * 4 * 2 ** 0.5 * 1.01
    assert _fast._clamp_never_binds(x, fu, 2, 2 ** 0.5, 0.2, x_only)
    assert not _fast._clamp_never_binds(x, fu, 2, 2 ** 0.5, 0.2, x_only, bias=b + 10)
    with torch.no_grad():  # a bias that lifts the peak over the clamp is clamped like the reference
        _close(filtered_lrelu(x, fu, fd, b + 10, *args[3:], clamp=x_only, impl="ref"),
               filtered_lrelu(x, fu, fd, b + 10, *args[3:], clamp=x_only, impl="fast"))
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    assert not _fast._clamp_never_binds(nan, fu, 2, 2 ** 0.5, 0.2, 1e30)
    with torch.no_grad():
        skipped = filtered_lrelu(x, *args, clamp=loose, impl="fast")
        assert torch.equal(skipped, filtered_lrelu(x, *args, clamp=None, impl="fast"))
        _close(filtered_lrelu(x, *args, clamp=loose, impl="ref"), skipped)
        tight = filtered_lrelu(x, *args, clamp=0.5, impl="fast")  # binds: must still clamp
        _close(filtered_lrelu(x, *args, clamp=0.5, impl="ref"), tight)


@pytest.mark.parametrize("act", ["linear", "lrelu", "relu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"])
def test_bias_act_fast_matches_ref(act):
    x, b = rnd(3, 4, 5, 6, grad=True), rnd(4, grad=True)
    ref = _grads(lambda t, bb: bias_act(t, bb, act=act, clamp=0.8, impl="ref"), [x, b])
    fast = _grads(lambda t, bb: bias_act(t, bb, act=act, clamp=0.8, impl="fast"), [x, b])
    _close(ref[0], fast[0], 1e-6)
    for ga, gb in zip(ref[1], fast[1]):
        _close(ga, gb, 1e-6)
    with torch.no_grad():
        _close(ref[0], bias_act(x, b, act=act, clamp=0.8, impl="fast"), 1e-6)


@pytest.mark.parametrize("shape", [(3, 6, 5, 9, 7), (2, 40, 36, 3, 2)], ids=["per-sample", "shared-weight"])
@pytest.mark.parametrize("up,demod,noise", [(1, True, True), (2, True, True), (1, False, False), (2, True, False)])
def test_sg2_modulated_conv_fast_matches_ref(up, demod, noise, shape):
    """Every input learns (PTI learns the weights too), on both fast paths: per-sample weights (high resolution) and
    one shared-weight convolution with the demodulation outside it (wide layers at low resolution)."""
    n, i, o, h, w_ = shape
    x = rnd(n, i, h, w_, grad=True)
    w = rnd(o, i, 3, 3, grad=True)
    s = rnd(n, i, grad=True)
    nz = rnd(1, 1, h * up, w_ * up) if noise else None
    f = setup_filter([1, 3, 3, 1])

    def run(impl):
        return lambda xx, ww, ss: modulated_conv2d(xx, ww, ss, noise=nz, up=up, padding=1, resample_filter=f,
                                                   demodulate=demod, flip_weight=(up == 1), impl=impl)
    ref, fast = _grads(run("ref"), [x, w, s]), _grads(run("fast"), [x, w, s])
    _close(ref[0], fast[0])
    for ga, gb in zip(ref[1], fast[1]):
        _close(ga, gb)


@pytest.mark.parametrize("avx512", [False, True], ids=["cpu-without-avx512", "cpu-with-avx512"])
def test_learned_weight_convolutions_run_in_the_layout_the_cpu_is_fast_in(monkeypatch, avx512):
    """A learned weight's convolution (PTI) runs NCHW on a CPU without AVX-512, where oneDNN's channels-last weight
    gradient is several times slower, and channels-last elsewhere; a frozen weight's always channels-last. Either
    way the values and all gradients are the reference's, on both SG2 paths and SG3's shared-weight path."""
    import importlib
    spec = importlib.import_module("humangen.models.ops._spec")
    monkeypatch.setattr(spec, "_cpu_has_avx512", lambda: avx512)
    learned, frozen = rnd(4, 4, 3, 3, grad=True), rnd(4, 4, 3, 3)
    expected = torch.channels_last if avx512 else torch.contiguous_format
    assert spec.conv_layout(learned) == expected and spec.conv_layout(frozen) == torch.channels_last
    with torch.no_grad():
        assert spec.conv_layout(learned) == torch.channels_last  # nothing to differentiate: the forward's layout
    f = setup_filter([1, 3, 3, 1])
    for n, i, o, h, w_ in [(2, 6, 5, 9, 7), (1, 40, 36, 3, 2)]:  # per-sample weights; one shared weight
        for up in (1, 2):
            x, w, s = rnd(n, i, h, w_, grad=True), rnd(o, i, 3, 3, grad=True), rnd(n, i, grad=True)
            def run(impl):
                return lambda xx, ww, ss: modulated_conv2d(xx, ww, ss, up=up, padding=1, resample_filter=f,
                                                           flip_weight=(up == 1), impl=impl)
            ref, fast = _grads(run("ref"), [x, w, s]), _grads(run("fast"), [x, w, s])
            if up == 1:
                assert fast[0].is_contiguous(memory_format=expected), (n, i, o)
            for a, b in zip((ref[0], *ref[1]), (fast[0], *fast[1])):
                _close(a, b)
    x, w, s = rnd(1, 40, 3, 2, grad=True), rnd(36, 40, 1, 1, grad=True), rnd(1, 40, grad=True)
    ref = _grads(lambda *t: ops.modulated_conv2d_sg3(*t, impl="ref"), [x, w, s])
    fast = _grads(lambda *t: ops.modulated_conv2d_sg3(*t, impl="fast"), [x, w, s])
    assert fast[0].is_contiguous(memory_format=expected)
    for a, b in zip((ref[0], *ref[1]), (fast[0], *fast[1])):
        _close(a, b)


def test_learned_weight_gradient_in_bf16_follows_fp32():
    """bf16 (precision=bf16 in PTI), an upsampling layer on the shared-weight path: the learned float32 weight
    gets a float32 gradient close to the fp32 path's."""
    x, s = rnd(2, 40, 4, 3, grad=True), rnd(2, 40, grad=True)
    w = torch.nn.Parameter(rnd(36, 40, 3, 3))
    f = setup_filter([1, 3, 3, 1])
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        y = modulated_conv2d(x.to(dtype), w, s, up=2, padding=1, resample_filter=f, flip_weight=False, impl="fast")
        assert y.dtype == dtype
        probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
        grads[dtype] = torch.autograd.grad((y.float() * probe).sum(), [w])[0]
    g32, g16 = grads[torch.float32], grads[torch.bfloat16]
    assert g16.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(g32.flatten(), g16.flatten(), dim=0) > 0.995


@pytest.mark.parametrize("flip_weight", [False, True])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format], ids=["channels-last", "nchw"])
def test_learned_transposed_kernel_gives_a_contiguous_gradient(flip_weight, layout):
    """An upsampling layer's learned weight (PTI): the transposed, flipped kernel's backward hands back the gradient
    autograd gives through the views, laid out like the weight (a sum with its other gradient stays fast)."""
    import importlib
    resample = importlib.import_module("humangen.models.ops.conv2d_resample")
    w = rnd(6, 5, 3, 3, grad=True)
    probe = rnd(5, 6, 3, 3).contiguous(memory_format=layout)
    fast = resample._TransposedKernel.apply(w, flip_weight, layout)
    (fast_grad,) = torch.autograd.grad((fast * probe).sum(), [w])
    plain = resample._transposed(w, flip_weight, layout)
    (plain_grad,) = torch.autograd.grad((plain * probe).sum(), [w])
    assert torch.equal(fast, plain) and fast.is_contiguous(memory_format=layout)
    assert torch.equal(fast_grad, plain_grad) and fast_grad.is_contiguous()


@pytest.mark.parametrize("sg3", [False, True])
def test_frozen_weight_modulated_conv_backward_needs_no_weight_gradient(sg3):
    """Projection/InsetGAN learn only latents: with a frozen weight the fast backward is the input-gradient
    convolution alone (about the forward's FLOPs), not also a weight-gradient one, and its gradients match the ref."""
    from torch.utils.flop_counter import FlopCounterMode
    x, s, w = rnd(1, 8, 32, 32, grad=True), rnd(1, 8, grad=True), rnd(8, 8, 3, 3)  # high resolution, w frozen

    def run(impl):
        if sg3:
            return lambda xx, ss: modulated_conv2d_sg3(xx, w, ss, True, 1, torch.tensor(0.7), impl=impl)
        return lambda xx, ss: modulated_conv2d(xx, w, ss, padding=1, impl=impl)
    ref, fast = _grads(run("ref"), [x, s]), _grads(run("fast"), [x, s])
    _close(ref[0], fast[0])
    for ga, gb in zip(ref[1], fast[1]):
        _close(ga, gb)
    with FlopCounterMode(display=False) as fwd:
        run("fast")(x.detach(), s.detach())
    with FlopCounterMode(display=False) as both:
        _grads(run("fast"), [x, s])
    assert both.get_total_flops() <= 2.1 * fwd.get_total_flops(), (both.get_total_flops(), fwd.get_total_flops())


@pytest.mark.parametrize("k,demod", [(3, True), (1, True), (1, False)])
def test_sg3_modulated_conv_fast_matches_ref(k, demod):
    x, w, s = rnd(2, 6, 8, 7, grad=True), rnd(5, 6, k, k, grad=True), rnd(2, 6, grad=True)
    gain = torch.tensor(0.7)
    ref = _grads(lambda a, b, c: modulated_conv2d_sg3(a, b, c, demod, k - 1, gain, impl="ref"), [x, w, s])
    fast = _grads(lambda a, b, c: modulated_conv2d_sg3(a, b, c, demod, k - 1, gain, impl="fast"), [x, w, s])
    _close(ref[0], fast[0])
    for ga, gb in zip(ref[1], fast[1]):
        _close(ga, gb)


@pytest.mark.parametrize("shape", [(2, 6, 24, 20), (2, 40, 3, 2)], ids=["per-sample", "shared-weight"])
@pytest.mark.parametrize("k", [1, 3])
def test_sg3_modulated_conv_channel_padding(shape, k):
    """Inference layout: input with trailing zero channels (their weights are zero), output zero-padded to a
    multiple of 16; the real channels equal the reference on both fast paths."""
    n, i, h, w_ = shape
    o = 37 if i == 40 else 5
    x, w, s, b = rnd(n, i, h, w_), rnd(o, i, k, k), rnd(n, i), rnd(o)
    gain = torch.tensor(0.7)
    with torch.no_grad():
        ref = modulated_conv2d_sg3(x, w, s, True, k - 1, gain, impl="ref", bias=b)
        padded_in = torch.cat([x, torch.zeros(n, 11, h, w_)], 1)
        got = modulated_conv2d_sg3(padded_in, w, s, True, k - 1, gain, impl="fast", bias=b, channel_multiple=16)
    assert got.shape == (n, 48 if o == 37 else 16, *ref.shape[2:])
    _close(ref, got[:, :o])
    assert torch.count_nonzero(got[:, o:]) == 0
    with pytest.raises(AssertionError, match="fast-path layout"):
        modulated_conv2d_sg3(padded_in, w, s, True, k - 1, gain, impl="ref", channel_multiple=16)


def _scipy_lowpass(numtaps, cutoff, width, fs, radial):
    """NVIDIA's stylegan3 `design_lowpass_filter`, as written there (with scipy)."""
    import numpy as np
    signal = pytest.importorskip("scipy.signal")
    special = pytest.importorskip("scipy.special")
    if not radial:
        return torch.as_tensor(signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs), dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    f = special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = signal.kaiser_beta(signal.kaiser_atten(numtaps, width / (fs / 2)))
    w = np.kaiser(numtaps, beta)
    f *= np.outer(w, w)
    f /= np.sum(f)
    return torch.as_tensor(f, dtype=torch.float32)


@pytest.mark.parametrize("kwargs", [
    {"img_resolution": 64, "square": False, "channel_base": 512, "channel_max": 64, "conv_kernel": 1,
     "use_radial_filters": True},
    {"img_resolution": 64, "square": True, "channel_base": 512, "channel_max": 64},
    {"img_resolution": 1024, "square": False, "channel_base": 256, "channel_max": 16, "conv_kernel": 1,
     "use_radial_filters": True}], ids=["sg3-r-rect", "sg3-t-square", "sg3-r-1024"])
def test_sg3_lowpass_filters_match_nvidias_scipy_design(kwargs):
    """Every up/down filter a StyleGAN3 generator builds (no scipy in the pack) equals NVIDIA's scipy design to
    float32 rounding (numpy's and scipy's Bessel functions differ in the last bit)."""
    from humangen.models import build_generator
    G = build_generator({"z_dim": 8, "c_dim": 0, "w_dim": 8, "img_channels": 3, "mapping_kwargs": {"num_layers": 1},
                         **kwargs})
    layers = [m for m in G.modules() if hasattr(m, "down_radial")]
    checked = 0
    for m in layers:
        for ours, taps, cutoff, width, radial in (
                (m.up_filter, m.up_taps, m.in_cutoff, m.in_half_width * 2, False),
                (m.down_filter, m.down_taps, m.out_cutoff, m.out_half_width * 2, m.down_radial)):
            if taps == 1:
                assert ours is None
                continue
            ref = _scipy_lowpass(taps, cutoff, width, m.tmp_sampling_rate, radial)
            assert ours.shape == ref.shape and ours.dtype == torch.float32
            assert (ours - ref).abs().max().item() <= 2 * torch.finfo(torch.float32).eps * ref.abs().max().item()
            checked += 1
    assert checked >= len(layers)  # every non-ToRGB layer has at least one filter
    assert any(m.down_radial for m in layers) == bool(kwargs.get("use_radial_filters"))


def test_sg3_synthesis_pads_channels_between_layers_only_when_unobserved(monkeypatch):
    """Fast inference passes channel counts rounded up to 16 between layers (oneDNN's depthwise filters run up to
    2x faster per channel on them); the image is the unpadded one, and hooked layers keep their own shapes."""
    from sg_helpers import TINY_SG3, tiny_generator
    from humangen.models import stylegan3
    G = tiny_generator(dict(TINY_SG3, img_resolution=32, square=False, conv_kernel=1, use_radial_filters=True))
    ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3)), None)
    seen = []
    real = stylegan3.filtered_lrelu
    monkeypatch.setattr(stylegan3, "filtered_lrelu", lambda x, **kw: seen.append(x.shape[1]) or real(x, **kw))
    layers = [getattr(G.synthesis, n) for n in G.synthesis.layer_names]
    with torch.no_grad():
        padded = G.synthesis(ws, impl="fast")
        assert seen == [-(-m.out_channels // 16) * 16 if not m.is_torgb else m.out_channels for m in layers]
        assert any(m.out_channels % 16 for m in layers[:-1])  # the tiny model has channel counts to pad
        monkeypatch.setattr(stylegan3, "CHANNEL_MULTIPLE", 1)
        plain = G.synthesis(ws, impl="fast")
        monkeypatch.setattr(stylegan3, "CHANNEL_MULTIPLE", 16)
        seen.clear()
        handle = layers[0].register_forward_hook(lambda *a: None)
        try:
            hooked = G.synthesis(ws, impl="fast")
        finally:
            handle.remove()
        assert seen == [m.out_channels for m in layers]
    _close(padded, plain)
    assert torch.equal(hooked, plain)


@pytest.mark.parametrize("k,up,down", [(3, 1, 2), (1, 1, 2), (1, 2, 1), (3, 2, 1), (3, 1, 1)])
def test_conv2d_resample_paths(k, up, down):
    x, w = rnd(2, 4, 12, 10), rnd(5, 4, k, k)
    f = setup_filter([1, 3, 3, 1])
    _close(conv2d_resample(x, w, f, up, down, padding=k // 2, impl="ref"),
           conv2d_resample(x, w, f, up, down, padding=k // 2, impl="fast"))


def test_impl_switch(monkeypatch):
    monkeypatch.setenv("HUMANGEN_OPS_IMPL", "ref")
    assert ops.resolve_impl("auto") == "ref" and ops.resolve_impl("fast") == "fast"
    monkeypatch.setenv("HUMANGEN_OPS_IMPL", "fast")
    assert ops.resolve_impl(None) == "fast"
    with pytest.raises(ValueError, match="impl must be one of"):
        ops.resolve_impl("cuda-magic")
    with pytest.raises(ValueError, match="unknown activation"):
        bias_act(rnd(2, 2), act="gelu9")



def test_needs_grad_decides_the_in_place_paths():
    """The one test every fast path uses to choose in-place work: grad mode on and some tensor requiring grad."""
    plain, learned = rnd(2, 2), rnd(2, 2).requires_grad_()
    assert ops.needs_grad(plain, None, learned) and not ops.needs_grad(plain, None) and not ops.needs_grad()
    with torch.no_grad():
        assert not ops.needs_grad(learned)
    # a fast op under no_grad writes in place (its output is the reused buffer), under grad it builds a graph
    x = rnd(1, 4, 8, 8).requires_grad_()
    y = bias_act(x, act="lrelu", impl="fast")
    assert y.grad_fn is not None
    with torch.no_grad():
        assert bias_act(x, act="lrelu", impl="fast").grad_fn is None

def _fixture_generator(cfg):
    from safetensors.torch import load_file

    from humangen.models import build_generator
    d = FIXTURES / "stylegan"
    meta = json.loads((d / f"{cfg}.json").read_text())
    return build_generator(meta["init_kwargs"], load_file(str(d / f"{cfg}.state_dict.safetensors"))), \
        load_file(str(d / f"{cfg}.io.safetensors"))


def test_synthesis_is_deterministic_and_batch_independent_for_sg2():
    G, io = _fixture_generator("b_human_sg2_rect_64x32")
    with torch.no_grad():
        a = G.synthesis(io["ws_psi1"], impl="fast")
        b = G.synthesis(io["ws_psi1"], impl="fast")
        one = torch.cat([G.synthesis(io["ws_psi1"][i:i + 1], impl="fast") for i in range(4)])
    assert torch.equal(a, b)
    _close(a, one, 1e-5)


def test_style_offsets_and_styles_override():
    G, io = _fixture_generator("a_sg2_paper256_small_64")
    ws = io["ws_psi1"][:1]
    with torch.no_grad():
        styles = G.synthesis.compute_styles(ws)
        assert list(styles)[:3] == ["b4.conv1", "b4.torgb", "b8.conv0"]
        base = G.synthesis(ws)
        same = G.synthesis(ws, styles=styles)
        zero = G.synthesis(ws, style_offsets={k: torch.zeros_like(v) for k, v in styles.items()})
        moved = G.synthesis(ws, style_offsets={"b8.conv0": torch.ones_like(styles["b8.conv0"])})
    _close(base, same, 1e-6)
    _close(base, zero, 1e-6)
    assert (moved - base).abs().max() > 1e-3
    assert G.synthesis.style_layer_names() == [n for n in G.synthesis.ws_index() if not n.endswith("torgb")]


def test_sg3_explicit_transform_and_styles():
    G, io = _fixture_generator("c_sg3_t_64")
    ws = io["ws_psi1"][:1]
    with torch.no_grad():
        same_t = G.synthesis(ws, transform=G.synthesis.input.transform.clone())  # the (randomised) buffer
        base = G.synthesis(ws)
        ident = G.synthesis(ws, transform=torch.eye(3))
        shifted = G.synthesis(ws, transform=torch.tensor([[1.0, 0, 0.3], [0, 1, 0], [0, 0, 1]]))
        styles = G.synthesis.compute_styles(ws)
        same = G.synthesis(ws, styles=styles)
    _close(same_t, base, 1e-6)
    _close(same, base, 1e-6)
    assert (shifted - ident).abs().max() > 1e-2 and (ident - base).abs().max() > 1e-3
    assert len(styles) == 15 and list(styles)[-1].endswith("_3")


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("cfg", ["a_sg2_paper256_small_64", "c_human_sg3_r_rect_64x32"])
def test_cuda_fast_path_matches_fixtures(cfg):
    G, io = _fixture_generator(cfg)
    G = G.cuda()
    with torch.no_grad():
        for impl in ("fast", "ref"):
            img = G.synthesis(io["ws_psi1"].cuda(), impl=impl).cpu()
            torch.testing.assert_close(img, io["img_const_psi1"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("cfg", ["b_human_sg2_rect_64x32", "c_human_sg3_r_rect_64x32"])
def test_reduced_precision_mode_is_close_to_fp32(cfg):
    G, io = _fixture_generator(cfg)
    ws = io["ws_psi1"][:2]
    with torch.no_grad():
        ref = G.synthesis(ws, impl="fast")
        low = G.synthesis(ws, impl="fast", dtype="bf16")
    assert low.dtype == torch.float32 and low.shape == ref.shape
    a, b = ((ref + 1) / 2).clamp(0, 1), ((low + 1) / 2).clamp(0, 1)
    psnr = 10 * torch.log10(1 / ((a - b) ** 2).mean()).item()
    assert psnr > 30, psnr


def _op_cases():
    """One call per op and path kind, as fn(impl, *inputs) with its float32 inputs (grad where the op learns)."""
    radial = design_lowpass_filter(12, 3, 4, 32, radial=True)
    fu = design_lowpass_filter(12, 3, 4, 32)
    sg2f = setup_filter([1, 3, 3, 1])
    x, w, s, b = rnd(2, 6, 22, 18, grad=True), rnd(5, 6, 3, 3, grad=True), rnd(2, 6, grad=True), rnd(5, grad=True)
    return {
        "upfirdn2d": (lambda impl, t: upfirdn2d(t, FILTERS["random3x5"], 2, 2, [1, 0, 2, 3], gain=2.0, impl=impl),
                      [x]),
        "bias_act": (lambda impl, t, bb: bias_act(t, bb, act="lrelu", clamp=0.8, impl=impl), [x, rnd(6, grad=True)]),
        "filtered_lrelu": (lambda impl, t, bb: filtered_lrelu(t, fu, radial, bb, 2, 2, [11, 10, 11, 10], 2 ** 0.5,
                                                              0.2, clamp=1.5, impl=impl), [x, rnd(6, grad=True)]),
        "conv2d_resample": (lambda impl, t, ww: conv2d_resample(t, ww, sg2f, 2, 1, padding=1, impl=impl), [x, w]),
        "modulated_conv2d_up": (lambda impl, t, ww, ss: modulated_conv2d(t, ww, ss, up=2, padding=1,
                                                                        resample_filter=sg2f, flip_weight=False,
                                                                        impl=impl), [x, w, s]),
        "modulated_conv2d_bias_act": (lambda impl, t, ww, ss, bb: modulated_conv2d_bias_act(
            t, ww, ss, bb, padding=1, clamp=256, impl=impl), [x, w, s, b]),
        "modulated_conv2d_sg3": (lambda impl, t, ww, ss: modulated_conv2d_sg3(t, ww, ss, True, 1, torch.tensor(0.7),
                                                                             impl=impl), [x, w, s]),
    }


def _compare_ops_on(device: str, tol: float = 1e-4):
    """Every op's fast path on `device` against its reference path on the CPU: values and gradients (fp32)."""
    for name, (fn, inputs) in _op_cases().items():
        ref = _grads(lambda *t: fn("ref", *t), inputs)
        moved = [t.detach().to(device).requires_grad_(t.requires_grad) for t in inputs]
        out = fn("fast", *moved)
        probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(device)
        grads = torch.autograd.grad((out * probe).sum(), [t for t in moved if t.requires_grad])
        assert out.device.type == torch.device(device).type, name
        _close(ref[0], out.detach().cpu(), tol)
        for ga, gb in zip(ref[1], grads):
            _close(ga, gb.cpu(), tol)


def test_every_op_fast_path_matches_ref_across_devices_on_cpu():
    """The cross-device comparison itself, run where CI can: CPU fast against CPU reference."""
    _compare_ops_on("cpu")


@pytest.mark.gpu
@requires_cuda
def test_every_op_on_cuda_matches_the_cpu_reference():
    _compare_ops_on("cuda")
