"""HumanSD nodes: load the skeleton-guided SD 2.1 model, sample from a pose, convert checkpoints, and patch a
ComfyUI MODEL so the stock KSampler runs HumanSD (that last node registers only inside ComfyUI).

Heavy imports (torch, numpy, diffusers, models/) happen inside the functions: importing the pack stays cheap.
"""
from __future__ import annotations

import os

from ..utils import host
from ..utils.errors import NodeInputError

CATEGORY = "HumanGen/humansd"
HUMANSD = "HUMANGEN_HUMANSD"
DEFAULT_NEGATIVE = ("longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
                    "worst quality, low quality")
DEFAULT_ADDED = "detailed background, best quality, extremely detailed"
SCHEDULERS = ["ddim", "dpmpp_2m", "dpmpp_2m_karras", "euler"]  # = models.humansd.sampler.SCHEDULERS
DEFAULT_FILE = "humansd-v1.ckpt"
NO_MODELS = "(no files in models/humansd)"


def _model_choices(include_folders: bool = True) -> list[str]:
    names = host.list_models("humansd")
    if include_folders:
        for root in host.model_dirs("humansd"):
            if os.path.isdir(root):
                names += sorted(d for d in os.listdir(root)
                                if os.path.isfile(os.path.join(root, d, "unet", "config.json")))
    return names or [NO_MODELS]  # a COMBO needs an entry, but never an absent file (the frontend trusts the list)


def _checkpoint(node: str, ckpt_name: str, prompt: dict | None) -> str:
    if ckpt_name == NO_MODELS:
        raise host.missing_model_error("humansd", DEFAULT_FILE, node=node, input_name="ckpt_name", prompt=prompt,
                                       folder_empty=True)
    return host.model_path("humansd", ckpt_name, node=node, input_name="ckpt_name", prompt=prompt)


def _offloader():
    from ..models.humansd.pipeline import Offloader
    return Offloader(host.torch_device(), offload_device=host.offload_device(), load=host.load_model,
                     managed=host.in_comfyui())


def _target_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """HumanSD's resize_image: scale the short side to `short_side`, round both sides to multiples of 64."""
    k = float(short_side) / min(height, width)
    return max(64, int(round(height * k / 64.0)) * 64), max(64, int(round(width * k / 64.0)) * 64)


def _resize_images(image, height: int, width: int):
    """IMAGE -> uint8 [B,H,W,3] resized like HumanSD's demo (LANCZOS4 up, AREA down)."""
    import cv2
    import numpy as np

    from ..utils.image import comfy_to_uint8
    arr = comfy_to_uint8(image[..., :3])
    up = height * width > arr.shape[1] * arr.shape[2]
    interp = cv2.INTER_LANCZOS4 if up else cv2.INTER_AREA
    return np.stack([a if a.shape[:2] == (height, width) else cv2.resize(a, (width, height), interpolation=interp)
                     for a in arr])


