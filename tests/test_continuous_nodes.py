"""Continuous nodes (loader, canvas, region) and the UnitedHuman workflow, with a tiny random AnyRes generator written
as an official-format pickle (the stand-in for network-snapshot-v1.pkl)."""
from __future__ import annotations

import json

import pytest
import torch

from hgtest import ROOT
from sg_helpers import official_pickle_bytes, tiny_generator

from humangen import NODE_CLASS_MAPPINGS
from humangen.models import continuous as C
from humangen.nodes import continuous as N
from humangen.utils.errors import HumanGenError, HumanGenInterrupted, NodeInputError

TINY_ANYRES = {"z_dim": 16, "c_dim": 0, "w_dim": 16, "img_resolution": 16, "img_channels": 3,
               "mapping_kwargs": {"num_layers": 2}, "training_mode": "patch",
               "scale_mapping_kwargs": {"scale_mapping_min": 1, "scale_mapping_max": 8,
                                        "scale_mapping_norm": "positive"},
               "channel_base": 256, "channel_max": 16, "num_fp16_res": 0, "conv_clamp": 256,
               "magnitude_ema_beta": 0.999}
WORKFLOW = "unitedhuman_2048_face_closeup"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_pkl():
    return official_pickle_bytes(tiny_generator(TINY_ANYRES), "")


