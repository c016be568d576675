"""Pure PyTorch/diffusers model code. Never imports ComfyUI (a test checks).

GAN entry points: `build_generator(init_kwargs, state_dict)` and `load_generator(path)`;
continuous (UnitedHuman) rendering: `render_patch(G, ws, transform)` and `render_canvas(G, ws, size, ...)`."""


def build_generator(init_kwargs, state_dict=None, **kw):
    """See models/gan_registry.py."""
    from .gan_registry import build_generator as _b
    return _b(init_kwargs, state_dict, **kw)


def load_generator(path, **kw):
    """Load a generator from a .pkl (NVIDIA, safely), .safetensors or .pt/.pth file. See models/gan_registry.py."""
    from .gan_registry import load_generator as _l
    return _l(path, **kw)


def render_patch(G, ws, transform):
    """Continuous (AnyRes/UnitedHuman) patch at a 3x3 transform. See models/continuous.py."""
    from .continuous import render_patch as _r
    return _r(G, ws, transform)


def render_canvas(G, ws, size, **kw):
    """Continuous canvas of any size, rendered patch by patch. See models/continuous.py."""
    from .continuous import render_canvas as _r
    return _r(G, ws, size, **kw)


__all__ = ["build_generator", "load_generator", "render_patch", "render_canvas"]
