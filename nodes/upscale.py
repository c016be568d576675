"""Upscale nodes: a spandrel model loader (core UPSCALE_MODEL type), a feathered tiled upscaler, face refinement.

torch, numpy and spandrel are imported inside the functions (pack import stays cheap)."""
from __future__ import annotations

CATEGORY = "HumanGen/upscale"
PRECISIONS = ["auto", "fp32", "bf16", "fp16"]        # models.upscale.PRECISIONS (not imported: no torch here)
RESAMPLE = ["auto", "area", "bicubic", "bilinear"]   # models.upscale.RESAMPLE
MASK_MODES = ["resize", "model"]                     # models.upscale.MASK_MODES
UPSCALE_MODEL_TOOLTIP = "The upscale model (Upscale Model Loader (HumanGen) or the core Load Upscale Model)."


def _files(kind: str) -> list[str]:
    from ..utils import host
    return host.list_models(kind) or [_no_files(kind)]


def _no_files(kind: str) -> str:
    return f"(no files in models/{kind})"


def _tiling_inputs() -> dict:
    return {
        "tile_size": ("INT", {"default": 512, "min": 0, "max": 4096, "step": 8, "tooltip":
                      "Tile edge in input pixels (0 = whole image at once). Halved automatically on out-of-memory."}),
        "overlap": ("INT", {"default": 32, "min": 0, "max": 512, "step": 4, "tooltip":
                    "Overlap between tiles in input pixels; tiles are blended with linear ramps across it."}),
        "output_scale": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 16.0, "step": 0.05, "tooltip":
                         "Final size relative to the input (0 = the model's own scale, e.g. 4 for x4plus). "
                         "Other values resize the network output afterwards."}),
        "resample": (RESAMPLE, {"default": "auto", "tooltip":
                     "Filter for output_scale: auto = area when shrinking, bicubic when enlarging."}),
        "precision": (PRECISIONS, {"default": "auto", "tooltip":
                      "Compute precision: auto = fp32 on CPU, bf16/fp16 on GPU when the model supports it."}),
    }


def _model(node: str, input_name: str, value):
    """The UPSCALE_MODEL value (a spandrel ImageModelDescriptor), or a NodeInputError naming the input."""
    from ..utils.errors import NodeInputError
    needed = ("model", "scale", "input_channels", "output_channels", "to")
    if not all(hasattr(value, a) for a in needed) or not callable(value) or \
            type(value).__name__ == "MaskedImageModelDescriptor":
        raise NodeInputError(node, input_name, f"expected a single-image UPSCALE_MODEL, got {type(value).__name__}.",
                             fix="connect Upscale Model Loader (HumanGen) or the core Load Upscale Model node.")
    return value


class _HostCallbacks:
    """Progress per tile/face through the host, interrupt checks, memory release on OOM."""

    def __init__(self, desc: str):
        from ..utils import host
        self.host, self.desc, self.bar = host, desc, None
        self.check_interrupt, self.free_memory = host.check_interrupt, host.free_memory

    def on_step(self, done: int, total: int) -> None:
        if self.bar is None or self.bar.total != max(total, 1) or done < self.bar.value:
            self.bar = self.host.progress(total, self.desc)
        self.bar.update_absolute(done)


