"""SMPL-X transformer: loading, fitting (closed loop on a synthetic SMPL-X file), placement, nodes."""
from __future__ import annotations

import json
import os
import shutil
import zipfile

import numpy as np
import pytest
import torch

import smplx_synth
from hgtest import FIXTURES, requires_cuda
from humangen.models.body import keypoints as kp
from humangen.models.body import placement
from humangen.models.body.fit import FitError, FitSettings, SMPLXFit, fit_smplx, prior_mean_pose, project
from humangen.models.body.model import SMPLXModelMissing, load_smplx
from humangen.utils.errors import HumanGenInterrupted, LimitExceededError, NodeInputError
from humangen.utils.transform import PatchTransform, keypoint_zoom_matrix, patch_matrix, warp_to_canvas

D = torch.float64


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("smplx_model")
    smplx_synth.write(d / "SMPLX_NEUTRAL.npz", pose_blend=0.01)
    return d


@pytest.fixture(scope="session")
def body(model_dir):
    return load_smplx("neutral", [str(model_dir)])


def scene(body, seed, size=(1024, 512), scale=420.0, centre=(256.0, 520.0), pose_noise=0.15, yaw=0.4,
          mean_shape=False):
    """Ground truth body + camera -> clean BODY_25 pixels [25, 2]."""
    rng = np.random.RandomState(seed)
    pose = prior_mean_pose() + rng.randn(63) * pose_noise
    bp = pose.reshape(21, 3)
    bp[3, 0] = abs(bp[3, 0]) + 0.3       # knees bend backwards, elbows forwards (inside the joint limits)
    bp[4, 0] = abs(bp[4, 0])
    bp[17, 1] = -abs(bp[17, 1]) - 0.4
    bp[18, 1] = abs(bp[18, 1])
    betas = rng.randn(10) * 0.5
    betas[0] = 0.3
    if mean_shape:
        betas[:] = 0.0
    go = np.array([0.05, yaw, 0.03]) + rng.randn(3) * 0.05
    J = body.joints(torch.tensor(go[None]), torch.tensor(pose[None]), torch.tensor(betas[None]))
    p = project(J, torch.tensor([scale], dtype=D), torch.tensor([centre], dtype=D))[0].numpy()
    return {"p25": p[list(kp.BODY25_TO_SMPLX)], "scale": scale, "size": size, "rng": rng}


def as_points(p25, conf):
    return [(float(x), float(y), float(c)) for (x, y), c in zip(p25, conf)]


# ---------------------------------------------------------------------------------------------------------------
def test_fast_joints_equal_smplx_forward(body):
    rng = np.random.RandomState(3)
    go, bp, be = rng.randn(3) * 0.5, rng.randn(63) * 0.3, rng.randn(10)
    mine = body.joints(torch.tensor(go[None]), torch.tensor(bp[None]), torch.tensor(be[None]))[0].numpy()
    out = body.module(betas=torch.tensor(be[None]).float(), global_orient=torch.tensor(go[None]).float(),
                      body_pose=torch.tensor(bp[None]).float())
    ref = out.joints[0, :66].detach().numpy()
    sel = list(range(25)) + list(range(55, 66))
    np.testing.assert_allclose(mine[sel], ref[sel], atol=2e-5)


@pytest.mark.parametrize("fmt,seed", [("body25", 0), ("coco17", 1)])
def test_closed_loop_fit(body, fmt, seed):
    sc = scene(body, seed)
    rng = sc["rng"]
    noisy = sc["p25"] + rng.randn(25, 2) * 1.0
    conf = rng.uniform(0.6, 1.0, 25)
    hidden = rng.choice(25, 4, replace=False)
    conf[hidden] = 0.0
    pts = as_points(noisy, conf)
    if fmt == "coco17":
        pts = kp.from_body25(pts, "coco17")
    steps = []
    fit = fit_smplx(body, pts, sc["size"], callback=lambda s, t: steps.append((s, t)))
    assert fit.keypoint_format == fmt
    assert steps and steps[-1][0] == steps[-1][1]
    vis = np.array(fit.visible)
    assert vis.sum() == (25 - len(hidden) if fmt == "body25" else len(set(kp.COCO17_TO_BODY25) - set(hidden)))
    err = np.linalg.norm(np.array(fit.fitted_keypoints) - sc["p25"], axis=1)[vis].mean()
    assert err < 2.0, err
    assert abs(fit.camera["scale"] / sc["scale"] - 1) < 0.05, fit.camera["scale"]
    assert fit.fit_error_px < 2.5


