"""Loading upscale models: Real-ESRGAN key layouts (.pth with params_ema, safetensors), SRVGG compact, safe-loading
errors, the opt-in extra-architecture registry, and the loader node (core UPSCALE_MODEL interop)."""
from __future__ import annotations

import os
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

import hg_upscale as H
from humangen.models.upscale import build_registry, canonicalize, load_descriptor
from humangen.nodes.upscale import HumanGenTiledUpscale, HumanGenUpscaleModelLoader
from humangen.utils.errors import HumanGenError, NodeInputError, UnsafeCheckpointError, UnsupportedCheckpointError


def _folder(h, kind="upscale_models"):
    d = os.path.join(h.models_root, kind)
    os.makedirs(d, exist_ok=True)
    return d


def _x(h=12, w=10, seed=0):
    return torch.rand((1, 3, h, w), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("unshuffle,scale", [(1, 4), (2, 2), (4, 1)], ids=["x4plus", "x2plus", "x1"])
def test_realesrgan_pth_with_params_ema_is_detected_with_the_right_scale(standalone_host, unshuffle, scale):
    sd = H.rrdbnet_state_dict(in_unshuffle=unshuffle)
    path = os.path.join(_folder(standalone_host), f"RealESRGAN_x{scale}.pth")
    torch.save(H.realesrgan_checkpoint(sd), path)
    (desc,) = HumanGenUpscaleModelLoader().load(os.path.basename(path))
    assert desc.architecture.id == "ESRGAN"
    assert desc.scale == scale
    assert desc.input_channels == 3 and desc.output_channels == 3
    assert ("unshuffle" in desc.tags) == (unshuffle > 1)
    # params_ema was used, not the zeroed `params`: the first conv carries exactly the EMA weights
    assert torch.equal(desc.model.state_dict()["model.0.weight"], sd["conv_first.weight"])
    with torch.no_grad():
        y = desc(_x(12, 16))
    assert y.shape == (1, 3, 12 * scale, 16 * scale)
    assert y.std() > 0.02  # a real, non-flat output


def test_safetensors_and_pth_give_the_same_model(standalone_host):
    sd = H.rrdbnet_state_dict(seed=3)
    folder = _folder(standalone_host)
    torch.save(H.realesrgan_checkpoint(sd), os.path.join(folder, "a.pth"))
    save_file(sd, os.path.join(folder, "a.safetensors"))
    a = load_descriptor(os.path.join(folder, "a.pth"))
    b = load_descriptor(os.path.join(folder, "a.safetensors"))
    x = _x()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert b.scale == 4


def test_srvgg_compact_is_detected(standalone_host):
    path = os.path.join(_folder(standalone_host), "realesr-general-x4v3.pth")
    torch.save({"params": H.compact_state_dict(scale=4)}, path)
    desc = load_descriptor(path)
    assert desc.architecture.id == "Compact" and desc.scale == 4
    with torch.no_grad():
        assert desc(_x()).shape == (1, 3, 48, 40)


def test_canonicalize_prefers_ema_and_strips_module_prefix():
    sd = {"module.conv.weight": torch.ones(1)}
    assert list(canonicalize({"params": {"x": torch.zeros(1)}, "params_ema": sd})) == ["conv.weight"]
    with pytest.raises(UnsupportedCheckpointError, match="no tensors"):
        canonicalize({"epoch": 3, "lr": 0.1})


def test_truncated_pth_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    torch.save(H.realesrgan_checkpoint(H.rrdbnet_state_dict()), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsupportedCheckpointError, match="broken.pth.*corrupt"):
        load_descriptor(str(path))


def test_garbage_safetensors_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" + b"\0" * 64)
    with pytest.raises(UnsupportedCheckpointError, match="junk.safetensors.*corrupt"):
        load_descriptor(str(path))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(UnsupportedCheckpointError, match="empty"):
        load_descriptor(str(empty))


class _Evil:
    def __reduce__(self):  # would run a command under a plain pickle.load
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused_not_executed(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"params_ema": H.rrdbnet_state_dict(), "payload": _Evil()}, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pth.*execute code"):
        load_descriptor(str(path))


def test_non_image_model_lists_what_was_looked_for(tmp_path):
    lm = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10))
    path = tmp_path / "language_model.safetensors"
    save_file(lm.state_dict(), str(path))
    with pytest.raises(UnsupportedCheckpointError) as info:
        load_descriptor(str(path))
    msg = str(info.value)
    assert "language_model.safetensors" in msg and "not an image model" in msg
    assert "ESRGAN" in msg and "SwinIR" in msg and "spandrel_extra_arches" in msg


