"""Real detectors on real photos (scikit-image's astronaut.png and camera.png; no downloads), the aligner, the
pose nodes and their errors. mediapipe runs once per photo (module-scoped fixtures)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from humangen import NODE_CLASS_MAPPINGS as N
from humangen.models import pose as M
from humangen.models.pose import align as A
from humangen.utils import image as I
from humangen.utils import pose as P
from humangen.utils.errors import HumanGenError, NodeInputError

skimage_data = pytest.importorskip("skimage.data", reason="part of the project's requirements: run `python3 launch.py setup` (or `python install.py --dev`)")


def photo(name):
    a = getattr(skimage_data, name)()
    return np.ascontiguousarray(np.stack([a] * 3, -1) if a.ndim == 2 else a)


@pytest.fixture(scope="module")
def photos():
    return {n: photo(n) for n in ("astronaut", "camera")}


@pytest.fixture(scope="module")
def detections(photos):
    # a low threshold so the astronaut's (cut-off) hip is kept; tests apply their own thresholds
    return {n: M.detect_mediapipe(img, keypoint_threshold=0.1) for n, img in photos.items()}


def centre_y(k, a, b, thr=0.3):
    ys = [k[i, 1] for i in (a, b) if k[i, 2] > thr]
    return float(np.mean(ys)) if ys else None


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_mediapipe_finds_one_upright_person(detections, photos, name):
    det = detections[name]
    assert len(det) == 1 and det.layout == "mediapipe33"
    k = det.coco17()[0]
    h, w = photos[name].shape[:2]
    assert k[0, 2] > 0.9 and k[5, 2] > 0.9 and k[6, 2] > 0.9  # nose and both shoulders, confidently
    nose, shoulders = k[0, 1], centre_y(k, 5, 6)
    assert nose < shoulders
    hips = centre_y(k, 11, 12, thr=0.1)
    assert hips is not None and hips > shoulders + 50
    if name == "camera":
        assert k[11, 2] > 0.9 and k[12, 2] > 0.9
    # every kept point is inside the canvas, and the confident ones lie on the person mask
    present = k[:, 2] > 0
    assert (k[present, 0] <= w).all() and (k[present, 1] <= h).all()
    mask = det.mask
    assert mask.shape == (h, w) and 0.1 < mask.mean() < 0.7
    for x, y, c in k[k[:, 2] > 0.5]:
        assert mask[int(y), int(x)] > 0.5, (name, x, y)


def test_detection_frame_is_openpose18_pixels(detections):
    det = detections["camera"]
    frame = det.frame(512, 512)
    person = frame["people"][0]
    assert len(person["pose_keypoints_2d"]) == 54 and 0 < person["score"] <= 1
    op = np.asarray(person["pose_keypoints_2d"]).reshape(18, 3)
    k = det.coco17()[0]
    np.testing.assert_allclose(op[1, :2], (k[5, :2] + k[6, :2]) / 2)  # neck
    body25 = det.frame(512, 512, layout="body25")["people"][0]["pose_keypoints_2d"]
    assert len(body25) == 75


def test_align_camera_is_2to1_body_centred_on_white(detections, photos):
    det = detections["camera"]
    res = A.align_full_body(photos["camera"], det.mask, det.coco17(), size=(512, 1024), allow_partial=True)
    assert res.image.shape == (1024, 512, 3) and res.mask.shape == (1024, 512)
    k = res.keypoints[0]
    centre = ((k[5, 0] + k[6, 0]) / 2 + (k[11, 0] + k[12, 0]) / 2) / 2
    assert abs(centre - 256) <= 2
    outside = res.mask == 0
    assert outside.mean() > 0.3 and (res.image[outside] == 255).all()
    assert res.warnings and "ankles" in res.warnings[0]
    with pytest.raises(A.AlignmentError, match="no ankles"):
        A.align_full_body(photos["camera"], det.mask, det.coco17())


def test_align_node_astronaut_partial(photos):
    img = I.uint8_to_comfy(photos["astronaut"])
    out, mask, pose = N["HumanGenAlignFullBody"]().align(img, "512x256", -1, True, 0.3, "mediapipe_pose")
    assert out.shape == (1, 512, 256, 3) and mask.shape == (1, 512, 256)
    frame = pose[0]
    assert P.frame_size(frame) == (256, 512)
    k = P.people_array(frame)[0]
    assert abs((k[5, 0] + k[6, 0]) / 2 - 128) <= 2  # hips are cut off: centred on the shoulders
    assert (out[0][mask[0] == 0] == 1.0).all()
    with pytest.raises(NodeInputError, match="HumanGenAlignFullBody: input 'image'.*not a full body.*allow_partial"):
        N["HumanGenAlignFullBody"]().align(img, "512x256", -1, False, 0.3, "mediapipe_pose")


def synthetic_person(x_off=0.0):
    """A 600 x 800 photo with a rectangle 'person' (y 100..500) and COCO-17 keypoints on it."""
    img = np.full((800, 600, 3), 90, np.uint8)
    mask = np.zeros((800, 600), np.float32)
    mask[100:500, 200 + int(x_off):280 + int(x_off)] = 1.0
    img[mask > 0] = (200, 30, 30)
    k = np.zeros((17, 3))
    pts = {0: (240, 120), 5: (260, 180), 6: (220, 180), 11: (256, 320), 12: (228, 320), 15: (250, 490),
           16: (230, 490)}
    for i, (x, y) in pts.items():
        k[i] = (x + x_off, y, 0.9)
    return img, mask, k


def test_align_geometry_exactly():
    img, mask, k = synthetic_person()
    res = A.align_full_body(img, mask, [k], size=(256, 512))
    # vertical: blob 100..500 (h 400) + 5% + 5 px = 25 px margin -> crop 450 x 225, scale 256/225
    s = 256 / 225
    rows = np.nonzero(res.mask.max(axis=1) > 0.5)[0]
    assert abs(rows[0] - 25 * s) <= 1.5 and abs(rows[-1] + 1 - 425 * s) <= 1.5
    cx = ((260 + 220) / 2 + (256 + 228) / 2) / 2
    q = res.keypoints[0]
    assert abs(((q[5, 0] + q[6, 0]) / 2 + (q[11, 0] + q[12, 0]) / 2) / 2 - 128) <= 1
    np.testing.assert_allclose(q[0, 0] - 128, (240 - cx) * s, atol=s)
    assert (res.image[res.mask == 0] == 255).all()  # background (grey 90) became white
    assert tuple(res.image[256, 128]) == (200, 30, 30)


def _outside_photo(res, photo_hw, out_hw):
    """Output pixels whose whole area-resampling footprint lies outside the source photo."""
    (s, _, tx), (_, _, ty) = res.matrix
    h, w = photo_hw
    v = np.arange(out_hw[0])[:, None]
    u = np.arange(out_hw[1])[None, :]
    return (v >= (h * s + ty)) | ((v + 1) <= ty) | (u >= (w * s + tx)) | ((u + 1) <= tx)


def test_align_half_body_photo_pads_white(detections):
    """The bundled astronaut (cut at the waist) aligned with allow_partial: white below the photo, person kept."""
    import cv2
    from PIL import Image
    from hgtest import ROOT
    img = np.asarray(Image.open(ROOT / "workflows" / "assets" / "astronaut.png").convert("RGB"))
    det = detections["astronaut"]
    assert np.array_equal(img, photo("astronaut"))  # the detections were made on these pixels
    res = A.align_full_body(img, det.mask, det.coco17(), size=(256, 512), allow_partial=True)
    outside = _outside_photo(res, img.shape[:2], (512, 256))
    (s, _, _), (_, _, ty) = res.matrix
    cut = int(np.ceil(img.shape[0] * s + ty))  # first output row entirely below the photo
    assert 512 - cut > 512 // 10  # the frame reaches well below the waist
    assert (res.image[outside] == 255).all() and (res.mask[outside] == 0).all()
    assert (res.image[cut:] == 255).all() and (res.mask[cut:] == 0).all()  # no streaks of the last row
    assert (res.mask[cut - 2] > 0.999).sum() > 40  # the person reaches the cut
    # the person's pixels are the photo's, area-resampled (compared with a resize of the raw photo)
    x0, y0, x1, y1 = res.box
    pad = 1024
    big = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    raw = cv2.resize(big[y0 + pad:y1 + pad, x0 + pad:x1 + pad], (256, 512), interpolation=cv2.INTER_AREA)
    person = (res.mask > 0.999) & ~_outside_photo(res, (img.shape[0] - 1, img.shape[1] - 1), (512, 256))
    assert person.sum() > 5000
    assert int(np.abs(res.image[person].astype(int) - raw[person].astype(int)).max()) <= 1


def test_align_knee_cut_photo_keeps_person_pixels_exactly():
    """A textured body cut at the knees, sized so the crop is exactly 256 x 512 (no resampling): every person pixel is
    copied unchanged, the background is white, the 28 rows below the photo are white with mask 0."""
    rng = np.random.default_rng(0)
    img = np.full((556, 600, 3), 90, np.uint8)
    mask = np.zeros((556, 600), np.float32)
    mask[100:, 200:280] = 1.0  # blob 100..556 (456 rows): crop 1.1 * 456 + 10 -> 256 x 512 px
    img[100:, 200:280] = rng.integers(0, 256, (456, 80, 3), dtype=np.uint8)
    k = np.zeros((17, 3))
    for i, (x, y) in {0: (240, 120), 5: (260, 180), 6: (220, 180), 11: (256, 320), 12: (228, 320)}.items():
        k[i] = (x, y, 0.9)
    with pytest.raises(A.AlignmentError, match="no ankles"):
        A.align_full_body(img, mask, [k], size=(256, 512))
    res = A.align_full_body(img, mask, [k], size=(256, 512), allow_partial=True)
    x0, y0, x1, y1 = res.box
    assert (x1 - x0, y1 - y0) == (256, 512) and y1 - 556 == 28
    np.testing.assert_array_equal(res.image[100 - y0:556 - y0, 200 - x0:280 - x0], img[100:, 200:280])
    assert (res.mask[100 - y0:556 - y0, 200 - x0:280 - x0] == 1).all()
    assert (res.image[556 - y0:] == 255).all() and (res.mask[556 - y0:] == 0).all()
    background = res.mask == 0
    assert (res.image[background] == 255).all()


def test_align_uses_the_chosen_persons_joints():
    """Upstream took the body centre from the detection candidate list; we use the chosen person's joints."""
    img, mask, k0 = synthetic_person()
    _, mask2, k1 = synthetic_person(x_off=-160)
    both = np.maximum(mask, mask2)
    res = A.align_full_body(img, both, [k0, k1], size=(256, 512), person_index=1)
    q = res.keypoints[1]
    assert abs(((q[5, 0] + q[6, 0]) / 2 + (q[11, 0] + q[12, 0]) / 2) / 2 - 128) <= 1
    with pytest.raises(A.AlignmentError, match="2 people were found and none was chosen"):
        A.align_full_body(img, both, [k0, k1])
    with pytest.raises(A.AlignmentError, match="only 2 people"):
        A.align_full_body(img, both, [k0, k1], person_index=2)
    k_nohips = k0.copy()
    k_nohips[[11, 12]] = 0
    with pytest.raises(A.AlignmentError, match="no hips"):
        A.align_full_body(img, mask, [k_nohips])


