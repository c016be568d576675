"""HumanSD's component configs, shipped as JSON data next to this file (`configs/*.json`).

They are ours on purpose: diffusers' single-file auto-detection types an 8-channel SD2 checkpoint as plain "v2" and
pulls the 768-px v-prediction SD 2.1 config from the hub. `load_configs()` returns plain dicts; keys starting with
'_' are comments.
"""
from __future__ import annotations

import copy
import json
import os
from functools import lru_cache

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
COMPONENTS = ("unet", "vae", "text_encoder", "scheduler")


@lru_cache(maxsize=None)
def _read(name: str) -> dict:
    with open(os.path.join(CONFIG_DIR, f"{name}.json"), encoding="utf-8") as fh:
        return {k: v for k, v in json.load(fh).items() if not k.startswith("_")}


def load_configs() -> dict[str, dict]:
    """{'unet', 'vae', 'text_encoder', 'scheduler'} -> a fresh copy of each shipped config."""
    return {name: copy.deepcopy(_read(name)) for name in COMPONENTS}


def defaults() -> dict:
    """The demo's defaults: negative/added prompt, steps, guidance, eta, short side, detection threshold, seed."""
    return copy.deepcopy(_read("defaults"))


def merge_configs(override: dict | None) -> dict[str, dict]:
    """Shipped configs with per-component overrides (a converter's metadata or a `<checkpoint>.config.json`)."""
    configs = load_configs()
    for name, values in (override or {}).items():
        if name not in configs:
            raise ValueError(f"unknown HumanSD component {name!r} in config override; known: {COMPONENTS}")
        configs[name].update({k: v for k, v in values.items() if not k.startswith("_")})
    return configs
