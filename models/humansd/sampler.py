"""HumanSD's samplers as pure functions.

Model contract: `eps_fn(x, t) -> eps` (ε-prediction for the noisy latent `x` at DDPM timestep `t`; the pose latent and
the text guidance live inside `eps_fn`, see `make_eps_fn`). Every sampler takes an optional
`callback(step, total, x)` called after each step (the node wires it to progress and interrupt checks).

* `sample_ddim`: the LDM `DDIMSampler` HumanSD ships, exactly: uniform discretisation `range(0, T, T // S) + 1`
  (for S not dividing 1000 that is more than S timesteps, as in LDM), final alpha = alphas_cumprod[0],
  σ_t = η·sqrt((1-ᾱ_prev)/(1-ᾱ_t))·sqrt(1-ᾱ_t/ᾱ_prev). HumanSD's demo always samples through `DDIMSampler.decode`
  with `t_enc = min(int(strength·S), S-1)`: it starts at DDIM index `t_enc` (pure noise when strength is 1, else the
  init latent noised to ᾱ[t_enc] by `stochastic_encode`) and runs `t_enc` steps, so strength 1 with 50 steps runs
  49 denoising steps from t=961. `ddim_start_index` reproduces that.
* `sample_scheduler`: a diffusers scheduler (DPM++ 2M, DPM++ 2M Karras, Euler) with img2img as diffusers does it.

Per-item generators (`item_generators`): item i of a batch uses its own CPU `torch.Generator` seeded `seed + i`
for its initial noise and any per-step noise, so an image does not depend on the batch it was made in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

SCHEDULERS = ("ddim", "dpmpp_2m", "dpmpp_2m_karras", "euler")
Callback = Callable[[int, int, torch.Tensor], None]


# ---- noise ---------------------------------------------------------------------------------------------------
def item_generators(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per batch item, seeded seed, seed+1, … (results independent of batch size)."""
    return [torch.Generator("cpu").manual_seed((int(seed) + i) % (2 ** 64)) for i in range(count)]


def randn_items(generators: Sequence[torch.Generator], shape_per_item: Sequence[int], device=None,
                dtype=torch.float32) -> torch.Tensor:
    """Stack of one standard-normal draw per generator: [len(generators), *shape_per_item], drawn on CPU."""
    x = torch.stack([torch.randn(tuple(shape_per_item), generator=g, dtype=torch.float32) for g in generators])
    return x.to(device=device, dtype=dtype)


# ---- schedule ------------------------------------------------------------------------------------------------
def alphas_cumprod(config: dict) -> torch.Tensor:
    """ᾱ as LDM computes it: betas = linspace(√β0, √β1, T, float64)², cumprod in float64, stored as float32."""
    if config.get("beta_schedule", "scaled_linear") != "scaled_linear":
        raise ValueError(f"HumanSD uses the 'scaled_linear' schedule, got {config.get('beta_schedule')!r}")
    n = int(config["num_train_timesteps"])
    betas = torch.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


@dataclass
class DDIMPlan:
    timesteps: list[int]        # ascending DDPM timesteps of the DDIM schedule (1, 21, …, 981 for 50 steps)
    alphas: torch.Tensor        # ᾱ at each, float64
    alphas_prev: torch.Tensor   # ᾱ of the previous DDIM step (ᾱ[0] before the first)
    sigmas: torch.Tensor        # per-step noise scale for η

    def __len__(self) -> int:
        return len(self.timesteps)


