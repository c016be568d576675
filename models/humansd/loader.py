"""Load HumanSD from the original single-file checkpoint (`.ckpt`/`.pt`/`.pth`), an LDM-layout `.safetensors`,
or a diffusers folder (`unet/`, `vae/`, `text_encoder/`), with the pack's own configs; convert to safetensors.

Pickle safety: `.ckpt`/`.pt` files are read with `torch.load(weights_only=True)` plus a small allow-list of numpy
scalar/array globals (what Lightning checkpoints carry next to the weights). Anything else raises
`UnsafeCheckpointError` naming the global; there is no way around it (no checkpoint load may execute code).
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from ...utils.checkpoints import check_weights
from ...utils.errors import HumanGenError, UnsupportedCheckpointError, first_line
from ...utils.limits import parse_json, read_json_file
from ..pretrained import load_pretrained
from . import convert as conv
from .configs import check_override, merge_configs

CONFIG_METADATA_KEY = "humangen.humansd.configs"
PICKLE_EXTS = (".ckpt", ".pt", ".pth", ".bin")
SIDECAR_SUFFIX = ".config.json"


@dataclass
class HumanSDModel:
    """The HUMANGEN_HUMANSD descriptor: diffusers components on the offload device plus our scheduler config."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    configs: dict
    source: str = ""
    ignored_keys: list[str] = field(default_factory=list)
    kind: str = "humansd"

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def unet_multiple(self) -> int:
        """Latent sizes must be multiples of this (one halving per down block)."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def __repr__(self) -> str:
        return f"HumanSDModel(source={os.path.basename(self.source)!r}, unet_in={self.unet.config.in_channels})"


# ---- reading files ---------------------------------------------------------------------------------------------
def _allow_list() -> list:
    import numpy as np
    allowed: list = [np.dtype, np.ndarray]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            m = __import__(mod, fromlist=["scalar", "_reconstruct"])
            allowed += [m.scalar, m._reconstruct]
        except (ImportError, AttributeError):
            pass
    allowed += [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int32", "int64", "uint8", "bool")]
    return allowed


def safe_torch_load(path: str, *, node: str = "HumanGenHumanSDLoader", input_name: str = "ckpt_name"):
    """`torch.load` on CPU with weights_only=True and the numpy allow-list (`utils.checkpoints.load_torch_file`):
    UnsafeCheckpointError names a foreign global; a corrupt or truncated file gets UnsupportedCheckpointError."""
    from ...utils.checkpoints import load_torch_file
    return load_torch_file(path, allowed_globals=_allow_list(), what="HumanSD checkpoint", node=node,
                           input_name=input_name)


def read_state_dict(path: str) -> tuple[dict, dict | None]:
    """(flat state dict, config override from safetensors metadata or a `<stem>.config.json` sidecar)."""
    override = None
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            from safetensors import safe_open
            with safe_open(path, framework="pt") as fh:
                meta = fh.metadata() or {}
            if CONFIG_METADATA_KEY in meta:
                override = parse_json(meta[CONFIG_METADATA_KEY], f"{CONFIG_METADATA_KEY} metadata")
            sd = load_file(path, device="cpu")
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own types; restated with the file name
            raise UnsupportedCheckpointError(
                f"{os.path.basename(path)}: not a readable .safetensors HumanSD checkpoint (truncated or corrupt: "
                f"{type(exc).__name__}). Fix: download it again and check its size/hash.") from exc
    elif path.lower().endswith(PICKLE_EXTS):
        obj = safe_torch_load(path)
        if not isinstance(obj, dict):
            raise UnsupportedCheckpointError(f"{os.path.basename(path)}: holds a {type(obj).__name__}, not a "
                                             f"checkpoint dict. Fix: use the humansd-v1 .ckpt release file.")
        sd = conv.unwrap_state_dict(obj)
    else:
        raise UnsupportedCheckpointError(f"{os.path.basename(path)}: unknown checkpoint type; expected .ckpt, .pt, "
                                         ".pth, .safetensors or a diffusers folder")
    check_weights(((k, v) for k, v in sd.items()  # the weights the loader uses, not the training state beside them
                   if k.startswith(conv.WEIGHT_PREFIXES) and not k.startswith(conv.IGNORED_PREFIXES)),
                  os.path.basename(path))
    sidecar = os.path.splitext(path)[0] + SIDECAR_SUFFIX
    if os.path.isfile(sidecar):
        try:
            override = read_json_file(sidecar)
        except ValueError as exc:
            raise UnsupportedCheckpointError(f"{exc}. Fix: repair or delete this config file next to the "
                                             f"checkpoint.") from None
        check_override(override, os.path.basename(sidecar))
    elif override is not None:
        check_override(override, f"{os.path.basename(path)}: its {CONFIG_METADATA_KEY} metadata")
    return sd, override


# ---- building the components -----------------------------------------------------------------------------------
@contextlib.contextmanager
def _configs_of(source: str):
    """Restate what a config that cannot describe a network raises (diffusers and torch fail on a string, a
    negative width or a zero group count with their own error types) as one clear error. Used around the steps
    that read the configs and build on the meta device, before any weight is allocated."""
    try:
        yield
    except HumanGenError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch, diffusers, transformers and huggingface_hub's validators
        raise UnsupportedCheckpointError(
            f"{source}: its configs do not describe a HumanSD network ({type(exc).__name__}: {first_line(exc)}); "
            f"they are HumanGen's SD 2.1 configs with the overrides from a '<name>{SIDECAR_SUFFIX}' next to the "
            f"checkpoint or from the metadata HumanSD Convert wrote. Fix: delete or repair that config file, or "
            f"convert the original humansd-v1.ckpt again.") from exc


def _skeleton(factory, sd: dict, component: str, source: str, rename=None):
    """(module built on the meta device, `sd` with its keys as the module names them), after checking keys and
    shapes: nothing is allocated for a state dict that does not fit."""
    import torch
    with torch.device("meta"):
        model = factory()
    own = model.state_dict()
    if sd and not any(k in own for k in sd):  # e.g. transformers 5 names CLIPTextModel keys without 'text_model.'
        for prefix in ("text_model.",):
            stripped = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}
            if any(k in own for k in stripped):
                sd = stripped
                break
    conv.check_against_model(sd, model, component, source, rename=rename)
    return model, sd


def _materialize(model, sd: dict, component: str):
    """Load `sd` into a meta-device `model` by assignment (no random init)."""
    import torch
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    for mod_name, module in model.named_modules():  # non-persistent buffers are not in the state dict
        for buf_name, buf in list(module.named_buffers(recurse=False)):
            if buf.is_meta:
                if buf_name == "position_ids":
                    module.register_buffer(buf_name, torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)
                else:
                    raise RuntimeError(f"{component}: buffer {mod_name}.{buf_name} was not initialised")
    return model.eval().requires_grad_(False)


def _check_unet_channels(unet_cfg: dict, unet_sd: dict, source: str) -> None:
    w = unet_sd.get("conv_in.weight")
    if w is not None:
        _check_channels(int(w.shape[1]), int(unet_cfg["in_channels"]), source)


def _check_channels(have: int, want: int, source: str) -> None:
    if want != 8:
        raise UnsupportedCheckpointError(
            f"{source}: its UNet config asks for {want} input channels; HumanSD's UNet takes 8 (4 noisy latent + 4 "
            f"pose latent). Fix: delete or repair the config file next to the checkpoint.")
    if have != want:
        hint = {4: "a plain SD 2.x text-to-image model", 9: "an SD 2.x inpainting model"}.get(have, "not HumanSD")
        raise UnsupportedCheckpointError(
            f"{source}: the UNet's conv_in takes {have} input channels, HumanSD needs {want} (4 noisy latent + 4 pose "
            f"latent); this looks like {hint}. Load it with ComfyUI's checkpoint loader instead, or pick the "
            f"HumanSD checkpoint (humansd-v1.ckpt).")


def _checked_skeletons(sd: dict, configs: dict, source: str):
    """Split an LDM state dict and check each part against its network built on the meta device from `configs`:
    [(module, state dict, component)] for the UNet, VAE and text encoder, or one clear error."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from . import sampler as S
    with _configs_of(source):
        split = conv.split_ldm_checkpoint(sd, configs, source=source)
        _check_unet_channels(configs["unet"], split.unet, source)
        parts = [_skeleton(lambda: UNet2DConditionModel(**configs["unet"]), split.unet, "UNet", source),
                 _skeleton(lambda: AutoencoderKL(**configs["vae"]), split.vae, "VAE", source),
                 _skeleton(lambda: CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])), split.text_encoder,
                           "text encoder", source)]
        context_length = int(configs["text_encoder"]["max_position_embeddings"])
        alphas = S.alphas_cumprod(configs["scheduler"])
        if not (len(alphas) and bool(torch.isfinite(alphas).all()) and bool(((alphas > 0) & (alphas <= 1)).all())):
            raise ValueError("the scheduler config gives noise levels outside (0, 1]")
    return [(model, part, component) for (model, part), component in zip(parts, ("UNet", "VAE", "text encoder"))], \
        split.ignored, context_length


