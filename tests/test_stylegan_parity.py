"""Golden parity against the official StyleGAN2-ADA / StyleGAN3 / StyleGAN-Human code (tests/fixtures/stylegan),
on the reference and the fast ops paths, through the public `build_generator`."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hgtest import FIXTURES

DIR = FIXTURES / "stylegan"
CONFIGS = sorted(p.name[:-5] for p in DIR.glob("*.json"))
ATOL = 1e-4


@pytest.fixture(scope="module")
def loaded():
    from humangen.models import build_generator
    cache = {}

    def get(cfg):
        if cfg not in cache:
            meta = json.loads((DIR / f"{cfg}.json").read_text())
            sd = load_file(str(DIR / f"{cfg}.state_dict.safetensors"))
            io = load_file(str(DIR / f"{cfg}.io.safetensors"))
            cache[cfg] = (meta, build_generator(meta["init_kwargs"], sd), io)
        return cache[cfg]
    return get


def test_fixture_configs_present():
    assert len(CONFIGS) >= 4, CONFIGS


@pytest.mark.parametrize("cfg", CONFIGS)
def test_architecture_attributes_and_keys(cfg, loaded):
    meta, G, io = loaded(cfg)
    kw = meta["init_kwargs"]
    assert (G.z_dim, G.c_dim, G.w_dim, G.img_resolution, G.img_channels) == (
        kw["z_dim"], kw["c_dim"], kw["w_dim"], kw["img_resolution"], kw["img_channels"])
    assert G.num_ws == meta["derived"]["num_ws"]
    assert [G.img_height, G.img_width] == meta["derived"]["img_shape_HW"]
    assert sorted(G.state_dict()) == sorted(meta["state_dict_keys"])


def _c(io):
    return io["c"] if io["c"].numel() else None


@pytest.mark.parametrize("cfg", CONFIGS)
def test_mapping_matches(cfg, loaded):
    meta, G, io = loaded(cfg)
    with torch.no_grad():
        torch.testing.assert_close(G.mapping(io["z"], _c(io)), io["ws_psi1"], atol=1e-5, rtol=0)
        torch.testing.assert_close(G.mapping(io["z"], _c(io), truncation_psi=0.7), io["ws_psi0p7"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("impl", ["ref", "fast"])
@pytest.mark.parametrize("cfg", CONFIGS)
def test_synthesis_matches(cfg, impl, loaded):
    meta, G, io = loaded(cfg)
    sg3 = G.arch == "stylegan3"
    with torch.no_grad():
        img = G.synthesis(io["ws_psi1"], noise_mode="const", impl=impl)
        torch.testing.assert_close(img, io["img_const_psi1"], atol=ATOL, rtol=0)
        img7 = G.synthesis(io["ws_psi0p7"], noise_mode="const", impl=impl)
        torch.testing.assert_close(img7, io["img_const_psi0p7"], atol=ATOL, rtol=0)
        if sg3:  # StyleGAN3 has no noise: 'none' must give the const image (checked against both fixtures)
            assert torch.equal(io["img_none_psi1"], io["img_const_psi1"])
            none = G.synthesis(io["ws_psi1"], noise_mode="none", impl=impl) if impl == "fast" else img
        else:
            none = G.synthesis(io["ws_psi1"], noise_mode="none", impl=impl)
        torch.testing.assert_close(none, io["img_none_psi1"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_intermediates_match(cfg, loaded):
    """Per-block (SG2) / per-layer (SG3) activations of sample 0, first 16 channels (fast path)."""
    meta, G, io = loaded(cfg)
    got = {}
    hooks = []
    if G.arch == "stylegan2":
        for res in G.synthesis.block_resolutions:
            blk = getattr(G.synthesis, f"b{res}")
            hooks.append(blk.register_forward_hook(
                lambda m, a, out, r=res: got.update({f"inter.b{r}.x_psi1_sample0": out[0][:1, :16],
                                                     f"inter.b{r}.img_psi1_sample0": out[1][:1, :16]})))
    else:
        for name in ["input"] + G.synthesis.layer_names:
            hooks.append(G.synthesis.get_submodule(name).register_forward_hook(
                lambda m, a, out, n=name: got.update({f"inter.{n}_psi1_sample0": out[:1, :16]})))
    with torch.no_grad():
        G.synthesis(io["ws_psi1"], noise_mode="const", impl="fast")
    for h in hooks:
        h.remove()
    keys = [k for k in io if k.startswith("inter.")]
    assert keys and set(keys) <= set(got), set(keys) - set(got)
    for k in keys:
        torch.testing.assert_close(got[k].float(), io[k], atol=ATOL, rtol=0, msg=k)
