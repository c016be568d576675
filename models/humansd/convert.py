"""LDM/original single-file checkpoint keys -> diffusers keys, for HumanSD's three components.

The original checkpoint (`humansd-v1.ckpt`, an LDM `LatentDiffusion` state dict) holds
  `model.diffusion_model.*`   the UNet (openaimodel.UNetModel; `input_blocks.0.0.weight` is [320, 8, 3, 3])
  `first_stage_model.*`       the VAE (ldm AutoencoderKL: encoder/decoder/quant_conv/post_quant_conv)
  `cond_stage_model.model.*`  the OpenCLIP ViT-H/14 text tower (FrozenOpenCLIPEmbedder, visual tower deleted)
plus entries we ignore: DDPM schedule buffers (`betas`, `alphas_cumprod`, …, `logvar`), `model_ema.*`,
`mmpose_model.*` (the training-only heatmap net), `first_stage_model.loss.*`, optimizer/Lightning state.

Each mapping is an explicit table built from the component's config (so a checkpoint with other block counts fails
with named missing/unexpected keys instead of loading half). `split_ldm_checkpoint` returns the three diffusers
state dicts plus a report; `check_against_model` compares one with a model's own keys and raises a clear error.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...utils.errors import UnsupportedCheckpointError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.model."
WEIGHT_PREFIXES = (UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX)
# Prefixes (and exact keys) that legitimately occur in HumanSD / SD2 LDM checkpoints and are not part of inference.
IGNORED_PREFIXES = ("model_ema.", "mmpose_model.", "first_stage_model.loss.", "cond_stage_model.model.visual.",
                    "lvlb_weights", "optimizer", "lr_scheduler")
IGNORED_KEYS = {"betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "scale_factor",
                "cond_stage_model.model.logit_scale", "cond_stage_model.model.text_projection",
                "cond_stage_model.model.attn_mask"}

_LDM_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
               "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
_VAE_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def _rename(rest: str, table: dict[str, str] | None) -> str | None:
    """Rename the leading module path of `rest` (e.g. 'in_layers.0.weight') with `table`; None = identity."""
    if table is None:
        return rest
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return None


# ---- UNet ------------------------------------------------------------------------------------------------------
def unet_prefix_table(config: dict) -> list[tuple[str, str, dict | None]]:
    """[(ldm_prefix, diffusers_prefix, submodule table or None for same names)] for an SD-style UNet config."""
    blocks = list(config["block_out_channels"])
    n = int(config["layers_per_block"])
    down_attn = ["CrossAttn" in t for t in config["down_block_types"]]
    up_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    table: list[tuple[str, str, dict | None]] = [
        ("time_embed.0.", "time_embedding.linear_1.", None), ("time_embed.2.", "time_embedding.linear_2.", None),
        ("input_blocks.0.0.", "conv_in.", None), ("out.0.", "conv_norm_out.", None), ("out.2.", "conv_out.", None),
        ("middle_block.0.", "mid_block.resnets.0.", _LDM_RESNET),
        ("middle_block.1.", "mid_block.attentions.0.", None),
        ("middle_block.2.", "mid_block.resnets.1.", _LDM_RESNET),
    ]
    i = 1
    for level in range(len(blocks)):
        for j in range(n):
            table.append((f"input_blocks.{i}.0.", f"down_blocks.{level}.resnets.{j}.", _LDM_RESNET))
            if down_attn[level]:
                table.append((f"input_blocks.{i}.1.", f"down_blocks.{level}.attentions.{j}.", None))
            i += 1
        if level != len(blocks) - 1:
            table.append((f"input_blocks.{i}.0.op.", f"down_blocks.{level}.downsamplers.0.conv.", None))
            i += 1
    o = 0
    for level in range(len(blocks)):
        for j in range(n + 1):
            table.append((f"output_blocks.{o}.0.", f"up_blocks.{level}.resnets.{j}.", _LDM_RESNET))
            if up_attn[level]:
                table.append((f"output_blocks.{o}.1.", f"up_blocks.{level}.attentions.{j}.", None))
            if j == n and level != len(blocks) - 1:
                k = 2 if up_attn[level] else 1
                table.append((f"output_blocks.{o}.{k}.conv.", f"up_blocks.{level}.upsamplers.0.conv.", None))
            o += 1
    # Longest prefix first, so 'input_blocks.1.0.' never shadows 'input_blocks.10.0.' style ambiguities.
    return sorted(table, key=lambda e: -len(e[0]))


def _map_with_table(sd: dict, table) -> tuple[dict, list[str]]:
    out, unmapped = {}, []
    for key, value in sd.items():
        for old, new, sub in table:
            if key.startswith(old):
                rest = _rename(key[len(old):], sub)
                if rest is not None:
                    out[new + rest] = value
                    break
        else:
            unmapped.append(key)
    return out, unmapped


def convert_unet(sd: dict, config: dict) -> tuple[dict, list[str]]:
    """LDM UNet keys (without `model.diffusion_model.`) -> diffusers keys; returns (converted, unmapped keys)."""
    return _map_with_table(sd, unet_prefix_table(config))


# ---- VAE -------------------------------------------------------------------------------------------------------
def vae_prefix_table(config: dict) -> list[tuple[str, str, dict | None]]:
    levels = len(config["block_out_channels"])
    n = int(config["layers_per_block"])
    table: list[tuple[str, str, dict | None]] = [
        ("encoder.conv_in.", "encoder.conv_in.", None), ("encoder.conv_out.", "encoder.conv_out.", None),
        ("encoder.norm_out.", "encoder.conv_norm_out.", None),
        ("decoder.conv_in.", "decoder.conv_in.", None), ("decoder.conv_out.", "decoder.conv_out.", None),
        ("decoder.norm_out.", "decoder.conv_norm_out.", None),
        ("quant_conv.", "quant_conv.", None), ("post_quant_conv.", "post_quant_conv.", None),
    ]
    for part in ("encoder", "decoder"):
        table += [(f"{part}.mid.block_1.", f"{part}.mid_block.resnets.0.", _VAE_RESNET),
                  (f"{part}.mid.block_2.", f"{part}.mid_block.resnets.1.", _VAE_RESNET),
                  (f"{part}.mid.attn_1.", f"{part}.mid_block.attentions.0.", _VAE_ATTN)]
    for i in range(levels):
        for j in range(n):
            table.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}.", _VAE_RESNET))
        if i != levels - 1:
            table.append((f"encoder.down.{i}.downsample.conv.", f"encoder.down_blocks.{i}.downsamplers.0.conv.", None))
    for i in range(levels):  # LDM numbers decoder levels from the lowest resolution up; diffusers the other way
        k = levels - 1 - i
        for j in range(n + 1):
            table.append((f"decoder.up.{k}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}.", _VAE_RESNET))
        if i != levels - 1:
            table.append((f"decoder.up.{k}.upsample.conv.", f"decoder.up_blocks.{i}.upsamplers.0.conv.", None))
    return sorted(table, key=lambda e: -len(e[0]))


def convert_vae(sd: dict, config: dict) -> tuple[dict, list[str]]:
    """LDM VAE keys (without `first_stage_model.`) -> diffusers; 1x1-conv attention weights become linear."""
    out, unmapped = _map_with_table(sd, vae_prefix_table(config))
    for key, value in list(out.items()):
        if ".mid_block.attentions." in key and key.endswith(".weight") and value.ndim == 4:
            out[key] = value[:, :, 0, 0]
    return out, unmapped


# ---- OpenCLIP text tower -> CLIPTextModel ----------------------------------------------------------------------
_CLIP_LAYER = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
               "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


def convert_open_clip(sd: dict, config: dict) -> tuple[dict, list[str]]:
    """OpenCLIP text keys (without `cond_stage_model.model.`) -> `text_model.*` of a CLIPTextModel with
    `num_hidden_layers` blocks. Blocks past that (the last one, for SD2's 'penultimate' output) are dropped."""
    layers = int(config["num_hidden_layers"])
    out, unmapped = {}, []
    for key, value in sd.items():
        if key == "token_embedding.weight":
            out["text_model.embeddings.token_embedding.weight"] = value
        elif key == "positional_embedding":
            out["text_model.embeddings.position_embedding.weight"] = value
        elif key.startswith("ln_final."):
            out["text_model.final_layer_norm." + key[len("ln_final."):]] = value
        elif key.startswith("transformer.resblocks."):
            idx_str, rest = key[len("transformer.resblocks."):].split(".", 1)
            idx = int(idx_str)
            if idx >= layers:
                continue  # unused by the penultimate-layer output
            base = f"text_model.encoder.layers.{idx}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = "weight" if rest.endswith("weight") else "bias"
                q, k, v = value.chunk(3, dim=0)
                out[base + f"self_attn.q_proj.{kind}"] = q
                out[base + f"self_attn.k_proj.{kind}"] = k
                out[base + f"self_attn.v_proj.{kind}"] = v
            else:
                new = _rename(rest, _CLIP_LAYER)
                if new is None:
                    unmapped.append(key)
                else:
                    out[base + new] = value
        else:
            unmapped.append(key)
    return out, unmapped


# ---- whole checkpoint ------------------------------------------------------------------------------------------
@dataclass
class SplitCheckpoint:
    unet: dict
    vae: dict
    text_encoder: dict
    ignored: list[str] = field(default_factory=list)


def unwrap_state_dict(obj) -> dict:
    """A Lightning/LDM checkpoint keeps the weights under 'state_dict'; accept the bare dict too."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise UnsupportedCheckpointError(f"expected a state dict, found {type(obj).__name__}")
    return obj


def is_ldm_checkpoint(sd: dict) -> bool:
    return any(k.startswith(UNET_PREFIX) for k in sd)


def split_ldm_checkpoint(sd: dict, configs: dict, *, source: str = "checkpoint") -> SplitCheckpoint:
    """Split and convert an LDM single-file state dict; raise UnsupportedCheckpointError on anything unmapped."""
    parts: dict[str, dict] = {"unet": {}, "vae": {}, "text": {}}
    ignored, unknown = [], []
    for key, value in sd.items():
        if key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES):
            ignored.append(key)
        elif key.startswith(UNET_PREFIX):
            parts["unet"][key[len(UNET_PREFIX):]] = value
        elif key.startswith(VAE_PREFIX):
            parts["vae"][key[len(VAE_PREFIX):]] = value
        elif key.startswith(TEXT_PREFIX):
            parts["text"][key[len(TEXT_PREFIX):]] = value
        elif not hasattr(value, "shape"):
            ignored.append(key)  # bookkeeping scalars (global_step, epoch …) next to the weights
        else:
            unknown.append(key)
    for name, prefix in (("unet", UNET_PREFIX), ("vae", VAE_PREFIX), ("text", TEXT_PREFIX)):
        if not parts[name]:
            raise UnsupportedCheckpointError(
                f"{source}: no '{prefix}*' weights found. A HumanSD checkpoint in the original (LDM) layout has "
                f"'{UNET_PREFIX}*', '{VAE_PREFIX}*' and '{TEXT_PREFIX}*' keys; found prefixes "
                f"{sorted({k.split('.')[0] for k in sd})[:12]}.")
    unet, bad_unet = convert_unet(parts["unet"], configs["unet"])
    vae, bad_vae = convert_vae(parts["vae"], configs["vae"])
    text, bad_text = convert_open_clip(parts["text"], configs["text_encoder"])
    unmapped = [UNET_PREFIX + k for k in bad_unet] + [VAE_PREFIX + k for k in bad_vae] + \
               [TEXT_PREFIX + k for k in bad_text] + unknown
    if unmapped:
        raise UnsupportedCheckpointError(
            f"{source}: {len(unmapped)} weight(s) do not belong to a HumanSD (SD 2.1-base) model, e.g. "
            f"{unmapped[:5]}. Is this another architecture (SD 1.x, SDXL, a ControlNet)?")
    return SplitCheckpoint(unet=unet, vae=vae, text_encoder=text, ignored=ignored)


def check_against_model(converted: dict, model, component: str, source: str, *, rename=None) -> None:
    """Raise UnsupportedCheckpointError listing missing/unexpected keys and shape mismatches vs `model`."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    shapes = [(k, tuple(converted[k].shape), tuple(expected[k].shape)) for k in sorted(set(converted) & set(expected))
              if tuple(converted[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return
    show = rename or (lambda k: k)
    lines = []
    if missing:
        lines.append(f"{len(missing)} missing (e.g. {[show(k) for k in missing[:4]]})")
    if unexpected:
        lines.append(f"{len(unexpected)} unexpected (e.g. {[show(k) for k in unexpected[:4]]})")
    if shapes:
        lines.append("shape mismatches (name, checkpoint, HumanSD config): " +
                     ", ".join(f"{show(k)} {a} vs {b}" for k, a, b in shapes[:4]))
    raise UnsupportedCheckpointError(f"{source}: the {component} weights do not match HumanSD's {component} config: "
                                     + "; ".join(lines) + ".")
