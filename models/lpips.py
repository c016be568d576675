"""LPIPS perceptual distance (Zhang et al. 2018, v0.1) without downloads.

The `lpips` package ships only the linear heads (`lpips/weights/v0.1/{alex,vgg}.pth`); its backbones are the
torchvision ImageNet models it would normally download. Here the backbones are plain-torch copies of the torchvision
`features` stacks (same parameter names, so the torchvision checkpoint files load unchanged), read from a file the
user puts in the `lpips` model folder:

| net  | backbone file (torchvision's name)  | upstream |
|------|-------------------------------------|----------|
| alex | `alexnet-owt-7be5be79.pth`          | https://download.pytorch.org/models/alexnet-owt-7be5be79.pth |
| vgg  | `vgg16-397923af.pth`                | https://download.pytorch.org/models/vgg16-397923af.pth |

Inputs are images in [-1, 1], [B, 3, H, W]; the result is [B] (or [B,1,H,W] with `spatial=True` before averaging).

An optimisation compares a changing image with the same target every step (projection, PTI): the second image's
features are kept between calls while it is the same unchanged tensor (identity, version counter), needs no grad,
and the network, its weights and the autocast state are unchanged, as NVIDIA's projector computes its target
features once. That is a third of an LPIPS step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.errors import HumanGenError


@dataclass(frozen=True)
class BackboneSpec:
    file_name: str
    url: str
    layers: tuple  # torchvision `features` layout: ("conv", cin, cout, k, stride, pad) | ("relu",) | ("pool", k, s)
    taps: tuple[int, ...]  # feature indices after which LPIPS taps an activation (the ReLU outputs)
    channels: tuple[int, ...]


def _vgg16_layers():
    layers, cin = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            layers.append(("pool", 2, 2))
        else:
            layers += [("conv", cin, v, 3, 1, 1), ("relu",)]
            cin = v
    return tuple(layers)


BACKBONES: dict[str, BackboneSpec] = {
    "alex": BackboneSpec(
        "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        (("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2), ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool", 3, 2),
         ("conv", 192, 384, 3, 1, 1), ("relu",), ("conv", 384, 256, 3, 1, 1), ("relu",),
         ("conv", 256, 256, 3, 1, 1), ("relu",)),
        taps=(1, 4, 7, 9, 11), channels=(64, 192, 384, 256, 256)),
    "vgg": BackboneSpec(
        "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
        _vgg16_layers(), taps=(3, 8, 15, 22, 29), channels=(64, 128, 256, 512, 512)),
}


class Backbone(nn.Module):
    """The torchvision `features` stack (parameter names `features.<i>.weight/bias`), tapped at the LPIPS layers."""

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        mods = []
        for layer in spec.layers[: spec.taps[-1] + 1]:
            if layer[0] == "conv":
                _, cin, cout, k, s, p = layer
                mods.append(nn.Conv2d(cin, cout, k, stride=s, padding=p))
            elif layer[0] == "relu":
                mods.append(nn.ReLU(inplace=False))
            else:
                mods.append(nn.MaxPool2d(layer[1], layer[2]))
        self.features = nn.Sequential(*mods)
        self.taps = spec.taps
        # oneDNN's own layout: NCHW weights are copied into it on every call, forward and backward (LPIPS vgg
        # forward + backward 8 % faster); loading a state dict and .to(device) keep it
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, mod in enumerate(self.features):
            x = mod(x)
            if i in self.taps:
                outs.append(x)
        return outs


class LPIPS(nn.Module):
    """LPIPS v0.1 distance. Use `load_lpips(net, models_dir)` to build one with real weights."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in BACKBONES:
            raise ValueError(f"LPIPS net must be one of {sorted(BACKBONES)}, got {net!r}")
        spec = BACKBONES[net]
        self.net_name = net
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.net = Backbone(spec)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in spec.channels)
        self.requires_grad_(False)
        self.eval()

    def min_side(self) -> int:
        """The smallest image side every tapped layer of the backbone still produces output for."""
        def fits(n: int) -> bool:
            for layer in BACKBONES[self.net_name].layers[: self.net.taps[-1] + 1]:
                if layer[0] == "conv":
                    _, _, _, k, s, p = layer
                    n = (n + 2 * p - k) // s + 1
                elif layer[0] != "relu":
                    n = (n - layer[1]) // layer[2] + 1
                if n < 1:
                    return False
            return True
        return next(n for n in range(1, 1024) if fits(n))

    def forward(self, x: torch.Tensor, y: torch.Tensor, spatial: bool = False) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects two [B,3,H,W] images of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
        if min(x.shape[2:]) < self.min_side():
            raise HumanGenError(f"LPIPS ({self.net_name}) needs images at least {self.min_side()} pixels on each "
                                f"side, got {x.shape[3]}x{x.shape[2]}. Fix: use the vgg backbone or a larger "
                                f"generator/image.")
        fx = self._features(x)
        fy = self._constant_features(y)
        total = 0
        for a, b, lin in zip(fx, fy, self.lins):
            d = lin((a - b) ** 2)
            total = total + (F.interpolate(d, size=x.shape[2:], mode="bilinear", align_corners=False)
                             if spatial else d.mean((2, 3)))
        return total if spatial else total.view(-1)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for f in self.net((x - self.shift) / self.scale)]

    def _constant_features(self, y: torch.Tensor) -> list[torch.Tensor]:
        """`_features(y)`, reused while y, the weights and the autocast state are what they were (module docstring)."""
        tensors = [y, *self.parameters(), *self.buffers()]
        if any(t.requires_grad or t.is_inference() for t in tensors):
            return self._features(y)
        device = y.device.type
        autocast = torch.is_autocast_enabled(device)
        key = (tuple((t._version, t.data_ptr(), t.dtype) for t in tensors), autocast,
               torch.get_autocast_dtype(device) if autocast else None)
        kept = getattr(self, "_kept", None)
        if kept is not None and kept[0] is y and kept[1] == key:
            return kept[2]
        features = self._features(y)
        self._kept = (y, key, features)  # holding y keeps its id from being reused by another tensor
        return features


