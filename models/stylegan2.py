"""StyleGAN2(-ADA) generator, key-compatible with NVIDIA's `training/networks.py` and StyleGAN-Human's 2:1 variant.

Bottom-up: SynthesisLayer / ToRGBLayer / Conv2dLayer -> SynthesisBlock -> SynthesisNetwork -> Generator.
Rectangular (StyleGAN-Human, `square=False`): `b4.const` is [C, 4, 2] and every noise buffer is [r, r/2];
images are img_resolution x img_resolution/2 (H x W).

S-space: every conv layer's affine output `s = affine(w)` is one style code, keyed by the layer name
('b4.conv1', 'b8.conv0', 'b8.conv1', ...; ToRGB layers are 'b{r}.torgb'). `synthesis.compute_styles(ws)` returns
them; `synthesis(ws, styles={name: s})` replaces and `synthesis(ws, style_offsets={name: ds})` adds to them.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .ops import bias_act, conv2d_resample, modulated_conv2d, setup_filter, upsample2d
from .ops.modulated_conv import modulated_conv2d_bias_act
from .stylegan_common import FullyConnectedLayer, GeneratorBase, MappingNetwork, SynthesisSize, resolve_dtype

NOISE_MODES = ("const", "random", "none")


def _style(layer, name, w, styles, style_offsets, gain=1.0):
    if styles is not None and name in styles:
        s = styles[name].to(torch.float32)
    else:
        s = layer.affine(w) * gain if gain != 1 else layer.affine(w)
    if style_offsets is not None and name in style_offsets:
        s = s + style_offsets[name].to(s.dtype)
    return s


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up), noise, bias + lrelu (gain sqrt 2, clamp conv_clamp)."""

    def __init__(self, in_channels: int,  # input channels
                 out_channels: int,  # output channels
                 w_dim: int,  # w size
                 resolution: int,  # output height
                 kernel_size: int = 3,  # conv kernel
                 up: int = 1,  # upsampling factor (1 or 2)
                 use_noise: bool = True,  # per-pixel noise input
                 activation: str = "lrelu",  # activation
                 resample_filter=(1, 3, 3, 1),  # FIR taps for upsampling
                 conv_clamp: float | None = None,  # clamp after activation (None = no clamp)
                 square: bool = True,  # False: width = resolution / 2 (StyleGAN-Human)
                 channels_last: bool = False):  # ignored (memory format hint of the official code)
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.resolution, self.up, self.use_noise, self.activation = resolution, up, use_noise, activation
        self.conv_clamp, self.square = conv_clamp, square
        self.size_hw = (resolution, resolution if square else resolution // 2)
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        from .ops import ACTIVATIONS
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(list(self.size_hw)))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w=None, noise_mode="const", gain=1.0, styles=None, impl="auto", generator=None):
        """x [N, I, H/up, W/up], w [N, w_dim] (or `styles` [N, I] given) -> [N, O, H, W]."""
        assert noise_mode in NOISE_MODES, noise_mode
        h, wd = self.size_hw
        assert x.shape[1:] == (self.in_channels, h // self.up, wd // self.up), (x.shape, self.size_hw)
        if styles is None:
            styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, h, wd], device=x.device, generator=generator) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return modulated_conv2d_bias_act(x, self.weight, styles, self.bias, noise=noise, up=self.up,
                                         padding=self.padding, resample_filter=self.resample_filter,
                                         flip_weight=(self.up == 1), act=self.activation, gain=self.act_gain * gain,
                                         clamp=act_clamp, impl=impl)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, size={self.size_hw}, "
                f"up={self.up}, activation={self.activation}")


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation, styles scaled by 1/sqrt(I k^2); bias, clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None, channels_last: bool = False):
        super().__init__()
        self.in_channels, self.out_channels, self.conv_clamp = in_channels, out_channels, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))

    def forward(self, x, w=None, styles=None, impl="auto"):
        if styles is None:
            styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, impl=impl)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp, impl=impl)


