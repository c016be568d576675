"""Truncated, empty and wrong-kind files for every loader of the pack, and files of the right kind holding the
wrong network: each gives one clear HumanGenError naming the node and the input (never a raw numpy/torch/pickle
error), runs no code and writes nothing outside the allowed folders."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adversarial import pack_helpers as H
from humangen import NODE_CLASS_MAPPINGS as N

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("one_torch_thread")]


def _tiny_g():
    from sg_helpers import TINY_SG2, tiny_generator
    return tiny_generator(TINY_SG2)


def _valid_bytes(kind: str, tmp_path) -> bytes:
    """A small valid file of each kind (truncated by the tests)."""
    p = tmp_path / f"valid.{kind}"
    if kind == "pkl":
        from sg_helpers import official_pickle_bytes
        return official_pickle_bytes(_tiny_g(), "", keys=("G_ema",))
    if kind in ("pt", "pth", "ckpt"):
        torch.save({"state_dict": {f"w{i}": torch.randn(64, 64) for i in range(4)}}, p)
    elif kind == "safetensors":
        from safetensors.torch import save_file
        save_file({"directions": torch.randn(8, 512)}, str(p))
    elif kind == "npy":
        np.save(p, np.random.RandomState(0).randn(4, 512).astype(np.float32))
    elif kind == "npz":
        np.savez(p, **{f"arr_{i}": np.random.RandomState(i).rand(1, 17, 3) for i in range(3)})
    elif kind == "json":
        from humangen.utils import pose as P
        P.save_openpose_json([P.make_frame([np.ones((18, 3))], 64, 64)], str(p))
    elif kind == "png":
        from PIL import Image
        Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), np.uint8)).save(p)
    return p.read_bytes()


# (node, folder or "input", file name, how to call the node, input name)
LOADERS = [
    ("HumanGenStyleGANLoader", "stylegan", "g.pkl", lambda n: N["HumanGenStyleGANLoader"]().load(n), "model_name"),
    ("HumanGenStyleGANLoader", "stylegan", "g.pt", lambda n: N["HumanGenStyleGANLoader"]().load(n), "model_name"),
    ("HumanGenStyleGANLoader", "stylegan", "g.safetensors", lambda n: N["HumanGenStyleGANLoader"]().load(n),
     "model_name"),
    ("HumanGenUnitedHumanLoader", "unitedhuman", "u.pkl", lambda n: N["HumanGenUnitedHumanLoader"]().load(n),
     "model_name"),
    ("HumanGenHumanSDLoader", "humansd", "h.ckpt", lambda n: N["HumanGenHumanSDLoader"]().load(n), "ckpt_name"),
    ("HumanGenHumanSDLoader", "humansd", "h.safetensors", lambda n: N["HumanGenHumanSDLoader"]().load(n),
     "ckpt_name"),
    ("HumanGenHumanSDConvert", "humansd", "c.ckpt", lambda n: N["HumanGenHumanSDConvert"]().convert(n), "ckpt_name"),
    ("HumanGenLoadDirections", "stylegan_directions", "d.pt", lambda n: N["HumanGenLoadDirections"]().load(n),
     "file"),
    ("HumanGenLoadDirections", "stylegan_directions", "d.npy", lambda n: N["HumanGenLoadDirections"]().load(n),
     "file"),
    ("HumanGenLoadDirections", "stylegan_directions", "d.safetensors",
     lambda n: N["HumanGenLoadDirections"]().load(n), "file"),
    ("HumanGenUpscaleModelLoader", "upscale_models", "x.pth", lambda n: N["HumanGenUpscaleModelLoader"]().load(n),
     "model_name"),
    ("HumanGenUpscaleModelLoader", "upscale_models", "x.safetensors",
     lambda n: N["HumanGenUpscaleModelLoader"]().load(n), "model_name"),
    ("HumanGenSMPLXLoader", "smplx", "SMPLX_NEUTRAL.npz", lambda n: N["HumanGenSMPLXLoader"]().load("neutral", 10, 10),
     "gender"),
    ("HumanGenLoadPose", "input", "p.json", lambda n: N["HumanGenLoadPose"]().load(n, 0, 0), "path"),
    ("HumanGenLoadPose", "input", "p.npz", lambda n: N["HumanGenLoadPose"]().load(n, 0, 0), "path"),
    ("HumanGenLoadLatentFromImage", "input", "l.png", lambda n: N["HumanGenLoadLatentFromImage"]().load(n),
     "image"),
]
IDS = [f"{node[8:]}-{name}" for node, _, name, _, _ in LOADERS]


def _place(e, folder, name, data: bytes):
    d = e.input if folder == "input" else e.model_dir(folder)
    (d / name).write_bytes(data)


@pytest.mark.parametrize("node,folder,name,call,input_name", LOADERS, ids=IDS)
@pytest.mark.parametrize("kind", ["empty", "text", "random", "bad_zip"])
def test_wrong_kind_files(tmp_path, node, folder, name, call, input_name, kind):
    e = H.env(tmp_path)
    _place(e, folder, name, H.WRONG_KIND[kind])
    H.refusal(lambda: call(name), node=node, input_name=input_name)
    e.check_clean()


@pytest.mark.parametrize("node,folder,name,call,input_name", LOADERS, ids=IDS)
def test_truncated_files(tmp_path, node, folder, name, call, input_name):
    e = H.env(tmp_path)
    _place(e, folder, name, _valid_bytes(name.rsplit(".", 1)[1], tmp_path)[:-97])
    H.refusal(lambda: call(name), node=node, input_name=input_name)
    e.check_clean()


def test_humansd_truncated_ckpt_says_truncated_not_errno(tmp_path):
    e = H.env(tmp_path)
    data = _valid_bytes("ckpt", tmp_path)
    (e.model_dir("humansd") / "h.ckpt").write_bytes(data[: len(data) // 3])
    err = H.refusal(lambda: N["HumanGenHumanSDLoader"]().load("h.ckpt"), node="HumanGenHumanSDLoader",
                    input_name="ckpt_name", match="truncated or corrupt")
    assert "Errno 22" not in str(err)


def test_humansd_corrupt_pickle_is_not_called_unsafe(tmp_path):
    e = H.env(tmp_path)
    (e.model_dir("humansd") / "h.ckpt").write_bytes(b"\x80\x02garbage-garbage" * 30)
    H.refusal(lambda: N["HumanGenHumanSDLoader"]().load("h.ckpt"), node="HumanGenHumanSDLoader",
              input_name="ckpt_name", match="truncated or corrupt")


def test_smplx_non_zip_is_called_corrupt_not_unsafe(tmp_path):
    from humangen.utils.errors import UnsafeCheckpointError
    e = H.env(tmp_path)
    (e.model_dir("smplx") / "SMPLX_NEUTRAL.npz").write_bytes(b"not a zip at all")
    err = H.refusal(lambda: N["HumanGenSMPLXLoader"]().load("neutral", 10, 10), node="HumanGenSMPLXLoader",
                    input_name="gender", match="corrupt")
    assert not isinstance(err, UnsafeCheckpointError)


def test_smplx_wrong_shapes_fail_at_load_not_later(tmp_path):
    from smplx_synth import build
    e = H.env(tmp_path)
    arrays = build()
    arrays["kintree_table"] = arrays["kintree_table"][:, :10]
    np.savez(e.model_dir("smplx") / "SMPLX_NEUTRAL.npz", **arrays)
    H.refusal(lambda: N["HumanGenSMPLXLoader"]().load("neutral", 10, 10), node="HumanGenSMPLXLoader",
              input_name="gender", match="kintree_table")


def _edit(name):
    def edit(arrays):
        if name == "kintree_index":
            arrays["kintree_table"] = arrays["kintree_table"].copy()
            arrays["kintree_table"][0, 5] = 10 ** 6
        elif name == "posedirs_shape":
            arrays["posedirs"] = np.zeros((7, 3), np.float32)
        elif name == "posedirs_nan":
            arrays["posedirs"] = np.full_like(arrays["posedirs"], np.nan)
        elif name == "hand_mean":
            arrays["hands_meanl"] = np.zeros(3, np.float32)
        elif name == "landmarks":
            arrays["lmk_bary_coords"] = np.zeros((arrays["lmk_bary_coords"].shape[0], 7), np.float32)
    return edit


@pytest.mark.parametrize("damage", ["kintree_index", "posedirs_shape", "posedirs_nan", "hand_mean", "landmarks"])
def test_smplx_arrays_the_shape_checks_miss_fail_at_load(tmp_path, damage):
    """Loaded fine before, then failed (or gave NaN vertices) in the first node using the body."""
    from smplx_synth import build
    e = H.env(tmp_path)
    arrays = build()
    _edit(damage)(arrays)
    np.savez(e.model_dir("smplx") / "SMPLX_NEUTRAL.npz", **arrays)
    H.refusal(lambda: N["HumanGenSMPLXLoader"]().load("neutral", 10, 10), node="HumanGenSMPLXLoader",
              input_name="gender", match="SMPLX_NEUTRAL.npz.*(not a usable SMPL-X model|NaN or infinite).*Fix:")


@pytest.mark.parametrize("value", ["nan", "inf", "complex"])
@pytest.mark.parametrize("loader", ["stylegan", "upscaler", "humansd", "lpips"])
def test_weights_with_nan_inf_or_complex_values_are_refused_at_load(tmp_path, loader, value):
    """Such a file used to load and then give NaN, black or noise images (or fail in the first node using it)."""
    from humangen.utils.errors import HumanGenError
    e = H.env(tmp_path)

    def spoil(state, key):
        state = dict(state)
        t = state[key]
        state[key] = torch.complex(t.float(), t.float()) if value == "complex" else \
            torch.full_like(t, float(value))
        return state, key

    if loader == "stylegan":
        G = _tiny_g()
        state, key = spoil(G.state_dict(), "synthesis.b8.conv0.weight")
        torch.save({"G_ema": state, "init_kwargs": G.init_kwargs}, e.model_dir("stylegan") / "g.pt")
        call, node, input_name = lambda: N["HumanGenStyleGANLoader"]().load("g.pt"), "HumanGenStyleGANLoader", \
            "model_name"
    elif loader == "upscaler":
        import hg_upscale
        state, key = spoil(hg_upscale.compact_state_dict(scale=4), "body.0.weight")
        torch.save({"params": state}, e.model_dir("upscale_models") / "u.pth")
        call, node, input_name = lambda: N["HumanGenUpscaleModelLoader"]().load("u.pth"), \
            "HumanGenUpscaleModelLoader", "model_name"
    elif loader == "humansd":
        import humansd_tiny as T
        parts = T.ldm_state_dict(*T.make_components())
        state, key = spoil(parts, "model.diffusion_model.out.2.weight")
        T.save_ckpt(e.model_dir("humansd") / "h.ckpt", state)
        call, node, input_name = lambda: N["HumanGenHumanSDLoader"]().load("h.ckpt"), "HumanGenHumanSDLoader", \
            "ckpt_name"
    else:
        from humangen.models.lpips import LPIPS, load_lpips
        state, key = spoil(LPIPS("alex").net.state_dict(), "features.3.weight")
        torch.save(state, e.model_dir("lpips") / "alexnet-owt-7be5be79.pth")
        with pytest.raises(HumanGenError, match="LPIPS backbone alexnet-owt-7be5be79.pth: features.3.weight holds "
                                                ".*Fix: download it again from https://download.pytorch.org"):
            load_lpips("alex", [str(e.models / "lpips")])
        return
    H.refusal(call, node=node, input_name=input_name,
              match=(key + " holds " + ("complex numbers" if value == "complex" else "NaN or infinite values"))
              + ".*Fix:")


def test_stylegan_state_dict_of_the_wrong_architecture(tmp_path):
    e = H.env(tmp_path)
    G = _tiny_g()
    sd = {k: torch.zeros(3, 3) if k.endswith("conv1.weight") else v for k, v in G.state_dict().items()}
    torch.save({"G_ema": sd, "init_kwargs": G.init_kwargs}, e.model_dir("stylegan") / "wrong.pt")
    H.refusal(lambda: N["HumanGenStyleGANLoader"]().load("wrong.pt"), node="HumanGenStyleGANLoader",
              input_name="model_name", match="do not fit|does not match")
    torch.save({"synthesis.b4.const": torch.zeros(2), "mapping.fc0.weight": torch.zeros(1)},
               e.model_dir("stylegan") / "bare.pt")
    H.refusal(lambda: N["HumanGenStyleGANLoader"]().load("bare.pt"), node="HumanGenStyleGANLoader",
              input_name="model_name")


def test_stylegan_kwargs_asking_for_a_huge_network(tmp_path):
    e = H.env(tmp_path)
    G = _tiny_g()
    torch.save({"G_ema": G.state_dict(), "init_kwargs": dict(G.init_kwargs, img_resolution=1 << 20)},
               e.model_dir("stylegan") / "huge.pt")
    H.refusal(lambda: N["HumanGenStyleGANLoader"]().load("huge.pt"), node="HumanGenStyleGANLoader",
              input_name="model_name", match="implausible.*img_resolution")


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_stylegan_kwargs_within_limits_asking_for_far_more_than_the_file_holds(tmp_path, monkeypatch, fmt):
    """Every kwarg under its own limit, yet a network of billions of weights: refused from a meta-device build
    before any real module is allocated."""
    from humangen.models import gan_registry
    e = H.env(tmp_path)
    G = _tiny_g()
    kw = dict(G.init_kwargs, img_resolution=8192,
              synthesis_kwargs=dict(G.init_kwargs["synthesis_kwargs"], channel_base=1 << 22, channel_max=4096))
    path = e.model_dir("stylegan") / f"big.{fmt}"
    if fmt == "pt":
        torch.save({"G_ema": G.state_dict(), "init_kwargs": kw}, path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in G.state_dict().items()}, str(path),
                  metadata={"init_kwargs": json.dumps(kw)})
    devices = []
    entry = next(a for a in gan_registry.ARCHITECTURES if a.name == "stylegan2")
    monkeypatch.setattr(entry, "build", lambda k, build=entry.build: (devices.append(torch.empty(0).device.type),
                                                                      build(k))[1])
    H.refusal(lambda: N["HumanGenStyleGANLoader"]().load(f"big.{fmt}"), node="HumanGenStyleGANLoader",
              input_name="model_name", match="does not match.*wrong shapes")
    assert devices == ["meta"]


@pytest.mark.parametrize("edit,match", [
    ({"mapping_kwargs": {"num_layers": 300000}}, r"implausible generator setting num_layers=300000 \(limit 64\)"),
    ({"num_layers": 100000}, r"implausible generator setting num_layers=100000"),
    ({"filter_size": 20000000}, r"implausible generator setting filter_size=20000000"),
    ({"filter_size": 64, "lrelu_upsampling": 16}, r"\d+-tap resampling filter \(at most 256"),
    ({"resample_filter": [1] * 5000}, r"resample_filter='a list of 5000 items'"),
], ids=["mapping_layers", "synthesis_layers", "filter_size", "filter_taps", "long_list"])
def test_stylegan3_settings_that_build_for_minutes_are_refused_first(tmp_path, edit, match):
    """The meta device saves the memory of a huge network, not the time to build it, and StyleGAN3 designs its
    filters in numpy: 300000 mapping layers or a 20-million-tap filter ran for minutes from a 162 KB file."""
    from sg_helpers import TINY_SG3, tiny_generator
    e = H.env(tmp_path)
    G = tiny_generator(TINY_SG3)
    kw = dict(G.init_kwargs)
    for key, value in edit.items():
        kw[key] = dict(kw.get(key) or {}, **value) if isinstance(value, dict) else value
    torch.save({"G_ema": G.state_dict(), "init_kwargs": kw}, e.model_dir("stylegan") / "slow.pt")
    H.refusal(lambda: N["HumanGenStyleGANLoader"]().load("slow.pt"), node="HumanGenStyleGANLoader",
              input_name="model_name", match=match)


def test_stylegan_file_with_settings_but_no_tensors(tmp_path):
    e = H.env(tmp_path)
    G = _tiny_g()
    torch.save({"init_kwargs": G.init_kwargs}, e.model_dir("stylegan") / "empty.pt")
    H.refusal(lambda: N["HumanGenStyleGANLoader"]().load("empty.pt"), node="HumanGenStyleGANLoader",
              input_name="model_name", match="holds no tensors")


@pytest.mark.parametrize("content", ["dict_of_strings", "scalar", "nan", "wrong_keys"])
def test_lpips_backbone_wrong_content(tmp_path, content):
    from humangen.models.lpips import load_lpips
    from humangen.utils.errors import HumanGenError
    e = H.env(tmp_path)
    obj = {"dict_of_strings": {"features.0.weight": "x"}, "scalar": torch.tensor(1.0),
           "nan": {"features.0.weight": torch.full((64, 3, 11, 11), float("nan")),
                   "features.0.bias": torch.zeros(64)},
           "wrong_keys": {"classifier.0.weight": torch.zeros(2)}}[content]
    torch.save(obj, e.model_dir("lpips") / "alexnet-owt-7be5be79.pth")
    with pytest.raises(HumanGenError, match="alexnet-owt-7be5be79.pth.*(not a torchvision|NaN|download)"):
        load_lpips("alex", [str(e.models / "lpips")])


@pytest.mark.parametrize("obj", ["string", "zero_dim", "empty", "ragged"])
def test_direction_file_wrong_content(tmp_path, obj):
    e = H.env(tmp_path)
    value = {"string": {"names": "x"}, "zero_dim": torch.tensor(3.0), "empty": torch.zeros(0, 512),
             "ragged": {"a": torch.zeros(1, 512), "b": torch.zeros(1, 256)}}[obj]
    torch.save(value, e.model_dir("stylegan_directions") / "d.pt")
    H.refusal(lambda: N["HumanGenLoadDirections"]().load("d.pt"), node="HumanGenLoadDirections", input_name="file")


@pytest.mark.parametrize("payload", [{"people": "x"}, [{"people": [{"pose_keypoints_2d": ["a"] * 54}],
                                                          "canvas_width": 8, "canvas_height": 8}],
                                     [[[[[[[[[[]]]]]]]]]], "[" * 100_000 + "]" * 100_000])
def test_pose_json_wrong_structure(tmp_path, payload):
    e = H.env(tmp_path)
    (e.input / "p.json").write_text(payload if isinstance(payload, str) else json.dumps(payload))
    H.refusal(lambda: N["HumanGenLoadPose"]().load("p.json", 0, 0), node="HumanGenLoadPose", input_name="path")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.mark.parametrize("case", ["bomb_header", "huge_text_chunk"])
def test_latent_png_over_pils_limits_is_a_node_error(tmp_path, case):
    """A PNG whose header declares far more pixels than PIL allows (PIL refuses it while opening) and one whose
    compressed text chunk inflates past PIL's text limit are clear errors on the input, not PIL's own."""
    import struct

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from humangen.utils import latent_png as L
    e = H.env(tmp_path)
    path = e.input / "x.png"
    if case == "bomb_header":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                         + _png_chunk(b"IEND", b""))
        match = "x.png: Image size .* exceeds limit"
    else:
        info = PngInfo()
        info.add_text(L.LATENT_KEY, " " * (20 << 20), zip=True)
        Image.new("RGB", (4, 4)).save(path, pnginfo=info)
        match = "x.png is not a readable PNG .*too large"
    H.refusal(lambda: N["HumanGenLoadLatentFromImage"]().load("x.png"), node="HumanGenLoadLatentFromImage",
              input_name="image", match=match)


@pytest.mark.parametrize("mode,value,expected", [("I;16", 300, 1 / 255), ("I;16", 65535, 1.0),
                                                 ("F", 0.5, 127 / 255)])
def test_latent_png_with_16_bit_or_float_pixels_keeps_their_brightness(tmp_path, mode, value, expected):
    """16-bit pixels are scaled as ComfyUI's LoadImage scales them (by 1/255, so a dark image stays dark instead of
    clipping to white), float pixels by 255 (`utils.image.pil_rgb`, which the runner's LoadImage uses too)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from humangen.utils import latent_png as L
    from humangen.utils.image import pil_to_comfy
    e = H.env(tmp_path)
    info = PngInfo()
    info.add_text(L.LATENT_KEY, L.latent_to_json({"space": "w", "tensor": torch.zeros(1, 4)}))
    dtype = np.uint16 if mode == "I;16" else np.float32
    image = Image.fromarray(np.full((4, 4), value, dtype))
    assert image.mode == mode
    if mode == "I;16":
        image.save(e.input / "x.png", pnginfo=info)
        (_, pixels) = L.read_png_latent(str(e.input / "x.png"))
    else:  # PNG stores no float pixels: the conversion itself
        pixels = pil_to_comfy(image)
    assert pixels.shape == (1, 4, 4, 3)
    assert torch.equal(pixels, torch.full_like(pixels, expected))  # 8-bit steps, truncated as PIL does