class HumanGenHumanSDLoader:
    DESCRIPTION = ("Load HumanSD (skeleton-guided Stable Diffusion 2.1-base, IDEA-Research) from models/humansd: the "
                   "original humansd-v1.ckpt (read safely, no code execution), its .safetensors conversion, or a "
                   "diffusers folder. Configs ship with the pack; nothing is downloaded.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (HUMANSD,)
    RETURN_NAMES = ("humansd",)
    OUTPUT_TOOLTIPS = ("The HumanSD model (UNet, VAE, OpenCLIP text encoder, tokenizer) for the Skeleton-SD sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        choices = _model_choices()
        return {"required": {"ckpt_name": (choices, {"default": choices[0], "tooltip":
                "HumanSD weights in models/humansd: humansd-v1.ckpt (from the HumanSD README), a .safetensors made "
                "by 'HumanSD Convert', or a diffusers folder."})}, "hidden": {"prompt": "PROMPT"}}

    def load(self, ckpt_name, prompt=None):
        from ..models.humansd.loader import load_humansd
        from ..utils.errors import HumanGenError, for_input
        node = "HumanGenHumanSDLoader"
        path = _checkpoint(node, ckpt_name, prompt)
        try:
            return (load_humansd(path),)
        except HumanGenError as exc:
            raise for_input(exc, node, "ckpt_name", "use humansd-v1.ckpt from the HumanSD release or its "
                            ".safetensors conversion.") from exc


class HumanGenSkeletonSDSampler:
    DESCRIPTION = ("Generate people in the pose of a skeleton with HumanSD: the skeleton (rendered from POSE_KEYPOINT "
                   "in HumanSD's style, or a ready skeleton image) is VAE-encoded and fed to the UNet next to the "
                   "noise; classifier-free guidance applies to the text only. Sizes follow HumanSD's demo: short "
                   "side scaled to `short_side`, both sides rounded to multiples of 64. With an init image and "
                   "strength < 1 it works as img2img. Departures from HumanSD's demo, on purpose: precision 'auto' "
                   "runs the UNet in bf16 on a GPU (the demo: fp32; set precision fp32); the skeleton is encoded "
                   "with the VAE's posterior mean, not a random sample (no setting: the demo's draw depends on its "
                   "global RNG); no invisible 'HumanSD' watermark is added to the images (no setting); the pose "
                   "detector HumanGenPoseDetect defaults to mediapipe at keypoint threshold 0.3 (the demo: "
                   "HigherHRNet-W48 bottom-up, every person, thresholds 0.05; closest: backend mmpose_bottomup, "
                   "keypoint_threshold 0.05, max_people 64).")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("images", "skeleton")
    OUTPUT_TOOLTIPS = ("Generated images: `batch` per skeleton (item k uses seed + k).",
                       "The skeleton image(s) HumanSD was conditioned on, at the generation size.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "humansd": (HUMANSD, {"tooltip": "From the HumanSD Loader."}),
                "prompt": ("STRING", {"multiline": True, "default": "a woman dancing on a stage",
                                      "tooltip": "What to draw."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": DEFAULT_NEGATIVE,
                                               "tooltip": "What to avoid (HumanSD's demo default)."}),
                "added_prompt": ("STRING", {"multiline": True, "default": DEFAULT_ADDED, "tooltip":
                                 "Appended to the prompt after ', ' (HumanSD's demo default); empty adds nothing."}),
                "steps": ("INT", {"default": 50, "min": 2, "max": 200, "step": 1, "tooltip":
                          "Sampling steps. DDIM runs them exactly as HumanSD's demo (which skips the first one, so "
                          "it needs at least 2)."}),
                "guidance": ("FLOAT", {"default": 10.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip":
                             "Classifier-free guidance on the text (the pose is in both branches). 1 = no "
                             "unconditional pass."}),
                "eta": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "DDIM noise (0 = deterministic DDIM); ignored by other schedulers."}),
                "scheduler": (SCHEDULERS, {"default": "ddim", "tooltip":
                              "ddim = HumanSD's own sampler; dpmpp_2m / dpmpp_2m_karras / euler via diffusers."}),
                "seed": ("INT", {"default": 299033459, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                 "control_after_generate": True, "tooltip": "Seed; item k of the batch uses seed + "
                                                                            "k."}),
                "batch": ("INT", {"default": 1, "min": 1, "max": 16, "step": 1,
                                  "tooltip": "Images per skeleton."}),
                "short_side": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 64, "tooltip":
                               "Short side of the output in pixels (HumanSD was trained at 512); the long side "
                               "follows the pose canvas / skeleton aspect, rounded to a multiple of 64."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip":
                             "1 = from pure noise. < 1 = img2img from init_image (required then)."}),
                "precision": (["auto", "fp32", "bf16"], {"default": "auto", "tooltip":
                              "UNet compute precision: auto = bf16 on capable GPUs, else fp32 (HumanSD's demo runs "
                              "fp32: choose fp32 to reproduce it). fp16 is not offered (SD2's attention overflows "
                              "in fp16)."}),
            },
            "optional": {
                "pose": ("POSE_KEYPOINT", {"tooltip": "Poses (OpenPose/COCO keypoints); rendered in HumanSD's style "
                         "and VAE-encoded with the posterior mean (the demo draws a posterior sample). From "
                         "HumanGenPoseDetect: its defaults (mediapipe, threshold 0.3, one person) differ from the "
                         "demo's HigherHRNet bottom-up at 0.05 (closest: mmpose_bottomup, keypoint_threshold 0.05)."}),
                "skeleton": ("IMAGE", {"tooltip": "A ready HumanSD-style skeleton image (used when no pose is "
                                                  "connected)."}),
                "init_image": ("IMAGE", {"tooltip": "Start image for img2img (strength < 1)."}),
                "detection_threshold": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 1.0, "step": 0.01,
                                        "tooltip": "Keypoints with confidence at or below this are not drawn "
                                        "(HumanSD's demo: 0.05)."}),
                "person_threshold": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 1.0, "step": 0.01,
                                     "tooltip": "People whose detection score (the pose's per-person 'score') is at "
                                     "or below this are not drawn, as HumanSD's demo drops them before drawing "
                                     "(its default: 0.05, the same slider as the keypoints). People without a score "
                                     "are always drawn; 0 draws everyone with a positive score."}),
            },
        }

    def sample(self, humansd, prompt, negative_prompt, added_prompt, steps, guidance, eta, scheduler, seed, batch,
               short_side, strength, precision, pose=None, skeleton=None, init_image=None, detection_threshold=0.05,
               person_threshold=0.05):
        import torch

        from ..models.humansd.pipeline import InvalidInput, generate
        from ..utils.image import nchw_to_comfy
        node = "HumanGenSkeletonSDSampler"
        skel_u8 = _skeleton_uint8(node, pose, skeleton, short_side, detection_threshold, person_threshold, batch)
        h, w = skel_u8.shape[1:3]
        skel = torch.from_numpy(skel_u8).float().div(255.0)
        init = None
        if strength < 1.0:
            if init_image is None:
                raise NodeInputError(node, "init_image", "strength < 1 is img2img and needs an init image.",
                                     fix="connect an image to init_image, or set strength to 1.")
            from ..utils.image import check_image
            init_image = check_image(init_image, node, "init_image")
            init = torch.from_numpy(_resize_images(init_image, h, w)).float().div(255.0).movedim(-1, 1) * 2 - 1
        state = {}

        def on_step(step, total, _x):
            if "bar" not in state:
                state["bar"] = host.progress(total, "HumanSD")
            state["bar"].update_absolute(step)
            host.check_interrupt()

        host.check_interrupt()
        try:
            result = generate(humansd, skel.movedim(-1, 1) * 2 - 1, prompt, negative_prompt,
                              added_prompt=added_prompt, steps=steps, guidance=guidance, eta=eta, scheduler=scheduler,
                              seed=seed, batch=batch, strength=strength, init_image=init, precision=precision,
                              offloader=_offloader(), callback=on_step)
        except InvalidInput as exc:  # the pipeline names the argument; the node's inputs carry the same names
            inputs = self.INPUT_TYPES()
            name = "skeleton" if exc.argument == "pose" and skeleton is not None else exc.argument
            known = name in inputs["required"] or name in inputs.get("optional", {})
            raise NodeInputError(node, name if known else "humansd", str(exc)) from exc
        return (nchw_to_comfy(result.images, signed=False), skel)


