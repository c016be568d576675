"""Face refinement: alignment geometry, MTCNN on a real photo (skimage's astronaut, bundled), paste-back with a
feathered mask (identity and 'paint' stand-ins), the [-1, 1] convention of GFPGAN/CodeFormer, and the node with a
tiny random RestoreFormer that spandrel detects from its state dict."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

import hg_upscale as H
from humangen.models.upscale import faces as fc
from humangen.models.upscale import load_descriptor, upscale
from humangen.nodes.upscale import HumanGenFaceRefineUpscale
from humangen.utils.errors import HumanGenError, NodeInputError

# MTCNN on skimage.data.astronaut() (512 px): box and 5 landmarks measured once with facenet-pytorch 2.6.
ASTRONAUT_BOX = (181.1, 62.2, 267.7, 172.1)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data
    return torch.from_numpy(data.astronaut()).float().div(255).permute(2, 0, 1)[None]  # [1, 3, 512, 512]


@pytest.fixture(scope="module")
def astronaut_faces(astronaut):
    return fc.detect_faces(astronaut)


def test_similarity_transform_recovers_a_known_transform():
    a, t = 1.7, math.radians(25)
    m = torch.tensor([[a * math.cos(t), -a * math.sin(t), 12.0], [a * math.sin(t), a * math.cos(t), -5.0]],
                     dtype=torch.float64)
    src = torch.tensor(fc.FFHQ_TEMPLATE_512, dtype=torch.float64) * 0.3 + 40
    dst = src @ m[:, :2].T + m[:, 2]
    torch.testing.assert_close(fc.similarity_transform(src, dst), m)
    torch.testing.assert_close(fc.invert_affine(fc.invert_affine(m)), m)


def test_feather_mask_ramps_to_zero_at_the_border():
    m = fc.feather_mask(64, 0.25)
    assert m[32, 32] == 1 and m[0, 32] < 0.05 and m[0, 0] < m[0, 32]
    assert torch.all(m[32, :16].diff() > 0)


def test_mtcnn_on_an_image_smaller_than_a_face_finds_none():
    assert fc.detect_faces(torch.rand(2, 3, 12, 30), min_face_size=20) == [[], []]


def test_mtcnn_finds_the_astronauts_face(astronaut_faces):
    (found,) = astronaut_faces
    assert len(found) == 1
    face = found[0]
    assert face.score > 0.99
    for got, want in zip(face.box, ASTRONAUT_BOX):
        assert abs(got - want) < 4
    (lx, ly), (rx, ry) = face.landmarks[:2]
    assert lx < rx and abs(ly - ry) < 10  # left eye first, roughly level
    x0, y0, x1, y1 = face.box
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in face.landmarks)


def test_identity_restorer_changes_almost_nothing(astronaut, astronaut_faces):
    res = fc.refine_faces(astronaut, astronaut_faces, lambda c: c, feather=0.1)
    diff = (res.image - astronaut).abs()
    outside = res.mask[0] == 0
    assert outside.float().mean() > 0.5 and torch.all(diff[0][:, outside] == 0)  # untouched outside the mask
    inside = res.mask[0] > 0.5
    assert diff[0][:, inside].mean() < 0.02  # warp there and back only resamples


def test_restored_face_lands_on_the_face_with_a_feathered_edge(astronaut, astronaut_faces):
    res = fc.refine_faces(astronaut, astronaut_faces, torch.ones_like, strength=0.8, feather=0.1)
    face = astronaut_faces[0][0]
    nx, ny = (round(v) for v in face.landmarks[2])  # the nose
    assert res.mask[0, ny, nx] == pytest.approx(0.8, abs=1e-4)
    expected = astronaut[0, :, ny, nx] * 0.2 + 0.8
    torch.testing.assert_close(res.image[0, :, ny, nx], expected, atol=1e-4, rtol=0)
    assert res.mask[0, 0, 0] == 0 and res.mask[0, 500, 500] == 0
    ys, xs = torch.nonzero(res.mask[0] > 0, as_tuple=True)
    x0, y0, x1, y1 = face.box
    assert xs.min() < x0 and xs.max() > x1  # the aligned crop covers the face with margin
    vals = torch.unique(res.mask[0][res.mask[0] > 0])
    assert len(vals) > 20  # a ramp, not a hard cut-out


def test_faces_scale_with_the_image(astronaut_faces):
    face = astronaut_faces[0][0]
    big = face.scaled(4, 4)
    assert big.box[0] == pytest.approx((face.box[0] + 0.5) * 4 - 0.5)
    assert big.landmarks[2][1] == pytest.approx((face.landmarks[2][1] + 0.5) * 4 - 0.5)


class _SignedFace:
    """GFPGAN-like stand-in: the network works in [-1, 1]; spandrel's descriptor call must not be used."""

    class architecture:
        id = name = "GFPGAN"

    def __init__(self):
        self.model = lambda x: (x.clamp(-1, 1) * 1.0, [])

    def __call__(self, x):
        raise AssertionError("the [0, 1] descriptor call would clamp GFPGAN's [-1, 1] output")


