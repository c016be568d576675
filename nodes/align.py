"""HumanGenAlignFullBody: StyleGAN-Human's body-centred 2:1 alignment (models/pose/align.py) as a node."""
from __future__ import annotations

from ..utils import host
from ..utils.errors import HumanGenError, NodeInputError
from .pose import SEGMENT_METHODS, _frame_for, _frames_u8, _mask_for, _to_image, _wrap

RESOLUTIONS = ["1024x512", "512x256"]


class HumanGenAlignFullBody:
    DESCRIPTION = ("Align a full-body photo the way StyleGAN-Human's data was made: person composited on white, "
                   "5% + 5 px margin above the head and below the feet, horizontal centre = mean of the shoulder "
                   "centre and hip centre, 2:1 crop (white where it leaves the photo), area resampling to 1024x512 or "
                   "512x256. "
                   "Also returns the mask and the keypoints moved into the aligned frame.")
    CATEGORY = "HumanGen/pose"
    FUNCTION = "align"
    RETURN_TYPES = ("IMAGE", "MASK", "POSE_KEYPOINT")
    RETURN_NAMES = ("image", "mask", "pose")
    OUTPUT_TOOLTIPS = ("aligned H x W image on white", "person mask in the aligned frame",
                       "keypoints in the aligned frame")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The photo(s) to align; the person is found with mediapipe unless the "
                                               "pose/mask inputs are given."}),
                "resolution": (RESOLUTIONS, {"default": "1024x512", "tooltip": "output height x width (2:1)"}),
                "person_index": ("INT", {"default": -1, "min": -1, "max": 63, "step": 1,
                                         "tooltip": "person to centre on (pose input order); -1 = the only one"}),
                "allow_partial": ("BOOLEAN", {"default": False, "tooltip": "align even when hips/ankles/shoulders "
                                              "are not visible (otherwise that is an error); the frame below a "
                                              "photo cut at the waist or knees is white (mask 0), the person's "
                                              "pixels are kept as they are"}),
                "keypoint_threshold": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01,
                                                 "tooltip": "a joint counts as visible above this confidence"}),
                "segmentation": (SEGMENT_METHODS, {"default": "mediapipe_pose", "tooltip": "person mask source "
                                                   "when no mask is connected"}),
            },
            "optional": {
                "pose": ("POSE_KEYPOINT", {"tooltip": "use these keypoints instead of detecting (mediapipe)"}),
                "mask": ("MASK", {"tooltip": "use this person mask instead of segmenting"}),
            },
        }

    def align(self, image, resolution, person_index, allow_partial, keypoint_threshold, segmentation,
              pose=None, mask=None):
        import torch
        from ..models.pose import align as A
        node = "HumanGenAlignFullBody"
        size = A.SIZES[resolution]
        images, masks, frames = [], [], []
        batch = _frames_u8(image, node)
        if mask is not None:
            from ..utils.image import check_mask
            mask = check_mask(mask, node, len(batch))
        for i, img in enumerate(batch):
            host.check_interrupt()
            try:
                res, frame = align_one(img, i, size, person_index, allow_partial, keypoint_threshold,
                                       segmentation, pose, mask, node)
            except A.AlignmentError as exc:
                raise NodeInputError(node, "image", f"image {i}: {exc.problem}", fix=exc.fix) from None
            except HumanGenError as exc:
                raise _wrap(node, "image", exc) from None
            images.append(res.image)
            masks.append(torch.from_numpy(res.mask))
            frames.append(frame)
        return _to_image(images), torch.stack(masks), frames


def align_one(img, index, size, person_index, allow_partial, threshold, segmentation, pose, mask, node):
    """Detect (or take) keypoints and mask for one uint8 image, align it; returns (AlignResult, frame)."""
    import numpy as np
    from ..models import pose as M
    from ..models.pose import align as A
    from ..utils import pose as P
    h, w = img.shape[:2]
    work, s = A.downscale_large(img)
    wh, ww = work.shape[:2]
    if pose is not None:
        frame = _frame_for(pose, index, w, h, node)
        people = [k * np.array([s, s, 1.0]) for k in P.frame_people(frame, "coco17")]
    else:
        det = M.detect_mediapipe(work, threshold, segmentation=(mask is None and segmentation == "mediapipe_pose"))
        frame = det.frame(ww, wh) if s == 1.0 else P.scale_frame(det.frame(ww, wh), w, h)
        people = det.coco17()
    if mask is not None:
        m = _mask_for(mask, index, wh, ww)
    elif pose is None and segmentation == "mediapipe_pose":
        m = det.mask
    else:
        m = M.segment_person(work, segmentation)
    res = A.align_full_body(work, m, people, size=size, person_index=person_index, allow_partial=allow_partial,
                            keypoint_threshold=threshold)
    total = res.matrix @ np.array([[s, 0, 0], [0, s, 0], [0, 0, 1.0]])  # original pixels -> aligned
    out = P.transform_frame(frame, total, size[0], size[1])
    return res, out


NODE_CLASS_MAPPINGS = {"HumanGenAlignFullBody": HumanGenAlignFullBody}
NODE_DISPLAY_NAME_MAPPINGS = {"HumanGenAlignFullBody": "Align Full Body 2:1 (HumanGen)"}