def _run_upscale(node, image, upscale_model, mask, tile_size, overlap, output_scale, resample, precision,
                 mask_mode="resize"):
    """Shared by the two upscale nodes: IMAGE/MASK in, UpscaleResult out (errors name node and input)."""
    from ..models import upscale as up
    from ..utils import host
    from ..utils.errors import NodeInputError
    from ..utils.image import check_image, check_mask, comfy_to_nchw

    check_image(image, node)
    for name, value, choices in (("precision", precision, PRECISIONS), ("resample", resample, RESAMPLE),
                                 ("mask_mode", mask_mode, MASK_MODES)):  # before any work: resample runs last
        if value not in choices:
            raise NodeInputError(node, name, f"{str(value)[:40]!r} is not one of {', '.join(choices)}.",
                                 fix=f"choose one of {', '.join(choices)}.")
    mask = None if mask is None else check_mask(mask, node, image.shape[0])
    desc = host.core_upscale_model(_model(node, "upscale_model", upscale_model))  # one patcher per network
    if tile_size and overlap >= tile_size:
        raise NodeInputError(node, "overlap", f"overlap {overlap} must be smaller than tile_size {tile_size}.",
                             fix="lower overlap (about 1/8 of the tile is plenty).")
    _check_output_size(node, image, int(desc.scale), output_scale)
    if mask is not None:
        mask = _fit_mask(mask, image)
    cb = _HostCallbacks(node)
    device = host.load_model(desc.model)
    try:
        return up.upscale(desc, comfy_to_nchw(image, signed=False), tile=tile_size, overlap=overlap,
                          out_scale=output_scale, resample=resample, precision=precision, device=device, mask=mask,
                          mask_mode=mask_mode, on_tile=cb.on_step, check_interrupt=cb.check_interrupt,
                          free_memory=cb.free_memory)
    except ValueError as exc:
        raise NodeInputError(node, "precision" if "support" in str(exc) else "upscale_model", str(exc)) from exc


def _check_output_size(node, image, scale: int, output_scale: float) -> None:
    """The network's output (scale x the input, assembled whole) and the final size both within the pack's image
    limit, checked before any work."""
    from ..models.upscale.upscaler import output_size
    from ..utils.limits import check_batch_pixels, check_image_size
    h, w = int(image.shape[1]), int(image.shape[2])
    check_image_size(w * scale, h * scale, node, "image", what=f"x{scale} network's output")
    out_h, out_w = output_size(h, w, output_scale) if output_scale > 0 else (h * scale, w * scale)
    if output_scale > 0:
        check_image_size(out_w, out_h, node, "output_scale", what="upscaled image")
    check_batch_pixels(int(image.shape[0]), out_w, out_h, node, "image", what="upscaled images")


def _fit_mask(mask, image):
    """A checked MASK [B,H,W] at the image size: core LoadImage gives a 64x64 placeholder for images without alpha,
    so a different size is resized (bilinear) rather than refused."""
    import torch.nn.functional as F

    if tuple(mask.shape[-2:]) != tuple(image.shape[1:3]):
        mask = F.interpolate(mask[:, None], size=tuple(image.shape[1:3]), mode="bilinear", align_corners=False)[:, 0]
    return mask


def _outputs(result):
    import torch

    from ..utils.image import nchw_to_comfy
    out = nchw_to_comfy(result.image, signed=False)
    mask = result.mask if result.mask is not None else torch.zeros(out.shape[:3])
    return out, mask.float().cpu().contiguous()


class HumanGenUpscaleModelLoader:
    DESCRIPTION = ("Loads an upscale/restoration model from models/upscale_models with spandrel (Real-ESRGAN "
                   "x4plus/x2plus, SRVGG compact, SwinIR, HAT, ...). Safe loading only (safetensors or weights-only "
                   "torch.load). The output is the core UPSCALE_MODEL type, usable by core nodes too.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("UPSCALE_MODEL",)
    RETURN_NAMES = ("upscale_model",)
    OUTPUT_TOOLTIPS = ("The loaded model (a spandrel ImageModelDescriptor, with the host's model patcher inside "
                       "ComfyUI, like the core loader's).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (_files("upscale_models"), {"tooltip": "File in models/upscale_models, e.g. "
                           "RealESRGAN_x4plus.pth (github.com/xinntao/Real-ESRGAN releases, BSD-3-Clause)."}),
            "extra_architectures": ("BOOLEAN", {"default": False, "tooltip":
                                    "Also detect spandrel_extra_arches models (CodeFormer, SRFormer, ...): "
                                    "non-commercial licences, optional package."}),
        }, "hidden": {"prompt": "PROMPT"}}

    def load(self, model_name, extra_architectures=False, prompt=None):
        from ..utils import host
        desc = _load_file("HumanGenUpscaleModelLoader", "upscale_models", model_name, "model_name",
                          extra_architectures, None, "pick an image super-resolution model file.", prompt)
        return (host.core_upscale_model(desc),)  # what core UpscaleModelLoader gives: core upscale nodes take it


