"""The host adapter inside a (fake) ComfyUI: memory management hands our modules to ModelPatcher safely."""
from __future__ import annotations

import sys
import types

import pytest
import torch

from humangen.utils import host


class _ReadOnlyDevice(torch.nn.Module):
    """Like diffusers' ModelMixin / transformers' PreTrainedModel: `device` is a read-only property."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    @property
    def device(self):
        return self.lin.weight.device


@pytest.fixture
def fake_comfy(monkeypatch):
    loaded = []

    class ModelPatcher:  # what matters of ComfyUI's: it assigns model.device
        def __init__(self, model, load_device, offload_device):
            self.model = model
            model.device = offload_device

    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.load_models_gpu = lambda patchers: loaded.extend(patchers)
    mp = types.ModuleType("comfy.model_patcher")
    mp.ModelPatcher = ModelPatcher
    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.model_patcher = mm, mp
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    monkeypatch.setitem(sys.modules, "comfy.model_patcher", mp)
    host.use(host.ComfyHost())
    return loaded


def test_load_model_wraps_modules_with_a_read_only_device(fake_comfy):
    module = _ReadOnlyDevice()
    with pytest.raises(AttributeError):
        module.device = torch.device("cpu")
    assert host.load_model(module) == torch.device("cpu")
    assert host.load_model(module) == torch.device("cpu")
    first, second = fake_comfy
    assert first is second, "one patcher per module"
    assert first.model.inner is module
    assert list(module.state_dict()) == ["lin.weight", "lin.bias"], "no cycle through the container"
    assert [k for k in first.model.state_dict()] == ["inner.lin.weight", "inner.lin.bias"]


def test_upscale_model_gets_the_core_loaders_patcher(fake_comfy):
    """Core ImageUpscaleWithModel (ComfyUI >= v0.9) loads `upscale_model.patcher`: our loader's output carries one,
    on the network itself like core UpscaleModelLoader's, and our own loading reuses it."""
    network = torch.nn.Conv2d(3, 3, 1)
    descriptor = types.SimpleNamespace(model=network, scale=1)
    assert host.core_upscale_model(descriptor) is descriptor
    assert descriptor.patcher.model is network
    host.load_model(network)
    assert fake_comfy == [descriptor.patcher], "one patcher for the network"
    core = types.SimpleNamespace(model=torch.nn.Conv2d(3, 3, 1), scale=1)
    core.patcher = sys.modules["comfy.model_patcher"].ModelPatcher(core.model, None, torch.device("cpu"))
    kept = core.patcher
    assert host.core_upscale_model(core).patcher is kept
    host.load_model(core.model)
    assert fake_comfy[-1] is kept


def test_upscale_model_outside_comfyui_is_unchanged(standalone_host):
    descriptor = types.SimpleNamespace(model=torch.nn.Conv2d(3, 3, 1), scale=1)
    assert host.core_upscale_model(descriptor) is descriptor and not hasattr(descriptor, "patcher")


def test_model_path_names_folder_and_fix(standalone_host):
    from humangen.utils.errors import HumanGenError
    with pytest.raises(HumanGenError, match="HumanGenX: input 'model_name'.*'stylegan' model folder"):
        host.model_path("stylegan", "missing.pkl", node="HumanGenX")
    with pytest.raises(HumanGenError):
        host.model_path("stylegan", "../../etc/passwd", node="HumanGenX")
