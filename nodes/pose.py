"""Pose toolkit nodes: detect keypoints, segment people, render skeletons, face boxes, load/save pose files.

POSE_KEYPOINT is comfyui_controlnet_aux's OpenPose-JSON structure (see utils/pose.py). HUMANGEN_FACE_BOX is
`{"boxes": [[[x0, y0, x1, y1, score], ...] per batch image], "canvas_width": W, "canvas_height": H,
"source": method}` in pixels of the image the boxes were found on.
"""
from __future__ import annotations

import os

from ..utils import host
from ..utils.errors import HumanGenError, NodeInputError

CATEGORY = "HumanGen/pose"
BACKENDS = ["mediapipe", "mmpose_topdown", "mmpose_bottomup"]
LAYOUTS = ["openpose18", "body25", "coco17"]
SEGMENT_METHODS = ["mediapipe_selfie", "mediapipe_selfie_landscape", "mediapipe_pose"]
MMPOSE_CONFIGS = ["rtmpose-m_coco_256x192", "rtmpose-l_coco_256x192", "rtmpose-s_coco_256x192",
                  "rtmpose-t_coco_256x192", "hrnet-w32_coco_256x192", "hrnet-w48_coco_256x192",
                  "ae_hrnet-w32_coco_512x512"]
NO_CHECKPOINT = "(none)"
POSE_FORMATS = ["openpose_json", "coco_json", "humansd_npz"]
_EXT = {"openpose_json": ".json", "coco_json": ".json", "humansd_npz": ".npz"}


def _frames_u8(image, node: str):
    from ..utils import image as imageutil
    img = imageutil.check_image(image, node)
    return [imageutil.comfy_to_uint8(img[i]) for i in range(img.shape[0])]


def _wrap(node: str, input_name: str, exc: Exception, fix: str | None = None) -> NodeInputError:
    """A lower layer's error as the node's error on `input_name` (its own fix kept, else `fix`). The pose module's
    "pose: " prefix is dropped: the node error already names the node and the input."""
    problem = getattr(exc, "problem", None) or str(exc)
    problem = problem[len("pose: "):] if problem.startswith("pose: ") else problem
    return NodeInputError(node, input_name, problem if problem.endswith(".") else problem + ".",
                          fix=getattr(exc, "fix", None) or fix)


def checked_pose(node: str, pose, input_name: str = "pose") -> list[dict]:
    """The frames of a POSE_KEYPOINT input (`utils.pose.as_pose`), or its problem as the node's error on that input."""
    from ..utils import pose as P
    try:
        return P.as_pose(pose)
    except ValueError as exc:
        raise _wrap(node, input_name, exc, "connect a POSE_KEYPOINT output.") from None


def _frame_for(pose, index: int, width: int, height: int, node: str):
    """Frame `index` of a POSE_KEYPOINT (a single frame serves every image), rescaled to width x height."""
    from ..utils import pose as P
    frames = checked_pose(node, pose)
    if len(frames) != 1 and index >= len(frames):
        raise NodeInputError(node, "pose", f"{len(frames)} pose frames for a batch of more images.",
                             fix="give one pose frame per image, or one for all.")
    frame = frames[min(index, len(frames) - 1)]
    if P.frame_size(frame) != (width, height):
        frame = P.scale_frame(frame, width, height)
    return frame


