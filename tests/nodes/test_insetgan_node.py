"""The InsetGAN node end to end on tiny generators: face box from keypoints, outputs, errors, determinism."""
from __future__ import annotations

import os

import pytest
import torch

from humangen.models import gan_latents as gl
from humangen.models.lpips import LPIPS
from humangen.nodes.insetgan import HumanGenInsetGAN
from humangen.utils.errors import NodeInputError
from sg_helpers import TINY_SG2, TINY_SG2_RECT, tiny_generator


@pytest.fixture(scope="module")
def gens():
    body = gl.GeneratorDescriptor.from_model(tiny_generator(dict(TINY_SG2_RECT, img_resolution=64), 1).eval(),
                                             "body.pkl", "body:1")
    face = gl.GeneratorDescriptor.from_model(tiny_generator(dict(TINY_SG2, img_resolution=32), 2).eval(),
                                             "face.pkl", "face:1")
    return body, face


def _pose(w=32, h=64):
    kps = [0.0] * 51
    for i, (x, y) in enumerate([(16, 10), (14, 8), (18, 8), (12, 9), (20, 9)]):  # nose, eyes, ears
        kps[3 * i:3 * i + 3] = [x, y, 0.9]
    return [{"people": [{"pose_keypoints_2d": kps}], "canvas_width": w, "canvas_height": h}]


def _openpose18(pose):
    from humangen.utils import pose as P
    return [P.make_frame([P.person_keypoints(f["people"][0], "coco17")], 32, 64, "openpose18", "coco17")
            for f in pose]


@pytest.fixture
def lpips_files(standalone_host):
    os.makedirs(os.path.join(standalone_host.models_root, "lpips"))
    torch.manual_seed(0)
    torch.save(LPIPS("vgg").net.state_dict(), os.path.join(standalone_host.models_root, "lpips",
                                                             "vgg16-397923af.pth"))


def test_node_runs_and_is_deterministic(gens, lpips_files):
    body, face = gens
    bl, fl = gl.latent_from_seeds(body, [1]), gl.latent_from_seeds(face, [2])
    pose = _openpose18(_pose())
    args = dict(schedule="official-inset", steps_scale=0.01, truncation_psi=0.7, face_box_source="keypoints",
                box_scale=1.5, blend="feather", feather_radius=2, lpips_net="vgg", noise_mode="const", seed=0,
                pose=pose)
    image, bo, fo, box, curve = HumanGenInsetGAN().run(body, bl, face, fl, **args)
    assert image.shape == (1, 64, 32, 3) and curve.shape == (1, 240, 480, 3)
    assert bo["tensor"].shape == (1, body.num_ws, body.w_dim) and fo["tensor"].shape == (1, face.num_ws, face.w_dim)
    (x0, y0, x1, y1, score), = box["boxes"][0]
    assert x1 - x0 == y1 - y0 > 0 and box["canvas_width"] == 32 and box["canvas_height"] == 64
    again = HumanGenInsetGAN().run(body, bl, face, fl, **args)
    assert torch.equal(again[0], image)


