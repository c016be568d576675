"""Malicious pickles for every loader of the pack that reads one: no code runs (the marker file is never created),
the refusal is a clear HumanGenError naming the node and input, and nothing is written outside the allowed
folders."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from adversarial import pack_helpers as H
from humangen import NODE_CLASS_MAPPINGS as N
from humangen.utils.errors import UnsafeCheckpointError

pytestmark = [pytest.mark.timeout(60)]


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("wrap", ["G_ema", None])
def test_stylegan_pkl(tmp_path, protocol, wrap):
    e = H.env(tmp_path)
    H.evil_pickle(e.model_dir("stylegan") / "evil.pkl", e.marker, protocol=protocol, wrap=wrap)
    H.refusal(lambda: N["HumanGenStyleGANLoader"]().load("evil.pkl"), node="HumanGenStyleGANLoader",
              input_name="model_name", match="io.open|builtins.open", kind=UnsafeCheckpointError)
    e.check_clean()


@pytest.mark.parametrize("ext", [".pt", ".pth"])
@pytest.mark.parametrize("legacy", [False, True])
def test_stylegan_torch_files(tmp_path, ext, legacy):
    e = H.env(tmp_path)
    H.evil_torch(e.model_dir("stylegan") / f"evil{ext}", e.marker, legacy=legacy, key="G_ema")
    H.refusal(lambda: N["HumanGenStyleGANLoader"]().load(f"evil{ext}"), node="HumanGenStyleGANLoader",
              input_name="model_name", match="open.*could execute code", kind=UnsafeCheckpointError)
    e.check_clean()


def test_unitedhuman_pkl(tmp_path):
    e = H.env(tmp_path)
    H.evil_pickle(e.model_dir("unitedhuman") / "evil.pkl", e.marker)
    H.refusal(lambda: N["HumanGenUnitedHumanLoader"]().load("evil.pkl"), node="HumanGenUnitedHumanLoader",
              input_name="model_name", kind=UnsafeCheckpointError)
    e.check_clean()


@pytest.mark.parametrize("legacy", [False, True])
def test_humansd_ckpt_loader_and_converter(tmp_path, legacy):
    e = H.env(tmp_path)
    H.evil_torch(e.model_dir("humansd") / "evil.ckpt", e.marker, legacy=legacy)
    H.refusal(lambda: N["HumanGenHumanSDLoader"]().load("evil.ckpt"), node="HumanGenHumanSDLoader",
              input_name="ckpt_name", match="could execute code", kind=UnsafeCheckpointError)
    H.refusal(lambda: N["HumanGenHumanSDConvert"]().convert("evil.ckpt"), node="HumanGenHumanSDConvert",
              input_name="ckpt_name", kind=UnsafeCheckpointError)
    assert sorted(p.name for p in (e.models / "humansd").iterdir()) == ["evil.ckpt"]  # no partial conversion
    e.check_clean()


@pytest.mark.parametrize("net,file_name", [("alex", "alexnet-owt-7be5be79.pth"), ("vgg", "vgg16-397923af.pth")])
def test_lpips_backbones(tmp_path, net, file_name):
    from humangen.models.lpips import load_lpips
    from humangen.utils.errors import HumanGenError
    e = H.env(tmp_path)
    H.evil_torch(e.model_dir("lpips") / file_name, e.marker)
    with pytest.raises(UnsafeCheckpointError, match=f"{file_name}.*could execute code") as info:
        load_lpips(net, [str(e.models / "lpips")])
    assert isinstance(info.value, HumanGenError) and "weights_only=False" not in str(info.value)
    e.check_clean()


@pytest.mark.parametrize("ext", [".pth", ".pt", ".ckpt", ".bin"])
def test_upscalers_via_spandrel_loader(tmp_path, ext):
    e = H.env(tmp_path)
    H.evil_torch(e.model_dir("upscale_models") / f"evil{ext}", e.marker, key="params_ema")
    H.refusal(lambda: N["HumanGenUpscaleModelLoader"]().load(f"evil{ext}"), node="HumanGenUpscaleModelLoader",
              input_name="model_name", match="execute code")
    e.check_clean()


@pytest.mark.parametrize("ext", [".pt", ".pth"])
def test_direction_files(tmp_path, ext):
    e = H.env(tmp_path)
    H.evil_torch(e.model_dir("stylegan_directions") / f"evil{ext}", e.marker)
    H.refusal(lambda: N["HumanGenLoadDirections"]().load(f"evil{ext}"), node="HumanGenLoadDirections",
              input_name="file", kind=UnsafeCheckpointError)
    e.check_clean()


def test_direction_npy_object_array(tmp_path):
    e = H.env(tmp_path)
    H.evil_npy(e.model_dir("stylegan_directions") / "evil.npy", e.marker)
    H.refusal(lambda: N["HumanGenLoadDirections"]().load("evil.npy"), node="HumanGenLoadDirections",
              input_name="file", match="pickled Python objects", kind=UnsafeCheckpointError)
    e.check_clean()


@pytest.mark.parametrize("protocol", [2, 4])
def test_stylespace_pickles(tmp_path, protocol):
    from humangen.models.editing import read_channel_strengths
    from humangen.utils.errors import HumanGenError
    e = H.env(tmp_path)
    path = H.evil_pickle(e.model_dir("stylegan_directions") / "statis.pkl", e.marker, protocol=protocol, wrap=None)
    with pytest.raises(HumanGenError, match="not on the allow-list"):
        read_channel_strengths(str(path))
    e.check_clean()


def test_smplx_npz_with_pickled_member_is_never_unpickled(tmp_path):
    e = H.env(tmp_path)
    H.evil_npz(e.model_dir("smplx") / "SMPLX_NEUTRAL.npz", e.marker, name="joint2num",
               extra={"v_template": np.zeros((4, 3))})
    H.refusal(lambda: N["HumanGenSMPLXLoader"]().load("neutral", 10, 10), node="HumanGenSMPLXLoader",
              input_name="gender", match="not an SMPL-X model: it lacks")
    e.check_clean()


def test_smplx_pkl_release_is_never_loaded(tmp_path):
    e = H.env(tmp_path)
    H.evil_pickle(e.model_dir("smplx") / "SMPLX_NEUTRAL.pkl", e.marker, protocol=2, wrap="shapedirs")
    H.refusal(lambda: N["HumanGenSMPLXLoader"]().load("neutral", 10, 10), node="HumanGenSMPLXLoader",
              input_name="gender", match="cannot be loaded safely")
    e.check_clean()


@pytest.mark.parametrize("name", ["arr_0", "canvas_sizes"])
def test_pose_npz(tmp_path, name):
    e = H.env(tmp_path)
    extra = {"arr_0": np.zeros((1, 17, 3))} if name != "arr_0" else None
    H.evil_npz(e.input / "evil.npz", e.marker, name=name, extra=extra)
    H.refusal(lambda: N["HumanGenLoadPose"]().load("evil.npz", 0, 0), node="HumanGenLoadPose", input_name="path",
              match="refused.*could run code")
    e.check_clean()


def test_parts2whole_decoupled_attention_file(tmp_path):
    from humangen.models.parts2whole.loader import read_safetensors_or_tensor_pickle
    e = H.env(tmp_path)
    path = H.evil_torch(tmp_path / "decoupled_attn.pth", e.marker)
    with pytest.raises(UnsafeCheckpointError, match="could execute code"):
        read_safetensors_or_tensor_pickle(str(path))
    e.check_clean()


def test_mmpose_checkpoint(tmp_path):
    from humangen.models.pose.mmpose_backend import load_checkpoint_state_dict
    e = H.env(tmp_path)
    path = H.evil_torch(tmp_path / "rtmpose.pth", e.marker)
    with pytest.raises(UnsafeCheckpointError, match="could execute code"):
        load_checkpoint_state_dict(str(path))
    e.check_clean()


def test_conversion_cache_never_holds_a_pickle(tmp_path, monkeypatch):
    """A hostile .pkl is refused before anything is written to the conversion cache."""
    e = H.env(tmp_path)
    monkeypatch.setenv("HUMANGEN_CACHE_DIR", str(tmp_path / "cache"))
    H.evil_pickle(e.model_dir("stylegan") / "evil.pkl", e.marker)
    H.refusal(lambda: N["HumanGenStyleGANLoader"]().load("evil.pkl"), node="HumanGenStyleGANLoader",
              input_name="model_name")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*"))
    e.check_clean()


def _stride0_torch_file(path, shape=(1 << 28, 8)):
    """A 600-byte torch zip whose one tensor of 2^31 elements views a single stored int64 (stride 0): only allowed
    globals, and torch's weights-only loader accepts it."""
    import io
    import pickle
    import zipfile
    from collections import OrderedDict

    import torch

    class Storage:
        pass

    class Stride0:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (Storage(), 0, shape, (0,) * len(shape), False, OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.LongStorage, "0", "cpu", 1) if isinstance(obj, Storage) else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"directions": Stride0()})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", b"\1" + b"\0" * 7)
        z.writestr("archive/version", "3\n")