def test_pose_detect_node_and_preview(photos):
    img = I.uint8_to_comfy(photos["astronaut"])
    pose, preview = N["HumanGenPoseDetect"]().detect(img, "mediapipe", 0.3, 1, "openpose18")
    assert len(pose) == 1 and len(pose[0]["people"]) == 1 and P.frame_size(pose[0]) == (512, 512)
    assert preview.shape == (1, 512, 512, 3)
    sk = N["HumanGenRenderPose"]().render(pose, "humansd", 0, 0, 0.05)[0]
    assert sk.shape == (1, 512, 512, 3)
    np.testing.assert_array_equal(I.comfy_to_uint8(sk[0]), P.render_skeleton(pose, "humansd")[0])


def test_bad_inputs_give_clear_errors():
    grey = torch.full((1, 256, 192, 3), 0.5)
    with pytest.raises(NodeInputError, match="HumanGenPoseDetect: input 'image': no person was found"):
        N["HumanGenPoseDetect"]().detect(grey, "mediapipe", 0.3, 1, "openpose18")
    pose, _ = N["HumanGenPoseDetect"]().detect(grey, "mediapipe", 0.3, 1, "openpose18", allow_no_person=True)
    assert pose[0]["people"] == []
    with pytest.raises(NodeInputError, match="HumanGenAlignFullBody: input 'image': image 0: no person"):
        N["HumanGenAlignFullBody"]().align(grey, "512x256", -1, True, 0.3, "mediapipe_pose")
    empty = torch.zeros((1, 0, 64, 3))
    with pytest.raises(NodeInputError, match="HumanGenPoseDetect: input 'image': the image is empty"):
        N["HumanGenPoseDetect"]().detect(empty, "mediapipe", 0.3, 1, "openpose18")
    for box in ("1,2,3", "nan,0,10,10", "0,0,inf,10"):  # NaN compares false with everything: checked apart
        with pytest.raises(NodeInputError, match="person_box.*is not a box 'x0,y0,x1,y1' of finite numbers"):
            N["HumanGenPoseDetect"]().detect(grey, "mmpose_topdown", 0.3, 1, "openpose18", person_box=box)
    with pytest.raises(NodeInputError, match="mmpose_checkpoint.*needs a checkpoint"):
        N["HumanGenPoseDetect"]().detect(grey, "mmpose_topdown", 0.3, 1, "openpose18")
    with pytest.raises(NodeInputError, match="HumanGenRenderPose: input 'pose'"):
        N["HumanGenRenderPose"]().render([{"people": []}], "humansd", 0, 0, 0.05)


