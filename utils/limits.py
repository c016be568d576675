"""The one place for input bounds: image/canvas sizes, numbers (NaN/inf), text, batch sizes and archives.

Every check raises a NodeInputError / LimitExceededError that names the node, the input, what was wrong and the fix,
*before* any memory is allocated or any archive member is inflated. Nodes and loaders call these helpers instead of
writing their own tests, so one limit holds everywhere (e.g. a pose file cannot declare a canvas larger than what
RenderPose would accept from its own widgets).
"""
from __future__ import annotations

import io
import json
import math
import os
import sys
import zipfile
from typing import Any

from .errors import LimitExceededError, NodeInputError

MAX_IMAGE_SIDE = 8192  # largest image side the pack renders or allocates (RenderPose's widget maximum)
MAX_BATCH_PIXELS = 4 * 8192 * 8192  # pixels of one output batch (3 GiB as ComfyUI's float32 RGB IMAGE)
MAX_CANVAS_SIDE = 16384  # largest canvas a pose may declare (LoadPose's widget maximum); rendering still needs <= 8192
MAX_TEXT_CHARS = 100_000  # any STRING input
MAX_LATENT_ITEMS = 16384  # latents one node makes (StyleMix rows x columns, interpolation frames): 600 MB at 18x512
MAX_IMAGE_FRAMES = 4096  # frames of one loaded image file (an animated GIF/WebP becomes a batch)
MAX_NAME_CHARS = 1024  # file names and prefixes
MAX_JSON_DEPTH = 64  # nesting of objects/arrays in any JSON the pack reads (UI workflows use about 6)
MAX_JSON_FILE_BYTES = 64 << 20  # a JSON file the pack reads (configs, fits, manifests; workflows have their own)
# archives (.npz pose files, SMPL-X .npz, zip-based torch checkpoints)
MAX_ARCHIVE_MEMBERS = 4096
# A member this large that deflate shrank more than MAX_COMPRESSION_RATIO : 1 is a zip bomb: dense weights compress
# little (small sparse arrays such as a joint regressor can reach 1000 : 1, hence the size threshold). Readers stop
# at a member's declared size, so the total cap bounds the work even for archives that lie about their sizes.
MAX_COMPRESSION_RATIO = 200
RATIO_CHECK_BYTES = 64 << 20


def check_image_size(width: Any, height: Any, node: str, input_name: str, *, max_side: int = MAX_IMAGE_SIDE,
                     what: str = "image") -> tuple[int, int]:
    """(width, height) as ints if both are whole numbers in 1..max_side; else a clear error."""
    for label, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or int(v) != v or v < 1:
            raise NodeInputError(node, input_name, f"the {what} {label} {v!r} is not a positive whole number.",
                                 fix=f"give a {what} size between 1 and {max_side} pixels.")
        if v > max_side:
            raise LimitExceededError(
                node, input_name, f"the {what} {label} {int(v)} is larger than the limit of {max_side} pixels.",
                fix=f"use a smaller size (at most {max_side}x{max_side}), or set an explicit output size.")
    return int(width), int(height)


def check_batch_pixels(count: int, width: int, height: int, node: str, input_name: str, *,
                       what: str = "images") -> None:
    """A node's output batch of `count` images of width x height stays within MAX_BATCH_PIXELS, checked before
    any of it is made."""
    total = int(count) * int(width) * int(height)
    if total > MAX_BATCH_PIXELS:
        raise LimitExceededError(node, input_name, f"{count} {what} of {width}x{height} make {total:,} pixels, more "
                                 f"than the limit of {MAX_BATCH_PIXELS:,} for one output.",
                                 fix="make fewer or smaller images per run (split the batch or the pose frames).")


