"""Our download-free LPIPS equals the `lpips` package given the same backbone weights."""
from __future__ import annotations

import re

import pytest
import torch

from humangen.models.lpips import BACKBONES, load_lpips
from humangen.utils.errors import HumanGenError


def _reference(net):
    import lpips
    torch.manual_seed(0)  # test-local: the reference package builds its random backbone from the global RNG
    return lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()


def _save_backbone(ref, path):
    # the reference keeps torchvision's feature indices as module names inside its slices
    state = {}
    for key, value in ref.net.state_dict().items():
        _, index, name = key.split(".")
        state[f"features.{index}.{name}"] = value
    state["classifier.1.weight"] = torch.zeros(2, 2)  # a full torchvision file also has the classifier
    torch.save(state, path)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_matches_reference_package(net, tmp_path):
    ref = _reference(net)
    _save_backbone(ref, tmp_path / BACKBONES[net].file_name)
    ours = load_lpips(net, str(tmp_path))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 48, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        expected = ref(x, y).view(-1)
        got = ours(x, y)
    assert got.shape == (2,)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert torch.all(got > 0)
    # the backbone's convolution weights stay in oneDNN's channels-last layout after loading
    convs = [m for m in ours.net.features if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert ours(x, x).abs().max() < 1e-6


def test_missing_backbone_names_file_and_url(tmp_path):
    with pytest.raises(HumanGenError, match=re.escape("alexnet-owt-7be5be79.pth")) as info:
        load_lpips("alex", str(tmp_path))
    assert "download.pytorch.org" in str(info.value) and str(tmp_path) in str(info.value)


def test_gradients_flow_to_inputs(tmp_path):
    ref = _reference("alex")
    _save_backbone(ref, tmp_path / BACKBONES["alex"].file_name)
    ours = load_lpips("alex", str(tmp_path))
    x = torch.zeros(1, 3, 32, 32, requires_grad=True)
    ours(x, torch.ones(1, 3, 32, 32) * 0.5).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in ours.parameters())


def test_constant_second_image_features_are_kept_while_unchanged():
    """An optimisation's target goes through the backbone once; anything that would change its features (an
    in-place edit, a grad-requiring target, other weights, autocast) computes them again, and the distance is
    always the uncached one."""
    from humangen.models.lpips import LPIPS
    torch.manual_seed(0)
    lp = LPIPS("alex")
    calls = []
    lp.net.register_forward_hook(lambda *_: calls.append(1))
    x, y = torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 64, 64) * 2 - 1

    def fresh(a, b):
        return LPIPS.forward(_uncached(lp), a, b)
    first = lp(x, y)
    assert len(calls) == 2
    assert torch.equal(lp(x * 0.5, y), fresh(x * 0.5, y)) and len(calls) == 2 + 1 + 2  # y kept; fresh() runs both
    calls.clear()
    lp(x, y)
    assert len(calls) == 1  # only x
    y.mul_(0.5)  # in place: a new version
    assert torch.equal(lp(x, y), fresh(x, y))
    calls.clear()
    lp(x, y.clone())  # another tensor with the same values: computed
    assert len(calls) == 2
    yg = y.clone().requires_grad_()
    lp(x, yg).sum().backward()
    assert yg.grad is not None and yg.grad.abs().sum() > 0
    with torch.no_grad():
        lp.lins[0].weight.mul_(2.0)  # other weights
    assert torch.equal(lp(x, y), fresh(x, y))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        calls.clear()
        lp(x, y)
        assert len(calls) == 2  # features of the fp32 call are not reused under bf16
    assert not torch.equal(first, lp(x, y))


def _uncached(lp):
    """A view of `lp` whose second image is never looked up (the reference computation)."""
    import copy
    other = copy.copy(lp)
    other._constant_features = other._features
    return other
