"""The golden fixtures live in the repository, unchanged since they were produced, and every one is documented."""
from __future__ import annotations

import hashlib
import re

import hgtest
from hgtest import FIXTURES, ROOT


def _recorded_hashes() -> dict[str, str]:
    text = (FIXTURES / "README.md").read_text(encoding="utf-8")
    return {name: digest for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, re.M)}


def test_fixtures_are_inside_the_checkout():
    assert FIXTURES.resolve().is_relative_to(ROOT.resolve())
    assert not any(p.is_symlink() for p in FIXTURES.rglob("*"))


def test_every_fixture_file_is_recorded_with_its_hash():
    recorded = _recorded_hashes()
    stored = sorted(p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*")
                    if p.is_file() and p.name != "README.md")
    assert stored == sorted(recorded)
    assert len(stored) == 15  # 4 StyleGAN configs + 1 AnyRes config, 3 files each
    for name in stored:
        assert hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest() == recorded[name], name


def test_helpers_do_not_point_outside_the_checkout():
    for path in (ROOT / "tests").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in (r"ROOT\.parent\b", r"\.parents\[[2-9]\]", r"[\"']\.\./shared", r"/ *[\"']shared[\"']"):
            assert not re.search(pattern, text), f"{path.relative_to(ROOT)} reads outside the checkout ({pattern})"
    assert not hasattr(hgtest, "SHARED")
