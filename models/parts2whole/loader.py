"""Load a Parts2Whole diffusers-format folder (hub repo `huanngzh/Parts2Whole`) with safe loading only.

Layout (one folder in `models/parts2whole/<name>/`):

| entry | class | files we need |
|---|---|---|
| unet/, reference_unet/ | diffusers `UNet2DConditionModel` | config.json + diffusion_pytorch_model.safetensors |
| vae/ | `AutoencoderKL` | config.json + diffusion_pytorch_model.safetensors |
| pose_guider/ | our `PoseGuider` | config.json + diffusion_pytorch_model.safetensors |
| text_encoder/ | transformers `CLIPTextModel` | config.json + model.safetensors |
| image_encoder/ | transformers `CLIPVisionModelWithProjection` | config.json + model.safetensors |
| tokenizer/ | `CLIPTokenizer` | vocab.json + merges.txt |
| feature_extractor/ | `CLIPImageProcessor` | preprocessor_config.json |
| scheduler/ | a diffusers scheduler (allow-list below) | scheduler_config.json |
| decoupled_attn.pth | to_k_dc/to_v_dc weights | safetensors content despite the name |

Weights: safetensors first; a component that only has `.bin` files is read by diffusers/transformers with
`torch.load(weights_only=True)` (tensors only, no code); a pickle that needs more is refused with
`UnsafeCheckpointError`. Nothing is fetched (`local_files_only=True`). The reference UNet on the hub drops a few modules it never uses
(`conv_norm_out`, `conv_out`, most of the last transformer block): the stock class loads with those keys missing and
they stay unused, because the write pass stops as soon as the last self-attention is banked.
"""
from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import torch

from ...utils.errors import HumanGenError
from ...utils.limits import read_json_file
from ..pretrained import load_pretrained
from .attention import decoupled_processors

log = logging.getLogger("humangen")

DECOUPLED_FILES = ("decoupled_attn.pth", "decoupled_attn.safetensors")
# accepted weight files, best first: (file, variant, use_safetensors). `.bin` pickles are read by diffusers/transformers
# with torch.load(weights_only=True), which refuses anything but tensors and containers.
_WEIGHTS_DIFFUSERS = (("diffusion_pytorch_model.safetensors", None, True),
                      ("diffusion_pytorch_model.fp16.safetensors", "fp16", True),
                      ("diffusion_pytorch_model.bin", None, False),
                      ("diffusion_pytorch_model.fp16.bin", "fp16", False))
_WEIGHTS_TRANSFORMERS = (("model.safetensors", None, True), ("model.fp16.safetensors", "fp16", True),
                         ("pytorch_model.bin", None, False), ("pytorch_model.fp16.bin", "fp16", False))

# component -> list of (alternative file names) groups that must all be present
COMPONENTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "unet": (("config.json",), tuple(w[0] for w in _WEIGHTS_DIFFUSERS)),
    "reference_unet": (("config.json",), tuple(w[0] for w in _WEIGHTS_DIFFUSERS)),
    "vae": (("config.json",), tuple(w[0] for w in _WEIGHTS_DIFFUSERS)),
    "pose_guider": (("config.json",), tuple(w[0] for w in _WEIGHTS_DIFFUSERS)),
    "text_encoder": (("config.json",), tuple(w[0] for w in _WEIGHTS_TRANSFORMERS)),
    "image_encoder": (("config.json",), tuple(w[0] for w in _WEIGHTS_TRANSFORMERS)),
    "tokenizer": (("vocab.json",), ("merges.txt",)),
    "feature_extractor": (("preprocessor_config.json",),),
    "scheduler": (("scheduler_config.json",),),
}

SCHEDULERS = ("DDIMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler",
              "EulerAncestralDiscreteScheduler", "UniPCMultistepScheduler", "LMSDiscreteScheduler")


