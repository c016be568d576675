"""SMPL-X transformer nodes: load SMPL-X, fit it to keypoints, place part images on one full-body canvas, preview.

Thin classic-API nodes; the work lives in `models/body/` and `utils/transform.py`. No torch/numpy at import.
"""
from __future__ import annotations

from ..utils import host
from ..utils.errors import HumanGenError, NodeInputError

CATEGORY = "HumanGen/smplx"
GENDERS = ["neutral", "male", "female"]
TARGETS = ["template (UnitedHuman A-pose canvas)", "reference fit (canvas of another image)"]
BACKGROUNDS = {"white": 1.0, "black": 0.0, "gray": 0.5}


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _checked_keypoints(node, pose, input_name, size_of=None):
    """The frames of a POSE_KEYPOINT input, checked like every pose input (`nodes.pose.checked_pose`). A frame
    without a canvas takes `size_of(i)` -> (height, width) (the image it was detected on) when given."""
    from .pose import checked_pose
    frames = _as_list(pose)
    if size_of is not None:
        frames = [dict(f, canvas_height=size_of(i)[0], canvas_width=size_of(i)[1])
                  if isinstance(f, dict) and f.get("canvas_width") is None and f.get("canvas_height") is None else f
                  for i, f in enumerate(frames)]
    return checked_pose(node, frames, input_name)


class HumanGenSMPLXLoader:
    DESCRIPTION = ("Loads your SMPL-X body model (SMPLX_NEUTRAL/MALE/FEMALE.npz from https://smpl-x.is.tue.mpg.de, "
                   "registration required; put it in models/smplx). Nothing pickled inside the file is executed.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("HUMANGEN_SMPLX_MODEL",)
    RETURN_NAMES = ("smplx_model",)
    OUTPUT_TOOLTIPS = ("The SMPL-X body model, for fitting and previews.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "gender": (GENDERS, {"default": "neutral", "tooltip": "Which model file: SMPLX_<GENDER>.npz."}),
            "num_betas": ("INT", {"default": 10, "min": 1, "max": 300, "step": 1,
                                  "tooltip": "Shape coefficients to use (the file caps it: 10, or 300 for v1.1)."}),
            "num_expression": ("INT", {"default": 10, "min": 0, "max": 100, "step": 1,
                                       "tooltip": "Expression coefficients (kept at zero by the body fit)."}),
        }, "hidden": {"prompt": "PROMPT"}}

    def load(self, gender, num_betas, num_expression, prompt=None):
        from ..models.body.model import SMPLXModelMissing, load_smplx
        try:
            body = load_smplx(gender, host.model_dirs("smplx"), num_betas=num_betas, num_expression=num_expression,
                              node="HumanGenSMPLXLoader", tmp_dir=None)
        except SMPLXModelMissing as exc:
            if not exc.pkl_found:  # the one missing-model message: file, folder, link, what else the workflow needs
                host.require_files("HumanGenSMPLXLoader", {"gender": gender}, prompt)
            raise
        return (body,)


