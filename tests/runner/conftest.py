"""Fixtures for the runner tests."""
from __future__ import annotations

import json

import pytest

from hgtoys import TOYS, Calls


@pytest.fixture
def toys():
    Calls.log.clear()
    return dict(TOYS)


@pytest.fixture
def engine(toys):
    from humangen.runner.engine import Engine, registry
    return Engine(registry(toys))


@pytest.fixture
def write_json(tmp_path):
    def write(data, name="wf.json"):
        path = tmp_path / name
        path.write_text(json.dumps(data))
        return str(path)
    return write
