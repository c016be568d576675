"""Parts2Whole's attention mechanism as diffusers attention processors (no patched forwards).

Three processors, installed per generation with `installed_processors(unet, {...})`, which restores the previous
processors in `finally`:

- `BankWriteProcessor` (reference UNet, every self-attention `attn1`): its `hidden_states` are the block's `norm1`
  output; they are multiplied by the part mask (nearest-resized to the block's token grid, 3x3 dilated, clamped to
  [0, 1]) and stored in a `PartBank` under the layer name. One forward over all K parts at t=0 fills the bank.
- `BankReadProcessor` (denoising UNet, every `attn1`): queries come from the layer's own tokens only; for the
  conditional rows of the CFG batch keys/values run over [own tokens || all parts' banked tokens]; unconditional rows
  get plain self-attention (so guidance pushes towards the references). Masked-out reference tokens are excluded by a
  key-padding mask (`exclusion="compact"` drops them before attention, `"mask"` passes a boolean SDPA mask; both are
  the same key-padding mask, the first avoids scoring tokens that can never receive weight). `upstream_parity=True`
  reproduces upstream's feature zeroing exactly: masked-out tokens stay in the sequence as zero vectors, so with
  bias-free `to_k`/`to_v` they score logit 0 and carry value 0 (they dilute the softmax, adding K*N' terms of
  exp(0) to its denominator, but add no content).
- `DecoupledCrossAttnProcessor` (denoising UNet, every `attn2`, an `nn.Module` owning `to_k_dc`/`to_v_dc`): the
  context is [text tokens || `num_image_tokens` part-image tokens]; text goes through the layer's own K/V, image tokens
  through `to_k_dc`/`to_v_dc`; the two attention results are summed (image term times `scale`) before `to_out`.
  The parameter names give `unet.state_dict()` keys `<attn path>.processor.to_k_dc.weight`, the layout of
  `decoupled_attn.pth`.

The bank's projected keys/values are computed once per generation (the bank never changes between steps), not per
step as upstream's patched forward does.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

SELF_ATTN_SUFFIX = "attn1.processor"
CROSS_ATTN_SUFFIX = "attn2.processor"


# ------------------------------------------------------------------------------------------------------------------
def mask_for_tokens(mask: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Part masks at image size -> per-token weights at a block's grid.

    Args:
        mask: [K, 1, H, W] float in [0, 1] at the generation size.
        num_tokens: N, the block's token count (H*W / scale^2 with scale a power of two).
    Returns:
        [K, N, 1]: nearest-resized to the grid, dilated with a 3x3 ones kernel and clamped to [0, 1] (upstream's rule).
    """
    k, _, h, w = mask.shape
    scale = 1 << int(math.ceil(math.log2((h * w) / num_tokens) / 2))
    gh, gw = math.ceil(h / scale), math.ceil(w / scale)
    if gh * gw != num_tokens:
        raise ValueError(f"mask of size {h}x{w} does not map onto a token grid of {num_tokens} tokens")
    small = F.interpolate(mask, size=(gh, gw), mode="nearest")
    kernel = torch.ones((1, 1, 3, 3), dtype=small.dtype, device=small.device)
    dilated = F.conv2d(small, kernel, padding=1).clamp(0.0, 1.0)
    return dilated.reshape(k, gh * gw, 1)


@dataclass
class PartBank:
    """Masked reference tokens per self-attention layer, filled once per generation by the write pass.

    features[name]: [K, N, C] (norm1 output x dilated mask); weights[name]: [K, N] dilated mask (a token is kept
    when its weight is > 0). `kv_cache` holds the projected keys/values per layer and exclusion mode.
    """

    features: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    kv_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @property
    def num_parts(self) -> int:
        return next(iter(self.features.values())).shape[0] if self.features else 0

    def clear(self) -> None:
        self.features.clear()
        self.weights.clear()
        self.kv_cache.clear()


class BankComplete(Exception):
    """Raised by the last write processor: every wanted layer is banked, the rest of the forward is not needed."""


def _sdpa(attn, query, key, value, mask=None) -> torch.Tensor:
    """[B, Lq, C] x [B, Lk, C] -> [B, Lq, C] multi-head scaled dot-product attention (no output projection)."""
    b = query.shape[0]
    heads = attn.heads
    head_dim = key.shape[-1] // heads
    q = query.view(b, -1, heads, head_dim).transpose(1, 2)
    k = key.view(key.shape[0], -1, heads, head_dim).transpose(1, 2).expand(b, -1, -1, -1)
    v = value.view(value.shape[0], -1, heads, head_dim).transpose(1, 2).expand(b, -1, -1, -1)
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(b, -1, heads * head_dim).to(query.dtype)


def _finish(attn, hidden_states, residual) -> torch.Tensor:
    hidden_states = attn.to_out[0](hidden_states)
    hidden_states = attn.to_out[1](hidden_states)
    if attn.residual_connection:
        hidden_states = hidden_states + residual
    return hidden_states / attn.rescale_output_factor


