"""HumanSD generation: text → embeddings, skeleton (+ init image) → VAE latents, sampling, decoding.

`generate()` is the one entry point the node calls. Components live on the offload device and are moved to the
compute device only while used (`Offloader`, which in ComfyUI hands them to the host's memory manager). Weights stay
fp32; the UNet runs in fp32 or under bf16 autocast (never fp16: SD2's attention overflows in half precision), so
switching precision never degrades the loaded model. VAE and text encoder run in fp32.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from . import sampler as S
from .loader import HumanSDModel

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class Offloader:
    """Moves a module to the compute device for the duration of `use(module)`.

    `load(module) -> device` lets a host's memory manager place the module (ComfyUI: ModelPatcher +
    load_models_gpu). When `managed` is True the host also decides when to evict it, so nothing is moved back here;
    otherwise the module returns to `offload_device` when the block ends (also on errors and interrupts)."""

    def __init__(self, device="cpu", *, offload_device="cpu", load: Callable | None = None, managed: bool = False):
        self.device = torch.device(device)
        self.offload_device = torch.device(offload_device)
        self._load = load
        self.managed = managed

    @contextlib.contextmanager
    def use(self, module):
        if self._load is not None:
            device = torch.device(self._load(module))
        else:
            module.to(self.device)
            device = self.device
        try:
            yield device
        finally:
            if not self.managed and device != self.offload_device:
                module.to(self.offload_device)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """'auto' -> bf16 on a CUDA device that supports it, else fp32. fp16 is refused (SD2 attention overflows)."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of auto, fp32, bf16 (fp16 breaks SD2's attention), got {precision!r}")
    return DTYPES[precision]


def compose_prompt(prompt: str, added_prompt: str) -> str:
    """HumanSD's `prompt + ', ' + added_prompt` (without a dangling comma when nothing is added)."""
    prompt, added_prompt = (prompt or "").strip(), (added_prompt or "").strip()
    if not added_prompt:
        return prompt
    return f"{prompt}, {added_prompt}" if prompt else added_prompt


@torch.no_grad()
def encode_text(model: HumanSDModel, texts: list[str], device) -> torch.Tensor:
    """SD2 'penultimate' OpenCLIP embeddings [B, 77, D] (last_hidden_state of the 23-block tower)."""
    ids = model.tokenizer(texts).to(device)
    return model.text_encoder(input_ids=ids).last_hidden_state.float()


@torch.no_grad()
def encode_images(model: HumanSDModel, images: torch.Tensor, device) -> torch.Tensor:
    """Images BCHW in [-1, 1] -> scaled latents (posterior mean × scaling factor)."""
    x = images.to(device=device, dtype=next(model.vae.parameters()).dtype)
    return model.vae.encode(x).latent_dist.mean.float() * model.scaling_factor


@torch.no_grad()
def decode_latents(model: HumanSDModel, latents: torch.Tensor, device) -> torch.Tensor:
    """Scaled latents -> images BCHW in [0, 1] (float32, CPU)."""
    x = latents.to(device=device, dtype=next(model.vae.parameters()).dtype) / model.scaling_factor
    return ((model.vae.decode(x).sample.float() + 1) / 2).clamp(0, 1).cpu()


@dataclass
class GenerateResult:
    images: torch.Tensor      # [N, 3, H, W] in [0, 1]
    latents: torch.Tensor     # [N, 4, h, w] scaled latents
    seeds: list[int]


class InvalidInput(ValueError):
    """A bad argument of `generate`; `argument` names it (the node reports it on the input of that name)."""

    def __init__(self, argument: str, message: str):
        super().__init__(message)
        self.argument = argument


def check_inputs(model: HumanSDModel, pose: torch.Tensor, *, steps: int, guidance: float, eta: float, scheduler: str,
                 batch: int, strength: float, init_image: torch.Tensor | None) -> None:
    if pose.ndim != 4 or pose.shape[1] != 3:
        raise InvalidInput("pose", f"pose: expected skeleton images [N, 3, H, W] in [-1, 1], got "
                                   f"{tuple(pose.shape)}")
    mult = model.vae_scale * model.unet_multiple
    h, w = pose.shape[-2:]
    if h % mult or w % mult:
        raise InvalidInput("pose", f"pose: height and width must be multiples of {mult}, got {h}x{w}")
    if steps < 1:
        raise InvalidInput("steps", f"steps must be >= 1, got {steps}")
    if guidance < 0:
        raise InvalidInput("guidance", f"guidance must be >= 0, got {guidance}")
    if eta < 0:
        raise InvalidInput("eta", f"eta must be >= 0, got {eta}")
    if scheduler not in S.SCHEDULERS:
        raise InvalidInput("scheduler", f"scheduler must be one of {S.SCHEDULERS}, got {scheduler!r}")
    if scheduler == "ddim" and steps < 2:
        raise InvalidInput("steps", "steps must be >= 2 for ddim: HumanSD's DDIM skips the first of its steps, so "
                                    "1 step would return pure noise")
    if batch < 1:
        raise InvalidInput("batch", f"batch must be >= 1, got {batch}")
    if not 0.0 < strength <= 1.0:
        raise InvalidInput("strength", f"strength must be in (0, 1], got {strength}")
    if strength < 1.0 and init_image is None:
        raise InvalidInput("strength", "strength < 1 needs an init image (img2img); connect one or set strength to 1")
    if init_image is not None and (init_image.ndim != 4 or tuple(init_image.shape[-2:]) != (h, w)
                                   or init_image.shape[0] not in (1, pose.shape[0])):
        raise InvalidInput("init_image", f"init_image: expected [1 or {pose.shape[0]}, 3, {h}, {w}], got "
                                         f"{tuple(init_image.shape)}")