@pytest.mark.parametrize("fmt", ["body25", "coco17"])
def test_camera_scale_of_a_mean_body_at_a_known_camera(body, fmt):
    """Clean keypoints of a mean-shape body projected at known cameras (three scales and centres, yaw 0.4): the fitted
    scale is within 0.5 %. (A body of another size is not: size and camera scale cannot be told apart from 2-D
    keypoints, and the shape prior picks the mean size; see the README's accuracy table.)"""
    for seed, scale, centre in ((0, 420.0, (256.0, 520.0)), (1, 300.0, (200.0, 480.0)), (2, 560.0, (300.0, 560.0))):
        sc = scene(body, seed, scale=scale, centre=centre, pose_noise=0.0, mean_shape=True)
        pts = as_points(sc["p25"], np.ones(25))
        if fmt == "coco17":
            pts = kp.from_body25(pts, "coco17")
        fit = fit_smplx(body, pts, sc["size"])
        assert abs(fit.camera["scale"] / scale - 1) < 0.005, (seed, fit.camera["scale"], scale)


def test_camera_scale_is_unbiased_over_mildly_posed_mean_bodies(body):
    """Pose noise (0.05 rad per DOF) trades bends toward the camera against the scale scene by scene; over scenes the
    fitted scale has no bias (mean within 0.5 %, each scene within 1 %)."""
    errors = []
    for seed in range(6):
        sc = scene(body, seed, pose_noise=0.05, mean_shape=True)
        fit = fit_smplx(body, as_points(sc["p25"], np.ones(25)), sc["size"])
        errors.append(fit.camera["scale"] / sc["scale"] - 1)
    assert abs(np.mean(errors)) < 0.005 and max(map(abs, errors)) < 0.01, errors


def test_fit_is_deterministic_and_handles_a_face_crop(body):
    sc = scene(body, 2)
    conf = np.zeros(25)
    conf[[0, 1, 2, 5, 15, 16, 17, 18]] = 1.0  # head and shoulders only
    a = fit_smplx(body, as_points(sc["p25"], conf), sc["size"])
    b = fit_smplx(body, as_points(sc["p25"], conf), sc["size"])
    assert a.to_dict() == b.to_dict()
    assert a.fit_error_px < 2.0
    assert abs(a.camera["scale"] / sc["scale"] - 1) < 0.1


def test_too_few_visible_keypoints_is_a_clear_error(body):
    conf = np.zeros(25)
    conf[[0, 1]] = 1.0
    with pytest.raises(FitError, match=r"only 2 keypoints are visible .* at least 3"):
        fit_smplx(body, as_points(np.random.RandomState(0).rand(25, 2) * 100, conf), (256, 256))


def test_fit_save_load_round_trip(body, tmp_path):
    sc = scene(body, 4)
    conf = np.ones(25)
    conf[[19, 20, 21, 22, 23, 24]] = 0
    fit = fit_smplx(body, as_points(sc["p25"], conf), sc["size"], settings=FitSettings(pose_steps=(1, 1, 1)))
    path = fit.save(str(tmp_path / "fits" / "a.json"))
    back = SMPLXFit.load(path)
    assert back == fit
    assert [f for f in os.listdir(tmp_path / "fits")] == ["a.json"]  # no temp file left behind
    np.testing.assert_allclose(placement.fit_to_template(back, 1024).matrix,
                               placement.fit_to_template(fit, 1024).matrix)
    with pytest.raises(ValueError, match="unknown SMPL-X fit fields"):
        SMPLXFit.from_dict(dict(fit.to_dict(), bogus=1))


# ---------------------------------------------------------------------------------------------------------------
def test_patch_convention_matches_unitedhuman_fixture():
    meta = json.loads((FIXTURES / "anyres" / "e_anyres_patch_positive_64.json").read_text())
    ref = meta["transforms"]
    res = 64
    np.testing.assert_allclose(patch_matrix((-1, 1), (-1, 1)), ref["full"], atol=1e-7)
    n = 2 * res  # generate_full_from_patches tile 1: bbox y 0..res, x res..2res
    tile = PatchTransform.from_box((res, 0, 2 * res, res), (res, res), (n, n))
    np.testing.assert_allclose(tile.matrix, ref["zoom2_tile1"], atol=1e-7)
    n = 4 * res
    x, y = round(0.15 * n), round(0.55 * n)
    np.testing.assert_allclose(PatchTransform.from_box((x, y, x + res, y + res), (res, res), (n, n)).matrix,
                               ref["zoom4_offcentre"], atol=1e-7)
    np.testing.assert_allclose(keypoint_zoom_matrix(0, crop_size=res, scale=6), ref["keypoint0_face_s6"], atol=1e-7)