def _check_plain_self_attention(attn, hidden_states, name: str) -> None:
    if hidden_states.ndim != 3 or attn.spatial_norm is not None or attn.group_norm is not None:
        raise ValueError(f"{name}: Parts2Whole processors expect a transformer self-attention over [B, N, C] tokens")


def plain_attention(attn, hidden_states, encoder_hidden_states=None, attention_mask=None) -> torch.Tensor:
    """diffusers' default attention (`AttnProcessor2_0`) for [B, N, C] inputs without spatial/group norm."""
    residual = hidden_states
    b = hidden_states.shape[0]
    context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    if encoder_hidden_states is not None and attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    mask = None
    if attention_mask is not None:
        mask = attn.prepare_attention_mask(attention_mask, context.shape[1], b)
        mask = mask.view(b, attn.heads, -1, mask.shape[-1])
    out = _sdpa(attn, attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context), mask)
    return _finish(attn, out, residual)


# ------------------------------------------------------------------------------------------------------------------
class _WriteState:
    def __init__(self, bank: PartBank, masks: torch.Tensor, wanted: set[str], stop_when_done: bool):
        self.bank = bank
        self.masks = masks          # [K, 1, H, W] at the generation size
        self.pending = set(wanted)  # layer names still to bank
        self.stop_when_done = stop_when_done
        self._mask_cache: dict[int, torch.Tensor] = {}

    def weights(self, num_tokens: int, like: torch.Tensor) -> torch.Tensor:
        if num_tokens not in self._mask_cache:
            self._mask_cache[num_tokens] = mask_for_tokens(self.masks.to(like.device, torch.float32), num_tokens)
        return self._mask_cache[num_tokens].to(like.dtype)


class BankWriteProcessor:
    """Reference-UNet self-attention: bank norm1 output x part mask, then attend as usual."""

    def __init__(self, name: str, state: _WriteState):
        self.name = name
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        _check_plain_self_attention(attn, hidden_states, self.name)
        st = self.state
        if self.name in st.pending:
            if hidden_states.shape[0] != st.masks.shape[0]:
                raise ValueError(f"{self.name}: reference batch {hidden_states.shape[0]} != {st.masks.shape[0]} masks")
            w = st.weights(hidden_states.shape[1], hidden_states)  # [K, N, 1]
            st.bank.features[self.name] = hidden_states * w
            st.bank.weights[self.name] = w[..., 0]
            st.pending.discard(self.name)
            if st.stop_when_done and not st.pending:
                raise BankComplete
        return plain_attention(attn, hidden_states, encoder_hidden_states, attention_mask)


