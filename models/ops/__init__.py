"""Shared GAN kernels (StyleGAN2/3, UnitedHuman, InsetGAN). One public function per op, each with
`impl='ref' | 'fast' | 'auto'`: 'ref' is the plain-PyTorch oracle, 'fast' the fused path, 'auto' picks
`$HUMANGEN_OPS_IMPL` (default 'fast'). Specs (activations, filter/padding rules) live in `_spec.py`, read by both.
`workspace` plans memory for repeated inference; `frozen_weights()` reuses weight-derived tensors over the steps of
an optimisation that keeps the generator fixed."""
from ._spec import ACTIVATIONS, IMPLS, filter_size, needs_grad, parse_padding, parse_scaling, resolve_impl, setup_filter
from .bias_act import bias_act
from .conv2d_resample import conv2d_resample
from .filtered_lrelu import filtered_lrelu
from .modulated_conv import modulated_conv2d, modulated_conv2d_bias_act, modulated_conv2d_sg3
from .upfirdn2d import downsample2d, filter2d, upfirdn2d, upsample2d
from . import _workspace as workspace
from ._frozen import frozen_weights

__all__ = [
    "ACTIVATIONS", "IMPLS", "bias_act", "conv2d_resample", "downsample2d", "filter2d", "filter_size",
    "filtered_lrelu", "frozen_weights", "modulated_conv2d", "modulated_conv2d_bias_act", "modulated_conv2d_sg3",
    "parse_padding", "parse_scaling", "resolve_impl", "setup_filter", "upfirdn2d", "upsample2d", "workspace",
]
