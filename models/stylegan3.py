"""StyleGAN3 (T and R) generator, key-compatible with NVIDIA's `training/networks_stylegan3.py` and with
StyleGAN-Human's rectangular variant (`square=False`: every size is [W, H] = [s/2, s], margins included, and layer
names carry the WIDTH, e.g. `L0_18_128`).

Bottom-up: design_lowpass_filter -> SynthesisInput -> SynthesisLayer -> SynthesisNetwork -> Generator.
Sizes are [width, height] numpy pairs as in the official code.

Extension points (used by the continuous/AnyRes generator):
- `SynthesisInput.forward(w, transform=None)`: an explicit [N,3,3] or [3,3] transform replaces the `transform`
  buffer (which must stay identity otherwise).
- `SynthesisNetwork.layer_styles(idx, name, layer, w, **kw)` returns the style code of layer `idx`; a subclass
  adds terms (e.g. a scale affine). `SynthesisNetwork.forward(..., **kw)` passes unknown kwargs to it.
- `SynthesisNetwork.input_class` / `layer_class` choose the classes built in `__init__`.
S-space: `compute_styles(ws)` -> {layer name: s}; `styles=` replaces, `style_offsets=` adds (per layer name).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .ops import filtered_lrelu, modulated_conv2d_sg3, needs_grad, resolve_impl, workspace
from .stylegan_common import FullyConnectedLayer, GeneratorBase, MappingNetwork, SynthesisSize, resolve_dtype

MAX_FILTER_TAPS = 256  # resampling filter taps a layer may ask for (radial filters are taps x taps)


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False):
    """Kaiser low-pass FIR: separable firwin taps [n], or a radially symmetric jinc filter [n, n]; None if n == 1.

    NVIDIA's design (scipy's `firwin` with a Kaiser window for the separable taps; a Bessel-J1 jinc for the radial
    ones) written with numpy and `torch.special.bessel_j1`: building a generator then needs no scipy, whose import
    took 0.8 s and 66 MB of memory on every StyleGAN3 load (`tests/test_stylegan_ops.py` checks the taps against
    scipy's)."""
    assert numtaps >= 1
    if numtaps == 1:
        return None
    nyquist = fs / 2
    attenuation = 2.285 * (numtaps - 1) * np.pi * (width / nyquist) + 7.95  # dB, Kaiser's estimate for the width
    if attenuation > 50:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation > 21:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    else:
        beta = 0.0
    window = np.kaiser(numtaps, beta)
    m = np.arange(numtaps) - (numtaps - 1) / 2  # tap positions, centred
    if not radial:
        band = cutoff / nyquist
        f = band * np.sinc(band * m) * window
        return torch.as_tensor(f / np.sum(f), dtype=torch.float32)  # unit gain at DC
    x = m / fs
    r = np.hypot(*np.meshgrid(x, x))
    f = torch.special.bessel_j1(torch.from_numpy(2 * cutoff * (np.pi * r))).numpy() / (np.pi * r)
    f *= np.outer(window, window)
    f /= np.sum(f)
    return torch.as_tensor(f, dtype=torch.float32)


def _size2(size, square: bool) -> np.ndarray:
    """int -> [W, H]: [s, s] (square) or [s // 2, s] (StyleGAN-Human rectangular)."""
    size = int(size)
    return np.array([size, size] if square else [size // 2, size], dtype=np.int64)


class SynthesisInput(nn.Module):
    """Fourier features: sinusoids with learned frequencies, rotated/translated by affine(w) and `transform`."""

    def __init__(self, w_dim: int,  # w size
                 channels: int,  # number of Fourier features
                 size,  # output size: int (square) or [W, H]
                 sampling_rate: float,  # sampling rate of the output grid
                 bandwidth: float):  # frequency cutoff of the features
        super().__init__()
        self.w_dim, self.channels = w_dim, channels
        self.size = np.broadcast_to(np.asarray(size), [2]).astype(np.int64)
        self.sampling_rate, self.bandwidth = float(sampling_rate), float(bandwidth)
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs /= radii * radii.square().exp().pow(0.25)
        freqs *= bandwidth
        phases = torch.rand([channels]) - 0.5
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3, 3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def base_transform(self, w, transform=None) -> torch.Tensor:
        """[N, 3, 3]: rotation/translation from affine(w) composed with `transform` (default: the buffer)."""
        n = w.shape[0]
        if transform is None:
            transform = self.transform
        transform = transform.to(w.device, torch.float32)
        if transform.ndim == 2:
            transform = transform.unsqueeze(0)
        t = self.affine(w)  # (r_c, r_s, t_x, t_y)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        m_r = torch.eye(3, device=w.device).unsqueeze(0).repeat([n, 1, 1])
        m_r[:, 0, 0] = t[:, 0]
        m_r[:, 0, 1] = -t[:, 1]
        m_r[:, 1, 0] = t[:, 1]
        m_r[:, 1, 1] = t[:, 0]
        m_t = torch.eye(3, device=w.device).unsqueeze(0).repeat([n, 1, 1])
        m_t[:, 0, 2] = -t[:, 2]
        m_t[:, 1, 2] = -t[:, 3]
        return m_r @ m_t @ transform

    def forward(self, w, transform=None) -> torch.Tensor:
        """w [N, w_dim]; transform None (the buffer), [3,3] or [N,3,3] -> features [N, C, H, W] float32."""
        assert w.ndim == 2 and w.shape[1] == self.w_dim, (w.shape, self.w_dim)
        transforms = self.base_transform(w, transform)
        freqs = self.freqs.unsqueeze(0)
        phases = self.phases.unsqueeze(0)
        phases = phases + (freqs @ transforms[:, :2, 2:]).squeeze(2)
        freqs = freqs @ transforms[:, :2, :2]
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = 0.5 * float(self.size[0]) / self.sampling_rate
        theta[1, 1] = 0.5 * float(self.size[1]) / self.sampling_rate
        grids = torch.nn.functional.affine_grid(theta.unsqueeze(0), [1, 1, int(self.size[1]), int(self.size[0])],
                                                align_corners=False)
        x = (grids.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # [N, H, W, C]
        x = x + phases.unsqueeze(1).unsqueeze(2)
        x = torch.sin(x * (np.pi * 2))
        x = x * amplitudes.unsqueeze(1).unsqueeze(2)
        weight = self.weight / np.sqrt(self.channels)
        x = x @ weight.t()
        return x.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, channels={self.channels}, size={list(self.size)}, "
                f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}")


class SynthesisLayer(nn.Module):
    """Modulated conv -> filtered leaky ReLU (up, lrelu, down): one alias-free layer (or ToRGB)."""

    def __init__(self, w_dim: int, is_torgb: bool, is_critically_sampled: bool, use_fp16: bool,
                 in_channels: int, out_channels: int,
                 in_size, out_size,  # int or [W, H]
                 in_sampling_rate: float, out_sampling_rate: float, in_cutoff: float, out_cutoff: float,
                 in_half_width: float, out_half_width: float,
                 conv_kernel: int = 3,  # conv kernel (R config: 1)
                 filter_size: int = 6,  # low-pass taps per resampling factor
                 lrelu_upsampling: int = 2,  # oversampling of the nonlinearity
                 use_radial_filters: bool = False,  # radial down filters (R config)
                 conv_clamp: float | None = 256,  # clamp after activation
                 magnitude_ema_beta: float = 0.999):  # EMA decay of the input magnitude (training only)
        super().__init__()
        self.w_dim, self.is_torgb, self.is_critically_sampled, self.use_fp16 = w_dim, is_torgb, is_critically_sampled, use_fp16
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_size = np.broadcast_to(np.asarray(in_size), [2]).astype(np.int64)
        self.out_size = np.broadcast_to(np.asarray(out_size), [2]).astype(np.int64)
        self.in_sampling_rate, self.out_sampling_rate = in_sampling_rate, out_sampling_rate
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.in_cutoff, self.out_cutoff = in_cutoff, out_cutoff
        self.in_half_width, self.out_half_width = in_half_width, out_half_width
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp, self.magnitude_ema_beta = conv_clamp, magnitude_ema_beta
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.up_factor = int(np.rint(self.tmp_sampling_rate / in_sampling_rate))
        assert in_sampling_rate * self.up_factor == self.tmp_sampling_rate
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.down_factor = int(np.rint(self.tmp_sampling_rate / out_sampling_rate))
        assert out_sampling_rate * self.down_factor == self.tmp_sampling_rate
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        if max(self.up_taps, self.down_taps) > MAX_FILTER_TAPS:  # designed in numpy: the meta device saves nothing
            raise ValueError(f"the generator settings give a {max(self.up_taps, self.down_taps)}-tap resampling "
                             f"filter (at most {MAX_FILTER_TAPS}; the official configs use 24 or fewer)")
        self.register_buffer("up_filter", design_lowpass_filter(self.up_taps, in_cutoff, in_half_width * 2,
                                                                self.tmp_sampling_rate))
        self.down_radial = use_radial_filters and not is_critically_sampled
        self.register_buffer("down_filter", design_lowpass_filter(self.down_taps, out_cutoff, out_half_width * 2,
                                                                  self.tmp_sampling_rate, radial=self.down_radial))
        pad_total = (self.out_size - 1) * self.down_factor + 1
        pad_total -= (self.in_size + self.conv_kernel - 1) * self.up_factor
        pad_total += self.up_taps + self.down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = [int(pad_lo[0]), int(pad_hi[0]), int(pad_lo[1]), int(pad_hi[1])]

    def forward(self, x, w=None, styles=None, dtype=torch.float32, impl="auto", update_emas=False,
                channel_multiple=1, **_ignored):
        """x [N, I, H_in, W_in], w [N, w_dim] (or `styles` [N, I]) -> [N, O, H_out, W_out].
        channel_multiple > 1 (fast inference inside the synthesis loop): the output carries zero channels up to a
        multiple of it (not for ToRGB), and x may carry them (see `modulated_conv2d_sg3_fast`)."""
        assert x.shape[1] in (self.in_channels, _round_up(self.in_channels, channel_multiple)), \
            (x.shape, self.in_channels)
        assert x.shape[2:] == (int(self.in_size[1]), int(self.in_size[0])), (x.shape, self.in_size)
        assert not (update_emas and x.shape[1] != self.in_channels), "magnitude EMA of channel-padded input"
        if update_emas:
            with torch.no_grad():
                self.magnitude_ema.copy_(x.detach().float().square().mean().lerp(self.magnitude_ema,
                                                                                  self.magnitude_ema_beta))
        input_gain = self.magnitude_ema.rsqrt()
        if styles is None:
            styles = self.affine(w)
            if self.is_torgb:
                styles = styles * self.torgb_gain
        fast_inference = resolve_impl(impl) == "fast" and not needs_grad(x, self.weight, styles, self.bias)
        # fast inference: ToRGB's bias goes into its convolution (filtered_lrelu adds it first anyway: same math);
        # the other layers' bias into filtered_lrelu's upsampling, which adds it while copying its input rows
        fold_bias = fast_inference and self.is_torgb
        out_multiple = channel_multiple if fast_inference and not self.is_torgb else 1
        x = modulated_conv2d_sg3(x.to(dtype), self.weight, styles, demodulate=not self.is_torgb,
                                 padding=self.conv_kernel - 1, input_gain=input_gain, impl=impl,
                                 bias=self.bias if fold_bias else None, channel_multiple=out_multiple)
        gain = 1 if self.is_torgb else np.sqrt(2)
        slope = 1 if self.is_torgb else 0.2
        fu = self.up_filter.to(x.dtype) if self.up_filter is not None else None
        fd = self.down_filter.to(x.dtype) if self.down_filter is not None else None
        b = None if fold_bias else F.pad(self.bias.to(x.dtype), [0, x.shape[1] - self.out_channels])
        y = filtered_lrelu(x, fu=fu, fd=fd, b=b, up=self.up_factor,
                           down=self.down_factor,
                           padding=self.padding, gain=gain, slope=slope, clamp=self.conv_clamp, impl=impl)
        workspace.recycle(x)  # the convolution's output is read only by filtered_lrelu
        x = y
        assert x.shape[1:] == (_round_up(self.out_channels, out_multiple), int(self.out_size[1]),
                               int(self.out_size[0])), (x.shape, self.out_size)
        return x

    @property
    def torgb_gain(self) -> float:
        return 1 / np.sqrt(self.in_channels * (self.conv_kernel ** 2)) if self.is_torgb else 1.0

    def extra_repr(self) -> str:
        return "\n".join([
            f"w_dim={self.w_dim}, is_torgb={self.is_torgb}, is_critically_sampled={self.is_critically_sampled},",
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, in_size={list(self.in_size)}, "
            f"out_size={list(self.out_size)}, up={self.up_factor}, down={self.down_factor}, radial={self.down_radial}"])


def layer_schedule(img_resolution: int, channel_base: int, channel_max: int, num_layers: int = 14,
                   num_critical: int = 2, first_cutoff: float = 2, first_stopband: float = 2 ** 2.1,
                   last_stopband_rel: float = 2 ** 0.3, margin_size: int = 10, img_channels: int = 3):
    """The official per-layer cutoffs, stopbands, sampling rates, half widths, sizes and channels (numpy)."""
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    return dict(cutoffs=cutoffs, stopbands=stopbands, sampling_rates=sampling_rates, half_widths=half_widths,
                sizes=sizes, channels=channels)


CHANNEL_MULTIPLE = 16  # fast CPU/GPU inference pads layer channels to this (zeros); see modulated_conv2d_sg3_fast


def _round_up(c: int, multiple: int) -> int:
    return -(-int(c) // multiple) * multiple


class SynthesisNetwork(SynthesisSize, nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, C, H, W] float32. num_ws = num_layers + 2."""

    input_class = SynthesisInput
    layer_class = SynthesisLayer

    def __init__(self, w_dim: int,  # w size
                 img_resolution: int,  # output height
                 img_channels: int,  # output channels
                 channel_base: int = 32768,  # overall channel multiplier
                 channel_max: int = 512,  # max channels
                 num_layers: int = 14,  # layers excluding ToRGB
                 num_critical: int = 2,  # critically sampled layers at the end
                 first_cutoff: float = 2,  # cutoff of the first layer
                 first_stopband: float = 2 ** 2.1,  # stopband of the first layer
                 last_stopband_rel: float = 2 ** 0.3,  # last stopband relative to its cutoff
                 margin_size: int = 10,  # extra pixels around each layer's image
                 output_scale: float = 0.25,  # output multiplier
                 num_fp16_res: int = 4,  # fp16 layers under the official code (recorded only)
                 square: bool = True,  # False: sizes are [s/2, s] (StyleGAN-Human rectangular)
                 **layer_kwargs):  # conv_kernel, filter_size, lrelu_upsampling, use_radial_filters, conv_clamp, ...
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_ws = num_layers + 2
        self.num_layers, self.num_critical = num_layers, num_critical
        self.margin_size, self.output_scale, self.num_fp16_res, self.square = margin_size, output_scale, num_fp16_res, square
        sch = layer_schedule(img_resolution, channel_base, channel_max, num_layers, num_critical, first_cutoff,
                             first_stopband, last_stopband_rel, margin_size, img_channels)
        self.schedule = sch
        cut, sr, hw, sizes, ch = sch["cutoffs"], sch["sampling_rates"], sch["half_widths"], sch["sizes"], sch["channels"]
        self.input = self.input_class(w_dim=w_dim, channels=int(ch[0]), size=_size2(sizes[0], square),
                                      sampling_rate=sr[0], bandwidth=cut[0])
        self.layer_names: list[str] = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = self.layer_class(
                w_dim=w_dim, is_torgb=idx == num_layers, is_critically_sampled=idx >= num_layers - num_critical,
                use_fp16=bool(sr[idx] * (2 ** num_fp16_res) > img_resolution),
                in_channels=int(ch[prev]), out_channels=int(ch[idx]),
                in_size=_size2(sizes[prev], square), out_size=_size2(sizes[idx], square),
                in_sampling_rate=int(sr[prev]), out_sampling_rate=int(sr[idx]),
                in_cutoff=cut[prev], out_cutoff=cut[idx], in_half_width=hw[prev], out_half_width=hw[idx],
                **layer_kwargs)
            name = f"L{idx}_{layer.out_size[0]}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def layers(self) -> list[nn.Module]:
        return [getattr(self, n) for n in self.layer_names]

    def style_layer_names(self, include_torgb: bool = False) -> list[str]:
        """S-space layer names ('L0_36_512', ...), ToRGB (the last) only if asked. ws index = position + 1."""
        return self.layer_names if include_torgb else self.layer_names[:-1]

    def style_layers(self, include_torgb: bool = True) -> dict[str, nn.Module]:
        return {n: getattr(self, n) for n in self.style_layer_names(include_torgb)}

    def ws_index(self) -> dict[str, int]:
        """name -> index of its w: 'input' -> 0, layer i -> i + 1."""
        return {"input": 0, **{n: i + 1 for i, n in enumerate(self.layer_names)}}

    def compute_styles(self, ws, include_torgb: bool = True, **kw) -> dict[str, torch.Tensor]:
        """ws [N, num_ws, w_dim] -> {layer name: s [N, C_in]} as `forward` computes them (torgb gain included)."""
        ws = ws.to(torch.float32).unbind(dim=1)
        names = self.style_layer_names(include_torgb)
        return {n: self.layer_styles(i, n, getattr(self, n), ws[i + 1], **kw)
                for i, n in enumerate(self.layer_names) if n in names}

    def layer_styles(self, idx: int, name: str, layer: nn.Module, w: torch.Tensor, **kw) -> torch.Tensor:
        """The style code of layer `idx` from its w. Override point for subclasses (e.g. + scale_affine)."""
        s = layer.affine(w)
        return s * layer.torgb_gain if layer.is_torgb else s

    def forward(self, ws, noise_mode: str = "const", force_fp32: bool = True, dtype=None, transform=None,
                styles: dict | None = None, style_offsets: dict | None = None, impl: str = "auto",
                update_emas: bool = False, **kw):
        """Synthesize images.

        Args: ws [N, num_ws, w_dim]; noise_mode accepted and ignored (StyleGAN3 has no noise);
        dtype None (fp32, default) or 'bf16'/'fp16'; transform None (identity buffer), [3,3] or [N,3,3] for the
        Fourier input; styles {layer: s} replaces, style_offsets {layer: ds} adds to the per-layer styles;
        impl ops path (default: 'auto'); other kwargs go to `layer_styles`.
        Returns float32 [N, img_channels, H, W].
        """
        assert ws.ndim == 3 and ws.shape[1:] == (self.num_ws, self.w_dim), (ws.shape, self.num_ws, self.w_dim)
        dt = resolve_dtype(dtype)
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0], transform=transform)
        # fast inference: layers pass zero-padded channel counts (a multiple of CHANNEL_MULTIPLE) between them;
        # hooks see the layers' own shapes
        hooked = workspace.observed(self)
        fast = resolve_impl(impl) == "fast" and not torch.is_grad_enabled() and not update_emas and not hooked
        multiple = CHANNEL_MULTIPLE if fast else 1
        with workspace.workspace(self, hooked):  # layer outputs reuse the blocks of the layers before them
            for idx, name in enumerate(self.layer_names):
                layer = getattr(self, name)
                if styles is not None and name in styles:
                    s = styles[name].to(torch.float32)
                else:
                    s = self.layer_styles(idx, name, layer, ws[idx + 1], **kw)
                if style_offsets is not None and name in style_offsets:
                    s = s + style_offsets[name].to(s.dtype)
                y = layer(x, styles=s, dtype=dt, impl=impl, update_emas=update_emas, channel_multiple=multiple)
                workspace.recycle(x)  # read by this layer only
                x = y
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)

    def extra_repr(self) -> str:
        return f"img_resolution={self.img_resolution}, square={self.square}, num_ws={self.num_ws}"


class Generator(GeneratorBase):
    """StyleGAN3 generator (T or R config; square or StyleGAN-Human rectangular)."""

    arch = "stylegan3"
    synthesis_class = SynthesisNetwork

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 square: bool = True,  # False: StyleGAN-Human 2:1
                 mapping_kwargs: dict | None = None,  # MappingNetwork kwargs (num_layers 2 by default)
                 **synthesis_kwargs):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels, self.square = img_resolution, img_channels, square
        self.synthesis = self.synthesis_class(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                              square=square, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        mkw = dict(num_layers=2, w_avg_beta=0.998)
        mkw.update(mapping_kwargs or {})
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mkw)

    @property
    def variant(self) -> str:
        """'r' (1x1 kernels, radial filters) or 't'."""
        l0 = getattr(self.synthesis, self.synthesis.layer_names[0])
        return "r" if l0.conv_kernel == 1 else "t"
