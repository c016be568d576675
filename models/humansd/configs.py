"""HumanSD's component configs, shipped as JSON data next to this file (`configs/*.json`).

They are ours on purpose: diffusers' single-file auto-detection types an 8-channel SD2 checkpoint as plain "v2" and
pulls the 768-px v-prediction SD 2.1 config from the hub. `load_configs()` returns plain dicts; keys starting with
'_' are comments.
"""
from __future__ import annotations

import copy
import json
import math
import os
from functools import lru_cache

from ...utils.errors import UnsupportedCheckpointError
from ..pretrained import MAX_LAYER_BUDGET, layer_budget

MAX_CONFIG_LIST = 8  # blocks per network (SD 2.1 has 4)
MIN_COUNT_LIMIT = 16  # a whole number may be up to max(4 x HumanGen's value, this)
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


def check_override(override, where: str, *, diffusers_folder: bool = False) -> None:
    """Refuse a config override (a `<checkpoint>.config.json` or the metadata HumanSD Convert wrote) that could
    not describe a HumanSD network of sane size, before anything is built from it: it may only change fields that
    HumanGen's own configs have, each to a value of the same JSON type (a list: at most MAX_CONFIG_LIST items of
    the same type), numbers finite and not negative, whole numbers at most max(4 x HumanGen's value,
    MIN_COUNT_LIMIT). A count of 200000 layers would otherwise take minutes to build even on the meta device.
    For the config.json files of a diffusers folder (`{component: config}`), which carry many more fields and may
    write some differently, only the sizes of the fields HumanGen's configs have are checked."""
    def refuse(problem: str):
        raise UnsupportedCheckpointError(f"{where}: {problem}. Fix: delete or repair this config (the JSON files in "
                                         f"HumanGen's own models/humansd/configs folder list every field).")

    if not isinstance(override, dict):
        refuse(f"must hold a JSON object of configs, not {type(override).__name__}")
    shipped = load_configs()
    for component, values in override.items():
        if component not in shipped:
            refuse(f"unknown component {str(component)[:40]!r} (known: {', '.join(COMPONENTS)})")
        if not isinstance(values, dict):
            refuse(f"'{component}' must be a JSON object of fields, not {type(values).__name__}")
        for key, value in values.items():
            if str(key).startswith("_"):
                continue
            if key not in shipped[component]:
                if diffusers_folder:
                    continue
                refuse(f"{component}.{str(key)[:40]} is not a field of HumanSD's {component} config")
            problem = _value_problem(value, shipped[component][key], sizes_only=diffusers_folder)
            if problem:
                refuse(f"{component}.{key} {problem}")
        merged = dict(shipped[component], **values)
        if layer_budget(merged) > MAX_LAYER_BUDGET:
            refuse(f"the {component}'s layer counts multiply to {layer_budget(merged)} layers, more than HumanGen "
                   f"allows ({MAX_LAYER_BUDGET})")


def _value_problem(value, like, sizes_only: bool = False) -> str | None:
    """Why `value` cannot replace HumanGen's `like` (see check_override), or None. `sizes_only` (a diffusers
    folder's config, which may spell a field differently: diffusers checks that itself) reports only the sizes
    where HumanGen has whole numbers: a number over its limit, or not a list of 1 to MAX_CONFIG_LIST items."""
    if sizes_only and not (_is_whole(like) or isinstance(like, list) and _is_whole(like[0])):
        return None
    if isinstance(like, list):
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_CONFIG_LIST:
            return f"must be a list of 1 to {MAX_CONFIG_LIST} items like {like}"
        problems = [_value_problem(item, like[0] if not isinstance(like[0], int) else max(like), sizes_only)
                    for item in value]
        return next((f"item {p}" for p in problems if p), None)
    if isinstance(like, bool) or isinstance(like, str):
        return None if type(value) is type(like) else f"must be {type(like).__name__} like {like!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None if sizes_only else f"must be a number like {like!r}"
    if isinstance(like, int) and not isinstance(value, int):
        return None if sizes_only else f"must be a whole number like {like}"
    if not math.isfinite(value) or value < 0:
        return None if sizes_only else f"must be a finite number of at least 0, not {value!r}"
    limit = max(4 * like, MIN_COUNT_LIMIT) if isinstance(like, int) else None
    if limit is not None and value > limit:
        return f"{value} is more than HumanGen allows ({limit})"
    return None


def _is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
