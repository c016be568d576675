"""Traversal names for every node that turns a name into a path: '..', absolute paths, NUL bytes, links out of the
folder, ComfyUI's annotated names. Nothing outside the allowed folders is read, hashed or written (canary)."""
from __future__ import annotations

import os

import pytest
import torch

from adversarial import pack_helpers as H
from humangen import NODE_CLASS_MAPPINGS as N
from humangen.utils.errors import HumanGenError

pytestmark = [pytest.mark.timeout(60)]

# (node, how to call it with a name, input name)
READERS = [
    ("HumanGenStyleGANLoader", lambda n: N["HumanGenStyleGANLoader"]().load(n), "model_name"),
    ("HumanGenUnitedHumanLoader", lambda n: N["HumanGenUnitedHumanLoader"]().load(n), "model_name"),
    ("HumanGenHumanSDLoader", lambda n: N["HumanGenHumanSDLoader"]().load(n), "ckpt_name"),
    ("HumanGenHumanSDConvert", lambda n: N["HumanGenHumanSDConvert"]().convert(n), "ckpt_name"),
    ("HumanGenLoadDirections", lambda n: N["HumanGenLoadDirections"]().load(n), "file"),
    ("HumanGenUpscaleModelLoader", lambda n: N["HumanGenUpscaleModelLoader"]().load(n), "model_name"),
    ("HumanGenParts2WholeLoader", lambda n: N["HumanGenParts2WholeLoader"]().load(n), "model_name"),
    ("HumanGenLoadPose", lambda n: N["HumanGenLoadPose"]().load(n, 0, 0), "path"),
    ("HumanGenLoadLatentFromImage", lambda n: N["HumanGenLoadLatentFromImage"]().load(n), "image"),
]
READER_IDS = [r[0][8:] for r in READERS]


def _names(e):
    target = e.canary / "keep.txt"
    return {"dotdot": "../../canary/keep.txt", "dotdot_input": "../canary/keep.txt", "absolute": str(target),
            "inner_dotdot": "sub/../../../canary/keep.txt", "nul": "keep\x00.txt",
            "annotated_dotdot": "../canary/keep.txt [output]"}


@pytest.mark.parametrize("node,call,input_name", READERS, ids=READER_IDS)
@pytest.mark.parametrize("kind", ["dotdot", "dotdot_input", "absolute", "inner_dotdot", "nul", "annotated_dotdot"])
def test_reader_refuses_names_leaving_its_folder(tmp_path, node, call, input_name, kind):
    e = H.env(tmp_path)
    for folder in ("stylegan", "unitedhuman", "humansd", "stylegan_directions", "upscale_models", "parts2whole"):
        e.model_dir(folder)
    name = _names(e)[kind]
    err = H.refusal(lambda: call(name), node=node, input_name=input_name)
    assert "keep" not in str(err) or "outside" in str(err) or "absolute" in str(err) or "NUL" in str(err) \
        or "not found" in str(err) or "not a .json" in str(err)
    e.check_clean()


@pytest.mark.parametrize("node,call,input_name", [r for r in READERS if r[0] in (
    "HumanGenLoadPose", "HumanGenLoadLatentFromImage")], ids=["LoadPose", "LoadLatentFromImage"])
def test_input_link_pointing_outside_is_refused(tmp_path, node, call, input_name):
    e = H.env(tmp_path)
    (e.canary / "secret.json").write_text("[]")
    (e.input / "link.json").symlink_to(e.canary / "secret.json")
    (e.input / "link.png").symlink_to(e.canary / "secret.json")
    name = "link.json" if node == "HumanGenLoadPose" else "link.png"
    H.refusal(lambda: call(name), node=node, input_name=input_name, match="outside")


def test_is_changed_never_reads_outside(tmp_path, monkeypatch):
    from humangen.utils import checkpoints
    e = H.env(tmp_path)
    (e.canary / "secret.json").write_text("[]")
    seen = []
    monkeypatch.setattr(checkpoints, "content_hash", lambda p: seen.append(p) or "x")
    for cls, name in (("HumanGenLoadPose", str(e.canary / "secret.json")),
                      ("HumanGenLoadPose", "../canary/secret.json"),
                      ("HumanGenLoadLatentFromImage", str(e.canary / "secret.json")),
                      ("HumanGenLoadLatentFromImage", "../canary/secret.json [input]")):
        value = N[cls].IS_CHANGED(name)
        assert value != value  # NaN: load() reports the problem
    assert seen == []


