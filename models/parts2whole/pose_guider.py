"""Parts2Whole's pose guider: a DensePose image -> a feature map added to the denoiser right after `conv_in`.

The AnimateAnyone-style structure encoder: 3x3 conv_in, then per stage a 3x3 conv and a 3x3 stride-2 conv (SiLU after
each), then a zero-initialised 3x3 conv_out to the UNet's first width. Parameter names (`conv_in`, `blocks.<i>`,
`conv_out`) and config keys match the hub folder `pose_guider/` (config.json + diffusion_pytorch_model.safetensors).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class PoseGuider(ModelMixin, ConfigMixin):
    """DensePose image [B, C_in, H, W] in [0, 1] -> feature [B, C_out, H / 2^(S-1), W / 2^(S-1)]."""

    @register_to_config
    def __init__(
        self,
        conditioning_embedding_channels: int = 320,                # output width = the UNet's block_out_channels[0]
        conditioning_channels: int = 3,                            # input channels (RGB DensePose render)
        block_out_channels: tuple[int, ...] = (16, 32, 96, 256),   # stage widths; S stages downsample by 2^(S-1)
    ):
        super().__init__()
        chans = tuple(block_out_channels)
        self.conv_in = nn.Conv2d(conditioning_channels, chans[0], kernel_size=3, padding=1)
        blocks = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            blocks.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
            blocks.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(chans[-1], conditioning_embedding_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # zero-init: a fresh guider leaves the UNet unchanged
        nn.init.zeros_(self.conv_out.bias)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        c_in = self.config.conditioning_channels
        if conditioning.ndim != 4 or conditioning.shape[1] != c_in:
            raise ValueError(f"PoseGuider expects [B, {c_in}, H, W], got {tuple(conditioning.shape)}")
        x = F.silu(self.conv_in(conditioning))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)


@contextlib.contextmanager
def pose_feature_added(unet, pose_feature: torch.Tensor):
    """Within the block, `unet.conv_in(x)` returns `conv_in(x) + pose_feature` (broadcast over the batch when the
    feature has batch 1). A forward hook, removed on exit; the UNet class and its forward stay stock."""

    def hook(module, args, output):
        if output.shape[-2:] != pose_feature.shape[-2:] or output.shape[1] != pose_feature.shape[1]:
            raise ValueError(f"pose feature {tuple(pose_feature.shape)} does not match conv_in output "
                             f"{tuple(output.shape)}")
        feat = pose_feature.to(output.dtype)
        if feat.shape[0] not in (1, output.shape[0]):
            raise ValueError(f"pose feature batch {feat.shape[0]} does not match UNet batch {output.shape[0]}")
        return output + feat

    handle = unet.conv_in.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
