"""HumanSD example workflows: UI/API twins agree with each other and with the node definitions; the pose-JSON
workflow runs end to end with a tiny stand-in model saved under the name it declares in needs_models."""
from __future__ import annotations

import json
import os

import pytest
import torch

import humansd_tiny as T
from hgtest import ROOT

WORKFLOWS = ["humansd_photo_pose", "humansd_pose_json"]
CORE = {"LoadImage", "SaveImage", "PreviewImage", "ImageScale"}
POSE_NODES = {"HumanGenPoseDetect", "HumanGenLoadPose"}  # the pose engineer's nodes (nodes/pose.py)


def _load(name):
    with open(ROOT / "workflows" / f"{name}.json") as fh:
        ui = json.load(fh)
    with open(ROOT / "workflows" / "api" / f"{name}.json") as fh:
        api = json.load(fh)
    return ui, api


def _widget_names(cls):
    """Widget inputs in UI order (required then optional), with the seed's extra control value."""
    spec = cls.INPUT_TYPES()
    names = []
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            kind = entry[0]
            if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                names.append(name)
                if len(entry) > 1 and entry[1].get("control_after_generate"):
                    names.append(None)
    return names


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_twins_are_consistent(name):
    from humangen import NODE_CLASS_MAPPINGS
    ui, api = _load(name)
    needs = ui["extra"]["humangen"]["needs_models"]
    assert needs == [{"folder": "humansd", "file": "humansd-v1.ckpt", "url": "https://github.com/IDEA-Research/HumanSD",
                      "license": needs[0]["license"]}] and "RAIL" in needs[0]["license"]
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert set(map(str, nodes)) == set(api)
    for link_id, src, src_slot, dst, dst_slot, typ in ui["links"]:
        assert nodes[src]["outputs"][src_slot]["type"] == typ and link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
        assert api[str(dst)]["inputs"][nodes[dst]["inputs"][dst_slot]["name"]] == [str(src), src_slot]
    for nid, node in nodes.items():
        entry = api[str(nid)]
        assert entry["class_type"] == node["type"]
        assert node["type"] in set(NODE_CLASS_MAPPINGS) | CORE | POSE_NODES
        if node["type"] in NODE_CLASS_MAPPINGS:
            names = _widget_names(NODE_CLASS_MAPPINGS[node["type"]])
            assert len(names) == len(node["widgets_values"])
            for wname, value in zip(names, node["widgets_values"]):
                if wname is not None:
                    assert entry["inputs"][wname] == value, (name, nid, wname)
            spec = NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()
            assert set(entry["inputs"]) <= set(spec["required"]) | set(spec.get("optional", {}))
            assert set(spec["required"]) <= set(entry["inputs"])


def _run_api(api, overrides):
    """A minimal API-prompt executor: our registered nodes, the pose loader (utils.pose) until nodes/pose.py is
    merged, and sinks for Save/PreviewImage."""
    from humangen import NODE_CLASS_MAPPINGS
    from humangen.utils import host
    from humangen.utils import pose as posemod
    from humangen.utils import image as I

    def load_image(image, **_):
        from PIL import Image
        return (I.pil_to_comfy(Image.open(os.path.join(host.input_dir(), image))), None)

    stubs = {"HumanGenLoadPose": lambda path, canvas_width, canvas_height: (
                 posemod.load_pose(os.path.join(host.input_dir(), path)),),
             "LoadImage": load_image,
             "SaveImage": lambda images, filename_prefix: ("saved", images),
             "PreviewImage": lambda images: ("preview", images)}
    results, sinks = {}, {}

    def run(nid):
        if nid in results:
            return results[nid]
        entry = api[nid]
        kwargs = {}
        for k, v in dict(entry["inputs"], **overrides.get(nid, {})).items():
            kwargs[k] = run(v[0])[v[1]] if isinstance(v, list) else v
        cls = NODE_CLASS_MAPPINGS.get(entry["class_type"])
        if cls is not None:
            out = getattr(cls(), cls.FUNCTION)(**kwargs)
            out = out["result"] if isinstance(out, dict) else out
        else:
            out = stubs[entry["class_type"]](**kwargs)
            if entry["class_type"] in ("SaveImage", "PreviewImage"):
                sinks[nid] = out[1]
        results[nid] = out
        return out

    for nid in api:
        run(nid)
    return sinks


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: no thread spinning on a loaded 2-core machine
    yield
    torch.set_num_threads(before)


def _prepare(standalone_host, name):
    import shutil
    ui, api = _load(name)
    need = ui["extra"]["humangen"]["needs_models"][0]
    unet, vae, tower = T.make_components(seed=5)
    T.save_ckpt(os.path.join(standalone_host.models_root, need["folder"], need["file"]),
                T.ldm_state_dict(unet, vae, tower))
    os.makedirs(standalone_host.input_root, exist_ok=True)
    for asset in ("humansd_pose.json", "astronaut.png"):
        shutil.copy(ROOT / "workflows" / "assets" / asset, os.path.join(standalone_host.input_root, asset))
    sampler = next(k for k, v in api.items() if v["class_type"] == "HumanGenSkeletonSDSampler")
    sinks = _run_api(api, {sampler: {"steps": 2, "short_side": 64}})
    images = [v for k, v in sinks.items() if api[k]["class_type"] == "SaveImage"][0]
    skeleton = [v for k, v in sinks.items() if api[k]["class_type"] == "PreviewImage" and api[k]["inputs"]
                ["images"][0] == sampler][0]
    return images, skeleton


def test_pose_json_workflow_runs_with_a_tiny_stand_in(standalone_host, one_thread):
    images, skeleton = _prepare(standalone_host, "humansd_pose_json")
    assert images.shape == (1, 128, 64, 3)  # 512x768 canvas, short side 64 -> 64x96 -> rounded to 64x128
    assert skeleton.shape == (1, 128, 64, 3) and skeleton.amax() > 0.3  # the skeleton was drawn


def test_photo_pose_workflow_runs_with_a_tiny_stand_in(standalone_host, one_thread):
    """astronaut.png (512x512) -> mediapipe pose -> HumanSD skeleton -> tiny stand-in model."""
    images, skeleton = _prepare(standalone_host, "humansd_photo_pose")
    assert images.shape == (1, 64, 64, 3) and skeleton.shape == (1, 64, 64, 3)
    assert (skeleton.sum(-1) > 0).float().mean() > 0.02  # a skeleton of the detected person
