"""bench/run_all.py's choice of rows: what one `--quick` or full run times, and what it skips on this device."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from hgtest import ROOT


@pytest.fixture(scope="module")
def run_all():
    sys.path.insert(0, str(ROOT / "bench"))  # run_all imports its neighbour `_pack`, as when run as a script
    try:
        spec = importlib.util.spec_from_file_location("humangen_bench_run_all", ROOT / "bench" / "run_all.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("humangen_bench_run_all", None)
        sys.path.remove(str(ROOT / "bench"))


def test_emulated_bf16_rows_are_skipped_unless_named(run_all):
    bf16_rows = [n for n, wl in run_all.WORKLOADS.items() if "bf16" in wl.sides]
    assert {"projection-bf16", "pti-bf16", "insetgan256-bf16"} <= set(bf16_rows)
    names, skipped = run_all.select_workloads([], quick=True, bf16_native=True)
    assert not skipped and "pti-bf16" in names and "insetgan256" in names and "insetgan512" not in names
    names, skipped = run_all.select_workloads([], quick=True, bf16_native=False)
    assert skipped == [n for n in bf16_rows if not n.startswith("insetgan512")]
    assert "pti" in names and not set(names) & set(skipped)
    assert run_all.select_workloads(["pti-bf16", "sg3r"], quick=True, bf16_native=False) == (["pti-bf16", "sg3r"], [])


def test_full_run_reports_insetgan_at_512(run_all):
    names, skipped = run_all.select_workloads([], quick=False, bf16_native=False)
    assert "insetgan512" in names and "insetgan256" not in names and skipped[-1] == "insetgan512-bf16"
