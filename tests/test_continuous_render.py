"""Patch geometry and the canvas renderer, with an analytic stand-in generator (no network needed).

The stand-in's patch is a function of canvas coordinates, so any correctly placed tile must equal the same
function sampled on the canvas pixel grid."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hgtest import FIXTURES
from humangen.models import continuous as C

ANYRES = FIXTURES / "anyres" / "e_anyres_patch_positive_64"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def field(x: torch.Tensor, y: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    """An analytic 'image' of canvas coordinates (x, y in [-1, 1]), [B,3,H,W]."""
    a = ws[:, 0, 0].view(-1, 1, 1)
    return torch.stack([torch.sin(7.3 * x + 2.1 * y + a), torch.cos(3.1 * x * y - a),
                        x * y.expand_as(x) * 0.5 + 0.1 * a], dim=1)


class FakeGenerator(torch.nn.Module):
    """Renders `field` at the pixel centres a patch transform covers; counts calls and batch sizes."""

    def __init__(self, res: int = 16, z_dim: int = 4, num_ws: int = 6):
        super().__init__()
        self.img_resolution, self.img_channels, self.z_dim, self.w_dim, self.num_ws = res, 3, z_dim, z_dim, num_ws
        self.lin = torch.nn.Linear(z_dim, z_dim, bias=False)
        self.calls: list[int] = []

    def mapping(self, z, c, truncation_psi=1):
        w = self.lin(z.float())
        return w[:, None].repeat(1, self.num_ws, 1)

    def synthesize_patch(self, ws, transforms):
        self.calls.append(ws.shape[0])
        r = self.img_resolution
        u = (torch.arange(r, dtype=torch.float64) + 0.5) / r * 2 - 1
        t = transforms.double()
        s, cx, cy = t[:, 0, 0, None], 2 * t[:, 0, 2, None], 2 * t[:, 1, 2, None]
        x = (cx + s * u)[:, None, :]  # [N,1,R]
        y = (cy + s * u)[:, :, None]  # [N,R,1]
        return field(x.expand(-1, r, r), y.expand(-1, r, r), ws.double()).float()


def grid_field(size: int, ws: torch.Tensor, region=None) -> torch.Tensor:
    u = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1
    s, cx, cy = 1.0, 0.0, 0.0
    if region is not None:
        m = C.as_matrix(region).double()
        s, cx, cy = float(m[0, 0]), 2 * float(m[0, 2]), 2 * float(m[1, 2])
    x = (cx + s * u)[None, None, :].expand(1, size, size)
    y = (cy + s * u)[None, :, None].expand(1, size, size)
    return torch.cat([field(x, y, w[None].double()) for w in ws]).float()


@pytest.fixture(scope="module")
def io():
    return load_file(str(ANYRES) + ".io.safetensors")


def test_canvas_grid_matches_upstream_fixture(io):
    patches = C.patch_grid(128, 64)
    assert [p.bbox for p in patches] == [tuple(b) for b in io["canvas.patch_bboxes"].tolist()]
    assert torch.equal(torch.stack([p.transform for p in patches]), io["canvas.patch_transforms"])
    assert torch.equal(patches[1].transform, io["transform.zoom2_tile1"])


def test_transforms_match_upstream_fixture(io):
    assert torch.equal(C.box_transform(-0.0 + 0, 128, 0, 128, 128), io["transform.full"])
    assert torch.equal(C.box_transform(141, 141 + 64, 38, 38 + 64, 256), io["transform.zoom4_offcentre"])
    assert torch.equal(C.box_transform(29, 29 + 64, 6, 6 + 64, 96), io["transform.zoom1p5"])
    assert torch.equal(C.keypoint_transform(0, 6), io["transform.keypoint0_face_s6"])
    assert torch.equal(C.keypoint_transform("nose", 6), io["transform.keypoint0_face_s6"])
    assert torch.allclose(C.zoom_of(io["transform.zoom4_offcentre"]), torch.tensor(4.0))


def test_grid_shifts_last_row_and_column_inward():
    patches = C.patch_grid(100, 64)
    assert [p.bbox for p in patches] == [(0, 64, 0, 64), (0, 64, 36, 100), (36, 100, 0, 64), (36, 100, 36, 100)]
    assert len(C.patch_grid(2048, 256)) == 64 and len(C.patch_grid(4096, 256)) == 256
    assert len(C.patch_grid(300, 256)) == 4


def test_transform_validation_and_objects():
    class T:  # a HUMANGEN_TRANSFORM-like object
        matrix = [[0.5, 0, 0.25], [0, 0.5, -0.25], [0, 0, 1]]
    assert torch.equal(C.as_matrix(T()), C.patch_grid(128, 64)[1].transform)
    with pytest.raises(ValueError, match="convention"):
        C.as_matrix([[0.5, 0.1, 0], [0, 0.5, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="3x3"):
        C.as_matrix(np.eye(2))
    assert C.covered_box(C.patch_grid(128, 64)[1].transform, 128) == (0.0, 64.0, 64.0, 128.0)


@pytest.mark.parametrize("size", [16, 40, 48, 64])
def test_canvas_equals_field_on_the_pixel_grid(size):
    G = FakeGenerator(16)
    ws = torch.randn(2, G.num_ws, G.w_dim)
    out = C.render_canvas(G, ws, size, patch_batch=3)
    assert out.shape == (2, 3, size, size)
    torch.testing.assert_close(out, grid_field(size, ws), atol=1e-5, rtol=0)


def test_one_patch_canvas_equals_render_patch_identity():
    G = FakeGenerator(16)
    ws = torch.randn(1, G.num_ws, G.w_dim)
    torch.testing.assert_close(C.render_canvas(G, ws, 16), C.render_patch(G, ws, torch.eye(3)), atol=0, rtol=0)


def test_tiles_equal_direct_renders_of_their_regions():
    G = FakeGenerator(16)
    ws = torch.randn(1, G.num_ws, G.w_dim)
    canvas = C.render_canvas(G, ws, 40)
    for p in C.patch_grid(40, 16):
        y0, y1, x0, x1 = p.bbox
        direct = C.render_patch(G, ws, C.box_transform(y0, y1, x0, x1, 40))
        torch.testing.assert_close(canvas[..., y0:y1, x0:x1], direct, atol=1e-5, rtol=0)


def test_region_of_interest_at_any_transform():
    G = FakeGenerator(16)
    ws = torch.randn(1, G.num_ws, G.w_dim)
    region = C.keypoint_transform("left_wrist", 3.0)
    out = C.render_canvas(G, ws, 40, region=region)
    torch.testing.assert_close(out, grid_field(40, ws, region), atol=1e-5, rtol=0)
    # rendered at the patch size, a region is exactly one patch
    torch.testing.assert_close(C.render_canvas(G, ws, 16, region=region), C.render_patch(G, ws, region))


def test_batching_and_framing():
    G = FakeGenerator(16)
    ws = torch.randn(1, G.num_ws, G.w_dim)
    full = C.render_canvas(G, ws, 64, patch_batch=1)
    assert G.calls == [1] * 16
    G.calls.clear()
    assert torch.equal(C.render_canvas(G, ws, 64, patch_batch=5), full)
    assert G.calls == [5, 5, 5, 1]
    G.calls.clear()
    person = C.render_canvas(G, ws, 64, framing="person", patch_batch=16)
    assert person.shape == (1, 3, 64, 32) and torch.equal(person, full[..., 16:48])
    assert G.calls == [8]  # only the two central patch columns are rendered
    G.calls.clear()
    bands = C.render_canvas(G, ws, 64, framing="white_bands", patch_batch=16)
    assert torch.equal(bands[..., 16:48], full[..., 16:48])
    assert bool((bands[..., :16] == 1).all()) and bool((bands[..., 48:] == 1).all())
    assert G.calls == [8]
    # a 2:1 crop of a size that is not a multiple of the patch size
    torch.testing.assert_close(C.render_canvas(G, ws, 50, framing="person"),
                               C.render_canvas(G, ws, 50)[..., 12:37], atol=0, rtol=0)


def test_progress_callback_and_interrupt():
    G = FakeGenerator(16)
    ws = torch.randn(2, G.num_ws, G.w_dim)
    seen = []
    C.render_canvas(G, ws, 32, patch_batch=3, callback=lambda d, t: seen.append((d, t)))
    assert seen == [(3, 8), (4, 8), (7, 8), (8, 8)]

    class Stop(Exception):
        pass

    def stop(done, total):
        if done >= 2:
            raise Stop
    with pytest.raises(Stop):
        C.render_canvas(G, ws, 64, callback=stop)
    assert len(G.calls) == 4 + 2


def test_empirical_mean_and_coarse_mix():
    G = FakeGenerator(16)
    mean = C.empirical_mean_ws(G, num=500, seed=123)
    z = np.random.RandomState(123).randn(500, G.z_dim)
    expected = G.mapping(torch.from_numpy(z), None).mean(0, keepdim=True)
    torch.testing.assert_close(mean, expected, atol=1e-6, rtol=0)
    assert C.empirical_mean_ws(G, num=500, seed=123) is mean  # cached per (num, seed)
    ws = torch.randn(2, G.num_ws, G.w_dim)
    m = C.mix_coarse(ws, mean, 3)
    assert torch.equal(m[:, :3], mean[:, :3].expand(2, -1, -1)) and torch.equal(m[:, 3:], ws[:, 3:])
    both = C.apply_mean_mode(G, ws, "sample_and_mix", 3, 500, 123)
    assert torch.equal(both[0::2], ws) and torch.equal(both[1::2], m)
    assert torch.equal(C.apply_mean_mode(G, ws, "only_mean", 3, 500, 123), mean)
    with pytest.raises(ValueError, match="mean mode"):
        C.apply_mean_mode(G, ws, "median")


def test_uint8_convention_matches_fixture(io):
    assert torch.equal(C.to_uint8_unitedhuman(io["canvas.full"])[0], io["canvas.uint8_HWC"])