def test_transform_matrix_inverse_and_composition():
    tr = PatchTransform(0.37, (120.5, -40.25), (300, 200), (1024, 512))
    back = PatchTransform.from_matrix(tr.matrix, tr.part_size, tr.canvas_size)
    assert back.scale == pytest.approx(tr.scale) and back.offset == pytest.approx(tr.offset)
    inv = tr.inverse()
    pts = [(0.0, 0.0), (200.0, 300.0), (17.0, 250.0)]
    np.testing.assert_allclose(inv.part_to_canvas(tr.part_to_canvas(pts)), pts, atol=1e-9)
    ident = tr.then(inv)
    assert ident.scale == pytest.approx(1) and ident.offset == pytest.approx((0, 0), abs=1e-9)
    # 2:1 canvas: the image occupies the central half in x, as UnitedHuman's canvas does
    full = PatchTransform(1.0, (0.0, 0.0), (1024, 512), (1024, 512))
    assert full.matrix[0][0] == pytest.approx(1.0) and full.matrix[0][2] == pytest.approx(0.0)
    assert PatchTransform.from_box((0, 0, 256, 256), (64, 64), (1024, 512)).matrix[0][2] * 2 == \
        pytest.approx(2 * (0 + 256) / 1024 - 1 + 0.25)


@pytest.mark.parametrize("make,match", [
    (lambda: PatchTransform(1.0, (float("nan"), 0.0), (4, 4), (4, 4)), "offset must be two finite numbers"),
    (lambda: PatchTransform(1.0, (float("inf"), 0.0), (4, 4), (4, 4)), "offset must be two finite numbers"),
    (lambda: PatchTransform(1e308, (0.0, 0.0), (4, 4), (4, 4)), "overflows"),
    (lambda: PatchTransform.from_box((0, 0, 10, 10), (0, 10), (4, 4)), "part_size must be"),
    (lambda: PatchTransform.from_matrix([[1, 0, 0], [0, 1, 0], [0, 0, 1]], (0, 0), (4, 4)), "part_size must be")])
def test_transforms_refuse_values_they_cannot_place(make, match):
    """A placement never carries NaN, an infinite offset or a zero-sized part into the warp (NaN images, bare
    division or conversion errors); each is a ValueError saying which value."""
    with pytest.raises(ValueError, match=match):
        make()


def test_warp_places_a_known_crop_back_on_the_canvas():
    g = torch.Generator().manual_seed(0)
    canvas = torch.nn.functional.interpolate(torch.rand(1, 3, 24, 24, generator=g), size=(96, 96),
                                             mode="bilinear", align_corners=False)
    box = (20, 30, 52, 62)  # x0, y0, x1, y1
    crop = canvas[:, :, 30:62, 20:52]
    crop2 = torch.nn.functional.interpolate(crop, scale_factor=2, mode="bilinear", align_corners=False)
    tr = PatchTransform.from_box(box, (64, 64), (96, 96))
    assert tr.region_clipped == box
    warped, mask = warp_to_canvas(crop2, tr)
    assert mask[0, 0, 31:61, 21:51].min() == 1 and mask[0, 0, :, :19].max() == 0 and mask[0, 0, 63:].max() == 0
    inner = (slice(None), slice(None), slice(32, 60), slice(22, 50))
    assert (warped[inner] - canvas[inner]).abs().mean() < 0.02


def test_known_crop_of_a_canvas_recovers_the_crop_box(body):
    sc = scene(body, 5)
    H, W = sc["size"]
    full_fit = fit_smplx(body, as_points(sc["p25"], np.ones(25)), (H, W))
    # upper-body crop (head to hips), enlarged 1.25x
    x0, y0, side = 0.0, 60.0, 512.0
    f = 1.25
    cp = (sc["p25"] - (x0, y0)) * f
    inside = (cp >= 0).all(1) & (cp <= side * f).all(1)
    assert 8 <= inside.sum() < 25
    crop_fit = fit_smplx(body, as_points(cp, inside.astype(float)), (int(side * f), int(side * f)))
    tr = placement.fit_to_reference(crop_fit, full_fit)
    np.testing.assert_allclose(tr.region, (x0, y0, x0 + side, y0 + side), atol=1.0)
    # keypoints only (no body model) give the same box
    trk = placement.keypoints_to_reference(as_points(cp, inside), (int(side * f),) * 2,
                                           as_points(sc["p25"], np.ones(25)), (H, W))
    np.testing.assert_allclose(trk.region, (x0, y0, x0 + side, y0 + side), atol=1.0)
    # template: the crop lands where the full image's copy of that region lands (within 1 % of the canvas)
    crop_t = placement.fit_to_template(crop_fit, 1024)
    full_t = placement.fit_to_template(full_fit, 1024)
    via_full = PatchTransform.from_box((x0, y0, x0 + side, y0 + side), crop_t.part_size, (H, W)).then(full_t)
    np.testing.assert_allclose(crop_t.region, via_full.region, atol=0.01 * 1024)


