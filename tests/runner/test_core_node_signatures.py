"""The runner's copies of core nodes against `/object_info` recorded from real ComfyUI hosts (tests/data/object_info:
v0.33.0, the current release line, and v0.8.0). Inputs must be exactly the host's in every supported version; the
outputs are the current version's, and an older version's outputs must be a prefix of them (its links keep their
slots), so workflows saved in either host run headless unchanged."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from humangen.runner.core_nodes import NODE_CLASS_MAPPINGS as CORE
from humangen.runner.engine import Engine, registry
from humangen.runner.specs import spec_from_class, spec_from_object_info
from humangen.runner.workflow import ui_to_api

SNAPSHOT_DIR = Path(__file__).resolve().parents[1] / "data" / "object_info"
SNAPSHOTS = {json.loads(p.read_text())["comfyui_version"]: json.loads(p.read_text())["nodes"]
             for p in sorted(SNAPSHOT_DIR.glob("comfyui-v*.json"))}
CURRENT = "0.33.0"
CASES = [(version, node_id) for version in sorted(SNAPSHOTS) for node_id in sorted(CORE)]


def ours(node_id: str) -> dict:
    """The runner's node as the host's /object_info would describe it."""
    cls = CORE[node_id]
    inputs = json.loads(json.dumps(cls.INPUT_TYPES()))
    if node_id == "LoadImage":  # the file list depends on the input folder (emptied in the snapshots too)
        inputs["required"]["image"][0] = []
    returns = list(cls.RETURN_TYPES)
    return {"input": inputs, "input_order": {section: list(entries) for section, entries in inputs.items()},
            "output": returns, "output_name": list(getattr(cls, "RETURN_NAMES", None) or returns),
            "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", None) or [False] * len(returns)),
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}


def test_snapshots_of_the_supported_hosts_cover_every_mirrored_node():
    assert sorted(SNAPSHOTS) == ["0.33.0", "0.8.0"]
    for version, nodes in SNAPSHOTS.items():
        assert set(CORE) <= set(nodes), version


@pytest.mark.parametrize("version,node_id", CASES)
def test_inputs_match_the_host(version, node_id):
    mine, theirs = ours(node_id), SNAPSHOTS[version][node_id]
    assert mine["input"] == theirs["input"]
    assert mine["input_order"] == theirs["input_order"]
    assert mine["output_node"] == theirs["output_node"]


@pytest.mark.parametrize("version,node_id", CASES)
def test_outputs_are_the_current_hosts(version, node_id):
    mine, theirs = ours(node_id), SNAPSHOTS[version][node_id]
    keys = ("output", "output_name", "output_is_list")
    if version == CURRENT:
        assert {k: mine[k] for k in keys} == {k: theirs[k] for k in keys}
        assert spec_from_class(node_id, CORE[node_id]).outputs == spec_from_object_info(node_id, theirs).outputs
    else:
        for k in keys:
            assert mine[k][: len(theirs[k])] == theirs[k], k


def test_save_and_preview_pass_their_images_on(standalone_host, tmp_path):
    """A v0.33-style graph: LoadImage -> SaveImage -> (its IMAGE output) -> ImageScale -> PreviewImage."""
    (tmp_path / "input").mkdir()
    Image.fromarray(np.full((8, 6, 3), 200, np.uint8)).save(tmp_path / "input" / "grey.png")
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "grey.png"}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "kept"}},
              "3": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "nearest-exact",
                                                           "width": 3, "height": 4, "crop": "disabled"}},
              "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
    engine = Engine(registry())
    result = engine.run(prompt)
    assert result.executed == ["1", "2", "3", "4"]
    assert result.outputs["2"]["images"][0]["filename"] == "kept_00001_.png"
    (preview,) = result.outputs["4"]["images"]
    saved = np.asarray(Image.open(Path(standalone_host.temp_dir()) / preview["subfolder"] / preview["filename"]))
    assert saved.shape == (4, 3, 3) and (saved == 200).all()
    images = torch.rand(1, 4, 4, 3)
    out = CORE["PreviewImage"]().save_images(images)
    assert out["result"][0] is images


def test_a_ui_workflow_saved_in_the_current_host_converts():
    """The UI format of v0.33 lists SaveImage's `images` output and may link it."""
    specs = {node_id: spec_from_object_info(node_id, info) for node_id, info in SNAPSHOTS[CURRENT].items()}
    ui = {"nodes": [
        {"id": 1, "type": "LoadImage", "inputs": [], "widgets_values": ["grey.png", "image"],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}, {"name": "MASK", "type": "MASK", "links": []}]},
        {"id": 2, "type": "SaveImage", "widgets_values": ["kept"],
         "inputs": [{"name": "images", "type": "IMAGE", "link": 1}],
         "outputs": [{"name": "images", "type": "IMAGE", "links": [2]}]},
        {"id": 3, "type": "PreviewImage", "widgets_values": [],
         "inputs": [{"name": "images", "type": "IMAGE", "link": 2}],
         "outputs": [{"name": "images", "type": "IMAGE", "links": []}]}],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]]}
    api = ui_to_api(ui, specs)
    assert api["3"]["inputs"] == {"images": ["2", 0]}
    assert api["2"]["inputs"] == {"images": ["1", 0], "filename_prefix": "kept"}