def test_a_stride0_tensor_is_refused_before_it_is_copied(tmp_path):
    """The file loads with torch's weights-only loader, but the first .float() would allocate 8 GB: refused at the
    load, naming the node and the file."""
    import resource
    e = H.env(tmp_path)
    _stride0_torch_file(e.model_dir("stylegan_directions") / "x.pt")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    H.refusal(lambda: N["HumanGenLoadDirections"]().load("x.pt"), node="HumanGenLoadDirections", input_name="file",
              match=r"x.pt: a tensor of shape \(268435456, 8\) repeats the 8 bytes stored for it")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: no 8 GB copy
    e.check_clean()


@pytest.mark.parametrize("node,folder,call,input_name", [
    ("HumanGenLoadDirections", "stylegan_directions", lambda n: N["HumanGenLoadDirections"]().load(n), "file"),
    ("HumanGenStyleGANLoader", "stylegan", lambda n: N["HumanGenStyleGANLoader"]().load(n), "model_name"),
    ("HumanGenUpscaleModelLoader", "upscale_models", lambda n: N["HumanGenUpscaleModelLoader"]().load(n),
     "model_name")])
def test_a_sparse_tensor_is_refused_by_the_shared_torch_reader(tmp_path, node, folder, call, input_name):
    """torch's weights-only loader rebuilds sparse tensors; their storage cannot be inspected (NotImplementedError)
    and no model file of the pack holds one."""
    e = H.env(tmp_path)
    torch.save({"body.0.weight": torch.randn(1, 16).to_sparse()}, e.model_dir(folder) / "sparse.pt")
    H.refusal(lambda: call("sparse.pt"), node=node, input_name=input_name,
              match=r"sparse.pt: holds a sparse_coo tensor; model files store plain dense tensors.*Fix:")


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="POSIX pipes")
@pytest.mark.parametrize("node,folder,call,input_name", [
    ("HumanGenLoadDirections", "stylegan_directions", lambda n: N["HumanGenLoadDirections"]().load(n), "file"),
    ("HumanGenHumanSDConvert", "humansd", lambda n: N["HumanGenHumanSDConvert"]().convert(n), "ckpt_name"),
    ("HumanGenStyleGANLoader", "stylegan", lambda n: N["HumanGenStyleGANLoader"]().load(n), "model_name")])
