"""Cheap test nodes for keyed and Ray runs: a "model" whose loading appends one line to a file (so tests count the
loads, with the loading process id and its CUDA_VISIBLE_DEVICES), and a render node that makes a small image and
can kill its own process. Standard library only at import: Ray workers unpickle these classes before they load the
pack."""
from __future__ import annotations

import os
import signal
import time


class CountedModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count_file": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("TOY_MODEL",)
    FUNCTION = "load"
    CATEGORY = "test"

    def load(self, count_file):
        line = f"{os.getpid()} {os.environ.get('CUDA_VISIBLE_DEVICES', '-')}\n"
        fd = os.open(count_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        return ({"pid": os.getpid()},)


# The driver counts an attempt once the worker's begin() call has answered; a kill within milliseconds of that answer
# can lose it in flight (the attempt is then not counted, by design). The tests check the count, so the toy dies a
# moment later, as a job that crashes while it works would.
KILL_DELAY_S = 0.3


class ToyRender:
    """An 8x8 image whose colour is the seed. `kill_seed`: at that seed the node SIGKILLs its own process, every
    time, or only while `kill_once_file` does not exist yet (it is created first). `interrupt_seed`: at that seed
    the node raises HumanGenInterrupted, which the runner's engine passes through rather than reporting as the
    node's failure (an error outside any node, for the Ray driver)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("TOY_MODEL",),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 1 << 30}),
                             "sleep": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 60.0}),
                             "kill_seed": ("INT", {"default": -1, "min": -1, "max": 1 << 30}),
                             "kill_once_file": ("STRING", {"default": ""}),
                             "interrupt_seed": ("INT", {"default": -1, "min": -1, "max": 1 << 30})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "render"
    CATEGORY = "test"

    def render(self, model, seed, sleep, kill_seed, kill_once_file, interrupt_seed=-1):
        import torch
        if seed == interrupt_seed:
            import sys
            raise sys.modules["humangen.utils.errors"].HumanGenInterrupted("processing interrupted")
        if seed == kill_seed:
            if not kill_once_file:
                time.sleep(KILL_DELAY_S)
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                os.close(os.open(kill_once_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                time.sleep(KILL_DELAY_S)
                os.kill(os.getpid(), signal.SIGKILL)
            except FileExistsError:
                pass
        time.sleep(sleep)
        value = (seed % 251) / 255.0
        return (torch.full((1, 8, 8, 3), value),)


RAY_TOYS = {"CountedModel": CountedModel, "ToyRender": ToyRender}


def ray_toy_prompt(count_file: str, *, sleep: float = 0.0, kill_seed: int = -1, kill_once_file: str = "",
                   interrupt_seed: int = -1) -> dict:
    return {
        "1": {"class_type": "CountedModel", "inputs": {"count_file": count_file}},
        "2": {"class_type": "ToyRender", "inputs": {"model": ["1", 0], "seed": 0, "sleep": sleep,
                                                    "kill_seed": kill_seed, "kill_once_file": kill_once_file,
                                                    "interrupt_seed": interrupt_seed}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "toy"}},
    }


def _main() -> int:
    """`python tests/hgraynode.py ARGS...`: the runner's command line with these nodes (the tests' driver process)."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if "humangen" not in sys.modules:
        spec = importlib.util.spec_from_file_location("humangen", root / "__init__.py",
                                                      submodule_search_locations=[str(root)])
        pack = importlib.util.module_from_spec(spec)
        sys.modules["humangen"] = pack
        spec.loader.exec_module(pack)
    from hgraynode import RAY_TOYS as toys  # by its module name, so that workers import it rather than unpickle it
    from humangen.runner.cli import main
    return main(sys.argv[1:], extra_nodes=toys)


if __name__ == "__main__":
    raise SystemExit(_main())
