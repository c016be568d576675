"""The GAN nodes (StyleGAN, editing, InsetGAN, UnitedHuman) inside a real ComfyUI server. Skipped unless
COMFYUI_PATH points at a ComfyUI checkout (COMFYUI_PYTHON: the host interpreter; COMFYUI_EXTRA_SITE: site-packages
appended to its sys.path). Tiny stand-in models in the real formats go under the names the workflows declare.

Checks: /object_info lists the nodes and the model COMBOs list the stand-ins; every stylegan_/editing_/insetgan_/
unitedhuman_ API workflow finishes via POST /prompt (sizes and steps scaled down; InsetGAN takes the face box from
keypoints, MTCNN finds no face in random images); projection and InsetGAN report progress over the websocket and
stop on POST /interrupt (ComfyUI runs nodes under torch.inference_mode()); a latent PNG saved to the output folder
and uploaded to the input folder renders the same image again, also after another PNG replaced it under that name.
"""
from __future__ import annotations

import json
import pickle
import shutil
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from comfy_server import COMFYUI as COMFY, comfyui_server  # noqa: E402
from hgtest import COMFYUI_SKIP_REASON
pytestmark = [pytest.mark.comfyui, pytest.mark.slow,
              pytest.mark.skipif(not COMFY, reason=COMFYUI_SKIP_REASON)]

SMALL = {  # per workflow: node id -> inputs to override so that it finishes in seconds on the stand-ins
    "editing_invert_then_edit": {"4": {"steps": 3}, "5": {"steps": 2}},
    "insetgan_face_fix": {"2": {"mean_samples": 100}, "4": {"mean_samples": 100}, "7": {"tile_size": 64},
                          "5": {"steps_scale": 0.01, "face_box_source": "keypoints", "pose": ["90", 0]}},
    "unitedhuman_2048_face_closeup": {"3": {"canvas_size": 64, "mean_samples": 100},
                                      "4": {"output_size": 32, "mean_samples": 100}},
}
POSE_NODE = {"class_type": "HumanGenLoadPose", "inputs": {"path": "body_pose.json", "canvas_width": 0,
                                                          "canvas_height": 0}}


def _stand_ins(base):
    from hgtest import ROOT
    from sg_helpers import TINY_SG2, TINY_SG2_RECT, official_pickle_bytes, tiny_generator
    from test_continuous_nodes import TINY_ANYRES
    import hg_upscale
    from humangen.models.editing import style_layers
    from humangen.models.lpips import LPIPS
    models = base / "models"
    for kind in ("stylegan", "unitedhuman", "lpips", "upscale_models"):
        (models / kind).mkdir(parents=True)
    body = tiny_generator(dict(TINY_SG2_RECT, img_resolution=64), 1)  # 64x32 full body
    (models / "stylegan" / "stylegan_human_v2_1024.pkl").write_bytes(official_pickle_bytes(body, ""))
    face = tiny_generator(dict(TINY_SG2, img_resolution=32), 2)
    (models / "stylegan" / "ffhq.pkl").write_bytes(official_pickle_bytes(face, ""))
    (models / "unitedhuman" / "network-snapshot-v1.pkl").write_bytes(
        official_pickle_bytes(tiny_generator(TINY_ANYRES), ""))
    d = models / "stylegan_directions"
    (d / "sefa").mkdir(parents=True)
    for name in ("upper_length", "bottom_length"):
        torch.save(torch.randn(1, body.w_dim), d / "sefa" / f"{name}.pt")
    ss = d / "latent_direction" / "ss" / "upper_length"
    ss.mkdir(parents=True)
    for i, layer in enumerate(style_layers(body)):
        with open(ss / f"style_vect_mean_{i}.pkl", "wb") as f:
            pickle.dump(np.random.RandomState(i).randn(layer.channels).astype(np.float32), f)
    statis = d / "latent_direction" / "ss_statics" / "upper_length_statis" / "5"
    statis.mkdir(parents=True)
    (statis / "statis.csv").write_text("channel,strength\n0,0.01\n1,0.0001\n")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(LPIPS("vgg").net.state_dict(), models / "lpips" / "vgg16-397923af.pth")
        torch.save(LPIPS("alex").net.state_dict(), models / "lpips" / "alexnet-owt-7be5be79.pth")
    torch.save(hg_upscale.realesrgan_checkpoint(hg_upscale.rrdbnet_state_dict()),
               models / "upscale_models" / "RealESRGAN_x4plus.pth")
    (base / "input").mkdir()
    shutil.copy(ROOT / "workflows" / "assets" / "astronaut.png", base / "input")
    kps = [0.0] * 51
    for i, (x, y) in enumerate([(16, 10), (14, 8), (18, 8), (12, 9), (20, 9)]):  # nose, eyes, ears
        kps[3 * i:3 * i + 3] = [x, y, 0.9]
    (base / "input" / "body_pose.json").write_text(json.dumps(
        [{"people": [{"pose_keypoints_2d": kps}], "canvas_width": 32, "canvas_height": 64}]))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("gan-comfy")
    _stand_ins(base)
    with comfyui_server(base, extra_env={"HUMANGEN_CACHE_DIR": str(base / "cache")}) as url:
        yield url, base


def _get(url):
    return json.loads(urllib.request.urlopen(url, timeout=60).read())


