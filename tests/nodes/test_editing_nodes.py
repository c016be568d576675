"""Editing/inversion nodes end to end on a tiny 2:1 generator, with files laid out as StyleGAN-Human ships them."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from humangen.models import gan_latents as gl
from humangen.models.editing import style_layers
from humangen.models.lpips import LPIPS
from humangen.nodes.editing import (HumanGenApplyDirection, HumanGenDirectionSweep, HumanGenLoadDirections,
                                    HumanGenPTI, HumanGenProjectImage, HumanGenSeFaDirections,
                                    HumanGenStyleSpaceEdit)
from humangen.nodes.stylegan import HumanGenStyleGANSynthesize
from humangen.utils.errors import NodeInputError
from sg_helpers import TINY_SG2_RECT, tiny_generator

TINY_32 = dict(TINY_SG2_RECT, img_resolution=32)


@pytest.fixture(scope="module")
def gen():
    return gl.GeneratorDescriptor.from_model(tiny_generator(TINY_32).eval(), "tiny.pkl", "tiny:0001")


@pytest.fixture
def latent(gen):
    return gl.latent_from_seeds(gen, [1, 2], psi=0.7)


def _render(gen, latent):
    return HumanGenStyleGANSynthesize().synthesize(gen, latent, "const", 4)[0]


def test_sefa_apply_and_sweep(gen, latent):
    (dirs,) = HumanGenSeFaDirections().discover(gen, "2-4", 4, False)
    assert dirs.vectors.shape == (4, gen.w_dim) and dirs.layers == [2, 3, 4]
    (same,) = HumanGenApplyDirection().apply(gen, latent, dirs, "0", 0.0, "")
    assert torch.equal(same["tensor"], latent["tensor"])
    (moved,) = HumanGenApplyDirection().apply(gen, latent, dirs, "1", 2.5, "")
    delta = moved["tensor"] - latent["tensor"]
    torch.testing.assert_close(delta[:, 2:5], 2.5 * dirs.vectors[1].expand(2, 3, -1))
    assert delta[:, [0, 1, 5]].abs().max() == 0
    images, grid, lats = HumanGenDirectionSweep().sweep(gen, latent, dirs, "0", -4.0, 4.0, 3, "")
    assert images.shape == (3, 32, 16, 3) and grid.shape == (1, 32, 48, 3) and lats["tensor"].shape[0] == 3
    mid = HumanGenStyleGANSynthesize().synthesize(gen, dict(latent, tensor=latent["tensor"][:1]), "const", 1)[0]
    # strength 0 in the middle of the sweep: the same image up to float noise of batched vs single rendering, which
    # can flip one uint8 level
    diff = (images[1:2] - mid).abs()
    assert float(diff.max()) <= 1 / 255 + 1e-6 and float((diff > 0).float().mean()) < 0.01
    with pytest.raises(NodeInputError, match="HumanGenApplyDirection: input 'direction'"):
        HumanGenApplyDirection().apply(gen, latent, dirs, "9", 1.0, "")
    with pytest.raises(NodeInputError, match="input 'layers'"):
        HumanGenApplyDirection().apply(gen, latent, dirs, "0", 1.0, "40")


def test_load_shipped_sefa_vector(gen, standalone_host, latent):
    folder = os.path.join(standalone_host.models_root, "stylegan_directions", "sefa")
    os.makedirs(folder)
    vec = torch.randn(1, gen.w_dim)
    torch.save(vec, os.path.join(folder, "upper_length.pt"))
    assert HumanGenLoadDirections.INPUT_TYPES()["required"]["file"][0] == ["sefa/upper_length.pt"]
    (dirs,) = HumanGenLoadDirections().load("sefa/upper_length.pt")
    (out,) = HumanGenApplyDirection().apply(gen, latent, dirs, "upper_length", 10.0, "4-7")
    torch.testing.assert_close(out["tensor"][:, 4] - latent["tensor"][:, 4], 10.0 * vec.expand(2, -1))


@pytest.mark.parametrize("damage,match", [
    ("csv_no_header", r"statis\.csv: not a readable style-space file \(ValueError"),
    ("csv_empty", r"statis\.csv: not a readable style-space file"),
    ("csv_ragged", r"statis\.csv: not a readable style-space file"),
    ("csv_not_utf8", r"statis\.csv: not a readable style-space file"),
    ("csv_is_a_folder", r"statis\.csv: is not a file"),
    ("csv_huge", r"statis\.csv: \d+ bytes is more than a style-space file holds"),
    ("csv_nan", r"statis\.csv: holds NaN or infinite values"),
    ("vector_text", r"style_vect_mean_2\.pkl: expected a vector of numbers"),
    ("vector_ragged", r"style_vect_mean_2\.pkl: not a readable style-space file"),
    ("vector_nan", r"style_vect_mean_2\.pkl: holds NaN or infinite values"),
])
def test_damaged_style_space_files_name_the_file_and_the_fix(gen, latent, standalone_host, damage, match):
    import shutil
    _ship_stylespace(standalone_host.models_root, gen.model)
    base = os.path.join(standalone_host.models_root, "stylegan_directions", "latent_direction")
    csv = os.path.join(base, "ss_statics", "upper_length_statis", "2", "statis.csv")
    vector = os.path.join(base, "ss", "upper_length", "style_vect_mean_2.pkl")
    contents = {"csv_no_header": "0,0.1\n1,0.2\n", "csv_empty": "", "csv_ragged": "channel,strength\n0,0.1,5\n1\n",
                "csv_nan": "channel,strength\n0,nan\n", "csv_huge": "channel,strength\n" + "0,0.1\n" * 200_000}
    if damage in contents:
        with open(csv, "w") as f:
            f.write(contents[damage])
    elif damage == "csv_not_utf8":
        with open(csv, "wb") as f:
            f.write(b"channel,strength\n\xff\xfe,\x80\n")
    elif damage == "csv_is_a_folder":
        os.remove(csv)
        os.makedirs(csv)
    else:
        value = {"vector_text": "abc", "vector_ragged": [[1.0], [1.0, 2.0]],
                 "vector_nan": np.full(style_layers(gen.model)[2].channels, np.nan, np.float32)}[damage]
        with open(vector, "wb") as f:
            pickle.dump(value, f)
    with pytest.raises(NodeInputError, match="HumanGenStyleSpaceEdit: input 'layer': " + match + ".*Fix: use "
                                             "StyleGAN-Human's latent_direction/ss and ss_statics files"):
        HumanGenStyleSpaceEdit().edit(gen, latent, "upper_length", "one_layer", -5.0, 2, 0.005)
    shutil.rmtree(os.path.join(standalone_host.models_root, "stylegan_directions"))


def test_direction_file_layers_beyond_the_generator_name_the_layers_input(gen, latent):
    from humangen.models.editing import Directions
    dirs = Directions(torch.randn(1, gen.w_dim), ["up"], None, [gen.num_ws, gen.num_ws + 1])
    for node, call in ((HumanGenApplyDirection, lambda: HumanGenApplyDirection().apply(gen, latent, dirs, "0", 1.0,
                                                                                        "")),
                       (HumanGenDirectionSweep, lambda: HumanGenDirectionSweep().sweep(gen, latent, dirs, "0", -1.0,
                                                                                       1.0, 3, ""))):
        with pytest.raises(NodeInputError, match=f"{node.__name__}: input 'layers': empty, so the direction file's "
                                                 f"own layers .* only {gen.num_ws} W\\+ layers.*Fix:"):
            call()


def _ship_stylespace(root, G, attribute="upper_length", layer=2):
    layers = style_layers(G)
    ss = os.path.join(root, "stylegan_directions", "latent_direction", "ss", attribute)
    os.makedirs(ss)
    rng = np.random.RandomState(0)
    vectors = {}
    for i, lay in enumerate(layers):
        vectors[i] = rng.randn(lay.channels).astype(np.float32)
        with open(os.path.join(ss, f"style_vect_mean_{i}.pkl"), "wb") as f:
            pickle.dump(vectors[i], f)
    statis = os.path.join(root, "stylegan_directions", "latent_direction", "ss_statics", f"{attribute}_statis",
                          str(layer))
    os.makedirs(statis)
    strengths = np.zeros(layers[layer].channels, dtype=np.float32)
    strengths[[0, 2]] = [0.01, -0.02]
    with open(os.path.join(statis, "statis.csv"), "w") as f:
        f.write("channel,strength\n" + "".join(f"{c},{s}\n" for c, s in enumerate(strengths)))
    return vectors


def test_style_space_edit_flows_into_synthesis(gen, latent, standalone_host):
    vectors = _ship_stylespace(standalone_host.models_root, gen.model)
    attrs = HumanGenStyleSpaceEdit.INPUT_TYPES()["required"]["attribute"][0]
    assert attrs == ["upper_length"]
    base = _render(gen, latent)
    (zero,) = HumanGenStyleSpaceEdit().edit(gen, latent, "upper_length", "all_layers", 0.0, 5, 0.0028)
    assert torch.equal(_render(gen, zero), base)
    (edit,) = HumanGenStyleSpaceEdit().edit(gen, latent, "upper_length", "one_layer", -5.0, 2, 0.005)
    layers = style_layers(gen.model)
    (name,) = edit["style_offsets"]
    assert name == layers[2].name
    expected = np.zeros(layers[2].channels, dtype=np.float32)
    expected[[0, 2]] = -5.0 * vectors[2][[0, 2]]
    np.testing.assert_allclose(edit["style_offsets"][name].numpy(), expected, rtol=1e-6)
    ws = latent["tensor"]
    direct = gen.model.synthesis(ws, noise_mode="const", style_offsets=edit["style_offsets"])
    from humangen.utils.image import gan_to_comfy
    assert torch.equal(_render(gen, edit), gan_to_comfy(direct))
    assert not torch.equal(_render(gen, edit), base)
    with pytest.raises(NodeInputError, match="HumanGenStyleSpaceEdit: input 'layer'.*statis"):
        HumanGenStyleSpaceEdit().edit(gen, latent, "upper_length", "one_layer", -5.0, 1, 0.0028)


def test_style_space_vectors_of_another_generator_name_the_fix(gen, latent, standalone_host):
    _ship_stylespace(standalone_host.models_root, gen.model)
    path = os.path.join(standalone_host.models_root, "stylegan_directions", "latent_direction", "ss",
                        "upper_length", "style_vect_mean_0.pkl")
    with open(path, "wb") as f:
        pickle.dump(np.ones(style_layers(gen.model)[0].channels + 3, np.float32), f)
    with pytest.raises(NodeInputError, match="HumanGenStyleSpaceEdit: input 'attribute': .*values.*Fix: use "
                                             "StyleGAN-Human's latent_direction/ss and ss_statics files"):
        HumanGenStyleSpaceEdit().edit(gen, latent, "upper_length", "all_layers", 1.0, 5, 0.0028)


@pytest.mark.parametrize("attribute", ["../outside", "ABS", "upper_length/../../outside", "missing"])
def test_style_space_attribute_is_a_listed_folder_name_never_a_path(gen, latent, standalone_host, attribute):
    """An attribute from a workflow or a link that is not one of the listed folders (a path leaving the folder,
    an absolute path, an unknown name) is refused naming the input; no vector file outside is read."""
    G = gen.model
    _ship_stylespace(standalone_host.models_root, G)
    outside = os.path.join(standalone_host.models_root, "outside")  # vectors a traversal would find
    os.makedirs(outside)
    for i, lay in enumerate(style_layers(G)):
        with open(os.path.join(outside, f"style_vect_mean_{i}.pkl"), "wb") as f:
            pickle.dump(np.ones(lay.channels, np.float32), f)
    name = outside if attribute == "ABS" else attribute
    with pytest.raises(NodeInputError, match="HumanGenStyleSpaceEdit: input 'attribute': .* is not an attribute "
                                             "folder in models/stylegan_directions/ss \\(upper_length\\)"):
        HumanGenStyleSpaceEdit().edit(gen, latent, name, "all_layers", 1.0, 5, 0.0028)
    from humangen.models.editing import stylespace_offsets
    from humangen.utils.errors import HumanGenError
    with pytest.raises(HumanGenError, match="no ss/"):  # the model function alone stays inside too
        stylespace_offsets(G, [os.path.join(standalone_host.models_root, "stylegan_directions")], name,
                           "all_layers", 1.0)


def _ship_lpips(root):
    os.makedirs(os.path.join(root, "lpips"))
    torch.save(LPIPS("vgg").net.state_dict(), os.path.join(root, "lpips", "vgg16-397923af.pth"))


def test_projection_and_pti_nodes(gen, standalone_host):
    _ship_lpips(standalone_host.models_root)
    target_latent = gl.latent_from_seeds(gen, [7])
    photo = _render(gen, target_latent)
    (lat, recon) = HumanGenProjectImage().project(gen, photo, "w+", 12, 0.05, 1e5, "vgg", 3)
    assert lat["space"] == "w+" and lat["tensor"].shape == (1, gen.num_ws, gen.w_dim)
    assert recon.shape == photo.shape
    (lat2, _) = HumanGenProjectImage().project(gen, photo, "w+", 12, 0.05, 1e5, "vgg", 3)
    assert torch.equal(lat["tensor"], lat2["tensor"])
    before = {k: v.clone() for k, v in gen.model.state_dict().items()}
    tuned, pti_recon = HumanGenPTI().tune(gen, lat, photo, 15, 5e-3, 0.0, "vgg", "tuned")
    err_before = (recon - photo).abs().mean()
    err_after = (pti_recon - photo).abs().mean()
    assert err_after < err_before
    assert all(torch.equal(v, before[k]) for k, v in gen.model.state_dict().items())
    assert tuned.generator_id != gen.generator_id and tuned.model is not gen.model
    saved = os.path.join(standalone_host.models_root, "stylegan", "tuned.safetensors")
    from humangen.models import load_generator
    again = load_generator(saved, use_cache=False)
    for k, v in tuned.model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v)
    with pytest.raises(NodeInputError, match="already exists"):
        HumanGenPTI().tune(gen, lat, photo, 1, 5e-3, 0.0, "vgg", "tuned")


def test_inversion_input_errors(gen, standalone_host):
    photo = torch.rand(1, 32, 32, 3)
    with pytest.raises(NodeInputError, match="HumanGenProjectImage: input 'image'.*HumanGenAlignFullBody"):
        HumanGenProjectImage().project(gen, photo, "w", 2, 0.01, 1e5, "vgg", 0)
    with pytest.raises(NodeInputError, match="vgg16-397923af.pth"):
        HumanGenProjectImage().project(gen, torch.rand(1, 32, 16, 3), "w", 2, 0.01, 1e5, "vgg", 0)


def test_projection_and_pti_precision(gen, standalone_host):
    _ship_lpips(standalone_host.models_root)
    photo = _render(gen, gl.latent_from_seeds(gen, [7]))
    for cls in (HumanGenProjectImage, HumanGenPTI):
        assert cls.INPUT_TYPES()["optional"]["precision"][1]["default"] == "fp32"
    (lat, recon) = HumanGenProjectImage().project(gen, photo, "w+", 6, 0.05, 1e5, "vgg", 3)
    (lat16, recon16) = HumanGenProjectImage().project(gen, photo, "w+", 6, 0.05, 1e5, "vgg", 3, precision="bf16")
    assert not torch.equal(lat["tensor"], lat16["tensor"])
    assert (recon16 - recon).abs().mean() < 0.05
    tuned, _ = HumanGenPTI().tune(gen, lat, photo, 3, 5e-3, 0.0, "vgg", "", precision="bf16")
    assert tuned.model is not gen.model
    with pytest.raises(NodeInputError, match="HumanGenProjectImage: input 'precision'.*fp16"):
        HumanGenProjectImage().project(gen, photo, "w", 2, 0.01, 1e5, "vgg", 0, precision="fp16")
    with pytest.raises(NodeInputError, match="HumanGenPTI: input 'precision'"):
        HumanGenPTI().tune(gen, lat, photo, 1, 5e-3, 0.0, "vgg", "", precision="half")
