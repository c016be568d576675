"""InsetGAN node: a face GAN and a body GAN optimised jointly so the face inset fits the body without a seam.
Logic lives in models/insetgan.py; this node resolves the face box, runs the optimiser and composites."""
from __future__ import annotations

from .editing import PRECISION_INPUT, checked_precision  # one precision widget and check for all optimisation nodes

CATEGORY = "HumanGen/insetgan"
GEN = "HUMANGEN_GENERATOR"
LAT = "HUMANGEN_LATENT"
NODE = "HumanGenInsetGAN"
SCHEDULE_NAMES = ["stylegan-human", "official-loose", "official-inset"]


def _err(name, problem, fix=None):
    from ..utils.errors import NodeInputError
    return NodeInputError(NODE, name, problem, fix=fix)


def _one_wplus(gen, latent, name):
    from ..models import gan_latents as gl
    try:
        ws = gl.to_wplus(gen, latent)
    except ValueError as exc:
        raise _err(name, str(exc), fix="make the latent with the generator wired next to it.") from None
    return ws[:1]


def _truncate(gen, ws, psi):
    from ..models import gan_latents as gl
    if psi == 1.0:
        return ws
    return gl.truncate(ws, gen.model.mapping.w_avg.detach().float().cpu(), psi)


def _uint8(img):
    return (img[0].detach().float() * 127.5 + 128).clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()


def _detect_face(img_u8, min_confidence=0.9):
    from ..models.pose.faces import detect_faces_mtcnn
    from ..utils import host
    boxes = detect_faces_mtcnn(img_u8, min_confidence, device=str(host.torch_device()))
    return boxes[0] if len(boxes) else None


def _face_rect(face_img):
    """The identity rect in the face image: MTCNN on a 256-px copy (as the official code), else None."""
    import torch.nn.functional as F
    small = F.interpolate(face_img, size=(256, 256), mode="area") if face_img.shape[-1] > 256 else face_img
    box = _detect_face(_uint8(small))
    if box is None:
        return None
    sy, sx = face_img.shape[2] / small.shape[2], face_img.shape[3] / small.shape[3]
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def _initial_box(source, body_img, pose, face_box):
    from ..utils import pose as P
    h, w = body_img.shape[2:]
    if source == "face_box":
        if face_box is None or not face_box.get("boxes") or not face_box["boxes"][0]:
            raise _err("face_box", "face_box_source is 'face_box' but no face box is connected (or it is empty).",
                       fix="connect HumanGenFaceBox run on the body image, or choose 'detector'/'keypoints'.")
        import math
        cw, ch, box = face_box.get("canvas_width", w), face_box.get("canvas_height", h), face_box["boxes"][0][0]
        numbers = [cw, ch, *box[:4]] if isinstance(box, (list, tuple)) and len(box) >= 4 else []
        if not numbers or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers) \
                or cw <= 0 or ch <= 0 or box[2] <= box[0] or box[3] <= box[1]:
            raise _err("face_box", f"the first box {str(box)[:80]} (canvas {cw}x{ch}) is not a box x0, y0, x1, y1 "
                       "of finite numbers with x1 > x0, y1 > y0 on a canvas of positive size.",
                       fix="connect HumanGenFaceBox run on the body image.")
        fx, fy = w / cw, h / ch
        x0, y0, x1, y1 = box[:4]
        return (x0 * fx, y0 * fy, x1 * fx, y1 * fy)
    if source == "keypoints":
        if pose is None:
            raise _err("pose", "face_box_source is 'keypoints' but no POSE_KEYPOINT is connected.",
                       fix="connect HumanGenPoseDetect run on the body image, or choose 'detector'.")
        from .pose import checked_pose
        frame = P.scale_frame(checked_pose(NODE, pose)[0], w, h)
        boxes = [P.face_box_from_keypoints(k) for k in P.frame_people(frame, "coco17")]
        boxes = [b for b in boxes if b is not None]
        if not boxes:
            raise _err("pose", "the pose has no visible head keypoints (nose/eyes/ears).",
                       fix="use 'detector', or a pose where the face is visible.")
        return boxes[0]
    box = _detect_face(_uint8(body_img))
    if box is None:
        raise _err("face_box_source", "the face detector (MTCNN) found no face in the body image.",
                   fix="use 'keypoints' with a POSE_KEYPOINT, or a HumanGenFaceBox box; or another body seed.")
    return box


