"""One checked way to load a diffusers/transformers component from a local folder (HumanSD's diffusers folders,
every Parts2Whole component).

`from_pretrained` alone has three behaviours HumanGen cannot pass on to users: a weights file that lacks some of
the model's tensors loads anyway, with those tensors random (or left on the meta device, which fails later with
an unrelated message) and only a logged warning; a refused pickle is reported with advice to turn the safe loader
off; and a damaged file or config surfaces as whichever library error type was hit first. `load_pretrained`
turns each into one HumanGenError naming the folder and the fix.
"""
from __future__ import annotations

import os
import pickle
import re
from typing import Any, Callable, Iterable

from ..utils.checkpoints import check_weights
from ..utils.errors import HumanGenError, UnsafeCheckpointError, first_line
from ..utils.limits import read_json_file

# Released models ask for at most 48 layers of one kind and a handful of blocks; a config asking for 200000 makes
# the library build for minutes (on the meta device too) before any weight is compared.
MAX_CONFIG_COUNT = 128
MAX_CONFIG_LIST = 32
# Counts multiply (blocks x layers per block x transformer layers per layer): their product is bounded too. SD's
# UNet has 4 x 2 x 1, CLIP ViT-bigG 48 layers.
MAX_LAYER_BUDGET = 512
_COUNT_FIELD = re.compile(r"(layers|blocks|heads|depth)", re.IGNORECASE)
_LAYER_FIELD = re.compile(r"(layers|blocks|depth)", re.IGNORECASE)


def layer_budget(config: dict) -> int:
    """The product of a config's layer counts (top-level fields named like layers, blocks or depth; a list
    counts its largest item) and of its longest list (the number of blocks): how many layers it builds, roughly."""
    product = max([len(v) for v in config.values() if isinstance(v, list)] + [1])
    for key, value in config.items():
        values = value if isinstance(value, list) else [value]
        counts = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
        if counts and _LAYER_FIELD.search(str(key)):
            product *= max(1, max(counts))
    return product


def refused_pickle(exc: BaseException | None) -> bool:
    """True when torch.load(weights_only=True) refused a pickle somewhere in the exception chain (the libraries
    re-raise it as OSError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, pickle.UnpicklingError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def load_pretrained(cls, folder: str, *, fix: str, has_weights: bool = True,
                    unused: Callable[[Any], Iterable[str]] = lambda model: (), **kwargs) -> Any:
    """`cls.from_pretrained(folder, local_files_only=True, **kwargs)`, with every failure a HumanGenError that
    starts with `folder` and ends with `fix`. With `has_weights` (models, not tokenizers or processors) a weights
    file lacking any tensor of the model is refused, except keys under the prefixes `unused(model)` returns."""
    from ..utils.host import is_oom
    if has_weights:
        _check_config_sizes(folder, fix)
        kwargs["output_loading_info"] = True
    try:
        loaded = cls.from_pretrained(folder, local_files_only=True, **kwargs)
    except HumanGenError:
        raise
    except Exception as exc:  # noqa: BLE001 - diffusers/transformers/huggingface_hub raise many types
        if refused_pickle(exc):  # never pass on the library's text: it advises turning the safety off
            raise UnsafeCheckpointError(
                f"{folder}: refused to unpickle the weights: they need code execution to load, which HumanGen never "
                f"does. Fix: use the safetensors files of the original repository.") from exc
        if is_oom(exc):
            raise
        raise HumanGenError(f"{folder}: could not be loaded ({type(exc).__name__}: {first_line(exc)}); the files "
                            f"are damaged or of another model. Fix: {fix}") from exc
    if not has_weights:
        return loaded
    model, info = loaded
    allowed = tuple(unused(model))
    missing = sorted(key for key in info.get("missing_keys", ()) if not key.startswith(allowed))
    if missing:
        listed = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
        raise HumanGenError(f"{folder}: the weights file lacks {len(missing)} of the model's tensors ({listed}), "
                            f"which would be left random. Fix: {fix}")
    check_weights(((k, p) for k, p in model.named_parameters() if not k.startswith(allowed)), folder)
    return model


def _check_config_sizes(folder: str, fix: str) -> None:
    """Refuse a model's config.json that asks for more layers, blocks or heads than MAX_CONFIG_COUNT, or holds a
    list longer than MAX_CONFIG_LIST, before the library builds anything from it."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return  # the library says which file is missing
    try:
        config = read_json_file(path, f"{folder}: config.json")
    except ValueError as exc:
        raise HumanGenError(f"{exc}. Fix: {fix}") from None

    def check(key: str, value, depth: int = 0) -> None:
        if isinstance(value, dict) and depth < 4:
            for inner_key, inner in value.items():
                check(str(inner_key), inner, depth + 1)
        elif isinstance(value, list):
            if len(value) > MAX_CONFIG_LIST:
                raise HumanGenError(f"{folder}: config.json: {key[:40]} lists {len(value)} items, more than a model "
                                    f"has (at most {MAX_CONFIG_LIST}). Fix: {fix}")
            for item in value:
                check(key, item, depth + 1)
        elif isinstance(value, int) and not isinstance(value, bool) and _COUNT_FIELD.search(key) \
                and not 0 <= value <= MAX_CONFIG_COUNT:
            raise HumanGenError(f"{folder}: config.json: {key[:40]} = {value} is not a count of layers a model has "
                                f"(0 to {MAX_CONFIG_COUNT}). Fix: {fix}")

    check("config", config)
    if isinstance(config, dict) and layer_budget(config) > MAX_LAYER_BUDGET:
        raise HumanGenError(f"{folder}: config.json: its layer counts multiply to {layer_budget(config)} layers, "
                            f"more than a model has (at most {MAX_LAYER_BUDGET}). Fix: {fix}")