def test_template_places_a_full_body_on_the_apose_canvas(body):
    sc = scene(body, 6, pose_noise=0.02, yaw=0.0)  # a person standing in the relaxed A-pose, facing the camera
    fit = fit_smplx(body, as_points(sc["p25"], np.ones(25)), sc["size"])
    tr = placement.fit_to_template(fit, 2048)
    on_canvas = np.array(tr.part_to_canvas(fit.fitted_keypoints))
    tpl = np.array(placement.APOSE_BODY25_2048)
    # head, neck, hips and feet land on the template (the synthetic body's proportions differ a little)
    torso = [0, 1, 8, 9, 12, 11, 14, 15, 16]
    assert np.abs(on_canvas[torso] - tpl[torso]).max() < 0.05 * 2048
    assert 512 < on_canvas[8, 0] < 1536
    assert 0.02 < tr.matrix[0][0] < 2


# ---------------------------------------------------------------------------------------------------------------
def test_missing_model_file_names_the_file_folder_and_url(tmp_path):
    with pytest.raises(SMPLXModelMissing) as e:
        load_smplx("female", [str(tmp_path)])
    msg = str(e.value)
    assert "SMPLX_FEMALE.npz" in msg and str(tmp_path) in msg and "https://smpl-x.is.tue.mpg.de" in msg
    assert "redistribution" in msg
    (tmp_path / "SMPLX_MALE.pkl").write_bytes(b"not used")
    with pytest.raises(SMPLXModelMissing, match=r"\.pkl .* use the \.npz"):
        load_smplx("male", [str(tmp_path)])


def test_model_in_smplx_subfolder_with_pickled_members_loads_without_unpickling(model_dir, tmp_path):
    dst = tmp_path / "smplx" / "SMPLX_MALE.npz"
    dst.parent.mkdir()
    shutil.copy(model_dir / "SMPLX_NEUTRAL.npz", dst)
    # an object array like the official file's `joint2num`, whose pickle payload would fail if it were loaded
    text = b"{'descr': '|O', 'fortran_order': False, 'shape': (), }".ljust(117) + b"\n"
    header = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text
    with zipfile.ZipFile(dst, "a") as zf:
        zf.writestr("joint2num.npy", header + b"cnot_a_module\nboom\n.")
    body = load_smplx("male", [str(tmp_path)])
    assert body.gender == "male" and body.module.v_template.shape == (10475, 3)
    assert not [p for p in os.listdir(tmp_path) if p.startswith("humangen_smplx_")]


# ---------------------------------------------------------------------------------------------------------------
def _install(model_dir, standalone_host):
    dst = os.path.join(standalone_host.model_dirs("smplx")[0], "SMPLX_NEUTRAL.npz")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy(model_dir / "SMPLX_NEUTRAL.npz", dst)


