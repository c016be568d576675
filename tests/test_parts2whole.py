"""Parts2Whole port: processors against diffusers' default attention, the upstream bug fixes, loader errors, sampler."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import p2w_tiny
from hgtest import requires_cuda
from humangen.utils.errors import HumanGenError

P2W = "humangen.models.parts2whole"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return p2w_tiny.shared(tmp_path_factory)


@pytest.fixture(scope="module")
def model(tiny_folder):
    from humangen.models.parts2whole.loader import load_parts2whole
    return load_parts2whole(tiny_folder)


def _parts(n=2, masked=True):
    from humangen.models.parts2whole.parts import LABELS, PartRef
    g = torch.Generator().manual_seed(7)
    parts = []
    for i in range(n):
        img = torch.rand(48 + 8 * i, 40, 3, generator=g)
        mask = None
        if masked:
            mask = torch.zeros(48 + 8 * i, 40)
            mask[4 * i:30 + 4 * i, 5:35] = 1.0
        parts.append(PartRef(img, LABELS[i % len(LABELS)], mask))
    return parts


def _unet_inputs(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    ctx = torch.randn(batch, 77 + 6, 16, generator=g)
    return x, ctx


def _bank(model, parts, names):
    from humangen.models.parts2whole.pipeline import build_part_bank, encode_texts, prepare_references
    images, masks = prepare_references(parts, 64, 64)
    lat = model.vae.encode(images).latent_dist.mean * model.vae.config.scaling_factor
    emb = encode_texts(model, [p.label for p in parts])
    return build_part_bank(model, lat, torch.cat([emb[p.label] for p in parts]), masks, names)


def _run(model, state=None, names=None):
    from humangen.models.parts2whole.attention import installed_processors, read_processors
    x, ctx = _unet_inputs(model)
    if state is None:
        return model.unet(x, 10, encoder_hidden_states=ctx).sample
    with installed_processors(model.unet, read_processors(names, state)):
        return model.unet(x, 10, encoder_hidden_states=ctx).sample


# ---- processors ----------------------------------------------------------------------------------------------
@torch.no_grad()
def test_read_processor_without_parts_equals_default_attention(model):
    from diffusers.models.attention_processor import AttnProcessor2_0

    from humangen.models.parts2whole.attention import PartBank, ReadState, installed_processors, self_attention_names
    names = self_attention_names(model.unet)
    assert len(names) == 7  # 2 down + 1 mid + 2x2 up transformer blocks (tiny UNet)
    default = {n: AttnProcessor2_0() for n in names}
    with installed_processors(model.unet, default):
        expected = _run(model)
    got = _run(model, ReadState(PartBank()), names)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@torch.no_grad()
def test_unconditional_rows_use_plain_self_attention(model):
    from humangen.models.parts2whole.attention import ReadState, self_attention_names
    names = self_attention_names(model.unet)
    bank = _bank(model, _parts(2), names)
    plain = _run(model)
    st = ReadState(bank)
    st.num_uncond = 1
    mixed = _run(model, st, names)
    torch.testing.assert_close(mixed[0], plain[0], rtol=0, atol=1e-6)  # uncond row: no references
    assert (mixed[1] - plain[1]).abs().max() > 1e-4  # cond row: references change it


@torch.no_grad()
@pytest.mark.parametrize("exclusion", ["compact", "mask"])
def test_fully_masked_bank_with_key_padding_equals_no_bank(model, exclusion):
    from humangen.models.parts2whole.attention import ReadState, self_attention_names
    names = self_attention_names(model.unet)
    parts = _parts(2)
    from humangen.models.parts2whole.parts import PartRef
    empty = [PartRef(p.image, p.label, torch.zeros(p.image.shape[:2])) for p in parts]
    bank = _bank_with_masks(model, empty, names)
    assert all(float(w.max()) == 0.0 for w in bank.weights.values())
    no_bank = _run(model)
    got = _run(model, ReadState(bank, exclusion=exclusion), names)
    torch.testing.assert_close(got, no_bank, rtol=0, atol=1e-6)


def _bank_with_masks(model, parts, names):
    # the sampler refuses empty masks; the processors must still handle them exactly
    from humangen.models.parts2whole.pipeline import build_part_bank, encode_texts, prepare_references
    images, _ = prepare_references(parts, 64, 64)
    masks = torch.stack([F.interpolate(p.mask[None, None], size=(64, 64))[0] for p in parts])
    lat = model.vae.encode(images).latent_dist.mean * model.vae.config.scaling_factor
    emb = encode_texts(model, [p.label for p in parts])
    return build_part_bank(model, lat, torch.cat([emb[p.label] for p in parts]), masks, names)


@torch.no_grad()
def test_compact_and_mask_exclusion_agree_on_a_partial_mask(model):
    from humangen.models.parts2whole.attention import ReadState, self_attention_names
    names = self_attention_names(model.unet)
    bank = _bank(model, _parts(3), names)
    kept = sum(int((w > 0).sum()) for w in bank.weights.values())
    total = sum(w.numel() for w in bank.weights.values())
    assert 0 < kept < total
    a = _run(model, ReadState(bank, exclusion="compact"), names)
    bank.kv_cache.clear()
    b = _run(model, ReadState(bank, exclusion="mask"), names)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def _attention_layer(seed=0):
    from diffusers.models.attention_processor import Attention
    torch.manual_seed(seed)
    return Attention(query_dim=8, heads=2, dim_head=4, bias=False).eval()


@torch.no_grad()
def test_upstream_parity_dilutes_softmax_with_zero_tokens_as_documented():
    """Parity mode keeps masked-out tokens as zero vectors: logit 0, value 0 -> each adds exp(0) to the softmax
    denominator only. With K fully masked parts of N tokens: out = sum_j e^{s_j} v_j / (sum_j e^{s_j} + K*N)."""
    from humangen.models.parts2whole.attention import BankReadProcessor, PartBank, ReadState
    attn = _attention_layer()
    n, k = 16, 3
    h = torch.randn(2, n, 8)
    bank = PartBank(features={"l": torch.zeros(k, n, 8)}, weights={"l": torch.zeros(k, n)})
    got = BankReadProcessor("l", ReadState(bank, upstream_parity=True))(attn, h)
    q = attn.to_q(h).view(2, n, 2, 4).transpose(1, 2)
    key = attn.to_k(h).view(2, n, 2, 4).transpose(1, 2)
    v = attn.to_v(h).view(2, n, 2, 4).transpose(1, 2)
    e = torch.exp(q @ key.transpose(-1, -2) / math.sqrt(4))
    out = (e @ v) / (e.sum(-1, keepdim=True) + k * n)
    expected = attn.to_out[0](out.transpose(1, 2).reshape(2, n, 8))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # ... and the key-padding default equals plain self-attention here
    plain = BankReadProcessor("none", ReadState(PartBank()))(attn, h)
    excl = BankReadProcessor("l", ReadState(bank))(attn, h)
    torch.testing.assert_close(excl, plain, rtol=0, atol=1e-6)
    assert (got - plain).abs().max() > 1e-3


@torch.no_grad()
def test_read_equals_upstream_style_all_queries_when_nothing_is_masked():
    """Queries from own tokens only == upstream's (1+K)N queries, first N rows kept (rows are independent)."""
    from humangen.models.parts2whole.attention import BankReadProcessor, PartBank, ReadState
    attn = _attention_layer(1)
    n, k = 12, 2
    h = torch.randn(1, n, 8)
    feats = torch.randn(k, n, 8)
    bank = PartBank(features={"l": feats}, weights={"l": torch.ones(k, n)})
    ours = BankReadProcessor("l", ReadState(bank))(attn, h)
    parity = BankReadProcessor("l", ReadState(PartBank(features={"l": feats}, weights={"l": torch.ones(k, n)}),
                                              upstream_parity=True))(attn, h)
    full = torch.cat([h, feats.reshape(1, k * n, 8)], dim=1)
    from diffusers.models.attention_processor import AttnProcessor2_0
    upstream = AttnProcessor2_0()(attn, full)[:, :n]
    torch.testing.assert_close(ours, upstream, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parity, upstream, rtol=1e-5, atol=1e-6)