MAX_GENERATION_SIDE = 4096  # HumanSD was trained at 512; a very elongated pose canvas must not ask for more


def _skeleton_uint8(node: str, pose, skeleton, short_side: int, threshold: float,
                    person_threshold: float = 0.05, batch: int = 1):
    """The conditioning skeleton(s) as uint8 [F, H, W, 3] at HumanSD's generation size; the F x batch images to
    generate are checked against the output limit before anything is drawn."""
    from ..utils.limits import check_batch_pixels, check_image_size

    def check_output(frames: int, w: int, h: int, source: str) -> None:
        check_batch_pixels(frames * batch, w, h, node, "batch" if batch > 1 else source,
                           what=f"images ({frames} frames x batch {batch})")
    if pose is not None and skeleton is not None:
        raise NodeInputError(node, "skeleton", "both a pose and a skeleton image are connected.",
                             fix="connect only one of pose / skeleton.")
    if pose is not None:
        from ..utils import pose as posemod
        from .pose import checked_pose
        frames = checked_pose(node, pose)
        w0, h0 = posemod.frame_size(frames[0])
        h, w = _target_size(h0, w0, short_side)
        check_image_size(w, h, node, "pose", max_side=MAX_GENERATION_SIDE, what="generation size (from the pose "
                         "canvas)")
        check_output(len(frames), w, h, "pose")
        return posemod.render_skeleton(frames, style="humansd", width=w, height=h, threshold=threshold,
                                       person_threshold=person_threshold)
    if skeleton is not None:
        from ..utils.image import check_image
        img = check_image(skeleton, node, "skeleton")
        h, w = _target_size(img.shape[1], img.shape[2], short_side)
        check_image_size(w, h, node, "skeleton", max_side=MAX_GENERATION_SIDE, what="generation size (from the "
                         "skeleton image)")
        check_output(img.shape[0], w, h, "skeleton")
        return _resize_images(img, h, w)
    raise NodeInputError(node, "pose", "no pose and no skeleton image connected.",
                         fix="connect a POSE_KEYPOINT (e.g. from a pose estimator or HumanGen Load Pose) or a "
                             "HumanSD-style skeleton IMAGE.")


