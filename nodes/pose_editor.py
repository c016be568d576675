"""HumanGenPoseEditor: edit a POSE_KEYPOINT in the browser, on the node (web/humangen_pose_editor.js draws the
editor; web/pose_editor/ is the component). The edit is stored in the `pose_edit` widget (see utils/pose_edit.py),
so saved workflows (UI and API format) keep it and the headless runner applies it without a browser.
"""
from __future__ import annotations

import hashlib
import io

from ..utils import host
from ..utils.errors import NodeInputError
from ..utils.pose_edit import MAX_CHARS as MAX_EDIT_CHARS

NODE = "HumanGenPoseEditor"
MAX_CANVAS = 4096  # the width/height widgets
DEFAULT_CANVAS = (512, 768)
BACKGROUND_PREVIEW_SIDE = 1024  # the longest side of the background the browser is sent
STYLES = ["openpose", "humansd"]


def background_preview(image, temp_dir: str) -> dict:
    """Save the first image of an IMAGE batch, at most BACKGROUND_PREVIEW_SIDE px on its longest side, as a PNG in
    `temp_dir/humangen_pose_editor/` (named by its content, so a rerun reuses it) -> the /view entry for the UI."""
    from PIL import Image

    from ..utils import image as imageutil
    from ..utils.paths import FileExistsRefusedError, confine, write_exclusive
    arr = imageutil.comfy_to_uint8(image[0])
    pil = Image.fromarray(arr[..., :3])
    scale = BACKGROUND_PREVIEW_SIDE / max(pil.size)
    if scale < 1:
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), Image.BILINEAR)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    data = buf.getvalue()
    name = f"background_{hashlib.sha256(data).hexdigest()[:20]}.png"
    path = confine(temp_dir, f"humangen_pose_editor/{name}", node=NODE)
    if not path.exists():
        try:
            write_exclusive(path, data, node=NODE)
        except FileExistsRefusedError:
            pass  # written meanwhile by another run: same name, same content
    return {"filename": name, "subfolder": "humangen_pose_editor", "type": "temp"}


