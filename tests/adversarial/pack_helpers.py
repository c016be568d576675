"""Shared pieces of the pack's adversarial corpus (tests/adversarial/test_pack_*.py): hostile files, a marker that
proves no code ran, a canary folder that proves nothing was written outside the allowed folders, and one check of
what every refusal must look like (a HumanGenError of a readable type naming the node and the input)."""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MARKER = "CODE_RAN"


class Evil:
    """Unpickling this calls `open(marker, "w")`: if the marker file exists afterwards, file code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@dataclass
class Env:
    """The standalone host's folders (all under tmp_path) plus a canary folder beside them and a marker path."""

    root: Path
    models: Path
    input: Path
    output: Path
    canary: Path
    marker: Path

    def model_dir(self, kind: str) -> Path:
        d = self.models / kind
        d.mkdir(parents=True, exist_ok=True)
        return d

    def check_clean(self) -> None:
        """No code ran and nothing was written to the canary folder (outside every allowed folder)."""
        assert not self.marker.exists(), "hostile file code was executed"
        assert sorted(p.name for p in self.canary.iterdir()) == ["keep.txt"], "something was written outside"
        assert (self.canary / "keep.txt").read_text() == "canary"


def env(tmp_path: Path) -> Env:
    e = Env(tmp_path, tmp_path / "models", tmp_path / "input", tmp_path / "output", tmp_path / "canary",
            tmp_path / MARKER)
    for d in (e.models, e.input, e.output, e.canary):
        d.mkdir(parents=True, exist_ok=True)
    (e.canary / "keep.txt").write_text("canary")
    return e


def refusal(fn, *, node: str, input_name: str | None = None, match: str | None = None, kind=None):
    """Run `fn`; it must raise a HumanGenError (or `kind`) whose type reads 'HumanGen.<Name>' in the UI and whose
    message names `node` (and `input_name`), never passes on torch's weights_only=False advice and carries no
    traceback. Returns the exception."""
    import re

    from humangen.utils.errors import HumanGenError
    try:
        fn()
    except HumanGenError as exc:  # noqa: PERF203
        err = exc
    else:
        raise AssertionError("no error was raised")
    if kind is not None:
        assert isinstance(err, kind), f"{type(err).__name__}: {err}"
    text = str(err)
    assert type(err).__module__ == "HumanGen", type(err).__module__
    assert text.startswith(f"{node}:"), text
    if input_name is not None:
        assert f"input '{input_name}'" in text, text
    assert "weights_only=False" not in text and "weights_only` set to `False" not in text, text
    assert "Traceback" not in text, text
    if match is not None:
        assert re.search(match, text, re.IGNORECASE | re.DOTALL), text
    return err


# ---- hostile files ------------------------------------------------------------------------------------------
def evil_pickle(path: Path, marker: Path, *, protocol: int = 4, wrap: str = "G_ema") -> Path:
    path.write_bytes(pickle.dumps({wrap: Evil(marker)} if wrap else Evil(marker), protocol=protocol))
    return path


def evil_torch(path: Path, marker: Path, *, legacy: bool = False, key: str = "state_dict") -> Path:
    import torch
    torch.save({key: {"w": torch.zeros(2)}, "x": Evil(marker)}, path, _use_new_zipfile_serialization=not legacy)
    return path


def evil_npz(path: Path, marker: Path, *, name: str = "arr_0", extra: dict | None = None) -> Path:
    items = np.empty(1, dtype=object)
    items[0] = {"keypoints": np.zeros((17, 3), np.float32), "payload": Evil(marker)}
    np.savez(path, **{name: items}, **(extra or {}))
    return path


def evil_npy(path: Path, marker: Path) -> Path:
    items = np.empty(1, dtype=object)
    items[0] = Evil(marker)
    with open(path, "wb") as fh:
        np.lib.format.write_array(fh, items, allow_pickle=True)
    return path


def truncated_copy(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: max(1, int(len(data) * fraction))])
    return dst


WRONG_KIND = {
    "empty": b"",
    "text": b"this is a text file, not a model\n" * 4,
    "png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
    "json": b'{"not": "a checkpoint"}',
    "random": bytes(np.random.RandomState(0).randint(0, 256, 4096, dtype=np.uint8)),
    "bad_zip": b"PK\x03\x04" + b"\x00" * 200,
}


def zip_bomb(path: Path, member: str = "arr_0.npy", declared: int = 0xFFFF0000, body: bytes = b"\x00" * 4096) -> Path:
    """A zip whose member declares `declared` uncompressed bytes (local header and central directory patched), so
    any reader that trusted it would try to inflate that much."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, body)
    data = bytearray(buf.getvalue())
    local = data.find(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, declared)
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, declared)
    path.write_bytes(bytes(data))
    return path


def real_zip_bomb(path: Path, member: str = "arr_0.npy", size: int = 80 << 20) -> Path:
    """A genuine highly compressed member of `size` zero bytes (honest headers), written in chunks."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        info = zipfile.ZipInfo(member)
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as fh:
            chunk = b"\x00" * (1 << 20)
            for _ in range(size >> 20):
                fh.write(chunk)
    return path


def same_edges_different_middle(a: Path, b: Path, size: int = (2 << 20) + 4096) -> None:
    """Two files of one size whose first and last MiB agree and whose middles differ."""
    base = bytearray(np.random.RandomState(1).randint(0, 256, size, dtype=np.uint8).tobytes())
    a.write_bytes(bytes(base))
    base[(1 << 20) + 100] ^= 0xFF
    b.write_bytes(bytes(base))