def build_model(sd: dict, configs: dict, source: str) -> HumanSDModel:
    """An LDM single-file state dict -> HumanSDModel, checked in full before any weight is allocated."""
    from .tokenizer import OpenCLIPTokenizer
    parts, ignored, context_length = _checked_skeletons(sd, configs, os.path.basename(source))
    unet, vae, text = (_materialize(model, part, component) for model, part, component in parts)
    return HumanSDModel(unet=unet, vae=vae, text_encoder=text,
                        tokenizer=OpenCLIPTokenizer(context_length=context_length),
                        configs=configs, source=source, ignored_keys=list(ignored))


def load_single_file(path: str, *, configs: dict | None = None) -> HumanSDModel:
    """The original LDM single-file checkpoint (or our LDM-layout .safetensors) -> HumanSDModel."""
    sd, override = read_state_dict(path)
    cfgs = configs or merge_configs(override)
    source = os.path.basename(path)
    if not conv.is_ldm_checkpoint(sd):
        raise UnsupportedCheckpointError(
            f"{source}: not an LDM/original-layout Stable Diffusion checkpoint (no '{conv.UNET_PREFIX}*' keys; "
            f"{len(sd)} entries, e.g. {list(sd)[:4]}). HumanSD loads from humansd-v1.ckpt, its .safetensors "
            f"conversion, or a diffusers folder with unet/, vae/ and text_encoder/.")
    return build_model(sd, cfgs, path)


