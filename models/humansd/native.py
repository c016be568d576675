"""HumanSD as a native ComfyUI MODEL: a UNet function wrapper that supplies the pose latent as `c_concat`.

ComfyUI's stock checkpoint loader builds HumanSD as an SD2 *inpainting* model (in_channels > 4), whose `c_concat`
is mask + masked image (5 channels) and sampling fails on conv_in. ComfyUI calls a model's
`model_options["model_function_wrapper"]` as `wrapper(apply_model, {"input", "timestep", "c", "cond_or_uncond"})`
for every UNet evaluation; ours replaces `c["c_concat"]` with the scaled pose latent, resized to the latent and
repeated to the batch (the same pose for the conditional and the unconditional chunks: HumanSD guides the text
only). A wrapper installed earlier (another pack's) is kept and called with our arguments.

Nothing here imports ComfyUI: the model patcher is duck-typed (`clone()`, `model_options`,
`set_model_unet_function_wrapper()`), so tests drive it with a fake.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_pose_latent(pose_latent: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Resize (bilinear) to `like`'s latent size and repeat to its batch; same device and dtype as `like`."""
    lat = pose_latent.to(device=like.device, dtype=like.dtype)
    if tuple(lat.shape[-2:]) != tuple(like.shape[-2:]):
        lat = F.interpolate(lat, size=tuple(like.shape[-2:]), mode="bilinear", align_corners=False)
    b = like.shape[0]
    if lat.shape[0] == b:
        return lat
    if b % lat.shape[0]:
        # a batch that is not a multiple of the pose count: cycle the poses
        idx = torch.arange(b, device=lat.device) % lat.shape[0]
        return lat[idx]
    return lat.repeat(b // lat.shape[0], 1, 1, 1)


class PoseConcatWrapper:
    """model_function_wrapper(apply_model, args) that sets args['c']['c_concat'] to the pose latent."""

    def __init__(self, pose_latent: torch.Tensor, previous=None):
        if pose_latent.ndim != 4:
            raise ValueError(f"pose latent must be [N, C, h, w], got {tuple(pose_latent.shape)}")
        self.pose_latent = pose_latent.detach()
        self.previous = previous

    def __call__(self, apply_model, args: dict):
        x = args["input"]
        # ComfyUI batches chunks [cond…, uncond…] along dim 0; every chunk gets the same poses in the same order
        chunks = max(len(args.get("cond_or_uncond") or [0]), 1)
        per_chunk = x.shape[0] // chunks if x.shape[0] % chunks == 0 else x.shape[0]
        lat = fit_pose_latent(self.pose_latent, x[:per_chunk])
        if per_chunk != x.shape[0]:
            lat = lat.repeat(x.shape[0] // per_chunk, 1, 1, 1)
        c = dict(args["c"])
        c["c_concat"] = lat
        new_args = dict(args, c=c)
        if self.previous is not None:
            return self.previous(apply_model, new_args)
        return apply_model(x, args["timestep"], **c)

    def to(self, device):  # ComfyUI moves wrappers along with the model on some versions
        self.pose_latent = self.pose_latent.to(device)
        return self


def apply_pose(model_patcher, pose_latent: torch.Tensor):
    """Clone a ComfyUI model patcher and install the pose wrapper (chaining any existing one). `pose_latent` is the
    VAE latent of the skeleton image already multiplied by the latent scale factor (HumanSD's `c_concat`)."""
    m = model_patcher.clone()
    previous = m.model_options.get("model_function_wrapper")
    m.set_model_unet_function_wrapper(PoseConcatWrapper(pose_latent, previous))
    return m