class HumanGenHumanSDConvert:
    DESCRIPTION = ("Convert a HumanSD checkpoint (e.g. humansd-v1.ckpt) to .safetensors in models/humansd: same "
                   "original key layout (ComfyUI's stock checkpoint loader reads it too), training-only entries "
                   "dropped, configs stored in the metadata. The whole file is validated first and written "
                   "atomically.")
    CATEGORY = CATEGORY
    FUNCTION = "convert"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Path of the written .safetensors file.",)

    @classmethod
    def INPUT_TYPES(cls):
        choices = [n for n in _model_choices(include_folders=False) if not n.endswith(".safetensors")] or [NO_MODELS]
        return {"required": {
            "ckpt_name": (choices, {"default": choices[0], "tooltip": "The checkpoint to convert (models/humansd)."}),
            "output_name": ("STRING", {"default": "", "tooltip":
                            "File name for the result in models/humansd; empty = same name with .safetensors."}),
            "half": ("BOOLEAN", {"default": False, "tooltip": "Store weights as fp16 (half the size; loading "
                                 "converts back to fp32)."}),
        }, "optional": {
            "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace an existing file of that name (off: "
                                      "an existing file is never replaced)."}),
        }, "hidden": {"prompt": "PROMPT"}}

    def convert(self, ckpt_name, output_name="", half=False, overwrite=False, prompt=None):
        from ..models.humansd.loader import convert_to_safetensors
        from ..utils.errors import HumanGenError, for_input
        from ..utils.paths import confine
        node = "HumanGenHumanSDConvert"
        src = _checkpoint(node, ckpt_name, prompt)
        name = (output_name or "").strip() or os.path.splitext(os.path.basename(src))[0] + ".safetensors"
        if os.path.basename(name.replace("\\", "/")) != name or not name.endswith(".safetensors"):
            raise NodeInputError(node, "output_name", f"{name!r} must be a plain file name ending in .safetensors.",
                                 fix="give a name like 'humansd-v1.safetensors' (no folders).")
        dst = str(confine(os.path.dirname(src), name, node=node, input_name="output_name"))
        if os.path.abspath(dst) == os.path.abspath(src):
            raise NodeInputError(node, "output_name", "the output would overwrite the input.")
        if os.path.exists(dst) and not overwrite:
            raise NodeInputError(node, "output_name", f"{name} already exists in {os.path.dirname(dst)}; it is not "
                                 f"replaced.", fix="choose another output_name, or turn on 'overwrite'.")
        try:
            report = convert_to_safetensors(src, dst, half=half, overwrite=bool(overwrite))
        except HumanGenError as exc:
            raise for_input(exc, node, "output_name" if isinstance(exc, FileExistsError) else "ckpt_name",
                            "use humansd-v1.ckpt from the HumanSD release.") from exc
        return {"ui": {"text": [f"wrote {report['written']} ({report['tensors']} tensors)"]},
                "result": (report["written"],)}