def test_nodes_face_crop_and_full_body_on_one_canvas(model_dir, standalone_host, pack):
    from humangen.nodes.smplx import HumanGenPartToCanvas, HumanGenSMPLXFit, HumanGenSMPLXLoader, \
        HumanGenSMPLXPreview, TARGETS
    with pytest.raises(Exception, match="SMPLX_NEUTRAL.npz"):
        HumanGenSMPLXLoader().load("neutral", 10, 10)
    _install(model_dir, standalone_host)
    (body,) = HumanGenSMPLXLoader().load("neutral", 10, 10)
    sc = scene(body, 7)
    H, W = sc["size"]
    full_pose = kp.make_pose_keypoint(as_points(sc["p25"], np.ones(25)), W, H)
    full_img = torch.nn.functional.interpolate(torch.rand(1, 3, H // 16, W // 16, generator=torch.Generator()
                                                          .manual_seed(1)), size=(H, W), mode="bilinear",
                                               align_corners=False).movedim(1, -1)  # smooth, so resampling is fair
    # face crop: 128 px square around the nose, enlarged 2x (keypoints in COCO-17)
    nx, ny = sc["p25"][0]
    x0, y0 = round(nx) - 64, round(ny) - 64
    fp = (sc["p25"] - (x0, y0)) * 2
    fconf = ((fp >= 0).all(1) & (fp <= 256).all(1)).astype(float)
    face_pose = kp.make_pose_keypoint(kp.from_body25(as_points(fp, fconf), "coco17"), 256, 256)
    face_img = torch.nn.functional.interpolate(full_img[:, y0:y0 + 128, x0:x0 + 128].movedim(-1, 1), scale_factor=2,
                                               mode="bilinear", align_corners=False).movedim(1, -1)
    fit_node = HumanGenSMPLXFit()
    full_fit, full_kp, err = fit_node.fit(body, full_pose, 0, 0.2, True, 20)
    assert err < 2.0 and len(full_kp[0]["people"][0]["pose_keypoints_2d"]) == 75
    face_fit, face_kp, _ = fit_node.fit(body, face_pose, 0, 0.2, True, 20)
    assert len(face_kp[0]["people"][0]["pose_keypoints_2d"]) == 51
    place = HumanGenPartToCanvas()
    t_full, canvas, m_full = place.place(full_img, TARGETS[0], 512, "white", part_fit=full_fit)
    assert canvas.shape == (1, 512, 512, 3) and m_full.shape == (1, 512, 512)
    t_face, both, m_face = place.place(face_img, TARGETS[0], 512, "white", part_fit=face_fit, canvas_image=canvas)
    # the face lands on the full body's face. A face alone fixes its scale poorly (yaw and foreshortening trade
    # off), so the template placement of a bare face is only roughly where the full image's face is ...
    via_full = PatchTransform.from_box((x0, y0, x0 + 128, y0 + 128), (256, 256), (H, W)).then(t_full)
    centre = lambda r: np.array([(r[0] + r[2]) / 2, (r[1] + r[3]) / 2])  # noqa: E731
    assert np.abs(centre(t_face.region) - centre(via_full.region)).max() < 0.05 * 512
    xa, ya, xb, yb = t_face.region_clipped
    assert m_face[0, ya + 2:yb - 2, xa + 2:xb - 2].min() > 0.99 and m_face.sum() < m_full.sum()
    # ... while through the full-body photo (reference target + its transform) it is exact
    t_chain, both2, _ = place.place(face_img, TARGETS[1], 512, "white", part_fit=face_fit, reference_fit=full_fit,
                                    reference_transform=t_full, canvas_image=canvas)
    assert t_chain.canvas_size == (512, 512)
    np.testing.assert_allclose(t_chain.region, via_full.region, atol=1.0)
    # reference target alone: the face goes into the full-body photo's frame
    t_ref, on_photo, _ = place.place(face_img, TARGETS[1], 512, "black", part_fit=face_fit, reference_fit=full_fit,
                                     canvas_image=full_img)
    np.testing.assert_allclose(t_ref.region, (x0, y0, x0 + 128, y0 + 128), atol=1.5)
    inner = on_photo[0, y0 + 4:y0 + 124, x0 + 4:x0 + 124]
    assert (inner - full_img[0, y0 + 4:y0 + 124, x0 + 4:x0 + 124]).abs().mean() < 0.01
    # keypoints only (no fit) also place the face in the photo
    t_kp, _, _ = place.place(face_img, TARGETS[1], 512, "white", part_keypoints=face_pose,
                             reference_keypoints=full_pose)
    np.testing.assert_allclose(t_kp.region, (x0, y0, x0 + 128, y0 + 128), atol=1.5)
    with pytest.raises(NodeInputError, match="part_fit"):
        place.place(face_img, TARGETS[0], 512, "white")
    (prev,) = HumanGenSMPLXPreview().preview(body, full_fit, True, 0.5, image=full_img)
    assert prev.shape == (1, H, W, 3)
    assert (prev - full_img).abs().amax(-1).gt(0.05).float().mean() > 0.02  # silhouette/skeleton drawn


def test_fit_node_errors_and_interrupt(model_dir, standalone_host, pack):
    from humangen.nodes.smplx import HumanGenSMPLXFit, HumanGenSMPLXLoader
    _install(model_dir, standalone_host)
    (body,) = HumanGenSMPLXLoader().load("neutral", 10, 10)
    pts = [(10.0, 10.0, 1.0), (20.0, 30.0, 1.0)] + [(0.0, 0.0, 0.0)] * 16
    with pytest.raises(NodeInputError, match=r"HumanGenSMPLXFit: input 'pose_keypoint'.*only 2 keypoints"):
        HumanGenSMPLXFit().fit(body, kp.make_pose_keypoint(pts, 64, 64), 0, 0.2, True, 20)
    nan_pts = [(float("nan"), 10.0, 1.0)] + [(10.0 + i, 20.0 + 3 * i, 1.0) for i in range(17)]
    with pytest.raises(NodeInputError, match=r"HumanGenSMPLXFit: input 'pose_keypoint'.*NaN or infinite"):
        HumanGenSMPLXFit().fit(body, kp.make_pose_keypoint(nan_pts, 64, 64), 0, 0.2, True, 20)
    with pytest.raises(NodeInputError, match=r"HumanGenSMPLXFit: input 'pose_keypoint': the POSE_KEYPOINT has no"):
        HumanGenSMPLXFit().fit(body, [], 0, 0.2, True, 20)
    no_canvas = [{"people": kp.make_pose_keypoint(pts, 64, 64)[0]["people"]}]
    with pytest.raises(NodeInputError) as info:  # its own input, once, with one fix
        HumanGenSMPLXFit().fit(body, no_canvas, 0, 0.2, True, 20)
    assert str(info.value).startswith("HumanGenSMPLXFit: input 'image'") and str(info.value).count("Fix:") == 1
    sc = scene(body, 8)
    standalone_host.interrupt_event.set()
    with pytest.raises(HumanGenInterrupted):
        HumanGenSMPLXFit().fit(body, kp.make_pose_keypoint(as_points(sc["p25"], np.ones(25)), 512, 1024), 0, 0.2,
                               True, 20)


