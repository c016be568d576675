"""Bounded work and numbers: huge canvases and images, zip bombs, oversized texts, NaN/inf in every kind of value,
and content hashes that tell apart files agreeing in size and first/last MiB."""
from __future__ import annotations

import json
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

from adversarial import pack_helpers as H
from humangen import NODE_CLASS_MAPPINGS as N

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("one_torch_thread")]


def _frame(w=64, h=64, value=4.0):
    return {"people": [{"pose_keypoints_2d": [value, value, 1.0] * 18}], "canvas_width": w, "canvas_height": h}


def _peak_mib(fn) -> float:
    tracemalloc.start()
    try:
        fn()
    except Exception:  # noqa: BLE001 - the refusal itself is checked elsewhere
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2 ** 20


# ---- sizes -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("w,h", [(200000, 200000), (20000, 10), (10, 16385)])
def test_pose_file_with_a_huge_canvas(tmp_path, w, h):
    e = H.env(tmp_path)
    (e.input / "big.json").write_text(json.dumps([_frame(w, h)]))
    H.refusal(lambda: N["HumanGenLoadPose"]().load("big.json", 0, 0), node="HumanGenLoadPose", input_name="path",
              match="larger than the limit")
    assert _peak_mib(lambda: N["HumanGenLoadPose"]().load("big.json", 0, 0)) < 32


def test_render_pose_limit_is_not_bypassed_by_the_pose_canvas(tmp_path):
    pose = [_frame(12000, 9000)]  # a canvas LoadPose accepts, larger than RenderPose may allocate
    H.refusal(lambda: N["HumanGenRenderPose"]().render(pose, "humansd", 0, 0, 0.05), node="HumanGenRenderPose",
              input_name="pose", match="8192")
    assert _peak_mib(lambda: N["HumanGenRenderPose"]().render(pose, "humansd", 0, 0, 0.05)) < 32
    (img,) = N["HumanGenRenderPose"]().render(pose, "humansd", 64, 48, 0.05)  # an explicit size is fine
    assert tuple(img.shape) == (1, 48, 64, 3)


@pytest.mark.parametrize("w,h", [(200000, 200000), (0, 5), (-3, 5), (1.5, 5), (float("inf"), 5)])
def test_render_pose_refuses_bad_canvas_values(w, h):
    H.refusal(lambda: N["HumanGenRenderPose"]().render([_frame(w, h)], "openpose", 0, 0, 0.05),
              node="HumanGenRenderPose", input_name="pose")


def test_keypoints_far_outside_imply_no_giant_canvas(tmp_path):
    e = H.env(tmp_path)
    (e.input / "far.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": [1e9, 1e9, 1.0] * 18}]}))
    H.refusal(lambda: N["HumanGenLoadPose"]().load("far.json", 0, 0), node="HumanGenLoadPose", input_name="path",
              match="canvas")


def test_latent_png_larger_than_the_limit_is_not_decoded(tmp_path):
    from PIL import Image
    e = H.env(tmp_path)
    Image.new("RGB", (8200, 2)).save(e.input / "wide.png")
    H.refusal(lambda: N["HumanGenLoadLatentFromImage"]().load("wide.png"), node="HumanGenLoadLatentFromImage",
              input_name="image", match="8192")


def test_too_many_people_and_frames():
    many_people = {"people": [{"pose_keypoints_2d": [1.0, 1.0, 1.0] * 18}] * 1001, "canvas_width": 8,
                   "canvas_height": 8}
    H.refusal(lambda: N["HumanGenRenderPose"]().render([many_people], "humansd", 0, 0, 0.05),
              node="HumanGenRenderPose", input_name="pose", match="limit")
    H.refusal(lambda: N["HumanGenRenderPose"]().render([_frame()] * 10001, "humansd", 0, 0, 0.05),
              node="HumanGenRenderPose", input_name="pose", match="limit")


def test_pose_npz_numeric_array_of_too_many_people(tmp_path):
    e = H.env(tmp_path)
    np.savez(e.input / "crowd.npz", arr_0=np.zeros((1001, 17, 3), np.float32))
    H.refusal(lambda: N["HumanGenLoadPose"]().load("crowd.npz", 64, 64), node="HumanGenLoadPose", input_name="path",
              match="holds 1001 people, more than the limit of 1000")
    np.savez(e.input / "other.npz", frames=np.zeros((1, 17, 3), np.float32))
    err = H.refusal(lambda: N["HumanGenLoadPose"]().load("other.npz", 64, 64), node="HumanGenLoadPose",
                    input_name="path", match="other.npz has no 'arr_0'")
    assert str(tmp_path) not in str(err)


