"""Safe checkpoint loading: NVIDIA pickles without exec, allow-list refusals, safetensors/.pt, cache, errors."""
from __future__ import annotations

import io
import os
import pickle

import pytest
import torch

from sg_helpers import MARKER_SRC, TINY_SG2, TINY_SG2_RECT, TINY_SG3, exec_like_official_loader, \
    official_pickle_bytes, tiny_generator

from humangen.models import load_generator
from humangen.utils import checkpoints as ck
from humangen.utils.errors import UnsafeCheckpointError, UnsupportedCheckpointError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HUMANGEN_CACHE_DIR", str(tmp_path / "cache"))


def _same_output(G1, G2, seed=3):
    z = torch.randn([2, G1.z_dim], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return torch.allclose(G1(z), G2(z), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kwargs", [TINY_SG2, TINY_SG2_RECT, TINY_SG3], ids=["sg2", "sg2rect", "sg3"])
def test_official_pickle_loads_without_executing_embedded_source(kwargs, tmp_path):
    marker = tmp_path / "marker.txt"
    G = tiny_generator(kwargs)
    data = official_pickle_bytes(G, MARKER_SRC.format(marker=str(marker)))
    path = tmp_path / "models" / "network-snapshot-000100.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    G2 = load_generator(str(path))
    assert not marker.exists(), "the embedded module source was executed"
    assert G2.arch == G.arch and (G2.img_height, G2.img_width) == (G.img_height, G.img_width)
    for k, v in G.state_dict().items():
        assert torch.equal(G2.state_dict()[k], v), k
    assert _same_output(G, G2)
    # the payload is live: NVIDIA's way of loading (exec) would have written the marker
    exec_like_official_loader(data)
    assert marker.exists()


def test_cache_is_written_outside_the_model_folder_and_reused(tmp_path, monkeypatch):
    G = tiny_generator(TINY_SG2)
    path = tmp_path / "models" / "g.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(official_pickle_bytes(G, "raise SystemExit"))
    load_generator(str(path))
    assert sorted(os.listdir(path.parent)) == ["g.pkl"]  # nothing written next to the user's model
    cached = os.listdir(tmp_path / "cache" / "converted")
    assert len(cached) == 1 and cached[0].endswith(".safetensors")

    def boom(p):
        raise AssertionError("pickle re-read although a cache exists")
    monkeypatch.setattr(ck, "read_nvidia_pickle", boom)
    G3 = load_generator(str(path))
    assert _same_output(G, G3)


@pytest.mark.parametrize("keys", [("G_ema",), ("G", "D")], ids=["G_ema_only", "no_G_ema"])
def test_pickles_with_only_some_networks(keys, tmp_path):
    G = tiny_generator(TINY_SG2)
    path = tmp_path / "pti.pkl"
    path.write_bytes(official_pickle_bytes(G, "", keys=keys))
    assert _same_output(G, load_generator(str(path), use_cache=False))


def test_numpy1_module_names_are_accepted(tmp_path):
    G = tiny_generator(TINY_SG2)
    data = official_pickle_bytes(G, "", protocol=2)  # protocol 2 writes 'module\nname\n' text globals
    assert b"cnumpy._core.multiarray\n" in data or b"cnumpy.core.multiarray\n" in data
    data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    path = tmp_path / "np1.pkl"
    path.write_bytes(data)
    cp = ck.read_checkpoint(str(path))
    assert cp.source_format == "nvidia-pkl" and cp.info["class_name"] == "Generator"
    assert _same_output(G, load_generator(str(path), use_cache=False))


def test_legacy_storage_bytes_load_under_weights_only():
    """Plain-pickled tensors store each storage as torch.save legacy bytes; they must load via weights_only."""
    t = {"p": torch.nn.Parameter(torch.randn(3, 4)), "b": torch.arange(5, dtype=torch.int64),
         "h": torch.randn(2).half()}
    data = pickle.dumps(t)
    assert b"_load_from_bytes" in data
    out = ck.safe_load_pickle(io.BytesIO(data))
    for k in t:
        assert out[k].dtype == t[k].dtype and torch.equal(out[k], t[k].detach())


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_os_system_payload_is_refused_naming_the_global(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil(f"touch {marker}")}))
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os|nt)\.system"):
        load_generator(str(path))
    assert not marker.exists()