def test_node_errors(gens, lpips_files):
    body, face = gens
    bl, fl = gl.latent_from_seeds(body, [1]), gl.latent_from_seeds(face, [2])
    with pytest.raises(NodeInputError, match="HumanGenInsetGAN: input 'pose'"):
        HumanGenInsetGAN().run(body, bl, face, fl, face_box_source="keypoints", lpips_net="vgg")
    with pytest.raises(NodeInputError, match="input 'face_box'"):
        HumanGenInsetGAN().run(body, bl, face, fl, face_box_source="face_box", lpips_net="vgg")
    for box, canvas in (([float("nan"), 0, 10, 10, 1], 64), ([0, 0, 10, 10, 1], 0), ([1, 2], 64),
                        ([10, 0, 5, 10, 1], 64)):
        bad = {"boxes": [[box]], "canvas_width": canvas, "canvas_height": 64}
        with pytest.raises(NodeInputError, match="input 'face_box': the first box .* is not a box x0, y0, x1, y1"):
            HumanGenInsetGAN().run(body, bl, face, fl, face_box_source="face_box", face_box=bad, lpips_net="vgg")
    for pose in ([], [{"people": []}]):  # the pose module's words, once, on the node's input
        with pytest.raises(NodeInputError, match=r"^HumanGenInsetGAN: input 'pose': (?!pose: )"):
            HumanGenInsetGAN().run(body, bl, face, fl, face_box_source="keypoints", pose=pose, lpips_net="vgg")
    with pytest.raises(NodeInputError, match="input 'face_generator'.*square"):
        HumanGenInsetGAN().run(body, bl, body, bl, face_box_source="keypoints", pose=_pose(), lpips_net="vgg")
    with pytest.raises(NodeInputError, match="input 'lpips_net'.*alexnet-owt"):
        HumanGenInsetGAN().run(body, bl, face, fl, face_box_source="keypoints", pose=_pose(), lpips_net="alex")
    with pytest.raises(NodeInputError, match="input 'body_latent'"):
        HumanGenInsetGAN().run(body, fl, face, fl, face_box_source="keypoints", pose=_pose(), lpips_net="vgg")


def test_steps_scale_tooltip_says_what_a_short_run_keeps():
    tip = HumanGenInsetGAN.INPUT_TYPES()["required"]["steps_scale"][1]["tooltip"]
    assert "every step count" in tip and "re-detection" in tip and "references are frozen" in tip
    assert "same fraction of the run" in tip


def test_node_returns_latents_that_render_its_image(gens, lpips_files):
    body, face = gens
    bl, fl = gl.latent_from_seeds(body, [1]), gl.latent_from_seeds(face, [2])
    image, bo, fo, box, _ = HumanGenInsetGAN().run(
        body, bl, face, fl, schedule="official-loose", steps_scale=0.02, face_box_source="keypoints",
        box_scale=1.5, blend="hard", lpips_net="vgg", pose=_openpose18(_pose()))
    from humangen.models import insetgan as ig
    from humangen.utils.image import gan_to_comfy
    with torch.no_grad():
        b = body.model.synthesis(bo["tensor"], noise_mode="const")
        f = face.model.synthesis(fo["tensor"], noise_mode="const")
    (x0, y0, x1, y1, _), = box["boxes"][0]
    again = gan_to_comfy(ig.composite(b, f, tuple(int(v) for v in (x0, y0, x1, y1)), "hard"))
    assert float((again - image).abs().max()) < 2e-3


def test_node_precision_bf16_runs_and_bad_precision_is_named(gens, lpips_files):
    body, face = gens
    bl, fl = gl.latent_from_seeds(body, [1]), gl.latent_from_seeds(face, [2])
    args = dict(schedule="official-inset", steps_scale=0.01, truncation_psi=0.7, face_box_source="keypoints",
                box_scale=1.5, blend="feather", feather_radius=2, lpips_net="vgg", noise_mode="const", seed=0,
                pose=_openpose18(_pose()))
    assert HumanGenInsetGAN.INPUT_TYPES()["optional"]["precision"][1]["default"] == "fp32"
    fp32 = HumanGenInsetGAN().run(body, bl, face, fl, **args)
    bf16 = HumanGenInsetGAN().run(body, bl, face, fl, precision="bf16", **args)
    assert bf16[0].shape == fp32[0].shape and not torch.equal(bf16[1]["tensor"], fp32[1]["tensor"])
    assert (bf16[0] - fp32[0]).abs().mean() < 0.05  # an approximation of the fp32 run, not another result
    with pytest.raises(NodeInputError, match="HumanGenInsetGAN: input 'precision'.*fp16.*fp32"):
        HumanGenInsetGAN().run(body, bl, face, fl, precision="fp16", **args)
