"""Install HumanGen's dependencies into the running interpreter.

requirements.txt holds only packages that any installer may pip-install one line at a time with no options (that is
what ComfyUI-Manager does before it runs this file; some Manager versions even pass comment lines to pip, so that
file has none); requirements-build.txt and requirements-nodeps.txt need this file's flags.

ComfyUI-Manager runs this file with the host's Python after cloning the pack (README, "Set up": inside ComfyUI);
`launch.py` runs it inside the project's virtual environment with `--dev --if-needed` (README, "Set up" and
"Test"). It only installs from the project's own files (requirements*.txt, constraints.txt) and never downloads
model weights. `--ray` adds Ray for the Ray engine, `--dev` the test tools (Ray included); `--if-needed` skips pip
when the stamp that a successful install leaves in a virtual environment (`humangen-install.json` in its prefix)
matches the hash of those files.

Rules it follows:
- An existing torch is kept: it is pinned in a constraints file so pip can neither replace nor upgrade it.
  With no torch at all, torch==2.13.0 is installed first (a CPU wheel where one is provided locally).
- xtcocotools is built from source without build isolation (its wheel is built against numpy 1); it and mmpose are
  in requirements-build.txt, which ComfyUI-Manager (it pip-installs requirements.txt line by line, then runs this
  file) never installs on its own.
- mmengine needs `pkg_resources`, so setuptools stays below 81.
- mediapipe 0.10.21 and facenet-pytorch are installed with --no-deps (their metadata pins old torch/numpy).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TORCH = "2.13.0"


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("[HumanGen install]", " ".join(cmd), flush=True)
    subprocess.check_call(cmd)


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# Installed versions of these are never changed: other node packs and the host's CUDA builds depend on them.
KEEP_INSTALLED = ("torch", "torchvision", "torchaudio", "numpy")


def _name(line: str) -> str:
    return line.split("#")[0].split("==")[0].split("<")[0].split(">")[0].strip().lower()


def _constraints_file(torch_version: str) -> str:
    """The project's constraints, except that torch (and torchvision, torchaudio, numpy when already installed)
    are pinned to the versions present: pip may then neither replace nor upgrade them."""
    kept = {"torch": torch_version}
    for dist in KEEP_INSTALLED[1:]:
        version = _installed_version(dist)
        if version is not None:
            kept[dist] = version.split("+")[0]
    lines = []
    with open(os.path.join(HERE, "constraints.txt"), encoding="utf-8") as f:
        for line in f:
            name = _name(line)
            if name in kept or name == "torchvision":
                continue  # torchvision's pin must follow the torch that is present; pip picks the matching one
            lines.append(line.rstrip("\n"))
    for dist, version in kept.items():
        if dist != "torch" and version:
            print(f"[HumanGen install] keeping the installed {dist} {version}", flush=True)
        lines.append(f"{dist}=={version}")
    fd, path = tempfile.mkstemp(prefix="humangen-constraints-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


# What an install depends on: when none of these changed, installing again changes nothing.
INSTALL_INPUTS = ("install.py", "requirements.txt", "requirements-build.txt", "requirements-nodeps.txt",
                  "requirements-dev.txt", "requirements-ray.txt", "constraints.txt")
STAMP_NAME = "humangen-install.json"


def install_hash() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for name in INSTALL_INPUTS:
        with open(os.path.join(HERE, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read() + b"\0")
    return digest.hexdigest()


def stamp_path() -> str | None:
    """The stamp's place: inside the running virtual environment; None outside one (a system or host Python is
    never written to, and always installed into)."""
    return os.path.join(sys.prefix, STAMP_NAME) if sys.prefix != sys.base_prefix else None


def is_up_to_date(dev: bool, ray: bool = False) -> bool:
    path = stamp_path()
    if path is None or not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return False
    extras = bool(stamp.get("dev"))  # --dev installs Ray too
    return stamp.get("hash") == install_hash() and (extras or not dev) and (extras or stamp.get("ray") or not ray)


def write_stamp(dev: bool, ray: bool = False) -> None:
    path = stamp_path()
    if path is None:
        return
    try:
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump({"hash": install_hash(), "dev": dev, "ray": ray}, f)
        os.replace(path + ".tmp", path)
    except OSError as exc:  # a read-only environment: the next --if-needed simply installs again
        print(f"[HumanGen install] could not write {path}: {exc}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", action="store_true", help="also install the test tools (pytest) and Ray")
    parser.add_argument("--ray", action="store_true",
                        help="also install Ray for `run --engine ray` (requirements-ray.txt)")
    parser.add_argument("--if-needed", action="store_true",
                        help="skip pip when this virtual environment's install stamp matches the project's files")
    args = parser.parse_args(argv)
    if args.if_needed and is_up_to_date(args.dev, args.ray):
        print(f"[HumanGen install] up to date ({stamp_path()} matches the requirement files); nothing to do",
              flush=True)
        return 0

    torch_version = _installed_version("torch")
    if torch_version is None:
        torch_version = DEFAULT_TORCH
        _pip(f"torch=={torch_version}")
    else:
        print(f"[HumanGen install] keeping the installed torch {torch_version}", flush=True)
    torch_version = torch_version.split("+")[0]  # "2.13.0+cpu" satisfies "torch==2.13.0"

    constraints = _constraints_file(torch_version)
    try:
        _pip("-c", constraints, "pip", "wheel", "setuptools<81", "numpy", "cython")
        _pip("--no-build-isolation", "--no-binary", "xtcocotools", "-c", constraints,
             "-r", os.path.join(HERE, "requirements.txt"), "-r", os.path.join(HERE, "requirements-build.txt"))
        _pip("--no-deps", "-c", constraints, "-r", os.path.join(HERE, "requirements-nodeps.txt"))
        if args.ray or args.dev:  # --dev: the Ray engine's tests run in CI
            _pip("-c", constraints, "-r", os.path.join(HERE, "requirements-ray.txt"))
        if args.dev:
            _pip("-c", constraints, "-r", os.path.join(HERE, "requirements-dev.txt"))
    finally:
        os.unlink(constraints)
    write_stamp(args.dev, args.ray)
    print("[HumanGen install] done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
