"""Runs the pose editor's JavaScript unit tests (tests/js/*.test.js) with Node's built-in test runner, so that
`pytest` covers them too. Skipped when Node.js is not installed."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from hgtest import ROOT

NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the JS unit tests need `node --test`, Node >= 20)")
def test_javascript_unit_tests_pass():
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "js").glob("*.test.js"))
    assert files, "no JavaScript tests found"
    proc = subprocess.run([NODE, "--test", *files], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    passed = int(re.search(r"^# pass (\d+)", out, re.M).group(1))
    assert passed >= 15, out[-3000:]
    assert re.search(r"^# fail 0$", out, re.M), out[-3000:]