def load_diffusers_folder(path: str) -> HumanSDModel:
    """A diffusers folder (unet/, vae/, text_encoder/ with their config.json); our tokenizer and scheduler."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from .tokenizer import OpenCLIPTokenizer
    source = os.path.basename(os.path.normpath(path))
    for sub in ("unet", "vae", "text_encoder"):
        if not os.path.isfile(os.path.join(path, sub, "config.json")):
            raise UnsupportedCheckpointError(f"{source}: diffusers folder without {sub}/config.json")
    try:
        folder_configs = {sub: read_json_file(os.path.join(path, sub, "config.json"), f"{source}: {sub}/config.json")
                          for sub in ("unet", "vae", "text_encoder")}
        check_override(folder_configs, f"{source}: the config.json files", diffusers_folder=True)
        in_ch = int(folder_configs["unet"].get("in_channels", 4))
    except HumanGenError:
        raise
    except (ValueError, TypeError, AttributeError) as exc:
        raise UnsupportedCheckpointError(f"{exc}. Fix: use the folder as diffusers saved it.") from None
    _check_channels(in_ch, 8, source)
    fix = "use the folder as diffusers saved it, or humansd-v1.ckpt."
    unet = load_pretrained(UNet2DConditionModel, os.path.join(path, "unet"), fix=fix)
    vae = load_pretrained(AutoencoderKL, os.path.join(path, "vae"), fix=fix)
    text = load_pretrained(CLIPTextModel, os.path.join(path, "text_encoder"), fix=fix)
    cfgs = merge_configs(None)
    cfgs.update(unet=dict(unet.config), vae=dict(vae.config), text_encoder=text.config.to_dict())
    return HumanSDModel(unet=unet.eval().requires_grad_(False), vae=vae.eval().requires_grad_(False),
                        text_encoder=text.eval().requires_grad_(False),
                        tokenizer=OpenCLIPTokenizer(context_length=int(text.config.max_position_embeddings)),
                        configs=cfgs, source=path)


def load_humansd(path: str, *, configs: dict | None = None) -> HumanSDModel:
    """Any supported HumanSD source -> HumanSDModel (weights on CPU, fp32, eval mode)."""
    if os.path.isdir(path):
        return load_diffusers_folder(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    return load_single_file(path, configs=configs)


# ---- converter -------------------------------------------------------------------------------------------------
def convert_to_safetensors(src: str, dst: str, *, half: bool = False, overwrite: bool = False) -> dict:
    """Rewrite a HumanSD single-file checkpoint as `.safetensors` in the same (LDM) key layout, keeping only the
    UNet/VAE/text-tower weights (ComfyUI's stock loader reads it too). Validates the whole checkpoint first; writes
    with `utils.paths.exclusive_writer`, so nothing half-written is left behind and an existing `dst` is replaced
    only with `overwrite`. Returns a small report."""
    import torch
    from safetensors.torch import save_file
    sd, override = read_state_dict(src)
    cfgs = merge_configs(override)
    source = os.path.basename(src)
    if not conv.is_ldm_checkpoint(sd):
        raise UnsupportedCheckpointError(f"{source}: not an LDM/original-layout checkpoint; nothing to convert")
    _, ignored, _ = _checked_skeletons(sd, cfgs, source)  # the loader's checks: no file it would refuse is written
    keep = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor) or not k.startswith(conv.WEIGHT_PREFIXES) \
                or k.startswith(conv.IGNORED_PREFIXES):
            continue  # keeps text_projection/logit_scale: ComfyUI's stock loader expects the whole tower
        v = v.detach().contiguous()
        if half and v.is_floating_point():
            v = v.to(torch.float16)
        keep[k] = v
    meta = {CONFIG_METADATA_KEY: json.dumps({k: cfgs[k] for k in ("unet", "vae", "text_encoder")}),
            "format": "pt", "humangen.source": source}
    from ...utils.paths import exclusive_writer
    with exclusive_writer(dst, node="HumanGenHumanSDConvert", overwrite=overwrite) as tmp:
        save_file(keep, tmp, metadata=meta)
    return {"written": dst, "tensors": len(keep), "ignored": len(ignored)}