class HumanGenSMPLXFit:
    DESCRIPTION = ("Fits SMPL-X (orientation, body pose, shape, weak-perspective camera) to 2D keypoints "
                   "(COCO-17, OpenPose-18 or BODY_25 POSE_KEYPOINT), SMPLify-style: robust reprojection on the "
                   "visible joints, pose/shape priors, joint limits, orientation term. Works on crops: hidden "
                   "joints follow the prior. One fit per frame.")
    CATEGORY = CATEGORY
    FUNCTION = "fit"
    RETURN_TYPES = ("HUMANGEN_SMPLX_FIT", "POSE_KEYPOINT", "FLOAT")
    RETURN_NAMES = ("smplx_fit", "fitted_keypoints", "fit_error_px")
    OUTPUT_TOOLTIPS = ("Fitted parameters, camera and projected joints (one per frame).",
                       "The fitted body's keypoints in the input's format (pixels).",
                       "Confidence-weighted mean reprojection error on the visible keypoints, in pixels "
                       "(mean over frames).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "smplx_model": ("HUMANGEN_SMPLX_MODEL", {"tooltip": "The SMPL-X body model (from SMPL-X Loader)."}),
            "pose_keypoint": ("POSE_KEYPOINT", {"tooltip": "Body keypoints to fit: COCO-17, OpenPose-18 or BODY_25 "
                                                           "(Pose Detect, DWPose, OpenPose)."}),
            "person_index": ("INT", {"default": 0, "min": 0, "max": 64, "step": 1,
                                     "tooltip": "Which person of each frame to fit."}),
            "confidence_threshold": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 1.0, "step": 0.01,
                                               "tooltip": "Keypoints at or below this confidence are hidden."}),
            "fit_shape": ("BOOLEAN", {"default": True, "tooltip": "Optimise the shape (betas) too."}),
            "iterations": ("INT", {"default": 20, "min": 5, "max": 200, "step": 1,
                                   "tooltip": "L-BFGS iterations per optimiser step (10 steps in 4 stages)."}),
        }, "optional": {
            "image": ("IMAGE", {"tooltip": "The image the keypoints came from; gives the image size when the "
                                           "POSE_KEYPOINT has no canvas size (the canvas size wins otherwise)."}),
        }}

    def fit(self, smplx_model, pose_keypoint, person_index, confidence_threshold, fit_shape, iterations,
            image=None):
        from ..models.body import keypoints as kp
        from ..models.body.fit import FitError, FitSettings, fit_smplx
        from ..utils.image import check_image
        node = "HumanGenSMPLXFit"
        if not _as_list(pose_keypoint):
            raise NodeInputError(node, "pose_keypoint", "the POSE_KEYPOINT has no frames.",
                                 fix="connect the keypoints of the image to fit (e.g. HumanGen Pose Detect).")
        if image is not None:
            image = check_image(image, node, "image")
        # a frame without a canvas is in the image's pixels; without the image that is the image's error
        frames = _checked_keypoints(node, pose_keypoint, "pose_keypoint", lambda i: self._size(None, image, i))
        st = FitSettings(conf_threshold=confidence_threshold, fit_shape=fit_shape, inner_iterations=iterations)
        steps = st.camera_steps + sum(st.pose_steps)
        bar = host.progress(steps * len(frames))
        fits, out_pose = [], []
        for i in range(len(frames)):
            try:
                person = kp.read_pose_keypoint(frames, frame=i, person=person_index)
                size = self._size(person, image, i)
                done = i * steps
                fit = fit_smplx(smplx_model, person["points"], size, settings=st,
                                callback=lambda s, t: (host.check_interrupt(), bar.update_absolute(done + s)))
            except NodeInputError:
                raise  # already names its input
            except (FitError, ValueError) as exc:
                raise NodeInputError("HumanGenSMPLXFit", "pose_keypoint", f"frame {i}: {exc}.",
                                     fix="connect keypoints with at least 3 visible body joints, lower "
                                         "confidence_threshold, or pick another person_index.") from exc
            fits.append(fit)
            fitted = [(x, y, 1.0) for x, y in fit.fitted_keypoints]
            out_pose += kp.make_pose_keypoint(kp.from_body25(fitted, person["format"]), size[1], size[0])
        err = sum(f.fit_error_px for f in fits) / len(fits)
        return (fits, out_pose, float(err))

    @staticmethod
    def _size(person, image, i):
        # keypoints are pixels of the POSE_KEYPOINT canvas; the image only stands in when that size is missing
        if person is not None and person["width"] and person["height"]:
            return person["height"], person["width"]
        if image is not None:
            idx = min(i, image.shape[0] - 1)
            return int(image[idx].shape[0]), int(image[idx].shape[1])
        raise NodeInputError("HumanGenSMPLXFit", "image", "the POSE_KEYPOINT has no canvas_width/canvas_height.",
                             fix="connect the image the keypoints were detected on.")