# ---- archives ----------------------------------------------------------------------------------------------------
def test_pose_npz_declaring_gigabytes(tmp_path):
    e = H.env(tmp_path)
    H.zip_bomb(e.input / "bomb.npz")
    H.refusal(lambda: N["HumanGenLoadPose"]().load("bomb.npz", 0, 0), node="HumanGenLoadPose", input_name="path",
              match="inflate")
    e.check_clean()


def test_pose_npz_genuinely_compressed_bomb(tmp_path):
    e = H.env(tmp_path)
    H.real_zip_bomb(e.input / "bomb.npz", size=80 << 20)
    assert (e.input / "bomb.npz").stat().st_size < 1 << 20
    assert _peak_mib(lambda: N["HumanGenLoadPose"]().load("bomb.npz", 0, 0)) < 32
    H.refusal(lambda: N["HumanGenLoadPose"]().load("bomb.npz", 0, 0), node="HumanGenLoadPose", input_name="path",
              match="inflate")


def test_pose_npz_lying_about_its_size(tmp_path):
    """Declares 200 bytes, holds 8 MiB of zeros: readers stop at the declared size, the error is clear."""
    e = H.env(tmp_path)
    H.zip_bomb(e.input / "liar.npz", declared=200, body=b"\x00" * (8 << 20))
    H.refusal(lambda: N["HumanGenLoadPose"]().load("liar.npz", 0, 0), node="HumanGenLoadPose", input_name="path")


def test_smplx_npz_declaring_gigabytes(tmp_path):
    e = H.env(tmp_path)
    H.zip_bomb(e.model_dir("smplx") / "SMPLX_NEUTRAL.npz", member="v_template.npy")
    H.refusal(lambda: N["HumanGenSMPLXLoader"]().load("neutral", 10, 10), node="HumanGenSMPLXLoader",
              input_name="gender", match="inflate")


@pytest.mark.parametrize("node,folder,name,call,input_name", [
    ("HumanGenStyleGANLoader", "stylegan", "b.pt", lambda n: N["HumanGenStyleGANLoader"]().load(n), "model_name"),
    ("HumanGenLoadDirections", "stylegan_directions", "b.pt", lambda n: N["HumanGenLoadDirections"]().load(n),
     "file"),
    ("HumanGenUpscaleModelLoader", "upscale_models", "b.pth", lambda n: N["HumanGenUpscaleModelLoader"]().load(n),
     "model_name"),
    ("HumanGenHumanSDLoader", "humansd", "b.ckpt", lambda n: N["HumanGenHumanSDLoader"]().load(n), "ckpt_name"),
], ids=["stylegan", "directions", "upscaler", "humansd"])
def test_zip_checkpoint_bombs(tmp_path, node, folder, name, call, input_name):
    e = H.env(tmp_path)
    H.zip_bomb(e.model_dir(folder) / name, member="archive/data/0")
    H.refusal(lambda: call(name), node=node, input_name=input_name, match="zip bomb|inflate")


