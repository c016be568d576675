"""StyleGAN nodes with tiny generators in a temporary model folder (no ComfyUI needed)."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from sg_helpers import TINY_SG2_RECT, official_pickle_bytes, tiny_generator

from humangen.nodes import stylegan as N
from humangen.utils.errors import HumanGenInterrupted, NodeInputError


@pytest.fixture()
def gen(standalone_host, tmp_path, monkeypatch):
    monkeypatch.setenv("HUMANGEN_CACHE_DIR", str(tmp_path / "cache"))
    G = tiny_generator(TINY_SG2_RECT)
    folder = tmp_path / "models" / "stylegan"
    folder.mkdir(parents=True)
    (folder / "tiny.pkl").write_bytes(official_pickle_bytes(G, "raise SystemExit('exec')"))
    (d,) = N.HumanGenStyleGANLoader().load("tiny.pkl")
    return d, G


def test_loader_lists_and_loads(gen):
    d, G = gen
    opts = N.HumanGenStyleGANLoader.INPUT_TYPES()["required"]["model_name"][0]
    assert opts == ["tiny.pkl"]
    assert (d.height, d.width, d.num_ws, d.kind) == (16, 8, G.num_ws, "stylegan2")
    assert d.generator_id.startswith("tiny.pkl:")
    with pytest.raises(Exception, match="HumanGenStyleGANLoader: input 'model_name'"):
        N.HumanGenStyleGANLoader().load("missing.pkl")


def test_latent_from_seeds_matches_upstream_seeds_and_truncation(gen):
    d, G = gen
    (lat,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="1,3,5-6", truncation_psi=0.7)
    assert lat["seeds"] == [1, 3, 5, 6] and lat["space"] == "w+"
    z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(16) for s in [1, 3, 5, 6]])).float()
    torch.testing.assert_close(lat["z"], z)
    torch.testing.assert_close(lat["tensor"], G.mapping(z, None, truncation_psi=0.7), atol=1e-6, rtol=0)
    (l0,) = N.HumanGenLatentFromSeeds().make(d, 7, truncation_psi=0.0, truncation_cutoff=2)
    assert l0["seeds"] == [7]
    torch.testing.assert_close(l0["tensor"][0, :2], G.mapping.w_avg.expand(2, -1))
    assert not torch.allclose(l0["tensor"][0, 2], G.mapping.w_avg)
    (le,) = N.HumanGenLatentFromSeeds().make(d, 7, truncation_psi=0.0, truncation_center="empirical_mean",
                                             mean_samples=200, mean_seed=123)
    zs = torch.from_numpy(np.random.RandomState(123).randn(200, 16)).float()
    torch.testing.assert_close(le["tensor"][0, 0], G.mapping(zs, None)[:, 0].mean(0), atol=1e-5, rtol=0)
    with pytest.raises(NodeInputError, match="HumanGenLatentFromSeeds: input 'seeds'.*Fix:"):
        N.HumanGenLatentFromSeeds().make(d, 0, seeds="3-1")


def test_synthesize_matches_generator_and_is_batch_independent(gen):
    d, G = gen
    (lat,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="0-2")
    (img1,) = N.HumanGenStyleGANSynthesize().synthesize(d, lat, "const", batch_size=1)
    (img3,) = N.HumanGenStyleGANSynthesize().synthesize(d, lat, "const", batch_size=3)
    assert img1.shape == (3, 16, 8, 3) and img1.dtype == torch.float32
    ref = G.synthesis(lat["tensor"], noise_mode="const", impl="ref")
    expect = ((ref * 127.5 + 128).clamp(0, 255).to(torch.uint8).movedim(1, -1).float() / 255)
    assert (img1 - expect).abs().max() <= 1 / 255 + 1e-6  # at most one uint8 step from rounding-edge cases
    assert torch.equal(img1, img3)
    (r1,) = N.HumanGenStyleGANSynthesize().synthesize(d, lat, "random", 1, noise_seed=5)
    (r2,) = N.HumanGenStyleGANSynthesize().synthesize(d, lat, "random", 2, noise_seed=5)
    assert torch.equal(r1, r2) and not torch.equal(r1, img1)


def test_synthesize_stops_on_interrupt(gen, standalone_host):
    d, _ = gen
    (lat,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="0-3")
    standalone_host.interrupt_event.set()
    with pytest.raises(HumanGenInterrupted):
        N.HumanGenStyleGANSynthesize().synthesize(d, lat, "const", batch_size=1)


def test_style_mix_latents_and_grid(gen):
    d, G = gen
    (rows,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="1,2")
    (cols,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="7-9")
    mixed, grid = N.HumanGenStyleMix().mix(d, rows, cols, layers="0-2", make_grid=True)
    t = mixed["tensor"]
    assert t.shape == (6, G.num_ws, 16)
    torch.testing.assert_close(t[1, :3], cols["tensor"][1, :3])  # row 0, col 1
    torch.testing.assert_close(t[1, 3:], rows["tensor"][0, 3:])
    torch.testing.assert_close(t[5, 3:], rows["tensor"][1, 3:])
    assert grid.shape == (1, 3 * 16, 4 * 8, 3)
    assert torch.all(grid[0, :16, :8] == 1.0)  # blank top-left cell
    with pytest.raises(NodeInputError, match="input 'layers'"):
        N.HumanGenStyleMix().mix(d, rows, cols, layers="0-99", make_grid=False)


@pytest.mark.parametrize("space", ["z", "w", "w+"])
@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolation_runs_from_a_to_b(gen, space, method):
    d, G = gen
    (a,) = N.HumanGenLatentFromSeeds().make(d, 1, truncation_psi=0.8)
    (b,) = N.HumanGenLatentFromSeeds().make(d, 2, truncation_psi=0.8)
    (out,) = N.HumanGenLatentInterpolate().interpolate(d, a, frames=5, method=method, space=space, latent_b=b)
    t = out["tensor"]
    assert t.shape[0] == 5 and out["space"] == space
    first, last = {"z": (a["z"], b["z"]), "w": (a["tensor"][:, 0], b["tensor"][:, 0]),
                   "w+": (a["tensor"], b["tensor"])}[space]
    torch.testing.assert_close(t[0], first[0], atol=1e-5, rtol=0)  # frame 0 is A (upstream swapped these)
    torch.testing.assert_close(t[-1], last[0], atol=1e-5, rtol=0)
    if space == "z":  # z frames are mapped with the seeds' truncation
        from humangen.models.gan_latents import to_wplus
        torch.testing.assert_close(to_wplus(d, out)[0], a["tensor"][0], atol=1e-5, rtol=0)


def test_interpolation_names_the_latent_that_does_not_fit(gen):
    """latent_b from another generator is refused naming latent_b (not a tensor-size error); latent_b in another
    space than latent_a is converted like latent_a (it was refused as 'different spaces')."""
    from humangen.models import gan_latents as gl
    d, _ = gen
    other = gl.GeneratorDescriptor.from_model(tiny_generator(dict(TINY_SG2_RECT, img_resolution=32)).eval(),
                                              "big.pkl", "big:1")
    (a,) = N.HumanGenLatentFromSeeds().make(d, 1)
    with pytest.raises(NodeInputError, match="HumanGenLatentInterpolate: input 'latent_b'"):
        N.HumanGenLatentInterpolate().interpolate(d, a, 3, "lerp", "w+", latent_b=gl.latent_from_seeds(other, [2]))
    b_z = gl.latent_from_seeds(d, [2], space="z")
    (out,) = N.HumanGenLatentInterpolate().interpolate(d, a, 3, "lerp", "w+", latent_b=b_z)
    torch.testing.assert_close(out["tensor"][-1], gl.to_wplus(d, b_z)[0], atol=1e-5, rtol=0)


def test_interpolation_path_through_seeds(gen):
    d, _ = gen
    (a,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="1-3")
    (out,) = N.HumanGenLatentInterpolate().interpolate(d, a, frames=4, method="lerp", space="w+")
    assert out["tensor"].shape[0] == 7
    torch.testing.assert_close(out["tensor"][3], a["tensor"][1])


def test_save_and_load_latent_png(gen, standalone_host, tmp_path):
    d, _ = gen
    (lat,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="4,5", truncation_psi=0.5)
    (img,) = N.HumanGenStyleGANSynthesize().synthesize(d, lat, "const", 2)
    res = N.HumanGenSaveImageWithLatent().save(img, lat, "sub/x", prompt={"1": {}})["ui"]["images"]
    assert [r["filename"] for r in res] == ["x_00001_.png", "x_00002_.png"] and res[0]["subfolder"] == "sub"
    out = tmp_path / "output" / "sub"
    assert sorted(os.listdir(out)) == ["x_00001_.png", "x_00002_.png"]  # no temp files left
    inp = tmp_path / "input"
    inp.mkdir()
    os.replace(out / "x_00002_.png", inp / "x.png")
    lat2, img2 = N.HumanGenLoadLatentFromImage().load("x.png")
    assert lat2["seeds"] == [5] and lat2["generator_id"] == d.generator_id
    torch.testing.assert_close(lat2["tensor"], lat["tensor"][1:2], atol=0, rtol=0)
    torch.testing.assert_close(img2, img[1:2], atol=1 / 255, rtol=0)
    (again,) = N.HumanGenStyleGANSynthesize().synthesize(d, lat2, "const", 1)
    assert torch.equal(again, img[1:2])
    from PIL import Image
    Image.new("RGB", (4, 4)).save(inp / "plain.png")
    with pytest.raises(NodeInputError, match="no HumanGen latent"):
        N.HumanGenLoadLatentFromImage().load("plain.png")


def test_load_latent_png_reruns_when_the_file_is_replaced(gen, standalone_host, tmp_path):
    """ComfyUI caches a node by its inputs: re-uploading another PNG under the same name must change IS_CHANGED,
    or the host keeps serving the old latent (seen in ComfyUI v0.8.0). Checked through the runner engine, which
    caches the same way."""
    from humangen.runner.engine import Engine
    from humangen.utils.latent_png import read_png_latent
    d, _ = gen
    (lat,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="4,5", truncation_psi=0.5)
    (img,) = N.HumanGenStyleGANSynthesize().synthesize(d, lat, "const", 2)
    N.HumanGenSaveImageWithLatent().save(img, lat, "x", prompt={"1": {}})
    out, inp = tmp_path / "output", tmp_path / "input"
    inp.mkdir()
    engine = Engine()
    prompt = {"1": {"class_type": "HumanGenLoadLatentFromImage", "inputs": {"image": "rt.png"}},
              "2": {"class_type": "HumanGenSaveImageWithLatent",
                    "inputs": {"images": ["1", 1], "latent": ["1", 0], "filename_prefix": "rt"}}}
    seeds = []
    for name in ("x_00001_.png", "x_00002_.png"):
        os.replace(out / name, inp / "rt.png")
        result = engine.run(prompt)
        saved = result.outputs["2"]["images"][0]["filename"]
        seeds.append(read_png_latent(str(out / saved))[0]["seeds"])
    assert seeds == [[4], [5]]
    assert "1" not in result.cached
    assert "1" in engine.run(prompt).cached  # unchanged file: cached as before
    assert math.isnan(N.HumanGenLoadLatentFromImage.IS_CHANGED("missing.png"))


def test_save_latent_png_honours_disable_metadata(gen, standalone_host, tmp_path, monkeypatch):
    """ComfyUI's --disable-metadata: core SaveImage writes no prompt/workflow, so neither may we (ComfyUI v0.8.0
    showed both in our PNGs); the latent itself stays. The ComfyHost reads the flag from comfy.cli_args."""
    import sys
    import types

    from PIL import Image

    from humangen.utils import host
    d, _ = gen
    (lat,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="4", truncation_psi=0.5)
    (img,) = N.HumanGenStyleGANSynthesize().synthesize(d, lat, "const", 1)
    wf = {"workflow": {"nodes": []}}
    N.HumanGenSaveImageWithLatent().save(img, lat, "on", prompt={"1": {}}, extra_pnginfo=wf)
    assert {"prompt", "workflow", "humangen_latent"} <= set(Image.open(tmp_path / "output" / "on_00001_.png").info)
    monkeypatch.setattr(standalone_host, "metadata_disabled", lambda: True)
    N.HumanGenSaveImageWithLatent().save(img, lat, "off", prompt={"1": {}}, extra_pnginfo=wf)
    info = Image.open(tmp_path / "output" / "off_00001_.png").info
    assert "prompt" not in info and "workflow" not in info and "humangen_latent" in info
    cli = types.ModuleType("comfy.cli_args")
    cli.args = types.SimpleNamespace(disable_metadata=True)
    monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))
    monkeypatch.setitem(sys.modules, "comfy.cli_args", cli)
    assert host.ComfyHost().metadata_disabled() is True
    cli.args.disable_metadata = False
    assert host.ComfyHost().metadata_disabled() is False
    assert host.StandaloneHost().metadata_disabled() is False


@pytest.mark.parametrize("text,match", [
    ("", "no layers given"), ("0-99", "layer '0-99' is above 5: this generator has ws 0..5"),
    ("9" * 10000, "cannot read '9999.*': use layer numbers and ranges like '4-7'"), ("٣", "cannot read"),
    ("2-1", "range '2-1' goes backwards")])
def test_layer_lists_are_worded_as_layers(gen, text, match):
    """The layers input shares the seeds' range reader but not its words: an empty list, a layer past the
    generator's ws, a number too long to read and a non-ASCII digit say what they are about."""
    d, _ = gen
    (a,) = N.HumanGenLatentFromSeeds().make(d, 1, seeds="1-2")
    assert d.num_ws == 6
    with pytest.raises(NodeInputError, match=f"HumanGenStyleMix: input 'layers': {match}"):
        N.HumanGenStyleMix().mix(d, a, a, text, True, "const", 1)


