"""Shared by the bench scripts: import the checkout as the package `humangen`, whatever its folder is called (the
way ComfyUI imports it), without putting the checkout on sys.path (its `utils`/`models` would shadow packages)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_pack():
    if "humangen" not in sys.modules:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != str(ROOT)]
        spec = importlib.util.spec_from_file_location("humangen", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["humangen"] = module
        spec.loader.exec_module(module)
    return sys.modules["humangen"]