def test_gfpgan_like_models_get_signed_inputs_and_outputs():
    crop = torch.rand((1, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fc.restore_crop(_SignedFace(), crop), crop, atol=1e-6, rtol=0)


def test_real_gfpgan_descriptor_is_flagged_signed():
    from spandrel import MAIN_REGISTRY
    assert "GFPGAN" in fc.SIGNED_FACE_ARCHS and "GFPGAN" in MAIN_REGISTRY
    assert "RestoreFormer" not in fc.SIGNED_FACE_ARCHS  # it normalises inside its spandrel call_fn


# ---- a real spandrel face model (tiny random RestoreFormer) through the node ------------------------------------
@pytest.fixture(scope="module")
def restoreformer_sd():
    return H.tiny_restoreformer()


def test_face_refine_node_end_to_end(standalone_host, astronaut, restoreformer_sd):
    folder = os.path.join(standalone_host.models_root, "face_restore")
    os.makedirs(folder)
    torch.save({"params_ema": restoreformer_sd}, os.path.join(folder, "RestoreFormer.pth"))
    assert "RestoreFormer.pth" in HumanGenFaceRefineUpscale.INPUT_TYPES()["required"]["face_model_name"][0]
    sr = load_descriptor(H.compact_state_dict(scale=2))  # a cheap x2 upscaler
    small = F.interpolate(astronaut, size=(256, 256), mode="area")
    image = small.permute(0, 2, 3, 1)
    seen = []
    standalone_host.progress_listener = lambda v, t, p: seen.append((v, t))
    out, face_mask = HumanGenFaceRefineUpscale().refine(image, sr, "RestoreFormer.pth", tile_size=0,
                                                         min_face_size=20)
    assert out.shape == (1, 512, 512, 3) and face_mask.shape == (1, 512, 512)
    assert (1, 1) in seen  # one face restored, reported
    plain = upscale(sr, small, tile=0).image.permute(0, 2, 3, 1)
    changed = (out - plain).abs().amax(-1) > 1e-6
    assert changed.any() and torch.all(face_mask[changed] > 0)  # only blended pixels changed
    ys, xs = torch.nonzero(face_mask[0] > 0.99, as_tuple=True)
    cx, cy = (ASTRONAUT_BOX[0] + ASTRONAUT_BOX[2]) / 2, (ASTRONAUT_BOX[1] + ASTRONAUT_BOX[3]) / 2
    assert abs(xs.float().mean() - cx) < 20 and abs(ys.float().mean() - cy) < 30


def test_face_refine_node_rejects_a_non_face_model(standalone_host):
    sr = load_descriptor(H.rrdbnet_state_dict())
    image = torch.rand((1, 16, 16, 3))
    with pytest.raises(NodeInputError, match="input 'face_model'.*not a face restorer"):
        HumanGenFaceRefineUpscale().refine(image, sr, "x.pth", face_model=sr)
    with pytest.raises(HumanGenError, match="input 'face_model_name'.*not found"):
        HumanGenFaceRefineUpscale().refine(image, sr, "missing.pth")


def test_alpha_is_carried_through_face_refinement(restoreformer_sd):
    face = load_descriptor(restoreformer_sd, purposes={"FaceSR"})
    sr = load_descriptor(H.compact_state_dict(scale=2))
    rgba = torch.rand((1, 4, 16, 20), generator=torch.Generator().manual_seed(0))
    res, refined = fc.upscale_with_faces(sr, face, rgba, detect=lambda imgs: [[] for _ in imgs], tile=0)
    assert res.image.shape == (1, 4, 32, 40) and refined.faces == [[]]
    torch.testing.assert_close(res.image, upscale(sr, rgba, tile=0).image)
    assert res.mask.shape == (1, 32, 40) and float(res.mask.max()) == 0.0


def test_degenerate_landmarks_are_skipped():
    img = torch.rand((1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    face = fc.Face((4.0, 4.0, 20.0, 20.0), ((10.0, 10.0),) * 5)
    res = fc.refine_faces(img, [[face]], torch.ones_like)
    assert torch.equal(res.image, img) and float(res.mask.max()) == 0.0
