"""The optimisation loops' fast paths: bias_act's backward from its output, weight-derived tensors reused while the
generator is frozen, and the bf16 precision of projection / PTI / InsetGAN."""
from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from humangen.models.inversion import (PRECISIONS, PTIConfig, ProjectionConfig, perceptual_scope, pivotal_tuning,
                                       project, synthesis_dtype)
from humangen.models.ops import bias_act, frozen_weights, modulated_conv2d
from humangen.models.ops._frozen import derived
from humangen.utils.errors import HumanGenError
from sg_helpers import TINY_SG2_RECT, TINY_SG3, tiny_generator


def _rnd(*shape, seed=0, grad=False):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).requires_grad_(grad)


def _grads(fn, inputs):
    out = fn(*inputs)
    probe = _rnd(*out.shape, seed=9)
    return out.detach(), torch.autograd.grad((out * probe).sum(), inputs), out.grad_fn


# ---- bias_act: backward read from the output -------------------------------------------------------------------
@pytest.mark.parametrize("act,gain,clamp,dim,bias", [
    ("lrelu", None, 0.8, 1, True), ("lrelu", 0.5, None, 1, True), ("lrelu", None, 256, 2, True),
    ("relu", None, 0.5, 1, True), ("relu", 1.0, None, 0, False), ("linear", None, 0.3, 1, True),
    ("linear", 2.0, None, 3, False), ("linear", None, None, 1, True)])
def test_bias_act_fast_backward_matches_ref(act, gain, clamp, dim, bias):
    x = _rnd(3, 4, 5, 6, grad=True)
    inputs = [x, _rnd(x.shape[dim], seed=1, grad=True)] if bias else [x]

    def run(impl):
        return lambda t, b=None: bias_act(t, b, dim=dim, act=act, gain=gain, clamp=clamp, impl=impl)
    ref_out, ref_grads, _ = _grads(run("ref"), inputs)
    fast_out, fast_grads, fast_fn = _grads(run("fast"), inputs)
    assert type(fast_fn).__name__ == "_BiasActBackward"  # the fused backward, not the reference's graph
    torch.testing.assert_close(fast_out, ref_out, rtol=0, atol=1e-6)
    for a, b in zip(fast_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_bias_act_fast_backward_falls_back_where_the_output_cannot_tell():
    """A negative slope or gain hides the input's sign in the output; tanh has no output-only backward here."""
    x, b = _rnd(2, 3, 4, 4, grad=True), _rnd(3, seed=1, grad=True)
    for kwargs in ({"act": "lrelu", "alpha": -0.1}, {"act": "lrelu", "gain": -1.0}, {"act": "tanh"}):
        ref = _grads(lambda t, bb: bias_act(t, bb, clamp=0.5, impl="ref", **kwargs), [x, b])
        fast = _grads(lambda t, bb: bias_act(t, bb, clamp=0.5, impl="fast", **kwargs), [x, b])
        assert type(fast[2]).__name__ != "_BiasActBackward", kwargs
        for a, c in zip(fast[1], ref[1]):
            torch.testing.assert_close(a, c, rtol=0, atol=1e-6)


def test_bias_act_fast_backward_in_bf16():
    x = _rnd(2, 8, 6, 6, grad=True)
    b = _rnd(8, seed=1, grad=True)
    xb, bb = x.detach().bfloat16().requires_grad_(), b.detach().bfloat16().requires_grad_()
    ref = _grads(lambda t, c: bias_act(t, c, act="lrelu", clamp=1.0, impl="ref"), [xb, bb])
    fast = _grads(lambda t, c: bias_act(t, c, act="lrelu", clamp=1.0, impl="fast"), [xb, bb])
    assert fast[0].dtype == torch.bfloat16 and fast[1][0].dtype == torch.bfloat16
    torch.testing.assert_close(fast[0], ref[0], rtol=0, atol=0)  # the same bf16 passes
    # where x + b rounds to exactly the clamp, the reference passes the gradient (clamp's backward is inclusive) and
    # the output cannot tell that value from a clamped one; bf16's coarse steps make that tie common: excluded
    untied = (fast[0].float().abs() != 1.0).float()
    torch.testing.assert_close(fast[1][0].float() * untied, ref[1][0].float() * untied, rtol=1e-2, atol=1e-2)
    assert (untied == 0).any()  # the tie does occur here, so the exclusion is needed and tested


# ---- frozen_weights --------------------------------------------------------------------------------------------
def test_derived_is_computed_once_per_frozen_parameter():
    p = torch.nn.Parameter(_rnd(4, 4), requires_grad=False)
    calls = []

    def fn(t):
        calls.append(1)
        return t * 2
    assert derived(p, "x2", fn) is not derived(p, "x2", fn)  # outside a scope: every call
    calls.clear()
    with frozen_weights():
        first = derived(p, "x2", fn)
        assert derived(p, "x2", fn) is first and len(calls) == 1
        assert derived(first, "x2", fn) is not first and len(calls) == 2  # a cached value is cacheable in turn
        with torch.no_grad():
            p.add_(1.0)  # an in-place update bumps the version: re-derived
        again = derived(p, "x2", fn)
        assert again is not first and torch.equal(again, p * 2)
        p.requires_grad_(True)  # a weight being learned: never cached
        assert derived(p, "x2", fn) is not derived(p, "x2", fn)
        p.requires_grad_(False)
        fresh = _rnd(4, 4)  # a per-call tensor (not a parameter): not kept, so nothing piles up in the scope
        n = len(calls)
        derived(fresh, "x2", fn), derived(fresh, "x2", fn)
        assert len(calls) == n + 2
        with torch.inference_mode():
            assert derived(p, "x2", fn) is not derived(p, "x2", fn)
    calls.clear()
    derived(p, "x2", fn)
    assert calls  # the scope is gone


def test_frozen_weights_keep_the_gradients_exact():
    """The same generator gradient inside the scope as outside, also after its weights change in place."""
    G = tiny_generator(TINY_SG2_RECT).eval().requires_grad_(False)
    ws = G.mapping(torch.from_numpy(np.random.RandomState(0).randn(1, G.z_dim)).float(), None).detach()

    def grad():
        w = ws.clone().requires_grad_()
        G.synthesis(w, noise_mode="const", impl="fast").square().mean().backward()
        return w.grad

    outside = grad()
    with frozen_weights():
        assert torch.equal(grad(), outside) and torch.equal(grad(), outside)
        with torch.no_grad():
            for p in G.synthesis.parameters():
                p.mul_(1.1)
        changed = grad()
    assert not torch.allclose(changed, outside)
    torch.testing.assert_close(changed, grad(), rtol=0, atol=0)


def test_frozen_weight_cast_is_reused_in_reduced_precision():
    x, s = _rnd(1, 8, 8, 8), _rnd(1, 8, seed=2, grad=True)
    w = torch.nn.Parameter(_rnd(8, 8, 3, 3, seed=3), requires_grad=False)
    with frozen_weights():
        a = modulated_conv2d(x.bfloat16(), w, s, padding=1, impl="fast")
        cast = derived(w, torch.bfloat16, lambda t: t.to(torch.bfloat16))
        b = modulated_conv2d(x.bfloat16(), w, s, padding=1, impl="fast")
        assert derived(w, torch.bfloat16, lambda t: t.to(torch.bfloat16)) is cast
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, modulated_conv2d(x.bfloat16(), w, s, padding=1, impl="fast"), rtol=0, atol=0)


