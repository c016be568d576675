"""Parts2Whole nodes: load the model, collect reference parts (by hand or from a clothes segmentation), generate.

Heavy imports (torch, diffusers, our models) happen inside the functions: importing the pack stays cheap.
"""
from __future__ import annotations

import logging

from ..utils import host
from ..utils.errors import HumanGenError, NodeInputError

CATEGORY = "HumanGen/parts2whole"
LABELS = ("upper body clothes", "lower body clothes", "whole body clothes", "hair or headwear", "face", "shoes")
NO_FOLDER = "(put a Parts2Whole folder in models/parts2whole)"
NO_SEGFORMER = "none (use the segmentation input)"
PART_TOGGLES = (("face", "face"), ("hair_or_headwear", "hair or headwear"),
                ("upper_body_clothes", "upper body clothes"), ("lower_body_clothes", "lower body clothes"),
                ("whole_body_clothes", "whole body clothes"), ("shoes", "shoes"))
log = logging.getLogger("humangen")


def _folders(kind: str, empty: str) -> list[str]:
    try:
        return host.list_models(kind, dirs_only=True) or [empty]
    except Exception:  # noqa: BLE001 - the UI must still list the node
        return [empty]


class HumanGenParts2WholeLoader:
    DESCRIPTION = ("Loads a Parts2Whole diffusers-format folder (huanngzh/Parts2Whole: unet, reference_unet, vae, "
                   "text/image encoders, pose_guider, scheduler, decoupled_attn.pth) from models/parts2whole. "
                   "Safetensors only; a missing component is named in the error.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("HUMANGEN_PARTS2WHOLE",)
    RETURN_NAMES = ("parts2whole",)
    OUTPUT_TOOLTIPS = ("The Parts2Whole model for the part-reference sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (_folders("parts2whole", NO_FOLDER), {
                "tooltip": "A folder in models/parts2whole holding the whole huanngzh/Parts2Whole repository."}),
            "precision": (["auto", "fp16", "bf16", "fp32"], {
                "default": "auto", "tooltip": "Weight precision; auto = fp16 on GPU, fp32 on CPU."}),
        }, "hidden": {"prompt": "PROMPT"}}

    def load(self, model_name, precision="auto", prompt=None):
        import torch

        from ..models.parts2whole.loader import load_parts2whole, missing_components
        node = "HumanGenParts2WholeLoader"
        if model_name == NO_FOLDER:
            raise host.missing_model_error("parts2whole", "Parts2Whole", node=node, input_name="model_name",
                                           prompt=prompt, folder_empty=True)
        path = host.model_path("parts2whole", model_name, node=node, input_name="model_name", prompt=prompt)
        missing = missing_components(path)
        if missing:
            raise NodeInputError(node, "model_name", f"the folder {path} is missing: {', '.join(missing)}.",
                                 fix="download the complete repository https://huggingface.co/huanngzh/Parts2Whole.")
        device = host.torch_device()
        if precision == "auto":
            precision = "fp16" if device.type == "cuda" else "fp32"
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
        from ..utils.errors import HumanGenError, for_input
        try:
            return (load_parts2whole(path, dtype=dtype, device=host.offload_device()),)
        except HumanGenError as exc:
            raise for_input(exc, node, "model_name", "download the complete repository "
                            "https://huggingface.co/huanngzh/Parts2Whole again.") from exc


