"""Parts2Whole generation as a pipeline-shaped function: reference parts + DensePose + prompt -> images.

`generate()` follows diffusers' pipeline layout: `check_inputs` (ValueErrors naming argument and value),
`prepare_latents` (one generator per image, so an image depends on its seed, not on the batch size), then numbered
steps and a per-step `callback(step, total, latents)` the caller wires to progress and interrupt checks.

Upstream bugs fixed here (diffusion brief §2.7):
1. masks reach the write pass (upstream's example passed them under `mask`, which its pipeline never read);
2. each part is encoded with its own label and the denoiser's context is the user prompt (upstream rebinds
   `prompt_embeds` inside its part loop, so later parts and the prompt all reuse part 1's label embedding);
   every distinct string is encoded exactly once;
3. `batch_size > 1` works: the bank is shared by every image and expanded inside attention;
4. the read pass scores queries of the image's own tokens only (upstream computes (1+K)x queries and drops them),
   and the bank's keys/values are projected once per generation instead of every step.
"""
from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .attention import (BankComplete, PartBank, ReadState, installed_processors, read_processors,
                        self_attention_names, write_processors)
from .parts import LABELS, PartRef
from .pose_guider import pose_feature_added


# ---- 0. inputs ---------------------------------------------------------------------------------------------------
def check_inputs(model, parts: Sequence[PartRef], pose: torch.Tensor, prompt: str, negative_prompt: str, steps: int,
                 guidance: float, height: int, width: int, batch_size: int, seed: int) -> None:
    factor = model.vae_scale_factor
    for name, value in (("height", height), ("width", width)):  # one message per argument: it names that one
        if value % factor or value <= 0:
            raise ValueError(f"`{name}` must be a positive multiple of {factor}, got {value}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive integer, got {steps!r}")
    if guidance < 1.0:
        raise ValueError(f"`guidance` must be >= 1 (1 disables classifier-free guidance), got {guidance}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}")
    if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
        raise ValueError(f"`prompt` and `negative_prompt` must be strings, got {type(prompt).__name__} and "
                         f"{type(negative_prompt).__name__}")
    if len(parts) > model.num_image_tokens:
        raise ValueError(f"`parts`: at most {model.num_image_tokens} parts, got {len(parts)}")
    for i, p in enumerate(parts):
        if not isinstance(p, PartRef):
            raise ValueError(f"`parts[{i}]` must be a PartRef, got {type(p).__name__}")
        if p.label not in LABELS:
            raise ValueError(f"`parts[{i}].label` must be one of {list(LABELS)}, got {p.label!r}")
        if p.part_mask is not None and not bool((p.part_mask > 0).any()):
            what = "mask" if p.mask is not None else "alpha"
            raise ValueError(f"`parts[{i}].{what}` ({p.label}) is empty: the part would have no effect")
    if pose.ndim != 4 or pose.shape[1] != model.pose_guider.config.conditioning_channels:
        raise ValueError(f"`pose` must be [B, {model.pose_guider.config.conditioning_channels}, H, W] in [0, 1], "
                         f"got shape {tuple(pose.shape)}")
    if pose.shape[0] not in (1, batch_size):
        raise ValueError(f"`pose` has {pose.shape[0]} images; give 1 (shared) or batch_size={batch_size}")


def prepare_latents(generators: Sequence[torch.Generator], shape: tuple[int, ...], dtype, device,
                    init_noise_sigma: float) -> torch.Tensor:
    """One [C, h, w] noise draw per generator (on CPU, so results do not depend on the device), stacked."""
    if not generators:
        raise ValueError("`generators` must hold one generator per image, got none")
    noise = torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
    return noise.to(device=device, dtype=dtype) * init_noise_sigma


