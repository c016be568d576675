"""Shared helpers: host adapter, image/tensor conversion, checkpoints, pose formats. Nothing here imports torch
at module import time except where a function needs it."""