def _one_mask(mask, image, node, invert):
    import torch.nn.functional as F

    from ..utils.image import check_mask
    m = check_mask(mask, node)[0]
    if tuple(m.shape) != tuple(image.shape[:2]):
        m = F.interpolate(m[None, None], size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    m = (1.0 - m) if invert else m
    if not bool((m > 0.5).any()):
        raise NodeInputError(node, "mask", "the mask is empty, so this part would have no effect.",
                             fix="leave the mask unconnected to use the whole image (LoadImage gives an empty mask "
                                 "for images without transparency), paint the part in the mask editor, or toggle "
                                 "invert_mask for a cut-out whose background is transparent.")
    return m.clamp(0, 1).contiguous()


class HumanGenPartReference:
    DESCRIPTION = ("One reference part for Parts2Whole: an image of the garment/face/hair/shoes, its label and an "
                   "optional mask (1 = the part). Chain up to 6 of these through the 'parts' input. An RGBA image "
                   "is composited on white (upstream's parts are on white) and its alpha is the mask when none is "
                   "connected; parts are resized to the generation size antialiased bicubic, as upstream's PIL "
                   "pipeline.")
    CATEGORY = CATEGORY
    FUNCTION = "add"
    RETURN_TYPES = ("HUMANGEN_PARTS",)
    RETURN_NAMES = ("parts",)
    OUTPUT_TOOLTIPS = ("The parts so far (this one appended).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The reference image of this part (one image). With 4 channels (RGBA, "
                                "e.g. from ComfyUI's Join Image with Alpha) the colour is composited on white by the "
                                "alpha, so nothing under transparent pixels reaches the reference, and the alpha is "
                                "the part mask unless a mask is connected."}),
            "label": (list(LABELS), {"default": "upper body clothes",
                                     "tooltip": "What the part is; Parts2Whole was trained with these six labels."}),
            "invert_mask": ("BOOLEAN", {"default": False, "tooltip":
                                        "Invert the mask. LoadImage's MASK of a transparent cut-out is 1 on the "
                                        "background: enable this to use it."}),
        }, "optional": {
            "mask": ("MASK", {"tooltip": "Where the part is (1 = part); it gates the reference attention only (the "
                              "image is not composited with it). Unconnected: the alpha of an RGBA image, else the "
                              "whole image."}),
            "parts": ("HUMANGEN_PARTS", {"tooltip": "Previous parts to append to (up to 6 in total)."}),
        }}

    def add(self, image, label, invert_mask=False, mask=None, parts=None):
        import torch

        from ..models.parts2whole.parts import MAX_PARTS, from_rgba
        from ..utils.image import check_image
        node = "HumanGenPartReference"
        check_image(image, node)
        if image.shape[0] != 1:
            raise NodeInputError(node, "image", f"got a batch of {image.shape[0]} images; a part is one image.",
                                 fix="use one HumanGenPartReference node per part image.")
        if label not in LABELS:
            raise NodeInputError(node, "label", f"{label!r} is not one of {list(LABELS)}.")
        parts = tuple(parts or ())
        if len(parts) >= MAX_PARTS:
            raise NodeInputError(node, "parts", f"already holds {len(parts)} parts; Parts2Whole takes at most "
                                 f"{MAX_PARTS}.", fix="remove a part from the chain.")
        img = image[0].float().cpu()
        if img.shape[-1] == 3:  # an opaque part: alpha 1
            img = torch.cat([img, torch.ones_like(img[..., :1])], -1)
        m = None if mask is None else _one_mask(mask.float().cpu(), img, node, invert_mask)
        part = from_rgba(img, label, m)
        if part.part_mask is not None and not bool((part.part_mask > 0.5).any()):
            raise NodeInputError(node, "image", "the image is fully transparent (alpha 0 everywhere), so this part "
                                 "would have no effect.", fix="use an image whose part is opaque, or connect a mask.")
        return (parts + (part,),)