def test_mask_for_tokens_nearest_resize_and_3x3_dilation():
    from humangen.models.parts2whole.attention import mask_for_tokens
    m = torch.zeros(1, 1, 64, 32)
    m[0, 0, 24:32, 8:16] = 1.0  # exactly grid cell (3, 1) at 8x scale
    w = mask_for_tokens(m, 8 * 4).view(8, 4)
    expected = torch.zeros(8, 4)
    expected[2:5, 0:3] = 1.0
    torch.testing.assert_close(w, expected)
    with pytest.raises(ValueError):
        mask_for_tokens(m, 7)


@torch.no_grad()
def test_write_pass_banks_masked_norm1_output_once_for_all_parts(model):
    from humangen.models.parts2whole.attention import self_attention_names
    names = self_attention_names(model.unet)
    captured = {}
    block = model.reference_unet.down_blocks[0].attentions[0].transformer_blocks[0]
    hook = block.norm1.register_forward_hook(lambda m, a, o: captured.setdefault("n", o))
    try:
        bank = _bank(model, _parts(2), names)
    finally:
        hook.remove()
    name = names[0]
    assert name.startswith("down_blocks.0.")
    feats, w = bank.features[name], bank.weights[name]
    assert feats.shape == (2, 64, 8) and w.shape == (2, 64)
    torch.testing.assert_close(feats, captured["n"] * w[..., None])
    assert 0 < int((w > 0).sum()) < w.numel()


