"""Names from workflow files that try to leave their folder in the runner's core nodes (LoadImage with ComfyUI's
annotated names, SaveImage prefixes, needs_models, convert -o), and writers that race for one name or fail half
way. Nothing is read or written outside the allowed folders, nothing is replaced, nothing is left half-written."""
from __future__ import annotations

import json
import os
import threading

import pytest

from adversarial.runner_helpers import box, cli, error_lines, run_args, scale_prompt, tiny_png  # noqa: F401

pytestmark = pytest.mark.timeout(60)


def _run(capsys, box, prompt, *extra):
    return cli(capsys, *run_args(box, box.write("wf.json", prompt), *extra))


# ---- LoadImage ----------------------------------------------------------------------------------------------
LOAD_CASES = [
    ("dotdot", "../../canary/secret.png", "points outside its folder"),
    ("absolute", "{canary}/secret.png", "absolute paths are not allowed"),
    ("symlink-out", "link.png", "points outside its folder"),
    ("output-dotdot", "../../canary/secret.png [output]", "points outside its folder"),
    ("temp-dotdot", "../../../canary/secret.png [temp]", "points outside its folder"),
    ("input-dotdot", "../../canary/secret.png [input]", "points outside its folder"),
    ("annotation-no-space-dotdot", "../../canary/secret.png[output]", "points outside its folder"),
    ("nul", "x.png\x00.txt", "contains a NUL byte"),
    ("not-text", {"name": "x.png"}, "expects a file name, got dict"),
]


@pytest.mark.parametrize("name,expected", [c[1:] for c in LOAD_CASES], ids=[c[0] for c in LOAD_CASES])
def test_load_image_outside_its_folder_is_refused(capsys, box, name, expected):
    os.symlink(box.canary / "secret.png", box.input / "link.png")
    if isinstance(name, str):
        name = name.replace("{canary}", str(box.canary))
    code, _, err = _run(capsys, box, scale_prompt(image=name))
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and "node 1 (LoadImage): invalid input: LoadImage: input 'image':" in lines[0]
    assert expected in lines[0]
    assert box.out_files() == []
    os.unlink(box.input / "link.png")


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (no pixel data): what a size bomb looks like before decoding."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("width,height,expected", [
    (20000, 100, "the image width 20000 is larger than the limit of 16384 pixels"),
    (100000, 100000, "declares too many pixels"),  # refused by Pillow's bound at open, reported the same way
])
def test_load_image_declaring_a_huge_size_is_refused_before_decoding(capsys, box, width, height, expected):
    (box.input / "huge.png").write_bytes(_png_header(width, height))
    code, _, err = _run(capsys, box, scale_prompt(image="huge.png"))
    assert code == 1, err
    assert "LoadImage: input 'image':" in err and expected in err and "Traceback" not in err
    assert box.out_files() == []


