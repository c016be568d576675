"""The Parts2Whole example workflow: UI/API twins agree, and the API graph runs end to end with tiny stand-ins
placed under the names the workflow declares in needs_models (no runner needed: a minimal executor below)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import p2w_tiny
from hgtest import ROOT
from humangen import NODE_CLASS_MAPPINGS

NAME = "parts2whole_person"
CORE = {"LoadImage", "SaveImage", "PreviewImage", "ImageScale"}


def _load():
    ui = json.loads((ROOT / "workflows" / f"{NAME}.json").read_text())
    api = json.loads((ROOT / "workflows" / "api" / f"{NAME}.json").read_text())
    return ui, api


def _widget_names(cls):
    spec = cls.INPUT_TYPES()
    names = []
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            kind = entry[0]
            if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                names.append(name)
                if len(entry) > 1 and entry[1].get("control_after_generate"):
                    names.append(None)  # the UI stores the control mode right after the seed
    return names


def test_ui_and_api_twins_agree():
    ui, api = _load()
    assert {str(n["id"]) for n in ui["nodes"]} == set(api)
    for n in ui["nodes"]:
        assert n["type"] in NODE_CLASS_MAPPINGS or n["type"] in CORE, n["type"]
        a = api[str(n["id"])]
        assert a["class_type"] == n["type"]
        if n["type"] in NODE_CLASS_MAPPINGS:
            names = _widget_names(NODE_CLASS_MAPPINGS[n["type"]])
            assert len(names) == len(n["widgets_values"]), n["type"]
            for name, value in zip(names, n["widgets_values"]):
                if name is not None:
                    assert a["inputs"][name] == value, (n["type"], name)
        for inp in n.get("inputs", []):
            link = next(l for l in ui["links"] if l[0] == inp["link"])
            assert a["inputs"][inp["name"]] == [str(link[1]), link[2]]
    needs = ui["extra"]["humangen"]["needs_models"]
    assert needs == [{"folder": "parts2whole", "file": "Parts2Whole",
                      "url": "https://huggingface.co/huanngzh/Parts2Whole", "license": needs[0]["license"]}]
    assert api["5"]["inputs"]["model_name"] == "Parts2Whole"
    assert "OpenRAIL" in needs[0]["license"]


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
    need = ui["extra"]["humangen"]["needs_models"][0]
    src = p2w_tiny.shared(tmp_path_factory)
    shutil.copytree(src, tmp_path / "models" / need["folder"] / need["file"])
    (tmp_path / "input").mkdir()
    rng = np.random.default_rng(0)
    for name in ui["extra"]["humangen"]["needs_inputs"]:
        Image.fromarray(rng.integers(0, 255, (80, 56, 3), dtype=np.uint8)).save(tmp_path / "input" / name)
    saved = _execute(api, {"9": {"steps": 2, "width": 64, "height": 64}})
    assert len(saved) == 1 and saved[0].shape == (1, 64, 64, 3)
    assert torch.isfinite(saved[0]).all()