@torch.no_grad()
def test_write_pass_stops_at_the_last_banked_layer(model):
    """The hub's reference UNet lacks everything after the last norm1 (randomly initialised on load): the bank must
    not depend on those modules, and `fusion_blocks='midup'` banks only mid and up blocks."""
    from humangen.models.parts2whole.attention import self_attention_names
    names = self_attention_names(model.unet)
    assert "up_blocks.1.attentions.1.transformer_blocks.0.attn1.processor" in names  # the last one run
    parts = _parts(2)
    before = _bank(model, parts, names)
    block = model.reference_unet.up_blocks[1].attentions[1]
    unused = [block.transformer_blocks[0].attn1.to_q.weight, block.transformer_blocks[0].ff.net[2].weight,
              block.proj_out.weight, model.reference_unet.conv_out.weight]
    saved = [w.clone() for w in unused]
    try:
        for w in unused:
            w.normal_()
        after = _bank(model, parts, names)
    finally:
        for w, v in zip(unused, saved):
            w.copy_(v)
    assert set(after.features) == set(names)
    for n in names:
        torch.testing.assert_close(after.features[n], before.features[n], rtol=0, atol=0)
    midup = self_attention_names(model.unet, "midup")
    assert midup and all(n.startswith(("mid_block.", "up_blocks.")) for n in midup)
    assert set(_bank(model, parts, midup).features) == set(midup)


@torch.no_grad()
def test_decoupled_attention_weights_loaded_and_scale_zero_is_text_only(model, tiny_folder):
    from diffusers.models.attention_processor import AttnProcessor2_0
    from safetensors.torch import load_file

    from humangen.models.parts2whole.attention import installed_processors
    state = load_file(f"{tiny_folder}/decoupled_attn.pth")
    sd = model.unet.state_dict()
    assert len(state) == 14  # 7 cross-attention layers x (to_k_dc, to_v_dc)
    for key, value in state.items():
        torch.testing.assert_close(sd[key], value)
    x, ctx = _unet_inputs(model)
    procs = [p for p in model.unet.attn_processors.values() if hasattr(p, "to_k_dc")]
    try:
        for p in procs:
            p.scale = 0.0
        dc0 = model.unet(x, 5, encoder_hidden_states=ctx).sample
    finally:
        for p in procs:
            p.scale = 1.0
    cross = {n: AttnProcessor2_0() for n in model.unet.attn_processors if n.endswith("attn2.processor")}
    with installed_processors(model.unet, cross):
        text_only = model.unet(x, 5, encoder_hidden_states=ctx[:, :77]).sample
    torch.testing.assert_close(dc0, text_only, rtol=0, atol=1e-6)
    with_images = model.unet(x, 5, encoder_hidden_states=ctx).sample
    assert (with_images - text_only).abs().max() > 1e-4