ITEMS_PER_CALL = 8  # images denoised together (x2 with guidance): more pose frames x batch run in chunks of this


def generate(model: HumanSDModel, pose: torch.Tensor, prompt: str, negative_prompt: str = "", *,
             added_prompt: str = "", steps: int = 50, guidance: float = 10.0, eta: float = 0.0,
             scheduler: str = "ddim", seed: int = 0, batch: int = 1, strength: float = 1.0,
             init_image: torch.Tensor | None = None, precision: str = "auto", offloader: Offloader | None = None,
             callback: S.Callback | None = None, on_unet_call: Callable | None = None) -> GenerateResult:
    """Generate `batch` images per skeleton image in `pose` ([N, 3, H, W] in [-1, 1], black background).

    Item k (pose k // batch) uses seed + k. `init_image` ([1 or N, 3, H, W] in [-1, 1]) with strength < 1 is
    HumanSD's img2img. `callback(step, total, latents)` runs after every sampling step."""
    check_inputs(model, pose, steps=steps, guidance=guidance, eta=eta, scheduler=scheduler, batch=batch,
                 strength=strength, init_image=init_image)
    offloader = offloader or Offloader("cpu")
    device = offloader.device
    dtype = resolve_dtype(precision, device)
    n_items = pose.shape[0] * batch
    seeds = [int(seed) + k for k in range(n_items)]
    gens = S.item_generators(seed, n_items)  # item k's noise comes from its own generator: chunks change nothing
    chunks = [(c0, min(n_items, c0 + ITEMS_PER_CALL)) for c0 in range(0, n_items, ITEMS_PER_CALL)]

    with offloader.use(model.text_encoder) as dev:
        cond = encode_text(model, [compose_prompt(prompt, added_prompt)], dev)
        uncond = encode_text(model, [negative_prompt or ""], dev) if guidance != 1.0 else None
    with offloader.use(model.vae) as dev:  # each image once, ITEMS_PER_CALL at a time (latents are 1/48 the size)
        def encode(images):
            return torch.cat([encode_images(model, images[i:i + ITEMS_PER_CALL], dev).cpu()
                              for i in range(0, images.shape[0], ITEMS_PER_CALL)])
        pose_latent = encode(pose)
        init_latent = encode(init_image) if init_image is not None and strength < 1.0 else None
    if scheduler == "ddim":
        plan = S.ddim_plan(S.alphas_cumprod(model.configs["scheduler"]), steps, eta)
        start = S.ddim_start_index(len(plan), steps, strength)
    latents = []
    with offloader.use(model.unet) as dev:
        for c, (c0, c1) in enumerate(chunks):  # bounded memory: a long pose sequence runs a chunk at a time
            frame_of = torch.arange(c0, c1) // batch  # item k conditions on pose frame k // batch
            n = c1 - c0
            chunk_pose = pose_latent[frame_of].to(dev)
            chunk_init = None if init_latent is None else \
                init_latent[frame_of if init_latent.shape[0] > 1 else torch.zeros_like(frame_of)].to(dev)
            eps_fn = S.make_eps_fn(model.unet, chunk_pose, cond.to(dev).expand(n, -1, -1),
                                   uncond.to(dev).expand(n, -1, -1) if uncond is not None else None, guidance,
                                   dtype=dtype, on_call=on_unet_call)
            noise = S.randn_items(gens[c0:c1], (4, *chunk_pose.shape[-2:]), dev)
            step_cb = None if callback is None else (
                lambda step, total, x, _c=c: callback(_c * total + step, len(chunks) * total, x))
            if scheduler == "ddim":
                x = noise if chunk_init is None else S.ddim_noise_to(chunk_init, noise, plan, start)
                latents.append(S.sample_ddim(eps_fn, x, plan, start, generators=gens[c0:c1], callback=step_cb).cpu())
            else:
                sched = S.make_scheduler(scheduler, model.configs["scheduler"])
                latents.append(S.sample_scheduler(eps_fn, noise, sched, steps, init_latent=chunk_init,
                                                  strength=strength, callback=step_cb).cpu())
    latents = torch.cat(latents)
    with offloader.use(model.vae) as dev:
        images = torch.cat([decode_latents(model, latents[i:i + 1], dev) for i in range(n_items)])
    return GenerateResult(images=images, latents=latents, seeds=seeds)
