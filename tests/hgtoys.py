"""Toy node classes for the runner tests (no torch: numbers flow over a custom NUMBER socket)."""
from __future__ import annotations

import json

from hgtest import ROOT

WORKFLOWS = ROOT / "workflows"
ASSETS = WORKFLOWS / "assets"


class Calls:
    log: list[tuple[str, object]] = []


class ToyConst:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1, "min": -100, "max": 100, "tooltip": "a number"}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2**32, "control_after_generate": True,
                                              "tooltip": "seed"}),
                             "gain": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "tooltip": "x"}),
                             "mode": (["plain", "neg"], {"tooltip": "mode"})}}

    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, value, seed, gain, mode):
        Calls.log.append(("const", value))
        v = value * gain + seed
        return (-v if mode == "neg" else v,)


class ToyAdd:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("NUMBER",), "b": ("NUMBER",)},
                "optional": {"offset": ("FLOAT", {"default": 0.0, "forceInput": True})}}

    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, a, b, offset=0.0):
        Calls.log.append(("add", (a, b)))
        return (a + b + offset,)


class ToySink:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("NUMBER",), "label": ("STRING", {"default": "out", "tooltip": "label"})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, x, label, unique_id=None):
        Calls.log.append(("sink", x))
        return {"ui": {"numbers": [x], "who": [unique_id]}}


class ToyFail:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("NUMBER",)}}

    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, x):
        raise ValueError("boom: the toy failed")


class ToyInterrupt:
    """Simulates Ctrl-C arriving while it runs: sets the host's interrupt flag, then checks it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("NUMBER",)}}

    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, x):
        from humangen.utils import host
        Calls.log.append(("interrupt", x))
        host.get().interrupt_event.set()
        host.check_interrupt()
        return (x,)


class ToySlow:
    """A long node that checks for interruption at every progress step, as the pack's loops do (0.01 s a step)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("NUMBER",), "steps": ("INT", {"default": 10, "min": 1, "max": 100000,
                                                                 "tooltip": "steps"})}}

    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, x, steps):
        import time

        from humangen.utils import host
        bar = host.progress(steps)
        for i in range(steps):
            time.sleep(0.01)
            host.check_interrupt()
            bar.update(1)
        Calls.log.append(("slow", steps))
        return (x,)


class ToyList:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"n": ("INT", {"default": 3, "min": 1, "max": 10, "tooltip": "n"})}}

    RETURN_TYPES = ("NUMBER",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, n):
        return (list(range(n)),)


class ToySum:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"xs": ("NUMBER",)}}

    INPUT_IS_LIST = True
    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, xs):
        return (sum(xs),)


TOYS = {"ToyConst": ToyConst, "ToyAdd": ToyAdd, "ToySink": ToySink, "ToyFail": ToyFail,
        "ToyInterrupt": ToyInterrupt, "ToySlow": ToySlow, "ToyList": ToyList, "ToySum": ToySum}


def toy_prompt(a=2, b=3):
    """const(a) + const(b) -> sink; node ids 1, 2, 3, 4."""
    return {
        "1": {"class_type": "ToyConst", "inputs": {"value": a, "seed": 0, "gain": 1.0, "mode": "plain"}},
        "2": {"class_type": "ToyConst", "inputs": {"value": b, "seed": 0, "gain": 1.0, "mode": "plain"}},
        "3": {"class_type": "ToyAdd", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "ToySink", "inputs": {"x": ["3", 0], "label": "sum"}},
    }


