"""InsetGAN optimisation on tiny random generators: seams shrink, the body elsewhere stays, blends behave."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from humangen.models import insetgan as ig
from humangen.models.lpips import LPIPS
from humangen.utils.errors import HumanGenInterrupted
from sg_helpers import TINY_SG2, TINY_SG2_RECT, tiny_generator

BODY = dict(TINY_SG2_RECT, img_resolution=64)
FACE = dict(TINY_SG2, img_resolution=32)
TIGHT_BOX = (9.0, 6.0, 21.0, 18.0)  # a tight "face" box in the 32x64 body


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)  # test-local: random LPIPS backbone
    lpips = LPIPS("vgg")
    Gb, Gf = tiny_generator(BODY, seed=1).eval(), tiny_generator(FACE, seed=2).eval()
    wb = Gb.mapping(torch.randn(1, Gb.z_dim, generator=torch.Generator().manual_seed(3)), None)
    wf = Gf.mapping(torch.randn(1, Gf.z_dim, generator=torch.Generator().manual_seed(4)), None)
    return Gb, Gf, wb.detach(), wf.detach(), lpips


# StyleGAN-Human's terms and weights, shortened; LPIPS only on the coarse term to keep the test fast on CPU
QUICK = ig.Schedule("quick", (
    ig.Phase("face", 4, {"face": 0.02}, {"face": {"face": (5000, 0), "coarse": (50, 0.05), "border": (1000, 0)}}),
    ig.Phase("alternate", 20, {"face": 0.02, "body": 0.05},
             {"face": {"face": (5000, 0), "coarse": (500, 0), "border": (25000, 0)},
              "body": {"coarse": (500, 0), "border": (2500, 0), "body": (9000, 0), "reg": (100, 0)}},
             switch_every=5, first="body")), body_space="w+", face_space="w+", lpips_net="vgg")


@pytest.fixture(scope="module")
def result(setup):
    Gb, Gf, wb, wf, lpips = setup
    return ig.optimise(Gb, Gf, wb, wf, TIGHT_BOX, QUICK, lpips, box_scale=1.25, border_px=3)


def test_border_loss_drops(result):
    start = result.history[0]["border_l1"]
    x0, y0, x1, y1 = result.box
    seam = ig.compute_losses({}, result.face_img, result.body_img, result.box, (0, 0, 1, 1), None, None,
                             torch.zeros(1), torch.zeros(1), None, 3)[1]["border_l1"]
    assert seam < 0.65 * start, (start, seam)
    assert (x1 - x0) == (y1 - y0) == 15


def test_body_outside_box_changes_less_than_inside(setup, result):
    Gb, _, wb, _, _ = setup
    with torch.no_grad():
        body0 = Gb.synthesis(wb, noise_mode="const")
    diff = (result.body_img - body0).abs().mean(1)[0]
    x0, y0, x1, y1 = result.box
    inside = diff[y0:y1, x0:x1].mean()
    outside_mask = ig.outside_mask(diff.shape, result.box, 1)
    outside = (diff * outside_mask).sum() / outside_mask.sum()
    assert outside < 0.5 * inside, (float(outside), float(inside))


def _face_change(face0, face):
    rect = ig.rect_mask(face0.shape[2:], ig.default_face_rect(face0.shape[2:]))
    return float(((face - face0).abs().mean(1)[0] * rect).sum() / rect.sum())


def test_face_identity_stays_bounded(setup, result):
    Gb, Gf, wb, wf, lpips = setup
    with torch.no_grad():
        face0 = Gf.synthesis(wf, noise_mode="const")
    change = _face_change(face0, result.face_img)
    assert change < 1.0, change
    # the identity term is what holds it: without it the face drifts further
    no_identity = ig.Schedule("no-identity", tuple(
        ig.Phase(p.side, p.steps, p.lr, {s: {k: v for k, v in w.items() if k != "face"} for s, w in p.weights.items()},
                 p.switch_every, p.first) for p in QUICK.phases), "w+", "w+", "vgg")
    free = ig.optimise(Gb, Gf, wb, wf, TIGHT_BOX, no_identity, lpips, box_scale=1.25, border_px=3)
    assert change < 0.8 * _face_change(face0, free.face_img), (change, _face_change(face0, free.face_img))


def test_same_inputs_same_result(setup, result):
    Gb, Gf, wb, wf, lpips = setup
    again = ig.optimise(Gb, Gf, wb, wf, TIGHT_BOX, QUICK, lpips, box_scale=1.25, border_px=3)
    assert torch.equal(again.body_ws, result.body_ws) and torch.equal(again.face_ws, result.face_ws)


def test_interrupt_stops_within_a_step(setup):
    Gb, Gf, wb, wf, lpips = setup
    seen = []

    def stop(step, total, info):
        seen.append(step)
        if step == 3:
            raise HumanGenInterrupted("stop")
    with pytest.raises(HumanGenInterrupted):
        ig.optimise(Gb, Gf, wb, wf, TIGHT_BOX, QUICK, lpips, box_scale=1.25, callback=stop)
    assert seen == [1, 2, 3]


# a high learning rate makes the border loss overshoot, so the best state is an intermediate step (step 9 of 12)
OVERSHOOT = ig.Schedule("overshoot", (ig.Phase(
    "alternate", 12, {"face": 1.0, "body": 1.0},
    {"face": {"face": (50, 0), "coarse": (500, 0), "border": (25000, 0)},
     "body": {"coarse": (500, 0), "border": (2500, 0), "body": (90, 0)}}, switch_every=3, first="body"),),
    body_space="w+", face_space="w+", lpips_net="vgg")


def test_returned_latents_render_the_returned_images(setup):
    Gb, Gf, wb, wf, lpips = setup
    res = ig.optimise(Gb, Gf, wb, wf, TIGHT_BOX, OVERSHOOT, lpips, box_scale=1.25, border_px=3)
    assert 0 < res.best_step < len(res.history)  # an intermediate state, not the final render
    with torch.no_grad():
        body = Gb.synthesis(res.body_ws, noise_mode="const")
        face = Gf.synthesis(res.face_ws, noise_mode="const")
    assert float((body - res.body_img).abs().max()) < 1e-4
    assert float((face - res.face_img).abs().max()) < 1e-4
    # and the returned images have the border loss recorded for that step
    seam = ig.compute_losses({}, face, body, res.box, (0, 0, 1, 1), None, None, torch.zeros(1), torch.zeros(1),
                             None, 3)[1]["border_l1"]
    assert seam == pytest.approx(res.history[res.best_step]["border_l1"], rel=1e-4)


@pytest.mark.parametrize("name", ["stylegan-human", "official-loose", "official-inset"])
@pytest.mark.parametrize("scale", [0.05, 0.1, 0.25, 0.5, 1.0, 2.0])
def test_every_step_count_scales_alike(name, scale):
    full, run = ig.SCHEDULES[name], ig.scaled_schedule(ig.SCHEDULES[name], scale)
    expect = lambda n: max(1, round(n * scale))  # noqa: E731
    total = sum(p.steps for p in run.phases)
    assert total == len(ig.side_plan(full, scale)) == sum(expect(p.steps) for p in full.phases)
    for p, q in zip(full.phases, run.phases):
        assert q.steps == expect(p.steps)
        assert q.switch_every == (expect(p.switch_every) if p.switch_every else 0)
        assert q.redetect_every == (expect(p.redetect_every) if p.redetect_every else 0)
        assert q.redetect_until == (expect(p.redetect_until) if p.redetect_until < ig.NEVER else ig.NEVER)
    for ref in ("body_ref_at", "face_ref_at"):
        n = getattr(full, ref)
        assert getattr(run, ref) == (min(expect(n), total - 1) if n else 0)
        assert getattr(run, ref) < total  # a reference is always frozen inside the run
    assert ig.scaled_schedule(full, 1.0) == full


def test_official_schedules_keep_their_reference_fraction():
    loose = ig.scaled_schedule(ig.SCHEDULES["official-loose"], 0.1)
    assert (loose.body_ref_at, loose.face_ref_at, loose.phases[0].switch_every) == (8, 0, 4)
    inset = ig.scaled_schedule(ig.SCHEDULES["official-inset"], 0.25)
    assert (inset.body_ref_at, inset.face_ref_at, inset.phases[0].redetect_every,
            inset.phases[0].redetect_until) == (0, 30, 5, 25)
    with pytest.raises(ig.HumanGenError, match="steps_scale must be > 0"):
        ig.scaled_schedule(ig.SCHEDULES["official-loose"], 0)


def _without_lpips(schedule):
    """The same schedule with every LPIPS weight zeroed (fast on CPU; the step counts are what is tested)."""
    return replace(schedule, phases=tuple(replace(p, weights={s: {k: (w1, 0) for k, (w1, _) in w.items()}
                                                              for s, w in p.weights.items()})
                                          for p in schedule.phases))


def test_short_official_runs_freeze_the_references_and_redetect(setup):
    Gb, Gf, wb, wf, lpips = setup
    calls = []

    def redetect(img):
        calls.append(len(calls))
        return None
    loose = _without_lpips(ig.SCHEDULES["official-loose"])  # body reference at 75 of 400, re-detect every 20 to 100
    res = ig.optimise(Gb, Gf, wb, wf, TIGHT_BOX, loose, lpips, steps_scale=0.1, box_scale=1.25, border_px=3,
                      redetect=redetect)
    assert len(res.history) == 40
    with_body = [h["step"] for h in res.history if "body" in h]
    assert with_body and with_body[0] == 8  # body turns are steps 0-3, 8-11, ...: the term is on from step 8
    assert len(calls) == 5  # every 2 body steps until the 10th: at 2, 4, 6, 8, 10
    inset = _without_lpips(ig.SCHEDULES["official-inset"])  # inset snapshot at 120 of 400
    res = ig.optimise(Gb, Gf, wb, wf, TIGHT_BOX, inset, lpips, steps_scale=0.1, box_scale=1.25, border_px=3)
    with_face = [h["step"] for h in res.history if "face" in h]
    assert with_face and with_face[0] == 16  # face turns 0-3, 8-11, 16-19, ...; reference frozen at step 12


def test_hard_blend_is_a_direct_paste():
    body = torch.rand(1, 3, 40, 20) * 2 - 1
    face = torch.rand(1, 3, 32, 32) * 2 - 1
    box = (2, 5, 18, 21)
    out = ig.composite(body, face, box, "hard")
    expected = body.clone()
    expected[:, :, 5:21, 2:18] = torch.nn.functional.interpolate(face, size=(16, 16), mode="area")
    assert torch.equal(out, expected)


@pytest.mark.parametrize("radius", [4, 8])
def test_feather_has_no_step_larger_than_its_ramp(radius):
    body = -torch.ones(1, 3, 64, 64)
    face = torch.ones(1, 3, 32, 32)
    box = (10, 10, 42, 42)
    hard = ig.composite(body, face, box, "hard")
    soft = ig.composite(body, face, box, "feather", radius)
    step = lambda x: max(float(x.diff(dim=2).abs().max()), float(x.diff(dim=3).abs().max()))  # noqa: E731
    assert step(hard) == pytest.approx(2.0)
    assert step(soft) <= 2.0 / radius + 1e-6
    assert torch.equal(soft[:, :, 10 + radius:42 - radius, 10 + radius:42 - radius],
                       hard[:, :, 10 + radius:42 - radius, 10 + radius:42 - radius])


def test_poisson_blend_keeps_size_and_outside():
    body = torch.zeros(1, 3, 64, 64)
    face = torch.ones(1, 3, 32, 32) * 0.5
    out = ig.composite(body, face, (16, 16, 48, 48), "poisson", 4)
    assert out.shape == body.shape
    assert float(out[:, :, :8, :].abs().max()) < 2 / 127.5


def test_schedules_expand_as_specified():
    plan = ig.side_plan(ig.SCHEDULES["stylegan-human"])
    sides = [p[0] for p in plan]
    assert len(plan) == 25 + 150 + 500
    assert sides[:25] == ["face"] * 25 and sides[25:175] == ["body"] * 150
    assert sides[175:225] == ["face"] * 50 and sides[225:275] == ["body"] * 50
    assert plan[-1][2:4] == (249, 250)  # each side's own schedule over 250 steps
    off = ig.side_plan(ig.SCHEDULES["official-loose"])
    assert len(off) == 400 and [p[0] for p in off[:41]] == ["body"] * 40 + ["face"]
    assert ig.side_plan(ig.SCHEDULES["official-inset"])[0][0] == "face"
    assert ig.lr_at(0, 250, 0.05) == 0 and ig.lr_at(125, 250, 0.05) == pytest.approx(0.05)


def test_runs_under_comfyui_inference_mode(setup):
    Gb, Gf, wb, wf, lpips = setup
    with torch.inference_mode():
        Gb_i, Gf_i = tiny_generator(BODY, seed=1).eval(), tiny_generator(FACE, seed=2).eval()
        lp = LPIPS("vgg")
        res = ig.optimise(Gb_i, Gf_i, wb.clone(), wf.clone(), TIGHT_BOX, ig.Schedule("two", (ig.Phase(
            "alternate", 2, {"face": 0.01, "body": 0.01}, {"face": {"coarse": (1, 0)}, "body": {"coarse": (1, 0)}},
            switch_every=1),), "w+", "w+", "vgg"), lp, box_scale=1.25, border_px=3)
    assert len(res.history) == 2