# ---- loader --------------------------------------------------------------------------------------------------
def test_missing_components_are_listed(tmp_path, tiny_folder):
    import shutil
    root = tmp_path / "partial"
    shutil.copytree(tiny_folder, root, ignore=shutil.ignore_patterns("reference_unet", "decoupled_attn.pth",
                                                                     "tokenizer"))
    from humangen.models.parts2whole.loader import load_parts2whole
    with pytest.raises(HumanGenError) as err:
        load_parts2whole(str(root))
    msg = str(err.value)
    for piece in ("reference_unet/", "decoupled_attn.pth", "tokenizer/"):
        assert piece in msg
    assert "unet/," not in msg.replace("reference_unet/,", "")  # present components are not listed
    assert "huggingface.co/huanngzh/Parts2Whole" in msg


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /dev/null",))


def test_bin_weights_load_with_weights_only_and_code_pickles_are_refused(tmp_path, tiny_folder):
    import shutil

    from safetensors.torch import load_file

    from humangen.models.parts2whole.loader import load_parts2whole, missing_components
    from humangen.utils.errors import UnsafeCheckpointError
    root = tmp_path / "bin"
    shutil.copytree(tiny_folder, root)
    st = root / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(st)
    st.unlink()
    torch.save(state, root / "vae" / "diffusion_pytorch_model.bin")
    assert missing_components(str(root)) == []
    m = load_parts2whole(str(root))
    torch.testing.assert_close(m.vae.state_dict()["decoder.conv_out.weight"], state["decoder.conv_out.weight"])
    torch.save({"x": _Exploit()}, root / "vae" / "diffusion_pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match=r"vae: refused to unpickle"):
        load_parts2whole(str(root))
    (root / "vae" / "diffusion_pytorch_model.bin").unlink()
    assert missing_components(str(root)) == ["vae/diffusion_pytorch_model.safetensors"]


# ---- sampler -------------------------------------------------------------------------------------------------
def _gen(model, parts, **kw):
    from humangen.models.parts2whole.pipeline import generate
    args = dict(steps=2, height=64, width=64, seed=3)
    args.update(kw)
    pose = kw.pop("pose", None)
    if pose is None:
        pose = torch.linspace(0, 1, 3 * 64 * 64).view(1, 3, 64, 64)
    args.pop("pose", None)
    return generate(model, parts, pose, args.pop("prompt", "a person"), args.pop("negative_prompt", "blurry"),
                    **args)


def test_text_encoder_called_once_per_distinct_label_and_once_for_the_prompt(model):
    """Regression for upstream's prompt_embeds rebinding: part 1's label reused for every part and the prompt."""
    from humangen.models.parts2whole.parts import PartRef
    tok = model.tokenizer
    calls = []
    h1 = model.text_encoder.register_forward_pre_hook(
        lambda m, args: calls.append(tok.decode(args[0][0], skip_special_tokens=True).replace(" ", "")))
    ref_ctx, den_ctx = [], []
    h2 = model.reference_unet.register_forward_pre_hook(
        lambda m, a, kw: ref_ctx.append(kw["encoder_hidden_states"].clone()), with_kwargs=True)
    h3 = model.unet.register_forward_pre_hook(
        lambda m, a, kw: den_ctx.append(kw["encoder_hidden_states"].clone()), with_kwargs=True)
    base = _parts(3)
    parts = [PartRef(base[0].image, "face", base[0].mask), PartRef(base[1].image, "shoes", base[1].mask),
             PartRef(base[2].image, "face", base[2].mask)]
    try:
        _gen(model, parts, prompt="a tall person", negative_prompt="blurry")
    finally:
        h1.remove(), h2.remove(), h3.remove()
    assert sorted(calls) == sorted(["face", "shoes", "atallperson", "blurry"])
    from humangen.models.parts2whole.pipeline import encode_texts
    emb = encode_texts(model, ["face", "shoes", "a tall person", "blurry"])
    assert len(ref_ctx) == 1  # one reference pass for all parts, not per step
    torch.testing.assert_close(ref_ctx[0], torch.cat([emb["face"], emb["shoes"], emb["face"]]))
    assert len(den_ctx) == 2  # steps
    torch.testing.assert_close(den_ctx[0][1:, :77], emb["a tall person"])  # cond row: the user prompt
    torch.testing.assert_close(den_ctx[0][:1, :77], emb["blurry"])


def test_batch_seed_determinism_and_per_image_seeds(model):
    parts = _parts(2)
    a = _gen(model, parts, batch_size=2)
    b = _gen(model, parts, batch_size=2)
    assert a.shape == (2, 3, 64, 64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    single = _gen(model, parts, batch_size=1)
    torch.testing.assert_close(single[0], a[0], rtol=1e-4, atol=1e-4)  # image i depends on seed + i only
    assert (a[0] - a[1]).abs().max() > 1e-3
    other = _gen(model, parts, seed=4)
    assert (other[0] - a[0]).abs().max() > 1e-3


def test_masks_prompt_and_parts_reach_the_output(model):
    """Regression for upstream's ignored masks: the mask changes the result; so do parts and the prompt."""
    from humangen.models.parts2whole.parts import PartRef
    parts = _parts(2)
    base = _gen(model, parts)
    unmasked = _gen(model, [PartRef(p.image, p.label) for p in parts])
    none = _gen(model, [])
    prompt = _gen(model, parts, prompt="someone else entirely")
    for other in (unmasked, none, prompt):
        assert (other - base).abs().max() > 1e-4


def test_processors_restored_after_interrupt(model):
    from humangen.utils.errors import HumanGenInterrupted
    before = {n: type(p) for n, p in model.unet.attn_processors.items()}
    ref_before = {n: type(p) for n, p in model.reference_unet.attn_processors.items()}
    seen = []

    def cb(step, total, latents):
        seen.append((step, total))
        raise HumanGenInterrupted("stop")

    with pytest.raises(HumanGenInterrupted):
        _gen(model, _parts(1), callback=cb, steps=4)
    assert seen == [(1, 4)]
    assert {n: type(p) for n, p in model.unet.attn_processors.items()} == before
    assert {n: type(p) for n, p in model.reference_unet.attn_processors.items()} == ref_before
    assert not model.unet.conv_in._forward_hooks


def test_check_inputs_names_argument_and_value(model):
    from humangen.models.parts2whole.parts import PartRef
    with pytest.raises(ValueError, match=r"`height` must be a positive multiple of 8, got 60"):
        _gen(model, _parts(1), height=60)
    with pytest.raises(ValueError, match=r"`width` must be a positive multiple of 8, got 60"):
        _gen(model, _parts(1), width=60)
    with pytest.raises(ValueError, match=r"`guidance`.*0.5"):
        _gen(model, _parts(1), guidance=0.5)
    empty = PartRef(torch.rand(8, 8, 3), "face", torch.zeros(8, 8))
    with pytest.raises(ValueError, match=r"`parts\[0\].mask` \(face\) is empty"):
        _gen(model, [empty])
    with pytest.raises(ValueError, match=r"at most 6 parts, got 7"):
        _gen(model, _parts(1) * 7)
    with pytest.raises(ValueError, match="label"):
        PartRef(torch.rand(8, 8, 3), "hat")


@pytest.mark.gpu
@requires_cuda
def test_fp16_generation_on_cuda_matches_fp32_cpu_roughly(tiny_folder, model):
    from humangen.models.parts2whole.loader import load_parts2whole
    gpu = load_parts2whole(tiny_folder, dtype=torch.float16, device="cuda")
    parts = _parts(2)
    a = _gen(gpu, parts, batch_size=2)
    b = _gen(model, parts, batch_size=2)
    assert torch.isfinite(a).all()
    assert (a - b).abs().mean() < 0.05  # same noise (drawn on CPU), fp16 rounding only


def test_bfloat16_weights_run_on_cpu(tiny_folder):
    from humangen.models.parts2whole.loader import load_parts2whole
    m = load_parts2whole(tiny_folder, dtype=torch.bfloat16)
    assert m.unet.dtype == torch.bfloat16
    assert all(p.to_k_dc.weight.dtype == torch.bfloat16
               for p in m.unet.attn_processors.values() if hasattr(p, "to_k_dc"))
    out = _gen(m, _parts(2), batch_size=1, guidance=1.0)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