class HumanGenHumanSDApplyPose:
    DESCRIPTION = ("ComfyUI-native HumanSD: load humansd-v1 with the stock checkpoint loader (it is detected as an "
                   "SD2 inpainting model and would fail on conv_in), then patch the MODEL here so every UNet call "
                   "gets the VAE latent of the skeleton as its 4 extra channels. Works with KSampler, schedulers "
                   "and LoRA loaders; the pose goes to both the positive and the negative branch.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL", "CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("model", "positive", "negative")
    OUTPUT_TOOLTIPS = ("The HumanSD model with the pose attached (use it in KSampler).",
                       "Positive conditioning (passed through).", "Negative conditioning (passed through).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "HumanSD loaded with the stock Load Checkpoint node."}),
            "vae": ("VAE", {"tooltip": "The VAE from the same checkpoint."}),
            "positive": ("CONDITIONING", {"tooltip": "Text conditioning (CLIP Text Encode)."}),
            "negative": ("CONDITIONING", {"tooltip": "Negative text conditioning."}),
            "pose": ("IMAGE", {"tooltip": "HumanSD-style skeleton image, at the generation size (it is resized "
                                          "to the latent if needed)."}),
        }}

    def apply(self, model, vae, positive, negative, pose):
        from ..models.humansd.native import apply_pose
        from ..utils.image import check_image
        pixels = check_image(pose, "HumanGenHumanSDApplyPose", "pose")
        h, w = (pixels.shape[1] // 8) * 8, (pixels.shape[2] // 8) * 8
        latent = vae.encode(pixels[:, :h, :w, :3])
        base = getattr(model, "model", None)
        if base is not None and hasattr(base, "process_latent_in"):
            latent = base.process_latent_in(latent)  # × the latent scale factor (0.18215 for SD2)
        else:
            latent = latent * 0.18215
        return (apply_pose(model, latent), positive, negative)


NODE_CLASS_MAPPINGS = {
    "HumanGenHumanSDLoader": HumanGenHumanSDLoader,
    "HumanGenSkeletonSDSampler": HumanGenSkeletonSDSampler,
    "HumanGenHumanSDConvert": HumanGenHumanSDConvert,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HumanGenHumanSDLoader": "HumanSD Loader (HumanGen)",
    "HumanGenSkeletonSDSampler": "HumanSD Skeleton Sampler (HumanGen)",
    "HumanGenHumanSDConvert": "HumanSD Convert (HumanGen)",
}
# Needs ComfyUI's MODEL/VAE/CONDITIONING objects: offered only when the pack runs inside ComfyUI.
HOST_ONLY_NODES = {"HumanGenHumanSDApplyPose": HumanGenHumanSDApplyPose}
HOST_ONLY_DISPLAY_NAMES = {"HumanGenHumanSDApplyPose": "HumanSD Apply Pose (HumanGen)"}
if host.in_comfyui():
    NODE_CLASS_MAPPINGS.update(HOST_ONLY_NODES)
    NODE_DISPLAY_NAME_MAPPINGS.update(HOST_ONLY_DISPLAY_NAMES)
