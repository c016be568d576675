"""HumanSD: key mapping, loading, sampler equivalences, nodes and the ComfyUI-native pose wrapper, with tiny random
SD2-style components (see humansd_tiny.py). CPU, a few seconds in all after the diffusers import."""
from __future__ import annotations

import json
import os

import pytest
import torch

import humansd_tiny as T
from humangen.models.humansd import configs as C
from humangen.models.humansd import convert as conv
from humangen.models.humansd import loader as L
from humangen.models.humansd import native as N
from humangen.models.humansd import pipeline as P
from humangen.models.humansd import sampler as S
from humangen.utils.errors import (HumanGenError, HumanGenInterrupted, NodeInputError, UnsafeCheckpointError,
                                   UnsupportedCheckpointError)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def parts():
    unet, vae, tower = T.make_components(seed=0)
    return {"unet": unet, "vae": vae, "tower": tower, "ldm": T.ldm_state_dict(unet, vae, tower)}


@pytest.fixture(scope="session")
def ckpt(parts, tmp_path_factory):
    return T.save_ckpt(tmp_path_factory.mktemp("hs") / "humansd-v1.ckpt", parts["ldm"])


@pytest.fixture(scope="session")
def model(ckpt):
    return L.load_humansd(ckpt)


def _pose(h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g) * 2 - 1


# ---- configs and key mapping -------------------------------------------------------------------------------------
def test_shipped_configs_are_humansd():
    cfg = C.load_configs()
    assert cfg["unet"]["in_channels"] == 8 and cfg["unet"]["out_channels"] == 4
    assert cfg["unet"]["cross_attention_dim"] == 1024 and cfg["unet"]["use_linear_projection"] is True
    assert cfg["unet"]["attention_head_dim"] == [5, 10, 20, 20] and cfg["unet"]["sample_size"] == 64
    assert cfg["text_encoder"]["num_hidden_layers"] == 23 and cfg["text_encoder"]["hidden_size"] == 1024
    assert cfg["vae"]["scaling_factor"] == 0.18215
    s = cfg["scheduler"]
    assert (s["beta_start"], s["beta_end"], s["beta_schedule"]) == (0.00085, 0.012, "scaled_linear")
    assert (s["timestep_spacing"], s["steps_offset"], s["set_alpha_to_one"]) == ("leading", 1, False)
    assert s["prediction_type"] == "epsilon"


def test_full_size_unet_table_covers_every_sd2_key():
    """The real SD2.1-base/HumanSD layout (built on the meta device): every diffusers key has exactly one LDM name."""
    from diffusers import UNet2DConditionModel
    cfg = C.load_configs()["unet"]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)
    sd = unet.state_dict()
    ldm = T.invert_table(sd, conv.unet_prefix_table(cfg))
    assert len(ldm) == len(sd)
    assert "input_blocks.0.0.weight" in ldm and tuple(ldm["input_blocks.0.0.weight"].shape) == (320, 8, 3, 3)
    assert "output_blocks.2.1.conv.weight" in ldm and "output_blocks.5.2.conv.weight" in ldm  # up-sampler slots
    back, unmapped = conv.convert_unet(ldm, cfg)
    assert unmapped == [] and set(back) == set(sd)


def test_ldm_checkpoint_maps_every_key(parts):
    split = conv.split_ldm_checkpoint(parts["ldm"], T.tiny_configs())
    ref_u, ref_v = parts["unet"].state_dict(), parts["vae"].state_dict()
    assert set(split.unet) == set(ref_u) and all(torch.equal(split.unet[k], ref_u[k]) for k in ref_u)
    assert set(split.vae) == set(ref_v) and all(torch.equal(split.vae[k], ref_v[k]) for k in ref_v)
    assert {"betas", "model_ema.decay", "mmpose_model.backbone.conv1.weight", "logvar"} <= set(split.ignored)
    # the text tower's last block is dropped (penultimate layer), everything else maps
    assert not any(".layers.2." in k for k in split.text_encoder)
    assert len(split.text_encoder) == 4 + 16 * T.TEXT["num_hidden_layers"]
    # independent check of our LDM names: diffusers' own single-file converters give the same diffusers dicts
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    du = convert_ldm_unet_checkpoint(parts["ldm"], dict(T.UNET))
    assert set(du) == set(ref_u) and all(torch.equal(du[k], ref_u[k]) for k in ref_u)
    dv = convert_ldm_vae_checkpoint(parts["ldm"], dict(T.VAE))
    assert set(dv) == set(ref_v) and all(torch.equal(dv[k].reshape(ref_v[k].shape), ref_v[k]) for k in ref_v)