def test_segment_node(photos, detections):
    img = I.uint8_to_comfy(photos["camera"])
    (mask,) = N["HumanGenHumanSegment"]().segment(img, "mediapipe_selfie", 0.0)
    assert mask.shape == (1, 512, 512) and 0 < float(mask.min()) + 1 and float(mask.max()) <= 1
    k = detections["camera"].coco17()[0]
    torso = (int((k[5, 1] + k[11, 1]) / 2), int((k[5, 0] + k[11, 0]) / 2))
    assert float(mask[0][torso]) > 0.5 and float(mask[0][20, 500]) < 0.5  # sky is not a person
    (binary,) = N["HumanGenHumanSegment"]().segment(img, "mediapipe_selfie", 0.5)
    assert set(torch.unique(binary).tolist()) <= {0.0, 1.0}


def test_face_boxes(photos, detections):
    from humangen.models.pose import faces, mediapipe_backend
    img = photos["astronaut"]
    nose = detections["astronaut"].coco17()[0][0]
    mt = faces.detect_faces_mtcnn(img, min_confidence=0.9, min_face_size=60)
    mp = mediapipe_backend.detect_faces(img, 0.5)
    kp = faces.faces_from_keypoints(detections["astronaut"].coco17())
    for boxes in (mt, mp, kp):
        assert len(boxes) == 1
        x0, y0, x1, y1, s = boxes[0]
        assert x0 < nose[0] < x1 and y0 < nose[1] < y1 and 40 < x1 - x0 < 200 and s > 0.5
    none = mediapipe_backend.detect_faces(np.full((128, 128, 3), 128, np.uint8))
    assert none.shape == (0, 5)
    for side in (16, 59):  # smaller than the smallest face MTCNN looks for: no boxes (its pyramid is empty)
        assert faces.detect_faces_mtcnn(img[:side, :side], min_face_size=60).shape == (0, 5)
    box, _ = N["HumanGenFaceBox"]().find(I.uint8_to_comfy(img[:16, :16]), "mtcnn", 0.5, 1.0, False, 1)
    assert box["boxes"] == [[]]
    two = [detections["astronaut"].frame(512, 512)] * 2
    with pytest.raises(NodeInputError, match="HumanGenFaceBox: input 'pose': 2 pose frames for a batch of more"):
        N["HumanGenFaceBox"]().find(I.uint8_to_comfy(np.stack([img] * 3)), "keypoints", 0.3, 1.5, True, 1, pose=two)
    box, mask = N["HumanGenFaceBox"]().find(I.uint8_to_comfy(img), "keypoints", 0.3, 1.5, True, 1,
                                            pose=[detections["astronaut"].frame(512, 512)])
    (x0, y0, x1, y1, s), = box["boxes"][0]
    assert box["canvas_width"] == 512 and x1 - x0 == pytest.approx(y1 - y0)
    assert mask.shape == (1, 512, 512) and float(mask[0, int(nose[1]), int(nose[0])]) == 1.0
    assert float(mask.sum()) == pytest.approx(((np.arange(512) + 0.5 >= x0) & (np.arange(512) + 0.5 <= x1)).sum()
                                              * ((np.arange(512) + 0.5 >= y0) & (np.arange(512) + 0.5 <= y1)).sum())


