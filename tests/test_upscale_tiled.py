"""The feathered tiler: geometry, partition of unity, tiled-vs-untiled agreement on tiny random Real-ESRGAN nets,
OOM back-off with a fake OOM, output scale, masks/alpha, precision, progress and interrupt through the node."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hg_upscale as H
from hgtest import requires_cuda
from humangen.models.upscale import (TilePlan, axis_weights, load_descriptor, pick_dtype, tile_spans, tiled_apply,
                                     upscale, with_tile_backoff)
from humangen.nodes.upscale import HumanGenTiledUpscale
from humangen.utils.errors import HumanGenInterrupted, LimitExceededError, NodeInputError

# Tolerances for tiled vs untiled on the tiny random RRDBNets (receptive field ~17 px at the network's own
# resolution). Linear ramps over the middle half of each overlap; the quarter next to a tile's own edge gets weight 0.
INTERIOR_ATOL = 2e-3   # >= 8 input px from the image border (spandrel pads each tile's bottom/right to multiple_of)
EVERYWHERE_ATOL = 1e-2
MEAN_ATOL = 1e-4


def _image(b=1, h=40, w=48, seed=0):
    x = torch.rand((b, 3, h, w), generator=torch.Generator().manual_seed(seed))
    return F.avg_pool2d(x, 3, 1, 1)  # a little spatial correlation, like a photo


@pytest.fixture(scope="module")
def x4():
    return load_descriptor(H.realesrgan_checkpoint(H.rrdbnet_state_dict(seed=1)))


@pytest.fixture(scope="module")
def compact():
    """A cheap x4 model for tests of the mechanics (batching, OOM, progress) rather than of agreement."""
    return load_descriptor(H.compact_state_dict(seed=6))


@pytest.fixture(scope="module")
def x2():
    return load_descriptor(H.realesrgan_checkpoint(H.rrdbnet_state_dict(in_unshuffle=2, seed=2)))


# ---- geometry ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,tile,overlap,align", [(100, 32, 8, 1), (257, 64, 16, 1), (90, 48, 24, 4),
                                                     (33, 32, 31, 1), (64, 64, 8, 1), (50, 0, 8, 1)])
def test_tiles_cover_the_axis_and_weights_sum_to_one(size, tile, overlap, align):
    spans = tile_spans(size, tile, overlap, align)
    assert spans[0][0] == 0 and sum(spans[-1]) == size
    assert all(s % align == 0 for s, _ in spans)
    for (s0, l0), (s1, _) in zip(spans, spans[1:]):
        assert s1 > s0 and s0 + l0 - s1 >= min(overlap, (tile // align) * align - align)  # overlap honoured
    for scale in (1, 4):
        acc = torch.zeros(size * scale)
        for i, (s, length) in enumerate(spans):
            acc[s * scale:(s + length) * scale] += axis_weights(spans, scale, i)
        torch.testing.assert_close(acc, torch.ones_like(acc), atol=1e-6, rtol=0)


def test_weights_ramp_inside_the_overlap_only():
    spans = tile_spans(100, 40, 16)
    w = axis_weights(spans, 1, 1)  # a middle tile
    assert w[0] == 0 and w[-1] == 0  # the quarter next to its own edges is left to the neighbour
    ov_prev = spans[0][0] + spans[0][1] - spans[1][0]
    assert torch.all(w[ov_prev:spans[1][1] - (spans[1][0] + spans[1][1] - spans[2][0])] == 1)
    ramp = w[:ov_prev]
    assert torch.all(ramp[1:] >= ramp[:-1]) and 0 < ramp[ov_prev // 2] < 1


def test_pointwise_model_tiled_equals_untiled_exactly():
    """A model without spatial context must give identical results: checks positions and weights."""
    def fn(t):
        return torch.sigmoid(3 * F.interpolate(t, scale_factor=3, mode="nearest") - 1)
    x = _image(2, 41, 57)
    full = tiled_apply(fn, x, scale=3, tile=0, overlap=0)
    tiled = tiled_apply(fn, x, scale=3, tile=16, overlap=6)
    torch.testing.assert_close(tiled, full, atol=1e-6, rtol=0)


# ---- agreement on real architectures --------------------------------------------------------------------------
def _agreement(desc, x, tile, overlap):
    full = upscale(desc, x, tile=0).image
    tiled = upscale(desc, x, tile=tile, overlap=overlap).image
    b = 8 * desc.scale
    diff = (full - tiled).abs()
    return diff[..., b:-b, b:-b].max().item(), diff.max().item(), diff.mean().item()


@pytest.mark.parametrize("name,tile,overlap", [("x4", 32, 20), ("x2", 36, 28)])
def test_tiled_matches_untiled(request, name, tile, overlap):
    desc = request.getfixturevalue(name)
    interior, everywhere, mean = _agreement(desc, _image(), tile, overlap)
    assert interior <= INTERIOR_ATOL, interior
    assert everywhere <= EVERYWHERE_ATOL, everywhere
    assert mean <= MEAN_ATOL, mean


def test_tiled_matches_untiled_compact():
    desc = load_descriptor(H.compact_state_dict(seed=4))
    interior, everywhere, mean = _agreement(desc, _image(), 40, 20)
    # 4 convs = 4 px of context; the 5 px margin of each overlap left to the neighbour hides every edge effect
    assert everywhere <= 1e-5


def test_seams_without_feathering_would_be_visible(compact):
    """Sanity check of the test itself: with no overlap the same tiles disagree clearly with the untiled pass."""
    _, everywhere, _ = _agreement(compact, _image(), 24, 0)
    assert everywhere > 10 * INTERIOR_ATOL


def test_batch_items_are_independent(compact):
    x = _image(2, 24, 32)
    both = upscale(compact, x, tile=16, overlap=4).image
    one = upscale(compact, x[1:], tile=16, overlap=4).image
    torch.testing.assert_close(both[1:], one, atol=1e-6, rtol=0)


# ---- OOM back-off -----------------------------------------------------------------------------------------------
class OOMDescriptor:
    """Wraps a spandrel descriptor and raises a CUDA-style OOM for tiles larger than `limit` pixels per side."""

    def __init__(self, desc, limit):
        self.inner, self.limit, self.calls = desc, limit, []
        for name in ("model", "scale", "input_channels", "output_channels", "size_requirements", "tiling",
                     "supports_half", "supports_bfloat16", "architecture", "purpose", "tags"):
            setattr(self, name, getattr(desc, name))

    device = property(lambda self: self.inner.device)
    dtype = property(lambda self: self.inner.dtype)

    def to(self, *args, **kwargs):
        self.inner.to(*args, **kwargs)
        return self

    def __call__(self, x):
        self.calls.append(tuple(x.shape[-2:]))
        if max(x.shape[-2:]) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.inner(x)


def test_oom_halves_the_tile_until_it_fits(compact):
    fake = OOMDescriptor(compact, limit=24)
    freed = []
    x = _image(1, 40, 45)
    res = upscale(fake, x, tile=96, overlap=8, min_tile=16, free_memory=lambda: freed.append(1))
    assert res.tile == 24 and len(freed) == 2  # 96 (whole image) -> 48 (still whole) -> 24
    assert max(max(c) for c in fake.calls[-4:]) <= 24
    ref = upscale(compact, x, tile=24, overlap=8).image
    torch.testing.assert_close(res.image, ref, atol=1e-6, rtol=0)


def test_oom_untiled_starts_from_the_image_size_and_stops_at_the_floor(compact):
    fake = OOMDescriptor(compact, limit=10)
    with pytest.raises(torch.OutOfMemoryError):
        upscale(fake, _image(1, 40, 45), tile=0, overlap=8, min_tile=16)
    sizes = sorted({max(c) for c in fake.calls}, reverse=True)
    assert sizes[0] == 45 and sizes[-1] <= 22  # 45 -> 22 -> gives up (11 < floor 16)


def test_non_oom_errors_are_not_retried():
    calls = []

    def run(tile):
        calls.append(tile)
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        with_tile_backoff(run, 256, 256)
    assert calls == [256]


# ---- output scale, masks, alpha ---------------------------------------------------------------------------------
def test_output_scale_resizes_after_the_network(compact):
    x = _image(1, 20, 30)
    net = upscale(compact, x, tile=0).image
    half = upscale(compact, x, tile=0, out_scale=2.0)
    assert half.image.shape == (1, 3, 40, 60) and half.net_scale == 4
    torch.testing.assert_close(half.image, F.avg_pool2d(net, 2), atol=1e-6, rtol=0)  # area = 2x2 mean
    up = upscale(compact, x, tile=0, out_scale=5.5, resample="bicubic").image
    assert up.shape == (1, 3, 110, 165) and 0 <= up.min() and up.max() <= 1


def test_mask_and_alpha_follow_the_image_geometry(compact):
    x = _image(2, 24, 32)
    mask = torch.zeros((2, 24, 32))
    mask[:, 6:18, 8:16] = 1.0
    rgba = torch.cat([x, mask[:, None]], 1)
    res = upscale(compact, rgba, tile=16, overlap=4, mask=1 - mask, out_scale=3.0)
    assert res.image.shape == (2, 4, 72, 96) and res.mask.shape == (2, 72, 96)
    alpha = res.image[:, 3]
    torch.testing.assert_close(alpha + res.mask, torch.ones_like(alpha), atol=1e-5, rtol=0)
    # the square keeps its place: centre of mass scales with the image
    ys, xs = torch.nonzero(alpha[0] > 0.5, as_tuple=True)
    assert abs(ys.float().mean().item() - 12 * 3 + 0.5) < 1.0 and abs(xs.float().mean().item() - 12 * 3 + 0.5) < 1.0
    torch.testing.assert_close(res.image[:, :3], upscale(compact, x, tile=16, overlap=4, out_scale=3.0).image)


def test_mask_through_the_model(compact):
    x = _image(1, 24, 32)
    mask = (torch.rand((1, 24, 32), generator=torch.Generator().manual_seed(5)) > 0.5).float()
    res = upscale(compact, x, tile=0, mask=mask, mask_mode="model")
    grey = mask[:, None].expand(1, 3, 24, 32)
    torch.testing.assert_close(res.mask, upscale(compact, grey, tile=0).image.mean(1))


# ---- precision --------------------------------------------------------------------------------------------------
def test_pick_dtype_by_device_and_model_support(x4, monkeypatch):
    assert pick_dtype(x4, "cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype(x4, "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype(x4, "cuda") == torch.float16

    class NoHalf:
        supports_half, supports_bfloat16 = False, True
    assert pick_dtype(NoHalf(), "cuda") == torch.float32
    with pytest.raises(ValueError, match="does not support fp16"):
        pick_dtype(NoHalf(), "cpu", "fp16")


def test_bf16_runs_close_to_fp32_and_restores_the_model(x4):
    x = _image(1, 16, 16)
    ref = upscale(x4, x, tile=0).image
    low = upscale(x4, x, tile=0, precision="bf16").image
    assert low.dtype == torch.float32 and (low - ref).abs().mean() < 0.02
    assert x4.dtype == torch.float32


@pytest.mark.gpu
@requires_cuda
def test_gpu_fp16_tiled_matches_cpu(x4):
    x = _image(1, 64, 80)
    ref = upscale(x4, x, tile=0).image
    out = upscale(x4, x, tile=32, overlap=16, device="cuda", precision="fp16").image
    assert out.device.type == "cpu" and (out - ref).abs().max() < 0.03
    assert x4.device.type == "cpu"


# ---- the node: progress per tile, interrupt, input errors -----------------------------------------------------
def test_node_reports_progress_per_tile_and_stops_on_interrupt(compact, standalone_host):
    image = _image(2, 32, 32).movedim(1, -1)
    seen = []
    standalone_host.progress_listener = lambda v, t, p: seen.append((v, t))
    out, mask = HumanGenTiledUpscale().upscale(image, compact, tile_size=16, overlap=4)
    assert out.shape == (2, 128, 128, 3) and mask.shape == (2, 128, 128) and float(mask.max()) == 0.0
    plan = TilePlan.make(32, 32, 16, 4)
    assert seen[-1] == (2 * len(plan), 2 * len(plan)) and len(seen) == 2 * len(plan)

    def stop_after_first(v, t, p):
        standalone_host.interrupt_event.set()
    standalone_host.progress_listener = stop_after_first
    with pytest.raises(HumanGenInterrupted):
        HumanGenTiledUpscale().upscale(image, compact, tile_size=16, overlap=4, precision="bf16")
    assert compact.dtype == torch.float32  # restored after the interrupt


def test_node_resizes_a_placeholder_mask(compact):
    """Core LoadImage returns a 64x64 mask for images without alpha; it must not break the node."""
    image = _image(1, 20, 24).movedim(1, -1)
    out, mask = HumanGenTiledUpscale().upscale(image, compact, tile_size=0, mask=torch.ones(64, 64))
    assert mask.shape == (1, 80, 96) and torch.allclose(mask, torch.ones_like(mask), atol=1e-6)


def test_node_input_errors(x4):
    image = _image(1, 20, 20).movedim(1, -1)
    with pytest.raises(NodeInputError, match="input 'overlap'"):
        HumanGenTiledUpscale().upscale(image, x4, tile_size=16, overlap=16)
    with pytest.raises(NodeInputError, match="input 'mask'"):
        HumanGenTiledUpscale().upscale(image, x4, mask=torch.zeros(3, 20, 20))
    with pytest.raises(NodeInputError, match="input 'image'"):
        HumanGenTiledUpscale().upscale(torch.zeros(20, 20), x4)
    for name, kwargs in (("precision", {"precision": "fp8"}), ("resample", {"resample": "lanczos"})):
        with pytest.raises(NodeInputError, match=f"input '{name}': '.*' is not one of auto, "):
            HumanGenTiledUpscale().upscale(image, x4, **kwargs)
    for empty in (torch.rand(1, 0, 0), torch.rand(0, 20, 20), torch.rand(20)):
        with pytest.raises(NodeInputError, match="input 'mask': expected a MASK .* with pixels"):
            HumanGenTiledUpscale().upscale(image, x4, mask=empty)


@pytest.mark.parametrize("shape,output_scale,input_name,size", [
    ((1, 600, 1, 3), 16.0, "output_scale", "upscaled image height 9600"),
    ((1, 2100, 8, 3), 0.0, "image", "x4 network's output height 8400"),
    ((1, 2100, 8, 3), 1.0, "image", "x4 network's output height 8400")])
def test_node_refuses_outputs_over_the_image_limit_before_any_work(x4, monkeypatch, shape, output_scale,
                                                                   input_name, size):
    """The final size and the network's own output (assembled whole before any resize) stay within the pack's
    image limit (8192 per side): refused before a tile runs."""
    from humangen.models.upscale import upscaler
    monkeypatch.setattr(upscaler, "tiled_apply", lambda *a, **k: pytest.fail("a tile ran"))
    with pytest.raises(LimitExceededError, match=f"input '{input_name}': the {size} is larger than the limit of 8192"):
        HumanGenTiledUpscale().upscale(torch.rand(*shape), x4, output_scale=output_scale)


def test_node_bounds_the_whole_output_batch_before_any_tile(compact, monkeypatch, standalone_host):
    """Each upscaled image may be within the size limit while the batch is not (8 images of 2048² at x4 are 6.4 GB
    as float): refused naming 'image', before any tile runs."""
    from humangen.utils import limits
    monkeypatch.setattr(limits, "MAX_BATCH_PIXELS", 2 * 128 * 128)
    seen = []
    standalone_host.progress_listener = lambda v, t, p: seen.append(v)
    assert HumanGenTiledUpscale().upscale(_image(2, 32, 32).movedim(1, -1), compact, tile_size=0)[0].shape[0] == 2
    seen.clear()
    with pytest.raises(LimitExceededError, match=r"HumanGenTiledUpscale: input 'image': 3 upscaled images of "
                                                 r"128x128 make 49,152 pixels, more than the limit of 32,768"):
        HumanGenTiledUpscale().upscale(_image(3, 32, 32).movedim(1, -1), compact, tile_size=0)
    assert seen == []
    with pytest.raises(LimitExceededError, match=r"3 upscaled images of 64x64 make 12,288 pixels"):
        monkeypatch.setattr(limits, "MAX_BATCH_PIXELS", 10_000)
        HumanGenTiledUpscale().upscale(_image(3, 32, 32).movedim(1, -1), compact, tile_size=0, output_scale=2.0)


@pytest.mark.parametrize("channels", [(1, 3), (3, 1), (3, 4)])
def test_node_refuses_models_that_are_not_rgb_to_rgb(channels, standalone_host):
    """An IMAGE is RGB: a model taking or giving another number of channels is refused before any tile (a 1- or
    4-channel output went out as an IMAGE of that many channels)."""
    desc = load_descriptor(H.compact_state_dict(seed=6))
    desc.input_channels, desc.output_channels = channels
    with pytest.raises(NodeInputError, match=rf"HumanGenTiledUpscale: input 'upscale_model': .* maps {channels[0]} "
                                             rf"channels to {channels[1]}; only RGB models"):
        HumanGenTiledUpscale().upscale(_image(1, 16, 16).movedim(1, -1), desc, tile_size=0)