class HumanGenTiledUpscale:
    DESCRIPTION = ("Upscales an IMAGE batch with an UPSCALE_MODEL in overlapping tiles blended with linear "
                   "feathering (no seams), halving the tile on out-of-memory. Optional output scale, MASK carried "
                   "to the output geometry, progress per tile, cancel between tiles.")
    CATEGORY = CATEGORY
    FUNCTION = "upscale"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("The upscaled images (RGBA input keeps its alpha).",
                       "The input mask at the output size (zeros when no mask was given).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {"tooltip": "The image(s) to upscale."}),
                             "upscale_model": ("UPSCALE_MODEL", {"tooltip": UPSCALE_MODEL_TOOLTIP}),
                             **_tiling_inputs()},
                "optional": {"mask": ("MASK", {"tooltip": "Optional mask, returned at the output size."}),
                             "mask_mode": (MASK_MODES, {"default": "resize", "tooltip":
                                           "resize: interpolate the mask; model: run it through the network "
                                           "as a grey image (sharper edges, one extra pass)."})}}

    def upscale(self, image, upscale_model, tile_size=512, overlap=32, output_scale=0.0, resample="auto",
                precision="auto", mask=None, mask_mode="resize"):
        result = _run_upscale("HumanGenTiledUpscale", image, upscale_model, mask, tile_size, overlap, output_scale,
                              resample, precision, mask_mode)
        return _outputs(result)


class HumanGenFaceRefineUpscale:
    DESCRIPTION = ("Upscales like Tiled Upscale (HumanGen), then finds faces (MTCNN) and restores each one with a "
                   "face model (GFPGAN, RestoreFormer; CodeFormer with extra architectures) from "
                   "models/face_restore, pasted back with a feathered mask.")
    CATEGORY = CATEGORY
    FUNCTION = "refine"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "face_mask")
    OUTPUT_TOOLTIPS = ("The upscaled image with restored faces.", "Where restored faces were blended in (0..1).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The image(s) to upscale."}),
            "upscale_model": ("UPSCALE_MODEL", {"tooltip": UPSCALE_MODEL_TOOLTIP}),
            "face_model_name": (_files("face_restore"), {"tooltip": "Face model in models/face_restore, e.g. "
                                "GFPGANv1.4.pth (github.com/TencentARC/GFPGAN releases)."}),
            **_tiling_inputs(),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                   "tooltip": "0 keeps the upscaled face, 1 uses the restored face fully."}),
            "detection_threshold": ("FLOAT", {"default": 0.9, "min": 0.1, "max": 1.0, "step": 0.01,
                                              "tooltip": "Minimum MTCNN face probability."}),
            "min_face_size": ("INT", {"default": 20, "min": 8, "max": 1024, "step": 1,
                                      "tooltip": "Smallest face to find, in input pixels."}),
            "feather": ("FLOAT", {"default": 0.1, "min": 0.01, "max": 0.5, "step": 0.01,
                                  "tooltip": "Width of the paste-back blend ramp, as a fraction of the face crop."}),
            "extra_architectures": ("BOOLEAN", {"default": False, "tooltip":
                                    "Allow spandrel_extra_arches face models (CodeFormer; non-commercial)."}),
        }, "optional": {"face_model": ("UPSCALE_MODEL", {"tooltip": "Use this face model instead of the file."})},
            "hidden": {"prompt": "PROMPT"}}

    def refine(self, image, upscale_model, face_model_name, tile_size=512, overlap=32, output_scale=0.0,
               resample="auto", precision="auto", strength=1.0, detection_threshold=0.9, min_face_size=20,
               feather=0.1, extra_architectures=False, face_model=None, prompt=None):
        node = "HumanGenFaceRefineUpscale"
        face_desc = _face_model(node, face_model_name, face_model, extra_architectures, prompt)
        result = _run_upscale(node, image, upscale_model, None, tile_size, overlap, output_scale, resample,
                              precision)
        refined = _refine(node, image, result, face_desc, detection_threshold, min_face_size, strength, feather)
        return _outputs(refined)


