"""Tiny random SD2-style HumanSD components for tests, saved in the original LDM single-file layout and in the
diffusers layout. The LDM UNet/VAE names come from inverting our key tables; the tests cross-check them against
diffusers' own LDM converters (an independent implementation that reads real SD checkpoints). The text tower is a
real open_clip `TextTransformer`, so its LDM names and numerics are the original's."""
from __future__ import annotations

import json
import os

import torch

UNET = dict(sample_size=16, in_channels=8, out_channels=4, layers_per_block=2, block_out_channels=[32, 32, 64],
            down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            attention_head_dim=[2, 2, 4], cross_attention_dim=32, use_linear_projection=True, norm_num_groups=32)
VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
           up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64], layers_per_block=1,
           latent_channels=4, norm_num_groups=32, sample_size=32, scaling_factor=0.18215)
TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=128, projection_dim=32, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5)
OPEN_CLIP = dict(context_length=77, vocab_size=49408, width=32, heads=4, layers=3, output_dim=32)


def tiny_configs() -> dict:
    from humangen.models.humansd.configs import merge_configs
    return merge_configs({"unet": UNET, "vae": VAE, "text_encoder": TEXT})


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Re-randomise every parameter (zero-initialised biases/norms too), so a dropped tensor cannot match."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            base = 1.0 if ("norm" in name or "ln_" in name) and name.endswith("weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 + base)


def make_components(seed: int = 0):
    """(unet, vae, open_clip text tower) with random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from humangen.utils import compat
    compat.install_import_hook()
    from open_clip.transformer import TextTransformer
    torch.manual_seed(seed)  # test-only: module construction uses the global RNG
    unet = UNet2DConditionModel(**UNET).eval()
    vae = AutoencoderKL(**VAE).eval()
    tower = TextTransformer(**OPEN_CLIP).eval()
    _randomize(unet, seed + 1)
    _randomize(vae, seed + 2)
    _randomize(tower, seed + 3)
    return unet, vae, tower


def invert_table(diffusers_sd: dict, table) -> dict:
    """diffusers keys -> LDM keys with one of our prefix tables (submodule tables inverted)."""
    out = {}
    for key, value in diffusers_sd.items():
        for ldm_prefix, diff_prefix, sub in table:
            if key.startswith(diff_prefix):
                rest = key[len(diff_prefix):]
                if sub is not None:
                    for old, new in sub.items():
                        if rest.startswith(new + "."):
                            rest = old + rest[len(new):]
                            break
                    else:
                        continue
                out[ldm_prefix + rest] = value
                break
        else:
            raise KeyError(f"no LDM name for {key}")
    return out


def ldm_state_dict(unet, vae, tower, *, extras: bool = True) -> dict:
    """The three components in the original single-file layout (plus the entries a HumanSD .ckpt carries)."""
    from humangen.models.humansd import convert as conv
    sd = {}
    for k, v in invert_table(unet.state_dict(), conv.unet_prefix_table(UNET)).items():
        sd[conv.UNET_PREFIX + k] = v.clone()
    vae_sd = invert_table(vae.state_dict(), conv.vae_prefix_table(VAE))
    for k, v in vae_sd.items():
        if ".mid.attn_1." in k and k.endswith(".weight") and v.ndim == 2:
            v = v[:, :, None, None]  # LDM's attention uses 1x1 convs
        sd[conv.VAE_PREFIX + k] = v.clone()
    for k, v in tower.state_dict().items():
        if k != "attn_mask":
            sd[conv.TEXT_PREFIX + k] = v.clone()
    if extras:
        sd["betas"] = torch.rand(1000)
        sd["alphas_cumprod"] = torch.rand(1000)
        sd["logvar"] = torch.zeros(1000)
        sd["model_ema.decay"] = torch.tensor(0.999)
        sd["model_ema.num_updates"] = torch.tensor(10)
        sd["mmpose_model.backbone.conv1.weight"] = torch.randn(4, 3, 3, 3)
        sd["cond_stage_model.model.logit_scale"] = torch.tensor(4.6)
    return sd


def save_ckpt(path, sd: dict, *, configs: bool = True) -> str:
    """Save like LDM/Lightning (`{"state_dict": …, "global_step": …}`) plus our config sidecar for tiny dims."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"state_dict": sd, "global_step": 1000, "epoch": 3}, path)
    if configs:
        with open(os.path.splitext(path)[0] + ".config.json", "w") as fh:
            json.dump({"unet": UNET, "vae": VAE, "text_encoder": TEXT}, fh)
    return path


def save_diffusers(folder, unet, vae, text_encoder) -> str:
    folder = str(folder)
    unet.save_pretrained(os.path.join(folder, "unet"))
    vae.save_pretrained(os.path.join(folder, "vae"))
    text_encoder.save_pretrained(os.path.join(folder, "text_encoder"))
    return folder


def open_clip_penultimate(tower, ids: torch.Tensor) -> torch.Tensor:
    """What HumanSD's FrozenOpenCLIPEmbedder(layer='penultimate') computes: all blocks but the last, then ln_final."""
    x = tower.token_embedding(ids) + tower.positional_embedding
    blocks = tower.transformer.resblocks
    for r in blocks[: len(blocks) - 1]:
        x = r(x, attn_mask=tower.attn_mask)
    return tower.ln_final(x)
