"""Model files: one table (utils/model_files.py) feeds the frontend's missing-models panel (the UI workflows'
`models` lists), the runner's check and the nodes' messages; every shipped workflow is satisfiable by the
documented folder layouts; every message names the file, its folder, a direct link and what else is missing."""
from __future__ import annotations

import json
import re
from urllib.parse import urlparse

import pytest

from hgtest import ROOT
from humangen.runner.cli import main
from humangen.utils import host, model_files

WORKFLOWS = ROOT / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))


def _prompt(path):
    from humangen.runner.engine import Engine
    from humangen.runner.workflow import load_workflow
    return load_workflow(str(path), Engine().specs()).prompt


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_workflow_models_are_where_the_frontend_reads_them(path):
    data = json.loads(path.read_text())
    assert "needs_models" not in ((data.get("extra") or {}).get("humangen") or {}), "old place, ignored by ComfyUI"
    models = data.get("models", [])
    # ComfyUI_frontend's zModelFile: {name, url (a URL), directory, hash?, hash_type?}
    for m in models:
        assert set(m) == {"name", "url", "directory"}, m
        assert isinstance(m["name"], str) and m["name"] and isinstance(m["directory"], str) and m["directory"]
        assert urlparse(m["url"]).scheme == "https" and urlparse(m["url"]).netloc, m["url"]
    assert models == model_files.frontend_models(_prompt(path)), f"run: python . models --write {path.name}"


def test_every_known_file_has_a_direct_link_or_says_why_not():
    front_page = re.compile(r"^https://(github\.com|huggingface\.co)/[^/]+/[^/]+/?(#.*)?$")
    for f in model_files.KNOWN_FILES:
        assert f.url.startswith("https://") and f.license, f
        assert not front_page.match(f.url), f"{f.name}: {f.url} is a repository front page"
        if f.direct:
            url = urlparse(f.url)
            drive = url.netloc == "drive.google.com" and url.path == "/uc" and "id=" in url.query
            assert drive or url.path.endswith("/" + f.name), f"{f.name}: {f.url} is not a link to the file"
        else:
            assert len(f.how) > 20, f"{f.name}: an indirect link must say what to do ({f.how!r})"


def test_the_tables_match_the_code_that_loads_the_files():
    from humangen.models import insetgan, lpips
    assert model_files.INSETGAN_AUTO_LPIPS == {k: s.lpips_net for k, s in insetgan.SCHEDULES.items()}
    assert model_files.LPIPS_FILES == {net: spec.file_name for net, spec in lpips.BACKBONES.items()}
    for f in model_files.KNOWN_FILES:
        assert f.folder in host.MODEL_FOLDERS, f


@pytest.mark.parametrize("layout", ["as named", "documented alternative"])
@pytest.mark.parametrize("path", [p for p in UI_FILES if json.loads(p.read_text()).get("models")],
                         ids=lambda p: p.name)
def test_each_workflow_is_satisfied_by_the_documented_layout(path, layout, tmp_path, capsys):
    """Put every needed file where the docs say (as named, or in its documented alternative place) and the
    runner's model check and node validation (COMBO values included) pass."""
    models = tmp_path / "models"
    prompt = _prompt(path)
    for need in model_files.needed_files(prompt):
        place = need.places[-1] if layout == "documented alternative" else need.name
        target = models / need.folder / place
        target.parent.mkdir(parents=True, exist_ok=True)
        if need.folder in ("parts2whole", "segformer"):
            target.mkdir()
        else:
            target.write_bytes(b"stand-in")
    code = main(["run", str(path), "--dry-run", "--quiet", "--models-dir", str(models),
                 "--input-dir", str(WORKFLOWS / "assets"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "model file(s) missing" not in err, err
    assert code == 0 or "LoadImage" in err, err  # inputs that do not ship (your photos) are a separate matter


def test_a_node_names_the_file_the_folder_the_link_and_what_else_is_missing(standalone_host):
    from humangen.nodes.stylegan import HumanGenStyleGANLoader
    prompt = _prompt(WORKFLOWS / "insetgan_face_fix.json")
    with pytest.raises(Exception) as info:
        HumanGenStyleGANLoader().load("stylegan_human_v2_1024.pkl", prompt=prompt)
    msg = str(info.value)
    folder = host.model_dirs("stylegan")[0]
    assert msg.startswith("HumanGenStyleGANLoader: input 'model_name': model file 'stylegan_human_v2_1024.pkl' "
                          f"was not found. Fix: 'stylegan_human_v2_1024.pkl' -> put it in the 'stylegan' model "
                          f"folder ({folder}); download: https://drive.google.com/uc?export=download&id="
                          "1FlAb1rYa0r_--Zj_ML8e6shmaF28hQb5;"), msg
    also = msg[msg.index("This workflow also still needs:"):]
    for name in ("'ffhq.pkl'", "'RealESRGAN_x4plus.pth'", "'alexnet-owt-7be5be79.pth'"):
        assert name in also
    assert "'stylegan_human_v2_1024.pkl'" not in also
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in also


def test_lpips_users_check_their_backbone_first(standalone_host):
    from humangen.nodes.editing import _lpips
    with pytest.raises(Exception, match=r"HumanGenPTI: input 'lpips_net': model file 'alexnet-owt-7be5be79.pth' "
                                        r"was not found\. Fix: .*download: https://download\.pytorch\.org/models/"
                                        r"alexnet-owt-7be5be79\.pth"):
        _lpips("HumanGenPTI", "alex")


def test_model_combos_never_list_absent_files(standalone_host):
    from humangen.nodes import humansd
    for cls in (humansd.HumanGenHumanSDLoader, humansd.HumanGenHumanSDConvert):
        choices = cls.INPUT_TYPES()["required"]["ckpt_name"][0]
        assert choices == ["(no files in models/humansd)"], choices
    with pytest.raises(Exception, match=r"the 'humansd' model folder has no usable file\. Fix: for example "
                                        r"'humansd-v1\.ckpt' -> put it in the 'humansd' model folder .*"
                                        r"drive\.google\.com/drive/folders/"):
        humansd.HumanGenHumanSDLoader().load("(no files in models/humansd)")


def test_direction_files_have_one_name_in_both_layouts(standalone_host):
    from humangen.nodes.editing import HumanGenLoadDirections
    folder = host.model_dirs("stylegan_directions")[0]
    import os
    os.makedirs(os.path.join(folder, "latent_direction", "sefa"))
    with open(os.path.join(folder, "latent_direction", "sefa", "upper_length.pt"), "wb") as f:
        f.write(b"x")
    assert HumanGenLoadDirections.INPUT_TYPES()["required"]["file"][0] == ["sefa/upper_length.pt"]
    assert host.model_path("stylegan_directions", "sefa/upper_length.pt",
                           alternatives=("latent_direction/sefa/upper_length.pt",)).endswith(
        os.path.join("latent_direction", "sefa", "upper_length.pt"))