def test_annotated_names_follow_comfyui(tmp_path, standalone_host):
    from humangen.utils import host
    e = H.env(tmp_path)
    assert host.annotated_path("a.png") == (e.input / "a.png").resolve()
    assert host.annotated_path("sub/a.png [output]") == (e.output / "sub" / "a.png").resolve()
    assert host.annotated_path("a.png [input]") == (e.input / "a.png").resolve()
    assert str(host.annotated_path("a.png [temp]")).startswith(os.path.realpath(standalone_host.temp_dir()))
    with pytest.raises(HumanGenError, match="outside"):
        host.annotated_path("../../x.png [temp]")


def _latent():
    return {"space": "w", "tensor": torch.zeros(1, 16), "generator_id": "g:0", "num_ws": 4, "seeds": [1],
            "labels": ["1"], "z": None, "truncation": {"psi": 1.0, "cutoff": None, "center": None}}


def _pose():
    from humangen.utils import pose as P
    import numpy as np
    return [P.make_frame([np.ones((18, 3)) * 4], 16, 16)]


WRITERS = [
    ("HumanGenSaveImageWithLatent", lambda p: N["HumanGenSaveImageWithLatent"]().save(
        torch.rand(1, 8, 8, 3), _latent(), p), "filename_prefix"),
    ("HumanGenSavePose", lambda p: N["HumanGenSavePose"]().save(_pose(), p, "openpose_json"), "filename_prefix"),
    ("HumanGenSavePose", lambda p: N["HumanGenSavePose"]().save(_pose(), p, "humansd_npz"), "filename_prefix"),
]


@pytest.mark.parametrize("node,call,input_name", WRITERS, ids=["latent_png", "pose_json", "pose_npz"])
@pytest.mark.parametrize("prefix", ["../canary/x", "../../canary/x", "ABS", "a/../../canary/x", "x\x00y"])
def test_save_prefix_leaving_output_is_refused(tmp_path, node, call, input_name, prefix):
    e = H.env(tmp_path)
    prefix = str(e.canary / "x") if prefix == "ABS" else prefix
    H.refusal(lambda: call(prefix), node=node, input_name=input_name)
    e.check_clean()
    assert not any(p.is_file() for p in e.output.rglob("*"))


@pytest.mark.parametrize("node,call,input_name", WRITERS, ids=["latent_png", "pose_json", "pose_npz"])
def test_save_prefix_subfolders_are_allowed(tmp_path, node, call, input_name):
    e = H.env(tmp_path)
    call("deep/er/name")
    files = sorted(p.relative_to(e.output).as_posix() for p in e.output.rglob("*") if p.is_file())
    assert len(files) == 1 and files[0].startswith("deep/er/name_00001")
    e.check_clean()


@pytest.mark.parametrize("output_name", ["../../canary/x.safetensors", "sub/x.safetensors", "x\x00.safetensors"])
def test_humansd_convert_output_name(tmp_path, output_name):
    e = H.env(tmp_path)
    (e.model_dir("humansd") / "h.ckpt").write_bytes(b"x")
    H.refusal(lambda: N["HumanGenHumanSDConvert"]().convert("h.ckpt", output_name), node="HumanGenHumanSDConvert",
              input_name="output_name")
    e.check_clean()


@pytest.mark.parametrize("save_name", ["../../canary/x", "/abs/x", "a/../../../canary/x", ".safetensors",
                                       "sub/ .safetensors"])
def test_pti_save_name_is_confined_before_any_work(tmp_path, save_name):
    e = H.env(tmp_path)
    from humangen.models import gan_latents as gl
    from sg_helpers import TINY_SG2, tiny_generator
    gen = gl.GeneratorDescriptor.from_model(tiny_generator(TINY_SG2), "g", "g:0")
    lat = gl.make_latent("w+", torch.zeros(1, gen.num_ws, gen.w_dim), gen)
    H.refusal(lambda: N["HumanGenPTI"]().tune(gen, lat, torch.rand(1, 16, 16, 3), save_name=save_name),
              node="HumanGenPTI", input_name="save_name")
    e.check_clean()


def test_model_path_accepts_a_command_line_path_only_when_trusted(tmp_path):
    from humangen.utils import host
    e = H.env(tmp_path)
    target = e.canary / "keep.txt"
    with pytest.raises(HumanGenError, match="absolute paths are not allowed"):
        host.model_path("stylegan", str(target))
    host.trust_file(str(target))
    try:
        assert host.model_path("stylegan", str(target)) == str(target)
    finally:
        host._TRUSTED_FILES.discard(os.path.realpath(target))