def test_zip_checkpoint_bomb_split_across_members(tmp_path):
    """Each member below the per-member threshold, together 160 MiB from a few hundred KiB."""
    e = H.env(tmp_path)
    with zipfile.ZipFile(e.model_dir("stylegan") / "split.pt", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for i in range(40):
            zf.writestr(f"archive/data/{i}", b"\x00" * (4 << 20))
    assert (e.model_dir("stylegan") / "split.pt").stat().st_size < 1 << 20
    H.refusal(lambda: N["HumanGenStyleGANLoader"]().load("split.pt"), node="HumanGenStyleGANLoader",
              input_name="model_name", match="40 members would inflate")


def test_nvidia_pickle_holding_a_compressed_storage_archive(tmp_path):
    """An NVIDIA pickle stores each tensor as the bytes of a torch.save archive: a deflated one inflates 80 MiB
    from a pickle of under 1 MiB unless it is checked like a file."""
    import io
    import pickle

    buf = io.BytesIO()
    torch.save(torch.zeros(80 << 20, dtype=torch.uint8).untyped_storage(), buf)
    packed = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, \
            zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    packed = packed.getvalue()
    assert len(packed) < 1 << 20

    class Storage:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (packed,)

    (e := H.env(tmp_path)).model_dir("stylegan")
    (e.model_dir("stylegan") / "bomb.pkl").write_bytes(pickle.dumps({"G_ema": Storage()}, protocol=4))
    H.refusal(lambda: N["HumanGenStyleGANLoader"]().load("bomb.pkl"), node="HumanGenStyleGANLoader",
              input_name="model_name", match="zip bomb")


def test_zip_checkpoint_with_too_many_members(tmp_path):
    e = H.env(tmp_path)
    with zipfile.ZipFile(e.model_dir("stylegan") / "many.pt", "w") as zf:
        for i in range(4100):
            zf.writestr(f"archive/data/{i}", b"")
    H.refusal(lambda: N["HumanGenStyleGANLoader"]().load("many.pt"), node="HumanGenStyleGANLoader",
              input_name="model_name", match="members")


# ---- text --------------------------------------------------------------------------------------------------------
def test_oversized_and_nul_texts(tmp_path):
    from humangen.models import gan_latents as gl
    from sg_helpers import TINY_SG2, tiny_generator
    gen = gl.GeneratorDescriptor.from_model(tiny_generator(TINY_SG2), "g", "g:0")
    H.refusal(lambda: N["HumanGenLatentFromSeeds"]().make(gen, 0, "1," * 60000), node="HumanGenLatentFromSeeds",
              input_name="seeds", match="limit")
    H.refusal(lambda: N["HumanGenLatentFromSeeds"]().make(gen, 0, "1\x002"), node="HumanGenLatentFromSeeds",
              input_name="seeds", match="NUL")
    H.refusal(lambda: N["HumanGenLatentFromSeeds"]().make(gen, 0, "0-100000000"), node="HumanGenLatentFromSeeds",
              input_name="seeds", match="4096")


# ---- numbers -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gen():
    from humangen.models import gan_latents as gl
    from sg_helpers import TINY_SG2, tiny_generator
    return gl.GeneratorDescriptor.from_model(tiny_generator(TINY_SG2), "g", "g:0")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_float_inputs(gen, bad):
    from humangen.models import gan_latents as gl
    lat = gl.make_latent("w+", torch.zeros(1, gen.num_ws, gen.w_dim), gen)
    dirs = __import__("humangen.models.editing", fromlist=["Directions"]).Directions(torch.ones(1, gen.w_dim), ["d"])
    H.refusal(lambda: N["HumanGenLatentFromSeeds"]().make(gen, 0, "", bad), node="HumanGenLatentFromSeeds",
              input_name="truncation_psi", match="finite")
    H.refusal(lambda: N["HumanGenApplyDirection"]().apply(gen, lat, dirs, "0", bad), node="HumanGenApplyDirection",
              input_name="strength", match="finite")
    H.refusal(lambda: N["HumanGenRenderPose"]().render([_frame()], "humansd", 0, 0, bad), node="HumanGenRenderPose",
              input_name="threshold", match="finite")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_latents_holding_nan_or_inf(gen, bad, tmp_path):
    from humangen.models import gan_latents as gl
    t = torch.zeros(1, gen.num_ws, gen.w_dim)
    t[0, 0, 3] = bad
    lat = gl.make_latent("w+", t, gen)
    H.refusal(lambda: N["HumanGenStyleGANSynthesize"]().synthesize(gen, lat), node="HumanGenStyleGANSynthesize",
              input_name="latent", match="NaN")
    H.refusal(lambda: N["HumanGenSaveImageWithLatent"]().save(torch.rand(1, 8, 8, 3), lat),
              node="HumanGenSaveImageWithLatent", input_name="latent", match="NaN")
    H.refusal(lambda: N["HumanGenLatentInterpolate"]().interpolate(gen, lat, 4, "lerp", "w+", lat),
              node="HumanGenLatentInterpolate", input_name="latent_a", match="NaN")


@pytest.mark.parametrize("where", ["tensor", "center"])
def test_latent_png_carrying_nan(gen, tmp_path, where):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from humangen.models import gan_latents as gl
    from humangen.utils.latent_png import LATENT_KEY
    e = H.env(tmp_path)
    t = torch.zeros(1, gen.num_ws, gen.w_dim)
    center = torch.zeros(gen.w_dim)
    (t if where == "tensor" else center).view(-1)[0] = float("nan")
    lat = gl.make_latent("w+", t, gen, truncation={"psi": 0.7, "cutoff": None, "center": center})
    info = PngInfo()
    info.add_text(LATENT_KEY, gl.latent_to_json(lat))
    Image.new("RGB", (8, 16)).save(e.input / "nan.png", pnginfo=info)
    H.refusal(lambda: N["HumanGenLoadLatentFromImage"]().load("nan.png"), node="HumanGenLoadLatentFromImage",
              input_name="image", match="NaN|finite")


def test_pose_with_nan_keypoints(tmp_path):
    e = H.env(tmp_path)
    frame = _frame()
    frame["people"][0]["pose_keypoints_2d"][0] = float("nan")
    H.refusal(lambda: N["HumanGenRenderPose"]().render([frame], "humansd", 0, 0, 0.05), node="HumanGenRenderPose",
              input_name="pose", match="NaN")
    (e.input / "nan.json").write_text(json.dumps([frame]))  # json writes the NaN literal, which json.load reads
    H.refusal(lambda: N["HumanGenLoadPose"]().load("nan.json", 0, 0), node="HumanGenLoadPose", input_name="path",
              match="NaN")
    items = np.empty(1, dtype=object)
    items[0] = {"keypoints": np.full((17, 3), np.inf, np.float32)}
    np.savez(e.input / "inf.npz", items)
    H.refusal(lambda: N["HumanGenLoadPose"]().load("inf.npz", 64, 64), node="HumanGenLoadPose", input_name="path",
              match="NaN|infinite")


@pytest.mark.parametrize("node,call,input_name", [
    ("HumanGenStyleGANSynthesize", lambda g, l: N["HumanGenStyleGANSynthesize"]().synthesize(g, l, "const", 0),
     "batch_size"),
    ("HumanGenStyleMix", lambda g, l: N["HumanGenStyleMix"]().mix(g, l, l, "0-1", True, "const", -1), "batch_size"),
    ("HumanGenLatentInterpolate", lambda g, l: N["HumanGenLatentInterpolate"]().interpolate(g, l, 1), "frames"),
    ("HumanGenLatentFromSeeds", lambda g, l: N["HumanGenLatentFromSeeds"]().make(g, -5), "seed"),
    ("HumanGenLatentFromSeeds", lambda g, l: N["HumanGenLatentFromSeeds"]().make(g, 0, "", 1.0, 0, "w_avg", 10 ** 9),
     "mean_samples"),
], ids=["batch0", "batch_neg", "frames1", "seed_neg", "mean_samples_huge"])
def test_numbers_outside_their_declared_range(gen, node, call, input_name):
    from humangen.models import gan_latents as gl
    lat = gl.make_latent("w+", torch.zeros(2, gen.num_ws, gen.w_dim), gen)
    H.refusal(lambda: call(gen, lat), node=node, input_name=input_name, match="out of range")


# ---- hashes ------------------------------------------------------------------------------------------------------
def test_cache_key_and_generator_id_read_the_whole_file(tmp_path):
    from humangen.models.gan_latents import generator_id_for_file
    from humangen.utils import checkpoints
    a, b = tmp_path / "a" / "g.pkl", tmp_path / "b" / "g.pkl"
    a.parent.mkdir()
    b.parent.mkdir()
    H.same_edges_different_middle(a, b)
    assert a.stat().st_size == b.stat().st_size
    assert a.read_bytes()[: 1 << 20] == b.read_bytes()[: 1 << 20]
    assert a.read_bytes()[-(1 << 20):] == b.read_bytes()[-(1 << 20):]
    assert checkpoints._cache_key(str(a)) != checkpoints._cache_key(str(b))
    assert generator_id_for_file(str(a)) != generator_id_for_file(str(b))


def test_content_hash_is_memoised_and_sees_changes(tmp_path, monkeypatch):
    import hashlib
    import os

    from humangen.utils import checkpoints
    p = tmp_path / "f.bin"
    p.write_bytes(b"one")
    first = checkpoints.content_hash(str(p))
    assert first == hashlib.sha256(b"one").hexdigest()
    calls = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: calls.append(a) or real_open(*a, **k))
    assert checkpoints.content_hash(str(p)) == first and calls == []  # memoised: not read again
    monkeypatch.undo()
    p.write_bytes(b"two")
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10 ** 9))
    assert checkpoints.content_hash(str(p)) == hashlib.sha256(b"two").hexdigest()


