"""Test setup: import the repository root as the package `humangen`, whatever the checkout folder is called
(exactly how ComfyUI imports it under its folder name), and give every test a fresh standalone host whose model,
input and output folders live in a temporary directory."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `import hgtest` (importlib import mode)
from hgtest import ROOT  # noqa: E402

os.environ.setdefault("HUMANGEN_NO_PROGRESS", "1")


def _load_pack():
    if "humangen" in sys.modules:
        return sys.modules["humangen"]
    spec = importlib.util.spec_from_file_location("humangen", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["humangen"] = module
    spec.loader.exec_module(module)
    return module


_pack = _load_pack()
# The repository root has an __init__.py, so pytest collects it as a package and imports that file on its own
# (as "__init__", or under the folder's name when that is a valid identifier), where its relative imports fail.
# Point those names at the pack loaded above, unless the folder is named like an installed package (a checkout
# called `ray` must not hide Ray).


def _names_installed_package(name: str) -> bool:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin is not None and not Path(spec.origin).resolve().is_relative_to(ROOT)


for _alias in {"__init__", ROOT.name}:
    if _alias == "__init__" or not _names_installed_package(_alias):
        sys.modules.setdefault(_alias, _pack)


@pytest.fixture(scope="session")
def pack():
    return sys.modules["humangen"]


@pytest.fixture(autouse=True)
def standalone_host(tmp_path):
    """A standalone host rooted in tmp_path: models/<kind>, input/, output/."""
    from humangen.utils import host
    h = host.use(host.StandaloneHost(models_root=str(tmp_path / "models"), output_root=str(tmp_path / "output"),
                                     input_root=str(tmp_path / "input"), device="cpu"))
    yield h
    host.reset()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for modules of tiny networks: on a loaded 2-core machine torch's thread pool spins
    and runs them 10-100x slower than a single thread.
    Use: `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped otherwise)")
    config.addinivalue_line("markers", "comfyui: needs a real ComfyUI checkout in COMFYUI_PATH")
