"""The Parts2Whole example workflow: UI/API twins agree, and the API graph runs end to end with tiny stand-ins
placed under the names the workflow declares in its `models` list (no runner needed: a minimal executor below)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import torch
from PIL import Image

import p2w_tiny
from hgtest import ROOT
from humangen import NODE_CLASS_MAPPINGS

NAME = "parts2whole_person"


def _load():
    ui = json.loads((ROOT / "workflows" / f"{NAME}.json").read_text())
    api = json.loads((ROOT / "workflows" / "api" / f"{NAME}.json").read_text())
    return ui, api


def _load_image(name):
    from humangen.utils import host
    img = Image.open(f"{host.input_dir()}/{name}")
    rgb = torch.from_numpy(np.asarray(img.convert("RGB")).astype(np.float32) / 255.0)[None]
    if "A" in img.getbands():
        mask = 1.0 - torch.from_numpy(np.asarray(img.getchannel("A")).astype(np.float32) / 255.0)[None]
    else:
        mask = torch.zeros(1, 64, 64)
    return rgb, mask


def _execute(api, overrides):
    """Run an API graph in dependency order: our nodes through NODE_CLASS_MAPPINGS, core nodes stubbed."""
    outputs, saved = {}, []

    def run(nid):
        if nid in outputs:
            return outputs[nid]
        spec = api[nid]
        kwargs = {}
        for k, v in dict(spec["inputs"], **overrides.get(nid, {})).items():
            kwargs[k] = run(v[0])[v[1]] if isinstance(v, list) else v
        if spec["class_type"] == "LoadImage":
            outputs[nid] = _load_image(kwargs["image"])
        elif spec["class_type"] == "SaveImage":
            saved.append(kwargs["images"])
            outputs[nid] = ()
        else:
            cls = NODE_CLASS_MAPPINGS[spec["class_type"]]
            outputs[nid] = getattr(cls(), cls.FUNCTION)(**kwargs)
        return outputs[nid]

    for nid in api:
        run(nid)
    return saved


def test_api_workflow_runs_with_tiny_stand_in(standalone_host, tmp_path_factory, tmp_path):
    _, api = _load()
    ui, _ = _load()
    need = ui["models"][0]
    src = p2w_tiny.shared(tmp_path_factory)
    shutil.copytree(src, tmp_path / "models" / need["directory"] / need["name"])
    (tmp_path / "input").mkdir()
    rng = np.random.default_rng(0)
    for name in ui["extra"]["humangen"]["needs_inputs"]:
        Image.fromarray(rng.integers(0, 255, (80, 56, 3), dtype=np.uint8)).save(tmp_path / "input" / name)
    saved = _execute(api, {"9": {"steps": 2, "width": 64, "height": 64}})
    assert len(saved) == 1 and saved[0].shape == (1, 64, 64, 3)
    assert torch.isfinite(saved[0]).all()