class HumanGenPoseDetect:
    DESCRIPTION = ("Find body keypoints in photos. mediapipe (bundled, no downloads, one person) or mmpose "
                   "RTMPose/HRNet top-down and associative-embedding bottom-up with your checkpoint from "
                   "models/mmpose. Output: POSE_KEYPOINT (OpenPose JSON, works with DWPose/OpenPose nodes) and a "
                   "preview.")
    CATEGORY = CATEGORY
    FUNCTION = "detect"
    RETURN_TYPES = ("POSE_KEYPOINT", "IMAGE")
    RETURN_NAMES = ("pose", "preview")
    OUTPUT_TOOLTIPS = ("keypoints per image in pixels (OpenPose JSON structure)",
                       "the photo with the detected skeleton drawn over it")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The photo(s) to detect people in."}),
                "backend": (BACKENDS, {"default": "mediapipe", "tooltip": "mediapipe: bundled, CPU, one person. "
                                       "mmpose_*: needs a checkpoint in models/mmpose."}),
                "keypoint_threshold": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01,
                                                 "tooltip": "keypoints with lower confidence are dropped (0,0,0)"}),
                "max_people": ("INT", {"default": 1, "min": 1, "max": 64, "step": 1,
                                       "tooltip": "most people kept per image (mmpose; mediapipe finds one)"}),
                "layout": (LAYOUTS, {"default": "openpose18", "tooltip": "joint order stored in the pose: "
                                     "openpose18 (ControlNet tools), body25 (with feet), coco17"}),
                "allow_no_person": ("BOOLEAN", {"default": False, "tooltip": "return an empty pose instead of "
                                                "an error when an image has no person"}),
            },
            "optional": {
                "mmpose_config": (MMPOSE_CONFIGS, {"default": "rtmpose-m_coco_256x192",
                                                   "tooltip": "mmpose model config (from the mmpose wheel) that "
                                                   "matches the checkpoint"}),
                "mmpose_checkpoint": ([NO_CHECKPOINT] + host.list_models("mmpose"),
                                      {"default": NO_CHECKPOINT, "tooltip": "checkpoint file in models/mmpose"}),
                "person_box": ("STRING", {"default": "", "tooltip": "top-down person boxes 'x0,y0,x1,y1' "
                                          "(several separated by ';'); empty = from the person mask"}),
                "mask": ("MASK", {"tooltip": "person mask for top-down boxes (default: mediapipe segmentation)"}),
            },
        }

    def detect(self, image, backend, keypoint_threshold, max_people, layout, allow_no_person=False,
               mmpose_config="rtmpose-m_coco_256x192", mmpose_checkpoint=NO_CHECKPOINT, person_box="", mask=None):
        from ..models import pose as M
        node = "HumanGenPoseDetect"
        images = _frames_u8(image, node)
        if mask is not None:
            from ..utils.image import check_mask
            mask = check_mask(mask, node, len(images))
        boxes = _parse_boxes(node, person_box)
        model = _mmpose_model(node, backend, mmpose_config, mmpose_checkpoint) if backend != "mediapipe" else None
        frames, previews = [], []
        for i, img in enumerate(images):
            host.check_interrupt()
            h, w = img.shape[:2]
            try:
                if model is None:
                    det = M.detect_mediapipe(img, keypoint_threshold)
                else:
                    m = None if mask is None else _mask_for(mask, i, h, w)
                    det = M.detect_mmpose(img, model, keypoint_threshold, max_people, boxes, m)
            except HumanGenError as exc:
                raise _wrap(node, "backend", exc) from None
            if len(det) == 0 and not allow_no_person:
                raise NodeInputError(node, "image", f"no person was found in image {i} of the batch.",
                                     fix="use a photo with a visible person, lower keypoint_threshold, or turn on "
                                         "allow_no_person.")
            frames.append(det.frame(w, h, layout))
            previews.append(_overlay(img, frames[-1]))
        return frames, _to_image(previews)


def _mmpose_model(node, backend, config, checkpoint):
    from ..models.pose import mmpose_backend
    if checkpoint == NO_CHECKPOINT:
        raise NodeInputError(node, "mmpose_checkpoint", f"the {backend} backend needs a checkpoint.",
                             fix="put an mmpose checkpoint (.pth/.safetensors) into models/mmpose and choose it, "
                                 "or use the mediapipe backend.")
    path = host.model_path("mmpose", checkpoint, node=node, input_name="mmpose_checkpoint")
    try:
        model = mmpose_backend.build_model(config, path, device=str(host.torch_device()))
    except (HumanGenError, ValueError) as exc:
        raise _wrap(node, "mmpose_checkpoint", exc) from None
    want = "bottomup" if backend == "mmpose_bottomup" else "topdown"
    if model.mode != want:
        raise NodeInputError(node, "mmpose_config", f"{config} is a {model.mode} model but backend is {backend}.",
                             fix=f"choose backend mmpose_{model.mode} or a {want} config.")
    return model


