"""The planned arena of the fast CPU inference path (models/ops/_workspace.py): repeated StyleGAN3 calls reuse one
arena without ever overwriting a result, a hook's copy or another thread's tensors, and re-plan when shapes change."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from humangen.models.ops import _fast
from humangen.models.ops import _workspace as workspace
from sg_helpers import TINY_SG3, tiny_generator

TINY_SG3R_RECT = dict(TINY_SG3, img_resolution=32, square=False, conv_kernel=1, use_radial_filters=True)


@pytest.fixture
def banded(monkeypatch):
    """Tiny models take the arena path: every tensor counts as large and filtered_lrelu works in row bands."""
    monkeypatch.setattr(workspace, "MIN_BYTES", 0)
    monkeypatch.setattr(_fast, "CHUNK_ELEMS", 1 << 11)


def _ws(G, seed, n=1):
    z = torch.from_numpy(np.random.RandomState(seed).randn(n, G.z_dim)).float()
    with torch.no_grad():
        return G.mapping(z, None, truncation_psi=0.7)


def _synth(G, ws, impl="fast"):
    with torch.no_grad():
        return G.synthesis(ws, noise_mode="const", impl=impl)


def test_repeated_calls_share_one_arena_and_keep_every_result(banded):
    G = tiny_generator(TINY_SG3R_RECT)
    latents = [_ws(G, s) for s in (1, 2, 3)]
    refs = [_synth(G, w, "ref") for w in latents]
    outs, copies = [], []
    for _ in range(2):
        for w in latents:
            outs.append(_synth(G, w))
            copies.append(outs[-1].clone())
    plan = workspace._plans[G.synthesis]
    assert plan.arena is not None and plan.arena.numel() == plan.arena_bytes
    placed = [s for s, o in zip(plan.sizes, plan.offsets) if o is not None]
    assert len(placed) >= 4 and plan.arena_bytes < sum(placed)  # blocks are shared between layers
    for k, (out, copy) in enumerate(zip(outs, copies)):
        assert torch.equal(out, copy), f"result {k} was overwritten by a later call"
        torch.testing.assert_close(out, refs[k % 3], atol=1e-5, rtol=0)
    assert torch.equal(outs[0], outs[3])  # the arena call gives the recording call's image bit for bit


@pytest.mark.parametrize("kind", ["forward", "pre"])
def test_forward_hooks_keep_what_they_saw(banded, kind):
    G = tiny_generator(TINY_SG3R_RECT)
    _synth(G, _ws(G, 1))
    _synth(G, _ws(G, 1))  # the plan and its arena exist
    seen = {}

    def keep(name):
        def hook(module, args, out=None):
            t = out if kind == "forward" else args[0]
            seen[name] = (t, t.clone())
        return hook
    layers = [getattr(G.synthesis, n) for n in G.synthesis.layer_names]
    handles = [m.register_forward_hook(keep(n)) if kind == "forward" else m.register_forward_pre_hook(keep(n))
               for n, m in zip(G.synthesis.layer_names, layers)]
    try:
        _synth(G, _ws(G, 2))
        seen_first = dict(seen)
        seen.clear()
        _synth(G, _ws(G, 3))
    finally:
        for h in handles:
            h.remove()
    for name, (out, copy) in seen_first.items():
        assert torch.equal(out, copy), f"{name}'s {kind}-hooked tensor, kept by the hook, was overwritten"


def test_other_shapes_replan_and_stay_exact(banded):
    G = tiny_generator(TINY_SG3R_RECT)
    one, two = _ws(G, 1), _ws(G, 2, n=2)
    _synth(G, one)
    sizes_one = list(workspace._plans[G.synthesis].sizes)
    got = _synth(G, two)
    assert workspace._plans[G.synthesis].sizes != sizes_one  # batch 2 made another plan
    torch.testing.assert_close(got, _synth(G, two, "ref"), atol=1e-5, rtol=0)
    torch.testing.assert_close(_synth(G, two), got, atol=0, rtol=0)  # and its arena call matches
    torch.testing.assert_close(_synth(G, one), _synth(G, one, "ref"), atol=1e-5, rtol=0)


class _Owner:
    pass


def _call(owner, keep_second=False, fill=0.0, grad=False):
    with torch.set_grad_enabled(grad), workspace.workspace(owner):
        a = workspace.empty([1, 4, 8, 8])
        b = workspace.empty([1, 4, 8, 8], channels_last=True)
        a.fill_(fill)
        b.fill_(fill + 1)
        workspace.recycle(a)
        if not keep_second:
            workspace.recycle(b)
    return a, b


def test_a_tensor_not_handed_back_is_never_reused(monkeypatch):
    monkeypatch.setattr(workspace, "MIN_BYTES", 0)
    owner = _Owner()
    _call(owner)  # records
    a2, b2 = _call(owner, keep_second=True, fill=10.0)  # planned: both from the arena, b2 escapes
    assert a2.untyped_storage().data_ptr() == b2.untyped_storage().data_ptr()  # views of one arena
    assert b2.is_contiguous(memory_format=torch.channels_last)
    kept = b2.clone()
    for fill in (20.0, 30.0):
        _call(owner, keep_second=True, fill=fill)
    assert torch.equal(b2, kept)


def test_a_second_thread_in_the_same_owner_gets_its_own_memory(monkeypatch):
    monkeypatch.setattr(workspace, "MIN_BYTES", 0)
    owner = _Owner()
    _call(owner)
    _call(owner)  # the arena exists
    inside, done = threading.Event(), threading.Event()
    held = {}

    def first():
        with torch.no_grad(), workspace.workspace(owner):
            held["a"] = workspace.empty([1, 4, 8, 8]).fill_(7.0)
            inside.set()
            done.wait(10)
            workspace.recycle(held["a"])

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(10)
    try:
        a, _ = _call(owner, fill=-1.0)
        assert torch.equal(held["a"], torch.full_like(held["a"], 7.0))
        assert a.untyped_storage().data_ptr() != held["a"].untyped_storage().data_ptr()
    finally:
        done.set()
        t.join()


def test_no_scope_no_arena_and_autograd_untouched(monkeypatch):
    monkeypatch.setattr(workspace, "MIN_BYTES", 0)
    x = workspace.empty([2, 3, 4, 5], channels_last=True)
    assert x.shape == (2, 3, 4, 5) and x.is_contiguous(memory_format=torch.channels_last)
    owner = _Owner()
    _call(owner, grad=True)
    assert owner not in workspace._plans  # under autograd nothing is recorded (the tensors may be saved for backward)