def missing_components(folder: str) -> list[str]:
    """What the folder lacks, one readable entry per component ("unet/ (no diffusion_pytorch_model.safetensors)")."""
    missing = []
    for comp, groups in COMPONENTS.items():
        sub = os.path.join(folder, comp)
        if not os.path.isdir(sub):
            missing.append(f"{comp}/")
            continue
        for alternatives in groups:
            if not any(os.path.isfile(os.path.join(sub, f)) for f in alternatives):
                missing.append(f"{comp}/{alternatives[0]}")
    if not any(os.path.isfile(os.path.join(folder, f)) for f in DECOUPLED_FILES):
        missing.append(DECOUPLED_FILES[0])
    return missing


@dataclass
class Parts2WholeModel:
    """Everything a Parts2Whole generation needs (the HUMANGEN_PARTS2WHOLE socket carries this)."""

    unet: Any
    reference_unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    image_encoder: Any
    feature_extractor: Any
    pose_guider: Any
    scheduler_config: dict
    scheduler_class: str = "DDIMScheduler"
    path: str = ""
    dtype: torch.dtype = torch.float32
    num_image_tokens: int = 6
    meta: dict = field(default_factory=dict)

    kind = "parts2whole"

    def modules(self) -> list[torch.nn.Module]:
        return [self.unet, self.reference_unet, self.vae, self.text_encoder, self.image_encoder, self.pose_guider]

    def to(self, device=None, dtype=None) -> "Parts2WholeModel":
        kw = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for m in self.modules():
            m.to(**kw)
        if dtype is not None:
            self.dtype = dtype
        return self

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def make_scheduler(self):
        """A fresh scheduler per generation (schedulers hold per-run state)."""
        import diffusers
        cls = getattr(diffusers, self.scheduler_class)
        return cls.from_config(self.scheduler_config)

    def __repr__(self) -> str:
        return f"Parts2WholeModel(path={self.path!r}, dtype={self.dtype}, device={self.device})"


def read_safetensors_or_tensor_pickle(path: str) -> dict[str, torch.Tensor]:
    """`decoupled_attn.pth` holds safetensors bytes; accept a torch zip (weights_only) as a fallback, nothing else."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        if not zipfile.is_zipfile(path):
            raise HumanGenError(f"{path}: neither safetensors nor a torch zip archive ({exc})") from exc
    from ...utils.checkpoints import load_torch_file
    state = load_torch_file(path, what="Parts2Whole decoupled-attention file")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HumanGenError(f"{path}: expected a flat dict of tensors")
    return state


def load_decoupled_attention(unet, path: str, num_image_tokens: int = 6) -> int:
    """Install `DecoupledCrossAttnProcessor`s on every attn2 of `unet` and load their weights. Returns #tensors."""
    procs = decoupled_processors(unet, num_image_tokens=num_image_tokens)
    state = read_safetensors_or_tensor_pickle(path)
    expected = {}
    for name, proc in procs.items():
        for pname, p in proc.named_parameters():
            expected[f"{name}.{pname}"] = p
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise HumanGenError(f"{path}: decoupled attention keys do not match this UNet: "
                            f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                            f"(e.g. {unexpected[:2]})")
    with torch.no_grad():
        for key, p in expected.items():
            if tuple(state[key].shape) != tuple(p.shape):
                raise HumanGenError(f"{path}: {key} has shape {tuple(state[key].shape)}, expected {tuple(p.shape)}")
            p.copy_(state[key])
    procs_all = dict(unet.attn_processors)
    procs_all.update(procs)
    unet.set_attn_processor(procs_all)  # part of the model from now on: state_dict() includes to_k_dc/to_v_dc
    return len(expected)


def _reference_unet_unused(unet) -> tuple[str, ...]:
    """Key prefixes the hub's reference UNet leaves out (the module docstring says why): its output head and the
    last transformer block after its norm1."""
    blocks = getattr(unet, "up_blocks", None) or []
    attentions = getattr(blocks[-1], "attentions", None) if len(blocks) else None
    if not attentions:
        return "conv_out.", "conv_norm_out."
    last = f"up_blocks.{len(blocks) - 1}.attentions.{len(attentions) - 1}."
    return ("conv_out.", "conv_norm_out.", last + "proj_out.") + tuple(
        f"{last}transformer_blocks.0.{m}" for m in ("attn1.", "norm2.", "attn2.", "norm3.", "ff."))