def _parse_boxes(node, text):
    import numpy as np
    text = (text or "").strip()
    if not text:
        return None
    boxes = []
    for part in text.split(";"):
        try:
            vals = [float(v) for v in part.replace(" ", "").split(",")]
        except ValueError:
            vals = []
        if len(vals) != 4 or not np.isfinite(vals).all() or vals[2] <= vals[0] or vals[3] <= vals[1]:
            raise NodeInputError(node, "person_box", f"{part.strip()[:80]!r} is not a box 'x0,y0,x1,y1' of finite "
                                 f"numbers with x1>x0, y1>y0.",
                                 fix="write pixel boxes like '10,20,200,500', several separated by ';'.")
        boxes.append(vals)
    return np.asarray(boxes, np.float64)


def _mask_for(mask, index, h, w):
    import cv2
    import numpy as np
    from ..utils import image as imageutil
    m = imageutil.mask_to_batch(mask)  # checked by the node (utils.image.check_mask): one mask or one per image
    a = m[min(index, m.shape[0] - 1)].detach().cpu().float().numpy()
    if a.shape != (h, w):
        a = cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(a, 0, 1).astype(np.float32)


def _overlay(img, frame):
    import numpy as np
    from ..utils import pose as P
    sk = P.render_frame(frame, "openpose", threshold=0.0)
    on = sk.max(axis=-1, keepdims=True) > 0
    return np.where(on, sk, (img.astype(np.float32) * 0.5).astype(np.uint8))


def _to_image(arrays):
    import numpy as np
    from ..utils import image as imageutil
    return imageutil.uint8_to_comfy(np.stack(arrays))


class HumanGenHumanSegment:
    DESCRIPTION = ("Person mask from mediapipe (bundled models): selfie segmentation (default), its landscape "
                   "variant, or the pose model's segmentation (best for full bodies).")
    CATEGORY = CATEGORY
    FUNCTION = "segment"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("person mask, 1 = person",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The photo(s) to segment."}),
            "method": (SEGMENT_METHODS, {"default": "mediapipe_selfie", "tooltip": "which mediapipe model segments"}),
            "threshold": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                    "tooltip": "0 = soft mask; otherwise mask > threshold becomes 1, else 0"}),
        }}

    def segment(self, image, method, threshold):
        import torch
        from ..models import pose as M
        node = "HumanGenHumanSegment"
        masks = []
        for img in _frames_u8(image, node):
            host.check_interrupt()
            try:
                m = M.segment_person(img, method)
            except HumanGenError as exc:
                raise _wrap(node, "method", exc) from None
            if threshold > 0:
                m = (m > threshold).astype("float32")
            masks.append(torch.from_numpy(m))
        return (torch.stack(masks),)


class HumanGenRenderPose:
    DESCRIPTION = ("Draw POSE_KEYPOINT skeletons on black: 'humansd' exactly as HumanSD was trained (COCO-17, "
                   "16 coloured limbs, width 10) or 'openpose' (ControlNet OpenPose style).")
    CATEGORY = CATEGORY
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("skeleton",)
    OUTPUT_TOOLTIPS = ("skeleton image per pose frame",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pose": ("POSE_KEYPOINT", {"tooltip": "Keypoints (Pose Detect (HumanGen), DWPose/OpenPose from "
                                                  "comfyui_controlnet_aux, Load Pose)."}),
            "style": (["humansd", "openpose"], {"default": "humansd", "tooltip": "humansd: HumanSD's renderer; "
                                                "openpose: ControlNet OpenPose colours"}),
            "width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                              "tooltip": "output width; 0 = the pose's canvas width (keypoints are rescaled)"}),
            "height": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                               "tooltip": "output height; 0 = the pose's canvas height"}),
            "threshold": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 1.0, "step": 0.01,
                                    "tooltip": "draw keypoints with confidence above this (HumanSD uses 0.05)"}),
        }}

    def render(self, pose, style, width, height, threshold):
        from ..utils import pose as P
        node = "HumanGenRenderPose"
        if (width == 0) != (height == 0):
            raise NodeInputError(node, "width", "set both width and height, or both to 0.",
                                 fix="give both sizes (or 0 and 0 for the pose canvas).")
        try:
            arr = P.render_skeleton(pose, style, width or None, height or None, threshold)
        except ValueError as exc:
            raise _wrap(node, "pose", exc, "connect a POSE_KEYPOINT (all frames the same size, or set width/height).") from None
        return (_to_image(list(arr)),)


