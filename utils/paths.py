"""The one place where an untrusted name (from a workflow, a file, a server) becomes a path, and where files are written.

`confine` resolves a name inside an allowed root and refuses anything that lands outside it (`..`, absolute paths,
symlinks out) and names no file system takes (control characters such as NUL, over MAX_NAME_CHARS). It compares
resolved paths with `Path.is_relative_to`, never string prefixes (which would accept `models/stylegan_evil` as inside
`models/stylegan`). `output_target` is where a save node's filename_prefix writes, for the save and its
VALIDATE_INPUTS alike.

`write_exclusive` writes a file so that no reader ever sees it half-written and no existing file is replaced: the
bytes go to a temporary file in the same folder, are fsync'd, then hard-linked to the final name (atomic, fails if
the name exists), and the temporary file is removed whatever happens.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import HumanGenError, LimitExceededError, NodeInputError, shown
from .limits import MAX_NAME_CHARS

MAX_NAME_BYTES = 255  # one file or folder name (NAME_MAX on Linux and macOS, 255 UTF-16 units on Windows)


class PathOutsideFolderError(NodeInputError):
    """An untrusted name that would resolve outside the folder it must stay in. Raised as
    `PathOutsideFolderError(node, input_name, problem, fix)`; a single message argument is accepted too."""

    def __init__(self, node: str, input_name: str | None = None, problem: str | None = None,
                 fix: str | None = None):
        if input_name is None and problem is None:  # plain message form
            Exception.__init__(self, node)
            self.node, self.input_name, self.problem, self.fix = "HumanGen", "", node, None
            return
        super().__init__(node, input_name or "", problem or "", fix)


class FileExistsRefusedError(HumanGenError, FileExistsError):
    """A write that would replace an existing file."""


def confine(root: str | os.PathLike, name: str | os.PathLike, *, node: str = "HumanGen", input_name: str = "",
            allow_root: bool = False, follow_links: bool = True) -> Path:
    """`root / name`, resolved, if it stays inside `root` (also resolved); else a PathOutsideFolderError that names
    the node and input. Absolute names are refused even when they point inside root: workflows must use relative
    names. Subfolders are allowed.

    `follow_links=False` checks the name itself ('..' and absolute paths) without resolving symlinks inside the
    folder: for folders whose contents the user put there (model folders, where linking a file from another disk
    is common); the returned path is then the normalised, unresolved one."""
    text = name if isinstance(name, str) else os.fspath(name) if isinstance(name, os.PathLike) else name
    if not isinstance(text, str):
        raise PathOutsideFolderError(node, input_name, f"a file name must be text, got {type(name).__name__}.")
    control = next((c for c in text if ord(c) < 32 or ord(c) == 127), None)
    if control is not None:  # NUL cuts the name short in the OS; newlines and escapes forge log lines and listings
        what = "a NUL byte" if control == "\x00" else f"the control character {control!r}"
        raise PathOutsideFolderError(node, input_name, f"the name {shown(text)} contains {what}.",
                                     fix="use a plain file name.")
    if not text.strip() and not allow_root:
        raise NodeInputError(node, input_name, "the name is empty.", fix="give a file name.")
    if len(text) > MAX_NAME_CHARS:  # a deep or long name: the OS would refuse it only at the write, after the work
        raise LimitExceededError(node, input_name, f"the name {shown(text)} is {len(text)} characters long; at "
                                 f"most {MAX_NAME_CHARS} are accepted.", fix="use a shorter name.")
    longest = max((part for part in text.replace("\\", "/").split("/")), key=lambda part: len(part.encode()))
    if len(longest.encode()) > MAX_NAME_BYTES:  # checked before any work: the OS would refuse it only at the write
        raise LimitExceededError(node, input_name, f"the name part {shown(longest)} is "
                                 f"{len(longest.encode())} bytes long; file systems allow {MAX_NAME_BYTES}.",
                                 fix="use a shorter name.")
    if os.path.isabs(text) or (os.name != "nt" and text.startswith("\\")) or (len(text) > 1 and text[1] == ":" and text[0].isalpha()):
        raise PathOutsideFolderError(
            node, input_name, f"absolute paths are not allowed ({shown(text)}).",
            fix=f"put the file in {root} and give its name relative to that folder.")
    if follow_links:
        base = Path(root).resolve()
        target = (base / text).resolve()
    else:  # the name alone: '..' is normalised away against the unresolved folder
        base = Path(os.path.abspath(root))
        target = Path(os.path.normpath(base / text))
    if not target.is_relative_to(base) or (target == base and not allow_root):
        raise PathOutsideFolderError(node, input_name, f"{shown(text)} points outside its folder {base}.",
                                     "use a name inside that folder (subfolders are fine, '..' is not).")
    return target


def output_target(root: str | os.PathLike, prefix: Any, *, node: str, input_name: str = "filename_prefix",
                  empty_ok: bool = False) -> tuple[Path, str]:
    """(folder, file stem) that a save node's `prefix` names inside `root`: 'sub/name' -> (root/sub, 'name').
    Backslashes separate folders too (a workflow made on Windows); '..', absolute prefixes and symlinks out are
    refused. An empty stem ('' or 'sub/') is refused unless `empty_ok` (core SaveImage accepts it)."""
    if not isinstance(prefix, str):
        raise NodeInputError(node, input_name, f"expects text, got {type(prefix).__name__}.",
                             fix="give a prefix like 'HumanGen/person'.")
    text = prefix.replace("\\", "/").strip()
    confine(root, text, node=node, input_name=input_name, allow_root=True)
    folder, _, stem = text.rpartition("/")
    if stem in (".", ".."):
        stem = ""
    if not stem and not empty_ok:
        raise NodeInputError(node, input_name, f"the prefix {shown(prefix)} has no file name part.",
                             fix="give a prefix like 'HumanGen/person' (a folder, then a name).")
    return confine(root, folder, node=node, input_name=input_name, allow_root=True), stem


def check_output_target(root: str | os.PathLike, prefix: Any, *, node: str, input_name: str = "filename_prefix",
                        empty_ok: bool = False) -> bool | str:
    """`output_target` as ComfyUI's VALIDATE_INPUTS wants it: True, or the message. A prefix fed by a link is not
    known before the run (None here) and is checked when the node runs."""
    if prefix is None:
        return True
    try:
        output_target(root, prefix, node=node, input_name=input_name, empty_ok=empty_ok)
    except HumanGenError as exc:
        return str(exc)
    return True


def is_inside(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """True when `path`, resolved, lies inside `root`, resolved (the root itself counts)."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


