"""A Parts2Whole model with the released dimensions and random weights, built in memory for the bench.

SD 1.5 denoising UNet and reference UNet, SD VAE, CLIP ViT-L/14 text tower, the CLIP ViT-L/14 image tower of
`lambdalabs/sd-image-variations-diffusers`, the pose guider and the decoupled cross-attention of the hub folder
`huanngzh/Parts2Whole`. Nothing is downloaded or written to disk except the tokenizer's two small
files (a byte-level vocabulary, as the tests build it); its vocabulary is smaller than CLIP's, which changes only
the size of the embedding table, not the work per token.
"""
from __future__ import annotations

import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 cross_attention_dim=768, attention_head_dim=8)
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=512)
CLIP_TEXT = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                 max_position_embeddings=77, projection_dim=768)
CLIP_VISION = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                   image_size=224, patch_size=14, projection_dim=768)


def build(device="cpu"):
    """-> `Parts2WholeModel` (float32, eval, no grad) of the released dimensions with random weights."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    from humangen.models.parts2whole.attention import decoupled_processors
    from humangen.models.parts2whole.loader import Parts2WholeModel
    from humangen.models.parts2whole.pose_guider import PoseGuider
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
    import p2w_tiny  # the byte-level tokenizer files and the scheduler the tests use

    torch.manual_seed(0)  # bench only: random weights
    unet = UNet2DConditionModel(**SD15_UNET)
    procs = decoupled_processors(unet)
    layers = dict(unet.named_modules())
    with torch.no_grad():
        for name, proc in procs.items():  # as upstream initialised them for training: copies of the layer's K/V
            attn = layers[name.removesuffix(".processor")]
            proc.to_k_dc.weight.copy_(attn.to_k.weight)
            proc.to_v_dc.weight.copy_(attn.to_v.weight)
    unet.set_attn_processor({**unet.attn_processors, **procs})
    reference_unet = UNet2DConditionModel(**SD15_UNET)
    vae = AutoencoderKL(**SD_VAE)
    pose_guider = PoseGuider(conditioning_embedding_channels=320, block_out_channels=(16, 32, 96, 256))
    torch.nn.init.normal_(pose_guider.conv_out.weight, std=0.01)  # not the zero init: the pose feature does work
    with tempfile.TemporaryDirectory() as tmp:
        vocab_size = p2w_tiny._tokenizer_files(tmp)
        tokenizer = CLIPTokenizer.from_pretrained(tmp, local_files_only=True)
    text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_TEXT, vocab_size=vocab_size, bos_token_id=vocab_size - 2,
                                                eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1))
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_VISION))
    for m in (unet, reference_unet, vae, text_encoder, image_encoder, pose_guider):
        m.requires_grad_(False).eval()
    model = Parts2WholeModel(unet=unet, reference_unet=reference_unet, vae=vae, text_encoder=text_encoder,
                             tokenizer=tokenizer, image_encoder=image_encoder, feature_extractor=CLIPImageProcessor(),
                             pose_guider=pose_guider, scheduler_config=dict(p2w_tiny.SCHEDULER), path="random (bench)")
    return model.to(device=device)