# ---- helpers -----------------------------------------------------------------------------------------------------
def encode_texts(model, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """One text-encoder call per *distinct* string -> {text: [1, L, D]}."""
    tok = model.tokenizer
    max_len = min(int(tok.model_max_length), int(model.text_encoder.config.max_position_embeddings))
    out: dict[str, torch.Tensor] = {}
    for text in dict.fromkeys(texts):  # ordered, unique
        ids = tok(text, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt").input_ids
        out[text] = model.text_encoder(ids.to(model.text_encoder.device))[0].to(model.dtype)
    return out


def _resize(x: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode=mode, antialias=True, align_corners=False)


def _resize_pil(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Antialiased bicubic in two passes, width then height, each clipped to [0, 1] and rounded to 8 bits, as PIL's
    `resize` does on 8-bit images (a single float pass differs at hard edges, where the ringing PIL clips between
    passes reaches the other pass)."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    x = _resize(x, x.shape[-2], width, "bicubic").clamp(0, 1).mul(255).round().div(255)
    return _resize(x, height, width, "bicubic").clamp(0, 1).mul(255).round().div(255)


def _resize_rgba(composite: torch.Tensor, alpha: torch.Tensor, height: int, width: int):
    """Resize a part composited on white [1, 3, h, w] with its alpha [1, 1, h, w] the way upstream's
    `Image.convert("RGBA").resize(...)` then white compositing does: PIL resamples RGBA premultiplied (bicubic,
    antialiased), clips each channel, un-premultiplies; then colour * alpha + white * (1 - alpha).
    Returns (composite, alpha) at the new size."""
    premultiplied = (composite + alpha - 1).clamp(0, 1)  # = colour * alpha
    premultiplied = premultiplied.mul(255).round().div(255)  # PIL's 8-bit "RGBa"
    p, a = _resize_pil(premultiplied, height, width), _resize_pil(alpha, height, width)
    colour = torch.where(a > 0, (p / a.clamp_min(1e-12)).clamp(0, 1), torch.zeros_like(p))
    return colour * a + (1 - a), a


def prepare_references(parts: Sequence[PartRef], height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Parts -> images [K, 3, H, W] in [-1, 1] and masks [K, 1, H, W] in [0, 1] at the generation size (aspect not
    kept, as upstream). Images and masks are resized as upstream's PIL `resize` does (`_resize_pil`; an RGBA part
    premultiplied): within 2/255 of upstream's preprocessing on 8-bit parts, masks exactly. A part without a mask
    uses its alpha, else it is all part (mask of ones)."""
    if not parts:
        return torch.zeros(0, 3, height, width), torch.zeros(0, 1, height, width)
    images, masks = [], []
    for p in parts:
        img = p.image.detach().float().cpu().movedim(-1, 0)[None]
        if p.alpha is not None:
            img, alpha = _resize_rgba(img, p.alpha.detach().float().cpu()[None, None], height, width)
        else:
            img, alpha = _resize_pil(img, height, width), None
        images.append(img[0] * 2 - 1)
        if p.mask is not None:
            m = _resize_pil(p.mask.detach().float().cpu()[None, None], height, width)
        else:
            m = alpha if alpha is not None else torch.ones(1, 1, height, width)
        masks.append(m[0])
    return torch.stack(images), torch.stack(masks)


def encode_part_tokens(model, parts: Sequence[PartRef]) -> torch.Tensor:
    """CLIP image embeddings of the raw part images (no mask), in part order, zero-padded -> [1, slots, D]."""
    slots = model.num_image_tokens
    dim = model.image_encoder.config.projection_dim
    tokens = torch.zeros(1, slots, dim, device=model.device, dtype=model.dtype)
    if parts:
        import numpy as np
        arrs = [np.round(p.image.detach().float().cpu().clamp(0, 1).numpy() * 255).astype(np.uint8) for p in parts]
        pixels = model.feature_extractor(images=arrs, return_tensors="pt").pixel_values
        enc = model.image_encoder
        embeds = enc(pixels.to(enc.device, next(enc.parameters()).dtype)).image_embeds
        tokens[0, :len(parts)] = embeds.to(tokens.dtype)
    return tokens


def build_part_bank(model, ref_latents: torch.Tensor, label_embeds: torch.Tensor, masks: torch.Tensor,
                    names: Sequence[str]) -> PartBank:
    """Write pass: one reference-UNet forward at t=0 over all K parts (each with its own label), banking the masked
    norm1 outputs of the layers in `names`; stops as soon as the last one is banked."""
    bank = PartBank()
    if ref_latents.shape[0] == 0:
        return bank
    procs = write_processors(names, bank, masks.to(ref_latents.device))
    t0 = torch.zeros(ref_latents.shape[0], dtype=torch.long, device=ref_latents.device)
    with installed_processors(model.reference_unet, procs):
        try:
            model.reference_unet(ref_latents, t0, encoder_hidden_states=label_embeds, return_dict=False)
        except BankComplete:
            pass
    missing = sorted(set(names) - set(bank.features))
    if missing:
        raise RuntimeError(f"reference UNet never reached self-attention layers {missing[:3]}")
    return bank


def _step_kwargs(scheduler, eta: float, generator) -> dict:
    params = set(inspect.signature(scheduler.step).parameters)
    kw = {}
    if "eta" in params:
        kw["eta"] = eta
    if "generator" in params:
        kw["generator"] = generator
    return kw


# ---- the sampler -------------------------------------------------------------------------------------------------
@torch.no_grad()
def generate(
    model,
    parts: Sequence[PartRef],
    pose: torch.Tensor,
    prompt: str,
    negative_prompt: str = "",
    *,
    steps: int = 50,
    guidance: float = 3.5,
    seed: int = 0,
    height: int = 768,
    width: int = 512,
    batch_size: int = 1,
    upstream_parity: bool = False,
    image_token_scale: float = 1.0,
    fusion_blocks: str = "full",
    eta: float = 0.0,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Generate `batch_size` people wearing `parts` in the DensePose `pose` ([B or 1, 3, H, W] in [0, 1]).

    Returns [batch_size, 3, height, width] in [-1, 1] (float32, CPU). Image i uses seed `seed + i`.
    """
    # 0. check inputs
    check_inputs(model, parts, pose, prompt, negative_prompt, steps, guidance, height, width, batch_size, seed)
    device, dtype = model.device, model.dtype
    cfg = guidance > 1.0
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch_size)]

    # 1. text: each distinct label once, the prompt once, the negative once
    labels = [p.label for p in parts]
    embeds = encode_texts(model, labels + [prompt] + ([negative_prompt] if cfg else []))

    # 2. reference latents (VAE posterior sample with its own seeded generator) and masks
    names = self_attention_names(model.unet, fusion_blocks)
    ref_names = set(self_attention_names(model.reference_unet, fusion_blocks))
    if set(names) != ref_names:
        raise ValueError("unet and reference_unet have different self-attention layers; they must share one layout")
    images, masks = prepare_references(parts, height, width)
    if parts:
        posterior = model.vae.encode(images.to(device, dtype)).latent_dist
        ref_gen = torch.Generator("cpu").manual_seed(seed)
        ref_noise = torch.randn(posterior.mean.shape, generator=ref_gen, dtype=torch.float32)
        ref_latents = (posterior.mean + posterior.std * ref_noise.to(device, dtype)) * model.vae.config.scaling_factor
        label_embeds = torch.cat([embeds[label] for label in labels])
    else:
        ref_latents = torch.zeros(0, model.unet.config.in_channels, 1, 1, device=device, dtype=dtype)
        label_embeds = None

    # 3. write pass: the bank, once per generation
    bank = build_part_bank(model, ref_latents, label_embeds, masks, names)

    # 4. denoiser context: [text || image tokens]; unconditional = [negative text || zeros]
    part_tokens = encode_part_tokens(model, parts)
    cond_ctx = torch.cat([embeds[prompt], part_tokens], dim=1)
    if cfg:
        uncond_ctx = torch.cat([embeds[negative_prompt], torch.zeros_like(part_tokens)], dim=1)
        context = torch.cat([uncond_ctx.expand(batch_size, -1, -1), cond_ctx.expand(batch_size, -1, -1)])
    else:
        context = cond_ctx.expand(batch_size, -1, -1)

    # 5. pose feature (shared by both CFG halves)
    pose_img = _resize(pose.detach().float().cpu(), height, width, "bilinear").clamp(0, 1)
    pose_feat = model.pose_guider(pose_img.to(device, dtype))
    if pose_feat.shape[0] > 1 and cfg:
        pose_feat = torch.cat([pose_feat, pose_feat])

    # 6. timesteps and initial noise
    scheduler = model.make_scheduler()
    scheduler.set_timesteps(steps, device=device)
    factor = model.vae_scale_factor
    latents = prepare_latents(generators, (model.unet.config.in_channels, height // factor, width // factor),
                              dtype, device, float(scheduler.init_noise_sigma))
    step_kw = _step_kwargs(scheduler, eta, generators[0])

    # 7. denoising loop (read processors + pose hook installed, restored afterwards)
    state = ReadState(bank, upstream_parity=upstream_parity)
    state.num_uncond = batch_size if cfg else 0
    dc_procs = [p for p in model.unet.attn_processors.values() if hasattr(p, "to_k_dc")]
    old_scales = [p.scale for p in dc_procs]
    try:
        for p in dc_procs:
            p.scale = image_token_scale
        with installed_processors(model.unet, read_processors(names, state)), \
                pose_feature_added(model.unet, pose_feat):
            timesteps = scheduler.timesteps
            for i, t in enumerate(timesteps):
                x = torch.cat([latents, latents]) if cfg else latents
                x = scheduler.scale_model_input(x, t)
                noise = model.unet(x, t, encoder_hidden_states=context, return_dict=False)[0]
                if cfg:
                    uncond, cond = noise.chunk(2)
                    noise = uncond + guidance * (cond - uncond)
                latents = scheduler.step(noise, t, latents, **step_kw, return_dict=False)[0]
                if callback is not None:
                    callback(i + 1, len(timesteps), latents)
    finally:
        for p, s in zip(dc_procs, old_scales):
            p.scale = s
        bank.clear()

    # 8. decode
    images_out = [model.vae.decode(latents[i:i + 1] / model.vae.config.scaling_factor, return_dict=False)[0]
                  for i in range(batch_size)]
    return torch.cat(images_out).float().cpu()