def test_pti_with_alexnet_on_images_too_small_for_it(tmp_path):
    """AlexNet's strided layers leave nothing of a 16x16 image: a clear error naming lpips_net, before tuning."""
    from humangen.models import gan_latents as gl
    from humangen.models.lpips import LPIPS
    from sg_helpers import TINY_SG2, tiny_generator
    e = H.env(tmp_path)
    torch.save(LPIPS("alex").net.state_dict(), e.model_dir("lpips") / "alexnet-owt-7be5be79.pth")
    gen = gl.GeneratorDescriptor.from_model(tiny_generator(TINY_SG2), "g", "g:0")
    lat = gl.make_latent("w+", torch.zeros(1, gen.num_ws, gen.w_dim), gen)
    H.refusal(lambda: N["HumanGenPTI"]().tune(gen, lat, torch.rand(1, 16, 16, 3), lpips_net="alex"),
              node="HumanGenPTI", input_name="lpips_net", match="at least .* pixels")
    H.refusal(lambda: N["HumanGenProjectImage"]().project(gen, torch.rand(1, 16, 16, 3), lpips_net="alex"),
              node="HumanGenProjectImage", input_name="lpips_net", match="at least .* pixels")


@pytest.mark.parametrize("input_name", ["image", "mask"])
def test_image_and_mask_tensors_with_nan(input_name):
    image, mask = torch.rand(1, 16, 16, 3), torch.ones(1, 16, 16)
    (image if input_name == "image" else mask)[0, 3, 3] = float("nan")
    H.refusal(lambda: N["HumanGenPoseDetect"]().detect(image, "mediapipe", 0.3, 1, "openpose18", mask=mask),
              node="HumanGenPoseDetect", input_name=input_name, match="NaN")


