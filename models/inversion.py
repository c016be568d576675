"""Real-image inversion for StyleGAN generators: latent projection and pivotal tuning (PTI).

Follows StyleGAN-Human's `pti/` (gan.md §9.2–§9.3) with two deliberate differences:
- the configured learning rate is the peak learning rate actually used (upstream sets 8e-3 on Adam and then
  overwrites it with its schedule's 0.01; our default is that effective 0.01);
- the distance is LPIPS from `models.lpips` (VGG or AlexNet, weights from the `lpips` model folder) instead of
  NVIDIA's downloaded TorchScript VGG16. Both images are area-resized to 256×256 first, as upstream.

Both loops take a `callback(step, total, info)` that may raise to stop (progress and interrupt), and a seed:
the same seed gives the same result.

Precision (`PRECISIONS`, shared with InsetGAN): 'fp32' is exact (gradients match the reference ops); 'bf16' runs
the generator's convolutions and the LPIPS network in bfloat16 while latents, weights, optimiser state and losses
stay float32. On CPUs with AMX or AVX512-BF16 (and on GPUs) a step is 2-4x faster than the fp32 reference path; the
latent gradient agrees with fp32's to a cosine above 0.995 (about 2 % relative on the bench generator), so the
optimisation follows a slightly different path. On CPUs without bf16 units it is emulated, 20-50x slower than fp32
(`warn_if_emulated`).
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..utils.errors import HumanGenError
from .ops import frozen_weights

PRECISIONS = ("fp32", "bf16")


@dataclass
class ProjectionConfig:
    num_steps: int = 450
    space: str = "w"  # "w" (one vector broadcast to all layers) or "w+" (one per layer)
    learning_rate: float = 0.01
    lr_rampdown_length: float = 0.25
    lr_rampup_length: float = 0.05
    w_avg_samples: int = 600
    w_avg_seed: int = 123
    initial_noise_factor: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5
    optimize_noise: bool = True
    seed: int = 0
    precision: str = "fp32"  # see PRECISIONS


@dataclass
class ProjectionResult:
    ws: torch.Tensor  # [1, num_ws, w_dim]
    noise: dict[str, torch.Tensor] = field(default_factory=dict)
    distances: list[float] = field(default_factory=list)


def autograd_ready(module):
    """`module` itself, or a copy when it holds inference tensors (made under `torch.inference_mode()`, which is how
    ComfyUI runs every node): those cannot be saved for backward. Call inside `optimisation_mode()`."""
    if isinstance(module, torch.nn.Module) and any(t.is_inference() for t in (*module.parameters(), *module.buffers())):
        return copy.deepcopy(module)
    return module


def normal_tensor(t: torch.Tensor) -> torch.Tensor:
    """A clone usable by autograd when `t` is an inference tensor."""
    return t.clone() if t.is_inference() else t


def optimisation_mode():
    """Autograd on, even inside ComfyUI's `torch.inference_mode()` node execution."""
    import contextlib
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode(False))
    stack.enter_context(torch.enable_grad())
    return stack


def synthesis_dtype(precision: str) -> str | None:
    """The synthesis `dtype` for a precision in PRECISIONS (None: float32)."""
    if precision not in PRECISIONS:
        raise HumanGenError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return None if precision == "fp32" else precision


def native_bf16(device) -> bool:
    """Whether bf16 convolutions run on bf16 hardware here: a CUDA GPU that supports bf16, or a CPU with
    AVX512-BF16 or AMX. Elsewhere they are emulated, 20-50x slower than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        return any(bool(getattr(cpu, probe, lambda: False)())
                   for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


def warn_if_emulated(precision: str, device, node: str) -> None:
    """Log that bf16 was asked for where it is slower than fp32 (the nodes call it once, before their loop; the
    run still goes ahead)."""
    if synthesis_dtype(precision) is not None and not native_bf16(device):
        import logging
        logging.getLogger("humangen").warning(
            "%s: precision bf16 on %s without bf16 units is emulated and far slower than fp32 (steps took 20-50x "
            "as long on an AVX2 CPU); choose fp32 here",
            node, torch.device(device).type)


def perceptual_scope(precision: str, device: torch.device):
    """Where the LPIPS distance runs: under bf16 autocast for 'bf16' (its convolutions in bfloat16), else as is.
    The generator is not run under autocast: it casts for itself and keeps its demodulation in float32."""
    if synthesis_dtype(precision) is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam (betas 0.9, 0.999, as upstream) as one fused kernel per tensor where PyTorch has one (CPU and CUDA
    floats): the per-tensor default makes five temporaries per weight per step, a fifth of a PTI step on a CPU.
    Same update rule; results agree with the default to float rounding."""
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), fused=fused or None)