class HumanGenFaceBox:
    DESCRIPTION = ("Face boxes and a face MASK: MTCNN (facenet-pytorch, InsetGAN's detector), mediapipe face "
                   "detection, or from body keypoints (nose/eyes/ears).")
    CATEGORY = CATEGORY
    FUNCTION = "find"
    RETURN_TYPES = ("HUMANGEN_FACE_BOX", "MASK")
    RETURN_NAMES = ("face_box", "mask")
    OUTPUT_TOOLTIPS = ("face boxes (x0, y0, x1, y1, score) per image, best first", "1 inside the face boxes")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The photo(s) to find faces in."}),
                "method": (["mtcnn", "mediapipe", "keypoints"], {"default": "mtcnn",
                           "tooltip": "mtcnn: facenet-pytorch; mediapipe: face detection; keypoints: from the "
                                      "pose input (or mediapipe pose when none)"}),
                "min_confidence": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                             "tooltip": "faces with a lower score are dropped"}),
                "expand": ("FLOAT", {"default": 1.0, "min": 0.25, "max": 4.0, "step": 0.05,
                                     "tooltip": "scale each box about its centre"}),
                "square": ("BOOLEAN", {"default": False, "tooltip": "make boxes square (longer side)"}),
                "max_faces": ("INT", {"default": 1, "min": 1, "max": 64, "step": 1,
                                      "tooltip": "most faces kept per image (highest score first)"}),
            },
            "optional": {"pose": ("POSE_KEYPOINT", {"tooltip": "keypoints for the 'keypoints' method"})},
        }

    def find(self, image, method, min_confidence, expand, square, max_faces, pose=None):
        import torch
        from ..models import pose as M
        from ..models.pose import faces, mediapipe_backend
        from ..utils import pose as P
        node = "HumanGenFaceBox"
        images = _frames_u8(image, node)
        per_image, masks = [], []
        for i, img in enumerate(images):
            host.check_interrupt()
            h, w = img.shape[:2]
            try:
                if method == "mtcnn":
                    boxes = faces.detect_faces_mtcnn(img, min_confidence, device=str(host.torch_device()))
                elif method == "mediapipe":
                    boxes = mediapipe_backend.detect_faces(img, min_confidence)
                else:
                    people = (P.frame_people(_frame_for(pose, i, w, h, node), "coco17") if pose is not None
                              else M.detect_mediapipe(img, 0.3, segmentation=False).coco17())
                    boxes = faces.faces_from_keypoints(people)
                    boxes = boxes[boxes[:, 4] >= min_confidence]
            except NodeInputError:
                raise  # already names its input (the pose)
            except HumanGenError as exc:
                raise _wrap(node, "method", exc) from None
            boxes = faces.expand_boxes(boxes[:max_faces], expand, square)
            per_image.append([[float(v) for v in b] for b in boxes])
            masks.append(torch.from_numpy(faces.boxes_to_mask(boxes, h, w)))
        h, w = images[0].shape[:2]
        box = {"boxes": per_image, "canvas_width": w, "canvas_height": h, "source": method}
        return box, torch.stack(masks)