class HumanGenPartsFromSegmentation:
    DESCRIPTION = ("Cuts Parts2Whole parts out of one person photo with a clothes parser: a SegFormer "
                   "segformer_b2_clothes folder in models/segformer, or a MASK set (18 masks, one per SegFormer "
                   "class, or one class-index mask). Labels: hair or headwear = hat+hair, face = face, upper = "
                   "upper-clothes, lower = skirt+pants, whole = upper+skirt+pants+dress, shoes = both shoes.")
    CATEGORY = CATEGORY
    FUNCTION = "extract"
    RETURN_TYPES = ("HUMANGEN_PARTS", "MASK")
    RETURN_NAMES = ("parts", "masks")
    OUTPUT_TOOLTIPS = ("The parts found (appended to 'parts' if connected).",
                       "The mask of every part found, in order (for previewing).")

    @classmethod
    def INPUT_TYPES(cls):
        req = {
            "image": ("IMAGE", {"tooltip": "A photo of the person whose clothes/face/hair to take."}),
            "segformer": ([f for f in _folders("segformer", NO_SEGFORMER) if f != NO_SEGFORMER] + [NO_SEGFORMER], {
                "tooltip": "A transformers SegFormer clothes parser folder in models/segformer "
                           "(mattmdjaga/segformer_b2_clothes). A connected segmentation input takes precedence."}),
            "crop_to_part": ("BOOLEAN", {"default": False, "tooltip":
                                         "Crop each part's image to its mask (plus 10%). Off = the whole photo with "
                                         "the mask, as upstream's segmentation tool produces."}),
        }
        for key, label in PART_TOGGLES:
            req[key] = ("BOOLEAN", {"default": label in ("face", "hair or headwear", "upper body clothes",
                                                         "lower body clothes"),
                                    "tooltip": f"Extract the '{label}' part."})
        return {"required": req, "optional": {
            "segmentation": ("MASK", {"tooltip": "Instead of SegFormer: 18 masks (one per segformer_b2_clothes "
                                                 "class, in class order) or one class-index mask (id / 255)."}),
            "parts": ("HUMANGEN_PARTS", {"tooltip": "Previous parts to append to (up to 6 in total)."}),
        }}

    def extract(self, image, segformer, crop_to_part=False, segmentation=None, parts=None, **toggles):
        from ..models.parts2whole.parts import MAX_PARTS, class_masks_to_label_map, segformer_label_map
        from ..models.parts2whole.segmentation import load_segformer, parts_from_label_map
        from ..utils.image import check_image
        node = "HumanGenPartsFromSegmentation"
        img = check_image(image, node)[0].float().cpu()
        labels = [label for key, label in PART_TOGGLES if toggles.get(key, False)]
        if not labels:
            raise NodeInputError(node, "face", "no part is switched on.", fix="switch on at least one part.")
        if segmentation is not None:
            from ..utils.image import check_mask
            masks = check_mask(segmentation, node, input_name="segmentation")  # [B,1,H,W] -> [B,H,W]
            try:
                label_map = class_masks_to_label_map(masks.float().cpu())
            except ValueError as exc:
                raise NodeInputError(node, "segmentation", str(exc)) from exc
        elif segformer == NO_SEGFORMER:
            raise NodeInputError(node, "segformer", "no SegFormer model is selected and no segmentation is given.",
                                 fix="put mattmdjaga/segformer_b2_clothes in models/segformer, or connect a MASK set.")
        else:
            path = host.model_path("segformer", segformer, node=node, input_name="segformer")
            seg_model, processor = load_segformer(path, host.torch_device())
            label_map = segformer_label_map(seg_model, processor, img)
            del seg_model
        found, masks, absent = parts_from_label_map(img, label_map, labels, crop=crop_to_part)
        if absent:
            log.info("%s: not in the photo, skipped: %s", node, ", ".join(absent))
        if not found:
            raise NodeInputError(node, "image", f"none of the selected parts ({', '.join(labels)}) was found.",
                                 fix="check the photo/segmentation or switch on other parts.")
        chain = tuple(parts or ()) + tuple(found)
        if len(chain) > MAX_PARTS:
            raise NodeInputError(node, "parts", f"{len(chain)} parts in total; Parts2Whole takes at most "
                                 f"{MAX_PARTS}.", fix="switch off some parts.")
        return (chain, masks)


_SAMPLER_INPUTS = {"pose": "densepose", "negative_prompt": "negative", "height": "height", "width": "width",
                   "steps": "steps", "guidance": "guidance", "batch_size": "batch_size", "seed": "seed",
                   "prompt": "prompt"}


def _input_named_in(message: str) -> str:
    """The node input a sampler ValueError is about (its message names the argument in backticks)."""
    import re
    m = re.search(r"`(\w+)", message)
    return _SAMPLER_INPUTS.get(m.group(1), "parts") if m else "parts"