class HumanGenPartToCanvas:
    DESCRIPTION = ("Places a part image (face, hand, upper body, full body) on one canonical full-body canvas: "
                   "the UnitedHuman A-pose template canvas, or the canvas of a reference image (e.g. an aligned "
                   "full-body photo). Uses the part's SMPL-X fit (or, without one, its keypoints). Outputs the "
                   "transform (UnitedHuman patch convention) for region rendering, the warped part and its "
                   "coverage mask.")
    CATEGORY = CATEGORY
    FUNCTION = "place"
    RETURN_TYPES = ("HUMANGEN_TRANSFORM", "IMAGE", "MASK")
    RETURN_NAMES = ("transform", "image", "mask")
    OUTPUT_TOOLTIPS = ("Part -> canvas similarity: 3x3 matrix in UnitedHuman's patch convention, canvas size and "
                       "covered region (a TransformList when the batch has several images; its .matrix is "
                       "[N, 3, 3]).",
                       "The part warped onto the canvas (over canvas_image if given).",
                       "Where the part covers the canvas (1 inside).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "part_image": ("IMAGE", {"tooltip": "The part image (face crop, hand crop, upper body or full body) to "
                                                "place on the canvas."}),
            "target": (TARGETS, {"default": TARGETS[0], "tooltip": "Canvas to place the part on."}),
            "canvas_size": ("INT", {"default": 1024, "min": 64, "max": 8192, "step": 8,
                                    "tooltip": "Side of the square template canvas (the 2048 template is scaled). "
                                               "Ignored for a reference target (its image size is used)."}),
            "background": (list(BACKGROUNDS), {"default": "white",
                                               "tooltip": "Canvas colour outside the part (without canvas_image)."}),
        }, "optional": {
            "part_fit": ("HUMANGEN_SMPLX_FIT", {"tooltip": "The part's SMPL-X fit (from SMPL-X Fit); without it, "
                                                           "part_keypoints place the part."}),
            "part_keypoints": ("POSE_KEYPOINT", {"tooltip": "The part's keypoints, used when there is no part_fit."}),
            "reference_fit": ("HUMANGEN_SMPLX_FIT", {"tooltip": "The reference image's fit, for the reference target "
                                                                "(the part goes into that image's frame)."}),
            "reference_keypoints": ("POSE_KEYPOINT", {"tooltip": "The reference image's keypoints, used when there is "
                                                                 "no reference_fit."}),
            "reference_transform": ("HUMANGEN_TRANSFORM", {"tooltip": "With the reference target: where the "
                                                                      "reference image sits on the final canvas "
                                                                      "(the transform output of its own "
                                                                      "HumanGenPartToCanvas). The part is then "
                                                                      "placed on that canvas through the reference."}),
            "canvas_image": ("IMAGE", {"tooltip": "Composite the part over this image (canvas-sized), e.g. the "
                                                  "output of another HumanGenPartToCanvas."}),
        }}

    def place(self, part_image, target, canvas_size, background, part_fit=None, part_keypoints=None,
              reference_fit=None, reference_keypoints=None, reference_transform=None, canvas_image=None):
        import torch

        from ..models.body import placement
        from ..models.body.render import place_part
        from ..utils.image import check_image
        node = "HumanGenPartToCanvas"
        image = check_image(part_image, node, "part_image")
        size = (int(image.shape[1]), int(image.shape[2]))
        if canvas_image is not None:
            canvas_image = check_image(canvas_image, node, "canvas_image")
        if part_keypoints is not None:  # a frame without a canvas is in the part image's pixels
            part_keypoints = _checked_keypoints(node, part_keypoints, "part_keypoints", lambda i: size)
        if reference_keypoints is not None:
            reference_keypoints = _checked_keypoints(node, reference_keypoints, "reference_keypoints")
        try:
            transforms = [placement.rescale_part(self._transform(target, canvas_size, i, size, part_fit,
                                                                 part_keypoints, reference_fit,
                                                                 reference_keypoints, canvas_image), size)
                          for i in range(image.shape[0])]
            if reference_transform is not None and target == TARGETS[1]:
                chain = _as_list(reference_transform)
                transforms = [tr.then(chain[min(i, len(chain) - 1)]) for i, tr in enumerate(transforms)]
        except NodeInputError:
            raise  # already names its input
        except ValueError as exc:
            raise NodeInputError("HumanGenPartToCanvas", "part_fit", str(exc),
                                 fix="check that the fit/keypoints belong to this part image") from exc
        from ..utils.limits import MAX_IMAGE_SIDE, check_batch_pixels, check_image_size
        sized_by = "canvas_size" if target == TARGETS[0] else (
            "reference_keypoints" if reference_keypoints is not None else "reference_fit")
        for tr in transforms:  # the canvas comes from a widget or from the reference's pose canvas (up to 16384)
            check_image_size(tr.canvas_size[1], tr.canvas_size[0], "HumanGenPartToCanvas", sized_by,
                             max_side=MAX_IMAGE_SIDE, what="canvas")
        check_batch_pixels(len(transforms), transforms[0].canvas_size[1], transforms[0].canvas_size[0],
                           "HumanGenPartToCanvas", "part_image", what="canvases (one per part image)")
        imgs, masks = [], []
        for i, tr in enumerate(transforms):
            canvas = None if canvas_image is None else canvas_image[min(i, canvas_image.shape[0] - 1)][None]
            try:
                im, m = place_part(image[i:i + 1], tr, canvas, BACKGROUNDS[background])
            except NodeInputError:
                raise
            except ValueError as exc:
                raise NodeInputError("HumanGenPartToCanvas", "canvas_image", str(exc),
                                     fix="use a canvas_image of the canvas size (or leave it empty).") from exc
            imgs.append(im)
            masks.append(m)
        from ..utils.transform import TransformList
        out_t = transforms[0] if len(transforms) == 1 else TransformList(transforms)
        return (out_t, torch.cat(imgs), torch.cat(masks))

    @staticmethod
    def _transform(target, canvas_size, i, part_size, part_fit, part_keypoints, reference_fit,
                   reference_keypoints, canvas_image):
        from ..models.body import keypoints as kp
        from ..models.body import placement
        node = "HumanGenPartToCanvas"
        template = target == TARGETS[0]
        if template and canvas_image is not None:
            canvas_size = (int(canvas_image.shape[1]), int(canvas_image.shape[2]))
            if canvas_size[0] != canvas_size[1]:
                raise NodeInputError(node, "canvas_image", "the template canvas is square.",
                                     fix="use a square canvas_image or the reference target.")
            canvas_size = canvas_size[0]
        if part_fit is not None:
            fits = _as_list(part_fit)
            fit = fits[min(i, len(fits) - 1)]
            if template:
                return placement.fit_to_template(fit, canvas_size)
            if reference_fit is None:
                raise NodeInputError(node, "reference_fit", "the reference target needs the reference image's fit.",
                                     fix="connect a HumanGenSMPLXFit of the reference image.")
            return placement.fit_to_reference(fit, _as_list(reference_fit)[0])
        if part_keypoints is None:
            raise NodeInputError(node, "part_fit", "neither a fit nor keypoints of the part image are connected.",
                                 fix="connect part_fit (HumanGenSMPLXFit) or part_keypoints (POSE_KEYPOINT).")
        frames = _as_list(part_keypoints)
        person = kp.read_pose_keypoint(frames, frame=min(i, len(frames) - 1))
        psize = (person["height"], person["width"]) if person["width"] else part_size
        if template:
            return placement.keypoints_to_template(person["points"], psize, canvas_size)
        if reference_keypoints is None and reference_fit is None:
            raise NodeInputError(node, "reference_keypoints", "the reference target needs the reference keypoints.",
                                 fix="connect reference_keypoints (or reference_fit).")
        if reference_keypoints is not None:
            ref = kp.read_pose_keypoint(_as_list(reference_keypoints))
            rsize = (ref["height"], ref["width"])
            if not ref["width"]:
                raise NodeInputError(node, "reference_keypoints", "the reference POSE_KEYPOINT has no canvas size.")
            return placement.keypoints_to_reference(person["points"], psize, ref["points"], rsize)
        rf = _as_list(reference_fit)[0]
        return placement.keypoints_to_reference(person["points"], psize, rf.keypoints, rf.image_size)