def linear_heads_path(net: str) -> str:
    import lpips  # only for the path of its bundled linear-layer weights (tiny, shipped in the wheel)
    return os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", f"{net}.pth")


def load_lpips(net: str, models_dirs: list[str] | str, *, device=None) -> LPIPS:
    """LPIPS with the bundled linear heads and the backbone from the first of `models_dirs` that has it."""
    if isinstance(models_dirs, str):
        models_dirs = [models_dirs]
    model = LPIPS(net)
    spec = BACKBONES[net]
    candidates = [os.path.join(d, spec.file_name) for d in models_dirs]
    path = next((p for p in candidates if os.path.isfile(p)), None)
    if path is None:
        raise HumanGenError(
            f"LPIPS ({net}) needs the backbone weights file {spec.file_name!r} in the 'lpips' model folder "
            f"({', '.join(models_dirs)}). Download it from {spec.url} (BSD-3-Clause, torchvision) and put it there.")
    from ..utils.checkpoints import check_weights, load_torch_file
    backbone = load_torch_file(path, what=f"LPIPS {net} backbone")
    if not isinstance(backbone, dict):
        raise HumanGenError(f"LPIPS backbone {spec.file_name} holds a {type(backbone).__name__}, not a torchvision "
                            f"{net} state dict. Fix: download it again from {spec.url}.")
    features = {k: v for k, v in backbone.items() if isinstance(k, str) and k.startswith("features.")}
    check_weights(features.items(), f"LPIPS backbone {spec.file_name}", fix=f"download it again from {spec.url}.")
    try:
        missing, unexpected = model.net.load_state_dict(features, strict=False)
    except RuntimeError as exc:  # tensor shapes of another network
        raise HumanGenError(f"LPIPS backbone {spec.file_name} is not a torchvision {net} checkpoint (tensor shapes "
                            f"differ). Fix: download it again from {spec.url}.") from exc
    if missing:
        raise HumanGenError(f"LPIPS backbone {spec.file_name} is not a torchvision {net} checkpoint: missing "
                            f"{missing[:4]}. Fix: download it again from {spec.url}.")
    heads = torch.load(linear_heads_path(net), map_location="cpu", weights_only=True)
    for i, lin in enumerate(model.lins):
        lin.weight.data.copy_(heads[f"lin{i}.model.1.weight"])
    if device is not None:
        model.to(device)
    return model