def _first_non_finite(value: Any):
    """A description of the first NaN/inf in a float, tensor, numpy array or nested list/dict; None if all finite."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str, bytes)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else repr(value)
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        import numpy as np
        if hasattr(value, "detach"):  # torch
            import torch
            if not (value.is_floating_point() or value.is_complex()):
                return None
            bad = ~torch.isfinite(value.detach())
            if bool(bad.any()):
                return f"{int(bad.sum())} NaN/inf value(s) in a tensor of shape {tuple(value.shape)}"
            return None
        arr = np.asarray(value)
        if arr.dtype.kind not in "fc":
            return None
        bad = ~np.isfinite(arr)
        if bad.any():
            return f"{int(bad.sum())} NaN/inf value(s) in an array of shape {arr.shape}"
        return None
    if isinstance(value, dict):
        for v in value.values():
            found = _first_non_finite(v)
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for v in value:
            found = _first_non_finite(v)
            if found:
                return found
    return None


def check_finite(value: Any, node: str, input_name: str, what: str = "value") -> Any:
    """`value` unchanged if it holds no NaN or infinity (floats, tensors, arrays, nested containers)."""
    found = _first_non_finite(value)
    if found:
        raise NodeInputError(node, input_name, f"the {what} is not a finite number ({found}).",
                             fix="give finite numbers (NaN and infinity are refused).")
    return value


def check_text(text: Any, node: str, input_name: str, *, max_chars: int = MAX_TEXT_CHARS) -> str:
    """A STRING input: text, no NUL byte, at most `max_chars` characters."""
    if not isinstance(text, str):
        raise NodeInputError(node, input_name, f"expected text, got {type(text).__name__}.")
    if "\x00" in text:
        raise NodeInputError(node, input_name, "the text contains a NUL byte.", fix="remove the NUL character.")
    if len(text) > max_chars:
        raise LimitExceededError(node, input_name, f"the text has {len(text)} characters, more than the limit of "
                                 f"{max_chars}.", fix="shorten it.")
    return text


def plain_int(text: Any, *, signed: bool = False) -> int | None:
    """`text` as an int when it is plain ASCII digits (with `signed`, optionally after a '-'), else None. Names and
    numbers from files, workflows and servers go through this: str.isdigit() also accepts '²', which int() then
    refuses with a raw ValueError (a file named `x_²_.png` in the output folder stopped every save)."""
    if not isinstance(text, str):
        return None
    digits = text[1:] if signed and text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()):
        return None
    try:
        return int(text)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        return None


def check_count(value: Any, node: str, input_name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number in [minimum, maximum] (batch sizes, steps, frame counts)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or int(value) != value:
        raise NodeInputError(node, input_name, f"expected a whole number, got {value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and {maximum}" if maximum is not None else ""
        raise NodeInputError(node, input_name, f"{int(value)} is out of range.",
                             fix=f"use a value between {minimum}{upper}.")
    return int(value)


def check_archive(path: str | os.PathLike | bytes, node: str, input_name: str, *, max_bytes: int,
                  max_members: int = MAX_ARCHIVE_MEMBERS, what: str = "archive") -> None:
    """Refuse a zip archive (.npz, zip-based torch file; a path, or the bytes of one held in memory) before anything
    in it is inflated: too many members, more than `max_bytes` uncompressed in total, or more than RATIO_CHECK_BYTES
    compressed more than MAX_COMPRESSION_RATIO : 1, in one member or across all of them (a zip bomb split into many
    members). The declared sizes are what Python's and numpy's readers stop at, so they bound the real work."""
    in_memory = isinstance(path, (bytes, bytearray))
    name = f"the {what} stored inside the file" if in_memory else os.path.basename(os.fspath(path))
    try:
        with zipfile.ZipFile(io.BytesIO(path) if in_memory else path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise NodeInputError(node, input_name, f"{name} is not a readable {what} (corrupt or truncated: {exc}).",
                             fix="download or export the file again.") from None
    if len(infos) > max_members:
        raise LimitExceededError(node, input_name, f"{name} has {len(infos)} members, more than the limit of "
                                 f"{max_members}.", fix=f"use a genuine {what}.")

    def inflates_too_much(size: int, compressed: int) -> bool:
        return size > RATIO_CHECK_BYTES and size > MAX_COMPRESSION_RATIO * max(compressed, 1)

    total = total_compressed = 0
    for info in infos:
        total += info.file_size
        total_compressed += info.compress_size
        if inflates_too_much(info.file_size, info.compress_size):
            raise LimitExceededError(
                node, input_name, f"{name} member {info.filename!r} would inflate from {info.compress_size} to "
                f"{info.file_size} bytes (a zip bomb?); it was not opened.", fix=f"use a genuine {what}.")
    if inflates_too_much(total, total_compressed):
        raise LimitExceededError(
            node, input_name, f"{name}'s {len(infos)} members would inflate from {total_compressed} to {total} "
            f"bytes (a zip bomb?); it was not opened.", fix=f"use a genuine {what}.")
    if total > max_bytes:
        raise LimitExceededError(node, input_name, f"{name} would inflate to {total} bytes, more than the limit of "
                                 f"{max_bytes}; it was not opened.", fix=f"use a genuine {what}.")


class JSONTextError(ValueError):
    """Unusable JSON text: "<what>: <problem> (<detail>)". `problem` is NOT_JSON or TOO_DEEP, so a caller with its
    own wording (the pose editor shares its message with the browser) can restate it."""
    NOT_JSON = "not valid JSON"
    TOO_DEEP = "JSON nested too deeply"

    def __init__(self, what: str, problem: str, detail: str):
        super().__init__(f"{what}: {problem} ({detail})")
        self.what, self.problem, self.detail = what, problem, detail


def parse_json(raw: bytes | str, what: str) -> Any:
    """JSON text (bytes: UTF-8, with or without a BOM) -> data, nested at most MAX_JSON_DEPTH levels. Any failure is
    one JSONTextError (a ValueError) that starts with `what` (a file or input name) and says what was wrong."""
    too_deep = (what, JSONTextError.TOO_DEEP, f"more than {MAX_JSON_DEPTH} levels")
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise JSONTextError(what, JSONTextError.NOT_JSON, f"not UTF-8 text: byte {exc.start}") from None
    try:
        data = json.loads(text)
    except RecursionError:  # the parser itself recurses per nesting level
        raise JSONTextError(*too_deep) from None
    except json.JSONDecodeError as exc:
        raise JSONTextError(what, JSONTextError.NOT_JSON, str(exc)) from None
    except ValueError:  # an integer with more digits than Python converts (its message advises changing Python)
        raise JSONTextError(what, JSONTextError.NOT_JSON, f"a number has more than {sys.get_int_max_str_digits()} "
                            "digits") from None
    if json_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise JSONTextError(*too_deep)
    return data


def read_json_file(path: str, what: str | None = None, max_bytes: int = MAX_JSON_FILE_BYTES) -> Any:
    """A JSON file, bounded in size (`max_bytes`) and nesting (`parse_json`). Any failure, including an unreadable
    file, is one ValueError that starts with `what` (default: the file's name)."""
    what = what or os.path.basename(path)
    try:
        with open(path, "rb") as fh:
            # read(n) reserves n bytes up front: ask for the file's size (+1 to see growth), never more than the limit
            raw = fh.read(min(os.fstat(fh.fileno()).st_size, max_bytes) + 1)
    except OSError as exc:
        raise ValueError(f"{what}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > max_bytes:
        raise ValueError(f"{what}: more than {max_bytes} bytes, the limit for a JSON file")
    return parse_json(raw, what)


def json_depth(data: Any, stop_at: int) -> int:
    """Nesting depth of objects/arrays (a scalar is 0), computed without recursion; stops counting past `stop_at`."""
    deepest = 0
    stack = [(data, 1)] if isinstance(data, (dict, list)) else []
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > stop_at:
            return depth
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


__all__ = ["MAX_IMAGE_SIDE", "MAX_BATCH_PIXELS", "MAX_CANVAS_SIDE", "MAX_LATENT_ITEMS", "MAX_TEXT_CHARS",
           "MAX_IMAGE_FRAMES", "MAX_NAME_CHARS", "MAX_ARCHIVE_MEMBERS", "MAX_COMPRESSION_RATIO", "RATIO_CHECK_BYTES",
           "MAX_JSON_DEPTH", "MAX_JSON_FILE_BYTES", "check_image_size", "check_batch_pixels", "check_finite",
           "check_text", "check_count", "plain_int", "check_archive", "JSONTextError", "parse_json", "read_json_file",
           "json_depth"]
