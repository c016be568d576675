"""AnyRes / UnitedHuman generator against the official code's golden outputs (fixtures/anyres, README there):
ws, scale branch (incl. the RMS-normalisation quirk), every transform's patch at ψ 1 and 0.8, the 128-px canvas
assembled from 64-px patches as UnitedHuman's inference.py does, and the mean-coarse mix. Also the safe .pkl path."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from hgtest import FIXTURES, requires_cuda
from humangen.models import build_generator, continuous as C, render_canvas, render_patch

CFG = FIXTURES / "anyres" / "e_anyres_patch_positive_64"
TRANSFORMS = ["full", "zoom2_tile1", "zoom4_offcentre", "zoom1p5", "keypoint0_face_s6"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fx():
    meta = json.loads((CFG.parent / (CFG.name + ".json")).read_text())
    sd = load_file(str(CFG) + ".state_dict.safetensors")
    io = load_file(str(CFG) + ".io.safetensors")
    return meta, sd, io


@pytest.fixture(scope="module")
def G(fx):
    meta, sd, _ = fx
    return build_generator(meta["init_kwargs"], sd)


def test_detected_as_anyres_with_official_structure(G, fx):
    meta, sd, _ = fx
    assert G.arch == "anyres" and G.has_scale_branch
    assert sorted(G.state_dict()) == sorted(meta["state_dict_keys"]) == sorted(sd)
    assert G.synthesis.layer_names == meta["derived"]["layer_names"]
    assert G.scale_mapping.z_dim == 1 and G.num_ws == 16


def test_mapping_matches(G, fx):
    _, _, io = fx
    torch.testing.assert_close(G.mapping(io["z"], None), io["ws_psi1"], atol=1e-5, rtol=0)
    torch.testing.assert_close(G.mapping(io["z"], None, truncation_psi=0.8), io["ws_psi0p8"], atol=1e-5, rtol=0)


def test_scale_branch_and_rms_quirk(G, fx):
    _, _, io = fx
    for name in TRANSFORMS:
        t = io[f"transform.{name}"][None]
        torch.testing.assert_close(C.zoom_of(t)[:, None], io[f"scale_raw.{name}"], atol=1e-6, rtol=0)
        torch.testing.assert_close(G.scale_norm(1 / t[:, 0:1, 0]), io[f"scale_norm.{name}"], atol=1e-6, rtol=0)
        torch.testing.assert_close(G.map_scale(t), io[f"mapped_scale.{name}"], atol=1e-5, rtol=0)
    sweep = G.scale_mapping(G.scale_norm(io["scale_sweep.scale_raw"]), None)
    torch.testing.assert_close(sweep, io["scale_sweep.mapped_scale"], atol=1e-5, rtol=0)
    # the quirk: 'positive' normalisation + RMS normalisation of the 1-D input -> the same mapped scale for all zooms
    assert (sweep - sweep[:1]).abs().max() < 1e-5


@pytest.mark.parametrize("psi", ["1", "0p8"])
def test_patches_at_every_transform(G, fx, psi):
    _, _, io = fx
    ws = io[f"ws_psi{psi}"]
    for name in TRANSFORMS:
        img = render_patch(G, ws, io[f"transform.{name}"])
        torch.testing.assert_close(img, io[f"img_psi{psi}.{name}"], atol=1e-4, rtol=0, msg=name)


def test_canvas_and_mean_coarse_mix(G, fx):
    _, _, io = fx
    ws = G.mapping(io["z"][:1], None, truncation_psi=0.8)
    torch.testing.assert_close(ws, io["canvas.ws"], atol=1e-5, rtol=0)
    full = render_canvas(G, ws, 128, patch_batch=4)  # 4 patches in one call
    torch.testing.assert_close(full, io["canvas.full_before_bands"], atol=1e-4, rtol=0)
    # a tile equals the direct render of its region (the zoom-2 tile rendered alone, sample 0 of the batch)
    torch.testing.assert_close(full[..., 0:64, 64:128], io["img_psi0p8.zoom2_tile1"][:1], atol=1e-4, rtol=0)
    banded = full.clone()
    banded[..., :32] = 1
    banded[..., 96:] = 1
    torch.testing.assert_close(banded, io["canvas.full"], atol=1e-4, rtol=0)
    _assert_uint8_close(C.to_uint8_unitedhuman(banded)[0], io["canvas.full"], io["canvas.uint8_HWC"])

    mixed = C.apply_mean_mode(G, ws, "mean_coarse_mix", mix_layers=8)  # 10000 samples, seed 123
    torch.testing.assert_close(mixed, io["canvas_meanmix.ws"], atol=1e-5, rtol=0)
    out = render_canvas(G, mixed, 128, framing="white_bands", patch_batch=2)
    torch.testing.assert_close(out, io["canvas_meanmix.full"], atol=1e-4, rtol=0)
    _assert_uint8_close(C.to_uint8_unitedhuman(out)[0], io["canvas_meanmix.full"], io["canvas_meanmix.uint8_HWC"])


def _assert_uint8_close(ours, official_float, official_uint8):
    """The conversion is exact on the official floats; ours may cross a truncation boundary by float noise."""
    assert torch.equal(C.to_uint8_unitedhuman(official_float)[0], official_uint8)
    diff = (ours.int() - official_uint8.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3


def test_official_pickle_loads_safely_with_source_hash(G, fx, tmp_path):
    import sg_helpers
    from humangen.models import load_generator
    marker = tmp_path / "executed.txt"
    src = sg_helpers.MARKER_SRC.format(marker=str(marker))
    pkl = tmp_path / "network-snapshot-v1.pkl"
    pkl.write_bytes(sg_helpers.official_pickle_bytes(G, src, keys=("G_ema",)))
    G2 = load_generator(str(pkl), use_cache=False)
    assert not marker.exists()
    assert G2.arch == "anyres" and G2.scale_mapping_kwargs == fx[0]["init_kwargs"]["scale_mapping_kwargs"]
    assert G2.source_sha1 == hashlib.sha1(src.encode()).hexdigest()
    for k, v in G.state_dict().items():
        assert torch.equal(G2.state_dict()[k], v), k


@pytest.mark.gpu
@requires_cuda
def test_canvas_on_gpu_matches_cpu(G, fx):
    import copy
    _, _, io = fx
    Gc = copy.deepcopy(G).cuda()
    ws = io["ws_psi0p8"][:1]
    out = render_canvas(Gc, ws, 100, patch_batch=4)  # not a multiple of the 64-px patch
    assert out.device.type == "cpu" and out.shape == (1, 3, 100, 100)
    torch.testing.assert_close(out, render_canvas(G, ws, 100), atol=1e-4, rtol=0)
    torch.testing.assert_close(render_patch(Gc, io["ws_psi1"], io["transform.zoom1p5"]).cpu(),
                               io["img_psi1.zoom1p5"], atol=1e-4, rtol=0)


def test_generic_stylegan_calls_render_the_whole_canvas(G, fx):
    """Without a transform/mapped scale (StyleGAN nodes, S-space editing), synthesis renders the identity patch."""
    _, _, io = fx
    ws = io["ws_psi1"][:1]
    full = render_patch(G, ws, torch.eye(3))
    torch.testing.assert_close(G.synthesis(ws), full, atol=1e-5, rtol=0)
    styles = G.synthesis.compute_styles(ws)
    torch.testing.assert_close(G.synthesis(ws, styles=styles), full, atol=1e-5, rtol=0)
    assert "scale_mapper" not in dict(G.synthesis.named_modules())