def test_loaded_model_matches_components_and_open_clip(model, parts):
    ref = parts["unet"].state_dict()
    got = model.unet.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert model.unet.config.in_channels == 8 and model.scaling_factor == pytest.approx(0.18215)
    ids = model.tokenizer(["a dancer in a red dress, best quality"])
    with torch.no_grad():
        ours = model.text_encoder(input_ids=ids).last_hidden_state
        theirs = T.open_clip_penultimate(parts["tower"], ids)
    assert ours.shape == (1, 77, 32)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_tokenizer_is_open_clips_with_bang_padding():
    from humangen.models.humansd.tokenizer import OpenCLIPTokenizer
    import open_clip
    tok = OpenCLIPTokenizer()
    ids = tok(["A Photo of a MAN", "x " * 200])
    assert torch.equal(ids, open_clip.tokenize(["A Photo of a MAN", "x " * 200]))
    assert ids.shape == (2, 77) and ids[0, 0] == 49406 and ids[0, 6] == 49407 and ids[0, 7:].eq(0).all()
    assert ids[1, -1] == 49407  # truncated, end token kept
    from open_clip.tokenizer import SimpleTokenizer
    assert SimpleTokenizer().encoder["!"] == 0 == tok.pad_token_id


def test_safetensors_converter_and_diffusers_folder_load_the_same_model(model, ckpt, tmp_path, parts):
    dst = tmp_path / "humansd-v1.safetensors"
    report = L.convert_to_safetensors(ckpt, str(dst))
    assert report["written"] == str(dst) and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    from safetensors import safe_open
    with safe_open(str(dst), framework="pt") as fh:
        keys = set(fh.keys())
        meta = fh.metadata()
    assert not any(k.startswith(("model_ema.", "mmpose_model.")) or k == "betas" for k in keys)
    assert json.loads(meta[L.CONFIG_METADATA_KEY])["unet"]["block_out_channels"] == T.UNET["block_out_channels"]
    st = L.load_humansd(str(dst))  # configs come from the metadata (no sidecar next to it)
    folder = T.save_diffusers(tmp_path / "humansd-diffusers", model.unet, model.vae, model.text_encoder)
    df = L.load_humansd(folder)
    pose = _pose()
    outs = [P.generate(m, pose, "a man", "", steps=2, guidance=2.0, seed=3).latents for m in (model, st, df)]
    torch.testing.assert_close(outs[1], outs[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(outs[2], outs[0], atol=1e-6, rtol=0)


# ---- bad checkpoints ---------------------------------------------------------------------------------------------
def _save(tmp_path, sd, name="bad.ckpt"):
    return T.save_ckpt(tmp_path / name, sd)


def test_wrong_input_channels_is_a_clear_error(parts, tmp_path):
    sd = dict(parts["ldm"])
    sd["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(32, 4, 3, 3)
    with pytest.raises(UnsupportedCheckpointError, match=r"conv_in takes 4 input channels, HumanSD needs 8.*plain SD"):
        L.load_humansd(_save(tmp_path, sd))
    sd["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(32, 9, 3, 3)
    with pytest.raises(UnsupportedCheckpointError, match="inpainting"):
        L.load_humansd(_save(tmp_path, sd))
    from diffusers import UNet2DConditionModel
    folder = tmp_path / "sd2-folder"
    UNet2DConditionModel(**dict(T.UNET, in_channels=4)).save_pretrained(folder / "unet")
    for sub in ("vae", "text_encoder"):
        (folder / sub).mkdir()
        (folder / sub / "config.json").write_text("{}")
    with pytest.raises(UnsupportedCheckpointError, match=r"sd2-folder.*4 input channels"):
        L.load_humansd(str(folder))


def test_missing_and_unexpected_keys_are_named(parts, tmp_path):
    sd = dict(parts["ldm"])
    del sd["model.diffusion_model.out.2.weight"]
    with pytest.raises(UnsupportedCheckpointError, match=r"UNet.*1 missing.*conv_out\.weight"):
        L.load_humansd(_save(tmp_path, sd))
    sd = dict(parts["ldm"])
    sd["model.diffusion_model.input_blocks.12.0.in_layers.0.weight"] = torch.zeros(3)
    with pytest.raises(UnsupportedCheckpointError, match=r"input_blocks\.12\.0\.in_layers"):
        L.load_humansd(_save(tmp_path, sd))
    sd = {k: v for k, v in parts["ldm"].items() if not k.startswith("first_stage_model.")}
    with pytest.raises(UnsupportedCheckpointError, match=r"no 'first_stage_model\.\*' weights"):
        L.load_humansd(_save(tmp_path, sd))
    with pytest.raises(UnsupportedCheckpointError, match="not an LDM"):
        L.load_humansd(_save(tmp_path, {"conv_in.weight": torch.zeros(1)}))


def _drop_first_tensor(path):
    from safetensors.torch import load_file, save_file
    state = load_file(str(path))
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, str(path))
    return dropped


@pytest.mark.parametrize("damage", ["missing_tensor", "truncated", "bad_config_field", "config_not_json",
                                    "layer_product"])
def test_damaged_diffusers_folder_is_one_clear_error(model, tmp_path, damage):
    """diffusers/transformers would fill a missing tensor with random values (a warning only), and report a
    damaged file or config with their own error types."""
    folder = T.save_diffusers(tmp_path / "humansd-diffusers", model.unet, model.vae, model.text_encoder)
    text_weights = os.path.join(folder, "text_encoder", "model.safetensors")
    if damage == "missing_tensor":
        dropped = _drop_first_tensor(text_weights)
        match = rf"text_encoder: the weights file lacks 1 of the model's tensors \({dropped}\).*Fix:"
    elif damage == "truncated":
        with open(text_weights, "r+b") as fh:
            fh.truncate(os.path.getsize(text_weights) // 2)
        match = r"text_encoder: could not be loaded .*Fix: use the folder as diffusers saved it"
    elif damage == "layer_product":  # each count within its limit; together 64 x 64 x 8 blocks took minutes
        cfg_path = os.path.join(folder, "unet", "config.json")
        cfg = json.load(open(cfg_path))
        cfg.update(layers_per_block=64, transformer_layers_per_block=64, block_out_channels=[32] * 8,
                   attention_head_dim=[2] * 8, down_block_types=["CrossAttnDownBlock2D"] * 8,
                   up_block_types=["CrossAttnUpBlock2D"] * 8)
        json.dump(cfg, open(cfg_path, "w"))
        match = r"unet.*(layers_per_block 64 is more than|multiply to).*Fix:"
    elif damage == "bad_config_field":
        cfg_path = os.path.join(folder, "vae", "config.json")
        cfg = json.load(open(cfg_path))
        cfg["block_out_channels"] = "wide"
        json.dump(cfg, open(cfg_path, "w"))
        match = r"vae\.block_out_channels must be a list of 1 to 8 items.*Fix:"
    else:
        with open(os.path.join(folder, "text_encoder", "config.json"), "w") as fh:
            fh.write("{not json")
        match = r"text_encoder/config\.json: not valid JSON.*Fix:"
    with pytest.raises(HumanGenError, match=match) as err:
        L.load_humansd(folder)
    assert "Traceback" not in str(err.value)


@pytest.mark.parametrize("override,match", [
    ({"unet": {"layers_per_block": 200000}}, r"unet\.layers_per_block 200000 is more than HumanGen allows \(16\)"),
    ({"unet": {"layers_per_block": 16, "transformer_layers_per_block": 16, "block_out_channels": [32] * 8,
               "attention_head_dim": [2] * 8, "down_block_types": ["CrossAttnDownBlock2D"] * 8,
               "up_block_types": ["CrossAttnUpBlock2D"] * 8}},
     r"the unet's layer counts multiply to 2048 layers, more than HumanGen allows \(512\)"),
    ({"text_encoder": {"num_hidden_layers": 100000}}, r"text_encoder\.num_hidden_layers 100000 is more than"),
    ({"vae": {"block_out_channels": [32] * 5000}}, r"vae\.block_out_channels must be a list of 1 to 8 items"),
    ({"unet": {"in_channels": "8"}}, r"unet\.in_channels must be a number like 8"),
    ({"unet": {"norm_num_groups": 0}}, r"configs do not describe a HumanSD network \(ZeroDivisionError"),
    ({"text_encoder": {"num_attention_heads": 5}}, r"configs do not describe a HumanSD network"),
    ({"text_encoder": {"hidden_act": "nope"}}, r"configs do not describe a HumanSD network"),
    ({"unet": {"nonsense": 1}}, r"unet\.nonsense is not a field of HumanSD's unet config"),
    ({"foo": {}}, r"unknown component 'foo'"),
    ({"vae": [1, 2]}, r"'vae' must be a JSON object"),
    ({"scheduler": {"beta_end": 2.0}}, r"noise levels outside \(0, 1\]"),
    ([1], r"must hold a JSON object of configs"),
], ids=["layers", "layer_product", "text_layers", "long_list", "string_count", "zero_groups", "heads", "activation", "unknown_field",
        "unknown_component", "component_list", "scheduler", "not_object"])
def test_config_sidecar_is_checked_before_anything_is_built(parts, tmp_path, override, match):
    """Loader and Convert refuse the same sidecars with the same message, quickly (a count of 200000 layers took
    minutes on the meta device), and Convert writes nothing its loader would refuse."""
    ckpt = T.save_ckpt(tmp_path / "t.ckpt", parts["ldm"])
    sidecar = json.load(open(tmp_path / "t.config.json"))
    if isinstance(override, dict):
        for component, values in override.items():
            sidecar[component] = dict(sidecar.get(component, {}), **values) if isinstance(values, dict) else values
    else:
        sidecar = override
    json.dump(sidecar, open(tmp_path / "t.config.json", "w"))
    with pytest.raises(UnsupportedCheckpointError, match=match) as loading:
        L.load_humansd(ckpt)
    assert "Fix:" in str(loading.value)
    with pytest.raises(UnsupportedCheckpointError, match=match):
        L.convert_to_safetensors(ckpt, str(tmp_path / "o.safetensors"))
    assert not (tmp_path / "o.safetensors").exists()


_EXECUTED = []


def _run_payload(msg):
    _EXECUTED.append(msg)


class _Payload:
    def __reduce__(self):
        return (_run_payload, ("pickle code ran",))


def test_unsafe_pickle_global_is_refused_without_running_it(parts, tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.out.2.bias": torch.zeros(4)}, "callbacks": _Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt.*_run_payload.*allow-list"):
        L.load_humansd(str(path))
    with pytest.raises(UnsafeCheckpointError):
        L.convert_to_safetensors(str(path), str(tmp_path / "out.safetensors"))
    assert _EXECUTED == [] and not (tmp_path / "out.safetensors").exists()
    # numpy scalars next to the weights (common in Lightning checkpoints) are on the allow-list
    import numpy as np
    sd = dict(parts["ldm"])
    ok = tmp_path / "np.ckpt"
    torch.save({"state_dict": sd, "global_step": np.int64(5), "loss": np.float32(0.1)}, ok)
    json.dump({"unet": T.UNET, "vae": T.VAE, "text_encoder": T.TEXT}, open(tmp_path / "np.config.json", "w"))
    assert L.load_humansd(str(ok)).unet.config.in_channels == 8


# ---- sampler -----------------------------------------------------------------------------------------------------
def test_ddim_plan_is_ldms():
    acp = S.alphas_cumprod(C.load_configs()["scheduler"])
    from diffusers import DDIMScheduler
    ref = DDIMScheduler(**{k: v for k, v in C.load_configs()["scheduler"].items()})
    torch.testing.assert_close(acp, ref.alphas_cumprod, atol=1e-6, rtol=1e-6)
    plan = S.ddim_plan(acp, 50)
    assert plan.timesteps[:3] == [1, 21, 41] and plan.timesteps[-1] == 981 and len(plan) == 50
    assert float(plan.alphas_prev[0]) == pytest.approx(float(acp[0]))
    assert len(S.ddim_plan(acp, 30)) == 31  # LDM's range(0, 1000, 33) + 1
    assert S.ddim_plan(acp, 3).timesteps == [1, 334, 667]  # LDM would index alphas_cumprod[1000] here
    assert S.ddim_start_index(50, 50, 1.0) == 49 and S.ddim_start_index(50, 50, 0.5) == 25


def _unet_pass(unet, x, pose_lat, t, ctx):
    return unet(torch.cat([x, pose_lat], 1), t, encoder_hidden_states=ctx).sample


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_our_ddim_equals_a_handwritten_diffusers_loop(model, eta):
    from diffusers import DDIMScheduler
    pose = _pose(seed=1)
    steps, g, seed = 10, 4.0, 11
    ours = P.generate(model, pose, "a man", "blurry", steps=steps, guidance=g, eta=eta, seed=seed).latents
    with torch.no_grad():
        cond = P.encode_text(model, ["a man"], "cpu")
        unc = P.encode_text(model, ["blurry"], "cpu")
        lat = P.encode_images(model, pose, "cpu")
        sched = DDIMScheduler(**C.load_configs()["scheduler"])
        sched.set_timesteps(steps)
        gens = S.item_generators(seed, 1)
        x = torch.randn((1, 4, 16, 16), generator=gens[0])
        for t in sched.timesteps[1:]:  # HumanSD's demo decodes from t_enc = steps - 1: the first step is skipped
            e = _unet_pass(model.unet, torch.cat([x, x]), torch.cat([lat, lat]), t, torch.cat([unc, cond]))
            e_u, e_c = e.chunk(2)
            e = e_u + g * (e_c - e_u)
            noise = torch.randn((1, 4, 16, 16), generator=gens[0]) if eta > 0 else None
            x = sched.step(e, t, x, eta=eta, variance_noise=noise).prev_sample
    torch.testing.assert_close(ours, x, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("scheduler", ["dpmpp_2m", "euler"])
def test_diffusers_schedulers_run_and_are_seeded(model, scheduler):
    pose = _pose()
    a = P.generate(model, pose, "a", "", steps=3, scheduler=scheduler, seed=1).latents
    b = P.generate(model, pose, "a", "", steps=3, scheduler=scheduler, seed=1).latents
    c = P.generate(model, pose, "a", "", steps=3, scheduler=scheduler, seed=2).latents
    assert torch.equal(a, b) and not torch.allclose(a, c) and torch.isfinite(a).all()


def test_same_seed_same_image_and_batch_independence(model):
    pose = _pose(seed=2)
    kw = dict(steps=3, guidance=3.0, eta=0.5)
    a = P.generate(model, pose, "a", "b", seed=7, batch=2, **kw)
    b = P.generate(model, pose, "a", "b", seed=7, batch=2, **kw)
    single = P.generate(model, pose, "a", "b", seed=8, batch=1, **kw)
    assert torch.equal(a.images, b.images) and a.seeds == [7, 8]
    torch.testing.assert_close(a.latents[1:], single.latents, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a.latents[0], a.latents[1])


@pytest.mark.parametrize("img2img", [False, True])
def test_many_items_run_in_chunks_with_the_same_result(model, monkeypatch, img2img):
    """Pose frames x batch beyond ITEMS_PER_CALL are denoised a chunk at a time (bounded memory for a long pose
    sequence): each item keeps its seed, its frame and its init image, and the progress runs once over all chunks."""
    poses = torch.cat([_pose(seed=s) for s in (2, 5, 6)])
    kw = dict(steps=3, guidance=3.0, eta=0.5, seed=11, batch=2)
    if img2img:
        kw.update(strength=0.7, init_image=torch.cat([_pose(seed=s) for s in (7, 8, 9)]))
    whole = P.generate(model, poses, "a", "b", **kw)
    monkeypatch.setattr(P, "ITEMS_PER_CALL", 4)  # 6 items: chunks of 4 and 2, frame 1 split across them
    calls, steps = [], []
    chunked = P.generate(model, poses, "a", "b", on_unet_call=lambda inp, t: calls.append(inp.shape[0]),
                         callback=lambda step, total, x: steps.append((step, total)), **kw)
    torch.testing.assert_close(chunked.latents, whole.latents, atol=1e-5, rtol=1e-5)
    assert chunked.seeds == whole.seeds == list(range(11, 17))
    assert max(calls) == 2 * 4  # guidance doubles the chunk
    per_chunk = len(steps) // 2
    assert [s for s, _ in steps] == list(range(1, 2 * per_chunk + 1)) and {t for _, t in steps} == {2 * per_chunk}


def test_zero_extra_channels_make_the_8_channel_unet_the_4_channel_one(parts):
    from diffusers import UNet2DConditionModel
    unet8 = parts["unet"]
    unet4 = UNet2DConditionModel(**dict(T.UNET, in_channels=4)).eval()
    sd = {k: v.clone() for k, v in unet8.state_dict().items()}
    sd["conv_in.weight"] = sd["conv_in.weight"][:, :4].clone()
    unet4.load_state_dict(sd)
    zeroed = UNet2DConditionModel(**T.UNET).eval()
    sd8 = {k: v.clone() for k, v in unet8.state_dict().items()}
    sd8["conv_in.weight"][:, 4:] = 0
    zeroed.load_state_dict(sd8)
    g = torch.Generator().manual_seed(0)
    x, pose = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 16, 16, generator=g)
    ctx = torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        eps = S.make_eps_fn(zeroed, pose, ctx, None, 1.0)(x, 500)
        ref = unet4(x, 500, encoder_hidden_states=ctx).sample
        full = S.make_eps_fn(unet8, pose, ctx, None, 1.0)(x, 500)
    torch.testing.assert_close(eps, ref, atol=1e-5, rtol=1e-5)
    assert (full - ref).abs().max() > 1e-3  # with the trained extra channels the pose does matter


def test_strength_below_one_starts_from_the_noised_init_latent(model):
    pose, init = _pose(seed=3), _pose(seed=4)
    calls = []
    P.generate(model, pose, "a", "b", steps=10, guidance=2.0, seed=9, strength=0.5, init_image=init,
               on_unet_call=lambda inp, t: calls.append((inp.clone(), int(t[0]))))
    plan = S.ddim_plan(S.alphas_cumprod(model.configs["scheduler"]), 10)
    with torch.no_grad():
        z0 = P.encode_images(model, init, "cpu")
    noise = torch.randn((1, 4, 16, 16), generator=S.item_generators(9, 1)[0])
    expected = S.ddim_noise_to(z0, noise, plan, 5)  # t_enc = int(0.5 * 10)
    assert len(calls) == 5 and calls[0][1] == plan.timesteps[4]
    torch.testing.assert_close(calls[0][0][:1, :4], expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="init image"):
        P.generate(model, pose, "a", "b", steps=2, strength=0.5)
    with pytest.raises(ValueError, match="steps must be >= 2 for ddim") as bad:
        P.generate(model, pose, "a", "b", steps=1)
    assert bad.value.argument == "steps"  # the node reports the error on the input of that name
    with pytest.raises(P.InvalidInput, match="eta must be >= 0") as bad:
        P.generate(model, pose, "a", "b", steps=4, eta=-1.0)
    assert bad.value.argument == "eta"
    calls.clear()
    P.generate(model, pose, "a", "b", steps=4, seed=9, on_unet_call=lambda inp, t: calls.append(inp.clone()))
    torch.testing.assert_close(calls[0][:1, :4], noise)  # strength 1: pure noise, as the demo


def test_guidance_one_skips_the_unconditional_pass(model, monkeypatch):
    texts, sizes = [], []
    real = P.encode_text
    monkeypatch.setattr(P, "encode_text", lambda m, t, d: (texts.append(list(t)), real(m, t, d))[1])
    pose = _pose()
    P.generate(model, pose, "a", "neg", steps=3, guidance=1.0, batch=2, on_unet_call=lambda i, t: sizes.append(i))
    assert texts == [["a"]] and [s.shape[0] for s in sizes] == [2, 2]
    texts.clear(), sizes.clear()
    P.generate(model, pose, "a", "neg", added_prompt="extra", steps=3, guidance=5.0, batch=2,
               on_unet_call=lambda i, t: sizes.append(i))
    assert texts == [["a, extra"], ["neg"]] and [s.shape[0] for s in sizes] == [4, 4]
    inp = sizes[0]
    assert torch.equal(inp[:2, 4:], inp[2:, 4:])  # the pose latent is in both guidance branches


def test_fp16_is_refused_and_bf16_runs(model):
    with pytest.raises(ValueError, match="fp16"):
        P.resolve_dtype("fp16", torch.device("cpu"))
    out = P.generate(model, _pose(), "a", "", steps=2, precision="bf16", seed=1)
    ref = P.generate(model, _pose(), "a", "", steps=2, precision="fp32", seed=1)
    assert out.latents.dtype == torch.float32 and (out.latents - ref.latents).abs().max() < 0.1
    assert next(model.unet.parameters()).dtype == torch.float32  # weights untouched


# ---- nodes -------------------------------------------------------------------------------------------------------
@pytest.fixture
def node_ckpt(standalone_host, parts):
    folder = os.path.join(standalone_host.models_root, "humansd")
    return T.save_ckpt(os.path.join(folder, "humansd-v1.ckpt"), parts["ldm"])


def _nodes():
    from humangen.nodes import humansd as NH
    return NH


def _sample_kwargs(**over):
    kw = dict(prompt="a woman", negative_prompt="bad", added_prompt="", steps=2, guidance=2.0, eta=0.0,
              scheduler="ddim", seed=1, batch=1, short_side=64, strength=1.0, precision="fp32")
    kw.update(over)
    return kw


def test_loader_and_sampler_nodes_from_a_skeleton_image(node_ckpt):
    NH = _nodes()
    assert "humansd-v1.ckpt" in NH.HumanGenHumanSDLoader.INPUT_TYPES()["required"]["ckpt_name"][0]
    (hsd,) = NH.HumanGenHumanSDLoader().load("humansd-v1.ckpt")
    skel = torch.zeros(1, 48, 80, 3)
    skel[:, 10:30, 20:60] = torch.tensor([0.86, 0.37, 0.34])
    images, skeleton = NH.HumanGenSkeletonSDSampler().sample(hsd, skeleton=skel, **_sample_kwargs(batch=2))
    assert images.shape == (2, 64, 128, 3) and skeleton.shape == (1, 64, 128, 3)  # short side 64, x64 rounding
    assert 0 <= images.min() and images.max() <= 1 and images.dtype == torch.float32


def test_sampler_node_renders_pose_keypoints(model):
    NH = _nodes()
    kps = [0.0] * 51
    for j, (x, y) in {5: (40, 30), 7: (40, 60), 9: (40, 90), 6: (80, 30)}.items():
        kps[3 * j:3 * j + 3] = [x, y, 0.9]
    pose = [{"people": [{"pose_keypoints_2d": kps}], "canvas_width": 128, "canvas_height": 128}]
    images, skeleton = NH.HumanGenSkeletonSDSampler().sample(model, pose=pose, **_sample_kwargs())
    assert images.shape == (1, 64, 64, 3) and skeleton.shape == (1, 64, 64, 3)
    # the left upper arm (5-7, limb 6) in HumanSD's colour (86, 219, 127), halfway down at x = 20
    assert torch.allclose(skeleton[0, 22, 20] * 255, torch.tensor([86.0, 219.0, 127.0]), atol=1)
    assert skeleton[0, 2, 2].sum() == 0


def test_sampler_node_drops_low_score_people_like_the_demo(model):
    """HumanSD's demo keeps a person only when its score > the detection threshold (0.05) before drawing."""
    from humangen.utils import pose as PM
    NH = _nodes()
    real, ghost = [0.0] * 51, [0.0] * 51
    for j, (x, y) in {5: (40, 30), 7: (40, 60), 9: (40, 90), 6: (80, 30)}.items():
        real[3 * j:3 * j + 3] = [x, y, 0.9]
    for j, (x, y) in {11: (100, 20), 13: (100, 110), 12: (120, 20), 14: (120, 110)}.items():
        ghost[3 * j:3 * j + 3] = [x, y, 0.9]
    pose = [{"people": [{"pose_keypoints_2d": real, "score": 0.8}, {"pose_keypoints_2d": ghost, "score": 0.03}],
             "canvas_width": 128, "canvas_height": 128}]
    inputs = NH.HumanGenSkeletonSDSampler.INPUT_TYPES()["optional"]
    assert inputs["person_threshold"][1]["default"] == 0.05
    _, skeleton = NH.HumanGenSkeletonSDSampler().sample(model, pose=pose, **_sample_kwargs())
    alone = dict(pose[0], people=pose[0]["people"][:1])
    expected = PM.render_skeleton([alone], "humansd", 64, 64, threshold=0.05)[0]
    assert torch.equal((skeleton[0] * 255).round().byte(), torch.from_numpy(expected))
    _, everyone = NH.HumanGenSkeletonSDSampler().sample(model, pose=pose, person_threshold=0.0,
                                                        **_sample_kwargs())
    ghost_px = int(((everyone[0] - skeleton[0]).abs().sum(-1) > 0).sum())
    assert ghost_px > 100  # the ghost's legs are drawn only when everyone is kept
    assert PM.person_score({"score": 0.25}) == 0.25 and PM.person_score({}) is None


def test_sampler_tooltips_name_each_departure_from_the_demo():
    NH = _nodes()
    spec = NH.HumanGenSkeletonSDSampler.INPUT_TYPES()
    desc = NH.HumanGenSkeletonSDSampler.DESCRIPTION
    assert "bf16" in desc and "set precision fp32" in desc
    assert "posterior mean" in desc and "watermark" in desc and "mmpose_bottomup" in desc
    precision = spec["required"]["precision"][1]["tooltip"]
    assert "fp32" in precision and "demo" in precision
    assert "posterior mean" in spec["optional"]["pose"][1]["tooltip"]
    assert "demo" in spec["optional"]["person_threshold"][1]["tooltip"]


def test_sampler_node_errors_and_interrupt(model, standalone_host):
    NH = _nodes()
    node = NH.HumanGenSkeletonSDSampler()
    with pytest.raises(NodeInputError, match=r"HumanGenSkeletonSDSampler: input 'pose'.*Fix"):
        node.sample(model, **_sample_kwargs())
    skel = torch.zeros(1, 64, 64, 3)
    with pytest.raises(NodeInputError, match="init_image"):
        node.sample(model, skeleton=skel, **_sample_kwargs(strength=0.5))
    out, _ = node.sample(model, skeleton=skel, init_image=torch.rand(1, 100, 90, 3), **_sample_kwargs(strength=0.5))
    assert out.shape == (1, 64, 64, 3)
    with pytest.raises(NodeInputError, match=r"input 'steps': 1 is out of range.*between 2 and 200"):
        node.sample(model, skeleton=skel, **_sample_kwargs(steps=1))
    standalone_host.interrupt_event.set()
    with pytest.raises(HumanGenInterrupted):
        node.sample(model, skeleton=skel, **_sample_kwargs())


def test_convert_node_writes_safetensors_next_to_the_checkpoint(node_ckpt):
    NH = _nodes()
    out = NH.HumanGenHumanSDConvert().convert("humansd-v1.ckpt", "", half=True)
    path = out["result"][0]
    assert path.endswith("humansd-v1.safetensors") and os.path.dirname(path) == os.path.dirname(node_ckpt)
    from safetensors.torch import load_file
    assert load_file(path)["model.diffusion_model.out.2.weight"].dtype == torch.float16
    with pytest.raises(NodeInputError, match="output_name"):
        NH.HumanGenHumanSDConvert().convert("humansd-v1.ckpt", "../x.safetensors")
    assert "humansd-v1.safetensors" in NH.HumanGenHumanSDLoader.INPUT_TYPES()["required"]["ckpt_name"][0]


# ---- native ComfyUI patch ----------------------------------------------------------------------------------------
class _FakePatcher:
    """The parts of comfy.model_patcher.ModelPatcher the node uses."""

    def __init__(self, options=None, latent_scale=0.18215):
        self.model_options = dict(options or {})
        self.model = type("BaseModel", (), {"process_latent_in": staticmethod(lambda z: z * latent_scale)})()

    def clone(self):
        return _FakePatcher(self.model_options)

    def set_model_unet_function_wrapper(self, fn):
        self.model_options["model_function_wrapper"] = fn


class _FakeVAE:
    def encode(self, pixels):  # ComfyUI VAE: IMAGE BHWC [0,1] -> raw latent [B,4,H/8,W/8]
        return pixels.movedim(-1, 1)[:, :1].repeat(1, 4, 1, 1)[:, :, ::8, ::8] * 2.0


def test_apply_pose_wrapper_supplies_the_scaled_pose_latent():
    NH = _nodes()
    seen = []
    previous = lambda apply_model, args: (seen.append("previous"), apply_model(args["input"], args["timestep"],
                                                                               **args["c"]))[1]
    base = _FakePatcher({"model_function_wrapper": previous})
    pose = torch.rand(1, 64, 72, 3)
    pos, neg = [[torch.zeros(1, 77, 8), {}]], [[torch.ones(1, 77, 8), {}]]
    patched, p_out, n_out = NH.HumanGenHumanSDApplyPose().apply(base, _FakeVAE(), pos, neg, pose)
    assert p_out is pos and n_out is neg and patched is not base
    assert base.model_options["model_function_wrapper"] is previous  # the input MODEL is untouched
    expected = _FakeVAE().encode(pose) * 0.18215  # [1, 4, 8, 9]
    got = {}

    def apply_model(x, t, **c):
        got.update(c, x=x, t=t)
        return x * 0

    x = torch.randn(4, 4, 8, 9)  # [cond ×2, uncond ×2]
    junk = torch.randn(4, 5, 8, 9)  # what ComfyUI builds for an "inpaint" model
    wrapper = patched.model_options["model_function_wrapper"]
    wrapper(apply_model, {"input": x, "timestep": torch.tensor([5.0] * 4),
                          "c": {"c_concat": junk, "c_crossattn": torch.zeros(4, 77, 8)}, "cond_or_uncond": [0, 1]})
    assert seen == ["previous"] and got["x"] is x and got["c_crossattn"].shape == (4, 77, 8)
    assert got["c_concat"].shape == (4, 4, 8, 9)
    for i in range(4):
        torch.testing.assert_close(got["c_concat"][i], expected[0])
    # a latent of another size: the pose latent is resized to it
    wrapper(apply_model, {"input": torch.randn(2, 4, 16, 18), "timestep": torch.tensor([1.0, 1.0]),
                          "c": {}, "cond_or_uncond": [0]})
    assert got["c_concat"].shape == (2, 4, 16, 18)


def test_apply_pose_wrapper_reproduces_our_eps_with_a_real_unet(model):
    """ComfyUI-style apply_model (cat([x, c_concat]) → UNet) + our wrapper == the pipeline's model function."""
    pose_lat = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    ctx = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(1))
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(2))

    def apply_model(x_, t, c_concat=None, c_crossattn=None):
        return model.unet(torch.cat([x_, c_concat], 1), t, encoder_hidden_states=c_crossattn).sample

    patched = N.apply_pose(_FakePatcher(), pose_lat)
    with torch.no_grad():
        a = patched.model_options["model_function_wrapper"](
            apply_model, {"input": x, "timestep": torch.tensor([300, 300]), "c": {"c_crossattn": ctx},
                          "cond_or_uncond": [0, 1]})
        b = S.make_eps_fn(model.unet, pose_lat.expand(2, -1, -1, -1), ctx, None, 1.0)(x, 300)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_apply_pose_node_registers_only_in_comfyui(monkeypatch):
    NH = _nodes()
    from humangen import NODE_CLASS_MAPPINGS
    assert "HumanGenHumanSDApplyPose" not in NODE_CLASS_MAPPINGS
    assert "HumanGenHumanSDApplyPose" in NH.HOST_ONLY_NODES
    import test_contract
    monkeypatch.setattr(test_contract, "NODE_DISPLAY_NAME_MAPPINGS",
                        dict(test_contract.NODE_DISPLAY_NAME_MAPPINGS, **NH.HOST_ONLY_DISPLAY_NAMES))
    test_contract.test_node_contract("HumanGenHumanSDApplyPose", NH.HumanGenHumanSDApplyPose)


def test_offloader_hands_modules_to_the_host_loader(model):
    calls = []
    off = P.Offloader("cpu", load=lambda m: (calls.append(m), "cpu")[1], managed=True)
    with off.use(model.vae) as dev:
        assert dev == torch.device("cpu")
    assert calls == [model.vae]


def test_a_checkpoint_needing_code_is_refused_everywhere(parts, tmp_path):
    src = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": parts["ldm"], "callbacks": _Payload()}, src)
    json.dump({"unet": T.UNET, "vae": T.VAE, "text_encoder": T.TEXT}, open(tmp_path / "lightning.config.json", "w"))
    _EXECUTED.clear()
    with pytest.raises(UnsafeCheckpointError, match="never does"):
        L.load_humansd(str(src))
    with pytest.raises(UnsafeCheckpointError):
        L.convert_to_safetensors(str(src), str(tmp_path / "lightning.safetensors"))
    assert _EXECUTED == []
    assert not (tmp_path / "lightning.safetensors").exists()


def test_scheduler_img2img_runs_the_last_steps_from_the_noised_init(model):
    pose, init = _pose(seed=3), _pose(seed=4)
    calls = []
    P.generate(model, pose, "a", "b", steps=8, guidance=2.0, seed=9, strength=0.5, init_image=init,
               scheduler="euler", on_unet_call=lambda inp, t: calls.append((inp.clone(), float(t[0]))))
    sched = S.make_scheduler("euler", model.configs["scheduler"])
    sched.set_timesteps(8)
    assert [c[1] for c in calls] == pytest.approx([float(t) for t in sched.timesteps[4:]])
    with torch.no_grad():
        z0 = P.encode_images(model, init, "cpu")
    noise = torch.randn((1, 4, 16, 16), generator=S.item_generators(9, 1)[0])
    sigma = float(sched.sigmas[4])
    expected = (z0 + sigma * noise) / (sigma ** 2 + 1) ** 0.5  # add_noise, then Euler's input scaling
    torch.testing.assert_close(calls[0][0][:1, :4], expected, atol=1e-5, rtol=1e-5)
