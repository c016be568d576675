"""Tiny random Parts2Whole folder in the hub's diffusers layout, for CPU tests (built by the tests, never downloaded).

64x64 images -> 8x8 latents (VAE factor 8), 2-level UNet with cross-attention at both levels, 16-d text/image tokens.
"""
from __future__ import annotations

import json
import os

SIZE = 64  # generation height = width in tests
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                 set_alpha_to_one=False, steps_offset=1)  # DDIMScheduler's arguments (SD 1.5's betas)


def _tokenizer_files(folder: str) -> None:
    # byte-level BPE with no merges: every character is its own token ("c" or word-final "c</w>")
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": 77, "tokenizer_class": "CLIPTokenizer", "pad_token": "<|endoftext|>"}, f)
    return len(vocab)


def unet_kwargs() -> dict:
    return dict(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                norm_num_groups=4, attention_head_dim=2)


def build(root: str, *, skip: tuple[str, ...] = ()) -> str:
    """Write the tiny model folder to `root` (components named in `skip` are left out). Returns `root`."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from safetensors.torch import load_file, save_file
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    from humangen.models.parts2whole.attention import decoupled_processors
    from humangen.models.parts2whole.pose_guider import PoseGuider

    os.makedirs(root, exist_ok=True)
    sub = lambda name: os.path.join(root, name)  # noqa: E731
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_kwargs())
    if "unet" not in skip:
        unet.save_pretrained(sub("unet"))
    torch.manual_seed(1)
    if "reference_unet" not in skip:
        ref = UNet2DConditionModel(**unet_kwargs())
        ref.save_pretrained(sub("reference_unet"))
        # like the hub's reference UNet: the output head and everything of the last transformer block after its
        # norm1 are absent (never used)
        last = "up_blocks.1.attentions.1."
        dropped = ("conv_out.", "conv_norm_out.", last + "proj_out.") + tuple(
            f"{last}transformer_blocks.0.{m}." for m in ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out",
                                                        "norm2", "attn2", "norm3", "ff"))
        path = os.path.join(sub("reference_unet"), "diffusion_pytorch_model.safetensors")
        state = {k: v for k, v in load_file(path).items() if not k.startswith(dropped)}
        save_file(state, path)
    torch.manual_seed(2)
    if "vae" not in skip:
        AutoencoderKL(block_out_channels=[8, 8, 8, 8], down_block_types=["DownEncoderBlock2D"] * 4,
                      up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, norm_num_groups=4,
                      layers_per_block=1, sample_size=SIZE).save_pretrained(sub("vae"))
    torch.manual_seed(3)
    if "pose_guider" not in skip:
        pg = PoseGuider(conditioning_embedding_channels=8, block_out_channels=(4, 4, 4, 4))
        torch.nn.init.normal_(pg.conv_out.weight, std=0.1)  # not zero, so the pose visibly matters in tests
        pg.save_pretrained(sub("pose_guider"))
    vocab_size = _tokenizer_files(sub("tokenizer")) if "tokenizer" not in skip else 600
    torch.manual_seed(4)
    if "text_encoder" not in skip:
        CLIPTextModel(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                     num_hidden_layers=2, vocab_size=vocab_size, max_position_embeddings=77,
                                     bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                                     pad_token_id=vocab_size - 1)).save_pretrained(sub("text_encoder"))
    torch.manual_seed(5)
    if "image_encoder" not in skip:
        CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                                       num_hidden_layers=2, image_size=32, patch_size=8,
                                                       projection_dim=16)).save_pretrained(sub("image_encoder"))
    if "feature_extractor" not in skip:
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
            sub("feature_extractor"))
    if "scheduler" not in skip:
        DDIMScheduler(**SCHEDULER).save_pretrained(sub("scheduler"))
    torch.manual_seed(6)
    if "decoupled_attn" not in skip:
        state = {}
        for name, proc in decoupled_processors(unet).items():
            for pname, p in proc.named_parameters():
                state[f"{name}.{pname}"] = torch.randn_like(p) * 0.3
        save_file(state, os.path.join(root, "decoupled_attn.pth"))  # safetensors bytes, .pth name (as on the hub)
    return root


_CACHE: dict[str, str] = {}


def shared(tmp_path_factory) -> str:
    """One full tiny folder per test session (read-only by convention: copy it before changing anything)."""
    if "full" not in _CACHE:
        _CACHE["full"] = build(str(tmp_path_factory.mktemp("p2w_shared") / "tiny"))
    return _CACHE["full"]
