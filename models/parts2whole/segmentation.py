"""Clothes parsing for part extraction: a SegFormer `segformer_b2_clothes` folder (transformers, safetensors only)
or a ready-made MASK set -> one mask per Parts2Whole label (mapping in `parts.PART_CLASSES`)."""
from __future__ import annotations

import os

import torch

from ...utils.errors import HumanGenError
from .parts import PART_CLASSES, SEGFORMER_CLASSES, PartRef, crop_to_mask, label_map_to_part_masks


def load_segformer(folder: str, device="cpu"):
    """(model, processor) from a transformers SegFormer folder (config.json + model.safetensors)."""
    from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor
    if not os.path.isfile(os.path.join(folder, "config.json")) or \
            not os.path.isfile(os.path.join(folder, "model.safetensors")):
        raise HumanGenError(f"{folder}: a SegFormer folder needs config.json and model.safetensors "
                            f"(https://huggingface.co/mattmdjaga/segformer_b2_clothes)")
    model = SegformerForSemanticSegmentation.from_pretrained(folder, use_safetensors=True, local_files_only=True)
    if model.config.num_labels != len(SEGFORMER_CLASSES):
        raise HumanGenError(f"{folder}: expected the {len(SEGFORMER_CLASSES)} clothes classes of "
                            f"segformer_b2_clothes, the model has {model.config.num_labels}")
    if os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        processor = SegformerImageProcessor.from_pretrained(folder, local_files_only=True, do_resize=False)
    else:
        processor = SegformerImageProcessor(do_resize=False)  # the upstream tool's setting
    return model.eval().to(device), processor


def parts_from_label_map(image: torch.Tensor, label_map: torch.Tensor, labels, *, crop: bool = False,
                         min_pixels: int = 16) -> tuple[list[PartRef], torch.Tensor, list[str]]:
    """image [H, W, 3] + class map [H, W] -> (parts for `labels` present in the map, their full-frame masks
    [P, H, W], labels skipped as absent (fewer than `min_pixels` pixels))."""
    if tuple(label_map.shape) != tuple(image.shape[:2]):
        label_map = torch.nn.functional.interpolate(label_map[None, None].float(), size=image.shape[:2],
                                                    mode="nearest")[0, 0].long()
    masks = label_map_to_part_masks(label_map, labels)
    parts, full, absent = [], [], []
    for label in labels:
        mask = masks[label]
        if int(mask.sum()) < min_pixels:
            absent.append(label)
            continue
        full.append(mask)
        img = image
        if crop:
            img, mask = crop_to_mask(image, mask)
        parts.append(PartRef(img.contiguous(), label, mask.contiguous()))
    full_masks = torch.stack(full) if full else torch.zeros(0, *image.shape[:2])
    return parts, full_masks, absent


__all__ = ["load_segformer", "parts_from_label_map", "PART_CLASSES"]