def load_parts2whole(folder: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                     num_image_tokens: int = 6) -> Parts2WholeModel:
    """Load every component from `folder`; raise `HumanGenError` listing all missing pieces at once."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise HumanGenError(f"Parts2Whole folder {folder} does not exist")
    missing = missing_components(folder)
    if missing:
        raise HumanGenError(
            f"Parts2Whole folder {folder} is incomplete; missing: {', '.join(missing)}. Download the whole "
            f"diffusers-format repository https://huggingface.co/huanngzh/Parts2Whole into it.")

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    from .pose_guider import PoseGuider

    def sub(name: str) -> str:
        return os.path.join(folder, name)

    def weights(name: str, table) -> dict:
        for file, variant, use_safetensors in table:
            if os.path.isfile(os.path.join(sub(name), file)):
                return dict(variant=variant, use_safetensors=use_safetensors)
        raise HumanGenError(f"{sub(name)}: no weights")  # unreachable after missing_components()

    def load(cls, name: str, table=None, unused=lambda model: (), **kw):
        return load_pretrained(cls, sub(name), fix="download the whole Parts2Whole repository again.",
                               has_weights=table is not None, unused=unused,
                               **(weights(name, table) if table else {}), **kw)

    dif, tra = _WEIGHTS_DIFFUSERS, _WEIGHTS_TRANSFORMERS
    unet = load(UNet2DConditionModel, "unet", dif, torch_dtype=dtype)  # diffusers: torch_dtype; transformers: dtype
    reference_unet = load(UNet2DConditionModel, "reference_unet", dif, _reference_unet_unused, torch_dtype=dtype,
                          low_cpu_mem_usage=False)
    vae = load(AutoencoderKL, "vae", dif, torch_dtype=dtype)
    pose_guider = load(PoseGuider, "pose_guider", dif, torch_dtype=dtype)
    text_encoder = load(CLIPTextModel, "text_encoder", tra, dtype=dtype)
    image_encoder = load(CLIPVisionModelWithProjection, "image_encoder", tra, dtype=dtype)
    tokenizer = load(CLIPTokenizer, "tokenizer")
    feature_extractor = load(CLIPImageProcessor, "feature_extractor")
    try:
        scheduler_config = read_json_file(os.path.join(sub("scheduler"), "scheduler_config.json"),
                                          "scheduler/scheduler_config.json")
    except ValueError as exc:
        raise HumanGenError(f"Parts2Whole: {exc}. Fix: use the folder as released.") from None
    if not isinstance(scheduler_config, dict):
        raise HumanGenError("Parts2Whole: scheduler/scheduler_config.json must hold a JSON object. "
                            "Fix: use the folder as released.")
    scheduler_class = scheduler_config.get("_class_name", "DDIMScheduler")
    if scheduler_class not in SCHEDULERS:
        log.warning("Parts2Whole: scheduler %s is not supported; using DDIMScheduler", scheduler_class)
        scheduler_class = "DDIMScheduler"

    dc_path = next(sub(f) for f in DECOUPLED_FILES if os.path.isfile(sub(f)))
    load_decoupled_attention(unet, dc_path, num_image_tokens)
    for proc in unet.attn_processors.values():
        if isinstance(proc, torch.nn.Module):
            proc.to(dtype=dtype)

    if pose_guider.config.conditioning_embedding_channels != unet.config.block_out_channels[0]:
        raise HumanGenError(f"pose_guider outputs {pose_guider.config.conditioning_embedding_channels} channels but "
                            f"the UNet's conv_in has {unet.config.block_out_channels[0]}")
    for m in (unet, reference_unet, vae, text_encoder, image_encoder, pose_guider):
        m.requires_grad_(False)
        m.eval()
    model = Parts2WholeModel(unet=unet, reference_unet=reference_unet, vae=vae, text_encoder=text_encoder,
                             tokenizer=tokenizer, image_encoder=image_encoder, feature_extractor=feature_extractor,
                             pose_guider=pose_guider, scheduler_config=dict(scheduler_config),
                             scheduler_class=scheduler_class, path=folder, dtype=dtype,
                             num_image_tokens=num_image_tokens)
    return model.to(device=device)