def test_model_folder_prefix_sibling_is_not_inside(tmp_path):
    """`models/stylegan_evil/x` is not inside `models/stylegan` (the string-prefix bug)."""
    from humangen.utils import host
    e = H.env(tmp_path)
    e.model_dir("stylegan")
    (e.models / "stylegan_evil").mkdir()
    (e.models / "stylegan_evil" / "x.pkl").write_bytes(b"x")
    with pytest.raises(HumanGenError, match="outside"):
        host.model_path("stylegan", "../stylegan_evil/x.pkl")


@pytest.mark.parametrize("node,call,input_name", WRITERS + [
    ("HumanGenPTI", None, "save_name"), ("HumanGenLoadPose", None, "path")],
    ids=["latent_png", "pose_json", "pose_npz", "pti", "load_pose"])
def test_name_parts_too_long_for_the_file_system_are_refused_before_any_work(tmp_path, node, call, input_name):
    """A file or folder name over 255 bytes (the file system's limit) is refused when the name is checked, before
    the node works or makes a folder: not by the OS at the write, after the work, with a folder left behind."""
    e = H.env(tmp_path)
    name = "sub/" + "x" * 300
    if node == "HumanGenPTI":
        from humangen.models import gan_latents as gl
        from sg_helpers import TINY_SG2, tiny_generator
        gen = gl.GeneratorDescriptor.from_model(tiny_generator(TINY_SG2), "g", "g:0")
        lat = gl.make_latent("w+", torch.zeros(1, gen.num_ws, gen.w_dim), gen)
        call = lambda n: N["HumanGenPTI"]().tune(gen, lat, torch.rand(1, 16, 16, 3), save_name=n)  # noqa: E731
    elif node == "HumanGenLoadPose":
        call = lambda n: N["HumanGenLoadPose"]().load(n + ".json", 0, 0)  # noqa: E731
    H.refusal(lambda: call(name), node=node, input_name=input_name, match=r"is 3\d\d bytes long; file systems allow 255")
    assert list(e.output.rglob("*")) == []
    e.check_clean()


VALIDATORS = [("HumanGenSaveImageWithLatent", "filename_prefix"), ("HumanGenSavePose", "filename_prefix"),
              ("HumanGenPTI", "save_name")]


@pytest.mark.parametrize("node,input_name", VALIDATORS, ids=["latent_png", "pose", "pti"])
@pytest.mark.parametrize("name,problem", [
    ("../canary/x", "points outside its folder"), ("ABS", "absolute paths are not allowed"),
    ("x\ny", r"contains the control character '\\n'"), ("x\x1b[2Jy", r"contains the control character '\\x1b'"),
    ("DEEP", r"is 1\d\d\d characters long; at most 1024 are accepted"), (7, "expects text, got int")])
def test_validate_inputs_refuses_the_name_before_the_job_runs(tmp_path, node, input_name, name, problem):
    """VALIDATE_INPUTS (run by ComfyUI and the runner before any node of the job) gives the same refusal as the
    node itself, so a job never starts only to fail at its save: a message naming the node and input, with a Fix,
    and the hostile name cut short."""
    import re
    e = H.env(tmp_path)
    name = {"ABS": str(e.canary / "x"), "DEEP": "/".join(["ab"] * 400)}.get(name, name)
    message = N[node].VALIDATE_INPUTS(**{input_name: name})
    assert isinstance(message, str) and message.startswith(f"{node}: input '{input_name}': ")
    assert re.search(problem, message) and "Fix: " in message and len(message) < 400, message
    assert N[node].VALIDATE_INPUTS(**{input_name: "sub/fine"}) is True
    assert N[node].VALIDATE_INPUTS() is True  # fed by a link: checked when the node runs
    e.check_clean()
    assert list(e.output.rglob("*")) == []


@pytest.mark.parametrize("node,call,input_name", WRITERS, ids=["latent_png", "pose_json", "pose_npz"])
@pytest.mark.parametrize("prefix", ["", "sub/", "  ", "sub/.."])
def test_save_prefix_without_a_file_name_is_refused(tmp_path, node, call, input_name, prefix):
    e = H.env(tmp_path)
    H.refusal(lambda: call(prefix), node=node, input_name=input_name, match="has no file name part")
    assert not any(p.is_file() for p in e.output.rglob("*"))


def test_pti_validate_inputs_refuses_an_existing_file(tmp_path):
    e = H.env(tmp_path)
    (e.model_dir("stylegan") / "mine.safetensors").write_bytes(b"keep")
    message = N["HumanGenPTI"].VALIDATE_INPUTS(save_name="mine")
    assert "mine.safetensors already exists" in message and "Fix: choose another name" in message
    assert N["HumanGenPTI"].VALIDATE_INPUTS(save_name="") is True
    assert (e.model_dir("stylegan") / "mine.safetensors").read_bytes() == b"keep"