@pytest.mark.parametrize("content,expected", [
    (b"just some text, named like a picture\n", "is not an image (no format Pillow reads). Fix: pick a PNG"),
    ("truncated", "is damaged or truncated ("),  # a valid header whose pixel data stops half way
], ids=["text", "truncated"])
def test_load_image_of_a_file_that_is_not_a_whole_image_is_a_clear_error(capsys, box, content, expected):
    if content == "truncated":
        import io

        import numpy as np
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
        content = buf.getvalue()[: buf.tell() // 2]
    (box.input / "broken.png").write_bytes(content)
    code, _, err = _run(capsys, box, scale_prompt(image="broken.png"))
    assert code == 1, err
    lines = error_lines(err)
    assert len(lines) == 1 and "node 1 (LoadImage) failed: NodeInputError: LoadImage: input 'image': 'broken.png'" in lines[0], err
    assert expected in lines[0] and "Fix:" in lines[0] and "Traceback" not in err
    assert box.out_files() == []


@pytest.mark.parametrize("name,folder", [("x.png", "input"), ("x.png [input]", "input"), ("o.png [output]", "out"),
                                         ("t.png [temp]", "out/temp"), ("sub/s.png", "input")])
def test_load_image_annotated_names_mean_comfyui_folders(capsys, box, name, folder):
    target = box.work / folder / name.split(" [")[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.write_bytes(tiny_png((5, 6, 7)))
    code, _, err = _run(capsys, box, scale_prompt(image=name))
    assert code == 0, err
    assert "hg_00001_.png" in box.out_files()


# ---- SaveImage prefixes -------------------------------------------------------------------------------------
PREFIX_CASES = [
    ("dotdot", "../../canary/evil", "points outside its folder"),
    ("absolute", "{canary}/evil", "absolute paths are not allowed"),
    ("sneaky", "sub/../../../canary/evil", "points outside its folder"),
    ("vars-then-dotdot", "%year%/../../../canary/evil", "points outside its folder"),
    ("dotdot-only", "..", "points outside its folder"),
    ("nul", "a\x00b", "contains a NUL byte"),
    ("symlink-out", "link/evil", "points outside its folder"),
    ("newline", "a\nerror: forged line", r"contains the control character '\n'"),
    ("deep", "/".join(["a"] * 3000), "5999 characters long; at most 1024 are accepted"),
]


@pytest.mark.parametrize("prefix,expected", [c[1:] for c in PREFIX_CASES], ids=[c[0] for c in PREFIX_CASES])
def test_save_prefix_outside_out_is_refused(capsys, box, prefix, expected):
    os.symlink(box.canary, box.out / "link")
    code, _, err = _run(capsys, box, scale_prompt(prefix=prefix.replace("{canary}", str(box.canary))))
    assert code == 2, err  # refused when the workflow is checked, before any node runs
    lines = error_lines(err)
    assert len(lines) == 1 and "node 3 (SaveImage): invalid input:" in lines[0]
    assert "SaveImage: input 'filename_prefix':" in lines[0] and expected in lines[0] and len(lines[0]) < 500
    os.unlink(box.out / "link")
    assert box.out_files() == []


def test_save_prefix_subfolders_are_allowed(capsys, box):
    code, out, err = _run(capsys, box, scale_prompt(prefix="sub/dir/name"))
    assert code == 0, err
    assert box.out_files() == ["sub/dir/name_00001_.png"]
    assert out.strip() == str(box.out / "sub/dir/name_00001_.png")


def test_counter_keeps_counting_past_99999(capsys, box):
    (box.out / "hg_99999_.png").write_bytes(b"keep")
    assert _run(capsys, box, scale_prompt())[0] == 0
    assert box.out_files() == ["hg_100000_.png", "hg_99999_.png"]
    assert (box.out / "hg_99999_.png").read_bytes() == b"keep"


# ---- races and failures while writing -----------------------------------------------------------------------
def test_two_writers_one_name_never_overwrite(box):
    from humangen.utils.paths import write_next_free
    barrier = threading.Barrier(2)
    written: list = []

    def writer(tag: bytes):
        barrier.wait()
        for i in range(40):
            written.append(write_next_free(box.out, lambda n: f"race_{n:05}_.png", 1,
                                           data=tag + b"%05d" % i + b"x" * 4096))

    threads = [threading.Thread(target=writer, args=(t,)) for t in (b"A", b"B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(written)) == 80 and len(box.out_files()) == 80
    contents = sorted(p.read_bytes()[:6] for p in written)
    assert contents == sorted([b"A%05d" % i for i in range(40)] + [b"B%05d" % i for i in range(40)])


def test_two_exclusive_writers_one_file_one_wins(box):
    from humangen.utils.paths import FileExistsRefusedError, exclusive_writer
    target = box.out / "one.bin"
    outcome = {}
    gate = threading.Barrier(2)

    def writer(tag: bytes):
        try:
            with exclusive_writer(target, node="test") as tmp:
                with open(tmp, "wb") as f:
                    f.write(tag * 100_000)
                gate.wait()  # both have written their temporary file before either links it
            outcome[tag] = "won"
        except FileExistsRefusedError as exc:
            outcome[tag] = str(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in (b"A", b"B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [t for t, o in outcome.items() if o == "won"]
    assert len(winners) == 1
    loser = (set(outcome) - set(winners)).pop()
    assert "it was not replaced" in outcome[loser]
    assert target.read_bytes() == winners[0] * 100_000
    assert box.out_files() == ["one.bin"]


def test_two_save_nodes_racing_keep_every_image(box):
    import torch

    from humangen.runner.core_nodes import SaveImage
    from humangen.utils import host
    host.use(host.StandaloneHost(output_root=str(box.out), input_root=str(box.input), device="cpu"))
    barrier = threading.Barrier(2)
    names: list = []

    def saver(value: float):
        node = SaveImage()
        images = torch.full((2, 4, 4, 3), value)
        barrier.wait()
        for _ in range(5):
            names.extend(i["filename"] for i in node.save_images(images, "race")["ui"]["images"])

    threads = [threading.Thread(target=saver, args=(v,)) for v in (0.25, 0.75)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(names) == 20 and len(set(names)) == 20
    assert box.out_files() == sorted(names)


@pytest.mark.parametrize("failure", [KeyboardInterrupt, OSError, ValueError])
def test_a_write_that_fails_half_way_leaves_nothing(box, failure):
    from humangen.utils.paths import write_next_free

    def half(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise failure("stopped")

    with pytest.raises(failure):
        write_next_free(box.out, lambda n: f"x_{n}.png", 1, data=half)
    assert list(box.out.iterdir()) == []


def test_save_image_failing_while_encoding_leaves_nothing(capsys, box, monkeypatch):
    from PIL import Image

    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    code, _, err = _run(capsys, box, scale_prompt())
    assert code == 1 and "node 3 (SaveImage) failed: OSError: disk full" in err
    assert list(box.out.rglob("*")) == []


# ---- other names from files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("need,expected", [
    ({"directory": "stylegan", "name": "../../../canary/secret.txt"}, "workflow models: input 'name':"),
    ({"directory": "../../canary", "name": "secret.txt"}, "workflow models: input 'directory':"),
    ({"directory": "stylegan", "name": "{canary}/secret.txt"}, "absolute paths are not allowed"),
])
def test_declared_model_names_stay_in_the_model_folders(capsys, box, need, expected):
    from hgtoys import WORKFLOWS
    ui = json.loads((WORKFLOWS / "image_scale.json").read_text())
    need = {k: v.replace("{canary}", str(box.canary)) for k, v in need.items()}
    ui["models"] = [need]  # the frontend's model metadata: names from the workflow file
    code, _, err = cli(capsys, *run_args(box, box.write("wf.json", ui), "--models-dir", str(box.work / "models")))
    assert code == 2
    assert "1 model file(s) missing, nothing was run" in err and expected in err
    assert "Traceback" not in err


def test_convert_never_replaces_a_file_unless_asked(capsys, box):
    from hgtoys import WORKFLOWS
    target = box.out / "api.json"
    target.write_text("mine")
    code, _, err = cli(capsys, "convert", str(WORKFLOWS / "image_scale.json"), "-o", str(target))
    assert code == 2 and "api.json already exists" in err and target.read_text() == "mine"
    code, _, err = cli(capsys, "convert", str(WORKFLOWS / "image_scale.json"), "-o", str(target), "--overwrite")
    assert code == 0 and json.loads(target.read_text())["3"]["class_type"] == "SaveImage"
