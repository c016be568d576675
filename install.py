"""Install HumanGen's dependencies into the running interpreter.

requirements.txt holds only packages that any installer may pip-install one line at a time with no options (that is
what ComfyUI-Manager does before it runs this file; some Manager versions even pass comment lines to pip, so that
file has none); requirements-build.txt and requirements-nodeps.txt need this file's flags.

ComfyUI-Manager runs this file with the host's Python after cloning the pack; a newcomer runs
`python install.py` (optionally `--ray` for the Ray engine, `--dev` for the test tools, which include Ray).
It only installs from the project's own files (requirements*.txt, constraints.txt) and never downloads model
weights.

Rules it follows (see the README, "Install"):
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
import importlib.metadata
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", action="store_true", help="also install the test tools (pytest) and Ray")
    parser.add_argument("--ray", action="store_true",
                        help="also install Ray for `run --engine ray` (requirements-ray.txt)")
    args = parser.parse_args(argv)

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
    print("[HumanGen install] done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
