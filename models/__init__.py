"""Pure PyTorch/diffusers model code. Never imports ComfyUI (a test checks).

GAN entry points: `build_generator(init_kwargs, state_dict)` and `load_generator(path)`."""


def build_generator(init_kwargs, state_dict=None, **kw):
    """See models/gan_registry.py."""
    from .gan_registry import build_generator as _b
    return _b(init_kwargs, state_dict, **kw)


def load_generator(path, **kw):
    """Load a generator from a .pkl (NVIDIA, safely), .safetensors or .pt/.pth file. See utils/checkpoints.py."""
    from ..utils.checkpoints import load_generator as _l
    return _l(path, **kw)


__all__ = ["build_generator", "load_generator"]
