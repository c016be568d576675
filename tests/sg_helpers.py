"""Test helpers for the StyleGAN capability: tiny random generators and an official-format NVIDIA pickle writer
(persistent-object records carrying module source, exactly the structure `torch_utils.persistence` writes)."""
from __future__ import annotations

import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import torch

TINY_SG2 = {"z_dim": 16, "c_dim": 0, "w_dim": 16, "img_resolution": 16, "img_channels": 3,
            "mapping_kwargs": {"num_layers": 2},
            "synthesis_kwargs": {"channel_base": 128, "channel_max": 16, "num_fp16_res": 0, "conv_clamp": 256,
                                 "architecture": "skip"}}
TINY_SG2_RECT = dict(TINY_SG2, square=False)
TINY_SG2_RECT_32 = dict(TINY_SG2_RECT, img_resolution=32)  # 8 ws (room for layer ranges like 0-6)
TINY_SG3 = {"z_dim": 16, "c_dim": 0, "w_dim": 16, "img_resolution": 16, "img_channels": 3,
            "mapping_kwargs": {"num_layers": 2}, "channel_base": 256, "channel_max": 16, "num_fp16_res": 0,
            "conv_clamp": 256, "magnitude_ema_beta": 0.999}


def tiny_generator(kwargs=TINY_SG2, seed=0):
    """A random generator with every zero/one-initialised tensor randomised (so a dropped tensor is visible)."""
    from humangen.models import build_generator
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        G = build_generator(kwargs)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, t in list(G.named_parameters()) + list(G.named_buffers()):
            if name.endswith(("bias", "noise_strength", "w_avg", "magnitude_ema")):
                t.add_(0.2 * torch.randn(t.shape, generator=g))
                if name.endswith("magnitude_ema"):
                    t.abs_().add_(0.5)
    return G


MARKER_SRC = '''
import pathlib
pathlib.Path({marker!r}).write_text("embedded source was executed")
class Generator:  # the real file would define the network here
    pass
'''


def _fake_modules():
    tu = types.ModuleType("torch_utils")
    tup = types.ModuleType("torch_utils.persistence")
    dn = types.ModuleType("dnnlib")
    dnu = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):  # never called in tests that load safely
        raise AssertionError("fake reconstruct called")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    tup._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class EasyDict(dict):
        pass
    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    dnu.EasyDict = EasyDict
    tu.persistence = tup
    dn.util = dnu
    dn.EasyDict = EasyDict
    return {"torch_utils": tu, "torch_utils.persistence": tup, "dnnlib": dn, "dnnlib.util": dnu}


class _Persistent:
    def __init__(self, meta, reconstruct):
        self.meta, self.reconstruct = meta, reconstruct

    def __reduce__(self):
        return (self.reconstruct, (self.meta,), None)


def _easy(obj, EasyDict):
    if isinstance(obj, dict):
        return EasyDict({k: _easy(v, EasyDict) for k, v in obj.items()})
    return obj


def official_pickle_bytes(G, module_src: str, *, keys=("G", "D", "G_ema"), protocol=4, extra=None) -> bytes:
    """Pickle `G` the way NVIDIA's training loop does: {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}
    with every module a persistent record (module_src, class_name, state with _init_kwargs as EasyDict)."""
    mods = _fake_modules()
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        rec = mods["torch_utils.persistence"]._reconstruct_persistent_obj
        EasyDict = mods["dnnlib.util"].EasyDict

        def wrap(m, kwargs=None):
            state = {
                "training": False,
                "_parameters": OrderedDict((k, v) for k, v in m._parameters.items()),
                "_buffers": OrderedDict((k, v) for k, v in m._buffers.items()),
                "_non_persistent_buffers_set": set(),
                "_backward_hooks": OrderedDict(), "_forward_hooks": OrderedDict(),
                "_forward_pre_hooks": OrderedDict(), "_state_dict_hooks": OrderedDict(),
                "_load_state_dict_pre_hooks": OrderedDict(),
                "_modules": OrderedDict((k, wrap(c)) for k, c in m._modules.items()),
                "_init_args": (),
                "_init_kwargs": _easy(kwargs or {}, EasyDict),
                "some_numpy_attr": np.asarray([36, 18]), "some_rate": np.float64(16.0),
            }
            meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": type(m).__name__,
                    "state": state}
            return _Persistent(meta, rec)

        top = {}
        for k in keys:
            top[k] = wrap(G, G.init_kwargs)
        top["augment_pipe"] = None
        top["training_set_kwargs"] = _easy({"path": "x.zip", "resolution": G.img_resolution}, EasyDict)
        top.update(extra or {})
        return pickle.dumps(top, protocol=protocol)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def exec_like_official_loader(data: bytes):
    """What NVIDIA's loader does with the file (exec of embedded source); used only to prove the test pickle's
    payload is live. Only ever called on pickles written by these tests."""
    class U(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("torch_utils.persistence", "_reconstruct_persistent_obj"):
                def rec(meta):
                    ns = {}
                    exec(compile(meta["module_src"], "<embedded>", "exec"), ns)  # noqa: S102 - the point of the test
                    return meta["class_name"]
                return rec
            if module == "dnnlib.util":
                return dict
            return super().find_class(module, name)
    import io
    return U(io.BytesIO(data)).load()
