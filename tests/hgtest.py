"""Shared test helpers (importable from any test as `import hgtest`; conftest puts tests/ on sys.path)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Golden fixtures from the official implementations, stored in the repository (provenance in fixtures/README.md):
# nothing under tests/ reads outside the checkout.
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Optional cases skip with a reason that says how to enable them.
CUDA_SKIP_REASON = "needs a CUDA GPU: run the suite on a machine where torch.cuda.is_available() is True"
COMFYUI_SKIP_REASON = ("needs a real ComfyUI: set COMFYUI_PATH to a ComfyUI checkout "
                       "(and COMFYUI_PYTHON to its interpreter; see docs/comfyui-host.md)")


def requires_cuda(test):
    """Skip `test` unless a CUDA device is present."""
    import pytest
    import torch
    return pytest.mark.skipif(not torch.cuda.is_available(), reason=CUDA_SKIP_REASON)(test)


def root_script(name: str):
    """A script at the repository root (`install.py`, `launch.py`) imported as a module, without running it."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"humangen_root_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