@pytest.mark.parametrize("w,h", [(16384, 8), (8, 16384)])
def test_humansd_generation_size_from_an_elongated_pose(w, h):
    """short_side 512 on a 16384x8 canvas would ask for a 1M-pixel-wide generation: refused before any work."""
    kwargs = dict(prompt="p", negative_prompt="", added_prompt="", steps=2, guidance=1.0, eta=0.0,
                  scheduler="ddim", seed=0, batch=1, short_side=512, strength=1.0, precision="fp32")
    err = H.refusal(lambda: N["HumanGenSkeletonSDSampler"]().sample(object(), pose=[_frame(w, h)], **kwargs),
                    node="HumanGenSkeletonSDSampler", input_name="pose", match="larger than the limit")
    assert str(err).count("Fix:") == 1
    err = H.refusal(lambda: N["HumanGenSkeletonSDSampler"]().sample(object(), pose=[_frame(99999, 8)], **kwargs),
                    node="HumanGenSkeletonSDSampler", input_name="pose", match="canvas width 99999")
    assert "pose: pose:" not in str(err) and "pose: frame" not in str(err) and str(err).count("Fix:") == 1


@pytest.mark.parametrize("frames,batch,input_name", [(1100, 1, "pose"), (70, 16, "batch")])
def test_humansd_frames_times_batch_over_the_output_limit(monkeypatch, frames, batch, input_name):
    """A pose sequence times the batch is one output batch: over MAX_BATCH_PIXELS it is refused before a skeleton is
    drawn (a 2 KB pose file of empty frames could ask for thousands of 512x512 images)."""
    from humangen.utils import pose as P
    monkeypatch.setattr(P, "render_skeleton", lambda *a, **k: pytest.fail("a skeleton was drawn"))
    kwargs = dict(prompt="p", negative_prompt="", added_prompt="", steps=2, guidance=1.0, eta=0.0,
                  scheduler="ddim", seed=0, batch=batch, short_side=512, strength=1.0, precision="fp32")
    H.refusal(lambda: N["HumanGenSkeletonSDSampler"]().sample(object(), pose=[_frame(512, 512)] * frames, **kwargs),
              node="HumanGenSkeletonSDSampler", input_name=input_name,
              match=f"images \\({frames} frames x batch {batch}\\) of 512x512 make .* more than the limit")


MASK_NODES = [
    ("HumanGenPoseDetect", lambda im, m: N["HumanGenPoseDetect"]().detect(im, "mediapipe", 0.3, 1, "openpose18",
                                                                          mask=m)),
    ("HumanGenAlignFullBody", lambda im, m: N["HumanGenAlignFullBody"]().align(im, "512x256", -1, True, 0.3,
                                                                               "mediapipe_pose", mask=m)),
    ("HumanGenTiledUpscale", lambda im, m: N["HumanGenTiledUpscale"]().upscale(im, None, mask=m)),
]


@pytest.mark.parametrize("node,call", MASK_NODES, ids=[n[8:] for n, _ in MASK_NODES])
@pytest.mark.parametrize("shape,match", [((1, 16, 0), "with pixels"), ((0, 16, 16), "with pixels"),
                                         ((1, 1, 1, 5, 5), "with pixels"), ((5,), "with pixels"),
                                         ((2, 16, 16), "mask batch 2 does not match the image batch 3")])
def test_masks_without_pixels_or_of_another_batch(node, call, shape, match):
    """Every node with a MASK input checks it the same way (`utils.image.check_mask`) before any work: no OpenCV or
    indexing error from an empty mask, and no mask silently reused for a batch it does not match."""
    H.refusal(lambda: call(torch.rand(3, 16, 16, 3), torch.ones(*shape)), node=node, input_name="mask", match=match)