def test_builtins_eval_is_refused():
    data = pickle.dumps(_Evil("x"))  # any non-allow-listed callable
    data = data.replace(b"\x8c\x05posix\x94\x8c\x06system", b"\x8c\x08builtins\x94\x8c\x04eval") \
        if b"posix" in data else data
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.eval|posix\.system|nt\.system"):
        ck.safe_load_pickle(io.BytesIO(data))


def test_tensorflow_pickle_is_refused_clearly():
    data = b"\x80\x02}q\x00X\x02\x00\x00\x00Gsq\x01cdnnlib.tflib.network\nNetwork\nq\x02)\x81q\x03}q\x04bs."
    with pytest.raises(UnsupportedCheckpointError, match="TensorFlow"):
        ck._pick_generator(ck.safe_load_pickle(io.BytesIO(data)), "v1.pkl")


@pytest.mark.parametrize("cut", [0.5, 0.97])
def test_truncated_pickle_gives_a_clear_error(cut, tmp_path):
    data = official_pickle_bytes(tiny_generator(TINY_SG2), "")
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(UnsupportedCheckpointError, match="truncated or corrupt"):
        load_generator(str(path))


def test_empty_and_garbage_files(tmp_path):
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(UnsupportedCheckpointError, match="empty"):
        load_generator(str(tmp_path / "empty.pkl"))
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04garbage" * 10)
    with pytest.raises(UnsupportedCheckpointError, match="truncated or corrupt"):
        load_generator(str(tmp_path / "junk.pkl"))
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(UnsupportedCheckpointError, match="safetensors"):
        load_generator(str(tmp_path / "bad.safetensors"))


def test_safetensors_round_trip_with_kwargs_in_metadata(tmp_path):
    G = tiny_generator(TINY_SG3)
    path = tmp_path / "g.safetensors"
    ck.save_generator(G, str(path))
    G2 = load_generator(str(path))
    assert G2.arch == "stylegan3" and _same_output(G, G2)


def test_torch_file_round_trip_and_weights_only(tmp_path):
    G = tiny_generator(TINY_SG2_RECT)
    path = tmp_path / "g.pt"
    torch.save({"G_ema": G.state_dict(), "init_kwargs": G.init_kwargs}, path)
    assert _same_output(G, load_generator(str(path)))
    # bare state dict: kwargs inferred from shapes
    torch.save(G.state_dict(), tmp_path / "bare.pth")
    G3 = load_generator(str(tmp_path / "bare.pth"))
    assert (G3.img_height, G3.img_width) == (16, 8) and _same_output(G, G3)
    # a .pt that needs code execution is refused by weights_only
    torch.save({"x": _Evil("true")}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match="refused to load.*could execute code"):
        load_generator(str(tmp_path / "evil.pt"))
    data = (tmp_path / "g.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsupportedCheckpointError, match="truncated or corrupt"):
        load_generator(str(tmp_path / "cut.pt"))


def test_unknown_architecture_lists_what_was_looked_for():
    from humangen.models import build_generator
    with pytest.raises(UnsupportedCheckpointError, match="looked for"):
        build_generator({"z_dim": 1}, {"foo.weight": torch.zeros(1)})


def test_quoted_library_messages_never_carry_torchs_weights_only_advice(tmp_path):
    """Every one-line error quotes a library through `first_line`, which restates a line about `weights_only`
    (torch's text advises turning the safe loader off): one mechanism for every loader."""
    from humangen.utils.errors import first_line
    advice = "Re-running `torch.load` with `weights_only` set to `False` will likely succeed\nmore"
    assert first_line(RuntimeError(advice)) == "refused by the weights-only loader"
    assert first_line("plain first line\nsecond", limit=5) == "plain"
    torch.save({"x": _Evil("true")}, tmp_path / "evil.pt")
    with pytest.raises(Exception) as info:
        torch.load(tmp_path / "evil.pt", weights_only=True)
    for line in str(info.value).splitlines():  # whatever line a loader quotes, the advice does not pass
        assert "weights_only" not in first_line(line) and "weights_only=False" not in first_line(line)