@pytest.fixture
def gen(tiny_pkl, standalone_host, tmp_path, monkeypatch):
    monkeypatch.setenv("HUMANGEN_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "models" / "unitedhuman"
    folder.mkdir(parents=True)
    (folder / "network-snapshot-v1.pkl").write_bytes(tiny_pkl)
    (g,) = N.HumanGenUnitedHumanLoader().load("network-snapshot-v1.pkl")
    return g


def _latent(gen, seeds="0", psi=0.8):
    (lat,) = NODE_CLASS_MAPPINGS["HumanGenLatentFromSeeds"]().make(gen, 0, seeds, psi, 0, "w_avg", 100, 123, "w+")
    return lat


def _as_image(x):
    return C.to_uint8_unitedhuman(x).float() / 255


def test_loader_builds_the_continuous_generator(gen):
    assert gen.kind == "anyres" and gen.model.has_scale_branch and gen.height == gen.width == 16
    assert "network-snapshot-v1.pkl" in N.HumanGenUnitedHumanLoader.INPUT_TYPES()["required"]["model_name"][0]
    assert N.BODY25 == list(C.BODY25_NAMES) and N.FRAMINGS[0] == "white_bands"
    assert set(N.FRAMINGS) == set(C.FRAMINGS) and N.MEAN_MODES == list(C.MEAN_MODES)


def test_loader_refuses_a_plain_stylegan(standalone_host, tmp_path, monkeypatch):
    import sg_helpers
    monkeypatch.setenv("HUMANGEN_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "models" / "unitedhuman"
    folder.mkdir(parents=True)
    (folder / "sg3.pkl").write_bytes(official_pickle_bytes(tiny_generator(sg_helpers.TINY_SG3), ""))
    with pytest.raises(NodeInputError, match="HumanGenUnitedHumanLoader.*model_name.*not a continuous"):
        N.HumanGenUnitedHumanLoader().load("sg3.pkl")
    with pytest.raises(NodeInputError, match="model_name"):
        N.HumanGenUnitedHumanLoader().load(N._NO_MODELS)


def test_canvas_node_any_size_framing_progress(gen, standalone_host):
    lat = _latent(gen)
    seen = []
    standalone_host.progress_listener = lambda v, total, preview: seen.append((v, total))
    (img,) = N.HumanGenContinuousRender().render(gen, lat, 40, "person", patch_batch=0)
    assert img.shape == (1, 40, 20, 3)  # 40 is not a multiple of the 16-px patch; 2:1 person strip
    ws = C.apply_mean_mode(gen.model, _wplus(gen, lat), "sample")
    expected = _as_image(C.render_canvas(gen.model, ws, 40, framing="person"))
    assert torch.equal(img, expected)
    # 3 rows x 3 of the 3 columns (x 0-16, 16-32, 24-40 all reach into the strip 10-30), one update per patch
    assert seen == [(i, 9) for i in range(1, 10)]
    (img3,) = N.HumanGenContinuousRender().render(gen, lat, 40, "person", patch_batch=3)
    torch.testing.assert_close(img3, img, atol=1 / 255, rtol=0)


def test_canvas_node_mean_modes(gen):
    lat = _latent(gen, "0,1")
    node = N.HumanGenContinuousRender()
    (both,) = node.render(gen, lat, 16, "square", "sample_and_mix", 8, 100, 123)
    (sample,) = node.render(gen, lat, 16, "square", "sample")
    (mix,) = node.render(gen, lat, 16, "square", "mean_coarse_mix", 8, 100, 123)
    assert both.shape[0] == 4
    assert torch.equal(both[0::2], sample) and torch.equal(both[1::2], mix) and not torch.equal(sample, mix)
    (mean,) = node.render(gen, lat, 16, "square", "only_mean", 8, 100, 123)
    m = C.empirical_mean_ws(gen.model, 100, 123)
    assert mean.shape[0] == 1 and torch.equal(mean, _as_image(C.render_patch(gen.model, m, torch.eye(3))))
    (bands,) = node.render(gen, lat, 32, "white_bands")
    assert bool((bands[:, :, :8] == 1).all()) and bool((bands[:, :, 24:] == 1).all())


def test_region_node_keypoint_and_transform(gen):
    lat = _latent(gen)
    ws = _wplus(gen, lat)
    node = N.HumanGenRegionRender()
    (face,) = node.render(gen, lat, "nose", 6.0, 16)
    assert torch.equal(face, _as_image(C.render_patch(gen.model, ws, C.keypoint_transform("nose", 6.0))))

    class T:  # any object with a 3x3 `.matrix` is a HUMANGEN_TRANSFORM
        matrix = torch.tensor([[0.25, 0, -0.1], [0, 0.25, 0.3], [0, 0, 1]])
    (big,) = node.render(gen, lat, "nose", 6.0, 40, transform=T())
    assert big.shape == (1, 40, 40, 3)
    assert torch.equal(big, _as_image(C.render_canvas(gen.model, ws, 40, region=T.matrix)))

    with pytest.raises(NodeInputError, match="input 'keypoint': 'chin' is not a BODY_25 keypoint name .*Fix: choose"):
        node.render(gen, lat, "chin", 6.0, 16)

    class Bad:
        matrix = [[0.25, 0.1, 0], [0, 0.25, 0], [0, 0, 1]]
    with pytest.raises(NodeInputError, match="HumanGenRegionRender: input 'transform'"):
        node.render(gen, lat, transform=Bad())


def test_region_node_renders_a_transform_list_one_region_each(gen):
    """A TransformList (Part To Canvas on a batch of part images: `.matrix` is [N,3,3]) gives one region per
    transform, each with its own latent or the one shared latent; a transform with NaN names the input."""
    from humangen.utils.transform import PatchTransform, TransformList
    node = N.HumanGenRegionRender()
    parts = TransformList([PatchTransform(0.25, (100.0, 40.0), (64, 64), (256, 256)),
                           PatchTransform(0.5, (10.0, 80.0), (64, 64), (256, 256))])
    for seeds in ("1", "1-2"):
        lat = _latent(gen, seeds)
        ws = _wplus(gen, lat)
        (out,) = node.render(gen, lat, output_size=16, transform=parts)
        assert out.shape == (2, 16, 16, 3)
        for i, t in enumerate(parts):
            one = ws[min(i, ws.shape[0] - 1)][None]
            assert torch.equal(out[i:i + 1], _as_image(C.render_canvas(gen.model, one, 16, region=t.matrix)))
    with pytest.raises(NodeInputError, match="HumanGenRegionRender: input 'transform': 2 transforms for 3 latents"):
        node.render(gen, _latent(gen, "1-3"), output_size=16, transform=parts)

    class NaN:
        matrix = [[0.5, 0, float("nan")], [0, 0.5, 0], [0, 0, 1]]
    with pytest.raises(NodeInputError, match="HumanGenRegionRender: input 'transform': a patch transform holds NaN"):
        node.render(gen, lat, output_size=16, transform=NaN())


def test_render_nodes_refuse_outputs_over_the_batch_limit_before_rendering(gen, monkeypatch):
    """Latents x canvas (and transforms x region) are one output batch: 64 latents at 8192 px would need 51 GiB
    for the canvases alone; refused naming the input before a patch is rendered."""
    from humangen.utils.errors import LimitExceededError
    monkeypatch.setattr(C, "render_canvas", lambda *a, **k: pytest.fail("a canvas was rendered"))
    many = _latent(gen, "0-63")
    with pytest.raises(LimitExceededError, match="HumanGenContinuousRender: input 'latent': 64 canvases"):
        N.HumanGenContinuousRender().render(gen, many, 8192, "square", "sample", mean_samples=100)
    with pytest.raises(LimitExceededError, match="HumanGenRegionRender: input 'latent': 64 regions of 8192x8192"):
        N.HumanGenRegionRender().render(gen, many, output_size=8192, mean_samples=100)


def test_render_nodes_refuse_other_generators_and_stop_on_interrupt(gen, standalone_host):
    import sg_helpers
    from humangen.models import gan_latents as gl
    sg3 = gl.GeneratorDescriptor.from_model(tiny_generator(sg_helpers.TINY_SG3), "sg3.pkl")
    with pytest.raises(NodeInputError, match="HumanGenContinuousRender: input 'generator'.*not a continuous"):
        N.HumanGenContinuousRender().render(sg3, _latent(sg3), 32)
    lat = _latent(gen)
    standalone_host.interrupt_event.set()
    with pytest.raises(HumanGenInterrupted):
        N.HumanGenContinuousRender().render(gen, lat, 64)
    standalone_host.interrupt_event.clear()
    assert issubclass(HumanGenInterrupted, HumanGenError)


def _wplus(gen, lat):
    from humangen.models import gan_latents as gl
    return gl.to_wplus(gen, lat)


# ---- the workflow --------------------------------------------------------------------------------------------------
def _load_workflow():
    ui = json.loads((ROOT / "workflows" / f"{WORKFLOW}.json").read_text())
    api = json.loads((ROOT / "workflows" / "api" / f"{WORKFLOW}.json").read_text())
    return ui, api


def test_workflow_twins_agree():
    ui, api = _load_workflow()
    assert {str(n["id"]): n["type"] for n in ui["nodes"]} == {k: v["class_type"] for k, v in api.items()}
    for n in ui["nodes"]:
        assert n["type"] in NODE_CLASS_MAPPINGS or n["type"] in {"SaveImage", "PreviewImage"}, n["type"]
    (need,) = ui["models"]
    assert need["directory"] == "unitedhuman" and need["name"] == "network-snapshot-v1.pkl"
    assert need["url"] == "https://drive.google.com/uc?export=download&id=1sgtMRWZJ1v4rVzQUaMNeZ8oGv01CyHqm"
    assert api["3"]["inputs"]["canvas_size"] == 2048 and api["4"]["inputs"]["keypoint"] == "nose"


def test_workflow_runs_with_the_stand_in(gen, tmp_path):
    """Executed node by node in API format; the sizes are scaled down for the 16-px stand-in (2048 -> 64)."""
    _, api = _load_workflow()
    api["3"]["inputs"]["canvas_size"] = 64
    api["4"]["inputs"]["output_size"] = 32
    done, saved = {}, {}
    for nid in sorted(api, key=int):  # ids are in dependency order
        node = api[nid]
        kw = {k: (done[v[0]][v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
        if node["class_type"] == "SaveImage":
            saved[nid] = kw["images"]
            continue
        cls = NODE_CLASS_MAPPINGS[node["class_type"]]
        done[nid] = getattr(cls(), cls.FUNCTION)(**kw)
    assert saved["5"].shape == (1, 64, 64, 3) and saved["6"].shape == (1, 32, 32, 3)
    assert bool((saved["5"][:, :, :16] == 1).all())


def test_stylegan_nodes_render_the_whole_canvas(gen, tiny_pkl, tmp_path):
    """The same pkl in models/stylegan works with the StyleGAN loader and synthesizer (identity patch)."""
    from humangen.utils.image import gan_to_comfy
    (tmp_path / "models" / "stylegan").mkdir(parents=True)
    (tmp_path / "models" / "stylegan" / "uh.pkl").write_bytes(tiny_pkl)
    (sg,) = NODE_CLASS_MAPPINGS["HumanGenStyleGANLoader"]().load("uh.pkl")
    assert sg.kind == "anyres"
    lat = _latent(sg)
    (img,) = NODE_CLASS_MAPPINGS["HumanGenStyleGANSynthesize"]().synthesize(sg, lat)
    assert torch.equal(img, gan_to_comfy(C.render_patch(sg.model, _wplus(sg, lat), torch.eye(3))))
