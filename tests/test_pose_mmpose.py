"""mmpose backend with random-weight models built from the configs inside the mmpose wheel (no downloads);
checkpoint loading through a saved random state dict."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytest.importorskip("mmpose", reason="part of the project's requirements: run `python3 launch.py setup` (or `python install.py --dev`)")
skimage_data = pytest.importorskip("skimage.data", reason="part of the project's requirements: run `python3 launch.py setup` (or `python install.py --dev`)")

from humangen import NODE_CLASS_MAPPINGS as N  # noqa: E402
from humangen.models import pose as M  # noqa: E402
from humangen.models.pose import mmpose_backend as MB  # noqa: E402
from humangen.utils import image as I  # noqa: E402
from humangen.utils import pose as P  # noqa: E402
from humangen.utils.errors import NodeInputError, UnsafeCheckpointError, UnsupportedCheckpointError  # noqa: E402

CONFIG = "rtmpose-t_coco_256x192"
BOX = np.array([[100.0, 20.0, 420.0, 512.0]])


@pytest.fixture(scope="module")
def random_topdown():
    torch.manual_seed(0)
    return MB.build_model(CONFIG)


@pytest.fixture(scope="module")
def astronaut():
    return np.ascontiguousarray(skimage_data.astronaut())


def save_checkpoint(model, path, with_meta=True):
    sd = {k: v.clone() for k, v in model.model.state_dict().items()}
    obj = {"meta": {"mmpose_version": "1.3.2", "dataset_meta": {"sigmas": np.linspace(0.02, 0.1, 17)}},
           "state_dict": {"module." + k: v for k, v in sd.items()}} if with_meta else sd
    torch.save(obj, path)
    return sd


def test_configs_come_from_the_wheel():
    for name, (mode, _) in MB.MMPOSE_CONFIGS.items():
        got_mode, path = MB.config_path(name)
        assert got_mode == mode and os.path.isfile(path) and "/.mim/configs/" in path
    with pytest.raises(ValueError, match="not in the installed mmpose wheel"):
        MB.config_path("../../../../etc/passwd.py")


def test_random_topdown_checkpoint_round_trip(tmp_path, random_topdown, astronaut):
    path = str(tmp_path / "rtm_t.pth")
    sd = save_checkpoint(random_topdown, path)  # {"meta" with numpy arrays, "state_dict" with module. keys}
    loaded = MB.build_model(CONFIG, path)
    for k, v in loaded.model.state_dict().items():
        torch.testing.assert_close(v, sd[k], rtol=0, atol=0)
    kps, scores = MB.detect(loaded, astronaut, boxes=BOX)
    ref, _ = MB.detect(random_topdown, astronaut, boxes=BOX)
    assert kps.shape == (1, 17, 3) and scores.shape == (1,)
    np.testing.assert_allclose(kps, ref, rtol=0, atol=1e-4)
    # keypoints of a top-down model stay around the box it was given (mmpose pads it by 1.25)
    assert (kps[0, :, 0] > BOX[0, 0] - 100).all() and (kps[0, :, 0] < BOX[0, 2] + 100).all()
    det = M.detect_mmpose(astronaut, loaded, keypoint_threshold=0.0, boxes=BOX)
    assert det.layout == "coco17" and det.keypoints.shape[1:] == (17, 3)
    fast = MB.build_model(CONFIG, path, flip_test=False)
    assert fast.model.cfg.model.test_cfg.flip_test is False
    assert MB.detect(fast, astronaut, boxes=BOX)[0].shape == (1, 17, 3)


def test_checkpoint_errors(tmp_path, random_topdown):
    path = str(tmp_path / "rtm_t.pth")
    save_checkpoint(random_topdown, path, with_meta=False)
    with pytest.raises(UnsupportedCheckpointError, match="does not fit config 'rtmpose-s_coco_256x192'"):
        MB.build_model("rtmpose-s_coco_256x192", path)

    sd = torch.load(path, weights_only=True)
    sd["head.extra_training_buffer"] = torch.zeros(3)
    torch.save(sd, path)
    loaded = MB.build_model(CONFIG, path)  # a few unused tensors are skipped (with a warning)
    assert "head.extra_training_buffer" not in loaded.model.state_dict()
    del sd["backbone.stem.0.conv.weight"]
    torch.save(sd, path)
    with pytest.raises(UnsupportedCheckpointError, match="1 missing keys \\['backbone.stem.0.conv.weight'\\]"):
        MB.build_model(CONFIG, path)

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = str(tmp_path / "evil.pth")
    torch.save({"state_dict": {}, "x": Payload()}, evil)
    with pytest.raises(UnsafeCheckpointError, match="could execute code"):
        MB.load_checkpoint_state_dict(evil)


def test_random_bottomup_runs(astronaut):
    torch.manual_seed(0)
    model = MB.build_model("ae_hrnet-w32_coco_512x512", bottomup_input_size=128)
    assert model.mode == "bottomup"
    kps, scores = MB.detect(model, astronaut, max_people=3)
    assert kps.ndim == 3 and kps.shape[1:] == (17, 3) and len(kps) <= 3 and len(scores) == len(kps)
    assert np.isfinite(kps).all() and (np.diff(scores) <= 0).all()


def test_boxes_from_mask():
    mask = np.zeros((100, 120), np.float32)
    mask[10:60, 20:40] = 1
    mask[70:90, 80:100] = 0.9
    mask[0:2, 0:2] = 1  # speck: ignored (< 10 % of the largest)
    boxes = MB.boxes_from_mask(mask, max_people=5)
    np.testing.assert_array_equal(boxes, [[20, 10, 40, 60], [80, 70, 100, 90]])
    assert MB.boxes_from_mask(np.zeros((5, 5)), 3).shape == (0, 4)


def test_pose_detect_node_with_mmpose_checkpoint(standalone_host, tmp_path, random_topdown, astronaut):
    folder = tmp_path / "models" / "mmpose"
    folder.mkdir(parents=True)
    save_checkpoint(random_topdown, str(folder / "rtm_t_random.pth"))
    img = I.uint8_to_comfy(astronaut)
    pose, preview = N["HumanGenPoseDetect"]().detect(
        img, "mmpose_topdown", 0.0, 1, "coco17", mmpose_config=CONFIG, mmpose_checkpoint="rtm_t_random.pth",
        person_box="100,20,420,512")
    k = P.people_array(pose[0], "coco17")
    ref, _ = MB.detect(random_topdown, astronaut, boxes=BOX)
    present = k[0, :, 2] > 0
    assert present.sum() >= 10
    np.testing.assert_allclose(k[0, present, :2], ref[0, present, :2], atol=1e-3)
    with pytest.raises(NodeInputError, match="is a topdown model but backend is mmpose_bottomup"):
        N["HumanGenPoseDetect"]().detect(img, "mmpose_bottomup", 0.0, 1, "coco17", mmpose_config=CONFIG,
                                         mmpose_checkpoint="rtm_t_random.pth")
