"""Tiny random checkpoints in upstream key layouts for the upscale tests (no weights are downloaded).

Real-ESRGAN's RRDBNet (basicsr `rrdbnet_arch`): conv_first, body.N.rdb{1,2,3}.conv{1..5}, conv_body, conv_up1,
conv_up2, conv_hr, conv_last; x2plus/x1 feed a pixel-unshuffled input (12 / 48 channels). SRVGGNetCompact:
body.0 conv, body.1 PReLU, (conv, PReLU) x num_conv, last conv to 3 * scale^2 channels (pixel shuffle).
Weights are drawn from a local generator, scaled like a fan-in init so outputs are neither flat nor saturated.
"""
from __future__ import annotations

import torch


def _conv(g, sd, name, cin, cout, k=3, gain=1.0, bias=0.0):
    std = gain / (cin * k * k) ** 0.5
    sd[f"{name}.weight"] = torch.randn((cout, cin, k, k), generator=g) * std
    sd[f"{name}.bias"] = torch.randn((cout,), generator=g) * 0.01 + bias


def rrdbnet_state_dict(*, in_unshuffle: int = 1, nf: int = 8, nb: int = 1, gc: int = 32, seed: int = 0):
    """Real-ESRGAN RRDBNet keys; in_unshuffle 1 -> x4plus, 2 -> x2plus (12-ch input), 4 -> x1 (48-ch).

    spandrel fixes the growth channels at 32 (as every released RRDBNet has), so gc must stay 32."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv(g, sd, "conv_first", 3 * in_unshuffle ** 2, nf)
    for b in range(nb):
        for r in (1, 2, 3):
            for i in range(1, 6):
                cin = nf + (i - 1) * gc
                cout = gc if i < 5 else nf
                _conv(g, sd, f"body.{b}.rdb{r}.conv{i}", cin, cout, gain=1.4)
    _conv(g, sd, "conv_body", nf, nf)
    _conv(g, sd, "conv_up1", nf, nf, gain=1.4)
    _conv(g, sd, "conv_up2", nf, nf, gain=1.4)
    _conv(g, sd, "conv_hr", nf, nf, gain=1.4)
    _conv(g, sd, "conv_last", nf, 3, gain=0.5, bias=0.5)
    return sd


def compact_state_dict(*, nf: int = 8, num_conv: int = 2, scale: int = 4, seed: int = 0):
    """SRVGGNetCompact (realesr-general-x4v3 / animevideov3 layout)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv(g, sd, "body.0", 3, nf)
    sd["body.1.weight"] = torch.full((nf,), 0.25)
    for i in range(num_conv):
        _conv(g, sd, f"body.{2 * i + 2}", nf, nf, gain=1.4)
        sd[f"body.{2 * i + 3}.weight"] = torch.full((nf,), 0.25)
    _conv(g, sd, f"body.{2 * num_conv + 2}", nf, 3 * scale * scale, gain=0.3)
    return sd


def realesrgan_checkpoint(sd):
    """The wrapper Real-ESRGAN's release files use (EMA weights preferred; `params` holds different numbers)."""
    return {"params_ema": sd, "params": {k: torch.zeros_like(v) for k, v in sd.items()}}


def tiny_restoreformer(seed: int = 0):
    """A small random RestoreFormer (a face model spandrel detects); 512 px in/out, few channels (GroupNorm needs multiples of 32)."""
    from spandrel.architectures.RestoreFormer import RestoreFormer
    torch.manual_seed(seed)  # nn init inside a third-party constructor: tests only
    model = RestoreFormer(n_embed=16, embed_dim=32, ch=32, ch_mult=(1, 1, 1, 1, 1, 1), num_res_blocks=1,
                          z_channels=32, head_size=2)
    return model.state_dict()