class Conv2dLayer(nn.Module):
    """Plain conv with equalised lr and optional up/down resampling (used by the resnet skip path)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None, channels_last: bool = False, trainable: bool = True):
        super().__init__()
        from .ops import ACTIVATIONS
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x, gain=1.0, impl="auto"):
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, flip_weight=(self.up == 1), impl=impl)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=act_clamp, impl=impl)


class SynthesisBlock(nn.Module):
    """One resolution: (const or 2x up conv0) -> conv1 -> torgb, skip/resnet/orig architecture."""

    def __init__(self, in_channels: int,  # 0 for the first (constant-input) block
                 out_channels: int, w_dim: int, resolution: int, img_channels: int, is_last: bool,
                 architecture: str = "skip",  # 'orig' | 'skip' | 'resnet'
                 resample_filter=(1, 3, 3, 1), conv_clamp: float | None = None, use_fp16: bool = False,
                 fp16_channels_last: bool = False, square: bool = True, **layer_kwargs):
        super().__init__()
        assert architecture in ("orig", "skip", "resnet"), architecture
        self.in_channels, self.out_channels, self.resolution = in_channels, out_channels, resolution
        self.img_channels, self.is_last, self.architecture, self.use_fp16 = img_channels, is_last, architecture, use_fp16
        self.square = square
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution if square else resolution // 2]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, square=square,
                                        **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, square=square, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter)

    def layer_names(self) -> list[str]:
        names = (["conv0"] if self.in_channels else []) + ["conv1"] + (["torgb"] if self.num_torgb else [])
        return [f"b{self.resolution}.{n}" for n in names]

    def forward(self, x, img, ws, noise_mode="const", dtype=torch.float32, styles=None, style_offsets=None,
                impl="auto", generator=None):
        """ws [N, num_conv + num_torgb, w_dim]; x/img from the previous block (None for the first)."""
        w_iter = iter(ws.unbind(dim=1))
        pre = f"b{self.resolution}."
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            x = x.to(dtype)
        kw = dict(noise_mode=noise_mode, impl=impl, generator=generator)
        if self.in_channels == 0:
            x = self.conv1(x, styles=_style(self.conv1, pre + "conv1", next(w_iter), styles, style_offsets), **kw)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5), impl=impl)
            x = self.conv0(x, styles=_style(self.conv0, pre + "conv0", next(w_iter), styles, style_offsets), **kw)
            x = self.conv1(x, styles=_style(self.conv1, pre + "conv1", next(w_iter), styles, style_offsets),
                           gain=np.sqrt(0.5), **kw)
            x = y + x
        else:
            x = self.conv0(x, styles=_style(self.conv0, pre + "conv0", next(w_iter), styles, style_offsets), **kw)
            x = self.conv1(x, styles=_style(self.conv1, pre + "conv1", next(w_iter), styles, style_offsets), **kw)
        if img is not None:
            img = upsample2d(img, self.resample_filter, impl=impl)
        if self.is_last or self.architecture == "skip":
            s = _style(self.torgb, pre + "torgb", next(w_iter), styles, style_offsets, gain=self.torgb.weight_gain)
            y = self.torgb(x, styles=s, impl=impl).to(torch.float32)
            img = img + y if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}"


class SynthesisNetwork(SynthesisSize, nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, H, W] (float32, ~[-1, 1])."""

    def __init__(self, w_dim: int,  # w size
                 img_resolution: int,  # output height (power of 2)
                 img_channels: int,  # output channels
                 channel_base: int = 32768,  # channels(res) = min(channel_base // res, channel_max)
                 channel_max: int = 512,  # max channels
                 num_fp16_res: int = 0,  # highest resolutions in fp16 under the official code (recorded only)
                 square: bool = True,  # False: width = height / 2 (StyleGAN-Human)
                 **block_kwargs):  # architecture, resample_filter, conv_clamp, use_noise, ...
        super().__init__()
        assert img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0, img_resolution
        self.w_dim, self.img_resolution, self.img_channels, self.square = w_dim, img_resolution, img_channels, square
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        block_kwargs.pop("fp16_channels_last", None)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            is_last = res == img_resolution
            block = SynthesisBlock(in_channels, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last, use_fp16=res >= fp16_resolution,
                                   square=square, **block_kwargs)
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def blocks(self):
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def style_layer_names(self, include_torgb: bool = False) -> list[str]:
        """S-space layer names in network order ('b4.conv1', 'b8.conv0', ...)."""
        return [n for b in self.blocks() for n in b.layer_names() if include_torgb or not n.endswith("torgb")]

    def style_layers(self, include_torgb: bool = True) -> dict[str, nn.Module]:
        """name -> layer module (its `.affine` maps w to the style code)."""
        return {n: self.get_submodule(n) for n in self.style_layer_names(include_torgb)}

    def ws_index(self) -> dict[str, int]:
        """name -> index of the w (in [0, num_ws)) that feeds the layer's affine (torgb shares the next conv0's)."""
        out, w_idx = {}, 0
        for b in self.blocks():
            for j, n in enumerate(b.layer_names()):
                out[n] = w_idx + j
            w_idx += b.num_conv
        return out

    def compute_styles(self, ws, include_torgb: bool = True) -> dict[str, torch.Tensor]:
        """ws [N, num_ws, w_dim] -> {layer name: s [N, C_in]} (torgb styles include the 1/sqrt(C) gain)."""
        ws = ws.to(torch.float32)
        out = {}
        for n, i in self.ws_index().items():
            if n.endswith("torgb") and not include_torgb:
                continue
            layer = self.get_submodule(n)
            gain = layer.weight_gain if n.endswith("torgb") else 1.0
            out[n] = layer.affine(ws[:, i]) * gain
        return out

    def forward(self, ws, noise_mode: str = "const", force_fp32: bool = True, dtype=None,
                styles: dict | None = None, style_offsets: dict | None = None, impl: str = "auto",
                generator: torch.Generator | None = None, **_ignored):
        """Synthesize images.

        Args: ws [N, num_ws, w_dim]; noise_mode 'const' | 'random' | 'none' (default: 'const');
        dtype None (fp32, default) or 'bf16'/'fp16' for the opt-in reduced-precision mode;
        styles {layer name: s} replaces, style_offsets {layer name: ds} adds to the affine outputs (S-space);
        impl ops path (default: 'auto'); generator for noise_mode='random'.
        Returns float32 [N, img_channels, H, W].
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        assert ws.ndim == 3 and ws.shape[1:] == (self.num_ws, self.w_dim), (ws.shape, self.num_ws, self.w_dim)
        dt = resolve_dtype(dtype)
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for block in self.blocks():
            cur = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, cur, noise_mode=noise_mode, dtype=dt, styles=styles, style_offsets=style_offsets,
                           impl=impl, generator=generator)
        return img

    def extra_repr(self) -> str:
        return f"img_resolution={self.img_resolution}, square={self.square}, num_ws={self.num_ws}"


class Generator(GeneratorBase):
    """StyleGAN2(-ADA) generator: `mapping(z, c, truncation_psi, truncation_cutoff)` and `synthesis(ws, ...)`."""

    arch = "stylegan2"

    def __init__(self, z_dim: int,  # latent z size
                 c_dim: int,  # label size (0 = unconditional)
                 w_dim: int,  # w size
                 img_resolution: int,  # output height
                 img_channels: int,  # output channels
                 square: bool = True,  # False: 2:1 StyleGAN-Human (width = height / 2)
                 mapping_kwargs: dict | None = None,  # MappingNetwork kwargs
                 synthesis_kwargs: dict | None = None,  # SynthesisNetwork kwargs
                 **more_synthesis_kwargs):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels, self.square = img_resolution, img_channels, square
        skw = dict(synthesis_kwargs or {}, **more_synthesis_kwargs)
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          square=square, **skw)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **dict(mapping_kwargs or {}))