def _queue(url, prompt, client_id="humangen-test"):
    req = urllib.request.Request(url + "/prompt", data=json.dumps({"prompt": prompt, "client_id": client_id}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        return json.loads(urllib.request.urlopen(req, timeout=60).read())["prompt_id"]
    except urllib.error.HTTPError as exc:
        pytest.fail(exc.read().decode()[:3000])


def _run(url, prompt, timeout=300):
    pid = _queue(url, prompt)
    deadline = time.monotonic() + timeout
    while True:
        hist = _get(f"{url}/history/{pid}")
        if hist.get(pid, {}).get("status", {}).get("completed") is not None:
            return hist[pid]
        assert time.monotonic() < deadline, "the prompt did not finish"
        time.sleep(0.3)


def _errors(entry):
    return [m[1].get("exception_message") for m in entry["status"]["messages"] if m[0] == "execution_error"]


def _api(name):
    from hgtest import ROOT
    api = json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text())
    for nid, inputs in SMALL.get(name, {}).items():
        api[nid]["inputs"].update(inputs)
    if name == "insetgan_face_fix":
        api["90"] = POSE_NODE
    return api


def test_object_info_lists_the_gan_nodes_and_stand_ins(server):
    from humangen.nodes import continuous, editing, insetgan, stylegan
    url, base = server
    info = _get(url + "/object_info")
    ids = [i for m in (stylegan, editing, insetgan, continuous) for i in m.NODE_CLASS_MAPPINGS]
    assert [i for i in ids if i not in info] == []
    assert "humangen" not in "".join(l for l in (base / "comfyui.log").read_text().splitlines()
                                     if "IMPORT FAILED" in l)
    req = lambda node, name: info[node]["input"]["required"][name][0]  # noqa: E731
    assert req("HumanGenStyleGANLoader", "model_name") == ["ffhq.pkl", "stylegan_human_v2_1024.pkl"]
    assert req("HumanGenUnitedHumanLoader", "model_name") == ["network-snapshot-v1.pkl"]
    assert req("HumanGenLoadDirections", "file") == ["sefa/bottom_length.pt", "sefa/upper_length.pt"]
    assert req("HumanGenStyleSpaceEdit", "attribute") == ["upper_length"]


@pytest.mark.parametrize("name", ["stylegan_seed_sweep", "stylegan_interpolation", "stylegan_style_mixing",
                                  "editing_sefa_sweep", "editing_garment_length", "editing_invert_then_edit",
                                  "insetgan_face_fix", "unitedhuman_2048_face_closeup"])
def test_gan_workflows_run(server, name):
    url, base = server
    entry = _run(url, _api(name))
    assert entry["status"]["status_str"] == "success", _errors(entry)
    saved = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    assert saved and all((base / "output" / img["subfolder"] / img["filename"]).is_file() for img in saved)


@pytest.mark.parametrize("which", ["projection", "insetgan"])
def test_progress_and_interrupt(server, which):
    import asyncio

    import aiohttp
    url, _ = server
    if which == "projection":
        api, node = _api("editing_invert_then_edit"), "4"
        api[node]["inputs"]["steps"] = 5000
    else:
        api, node = _api("insetgan_face_fix"), "5"
        api[node]["inputs"].update(steps_scale=4.0, seed=int(time.time()) % 10000)

    async def go():
        seen = []
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{url}/ws?clientId=hg-interrupt") as ws:
            async with s.post(url + "/prompt", json={"prompt": api, "client_id": "hg-interrupt"}) as r:
                assert r.status == 200, await r.text()
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                d = json.loads(msg.data)
                if d["type"] == "progress" and d["data"]["node"] == node:
                    seen.append((d["data"]["value"], d["data"]["max"]))
                    if len(seen) == 5:
                        await s.post(url + "/interrupt")
                elif d["type"] in ("execution_interrupted", "execution_error", "execution_success"):
                    return d, seen
    end, seen = asyncio.run(asyncio.wait_for(go(), 300))
    assert end["type"] == "execution_interrupted", end
    assert seen[0][1] >= 1000 and seen[-1][0] < seen[-1][1]  # stopped early, well before the last step
    assert [v for v, _ in seen] == sorted(v for v, _ in seen)


def test_latent_png_round_trip_through_the_server(server):
    from PIL import Image
    url, base = server
    sweep = _run(url, _api("stylegan_seed_sweep"))
    files = sweep["outputs"]["4"]["images"]
    assert len(files) == 8 and all(f["type"] == "output" for f in files)
    paths = [base / "output" / f["subfolder"] / f["filename"] for f in files]
    prompt = {"1": {"class_type": "HumanGenStyleGANLoader", "inputs": {"model_name": "stylegan_human_v2_1024.pkl",
                                                                       "precision": "fp32", "ops_impl": "auto"}},
              "2": {"class_type": "HumanGenLoadLatentFromImage", "inputs": {"image": "roundtrip.png"}},
              "3": {"class_type": "HumanGenStyleGANSynthesize", "inputs": {
                  "generator": ["1", 0], "latent": ["2", 0], "noise_mode": "const", "batch_size": 1, "noise_seed": 0}},
              "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "HumanGen/rt"}}}
    for src in (paths[2], paths[5]):  # the second upload replaces the first under the same name
        boundary = "humangenboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--{boundary}\r\n"
                f"Content-Disposition: form-data; name=\"image\"; filename=\"roundtrip.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + src.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(url + "/upload/image", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert json.loads(urllib.request.urlopen(req, timeout=60).read())["type"] == "input"
        entry = _run(url, prompt)
        assert entry["status"]["status_str"] == "success", _errors(entry)
        (img,) = entry["outputs"]["4"]["images"]
        again = np.asarray(Image.open(base / "output" / img["subfolder"] / img["filename"]).convert("RGB"))
        assert np.array_equal(again, np.asarray(Image.open(src).convert("RGB"))), src.name