class HumanGenPoseEditor:
    DESCRIPTION = ("Edit a pose on the node: drag joints, hide/restore keypoints, add, delete, flip or mirror people, "
                   "over the background image, with undo/redo. The edit is stored in the workflow (pose_edit) per "
                   "person and keypoint and re-applied when the input pose changes. Outputs the edited POSE_KEYPOINT "
                   "(comfyui_controlnet_aux structure) and its skeleton image.")
    CATEGORY = "HumanGen/pose"
    FUNCTION = "edit"
    RETURN_TYPES = ("POSE_KEYPOINT", "IMAGE")
    RETURN_NAMES = ("pose", "skeleton")
    OUTPUT_TOOLTIPS = ("the edited pose (pixels; present keypoints have confidence 1.0, hidden ones 0, 0, 0)",
                       "the edited pose drawn as a skeleton on black")
    TEXT_LIMITS = {"pose_edit": MAX_EDIT_CHARS}  # longer than other text inputs; utils.pose_edit checks it

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": ("INT", {"default": 0, "min": 0, "max": MAX_CANVAS, "step": 8,
                                  "tooltip": "output canvas width; 0 = the input pose's (else the background's, "
                                             "else 512). Keypoints are rescaled."}),
                "height": ("INT", {"default": 0, "min": 0, "max": MAX_CANVAS, "step": 8,
                                   "tooltip": "output canvas height; 0 = the input pose's (else the background's, "
                                              "else 768)"}),
                "style": (STYLES, {"default": "openpose", "tooltip": "skeleton image: openpose (ControlNet "
                                   "colours) or humansd (HumanSD's renderer)"}),
                "pose_edit": ("STRING", {"default": "", "multiline": False,
                                         "tooltip": "the stored edit (JSON written by the editor; empty = none)"}),
            },
            "optional": {
                "pose": ("POSE_KEYPOINT", {"tooltip": "the pose to edit (e.g. from Pose Detect); without it the "
                                                      "pose stored with the edit is used"}),
                "background": ("IMAGE", {"tooltip": "shown under the pose in the editor (after a run)"}),
            },
        }

    def edit(self, width, height, style, pose_edit, pose=None, background=None):
        from ..utils import pose as P
        from ..utils import pose_edit as E
        from ..utils.image import check_image, uint8_to_comfy
        if (width == 0) != (height == 0):
            raise NodeInputError(NODE, "width", "set both width and height, or both to 0.",
                                 fix="give both sizes (or 0 and 0 for the input's canvas).")
        for name, v in (("width", width), ("height", height)):
            if v and not 16 <= v <= MAX_CANVAS:
                raise NodeInputError(NODE, name, f"{v} is outside 16..{MAX_CANVAS}.",
                                     fix=f"use a canvas between 16 and {MAX_CANVAS} pixels, or 0 for auto.")
        try:
            edit = E.parse_edit(pose_edit)
        except ValueError as exc:
            raise NodeInputError(NODE, "pose_edit", f"{exc}.",
                                 fix="press 'Reset to input' in the editor, or clear pose_edit (empty = no edit).") from None
        frames = []
        if pose is not None:
            from .pose import checked_pose
            frames = [P.pixel_frame(f) for f in checked_pose(NODE, pose)]
        base = frames[0] if frames else (edit or {}).get("input")
        if base is not None and max(P.frame_size(base)) > E.MAX_CANVAS:
            raise NodeInputError(NODE, "pose", f"the pose canvas {P.frame_size(base)} is larger than "
                                 f"{E.MAX_CANVAS} pixels.", fix="scale the pose down first (Render Pose / Load Pose).")
        if background is not None:
            background = check_image(background, NODE, "background")
            fallback = (int(background.shape[2]), int(background.shape[1]))
        else:
            fallback = (width or DEFAULT_CANVAS[0], height or DEFAULT_CANVAS[1])
        edited, report = E.apply_edit(edit, base, fallback)
        try:  # people the edit adds or replaces are checked like any POSE_KEYPOINT (layout, scores)
            P.as_pose(edited)
        except ValueError as exc:
            problem = str(exc).removeprefix("pose: ")
            raise NodeInputError(NODE, "pose_edit", f"the edit makes an invalid pose: {problem}",
                                 fix="press 'Reset to input' in the editor, or clear pose_edit (empty = no edit).") \
                from None
        if width and (width, height) != P.frame_size(edited):
            edited = P.scale_frame(edited, width, height)
        out_w, out_h = P.frame_size(edited)
        if max(out_w, out_h) > MAX_CANVAS:
            raise NodeInputError(NODE, "width", f"the output canvas {out_w}x{out_h} is larger than {MAX_CANVAS}.",
                                 fix=f"set width and height (at most {MAX_CANVAS}) to scale it down.")
        out_frames = [edited] + frames[1:]
        text = report.text()
        if pose is None and base is not None:
            text += " (No pose input: the pose stored with the edit was used.)"
        if len(frames) > 1:
            text += f" Only frame 1 of {len(frames)} is edited; the others pass through."
        try:
            skeleton = P.render_skeleton(out_frames, style, out_w, out_h, threshold=0.0)
        except ValueError as exc:  # e.g. frames x canvas over the pack's output limit
            from .pose import _wrap
            raise _wrap(NODE, "pose", exc, "pass fewer frames or set a smaller width and height.") from None
        ui = {"humangen_pose_input": [base], "humangen_canvas": [list(P.frame_size(base) if base else fallback)],
              "humangen_edit_report": [text]}
        if background is not None and host.in_comfyui():  # only a browser looks at it
            ui["humangen_background"] = [background_preview(background, host.temp_dir())]
        return {"ui": ui, "result": (out_frames, uint8_to_comfy(skeleton))}


NODE_CLASS_MAPPINGS = {NODE: HumanGenPoseEditor}
NODE_DISPLAY_NAME_MAPPINGS = {NODE: "Pose Editor (HumanGen)"}