def learning_rate_at(step: int, num_steps: int, peak: float, rampdown: float, rampup: float) -> float:
    """Linear ramp-up over the first `rampup` fraction, cosine ramp-down over the last `rampdown` fraction."""
    t = step / num_steps
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return peak * ramp * min(1.0, t / rampup)


def resize_for_distance(img: torch.Tensor, size: int = 256) -> torch.Tensor:
    """Area-resize [N,3,H,W] to size×size when larger (as upstream; 2:1 images are squashed equally)."""
    if img.shape[2] > size or img.shape[3] > size:
        img = F.adaptive_avg_pool2d(img, (size, size)) if img.shape[2] % size == 0 and img.shape[3] % size == 0 \
            else F.interpolate(img, size=(size, size), mode="area")
    return img


def noise_regularization(buffers: list[torch.Tensor]) -> torch.Tensor:
    """Penalise spatial autocorrelation of each noise map at every scale of a 2× average-pool pyramid."""
    reg = 0.0
    for v in buffers:
        noise = v[None, None]
        while True:
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8 or noise.shape[3] < 2:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return reg


def mapped_mean(G, samples: int, seed: int) -> tuple[torch.Tensor, float]:
    """Mean W of `samples` mapped `RandomState(seed)` latents and its scalar std (upstream `w_std`)."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(samples, G.z_dim)).float()
    c = torch.zeros(samples, G.c_dim) if G.c_dim else None
    with torch.no_grad():
        w = G.mapping(z, c)[:, :1, :].float()
    w_avg = w.mean(0, keepdim=True)
    w_std = float(((w - w_avg).square().sum() / samples) ** 0.5)
    return w_avg, w_std


def _check_target(G, target: torch.Tensor) -> torch.Tensor:
    if target.ndim != 4 or target.shape[0] != 1 or target.shape[1] != G.img_channels:
        raise HumanGenError(f"projection target must be [1, {G.img_channels}, H, W] in [-1,1], got {tuple(target.shape)}")
    return target


def _noise_buffers(G) -> dict[str, torch.Tensor]:
    return {name: buf for name, buf in G.synthesis.named_buffers() if "noise_const" in name}


def project(G, target: torch.Tensor, distance, config: ProjectionConfig = ProjectionConfig(),
            callback=None) -> ProjectionResult:
    """Optimise a W (or W+) latent so that `G.synthesis(ws)` matches `target` [1,3,H,W] in [-1,1].

    `distance(a, b)` compares two [1,3,256,256] images (LPIPS). G is not modified (a copy's noise is optimised).
    """
    with optimisation_mode(), frozen_weights():  # the generator is frozen: its weight-derived tensors are reused
        return _project(G, normal_tensor(target), autograd_ready(distance), config, callback)


def _project(G, target, distance, config, callback):
    if config.space not in ("w", "w+"):
        raise HumanGenError(f"projection space must be 'w' or 'w+', got {config.space!r}")
    dtype = synthesis_dtype(config.precision)
    target = _check_target(G, target)
    G = copy.deepcopy(G).eval().requires_grad_(False)
    device = next(G.parameters()).device
    target = target.to(device, torch.float32)
    w_avg, w_std = mapped_mean(G, config.w_avg_samples, config.w_avg_seed)
    w_avg = w_avg.to(device)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)

    noise_bufs = _noise_buffers(G) if config.optimize_noise else {}
    for buf in noise_bufs.values():
        buf[:] = torch.randn(buf.shape, generator=gen).to(buf)
        buf.requires_grad = True
    w_opt = (w_avg.repeat(1, G.num_ws, 1) if config.space == "w+" else w_avg.clone()).requires_grad_(True)
    optimizer = adam([w_opt, *noise_bufs.values()], lr=config.learning_rate)

    target_small = resize_for_distance(target)
    distances = []
    for step in range(config.num_steps):
        t = step / config.num_steps
        w_noise_scale = w_std * config.initial_noise_factor * max(0.0, 1.0 - t / config.noise_ramp_length) ** 2
        lr = learning_rate_at(step, config.num_steps, config.learning_rate, config.lr_rampdown_length,
                              config.lr_rampup_length)
        for group in optimizer.param_groups:
            group["lr"] = lr
        w_noise = torch.randn(w_opt.shape, generator=gen).to(w_opt) * w_noise_scale
        ws = w_opt + w_noise
        if config.space == "w":
            ws = ws.repeat(1, G.num_ws, 1)
        synth = G.synthesis(ws, noise_mode="const", dtype=dtype)
        if synth.shape[2:] != target.shape[2:]:  # any image size: compare at the generator's size
            target = F.interpolate(target, size=synth.shape[2:], mode="area")
            target_small = resize_for_distance(target)
        with perceptual_scope(config.precision, device):
            dist = distance(resize_for_distance(synth), target_small).sum().float()
        loss = dist + noise_regularization(list(noise_bufs.values())) * config.regularize_noise_weight
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for buf in noise_bufs.values():
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()
        distances.append(float(dist.detach()))
        if callback is not None:
            callback(step + 1, config.num_steps, {"distance": distances[-1], "loss": float(loss.detach())})

    ws = w_opt.detach()
    if config.space == "w":
        ws = ws.repeat(1, G.num_ws, 1)
    return ProjectionResult(ws.cpu(), {k: v.detach().cpu() for k, v in noise_bufs.items()}, distances)


@dataclass
class PTIConfig:
    max_steps: int = 350
    learning_rate: float = 5e-4
    lpips_threshold: float = 0.04
    mse_weight: float = 1.0
    lpips_weight: float = 1.0
    precision: str = "fp32"  # see PRECISIONS


@dataclass
class PTIResult:
    generator: torch.nn.Module
    losses: list[float]
    lpips: list[float]
    steps: int


def pivotal_tuning(G, ws_pivot: torch.Tensor, target: torch.Tensor, lpips, config: PTIConfig = PTIConfig(),
                   callback=None) -> PTIResult:
    """Fine-tune a copy of G (all parameters) so that `G.synthesis(ws_pivot)` reproduces `target` [1,3,H,W].

    Loss = MSE + LPIPS (upstream: alex), Adam; stops early once LPIPS <= `lpips_threshold`. G itself is untouched.
    """
    with optimisation_mode():
        return _pivotal_tuning(G, normal_tensor(ws_pivot), normal_tensor(target), autograd_ready(lpips), config,
                               callback)


def _pivotal_tuning(G, ws_pivot, target, lpips, config, callback):
    dtype = synthesis_dtype(config.precision)
    target = _check_target(G, target)
    tuned = copy.deepcopy(G).train().requires_grad_(True)
    device = next(tuned.parameters()).device
    target = target.to(device, torch.float32)
    ws_pivot = ws_pivot.to(device, torch.float32).detach()
    if ws_pivot.ndim != 3 or ws_pivot.shape[1:] != (G.num_ws, G.w_dim):
        raise HumanGenError(f"PTI pivot must be [1, {G.num_ws}, {G.w_dim}], got {tuple(ws_pivot.shape)}")
    optimizer = adam(tuned.parameters(), lr=config.learning_rate)
    losses, lpips_values = [], []
    steps = 0
    target_small = resize_for_distance(target)  # one tensor for every step: LPIPS keeps its features
    for step in range(config.max_steps):
        synth = tuned.synthesis(ws_pivot, noise_mode="const", dtype=dtype)
        if synth.shape != target.shape:
            target = F.interpolate(target, size=synth.shape[2:], mode="area")
            target_small = resize_for_distance(target)
        mse = F.mse_loss(synth, target)
        with perceptual_scope(config.precision, device):
            lp = lpips(resize_for_distance(synth), target_small).mean().float()
        lpips_values.append(float(lp.detach()))
        if lpips_values[-1] <= config.lpips_threshold:
            break
        loss = config.mse_weight * mse + config.lpips_weight * lp
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        steps = step + 1
        if callback is not None:
            callback(step + 1, config.max_steps, {"loss": losses[-1], "lpips": lpips_values[-1]})
    tuned.eval().requires_grad_(False)
    return PTIResult(tuned, losses, lpips_values, steps)