def test_a_pipe_or_device_as_model_file_is_refused_without_reading(tmp_path, node, folder, call, input_name):
    """A FIFO blocks its reader forever and /dev/zero never ends: every model name resolves to a regular file or
    a folder (host.model_path), else the node refuses it before opening."""
    import os
    e = H.env(tmp_path)
    os.mkfifo(e.model_dir(folder) / "pipe.pt")
    os.symlink("/dev/zero", e.model_dir(folder) / "zero.pt")
    for name in ("pipe.pt", "zero.pt"):
        H.refusal(lambda: call(name), node=node, input_name=input_name,
                  match=rf"{name} is not a regular file \(a pipe, a device or a link to one\)")


def test_numpy_arrays_declared_large_before_their_data_are_refused():
    """numpy pickles call _reconstruct with shape (0,) and fill the array from the file; a 100-byte pickle calling
    it with 2^29 elements made 2 GB the file never held. Both allow-listed unpicklers (checkpoints, pose files)
    refuse it; numpy's own pickles still load."""
    import io
    import pickle

    from humangen.utils import pose as P
    from humangen.utils.checkpoints import safe_load_pickle
    from humangen.utils.errors import UnsupportedCheckpointError
    try:
        from numpy._core import multiarray as ma
    except ImportError:
        from numpy.core import multiarray as ma

    class Big:
        def __reduce__(self):
            return (ma._reconstruct, (np.ndarray, (1 << 29,), b"b"))

    raw = pickle.dumps({"v": Big()}, protocol=3)
    with pytest.raises(UnsupportedCheckpointError, match=r"declares 536870912 elements before its data"):
        safe_load_pickle(io.BytesIO(raw))
    with pytest.raises(UnsupportedCheckpointError, match=r"declares 536870912 elements"):
        P._NumpyOnlyUnpickler(io.BytesIO(raw)).load()
    fine = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(safe_load_pickle(io.BytesIO(pickle.dumps(fine, protocol=3))), fine)
    np.testing.assert_array_equal(P._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(fine, protocol=3))).load(), fine)