_UMASK = _current_umask()  # read once, at import: setting it to read it is not safe while other threads create files


@contextlib.contextmanager
def _temporary_file(folder: Path, prefix: str, node: str) -> Iterator[str]:
    """A temporary file in `folder` (the final name's file system, so linking it is atomic), removed on exit
    whatever happens."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        in_the_way = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise HumanGenError(f"{node}: cannot write into {folder}: {in_the_way} is a file, not a folder. Fix: choose "
                            "another prefix or move that file.") from None
    except OSError as exc:  # a read-only or missing parent, ...
        raise HumanGenError(f"{node}: cannot create the folder {folder} ({exc.strerror or exc}). Fix: choose a "
                            "folder this user can write to.") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=folder)
    except OSError as exc:
        raise HumanGenError(f"{node}: cannot write into {folder} ({exc.strerror or exc}). Fix: choose a folder this "
                            "user can write to.") from None
    os.close(fd)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _write(tmp: str, data: bytes | Callable[[str], None]) -> None:
    if callable(data):
        data(tmp)
    else:
        with open(tmp, "wb") as f:
            f.write(data)


def _finish(tmp: str) -> None:
    """Before the file gets its name: on disk (fsync), with the permissions a new file gets (mkstemp makes 0600)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_UMASK)


@contextlib.contextmanager
def exclusive_writer(final: str | os.PathLike, *, node: str = "HumanGen", overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary path in `final`'s folder; write the file there. On a clean exit the file is fsync'd and
    linked to `final` without replacing an existing file (unless `overwrite`, which replaces it atomically). On any
    error, nothing is left behind under either name."""
    if os.fspath(final).endswith(("/", os.sep)) or os.path.isdir(final):
        raise HumanGenError(f"{node}: {os.fspath(final)} names a folder, not a file. Fix: give a file name.")
    final = Path(final)
    if final.exists() and not overwrite:
        raise FileExistsRefusedError(f"{node}: {final.name} already exists in {final.parent}; it is never replaced. "
                                     f"Fix: choose another name, or set overwrite where the node offers it.")
    if final.exists() and not final.is_file():  # a pipe or a device (/dev/null): replacing it would break the system
        raise FileExistsRefusedError(f"{node}: {final} is not a regular file (a pipe or a device); it is never "
                                     "replaced, also with overwrite. Fix: give the name of a file.")
    with _temporary_file(final.parent, f".{final.name}.", node) as tmp:
        yield tmp
        _finish(tmp)
        if overwrite:
            try:
                os.replace(tmp, final)
            except OSError as exc:
                raise HumanGenError(f"{node}: cannot replace {final} ({exc.strerror or exc}).") from None
            return
        try:
            os.link(tmp, final)
        except FileExistsError:
            raise FileExistsRefusedError(
                f"{node}: {final.name} appeared in {final.parent} while it was being written (another run?); "
                f"it was not replaced.") from None


def write_exclusive(final: str | os.PathLike, data: bytes | Callable[[str], None], *, node: str = "HumanGen",
                    overwrite: bool = False) -> Path:
    """Write `data` (bytes, or a function that writes the file at the path it is given) to `final` with
    `exclusive_writer`'s guarantees. Returns the final path."""
    with exclusive_writer(final, node=node, overwrite=overwrite) as tmp:
        _write(tmp, data)
    return Path(final)


def write_next_free(folder: str | os.PathLike, name_for: Callable[[int], str], start: int = 1, *,
                    data: bytes | Callable[[str], None], node: str = "HumanGen", limit: int = 10_000_000) -> Path:
    """Write `data` once (bytes, or a function that writes the file at the path it is given) to a temporary file
    in `folder`, then link it to the first name `name_for(i)` (i = start, start+1, ...) that does not exist: when
    another writer takes a name first, the next one is tried. Counters never wrap, so nothing is overwritten, and
    on any error (also an interrupt while writing) nothing is left behind."""
    folder = Path(folder)
    with _temporary_file(folder, ".humangen.", node) as tmp:
        _write(tmp, data)
        _finish(tmp)
        for i in range(start, start + limit):
            path = folder / name_for(i)
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                continue
        raise HumanGenError(f"{node}: no free file name in {folder} after {limit} tries.")