def test_load_save_pose_nodes(standalone_host, detections):
    frames = [detections["camera"].frame(512, 512)]
    # ComfyUI's SaveImage naming (prefix_00001_.png), counted per file name: the second .json takes 00002
    for fmt, name in (("openpose_json", "cam_00001_.json"), ("coco_json", "cam_00002_.json"),
                      ("humansd_npz", "cam_00001_.npz")):
        out = N["HumanGenSavePose"]().save(frames, "poses/cam", fmt)
        path = out["result"][0]
        assert os.path.basename(path) == name
        assert path.startswith(standalone_host.output_dir())
        (entry,) = out["ui"]["files"]  # what /view needs to serve it to API clients
        assert entry["type"] == "output" and entry["subfolder"] == "poses"
        assert os.path.join(standalone_host.output_dir(), entry["subfolder"], entry["filename"]) == path
        (back,) = N["HumanGenLoadPose"]().load(f"poses/{entry['filename']} [output]", 0, 0)  # ComfyUI's annotation
        np.testing.assert_array_equal(P.people_array(back[0]), P.people_array(frames[0]))
    with pytest.raises(NodeInputError, match="filename_prefix"):
        N["HumanGenSavePose"]().save(frames, "../escape", "openpose_json")
    with pytest.raises(NodeInputError, match="HumanGenLoadPose: input 'path': no pose file 'missing.json' in the "
                                             "input folder"):
        N["HumanGenLoadPose"]().load("missing.json", 0, 0)
    with pytest.raises(NodeInputError, match="no pose file 'missing.json \\[output\\]' in the output folder"):
        N["HumanGenLoadPose"]().load("missing.json [output]", 0, 0)
    with pytest.raises(HumanGenError, match="HumanGenLoadPose: input 'path'.*outside its folder"):
        N["HumanGenLoadPose"]().load("../output/poses/cam_00001_.json", 0, 0)  # exists, but outside input/
    with pytest.raises(HumanGenError, match="HumanGenLoadPose: input 'path': absolute paths are not allowed"):
        N["HumanGenLoadPose"]().load(path, 0, 0)


