"""Part references (the HUMANGEN_PARTS socket) and the clothes-parsing label mapping.

A part is one reference image, its text label (one of `LABELS`, the labels Parts2Whole was trained with) and an
optional mask (1 = the part). Without a mask the whole image is the part (upstream's behaviour for JPEG references).
An RGBA part (`from_rgba`) is composited on white, as upstream's pipeline does and as its training parts are, and its
alpha is kept: it is the part's mask when none is given, and the reference is resized as upstream's PIL pipeline
resizes an RGBA image (premultiplied alpha, see pipeline.prepare_references).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LABELS: tuple[str, ...] = (
    "upper body clothes", "lower body clothes", "whole body clothes", "hair or headwear", "face", "shoes",
)
MAX_PARTS = 6  # image-token slots of the decoupled cross-attention

# SegFormer `segformer_b2_clothes` classes (index = label id)
SEGFORMER_CLASSES: tuple[str, ...] = (
    "Background", "Hat", "Hair", "Sunglasses", "Upper-clothes", "Skirt", "Pants", "Dress", "Belt", "Left-shoe",
    "Right-shoe", "Face", "Left-leg", "Right-leg", "Left-arm", "Right-arm", "Bag", "Scarf",
)
# Parts2Whole label -> SegFormer class ids that make up that part (diffusion brief §2.9)
PART_CLASSES: dict[str, tuple[int, ...]] = {
    "hair or headwear": (1, 2),
    "face": (11,),
    "upper body clothes": (4,),
    "lower body clothes": (5, 6),
    "whole body clothes": (4, 5, 6, 7),
    "shoes": (9, 10),
}


@dataclass(frozen=True)
class PartRef:
    """One reference part: image [H, W, 3] float in [0, 1], label from LABELS, mask [H, W] in [0, 1] or None, and
    for a part that came with transparency its alpha [H, W] (the image is then already composited on white)."""

    image: torch.Tensor
    label: str
    mask: torch.Tensor | None = None
    alpha: torch.Tensor | None = None

    def __post_init__(self):
        if self.label not in LABELS:
            raise ValueError(f"part label {self.label!r} is not one of {list(LABELS)}")
        if self.image.ndim != 3 or self.image.shape[-1] != 3:
            raise ValueError(f"part image must be [H, W, 3], got {tuple(self.image.shape)}")
        if self.mask is not None and tuple(self.mask.shape) != tuple(self.image.shape[:2]):
            raise ValueError(f"part mask {tuple(self.mask.shape)} does not match image {tuple(self.image.shape[:2])}")
        if self.alpha is not None and tuple(self.alpha.shape) != tuple(self.image.shape[:2]):
            raise ValueError(f"part alpha {tuple(self.alpha.shape)} does not match image {tuple(self.image.shape[:2])}")

    @property
    def part_mask(self) -> torch.Tensor | None:
        """The mask the reference attention uses: the given mask, else the alpha (upstream's default), else None."""
        return self.mask if self.mask is not None else self.alpha


def from_rgba(image: torch.Tensor, label: str, mask: torch.Tensor | None = None) -> PartRef:
    """A part from an RGBA image [H, W, 4] in [0, 1]: colour composited on white with the alpha (whatever colour lies
    under transparent pixels is dropped), the alpha kept for the mask and the resize. An opaque image (alpha all 1)
    is an ordinary RGB part."""
    if image.ndim != 3 or image.shape[-1] != 4:
        raise ValueError(f"expected an RGBA part image [H, W, 4], got {tuple(image.shape)}")
    alpha = image[..., 3].float().clamp(0, 1)
    rgb = image[..., :3].float().clamp(0, 1)
    if bool((alpha >= 1).all()):
        return PartRef(rgb.contiguous(), label, mask)
    composite = rgb * alpha[..., None] + (1.0 - alpha[..., None])
    return PartRef(composite.contiguous(), label, mask, alpha.contiguous())


def add_part(parts: tuple[PartRef, ...] | None, part: PartRef) -> tuple[PartRef, ...]:
    """Append `part` to a chain of parts (a new tuple; at most MAX_PARTS)."""
    parts = tuple(parts or ())
    if len(parts) >= MAX_PARTS:
        raise ValueError(f"at most {MAX_PARTS} parts can be combined; this chain already has {len(parts)}")
    return parts + (part,)


def label_map_to_part_masks(label_map: torch.Tensor, labels=LABELS) -> dict[str, torch.Tensor]:
    """[H, W] integer SegFormer class map -> {part label: [H, W] float mask} using PART_CLASSES."""
    out = {}
    for label in labels:
        ids = torch.tensor(PART_CLASSES[label], device=label_map.device)
        out[label] = torch.isin(label_map, ids).float()
    return out


def class_masks_to_label_map(masks: torch.Tensor) -> torch.Tensor:
    """A MASK set -> [H, W] class map. Accepts [18, H, W] (one mask per SegFormer class, argmax wins) or [1, H, W] /
    [H, W] holding class ids as grey levels (id / 255, a class-index PNG loaded as a mask)."""
    if masks.ndim == 2:
        masks = masks[None]
    if masks.shape[0] == len(SEGFORMER_CLASSES):
        return masks.argmax(0)
    if masks.shape[0] == 1:
        ids = torch.round(masks[0].float() * 255).long()
        if int(ids.max()) >= len(SEGFORMER_CLASSES):
            raise ValueError(f"class-index mask holds id {int(ids.max())}; SegFormer clothes classes are "
                             f"0..{len(SEGFORMER_CLASSES) - 1}")
        return ids
    raise ValueError(f"expected {len(SEGFORMER_CLASSES)} masks (one per SegFormer class) or one class-index mask, "
                     f"got {masks.shape[0]}")


def segformer_label_map(model, processor, image: torch.Tensor) -> torch.Tensor:
    """Run a SegFormer clothes parser: image [H, W, 3] in [0, 1] -> [H, W] class ids (logits upsampled bilinearly)."""
    import numpy as np
    import torch.nn.functional as F
    arr = np.round(image.detach().cpu().float().clamp(0, 1).numpy() * 255).astype(np.uint8)
    inputs = processor(images=arr, return_tensors="pt")
    param = next(model.parameters())
    with torch.no_grad():
        logits = model(pixel_values=inputs["pixel_values"].to(param.device, param.dtype)).logits
    logits = F.interpolate(logits.float(), size=image.shape[:2], mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].cpu()


def crop_to_mask(image: torch.Tensor, mask: torch.Tensor, margin: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop image [H, W, 3] and mask [H, W] to the mask's bounding box grown by `margin` of its size."""
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    if ys.numel() == 0:
        return image, mask
    h, w = mask.shape
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    my, mx = int((y1 - y0) * margin), int((x1 - x0) * margin)
    y0, y1, x0, x1 = max(0, y0 - my), min(h, y1 + my), max(0, x0 - mx), min(w, x1 + mx)
    return image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
