"""The editing and InsetGAN example workflows run through the headless runner with tiny stand-in models saved under
the file names the workflows declare (official-format pickles, shipped-layout direction files)."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from hgtest import ROOT
from humangen.models.editing import style_layers
from humangen.models.lpips import LPIPS
from humangen.runner.cli import main
from sg_helpers import TINY_SG2_RECT, official_pickle_bytes, tiny_generator

TINY_32 = dict(TINY_SG2_RECT, img_resolution=32)
ASSETS = ROOT / "workflows" / "assets"


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("HUMANGEN_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "models"
    G = tiny_generator(TINY_32)
    (root / "stylegan").mkdir(parents=True)
    (root / "stylegan" / "stylegan_human_v2_1024.pkl").write_bytes(official_pickle_bytes(G, ""))
    sefa = root / "stylegan_directions" / "sefa"
    sefa.mkdir(parents=True)
    for name in ("upper_length", "bottom_length"):
        torch.save(torch.randn(1, G.w_dim), sefa / f"{name}.pt")
    ss = root / "stylegan_directions" / "latent_direction" / "ss" / "upper_length"
    ss.mkdir(parents=True)
    for i, layer in enumerate(style_layers(G)):
        with open(ss / f"style_vect_mean_{i}.pkl", "wb") as f:
            pickle.dump(np.random.RandomState(i).randn(layer.channels).astype(np.float32), f)
    statis = root / "stylegan_directions" / "latent_direction" / "ss_statics" / "upper_length_statis" / "5"
    statis.mkdir(parents=True)
    (statis / "statis.csv").write_text("channel,strength\n0,0.01\n1,0.0001\n")
    (root / "lpips").mkdir()
    torch.manual_seed(0)  # test-local random LPIPS backbone
    torch.save(LPIPS("vgg").net.state_dict(), root / "lpips" / "vgg16-397923af.pth")
    torch.save(LPIPS("alex").net.state_dict(), root / "lpips" / "alexnet-owt-7be5be79.pth")
    return root


def _run(name, models, tmp_path, *extra):
    out = tmp_path / "out"
    rc = main(["run", str(ROOT / "workflows" / f"{name}.json"), "--models-dir", str(models), "--input-dir",
               str(ASSETS), "--out", str(out), "--quiet", *extra])
    return rc, sorted(p.name for p in out.rglob("*.png")) if out.exists() else []


def test_sefa_sweep_workflow(models, tmp_path):
    rc, files = _run("editing_sefa_sweep", models, tmp_path)
    assert rc == 0 and files == ["sefa_sweep_00001_.png"]


def test_garment_length_workflow(models, tmp_path):
    rc, files = _run("editing_garment_length", models, tmp_path)
    assert rc == 0
    assert files == ["garment_original_00001_.png", "garment_sefa_00001_.png", "garment_stylespace_00001_.png"]


def test_invert_then_edit_workflow(models, tmp_path):
    rc, files = _run("editing_invert_then_edit", models, tmp_path, "--set", "4.steps=3", "--set", "5.steps=2",
                     "--set", "5.lpips_net=vgg")
    assert rc == 0 and files == ["inverted_00001_.png", "inverted_edited_00001_.png"]


def test_insetgan_workflow_declares_its_models(tmp_path):
    ui = json.loads((ROOT / "workflows" / "insetgan_face_fix.json").read_text())
    files = {(m["directory"], m["name"]) for m in ui["models"]}
    assert files == {("stylegan", "stylegan_human_v2_1024.pkl"), ("stylegan", "ffhq.pkl"),
                     ("lpips", "alexnet-owt-7be5be79.pth"), ("upscale_models", "RealESRGAN_x4plus.pth")}
    rc = main(["run", str(ROOT / "workflows" / "insetgan_face_fix.json"), "--models-dir", str(tmp_path),
               "--dry-run", "--quiet"])
    assert rc == 2  # the model files are missing: nothing runs, exit status 2