def test_unsupported_extension(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x")
    with pytest.raises(UnsupportedCheckpointError, match="unsupported file type '.onnx'"):
        load_descriptor(str(path))


def test_face_model_as_upscaler_purpose_filter():
    with pytest.raises(UnsupportedCheckpointError, match="expected \\['FaceSR'\\]"):
        load_descriptor(H.rrdbnet_state_dict(), purposes={"FaceSR"})


# ---- extra architectures: opt-in, lazy, never global -----------------------------------------------------------
def _fake_extra_module():
    """A stand-in spandrel_extra_arches with one architecture (detects the key 'fake_extra.weight')."""
    from spandrel import Architecture, ArchRegistry, ArchSupport, ImageModelDescriptor

    class FakeExtraArch(Architecture):
        def __init__(self):
            super().__init__(id="FakeExtra", detect=lambda sd: "fake_extra.weight" in sd)

        def load(self, state_dict):
            return ImageModelDescriptor(_FakeNet(), state_dict, architecture=self, purpose="Restoration", tags=[],
                                        supports_half=True, supports_bfloat16=True, scale=1, input_channels=3,
                                        output_channels=3)

    FakeExtraArch.__module__ = "spandrel_extra_arches.architectures.FakeExtra"
    reg = ArchRegistry()
    reg.add(ArchSupport.from_architecture(FakeExtraArch()))
    mod = types.ModuleType("spandrel_extra_arches")
    mod.EXTRA_REGISTRY = reg
    return mod


class _FakeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fake_extra = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.fake_extra(x)


def _fake_sd():
    return _FakeNet().state_dict()


def test_extra_arches_only_when_opted_in_and_global_registry_untouched(monkeypatch):
    from spandrel import MAIN_REGISTRY
    monkeypatch.setitem(sys.modules, "spandrel_extra_arches", _fake_extra_module())
    before = len(MAIN_REGISTRY)
    sd = _fake_sd()
    with pytest.raises(UnsupportedCheckpointError, match="spandrel_extra_arches"):
        load_descriptor(sd)
    desc = load_descriptor(sd, allow_extra=True)
    assert desc.architecture.id == "FakeExtra"
    assert len(MAIN_REGISTRY) == before and "FakeExtra" not in MAIN_REGISTRY


def test_extras_put_into_the_global_registry_by_someone_else_are_filtered(monkeypatch):
    from spandrel import MAIN_REGISTRY
    fake = _fake_extra_module()
    saved = (MAIN_REGISTRY._architectures, MAIN_REGISTRY._ordered, MAIN_REGISTRY._by_id)
    try:
        MAIN_REGISTRY.add(*fake.EXTRA_REGISTRY.architectures())  # what ComfyUI's core loader does at import
        assert "FakeExtra" not in [str(a.architecture.id) for a in build_registry(False).architectures()]
        with pytest.raises(UnsupportedCheckpointError):
            load_descriptor(_fake_sd())
    finally:
        MAIN_REGISTRY._architectures, MAIN_REGISTRY._ordered, MAIN_REGISTRY._by_id = saved


def test_extra_arches_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "spandrel_extra_arches", None)  # import fails
    with pytest.raises(HumanGenError, match="pip install -c constraints.txt spandrel-extra-arches==0.2.0"):
        build_registry(allow_extra=True)
    assert build_registry(allow_extra=False)  # the default path never imports it


# ---- nodes ------------------------------------------------------------------------------------------------------
def test_loader_node_errors_name_node_and_input(standalone_host):
    with pytest.raises(HumanGenError, match="HumanGenUpscaleModelLoader: input 'model_name'.*not found"):
        HumanGenUpscaleModelLoader().load("missing.pth")
    path = os.path.join(_folder(standalone_host), "text.safetensors")
    save_file({"embed.weight": torch.zeros(4, 4)}, path)
    with pytest.raises(NodeInputError, match="HumanGenUpscaleModelLoader: input 'model_name'.*not an image model"):
        HumanGenUpscaleModelLoader().load("text.safetensors")
    assert "text.safetensors" in HumanGenUpscaleModelLoader.INPUT_TYPES()["required"]["model_name"][0]