class HumanGenLoadPose:
    DESCRIPTION = ("Load a pose file: OpenPose JSON (one frame or a list of frames), COCO keypoint JSON, or "
                   "HumanSD .npz (arr_0 = people with 'keypoints' [17,3]). Paths are relative to the input folder.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("POSE_KEYPOINT",)
    RETURN_NAMES = ("pose",)
    OUTPUT_TOOLTIPS = ("the loaded poses, one frame per image in the file",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "path": ("STRING", {"default": "pose.json", "tooltip": "pose file (.json or .npz) in the input "
                                "folder (subfolders allowed; 'name [output]' reads from the output folder)"}),
            "canvas_width": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1,
                                     "tooltip": "canvas width for files without one; 0 = from the keypoints"}),
            "canvas_height": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1,
                                      "tooltip": "canvas height for files without one; 0 = from the keypoints"}),
        }}

    @classmethod
    def _resolve(cls, path, node="HumanGenLoadPose"):
        """The file for `path`, confined to the input folder (or the folder an annotation names): absolute paths
        and '..' are refused, as are names of other kinds than .json/.npz."""
        full = host.annotated_path(path, node=node, input_name="path")
        if full.suffix.lower() not in (".json", ".npz"):
            raise NodeInputError(node, "path", f"{path!r} is not a .json or .npz pose file.",
                                 fix="give a pose file name ending in .json or .npz.")
        return full

    @classmethod
    def IS_CHANGED(cls, path, **kwargs):
        from ..utils.checkpoints import content_hash
        try:
            full = cls._resolve(path) if path else None
        except HumanGenError:
            return float("nan")  # load() reports it; nothing outside the allowed folders is read or hashed
        return content_hash(str(full)) if full is not None and full.is_file() else float("nan")

    def load(self, path, canvas_width, canvas_height):
        from ..utils import pose as P
        node = "HumanGenLoadPose"
        full = self._resolve(path, node) if path else None
        if full is None or not full.is_file():
            folder = host.split_annotation(path or "")[0]
            raise NodeInputError(node, "path", f"no pose file {path!r} in the {folder} folder.",
                                 fix=f"put the pose file into the {folder} folder and give its name.")
        size = (canvas_width, canvas_height) if canvas_width and canvas_height else None
        try:
            return (P.load_pose(str(full), size),)
        except (ValueError, OSError) as exc:
            raise _wrap(node, "path", exc, "give an OpenPose JSON, COCO keypoint JSON or HumanSD .npz file.") from None


class HumanGenSavePose:
    DESCRIPTION = "Save POSE_KEYPOINT to the output folder as OpenPose JSON, COCO keypoint JSON or HumanSD .npz."
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("the written file",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pose": ("POSE_KEYPOINT", {"tooltip": "The keypoints to write (any POSE_KEYPOINT: HumanGen or "
                                                  "comfyui_controlnet_aux)."}),
            "filename_prefix": ("STRING", {"default": "humangen/pose", "tooltip": "file name prefix inside the "
                                           "output folder; a counter is added (prefix_00001_.json)"}),
            "format": (POSE_FORMATS, {"default": "openpose_json", "tooltip": "openpose_json (ControlNet/DWPose "
                                      "tools), coco_json, humansd_npz (HumanSD's --pose_file)"}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        """The prefix is checked before any node of the job runs."""
        from ..utils.paths import check_output_target
        return check_output_target(host.output_dir(), filename_prefix, node="HumanGenSavePose")

    def save(self, pose, filename_prefix, format):
        from ..utils import pose as P
        from ..utils.paths import output_target, write_next_free
        node = "HumanGenSavePose"
        root = os.path.realpath(host.output_dir())
        folder, stem = output_target(root, filename_prefix, node=node)
        try:
            data = P.encode_pose(pose, format)
        except ValueError as exc:
            raise _wrap(node, "pose", exc, "connect a POSE_KEYPOINT output.") from None
        # ComfyUI's SaveImage pattern (prefix_00001_.png), so one save's image and pose names match; the first free
        # counter, and a name another run takes meanwhile is skipped, never replaced
        path = str(write_next_free(folder, lambda i: f"{stem}_{i:05d}_{_EXT[format]}", data=data,
                                   node=node))
        rel = os.path.relpath(path, root)
        # "files" entries (like "images") let API clients, e.g. the runner's --server mode, fetch it via /view
        entry = {"filename": os.path.basename(rel), "subfolder": os.path.dirname(rel), "type": "output"}
        return {"ui": {"text": [rel], "files": [entry]}, "result": (path,)}


NODE_CLASS_MAPPINGS = {
    "HumanGenPoseDetect": HumanGenPoseDetect,
    "HumanGenHumanSegment": HumanGenHumanSegment,
    "HumanGenRenderPose": HumanGenRenderPose,
    "HumanGenFaceBox": HumanGenFaceBox,
    "HumanGenLoadPose": HumanGenLoadPose,
    "HumanGenSavePose": HumanGenSavePose,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HumanGenPoseDetect": "Pose Detect (HumanGen)",
    "HumanGenHumanSegment": "Human Segment (HumanGen)",
    "HumanGenRenderPose": "Render Pose Skeleton (HumanGen)",
    "HumanGenFaceBox": "Face Box (HumanGen)",
    "HumanGenLoadPose": "Load Pose (HumanGen)",
    "HumanGenSavePose": "Save Pose (HumanGen)",
}
