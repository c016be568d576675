"""Upscaling: spandrel model loading (safe), a feathered tiler with OOM back-off, and face refinement."""
from .loading import build_registry, canonicalize, describe, load_descriptor, load_state_dict
from .tiled import TilePlan, axis_weights, is_oom, tile_spans, tiled_apply, with_tile_backoff
from .upscaler import MASK_MODES, PRECISIONS, RESAMPLE, UpscaleResult, pick_dtype, resize, upscale

__all__ = [
    "build_registry", "canonicalize", "describe", "load_descriptor", "load_state_dict", "TilePlan", "axis_weights",
    "is_oom", "tile_spans", "tiled_apply", "with_tile_backoff", "MASK_MODES", "PRECISIONS", "RESAMPLE",
    "UpscaleResult", "pick_dtype", "resize", "upscale",
]