def test_seed_lists_keep_their_words(gen):
    d, _ = gen
    for text, match in (("4294967296", "seed '4294967296' is above 2\\^32 - 1"), ("1-5000", "more than 4096 seeds")):
        with pytest.raises(NodeInputError, match=f"input 'seeds': {match}"):
            N.HumanGenLatentFromSeeds().make(d, 0, seeds=text)


def test_outputs_are_bounded_before_they_are_made(gen, monkeypatch):
    """Rows x columns of StyleMix, frames x segments of Latent Interpolate (at most MAX_LATENT_ITEMS latents), the
    StyleMix grid and every rendered batch (at most MAX_BATCH_PIXELS pixels) are refused naming the input that sets
    them, before the latents or images are made (4096 x 4096 seeds asked for 16.7 million latents)."""
    from humangen.utils import limits
    d, _ = gen
    (rows,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="0-199")
    (cols,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="0-99")
    with pytest.raises(NodeInputError, match=r"HumanGenStyleMix: input 'col_latent': 200 rows x 100 columns make "
                                             r"20000 mixed latents; at most 16384 .* Fix:"):
        N.HumanGenStyleMix().mix(d, rows, cols, layers="0-2", make_grid=False)
    (a,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="0-19")
    with pytest.raises(NodeInputError, match=r"HumanGenLatentInterpolate: input 'frames': 19 segments of 1000 "
                                             r"frames make 18982 latents"):
        N.HumanGenLatentInterpolate().interpolate(d, a, frames=1000)
    assert N.HumanGenLatentInterpolate().interpolate(d, a, frames=800)[0]["tensor"].shape[0] == 19 * 799 + 1
    monkeypatch.setattr(limits, "MAX_BATCH_PIXELS", 3 * 16 * 8)  # three 8x16 images
    (three,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="0-2")
    assert N.HumanGenStyleGANSynthesize().synthesize(d, three)[0].shape == (3, 16, 8, 3)
    (four,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="0-3")
    with pytest.raises(NodeInputError, match=r"HumanGenStyleGANSynthesize: input 'latent': 4 images of 8x16 make "
                                             r"512 pixels, more than the limit of 384"):
        N.HumanGenStyleGANSynthesize().synthesize(d, four)
    (one,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="5")
    with pytest.raises(NodeInputError, match=r"HumanGenStyleMix: input 'make_grid': 1 grid image of 24x32"):
        N.HumanGenStyleMix().mix(d, one, N.HumanGenLatentFromSeeds().make(d, 0, seeds="1,2")[0], layers="0-2")


def test_slerp_of_large_latents_stays_finite(gen):
    """A float32 norm of latents near 1e30 overflows; slerp then returned NaN (a loaded latent can hold such
    values)."""
    d, _ = gen
    (a,) = N.HumanGenLatentFromSeeds().make(d, 0, seeds="1,2")
    big = dict(a, tensor=a["tensor"] * 1e30)
    (out,) = N.HumanGenLatentInterpolate().interpolate(d, big, frames=5, method="slerp")
    t = out["tensor"]
    assert torch.isfinite(t).all()
    torch.testing.assert_close(t[0], big["tensor"][0], rtol=1e-6, atol=0)
    torch.testing.assert_close(t[-1], big["tensor"][1], rtol=1e-6, atol=0)