# ---------------------------------------------------------------------------------------------------------------
WORKFLOW = "smplx_face_and_body_on_canvas.json"


def test_workflow_twins_agree_and_declare_the_model():
    from humangen import NODE_CLASS_MAPPINGS as N
    ui = json.loads((pytest.importorskip("hgtest").ROOT / "workflows" / WORKFLOW).read_text())
    api = json.loads((pytest.importorskip("hgtest").ROOT / "workflows" / "api" / WORKFLOW).read_text())
    assert ui["models"][0]["name"] == "SMPLX_NEUTRAL.npz"
    assert ui["models"][0]["directory"] == "smplx"
    assert {str(n["id"]) for n in ui["nodes"]} == set(api)
    links = {link[0]: link for link in ui["links"]}
    for node in ui["nodes"]:
        entry = api[str(node["id"])]
        assert entry["class_type"] == node["type"]
        assert node["type"] in N or node["type"] in {"LoadImage", "SaveImage", "PreviewImage", "ImageScale"}
        for inp in node["inputs"]:
            if inp.get("link") is not None:
                _, src, slot, dst, _, _ = links[inp["link"]]
                assert entry["inputs"][inp["name"]] == [str(src), slot] and dst == node["id"]
        if node["type"] in N:
            spec = N[node["type"]].INPUT_TYPES()
            widgets = [k for sec in ("required", "optional") for k, e in spec.get(sec, {}).items()
                       if isinstance(e[0], list) or e[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")]
            assert dict(zip(widgets, node["widgets_values"])) == {
                k: v for k, v in entry["inputs"].items() if not isinstance(v, list)}


def test_workflow_face_and_body_on_one_canvas(model_dir, standalone_host, pack):
    """Run the API prompt with a stand-in SMPL-X file under the declared name; the pose detector is replaced by
    synthetic keypoints of a synthetic photo (mediapipe finds no person in noise)."""
    from humangen import NODE_CLASS_MAPPINGS as N
    _install(model_dir, standalone_host)
    prompt = json.loads((pytest.importorskip("hgtest").ROOT / "workflows" / "api" / WORKFLOW).read_text())
    body = load_smplx("neutral", standalone_host.model_dirs("smplx"))
    sc = scene(body, 9)
    H, W = sc["size"]
    full = torch.nn.functional.interpolate(torch.rand(1, 3, 32, 16, generator=torch.Generator().manual_seed(2)),
                                           size=(H, W), mode="bilinear", align_corners=False).movedim(1, -1)
    nx, ny = sc["p25"][0]
    x0, y0 = round(nx) - 80, round(ny) - 80
    face = full[:, y0:y0 + 160, x0:x0 + 160]
    fp = sc["p25"] - (x0, y0)
    fconf = ((fp >= 0).all(1) & (fp <= 160).all(1)).astype(float)
    stand_ins = {"1": (full,), "2": (face,),
                 "3": (kp.make_pose_keypoint(as_points(sc["p25"], np.ones(25)), W, H), None),
                 "4": (kp.make_pose_keypoint(as_points(fp, fconf), 160, 160), None)}
    outputs, saved = {}, {}
    for nid in sorted(prompt, key=int):
        node = prompt[nid]
        if nid in stand_ins:
            outputs[nid] = stand_ins[nid]
            continue
        inputs = {k: (outputs[v[0]][v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
        if node["class_type"] in ("SaveImage", "PreviewImage"):
            saved[nid] = inputs["images"]
            continue
        obj = N[node["class_type"]]()
        outputs[nid] = getattr(obj, obj.FUNCTION)(**inputs)
    canvas = saved["11"]
    assert canvas.shape == (1, 1024, 1024, 3)
    t_full, t_face = outputs["8"][0], outputs["9"][0]
    via_full = PatchTransform.from_box((x0, y0, x0 + 160, y0 + 160), (160, 160), (H, W)).then(t_full)
    np.testing.assert_allclose(t_face.region, via_full.region, atol=1.0)
    # the face pixels on the canvas equal the full body's own pixels there (same person, same place)
    xa, ya, xb, yb = t_face.region_clipped
    inner = (slice(None), slice(ya + 3, yb - 3), slice(xa + 3, xb - 3))
    assert (saved["11"][inner] - outputs["8"][1][inner]).abs().mean() < 0.02
    assert outputs["9"][2][0, ya + 3:yb - 3, xa + 3:xb - 3].min() > 0.99  # coverage mask
    assert saved["12"].shape == (1, H, W, 3)


def test_keypoint_formats_map_to_body25_by_name():
    body25 = [(float(i), float(2 * i), 1.0) for i in range(25)]
    for fmt, n in (("coco17", 17), ("openpose18", 18)):
        pts = kp.from_body25(body25, fmt)
        assert len(pts) == n and kp.detect_format(n) == fmt
        back = kp.to_body25(pts)
        for j in kp.TO_BODY25[fmt]:
            assert back[j] == body25[j]
    assert kp.to_body25(kp.from_body25(body25, "coco17"))[1] == (0.0, 0.0, 0.0)  # COCO has no neck
    mp = [(float(i), 0.0, 1.0) for i in range(33)]  # mediapipe: by name, neck = mid-shoulders, toe = foot index
    b = kp.to_body25(mp)
    assert b[0][0] == 0 and b[5][0] == 11 and b[2][0] == 12 and b[1][0] == 11.5 and b[19][0] == 31
    with pytest.raises(ValueError, match="unknown keypoint format with 20"):
        kp.to_body25([(0.0, 0.0, 0.0)] * 20)


def test_part_to_canvas_batch_from_keypoints_gives_a_transform_list(standalone_host, pack):
    from humangen.nodes.smplx import TARGETS, HumanGenPartToCanvas
    from humangen.utils.transform import TransformList, apose_template
    tpl = np.array(apose_template(512))
    # two "photos" of the template person: at half size, and shifted
    frames = kp.make_pose_keypoint(as_points(tpl * 0.5, np.ones(25)), 256, 256) + \
        kp.make_pose_keypoint(as_points(tpl * 0.5 + (10, 0), np.ones(25)), 256, 256)
    imgs = torch.rand(2, 256, 256, 3, generator=torch.Generator().manual_seed(0))
    t, out, mask = HumanGenPartToCanvas().place(imgs, TARGETS[0], 512, "gray", part_keypoints=frames)
    assert isinstance(t, TransformList) and np.asarray(t.matrix).shape == (2, 3, 3)
    np.testing.assert_allclose(t[0].region, (0, 0, 512, 512), atol=1e-6)
    np.testing.assert_allclose(t[1].region, (-20, 0, 492, 512), atol=1e-6)
    assert out.shape == (2, 512, 512, 3) and mask.shape == (2, 512, 512)
    assert float(mask[1, :, 495:].max()) == 0.0 and float(out[1, 10, 500, 0]) == pytest.approx(0.5)
    # the reference target takes the reference pose's canvas, which a pose may declare up to 16384: refused first
    huge_ref = kp.make_pose_keypoint(as_points(tpl * 32, np.ones(25)), 16384, 16384)
    with pytest.raises(LimitExceededError, match="input 'reference_keypoints': the canvas width 16384 is larger"):
        HumanGenPartToCanvas().place(imgs[:1], TARGETS[1], 512, "gray", part_keypoints=frames[:1],
                                     reference_keypoints=huge_ref)
    with pytest.raises(NodeInputError) as info:  # a missing reference names that input, once
        HumanGenPartToCanvas().place(imgs[:1], TARGETS[1], 512, "gray", part_fit=[object()])
    assert str(info.value).startswith("HumanGenPartToCanvas: input 'reference_fit'") and \
        str(info.value).count("Fix:") == 1


@pytest.mark.gpu
@requires_cuda
def test_warp_on_cuda_matches_cpu():
    img = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    tr = PatchTransform(0.61, (13.3, -4.2), (64, 48), (80, 80))
    a, ma = warp_to_canvas(img, tr)
    b, mb = warp_to_canvas(img.cuda(), tr)
    torch.testing.assert_close(b.cpu(), a, atol=1e-5, rtol=0)
    torch.testing.assert_close(mb.cpu(), ma, atol=1e-5, rtol=0)


def test_fit_runs_under_inference_mode_like_comfyui(model_dir):
    """ComfyUI executes nodes inside torch.inference_mode(); the loader's tensors and any joint buffers cached there
    are inference tensors. The fit must still optimise (regression: 'element 0 of tensors does not require grad')."""
    with torch.inference_mode():
        body = load_smplx("neutral", [str(model_dir)])
        sc = scene(body, 4)  # fills the joint cache under inference mode
        fit = fit_smplx(body, as_points(sc["p25"], np.ones(25)), sc["size"])
    assert fit.fit_error_px < 2.5
    assert abs(fit.camera["scale"] / sc["scale"] - 1) < 0.05


@pytest.mark.parametrize("fmt", ["ui", "api"])
def test_face_and_body_workflow_runs_through_the_runner(model_dir, tmp_path, capsys, fmt):
    """The shipped SMPL-X workflow end to end through the headless runner (which, like ComfyUI, runs nodes under
    torch.inference_mode()), with the synthetic model file and the astronaut photo as both inputs."""
    import shutil

    from PIL import Image

    from hgtest import ROOT
    from humangen.runner.cli import main
    models = tmp_path / "models" / "smplx"
    models.mkdir(parents=True)
    shutil.copy(model_dir / "SMPLX_NEUTRAL.npz", models)
    inputs = tmp_path / "input"
    inputs.mkdir()
    photo = Image.open(ROOT / "workflows" / "assets" / "astronaut.png").convert("RGB")
    photo.save(inputs / "fullbody.png")
    photo.crop((150, 40, 330, 240)).save(inputs / "face.png")
    wf = ROOT / "workflows" / ("api" if fmt == "api" else "") / "smplx_face_and_body_on_canvas.json"
    code = main(["run", str(wf), "--input-dir", str(inputs), "--out", str(tmp_path / "out"), "--quiet",
                 "--models-dir", str(tmp_path / "models")])
    err = capsys.readouterr().err
    assert code == 0, err
    saved = sorted((tmp_path / "out").rglob("smplx_face_and_body*.png"))
    assert len(saved) == 1 and Image.open(saved[0]).size == (1024, 1024)


def test_nodes_check_their_pose_and_image_inputs_first(model_dir, standalone_host, pack):
    """Keypoints go through the pack's one POSE_KEYPOINT check (a negative canvas was fitted and passed on; a
    person that is a list gave 'could not process its inputs'), and images through check_image (an empty batch
    gave an IndexError), each naming its input."""
    from humangen.nodes.smplx import (TARGETS, HumanGenPartToCanvas, HumanGenSMPLXFit, HumanGenSMPLXLoader,
                                      HumanGenSMPLXPreview)
    _install(model_dir, standalone_host)
    (body,) = HumanGenSMPLXLoader().load("neutral", 10, 10)
    pts = [(10.0 + i, 20.0 + 3 * i, 1.0) for i in range(18)]
    good = kp.make_pose_keypoint(pts, 64, 64)
    for bad in ([dict(good[0], canvas_width=-256)], [dict(good[0], people=[[1, 2, 3]])]):
        with pytest.raises(NodeInputError, match=r"^HumanGenSMPLXFit: input 'pose_keypoint': frame 0 .* Fix:"):
            HumanGenSMPLXFit().fit(body, bad, 0, 0.2, True, 20)
        with pytest.raises(NodeInputError, match=r"^HumanGenPartToCanvas: input 'part_keypoints': frame 0"):
            HumanGenPartToCanvas().place(torch.rand(1, 64, 64, 3), TARGETS[0], 256, "white", part_keypoints=bad)
    with pytest.raises(NodeInputError, match=r"^HumanGenSMPLXFit: input 'image': the image is empty"):
        HumanGenSMPLXFit().fit(body, good, 0, 0.2, True, 20, image=torch.zeros(0, 64, 64, 3))
    with pytest.raises(NodeInputError, match=r"^HumanGenPartToCanvas: input 'canvas_image': the image is empty"):
        HumanGenPartToCanvas().place(torch.rand(1, 64, 64, 3), TARGETS[0], 256, "white", part_keypoints=good,
                                     canvas_image=torch.zeros(0, 64, 64, 3))
    with pytest.raises(NodeInputError, match=r"^HumanGenSMPLXPreview: input 'smplx_fit': there are no fits"):
        HumanGenSMPLXPreview().preview(body, [], True, 0.5)
    with pytest.raises(NodeInputError, match=r"^HumanGenSMPLXPreview: input 'image': expected an IMAGE"):
        HumanGenSMPLXPreview().preview(body, [object()], True, 0.5, image=torch.zeros(64, 64, 3))
