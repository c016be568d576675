"""The diffusion samplers add no work around the UNet: prompts, poses and parts are encoded once per generation (not
per step), classifier-free guidance runs as one batched UNet call per step, and every attention layer goes through
PyTorch's scaled_dot_product_attention (the fused kernel on CPU and GPU). Speed itself is measured in
`bench/run_all.py` (the `humansd` and `parts2whole` rows: sampler vs a bare diffusers loop)."""
from __future__ import annotations

import contextlib

import humansd_tiny as T
import p2w_tiny
import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@contextlib.contextmanager
def counting_calls(module: torch.nn.Module, calls: list):
    """Record the batch size of every forward call of `module`."""
    def hook(_mod, args, kwargs):
        first = args[0] if args else next(iter(kwargs.values()))
        calls.append(first.shape[0] if hasattr(first, "shape") else 1)
    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


@contextlib.contextmanager
def counting_sdpa(counter: list, inside: torch.nn.Module):
    """Count scaled_dot_product_attention calls made while `inside` runs its forward."""
    original = F.scaled_dot_product_attention
    active = []

    def counted(*args, **kwargs):
        if active:
            counter.append(1)
        return original(*args, **kwargs)
    from diffusers.models.attention_processor import Attention
    eager = Attention.get_attention_scores  # the non-fused path (baddbmm + softmax): must never run

    def refused(*_a, **_k):
        raise AssertionError("an attention layer took the eager (non-SDPA) path")
    Attention.get_attention_scores = refused
    pre = inside.register_forward_pre_hook(lambda *a: active.append(1))
    post = inside.register_forward_hook(lambda *a: active.clear())
    F.scaled_dot_product_attention = counted
    try:
        yield counter
    finally:
        F.scaled_dot_product_attention = original
        Attention.get_attention_scores = eager
        pre.remove()
        post.remove()


def attention_layers(unet) -> int:
    from diffusers.models.attention_processor import Attention
    return sum(isinstance(m, Attention) for m in unet.modules())


@pytest.fixture(scope="module")
def humansd_model(tmp_path_factory):
    from humangen.models.humansd import loader as L
    unet, vae, tower = T.make_components(seed=0)
    return L.load_humansd(T.save_ckpt(tmp_path_factory.mktemp("hs") / "humansd-v1.ckpt",
                                      T.ldm_state_dict(unet, vae, tower)))


@pytest.mark.parametrize("steps", [3, 5])
def test_humansd_encodes_once_and_batches_cfg(humansd_model, steps):
    from humangen.models.humansd import pipeline as P
    m = humansd_model
    text, unet, sdpa = [], [], []
    pose = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with counting_calls(m.text_encoder, text), counting_calls(m.unet, unet), counting_sdpa(sdpa, m.unet):
        P.generate(m, pose, "a person", "bad", steps=steps, guidance=7.5, precision="fp32")
    assert len(text) == 2  # prompt and negative prompt, once each, whatever the step count
    assert unet == [2] * (steps - 1)  # one call per step (DDIM skips the first), both CFG rows in one batch
    assert len(sdpa) == len(unet) * attention_layers(m.unet)  # every attention layer through SDPA, every step


def test_humansd_guidance_one_runs_one_row(humansd_model):
    from humangen.models.humansd import pipeline as P
    unet = []
    pose = torch.zeros(1, 3, 64, 64)
    with counting_calls(humansd_model.unet, unet):
        P.generate(humansd_model, pose, "a person", "", steps=3, guidance=1.0, precision="fp32")
    assert unet == [1, 1]


@pytest.fixture(scope="module")
def p2w_model(tmp_path_factory):
    from humangen.models.parts2whole.loader import load_parts2whole
    return load_parts2whole(p2w_tiny.shared(tmp_path_factory))


@pytest.mark.parametrize("steps", [2, 4])
def test_parts2whole_encodes_parts_once_and_batches_cfg(p2w_model, steps):
    from humangen.models.parts2whole import pipeline as P
    from humangen.models.parts2whole.parts import PartRef
    m = p2w_model
    g = torch.Generator().manual_seed(0)
    size = p2w_tiny.SIZE
    parts = [PartRef(torch.rand(size, size, 3, generator=g), "face"),
             PartRef(torch.rand(size, size, 3, generator=g), "upper body clothes")]
    text, image, ref, unet, sdpa = [], [], [], [], []
    with counting_calls(m.text_encoder, text), counting_calls(m.image_encoder, image), \
            counting_calls(m.reference_unet, ref), counting_calls(m.unet, unet), counting_sdpa(sdpa, m.unet):
        P.generate(m, parts, torch.rand(1, 3, size, size, generator=g), "a person", "bad", steps=steps,
                   guidance=3.5, height=size, width=size)
    assert sum(text) == 2 + 2  # two labels, the prompt and the negative prompt: one batched encode
    assert len(image) == 1 and len(ref) == 1  # part images and the reference bank: once per generation
    assert unet == [2] * steps  # CFG rows batched: one UNet call per step
    # every denoiser attention layer uses SDPA: self-attention once for the CFG rows and once over the part bank,
    # cross-attention once over text and once over part-image tokens
    assert len(sdpa) == 2 * len(unet) * attention_layers(m.unet)


def test_bench_full_parts2whole_has_the_released_dimensions():
    """The bench's full-size Parts2Whole row runs the released layout: an SD 1.5 UNet (859.5 M parameters) with the
    16 decoupled cross-attention pairs of `decoupled_attn.pth` (19.17 M, the hub file's 76.7 MB) and the SD VAE.
    Built on the meta device: shapes only, no memory, no time."""
    import importlib.util
    from pathlib import Path

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from humangen.models.parts2whole.attention import decoupled_processors
    path = Path(__file__).resolve().parents[1] / "bench" / "p2w_full.py"
    spec = importlib.util.spec_from_file_location("p2w_full", path)
    p2w_full = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(p2w_full)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**p2w_full.SD15_UNET)
        procs = decoupled_processors(unet)
        vae = AutoencoderKL(**p2w_full.SD_VAE)
    count = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
    assert count(unet.parameters()) == 859_520_964
    assert len(procs) == 16
    assert count(p for proc in procs.values() for p in proc.parameters()) == 2 * 768 * (5 * 320 + 5 * 640 + 6 * 1280)
    assert count(vae.parameters()) == 83_653_863