def test_frozen_weights_are_kept_in_the_convolutions_layout(monkeypatch):
    """Inside the scope a frozen weight is held once in channels-last layout (oneDNN's, for channels-last inputs:
    an NCHW weight is copied into it on every call, forward and backward), also as an upsampling layer's transposed
    kernel; a learned weight is passed as it is. The outputs and gradients are those of the reference path."""
    from humangen.models.ops.modulated_conv import _operand
    cl = torch.channels_last
    x, s = _rnd(1, 8, 6, 6, grad=True), _rnd(1, 8, seed=2, grad=True)
    w = torch.nn.Parameter(_rnd(8, 8, 3, 3, seed=3), requires_grad=False)
    transposed = []

    def spy(t, tag, fn):
        value = derived(t, tag, fn)
        if tag[0] == "transposed":
            transposed.append(value)
        return value
    with frozen_weights():
        operand = _operand(w, torch.float32)
        assert operand.is_contiguous(memory_format=cl) and not w.is_contiguous(memory_format=cl)
        assert _operand(w, torch.float32) is operand and torch.equal(operand, w)
        assert _operand(w, torch.float32, up=2) is w  # transposed by conv2d_resample, from the NCHW weight
        monkeypatch.setattr(importlib.import_module("humangen.models.ops.conv2d_resample"), "derived", spy)
        for up in (1, 2):
            f = torch.tensor([1.0, 3.0, 3.0, 1.0])
            fast = _grads(lambda a, b: modulated_conv2d(a, w, b, up=up, padding=1, resample_filter=f,
                                                        flip_weight=up == 1, impl="fast"), [x, s])
            ref = _grads(lambda a, b: modulated_conv2d(a, w, b, up=up, padding=1, resample_filter=f,
                                                       flip_weight=up == 1, impl="ref"), [x, s])
            # relative to each tensor's scale: the up=2 gradients reach ~1e3, where fp32 rounding of a cancelling
            # sum is ~1e-5 absolute and differs with the CPU's convolution kernels (AVX2 vs AVX-512)
            for a, b in zip((fast[0], *fast[1]), (ref[0], *ref[1])):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * max(1.0, b.abs().max().item()))
        assert transposed and transposed[0].is_contiguous(memory_format=cl)
        learned = torch.nn.Parameter(_rnd(8, 8, 3, 3, seed=4))
        assert _operand(learned, torch.float32) is learned


