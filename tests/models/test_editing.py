"""SeFa, W+ direction edits, style-space edits, projection and PTI on tiny random generators."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from humangen.models.editing import (Directions, apply_direction, load_directions, save_directions, sefa,
                                     style_layers, style_offsets, load_style_vectors, channel_mask)
from humangen.models.inversion import (PTIConfig, ProjectionConfig, learning_rate_at, pivotal_tuning, project)
from humangen.utils.errors import HumanGenError, HumanGenInterrupted
from sg_helpers import TINY_SG2, TINY_SG2_RECT, TINY_SG3, tiny_generator


@pytest.fixture(scope="module")
def G2():
    return tiny_generator(TINY_SG2_RECT).eval()


@pytest.fixture(scope="module")
def G3():
    return tiny_generator(TINY_SG3).eval()


def _independent_affines(G, w_indices):
    """Collect conv affine weights straight from the state dict with the official routing (gan.md §3.2/§4.1)."""
    sd = G.state_dict()
    sg3_layers = [int(m.group(1)) for k in sd for m in [re.match(r"synthesis\.L(\d+)_\d+_\d+\.affine\.weight$", k)]
                  if m]
    rows = []
    for key, value in sd.items():
        m2 = re.match(r"synthesis\.b(\d+)\.(conv0|conv1)\.affine\.weight$", key)
        m3 = re.match(r"synthesis\.L(\d+)_\d+_\d+\.affine\.weight$", key)
        if m2:
            k = int(np.log2(int(m2.group(1)))) - 2
            idx = 0 if k == 0 else (2 * k - 1 if m2.group(2) == "conv0" else 2 * k)
        elif m3 and int(m3.group(1)) != max(sg3_layers):  # the last SG3 layer is the ToRGB
            idx = int(m3.group(1)) + 1
        else:
            continue
        if idx in w_indices:
            rows.append(value.double().numpy())
    return np.concatenate(rows, 0)


@pytest.mark.parametrize("which", ["G2", "G3"])
def test_sefa_is_orthonormal_and_matches_svd(which, request):
    G = request.getfixturevalue(which)
    layers = [2, 3, 4]
    d = sefa(G, layers, num_directions=5)
    assert d.vectors.shape == (5, G.w_dim) and d.layers == layers
    torch.testing.assert_close(d.vectors @ d.vectors.T, torch.eye(5), atol=1e-5, rtol=0)
    _, singular, vt = np.linalg.svd(_independent_affines(G, layers))
    for k in range(5):
        cos = abs(float(np.dot(vt[k], d.vectors[k].double().numpy())))
        assert cos == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(d.values.numpy(), singular[:5] ** 2, rtol=1e-4)


def test_sefa_rejects_unused_layers(G2):
    with pytest.raises(HumanGenError, match="no conv layer uses W\\+ indices"):
        sefa(G2, [99])


def test_apply_direction_identity_and_locality(G2):
    ws = G2.mapping(torch.randn(2, G2.z_dim), None)
    n = sefa(G2, None, num_directions=1).pick(0)
    assert torch.equal(apply_direction(ws, n, 0.0, [1, 2]), ws)
    edited = apply_direction(ws, n, 3.0, [1, 2])
    torch.testing.assert_close(edited[:, [1, 2]] - ws[:, [1, 2]], 3.0 * n.expand(2, 2, -1))
    untouched = [i for i in range(G2.num_ws) if i not in (1, 2)]
    assert torch.equal(edited[:, untouched], ws[:, untouched])
    with pytest.raises(HumanGenError, match="out of range"):
        apply_direction(ws, n, 1.0, [G2.num_ws])


def test_direction_files_round_trip(tmp_path, G2):
    d = sefa(G2, [1, 2], num_directions=3)
    save_directions(d, str(tmp_path / "d.safetensors"))
    back = load_directions(str(tmp_path / "d.safetensors"))
    assert torch.equal(back.vectors, d.vectors) and back.names == d.names and back.layers == [1, 2]
    # StyleGAN-Human ships [1,512] tensors saved on cuda:0; here a CPU tensor in the same .pt layout
    torch.save(d.vectors[:1].clone(), tmp_path / "upper_length.pt")
    pt = load_directions(str(tmp_path / "upper_length.pt"))
    assert pt.names == ["upper_length"] and torch.equal(pt.vectors, d.vectors[:1])
    np.save(tmp_path / "v.npy", d.vectors.numpy())
    assert torch.equal(load_directions(str(tmp_path / "v.npy")).vectors, d.vectors)
    with pytest.raises(HumanGenError, match="no direction named"):
        pt.pick("bottom_length")


@pytest.mark.parametrize("meta,match", [
    ({"names": "a\nb\nc"}, r"3 names for 2 vectors"),
    ({"layers": "-5"}, r"damaged 'layers' metadata '-5'"),
    ({"layers": "1,1,1"}, r"damaged 'layers' metadata '1,1,1'"),
    ({"layers": "999999999999999999999"}, r"damaged 'layers' metadata"),
])
def test_direction_file_metadata_is_checked_when_loaded(tmp_path, meta, match):
    from safetensors.torch import save_file
    save_file({"directions": torch.randn(2, 16)}, str(tmp_path / "d.safetensors"), metadata=meta)
    with pytest.raises(HumanGenError, match=match):
        load_directions(str(tmp_path / "d.safetensors"))


@pytest.mark.parametrize("case", ["complex", "datetime", "negative_shape"])
def test_npy_direction_files_of_other_kinds(tmp_path, case):
    path = tmp_path / "v.npy"
    if case == "negative_shape":
        np.save(path, np.zeros((2, 16), np.float32))
        raw = path.read_bytes().replace(b"(2, 16)", b"(-1, 16)")
        path.write_bytes(raw)
        match = r"not a readable \.npy array"
    else:
        np.save(path, np.zeros(16, np.complex64) if case == "complex" else np.zeros(16, "datetime64[s]"))
        match = r"must be real numbers"
    with pytest.raises(HumanGenError, match=match):
        load_directions(str(path))


def _captured_styles(G, ws, offsets):
    seen = {}
    hooks = [G.synthesis.get_submodule(n).register_forward_pre_hook(
        lambda mod, args, kwargs, n=n: seen.__setitem__(n, kwargs["styles"].detach().clone()), with_kwargs=True)
        for n in G.synthesis.style_layer_names(include_torgb=False)]
    try:
        img = G.synthesis(ws, noise_mode="const", style_offsets=offsets)
    finally:
        for h in hooks:
            h.remove()
    return img, seen


@pytest.mark.parametrize("which", ["G2", "G3"])
def test_style_space_edits(which, request):
    G = request.getfixturevalue(which)
    ws = G.mapping(torch.randn(1, G.z_dim), None)
    layers = style_layers(G)
    target = layers[2]
    base_img, base = _captured_styles(G, ws, None)
    zero = style_offsets(G, {target.name: torch.zeros(target.channels)}, 5.0)
    img0, _ = _captured_styles(G, ws, zero)
    assert torch.equal(img0, base_img)
    vec = torch.randn(target.channels)
    mask = channel_mask(np.arange(target.channels) % 2, 0.5)
    offsets = style_offsets(G, {target.name: vec}, 2.0, masks={target.name: mask})
    img1, edited = _captured_styles(G, ws, offsets)
    assert not torch.equal(img1, base_img)
    for layer in layers:
        if layer.name == target.name:
            torch.testing.assert_close(edited[layer.name] - base[layer.name], (2.0 * vec * mask)[None])
        else:
            assert torch.equal(edited[layer.name], base[layer.name]), layer.name
    with pytest.raises(HumanGenError, match="channels"):
        style_offsets(G, {target.name: torch.zeros(target.channels + 1)}, 1.0)


def test_shipped_style_vectors_load_safely(tmp_path, G2):
    import pickle
    layers = style_layers(G2)
    arr = np.random.RandomState(0).randn(layers[1].channels).astype(np.float32)
    with open(tmp_path / "style_vect_mean_1.pkl", "wb") as f:
        pickle.dump(arr, f)
    vectors = load_style_vectors({1: str(tmp_path / "style_vect_mean_1.pkl")}, G2)
    np.testing.assert_array_equal(vectors[layers[1].name].numpy(), arr)
    with open(tmp_path / "evil.pkl", "wb") as f:
        f.write(b"cos\nsystem\n(S'echo hi'\ntR.")
    with pytest.raises(HumanGenError, match="os.system"):
        load_style_vectors({1: str(tmp_path / "evil.pkl")}, G2)


def test_learning_rate_schedule():
    peak = 0.01
    assert learning_rate_at(0, 100, peak, 0.25, 0.05) == 0.0
    assert learning_rate_at(50, 100, peak, 0.25, 0.05) == pytest.approx(peak)
    assert learning_rate_at(99, 100, peak, 0.25, 0.05) < 0.01 * peak


def _mse(a, b):
    return (a - b).square().mean(dim=(1, 2, 3))


def test_projection_recovers_a_generated_image(G2):
    torch.manual_seed(0)
    w_true = G2.mapping(torch.from_numpy(np.random.RandomState(5).randn(1, G2.z_dim)).float(), None)
    with torch.no_grad():
        target = G2.synthesis(w_true, noise_mode="const")
    cfg = ProjectionConfig(num_steps=150, space="w+", w_avg_samples=100, optimize_noise=False, seed=1,
                           learning_rate=0.05)
    before = G2.state_dict()["synthesis.b4.const"].clone()
    result = project(G2, target, _mse, cfg)
    assert result.ws.shape == (1, G2.num_ws, G2.w_dim)
    assert result.distances[-1] < result.distances[0] / 10, (result.distances[0], result.distances[-1])
    assert torch.equal(G2.state_dict()["synthesis.b4.const"], before)
    again = project(G2, target, _mse, cfg)
    assert torch.equal(again.ws, result.ws)


def test_projection_noise_regularised_path_runs_and_renormalises(G2):
    target = torch.zeros(1, 3, G2.img_height, G2.img_width)
    cfg = ProjectionConfig(num_steps=3, w_avg_samples=20)
    result = project(G2, target, _mse, cfg)
    assert result.noise
    for v in result.noise.values():
        assert abs(float(v.mean())) < 1e-5 and float(v.square().mean()) == pytest.approx(1.0, abs=1e-4)


def test_pti_lowers_loss_and_keeps_original(G2):
    ws = G2.mapping(torch.randn(1, G2.z_dim), None).detach()
    target = torch.rand(1, 3, G2.img_height, G2.img_width) * 2 - 1
    original = {k: v.clone() for k, v in G2.state_dict().items()}
    result = pivotal_tuning(G2, ws, target, _mse, PTIConfig(max_steps=40, learning_rate=5e-3, lpips_threshold=0.0))
    assert result.steps == 40
    assert result.losses[-1] < 0.5 * result.losses[0]
    for k, v in G2.state_dict().items():
        assert torch.equal(v, original[k]), k
    assert result.generator is not G2


def test_pti_early_stop_and_interrupt(G2):
    ws = G2.mapping(torch.randn(1, G2.z_dim), None).detach()
    with torch.no_grad():
        target = G2.synthesis(ws, noise_mode="const")
    stopped = pivotal_tuning(G2, ws, target, _mse, PTIConfig(max_steps=10, lpips_threshold=1e-6))
    assert stopped.steps == 0 and stopped.lpips[0] <= 1e-6

    def interrupt(step, total, info):
        if step == 2:
            raise HumanGenInterrupted("stop")
    with pytest.raises(HumanGenInterrupted):
        pivotal_tuning(G2, ws, target + 0.5, _mse, PTIConfig(max_steps=10, lpips_threshold=0.0), callback=interrupt)
    with pytest.raises(HumanGenInterrupted):
        project(G2, target, _mse, ProjectionConfig(num_steps=10, w_avg_samples=10), callback=interrupt)


def test_optimisers_work_under_comfyui_inference_mode():
    """ComfyUI runs nodes under torch.inference_mode(): generators loaded there hold inference tensors."""
    with torch.inference_mode():
        G = tiny_generator(TINY_SG2_RECT).eval()
        ws = G.mapping(torch.randn(1, G.z_dim), None)
        target = G.synthesis(ws, noise_mode="const")
        res = project(G, target + 0.1, _mse, ProjectionConfig(num_steps=3, w_avg_samples=10))
        tuned = pivotal_tuning(G, res.ws, target, _mse, PTIConfig(max_steps=2, lpips_threshold=0.0))
    assert res.distances[-1] < res.distances[0]
    assert tuned.steps == 2 and not next(tuned.generator.parameters()).is_inference()