class HumanGenPartReferenceSampler:
    DESCRIPTION = ("Parts2Whole: generates a person wearing the reference parts in the pose of a DensePose image "
                   "(768x512 by default). Fixes upstream's ignored masks, collapsed labels/prompt and batch bugs.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The generated people, one per batch item (image i uses seed + i).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "parts2whole": ("HUMANGEN_PARTS2WHOLE", {"tooltip": "From HumanGenParts2WholeLoader."}),
            "parts": ("HUMANGEN_PARTS", {"tooltip": "Reference parts (HumanGenPartReference / FromSegmentation)."}),
            "densepose": ("IMAGE", {"tooltip": "DensePose render of the target pose (DeepFashion-MultiModal style); "
                                               "one image, or one per batch item."}),
            "prompt": ("STRING", {"multiline": True, "default": "a person, high quality, realistic",
                                  "tooltip": "Text description of the whole image."}),
            "negative": ("STRING", {"multiline": True, "default": "",
                                    "tooltip": "Negative prompt (the unconditional branch)."}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 200, "step": 1, "tooltip": "DDIM steps."}),
            "guidance": ("FLOAT", {"default": 3.5, "min": 1.0, "max": 20.0, "step": 0.1,
                                   "tooltip": "Classifier-free guidance scale (1 = off)."}),
            "seed": ("INT", {"default": 42, "min": 0, "max": 2**32 - 1, "control_after_generate": True,
                             "tooltip": "Noise seed; batch item i uses seed + i."}),
            "width": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 64, "tooltip": "Output width."}),
            "height": ("INT", {"default": 768, "min": 64, "max": 2048, "step": 64, "tooltip": "Output height."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 16, "step": 1,
                                   "tooltip": "Number of images (they share the reference pass)."}),
        }, "optional": {
            "image_token_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                            "tooltip": "Weight of the part-image tokens in the decoupled "
                                                       "cross-attention."}),
            "upstream_parity": ("BOOLEAN", {"default": False, "tooltip":
                                            "Reproduce upstream's masking exactly (masked-out reference tokens stay "
                                            "as zero vectors that dilute attention) instead of excluding them."}),
        }}

    def sample(self, parts2whole, parts, densepose, prompt, negative, steps, guidance, seed, width, height,
               batch_size, image_token_scale=1.0, upstream_parity=False):
        from ..models.parts2whole.pipeline import generate
        from ..utils.image import check_image, comfy_to_nchw, nchw_to_comfy
        node = "HumanGenPartReferenceSampler"
        pose = check_image(densepose, node, "densepose")
        if pose.shape[0] not in (1, batch_size):
            raise NodeInputError(node, "densepose", f"{pose.shape[0]} images for batch_size {batch_size}.",
                                 fix="give one DensePose image or one per batch item.")
        for module in parts2whole.modules():
            host.load_model(module)
        bar = host.progress(steps, "Parts2Whole")

        def on_step(step, total, latents):
            bar.update_absolute(step)
            host.check_interrupt()

        try:
            out = generate(parts2whole, list(parts), comfy_to_nchw(pose, signed=False), prompt, negative,
                           steps=steps, guidance=guidance, seed=seed, height=height, width=width,
                           batch_size=batch_size, upstream_parity=upstream_parity,
                           image_token_scale=image_token_scale, callback=on_step)
        except ValueError as exc:
            if isinstance(exc, HumanGenError):
                raise
            raise NodeInputError(node, _input_named_in(str(exc)), str(exc)) from exc
        finally:
            bar.close()
        return (nchw_to_comfy(out),)


NODE_CLASS_MAPPINGS = {
    "HumanGenParts2WholeLoader": HumanGenParts2WholeLoader,
    "HumanGenPartReference": HumanGenPartReference,
    "HumanGenPartsFromSegmentation": HumanGenPartsFromSegmentation,
    "HumanGenPartReferenceSampler": HumanGenPartReferenceSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HumanGenParts2WholeLoader": "Parts2Whole Loader (HumanGen)",
    "HumanGenPartReference": "Part Reference (HumanGen)",
    "HumanGenPartsFromSegmentation": "Parts From Segmentation (HumanGen)",
    "HumanGenPartReferenceSampler": "Part Reference Sampler (HumanGen)",
}