def test_mediapipe_version_is_checked(monkeypatch):
    import mediapipe
    from humangen.models.pose import mediapipe_backend
    monkeypatch.setattr(mediapipe, "__version__", "0.10.33")
    with pytest.raises(mediapipe_backend.MediapipeUnavailable, match="0.10.33 is installed.*0.10.21"):
        mediapipe_backend.detect_pose(np.zeros((8, 8, 3), np.uint8))


def test_align_node_with_pose_and_mask_inputs_on_a_large_photo():
    """Inputs >= 2000 px tall are downscaled to 1200 first (upstream); given keypoints/mask follow the image."""
    img, mask, k = synthetic_person()
    big = np.kron(img, np.ones((3, 3, 1), np.uint8))  # 2400 x 1800
    big_mask = np.kron(mask, np.ones((3, 3), np.float32))
    kb = k.copy()
    kb[:, :2] *= 3
    pose = [P.make_frame([kb], 1800, 2400, src_layout="coco17")]
    out, out_mask, out_pose = N["HumanGenAlignFullBody"]().align(
        I.uint8_to_comfy(big), "512x256", -1, False, 0.3, "mediapipe_pose", pose=pose,
        mask=torch.from_numpy(big_mask)[None])
    q = P.people_array(out_pose[0])[0]
    assert P.frame_size(out_pose[0]) == (256, 512)
    assert abs(((q[5, 0] + q[6, 0]) / 2 + (q[11, 0] + q[12, 0]) / 2) / 2 - 128) <= 1
    small = A.align_full_body(img, mask, [k], size=(256, 512))  # same geometry at 1/3 scale (1200 = 1.5 x 800)
    np.testing.assert_allclose(q[:, :2], small.keypoints[0][:, :2], atol=2.5)
    rows = np.nonzero(out_mask[0].numpy().max(axis=1) > 0.5)[0]
    assert abs(rows[0] - 25 * 256 / 225) <= 2


def test_torchvision_nms_survives_a_find_spec_probe():
    """MTCNN needs torchvision.ops.batched_nms; a `find_spec("torchvision")` probe before the real import (mediapipe
    and others probe) must not use up the pack's import hook."""
    import subprocess
    import sys

    from hgtest import ROOT
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('hgp', {str(ROOT / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(ROOT)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['hgp'] = m; spec.loader.exec_module(m)\n"
        "assert importlib.util.find_spec('torchvision') is not None\n"
        "import torch, torchvision\n"
        "b = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])\n"
        "keep = torchvision.ops.batched_nms(b, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 0]), 0.5)\n"
        "print(keep.tolist())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[0, 2]"