def test_layer_numbers_far_beyond_the_tensors_are_refused_before_building(standalone_host, monkeypatch):
    """Three tensors numbered up to body.40003 made spandrel build 20000 convolutions (3 GB) before its own check."""
    import spandrel
    built = []
    monkeypatch.setattr(spandrel.ArchRegistry, "load", lambda self, sd: built.append(sd))
    path = os.path.join(_folder(standalone_host), "numbered.safetensors")
    save_file({"body.0.weight": torch.zeros(64, 3, 3, 3), "body.1.weight": torch.zeros(64),
               "body.40003.bias": torch.zeros(48)}, path)
    with pytest.raises(NodeInputError, match="HumanGenUpscaleModelLoader: input 'model_name': numbered.safetensors: "
                                             "the key 'body.40003.bias' numbers a layer beyond .*3 tensors.*Fix:"):
        HumanGenUpscaleModelLoader().load("numbered.safetensors")
    assert built == []
    canonicalize(H.compact_state_dict(scale=4), name="genuine")  # every genuine layout stays within the bound
    canonicalize({"body.\u00b2.weight": torch.zeros(2)}, name="superscript")  # not a layer number (int() fails)


def test_empty_tensors_are_refused_before_spandrel_sizes_a_network_from_them(standalone_host):
    sd = H.compact_state_dict(scale=4)
    sd["body.0.bias"] = torch.zeros(4096, 0)
    path = os.path.join(_folder(standalone_host), "empty.pth")
    torch.save({"params": sd}, path)
    with pytest.raises(NodeInputError, match="HumanGenUpscaleModelLoader: input 'model_name': empty.pth: body.0.bias "
                                             r"is an empty tensor of shape \(4096, 0\).*Fix:"):
        HumanGenUpscaleModelLoader().load("empty.pth")


def test_an_assertion_inside_spandrel_is_a_clear_error(standalone_host):
    sd = H.compact_state_dict(scale=4)
    last = max((k for k in sd if k.endswith(".bias")), key=lambda k: int(k.split(".")[1]))
    sd[last] = torch.zeros(7)
    sd[last.replace(".bias", ".weight")] = torch.zeros(7, *sd[last.replace(".bias", ".weight")].shape[1:])
    path = os.path.join(_folder(standalone_host), "odd_out.pth")
    torch.save({"params": sd}, path)
    with pytest.raises(NodeInputError, match="HumanGenUpscaleModelLoader: input 'model_name': odd_out.pth: looks "
                                             "like a known architecture but its tensors do not fit it"):
        HumanGenUpscaleModelLoader().load("odd_out.pth")


def test_loader_node_extra_architectures_missing_names_that_input(standalone_host, monkeypatch):
    monkeypatch.setitem(sys.modules, "spandrel_extra_arches", None)
    path = os.path.join(_folder(standalone_host), "x4.safetensors")
    save_file(H.rrdbnet_state_dict(), path)
    with pytest.raises(NodeInputError, match="input 'extra_architectures'.*spandrel-extra-arches==0.2.0"):
        HumanGenUpscaleModelLoader().load("x4.safetensors", extra_architectures=True)
    assert HumanGenUpscaleModelLoader().load("x4.safetensors")[0].scale == 4


def test_core_loader_output_feeds_our_node():
    """ComfyUI's UpscaleModelLoader returns spandrel's ImageModelDescriptor; our node takes it as is."""
    from spandrel import ModelLoader
    desc = ModelLoader().load_from_state_dict(H.rrdbnet_state_dict()).eval()
    image = torch.rand((1, 10, 12, 3), generator=torch.Generator().manual_seed(0))
    out, mask = HumanGenTiledUpscale().upscale(image, desc, tile_size=0)
    assert out.shape == (1, 40, 48, 3) and mask.shape == (1, 40, 48)
    with pytest.raises(NodeInputError, match="input 'upscale_model'"):
        HumanGenTiledUpscale().upscale(image, "not a model")