def _face_model(node, name, given, allow_extra, prompt=None):
    from ..utils.errors import NodeInputError
    if given is not None:
        desc = _model(node, "face_model", given)
        if desc.purpose != "FaceSR" or desc.scale != 1:
            raise NodeInputError(node, "face_model", f"{desc.architecture.name} is a {desc.purpose} x{desc.scale} "
                                 "model, not a face restorer.", fix="load GFPGAN, RestoreFormer or CodeFormer.")
        return desc
    return _load_file(node, "face_restore", name, "face_model_name", allow_extra, {"FaceSR"},
                      "pick a GFPGAN or RestoreFormer file (CodeFormer needs extra_architectures).", prompt)


def _load_file(node, kind, name, input_name, allow_extra, purposes, fix, prompt=None):
    """load_descriptor for a file of the `kind` folder; every failure names the node and the input to change."""
    from ..models.upscale import load_descriptor
    from ..models.upscale.loading import ExtraArchesMissingError
    from ..utils import host
    from ..utils.errors import (HumanGenError, NodeInputError, UnsafeCheckpointError, UnsupportedCheckpointError,
                                for_input)
    if name == _no_files(kind):
        usual = {"upscale_models": "RealESRGAN_x4plus.pth", "face_restore": "GFPGANv1.4.pth"}[kind]
        raise host.missing_model_error(kind, usual, node=node, input_name=input_name, prompt=prompt,
                                       folder_empty=True)
    path = host.model_path(kind, name, node=node, input_name=input_name, prompt=prompt)
    try:
        return load_descriptor(path, allow_extra=allow_extra, purposes=purposes)
    except ExtraArchesMissingError as exc:
        raise NodeInputError(node, "extra_architectures", str(exc)) from exc
    except (UnsupportedCheckpointError, UnsafeCheckpointError) as exc:
        raise NodeInputError(node, input_name, str(exc), fix=fix) from exc
    except HumanGenError as exc:  # e.g. a zip bomb refused by utils.limits
        raise for_input(exc, node, input_name, fix) from exc


def _refine(node, image, result, face_desc, threshold, min_face_size, strength, feather):
    """Restore the faces of the upscaled `result` (detected on the input image); returns `result` updated."""
    from ..models.upscale import faces
    from ..utils import host
    from ..utils.image import comfy_to_nchw
    cb = _HostCallbacks(node)
    device = host.load_model(face_desc.model)
    refined = faces.upscale_with_faces(
        None, face_desc, comfy_to_nchw(image, signed=False), upscaled=result, threshold=threshold,
        min_face_size=min_face_size, strength=strength, feather=feather, face_device=device,
        check_interrupt=cb.check_interrupt, on_face=cb.on_step)[0]
    return refined


NODE_CLASS_MAPPINGS = {
    "HumanGenUpscaleModelLoader": HumanGenUpscaleModelLoader,
    "HumanGenTiledUpscale": HumanGenTiledUpscale,
    "HumanGenFaceRefineUpscale": HumanGenFaceRefineUpscale,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HumanGenUpscaleModelLoader": "Upscale Model Loader (HumanGen)",
    "HumanGenTiledUpscale": "Tiled Upscale (HumanGen)",
    "HumanGenFaceRefineUpscale": "Upscale + Face Refine (HumanGen)",
}