class HumanGenInsetGAN:
    DESCRIPTION = ("InsetGAN (CVPR 2022): optimise a body generator (canvas, e.g. StyleGAN-Human 1024x512) and a face "
                   "generator (inset, e.g. FFHQ 1024) together so the generated face pasted into the body's face "
                   "region matches it at the boundary while the face keeps its identity and the body stays close to "
                   "its start. Schedules: StyleGAN-Human's re-implementation or the two official configs.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", LAT, LAT, "HUMANGEN_FACE_BOX", "IMAGE")
    RETURN_NAMES = ("image", "body_latent", "face_latent", "face_box", "loss_curve")
    OUTPUT_TOOLTIPS = ("The body with the optimised face composited in.",
                       "The optimised body latent (w+) of the returned state: rendering it (noise_mode const) gives "
                       "the returned body.",
                       "The optimised face latent (w+) of the returned state: rendering it (noise_mode const) gives "
                       "the returned face.",
                       "The final paste box in body pixels.",
                       "Loss curves (log scale): per-side totals and the border L1 that picks the best state.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "body_generator": (GEN, {"tooltip": "The canvas generator (e.g. stylegan_human_v2_1024.pkl)."}),
            "body_latent": (LAT, {"tooltip": "Body latent (the first one is used)."}),
            "face_generator": (GEN, {"tooltip": "The inset generator (e.g. NVIDIA ffhq.pkl)."}),
            "face_latent": (LAT, {"tooltip": "Face latent (from seeds, or an inverted face)."}),
            "schedule": (SCHEDULE_NAMES, {"default": "stylegan-human", "tooltip": "stylegan-human: 25 face, 150 "
                         "body, 500 alternating steps; official-loose / official-inset: 400 iterations switching "
                         "every 40 (canvas in W, inset in W+)."}),
            "steps_scale": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 4.0, "step": 0.05,
                                      "tooltip": "Multiply every step count of the schedule alike (0.1 for a "
                                      "quick preview): the phase lengths, the turn length, the face re-detection "
                                      "interval and cut-off, and the steps at which the body / face references are "
                                      "frozen (official-loose 75, official-inset 120). A short run keeps every loss "
                                      "term and switches each reference on at the same fraction of the run, only "
                                      "with fewer steps; its result is rougher."}),
            "truncation_psi": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                         "tooltip": "Truncate both latents toward w_avg first (NVIDIA ψ; 1 = as "
                                         "given). Upstream: 0.6 (StyleGAN-Human); official t = 0.5 is ψ = 0.5."}),
            "face_box_source": (["detector", "keypoints", "face_box"], {"default": "detector", "tooltip":
                                "Where the face sits in the body: MTCNN on the body image (re-detected while the "
                                "body changes), head keypoints of 'pose', or the 'face_box' input."}),
            "box_scale": ("FLOAT", {"default": 2.0, "min": 1.0, "max": 4.0, "step": 0.05,
                                    "tooltip": "Paste box side / tight face box side (an FFHQ frame is ~2x the face)."}),
            "blend": (["hard", "feather", "poisson"], {"default": "feather", "tooltip": "hard: direct paste (as "
                      "upstream); feather: linear alpha ramp at the box edge; poisson: seamless cloning."}),
            "feather_radius": ("INT", {"default": 8, "min": 0, "max": 128, "step": 1,
                                       "tooltip": "Ramp width in pixels for 'feather' (inset margin for 'poisson')."}),
            "lpips_net": (["auto", "alex", "vgg"], {"default": "auto", "tooltip": "LPIPS backbone (auto: alex for "
                          "stylegan-human, vgg for the official configs). Weights from models/lpips."}),
            "noise_mode": (["const", "random"], {"default": "const", "tooltip": "StyleGAN2 noise during optimisation."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1, "control_after_generate": True,
                             "tooltip": "Seed of the random noise (noise_mode 'random'); const is seed-independent."}),
        }, "optional": {
            "pose": ("POSE_KEYPOINT", {"tooltip": "Body-image keypoints for face_box_source 'keypoints'."}),
            "face_box": ("HUMANGEN_FACE_BOX", {"tooltip": "A face box on the body image (HumanGenFaceBox)."}),
            "precision": PRECISION_INPUT,
        }, "hidden": {"prompt": "PROMPT"}}

    def run(self, body_generator, body_latent, face_generator, face_latent, schedule="stylegan-human",
            steps_scale=1.0, truncation_psi=1.0, face_box_source="detector", box_scale=2.0, blend="feather",
            feather_radius=8, lpips_net="auto", noise_mode="const", seed=0, pose=None, face_box=None,
            precision="fp32", prompt=None):
        import torch

        from ..models import gan_latents as gl
        from ..models import insetgan as ig
        from ..models.inversion import warn_if_emulated
        from ..models.lpips import load_lpips
        from ..utils import host
        from ..utils.errors import HumanGenError
        from ..utils.image import gan_to_comfy, uint8_to_comfy
        precision = checked_precision(NODE, precision)
        sched = ig.SCHEDULES[schedule]
        body_ws = _truncate(body_generator, _one_wplus(body_generator, body_latent, "body_latent"), truncation_psi)
        face_ws = _truncate(face_generator, _one_wplus(face_generator, face_latent, "face_latent"), truncation_psi)
        if face_generator.height != face_generator.width:
            raise _err("face_generator", f"expected a square face generator, got {face_generator.width}x"
                       f"{face_generator.height}.", fix="use an FFHQ-style face model here and the body model above.")
        net = sched.lpips_net if lpips_net == "auto" else lpips_net
        host.require_files("HumanGenInsetGAN", {"lpips_net": net}, prompt)
        try:
            lpips = load_lpips(net, host.model_dirs("lpips"))
        except HumanGenError as exc:
            raise _err("lpips_net", str(exc)) from None
        device = host.load_model(body_generator.model)
        host.load_model(face_generator.model)
        lpips.to(device)
        warn_if_emulated(precision, device, NODE)
        with torch.no_grad():
            body0 = body_generator.model.synthesis(body_ws.to(device), noise_mode="const")
            face0 = face_generator.model.synthesis(face_ws.to(device), noise_mode="const")
        tight = _initial_box(face_box_source, body0, pose, face_box)
        rect = _face_rect(face0) if face_box_source == "detector" else None
        redetect = (lambda img: _detect_face(_uint8(img))) if face_box_source == "detector" else None
        total = len(ig.side_plan(sched, steps_scale))
        with host.progress(total, desc="InsetGAN") as bar:
            def callback(step, n, info):
                host.check_interrupt()
                bar.update_absolute(step)
            result = ig.optimise(body_generator.model, face_generator.model, body_ws, face_ws, tight, sched, lpips,
                                 steps_scale=steps_scale, box_scale=box_scale, face_rect=rect, redetect=redetect,
                                 noise_mode=noise_mode, noise_seed=int(seed), precision=precision, callback=callback)
        image = gan_to_comfy(ig.composite(result.body_img, result.face_img, result.box, blend, feather_radius))
        h, w = result.body_img.shape[2:]
        box_out = {"boxes": [[[*map(float, result.box), 1.0]]], "canvas_width": int(w), "canvas_height": int(h),
                   "source": f"insetgan:{face_box_source}"}
        body_out = gl.make_latent("w+", result.body_ws, body_generator, labels=["insetgan body"])
        face_out = gl.make_latent("w+", result.face_ws, face_generator, labels=["insetgan face"])
        curve = uint8_to_comfy(ig.loss_curve(result.history))
        return (image, body_out, face_out, box_out, curve)


NODE_CLASS_MAPPINGS = {"HumanGenInsetGAN": HumanGenInsetGAN}
NODE_DISPLAY_NAME_MAPPINGS = {"HumanGenInsetGAN": "InsetGAN Face/Body Optimizer (HumanGen)"}