def ddim_plan(acp: torch.Tensor, steps: int, eta: float = 0.0) -> DDIMPlan:
    """LDM `make_ddim_timesteps('uniform', steps, T)` + `make_ddim_sampling_parameters`."""
    n = acp.shape[0]
    if not 1 <= steps <= n:
        raise ValueError(f"steps must be in 1..{n}, got {steps}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    # LDM indexes ᾱ[t + 1]; for step counts whose grid reaches 999 (3, 9, 27, …) the original crashes on ᾱ[1000]:
    # that one out-of-range timestep is dropped here.
    ts = [t + 1 for t in range(0, n, n // steps) if t + 1 < n]
    a = acp.double()
    alphas = a[ts]
    prev = torch.cat([a[:1], a[ts[:-1]]])
    sigmas = eta * torch.sqrt((1 - prev) / (1 - alphas) * (1 - alphas / prev))
    return DDIMPlan(ts, alphas, prev, sigmas)


def ddim_start_index(steps_in_plan: int, steps: int, strength: float) -> int:
    """HumanSD's `t_enc = min(int(strength * steps), steps - 1)` (also with strength 1)."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    return min(int(strength * steps), steps - 1, steps_in_plan - 1)


def ddim_noise_to(x0: torch.Tensor, noise: torch.Tensor, plan: DDIMPlan, index: int) -> torch.Tensor:
    """LDM `DDIMSampler.stochastic_encode`: √ᾱ[index]·x0 + √(1-ᾱ[index])·noise."""
    a = plan.alphas[index]
    return (a.sqrt() * x0.double() + (1 - a).sqrt() * noise.double()).to(x0.dtype)


def ddim_step(x: torch.Tensor, eps: torch.Tensor, a_t, a_prev, sigma, noise: torch.Tensor | None) -> torch.Tensor:
    """One LDM `p_sample_ddim` update for ε-prediction (no clipping, temperature 1)."""
    a_t, a_prev, sigma = (float(v) for v in (a_t, a_prev, sigma))
    pred_x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
    dir_xt = max(1 - a_prev - sigma ** 2, 0.0) ** 0.5 * eps
    x_prev = a_prev ** 0.5 * pred_x0 + dir_xt
    if sigma > 0:
        if noise is None:
            raise ValueError("ddim_step: eta > 0 needs noise")
        x_prev = x_prev + sigma * noise
    return x_prev


def sample_ddim(eps_fn, x: torch.Tensor, plan: DDIMPlan, start: int, *,
                generators: Sequence[torch.Generator] | None = None, callback: Callback | None = None) -> torch.Tensor:
    """Run DDIM indices start-1 … 0 from `x` (LDM `DDIMSampler.decode`)."""
    total = start
    for n, index in enumerate(range(start - 1, -1, -1)):
        eps = eps_fn(x, plan.timesteps[index])
        sigma = plan.sigmas[index]
        noise = None
        if float(sigma) > 0:
            if generators is None or len(generators) != x.shape[0]:
                raise ValueError("sample_ddim: eta > 0 needs one generator per batch item")
            noise = randn_items(generators, x.shape[1:], x.device, x.dtype)
        x = ddim_step(x, eps, plan.alphas[index], plan.alphas_prev[index], sigma, noise)
        if callback is not None:
            callback(n + 1, total, x)
    return x


# ---- diffusers schedulers ------------------------------------------------------------------------------------
def make_scheduler(name: str, config: dict):
    """A diffusers scheduler for `name` on HumanSD's training schedule (ε-prediction)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
    base = dict(num_train_timesteps=config["num_train_timesteps"], beta_start=config["beta_start"],
                beta_end=config["beta_end"], beta_schedule=config["beta_schedule"], steps_offset=config["steps_offset"],
                prediction_type="epsilon")
    if name == "ddim":
        return DDIMScheduler(**base, clip_sample=False, set_alpha_to_one=config["set_alpha_to_one"],
                             timestep_spacing=config["timestep_spacing"])
    if name == "dpmpp_2m":
        return DPMSolverMultistepScheduler(**base, algorithm_type="dpmsolver++", solver_order=2)
    if name == "dpmpp_2m_karras":
        return DPMSolverMultistepScheduler(**base, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True)
    if name == "euler":
        return EulerDiscreteScheduler(**base)
    raise ValueError(f"unknown scheduler {name!r}; known: {SCHEDULERS}")


def sample_scheduler(eps_fn, noise: torch.Tensor, scheduler, steps: int, *, init_latent: torch.Tensor | None = None,
                     strength: float = 1.0, callback: Callback | None = None) -> torch.Tensor:
    """Sample with a diffusers scheduler. Without `init_latent`: from `noise × init_noise_sigma`, all steps. With it:
    the last max(1, int(strength·steps)) steps, starting from the init latent noised to the first of them."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    scheduler.set_timesteps(steps, device=noise.device)
    timesteps = scheduler.timesteps
    if init_latent is None:
        x = noise * scheduler.init_noise_sigma
    else:
        run = max(1, min(int(strength * steps), steps))
        begin = len(timesteps) - run
        timesteps = timesteps[begin:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        x = scheduler.add_noise(init_latent, noise, timesteps[:1].repeat(noise.shape[0]))
    total = len(timesteps)
    for n, t in enumerate(timesteps):
        eps = eps_fn(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(eps, t, x, return_dict=False)[0]
        if callback is not None:
            callback(n + 1, total, x)
    return x


# ---- the guided model function -------------------------------------------------------------------------------
def make_eps_fn(unet, pose_latent: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None,
                guidance: float, *, dtype: torch.dtype = torch.float32, on_call: Callable | None = None):
    """ε(x, t) with HumanSD's classifier-free guidance on the text only: the pose latent is concatenated to the noisy
    latent in *both* branches; ε = ε_u + g·(ε_c − ε_u). With `uncond=None` (guidance 1) the UNet runs once on the
    conditional branch only. `on_call(unet_input, timesteps)` is a test/diagnostic hook."""
    if pose_latent.shape[1] + 4 != unet.config.in_channels:
        raise ValueError(f"pose latent has {pose_latent.shape[1]} channels; the UNet takes "
                         f"{unet.config.in_channels} = 4 + pose channels")
    guided = uncond is not None and guidance != 1.0
    # built once per generation, not per step: the pose half of the UNet input and the text context, both
    # already doubled for the batched classifier-free-guidance call
    ctx = (torch.cat([uncond, cond]) if guided else cond).to(dtype=torch.float32)
    pose_rows = torch.cat([pose_latent, pose_latent]) if guided else pose_latent

    def eps_fn(x: torch.Tensor, t) -> torch.Tensor:
        b = x.shape[0]
        if pose_latent.shape[0] != b or pose_latent.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"pose latent {tuple(pose_latent.shape)} does not match the latent {tuple(x.shape)}")
        inp = torch.cat([torch.cat([x, x]) if guided else x, pose_rows.to(x)], dim=1)
        tt = torch.as_tensor(t, device=x.device).reshape(-1)
        tt = tt.expand(inp.shape[0]) if tt.numel() == 1 else tt
        if on_call is not None:
            on_call(inp, tt)
        ctx_ = ctx.to(device=x.device)
        if dtype == torch.float32:
            out = unet(inp, tt, encoder_hidden_states=ctx_).sample.float()
        else:  # bf16 compute on fp32 weights; softmax/norms stay fp32 under autocast
            with torch.autocast(device_type=x.device.type, dtype=dtype):
                out = unet(inp, tt, encoder_hidden_states=ctx_).sample.float()
        if not guided:
            return out
        e_u, e_c = out.chunk(2)
        return e_u + guidance * (e_c - e_u)

    return eps_fn