class ReadState:
    """Shared per-generation state of the read processors: the bank and how many leading batch rows are the
    unconditional CFG branch (the pipeline batches [uncond..., cond...])."""

    def __init__(self, bank: PartBank, *, upstream_parity: bool = False, exclusion: str = "compact"):
        if exclusion not in ("compact", "mask"):
            raise ValueError(f"exclusion must be 'compact' or 'mask', got {exclusion!r}")
        self.bank = bank
        self.upstream_parity = upstream_parity
        self.exclusion = exclusion
        self.num_uncond = 0  # the batch's first `num_uncond` rows are the unconditional CFG branch (plain attention)

    def bank_kv(self, name: str, attn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Projected bank keys/values [1, K*N', C] (cached per generation) and the key-keep mask [K*N'] or None."""
        feats = self.bank.features[name]
        keep = (self.bank.weights[name] > 0).reshape(-1)
        mode = "parity" if self.upstream_parity else self.exclusion
        key = (name, mode, feats.dtype, feats.device)
        if key not in self.bank.kv_cache:
            tokens = feats.reshape(1, -1, feats.shape[-1])
            if mode == "compact":
                tokens = tokens[:, keep]
            self.bank.kv_cache[key] = (attn.to_k(tokens), attn.to_v(tokens))
        k, v = self.bank.kv_cache[key]
        return k, v, (keep if mode == "mask" else None)


class BankReadProcessor:
    """Denoiser self-attention: conditional rows attend over [own || banked part tokens]; others plain."""

    def __init__(self, name: str, state: ReadState):
        self.name = name
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        st = self.state
        if encoder_hidden_states is not None or attention_mask is not None or self.name not in st.bank.features:
            return plain_attention(attn, hidden_states, encoder_hidden_states, attention_mask)
        _check_plain_self_attention(attn, hidden_states, self.name)
        residual = hidden_states
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        u = st.num_uncond  # rows [:u] unconditional (plain self-attention), rows [u:] read the bank
        outs = []
        if u:
            outs.append(_sdpa(attn, query[:u], key[:u], value[:u]))
        if u < hidden_states.shape[0]:
            bk, bv, keep = st.bank_kv(self.name, attn)
            nc = hidden_states.shape[0] - u
            k_all = torch.cat([key[u:], bk.expand(nc, -1, -1)], dim=1)
            v_all = torch.cat([value[u:], bv.expand(nc, -1, -1)], dim=1)
            mask = None
            if keep is not None:  # key-padding mask: own tokens always, reference tokens where the mask is > 0
                own = torch.ones(hidden_states.shape[1], dtype=torch.bool, device=keep.device)
                mask = torch.cat([own, keep]).view(1, 1, 1, -1)
            outs.append(_sdpa(attn, query[u:], k_all, v_all, mask))
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return _finish(attn, out, residual)


# ------------------------------------------------------------------------------------------------------------------
class DecoupledCrossAttnProcessor(nn.Module):
    """Cross-attention over text tokens (layer's K/V) plus part-image tokens (own `to_k_dc`/`to_v_dc`), summed."""

    def __init__(
        self,
        hidden_size: int,           # the layer's inner dim (320/640/1280 in SD 1.5)
        cross_attention_dim: int,   # width of the context tokens (768 in SD 1.5: CLIP text and image embeds)
        num_image_tokens: int = 6,  # image-token slots at the end of the context (upstream: max_image_length=6)
        scale: float = 1.0,         # weight of the image term
    ):
        super().__init__()
        self.hidden_size = hidden_size
        self.cross_attention_dim = cross_attention_dim
        self.num_image_tokens = num_image_tokens
        self.scale = scale
        self.to_k_dc = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_dc = nn.Linear(cross_attention_dim, hidden_size, bias=False)

    def extra_repr(self) -> str:
        return (f"hidden_size={self.hidden_size}, cross_attention_dim={self.cross_attention_dim}, "
                f"num_image_tokens={self.num_image_tokens}, scale={self.scale}")

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is None:
            raise ValueError("DecoupledCrossAttnProcessor is for cross-attention layers (attn2)")
        if encoder_hidden_states.shape[1] <= self.num_image_tokens:
            raise ValueError(f"context has {encoder_hidden_states.shape[1]} tokens; expected text tokens followed by "
                             f"{self.num_image_tokens} image tokens")
        residual = hidden_states
        text = encoder_hidden_states[:, :-self.num_image_tokens]
        image = encoder_hidden_states[:, -self.num_image_tokens:]
        if attn.norm_cross:
            text = attn.norm_encoder_hidden_states(text)
        b = hidden_states.shape[0]
        mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, text.shape[1], b)
            mask = mask.view(b, attn.heads, -1, mask.shape[-1])
        query = attn.to_q(hidden_states)
        out = _sdpa(attn, query, attn.to_k(text), attn.to_v(text), mask)
        image = image.to(self.to_k_dc.weight.dtype)
        out_dc = _sdpa(attn, query, self.to_k_dc(image), self.to_v_dc(image))
        return _finish(attn, out + self.scale * out_dc, residual)


def decoupled_processors(unet, num_image_tokens: int = 6, scale: float = 1.0) -> dict[str, DecoupledCrossAttnProcessor]:
    """A `DecoupledCrossAttnProcessor` for every cross-attention layer of `unet`, sized from the layer itself."""
    procs = {}
    for name, module in _attention_modules(unet).items():
        if not name.endswith(CROSS_ATTN_SUFFIX):
            continue
        procs[name] = DecoupledCrossAttnProcessor(module.to_q.out_features, module.to_k.in_features,
                                                  num_image_tokens, scale)
    return procs


# ------------------------------------------------------------------------------------------------------------------
def _attention_modules(unet) -> dict[str, nn.Module]:
    """Processor name ('<path>.processor') -> its Attention module, in the model's module order."""
    return {f"{path}.processor": m for path, m in unet.named_modules() if hasattr(m, "set_processor")}


def self_attention_names(unet, fusion_blocks: str = "full") -> list[str]:
    """Names of the transformer self-attention processors that take part in reference sharing."""
    if fusion_blocks not in ("full", "midup"):
        raise ValueError(f"fusion_blocks must be 'full' or 'midup', got {fusion_blocks!r}")
    names = [n for n in unet.attn_processors if n.endswith(SELF_ATTN_SUFFIX) and ".transformer_blocks." in n]
    if fusion_blocks == "midup":
        names = [n for n in names if n.startswith(("mid_block.", "up_blocks."))]
    return names


@contextlib.contextmanager
def installed_processors(unet, processors: dict):
    """Set `processors` (name -> processor, a subset) on `unet` for the block; restore the previous ones after."""
    previous = dict(unet.attn_processors)
    unknown = set(processors) - set(previous)
    if unknown:
        raise KeyError(f"no attention layers named {sorted(unknown)[:3]}...")
    merged = dict(previous)
    merged.update(processors)
    unet.set_attn_processor(merged)  # set_attn_processor consumes its dict: `merged` is a copy
    try:
        yield unet
    finally:
        unet.set_attn_processor(dict(previous))


def write_processors(names, bank: PartBank, masks: torch.Tensor, stop_when_done: bool = True) -> dict:
    state = _WriteState(bank, masks, set(names), stop_when_done)
    return {n: BankWriteProcessor(n, state) for n in names}


def read_processors(names, state: ReadState) -> dict:
    return {n: BankReadProcessor(n, state) for n in names}