class HumanGenSMPLXPreview:
    DESCRIPTION = ("Draws a SMPL-X fit: the projected mesh silhouette, the fitted skeleton (orange) and the input "
                   "keypoints (cyan) over the input image (or black).")
    CATEGORY = CATEGORY
    FUNCTION = "preview"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The preview, one per fit.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "smplx_model": ("HUMANGEN_SMPLX_MODEL", {"tooltip": "The SMPL-X body model the fit was made with."}),
            "smplx_fit": ("HUMANGEN_SMPLX_FIT", {"tooltip": "The fit to draw (from SMPL-X Fit)."}),
            "draw_mesh": ("BOOLEAN", {"default": True, "tooltip": "Overlay the projected mesh silhouette."}),
            "mesh_opacity": ("FLOAT", {"default": 0.45, "min": 0.0, "max": 1.0, "step": 0.05,
                                       "tooltip": "Opacity of the mesh silhouette."}),
        }, "optional": {
            "image": ("IMAGE", {"tooltip": "The image that was fitted (drawn underneath)."}),
        }}

    def preview(self, smplx_model, smplx_fit, draw_mesh, mesh_opacity, image=None):
        import torch

        from ..models.body.render import preview
        from ..utils.image import check_image, comfy_to_uint8, uint8_to_comfy
        fits = _as_list(smplx_fit)
        if not fits:
            raise NodeInputError("HumanGenSMPLXPreview", "smplx_fit", "there are no fits to draw.",
                                 fix="connect the fit output of SMPL-X Fit (HumanGen).")
        if image is not None:
            image = check_image(image, "HumanGenSMPLXPreview", "image")
        out = []
        for i, fit in enumerate(fits):
            base = None if image is None else comfy_to_uint8(image[min(i, image.shape[0] - 1)])
            out.append(uint8_to_comfy(preview(smplx_model, fit, base, mesh_alpha=mesh_opacity, draw_mesh=draw_mesh)))
        sizes = {tuple(o.shape[1:3]) for o in out}
        if len(sizes) > 1:
            raise HumanGenError("HumanGenSMPLXPreview: the fits have different image sizes; preview them one by one.")
        return (torch.cat(out),)


NODE_CLASS_MAPPINGS = {
    "HumanGenSMPLXLoader": HumanGenSMPLXLoader,
    "HumanGenSMPLXFit": HumanGenSMPLXFit,
    "HumanGenPartToCanvas": HumanGenPartToCanvas,
    "HumanGenSMPLXPreview": HumanGenSMPLXPreview,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HumanGenSMPLXLoader": "SMPL-X Loader (HumanGen)",
    "HumanGenSMPLXFit": "SMPL-X Fit to Keypoints (HumanGen)",
    "HumanGenPartToCanvas": "SMPL-X Part to Canvas (HumanGen)",
    "HumanGenSMPLXPreview": "SMPL-X Fit Preview (HumanGen)",
}
