"""Nothing overwritten, nothing half-written: counters past 99999, names taken by another run while writing,
existing conversion targets, PTI targets that appear during tuning, failed and interrupted writes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adversarial import pack_helpers as H
from humangen import NODE_CLASS_MAPPINGS as N

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("one_torch_thread")]


def _latent(n=1):
    return {"space": "w", "tensor": torch.zeros(n, 16), "generator_id": "g:0", "num_ws": 4, "seeds": None,
            "labels": None, "z": None, "truncation": {"psi": 1.0, "cutoff": None, "center": None}}


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_latent_png_counter_keeps_counting_past_99999(tmp_path):
    e = H.env(tmp_path)
    (e.output / "hg").mkdir()
    (e.output / "hg" / "x_99999_.png").write_bytes(b"precious")
    node = N["HumanGenSaveImageWithLatent"]()
    first = node.save(torch.rand(2, 8, 8, 3), _latent(2), "hg/x")["ui"]["images"]
    second = node.save(torch.rand(1, 8, 8, 3), _latent(), "hg/x")["ui"]["images"]
    assert [r["filename"] for r in first + second] == ["x_100000_.png", "x_100001_.png", "x_100002_.png"]
    assert (e.output / "hg" / "x_99999_.png").read_bytes() == b"precious"
    assert {r["subfolder"] for r in first + second} == {"hg"}


def test_latent_png_name_taken_while_writing_is_not_replaced(tmp_path, monkeypatch):
    from humangen.utils import latent_png
    e = H.env(tmp_path)
    (e.output / "x_00001_.png").write_bytes(b"other run")
    monkeypatch.setattr(latent_png, "_next_counter", lambda folder, base: 1)  # a stale scan, as in a race
    out = N["HumanGenSaveImageWithLatent"]().save(torch.rand(1, 8, 8, 3), _latent(), "x")["ui"]["images"]
    assert out[0]["filename"] == "x_00002_.png"
    assert (e.output / "x_00001_.png").read_bytes() == b"other run"


def test_save_pose_skips_existing_and_racing_names(tmp_path, monkeypatch):
    import os

    from humangen.utils import pose as P
    e = H.env(tmp_path)
    (e.output / "p_00001_.json").write_text("mine")
    frame = [P.make_frame([[[4.0, 4.0, 1.0]] * 18], 16, 16)]
    real_link = os.link
    racing = e.output / "p_00002_.json"

    def link(src, dst, *a, **k):  # another run creates p_00002 just before our file gets that name
        if str(dst) == str(racing) and not racing.exists():
            racing.write_text("theirs")
        return real_link(src, dst, *a, **k)
    monkeypatch.setattr(os, "link", link)
    out = N["HumanGenSavePose"]().save(frame, "p", "openpose_json")
    monkeypatch.undo()
    assert out["result"][0].endswith("p_00003_.json")
    assert (e.output / "p_00001_.json").read_text() == "mine" and racing.read_text() == "theirs"
    assert _files(e.output) == ["p_00001_.json", "p_00002_.json", "p_00003_.json"]


def test_pose_writer_refuses_an_existing_file(tmp_path):
    from humangen.utils import pose as P
    from humangen.utils.paths import FileExistsRefusedError
    target = tmp_path / "p.json"
    target.write_text("keep")
    with pytest.raises(FileExistsRefusedError, match="never replaced"):
        P.save_pose([P.make_frame([], 8, 8)], str(target))
    assert target.read_text() == "keep" and _files(tmp_path) == ["p.json"]


def test_humansd_convert_refuses_an_existing_target_unless_overwrite(tmp_path):
    e = H.env(tmp_path)
    d = e.model_dir("humansd")
    torch.save({"state_dict": {"x": torch.zeros(2)}}, d / "h.ckpt")
    (d / "h.safetensors").write_bytes(b"existing conversion")
    H.refusal(lambda: N["HumanGenHumanSDConvert"]().convert("h.ckpt"), node="HumanGenHumanSDConvert",
              input_name="output_name", match="already exists.*overwrite")
    # with overwrite the target is allowed, but this checkpoint is not HumanSD: the old file stays intact
    H.refusal(lambda: N["HumanGenHumanSDConvert"]().convert("h.ckpt", "", False, True),
              node="HumanGenHumanSDConvert", input_name="ckpt_name")
    assert (d / "h.safetensors").read_bytes() == b"existing conversion"
    assert _files(d) == ["h.ckpt", "h.safetensors"]


def test_humansd_convert_overwrite_replaces_atomically(tmp_path, monkeypatch):
    from humangen.models.humansd import loader
    e = H.env(tmp_path)
    d = e.model_dir("humansd")
    torch.save({"state_dict": {}}, d / "h.ckpt")
    (d / "h.safetensors").write_bytes(b"old")

    def fake_convert(src, dst, *, half=False, overwrite=False):
        from humangen.utils.paths import write_exclusive
        write_exclusive(dst, b"new", overwrite=overwrite)
        return {"written": dst, "tensors": 0, "ignored": 0}
    monkeypatch.setattr(loader, "convert_to_safetensors", fake_convert)
    N["HumanGenHumanSDConvert"]().convert("h.ckpt", "", False, True)
    assert (d / "h.safetensors").read_bytes() == b"new" and _files(d) == ["h.ckpt", "h.safetensors"]


def test_pti_target_appearing_during_tuning_is_not_replaced(tmp_path, monkeypatch):
    from humangen.models import gan_latents as gl
    from humangen.models import inversion
    from humangen.nodes import editing as editing_nodes
    from sg_helpers import TINY_SG2, tiny_generator
    e = H.env(tmp_path)
    folder = e.model_dir("stylegan")
    G = tiny_generator(TINY_SG2)
    gen = gl.GeneratorDescriptor.from_model(G, "g", "g:0")
    lat = gl.make_latent("w+", torch.zeros(1, gen.num_ws, gen.w_dim), gen)

    class _Dist(torch.nn.Module):
        def min_side(self):
            return 1
    monkeypatch.setattr(editing_nodes, "_lpips", lambda node, net, generator=None, prompt=None: _Dist())

    def fake_tuning(G, ws, target, lp, cfg, callback=None):
        (folder / "tuned.safetensors").write_bytes(b"someone else's")
        return inversion.PTIResult(generator=G, losses=[], lpips=[], steps=0)
    monkeypatch.setattr(inversion, "pivotal_tuning", fake_tuning)
    H.refusal(lambda: N["HumanGenPTI"]().tune(gen, lat, torch.rand(1, 16, 16, 3), save_name="tuned"),
              node="HumanGenPTI", input_name="save_name", match="already exists|appeared")
    assert (folder / "tuned.safetensors").read_bytes() == b"someone else's"
    assert _files(folder) == ["tuned.safetensors"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_or_interrupted_write_leaves_nothing(tmp_path, error):
    from humangen.utils.paths import write_exclusive

    def writer(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise error("stop")
    with pytest.raises(error):
        write_exclusive(tmp_path / "out.bin", writer)
    assert _files(tmp_path) == []


def test_failed_latent_png_save_leaves_no_partial_file(tmp_path, monkeypatch):
    from PIL import Image
    e = H.env(tmp_path)

    def broken_save(self, fp, *a, **k):
        with open(fp, "wb") as fh:
            fh.write(b"\x89PNG half")
        raise OSError("disk full")
    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(Exception, match="disk full"):
        N["HumanGenSaveImageWithLatent"]().save(torch.rand(1, 8, 8, 3), _latent(), "sub/x")
    assert _files(e.output) == []


def test_generator_save_never_replaces(tmp_path):
    from humangen.utils import checkpoints
    from humangen.utils.paths import FileExistsRefusedError
    from sg_helpers import TINY_SG2, tiny_generator
    target = tmp_path / "g.safetensors"
    target.write_bytes(b"keep")
    with pytest.raises(FileExistsRefusedError):
        checkpoints.save_generator(tiny_generator(TINY_SG2), str(target))
    assert target.read_bytes() == b"keep" and _files(tmp_path) == ["g.safetensors"]


def test_direction_save_never_replaces(tmp_path):
    from humangen.models.editing import Directions, save_directions
    from humangen.utils.paths import FileExistsRefusedError
    target = tmp_path / "d.safetensors"
    target.write_bytes(b"keep")
    with pytest.raises(FileExistsRefusedError):
        save_directions(Directions(torch.ones(1, 4), ["a"]), str(target))
    assert target.read_bytes() == b"keep"


def test_conversion_cache_replaces_only_its_own_unreadable_entry(tmp_path, monkeypatch):
    from humangen.utils import checkpoints
    from sg_helpers import TINY_SG2, official_pickle_bytes, tiny_generator
    monkeypatch.setenv("HUMANGEN_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "g.pkl"
    src.write_bytes(official_pickle_bytes(tiny_generator(TINY_SG2), "", keys=("G_ema",)))
    from humangen.models import load_generator
    cached = Path(checkpoints.conversion_cache_path(str(src)))
    assert cached.parent == tmp_path / "cache" / "converted"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"damaged cache entry")
    load_generator(str(src))
    assert checkpoints.read_safetensors(str(cached)).state_dict  # rewritten, readable
    assert sorted(p.name for p in cached.parent.iterdir()) == [cached.name]  # no temporary file left