# ---- precision -------------------------------------------------------------------------------------------------
def test_precision_names():
    from humangen.nodes.editing import PRECISION_INPUT
    assert tuple(PRECISION_INPUT[0]) == PRECISIONS and PRECISION_INPUT[1]["default"] == "fp32"
    assert synthesis_dtype("fp32") is None and synthesis_dtype("bf16") == "bf16"
    with pytest.raises(HumanGenError, match="precision must be one of fp32, bf16, got 'fp16'"):
        synthesis_dtype("fp16")
    with perceptual_scope("bf16", torch.device("cpu")):
        assert torch.nn.functional.conv2d(_rnd(1, 2, 4, 4), _rnd(2, 2, 1, 1)).dtype == torch.bfloat16
    with perceptual_scope("fp32", torch.device("cpu")):
        assert torch.nn.functional.conv2d(_rnd(1, 2, 4, 4), _rnd(2, 2, 1, 1)).dtype == torch.float32


@pytest.mark.parametrize("kwargs", [TINY_SG2_RECT, TINY_SG3], ids=["sg2", "sg3"])
def test_bf16_gradients_follow_fp32(kwargs):
    """bf16 is an approximation: the latent gradient points the same way as fp32's (cosine), within a few %."""
    G = tiny_generator(kwargs).eval().requires_grad_(False)
    ws = G.mapping(torch.from_numpy(np.random.RandomState(3).randn(1, G.z_dim)).float(), None).detach()
    target = _rnd(1, 3, G.img_height, G.img_width, seed=4).clamp(-1, 1)
    grads = {}
    for dtype in (None, "bf16"):
        w = ws.clone().requires_grad_()
        with frozen_weights():
            img = G.synthesis(w, noise_mode="const", dtype=dtype)
        assert img.dtype == torch.float32
        (img - target).square().mean().backward()
        grads[dtype] = w.grad.flatten()
    cos = torch.nn.functional.cosine_similarity(grads[None], grads["bf16"], dim=0).item()
    rel = ((grads[None] - grads["bf16"]).norm() / grads[None].norm()).item()
    assert cos > 0.995 and rel < 0.1, (cos, rel)


def _mse(a, b):
    return (a - b).square().mean(dim=(1, 2, 3))


def test_projection_and_pti_in_bf16_converge_like_fp32():
    G = tiny_generator(TINY_SG2_RECT).eval()
    w_true = G.mapping(torch.from_numpy(np.random.RandomState(5).randn(1, G.z_dim)).float(), None).detach()
    with torch.no_grad():
        target = G.synthesis(w_true, noise_mode="const")
    runs = {}
    for precision in PRECISIONS:
        cfg = ProjectionConfig(num_steps=60, space="w+", w_avg_samples=100, optimize_noise=False, seed=1,
                               learning_rate=0.05, precision=precision)
        runs[precision] = project(G, target, _mse, cfg)
    fp32, bf16 = runs["fp32"].distances, runs["bf16"].distances
    assert bf16[-1] < bf16[0] / 5 and bf16[-1] < 2 * fp32[-1] + 1e-4, (fp32[0], fp32[-1], bf16[0], bf16[-1])
    assert torch.equal(project(G, target, _mse, cfg).ws, runs["bf16"].ws)  # deterministic in bf16 too
    pti = {p: pivotal_tuning(G, w_true, target * 0.5, _mse, PTIConfig(max_steps=20, learning_rate=5e-3,
                                                                     lpips_threshold=0.0, precision=p))
           for p in PRECISIONS}
    assert pti["bf16"].losses[-1] < 0.5 * pti["bf16"].losses[0]
    assert math.isclose(pti["bf16"].losses[-1], pti["fp32"].losses[-1], rel_tol=0.25)


def test_adam_is_fused_and_follows_the_default_rule():
    from humangen.models.inversion import adam
    start = [_rnd(64, 8, seed=1), _rnd(8, seed=2)]
    results = []
    for make in (adam, lambda ps, lr: torch.optim.Adam(ps, lr=lr, betas=(0.9, 0.999))):
        ps = [t.clone().requires_grad_() for t in start]
        opt = make(ps, 0.01)
        for step in range(5):
            opt.zero_grad(set_to_none=True)
            sum(((p - step) ** 2).sum() for p in ps).backward()
            opt.step()
        results.append((opt, ps))
    assert results[0][0].defaults["fused"] is True
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_bf16_where_it_is_emulated_is_logged(monkeypatch, caplog):
    from humangen.models import inversion
    monkeypatch.setattr(inversion, "native_bf16", lambda device: False)
    with caplog.at_level("WARNING", logger="humangen"):
        inversion.warn_if_emulated("fp32", "cpu", "HumanGenPTI")
        assert not caplog.records
        inversion.warn_if_emulated("bf16", "cpu", "HumanGenPTI")
    assert ("HumanGenPTI: precision bf16 on cpu without bf16 units is emulated and far slower than fp32"
            in caplog.text) and "choose fp32 here" in caplog.text
    monkeypatch.undo()
    assert inversion.native_bf16("meta") is False  # neither a CPU nor a GPU: no bf16 units assumed
