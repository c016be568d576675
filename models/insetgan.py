"""InsetGAN: jointly optimise a face GAN (the inset) and a body GAN (the canvas) so the pasted face fits the body.

Specification: gan.md §10. One set of loss terms serves all schedules; each schedule gives weights per phase:
- `coarse`  (L1, LPIPS): the face area-resized into the paste box, and the body's crop there, both area-resized
             to 64×64;
- `border`  (L1, LPIPS) and `border_l2` (L2): the same two images restricted to an 8-px frame along the box edge;
- `body`    (L1, LPIPS): the body image outside the box enlarged by box_height/20, against a reference body
             (the start, or a snapshot taken at `body_ref_at`);
- `face`    (L1, LPIPS): the face image inside its identity rect (±4 px), against a reference face;
- `reg`     (L2): mean squared distance of the body ws to the body generator's w_avg.
The official configs' terms map onto these: L1/perceptual → coarse, L1_in/perceptual_in → face, edge → border_l2,
perceptual_edge → border (LPIPS), selected_body(_L1) → body, mean_latent → reg. Unlike the official code the edge
terms are active from the first iteration (its warm-up multiplies them by max(j−300, 0)/300: zero until 300).

Each side has its own Adam optimiser with a linear ramp-up over the first 5% and a cosine ramp-down over the last
25% of that side's steps. The state with the lowest border L1 is returned: the latents together with the images
they render (a step's loss is measured before its update, so the snapshot keeps the pre-update latents). No graph is
kept across steps. `steps_scale` scales every step count of a schedule alike (`scaled_schedule`): phases, turns,
re-detection and the steps at which the references are frozen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..utils.errors import HumanGenError
from .inversion import adam, autograd_ready, normal_tensor, optimisation_mode, perceptual_scope, synthesis_dtype
from .ops import frozen_weights

TERMS = ("coarse", "border", "border_l2", "body", "face", "reg")
NEVER = 10 ** 9  # `redetect_until` default: re-detect for the whole phase


@dataclass(frozen=True)
class Phase:
    side: str  # "face" | "body" | "alternate" (starting with `first`)
    steps: int
    lr: dict  # {"face": peak lr, "body": peak lr}
    weights: dict  # {"face": {term: (w1, w2)}, "body": {...}}
    switch_every: int = 0  # alternate phases: steps per turn
    first: str = "face"
    redetect_every: int = 0  # body steps between face-box re-detections (0 = never)
    redetect_until: int = NEVER  # stop re-detecting after this many body steps


@dataclass(frozen=True)
class Schedule:
    name: str
    phases: tuple
    body_space: str  # "w" (one vector for all layers, official canvas) or "w+"
    face_space: str
    lpips_net: str  # upstream's LPIPS backbone
    body_ref_at: int = 0  # total step at which the body reference is frozen (0 = the start; earlier: body loss off)
    face_ref_at: int = 0
    truncation_psi: float = 1.0  # upstream's default truncation, for the node's "auto" setting


_SH_FACE1 = {"face": (5000, 1.75), "coarse": (50, 0.05), "border": (1000, 0.1)}
_SH_BODY = {"coarse": (500, 0.05), "border": (2500, 0), "body": (9000, 0.1), "reg": (15000, 0)}
_SH_FACE3 = {"face": (5000, 1.75), "coarse": (500, 0.05), "border": (25000, 0)}
_SH_BODY3 = {"coarse": (500, 0.05), "border": (2500, 0), "body": (9000, 0.1), "reg": (25000, 0)}
_OFF_CANVAS = {"coarse": (1000, 0.15), "border_l2": (5000, 0), "reg": (20000, 0), "body": (1000, 0.01)}
_OFF_INSET_1 = {"coarse": (500, 0.05), "face": (1000, 0.4), "border": (0, 0.25), "border_l2": (20000, 0)}
_OFF_INSET_2 = {"coarse": (1000, 0.07), "face": (0, 0.1), "border": (0, 0.25), "border_l2": (20000, 0)}

SCHEDULES: dict[str, Schedule] = {
    "stylegan-human": Schedule(
        "stylegan-human",
        (Phase("face", 25, {"face": 0.01}, {"face": _SH_FACE1}),
         Phase("body", 150, {"body": 0.05}, {"body": _SH_BODY}, redetect_every=50),
         Phase("alternate", 500, {"face": 0.02, "body": 0.05}, {"face": _SH_FACE3, "body": _SH_BODY3},
               switch_every=50, first="face")),
        body_space="w+", face_space="w+", lpips_net="alex", truncation_psi=0.6),
    "official-loose": Schedule(
        "official-loose",
        (Phase("alternate", 400, {"face": 0.006, "body": 0.035}, {"face": _OFF_INSET_1, "body": _OFF_CANVAS},
               switch_every=40, first="body", redetect_every=20, redetect_until=100),),
        body_space="w", face_space="w+", lpips_net="vgg", body_ref_at=75, face_ref_at=0, truncation_psi=0.5),
    "official-inset": Schedule(
        "official-inset",
        (Phase("alternate", 400, {"face": 0.005, "body": 0.035}, {"face": _OFF_INSET_2, "body": _OFF_CANVAS},
               switch_every=40, first="face", redetect_every=20, redetect_until=100),),
        body_space="w", face_space="w+", lpips_net="vgg", body_ref_at=0, face_ref_at=120, truncation_psi=0.5),
}


def lr_at(step: int, total: int, peak: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    t = step / max(total, 1)
    ramp = 0.5 - 0.5 * math.cos(min(1.0, (1.0 - t) / rampdown) * math.pi)
    return peak * ramp * min(1.0, t / rampup) if rampup > 0 else peak * ramp


def scaled_steps(n: int, steps_scale: float) -> int:
    """One step count of a schedule under `steps_scale`: 0 stays 0 (a switch that is off, or on from the start);
    any other count becomes round(n * steps_scale), at least 1. Every count of a schedule goes through here."""
    return 0 if n <= 0 else max(1, int(round(n * steps_scale)))


def scaled_schedule(schedule: Schedule, steps_scale: float = 1.0) -> Schedule:
    """The schedule a run with `steps_scale` follows: every step count scaled the same way (phase lengths, turn
    length, re-detection interval and cut-off, the steps at which the body and face references are frozen), so a
    short run keeps the full run's proportions: each term and reference switches on at the same fraction of the run.
    A reference step is kept inside the run (at most its last step) so the term it enables always switches on."""
    if steps_scale <= 0:
        raise HumanGenError(f"steps_scale must be > 0, got {steps_scale}")
    phases = tuple(replace(
        p, steps=scaled_steps(p.steps, steps_scale),
        switch_every=scaled_steps(p.switch_every, steps_scale),
        redetect_every=scaled_steps(p.redetect_every, steps_scale),
        redetect_until=p.redetect_until if p.redetect_until >= NEVER else scaled_steps(p.redetect_until, steps_scale))
        for p in schedule.phases)
    last = sum(p.steps for p in phases) - 1

    def ref(n):
        return min(scaled_steps(n, steps_scale), last)
    return replace(schedule, phases=phases, body_ref_at=ref(schedule.body_ref_at),
                   face_ref_at=ref(schedule.face_ref_at))


def side_plan(schedule: Schedule, steps_scale: float = 1.0) -> list[tuple[str, int, int, int, Phase]]:
    """Expand a schedule (scaled by `steps_scale`, see `scaled_schedule`) into steps: (side, phase index, this side's
    step within the phase, its total, the scaled phase)."""
    plan = []
    for pi, phase in enumerate(scaled_schedule(schedule, steps_scale).phases):
        steps = phase.steps
        if phase.side in ("face", "body"):
            plan += [(phase.side, pi, i, steps, phase) for i in range(steps)]
            continue
        turn = max(1, phase.switch_every)
        sides = (phase.first, "body" if phase.first == "face" else "face")
        order = [sides[(i // turn) % 2] for i in range(steps)]
        totals = {s: order.count(s) for s in sides}
        seen = {s: 0 for s in sides}
        for side in order:
            plan.append((side, pi, seen[side], totals[side], phase))
            seen[side] += 1
    return plan


# ---- geometry -------------------------------------------------------------------------------------------------
def paste_box(face_box, image_hw: tuple[int, int], scale: float) -> tuple[int, int, int, int]:
    """A square paste box (x0, y0, x1, y1), integer pixels inside the image, from a tight face box scaled about its
    centre (an FFHQ crop spans about twice a tight face box)."""
    x0, y0, x1, y1 = [float(v) for v in face_box[:4]]
    h, w = image_hw
    side = int(round(max(x1 - x0, y1 - y0) * scale))
    side = max(8, min(side, h, w))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bx = int(round(min(max(cx - side / 2, 0), w - side)))
    by = int(round(min(max(cy - side / 2, 0), h - side)))
    return bx, by, bx + side, by + side


def recentre(box: tuple[int, int, int, int], new_face_box, image_hw, scale: float) -> tuple[int, int, int, int]:
    """Keep the box size, move it to the re-detected face's centre (as StyleGAN-Human's re-detection does)."""
    side = box[2] - box[0]
    nb = paste_box(new_face_box, image_hw, scale)
    if abs((nb[0] + nb[2]) / 2 - (box[0] + box[2]) / 2) > side / 2 or \
            abs((nb[1] + nb[3]) / 2 - (box[1] + box[3]) / 2) > side / 2:
        return box  # a jump of more than half a box is a wrong detection: keep the old box
    cx, cy = (nb[0] + nb[2]) / 2, (nb[1] + nb[3]) / 2
    return paste_box((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), image_hw, 1.0)


def frame_mask(h: int, w: int, width: int = 8, device=None) -> torch.Tensor:
    m = torch.ones(h, w, device=device)
    b = min(width, h // 2, w // 2)
    m[b:h - b, b:w - b] = 0
    return m


def outside_mask(image_hw, box, margin: int, device=None) -> torch.Tensor:
    h, w = image_hw
    m = torch.ones(h, w, device=device)
    x0, y0, x1, y1 = box
    m[max(0, y0 - margin):min(h, y1 + margin), max(0, x0 - margin):min(w, x1 + margin)] = 0
    return m


def rect_mask(image_hw, rect, pad: int = 4, device=None) -> torch.Tensor:
    h, w = image_hw
    m = torch.zeros(h, w, device=device)
    x0, y0, x1, y1 = [int(round(v)) for v in rect[:4]]
    m[max(0, y0 - pad):min(h, y1 + pad), max(0, x0 - pad):min(w, x1 + pad)] = 1
    return m


def default_face_rect(size_hw) -> tuple[float, float, float, float]:
    """Where the face sits in an FFHQ-aligned image when no detector result is given."""
    h, w = size_hw
    return (0.3 * w, 0.3 * h, 0.7 * w, 0.78 * h)


# ---- losses ---------------------------------------------------------------------------------------------------
def _area(x: torch.Tensor, hw) -> torch.Tensor:
    return x if tuple(x.shape[2:]) == tuple(hw) else F.interpolate(x, size=tuple(hw), mode="area")


def _lpips(lpips, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS at a workable size: at most 256 (area), at least 64 (bilinear) on the short side."""
    h, w = a.shape[2:]
    s = min(h, w)
    if s < 64 or max(h, w) > 256:
        f = 64 / s if s < 64 else 256 / max(h, w)
        hw = (max(1, int(round(h * f))), max(1, int(round(w * f))))
        mode = "bilinear" if s < 64 else "area"
        kw = {"align_corners": False} if mode == "bilinear" else {}
        a, b = F.interpolate(a, size=hw, mode=mode, **kw), F.interpolate(b, size=hw, mode=mode, **kw)
    return lpips(a, b).mean()


def _masked_l1(a, b, m):
    return ((a - b).abs() * m).sum() / (m.sum() * a.shape[1] * a.shape[0]).clamp_min(1)


def _masked_l2(a, b, m):
    return ((a - b).square() * m).sum() / (m.sum() * a.shape[1] * a.shape[0]).clamp_min(1)


def compute_losses(weights: dict, face_img, body_img, box, face_rect, body_ref, face_ref, w_body, w_avg, lpips,
                   border_px: int = 8) -> tuple[torch.Tensor, dict]:
    """The weighted loss for one side's turn and every term's unweighted values (for the curve and best state)."""
    x0, y0, x1, y1 = box
    face_small = _area(face_img, (y1 - y0, x1 - x0))
    crop = body_img[:, :, y0:y1, x0:x1]
    terms: dict[str, torch.Tensor] = {}
    total = face_img.new_zeros(())
    fm = frame_mask(y1 - y0, x1 - x0, border_px, crop.device)
    with torch.no_grad():
        terms["border_l1"] = _masked_l1(face_small, crop, fm)
    for name, (w1, w2) in weights.items():
        if name == "coarse":
            a, b = _area(face_small, (64, 64)), _area(crop, (64, 64))
            v1, v2 = (a - b).abs().mean(), (_lpips(lpips, a, b) if w2 else None)
        elif name == "border":
            v1, v2 = _masked_l1(face_small, crop, fm), (_lpips(lpips, face_small * fm, crop * fm) if w2 else None)
        elif name == "border_l2":
            v1, v2 = _masked_l2(face_small, crop, fm), None
        elif name == "body":
            if body_ref is None:
                continue
            m = outside_mask(body_img.shape[2:], box, max(1, (y1 - y0) // 20), body_img.device)
            v1, v2 = _masked_l1(body_img, body_ref, m), (_lpips(lpips, body_img * m, body_ref * m) if w2 else None)
        elif name == "face":
            if face_ref is None:
                continue
            m = rect_mask(face_img.shape[2:], face_rect, 4, face_img.device)
            v1, v2 = _masked_l1(face_img, face_ref, m), (_lpips(lpips, face_img * m, face_ref * m) if w2 else None)
        elif name == "reg":
            v1, v2 = (w_body - w_avg).square().mean(), None
        else:
            raise HumanGenError(f"unknown InsetGAN loss term {name!r}; known: {TERMS}")
        total = total + w1 * v1 + (w2 * v2 if v2 is not None else 0)
        terms[name] = (v1.detach() + (v2.detach() if v2 is not None else 0))
    return total, {k: float(v) for k, v in terms.items()}


# ---- optimisation ----------------------------------------------------------------------------------------------
@dataclass
class InsetResult:
    body_ws: torch.Tensor  # [1, num_ws_body, w_dim]
    face_ws: torch.Tensor
    box: tuple[int, int, int, int]
    body_img: torch.Tensor  # [1,3,H,W] in [-1,1] at the best state
    face_img: torch.Tensor
    history: list[dict] = field(default_factory=list)  # per step: side, total, border_l1, terms
    best_step: int = -1


class _Latent(torch.nn.Module):
    """Learnable latent: 'w' = one vector broadcast to all layers; 'w+' = the start ws plus a learnable delta."""

    def __init__(self, ws: torch.Tensor, space: str):
        super().__init__()
        self.space = space
        self.num_ws = ws.shape[1]
        if space == "w":
            self.w = torch.nn.Parameter(ws.mean(1, keepdim=True).clone())
        elif space == "w+":
            self.register_buffer("base", ws.clone())
            self.delta = torch.nn.Parameter(torch.zeros_like(ws))
        else:
            raise HumanGenError(f"latent space must be 'w' or 'w+', got {space!r}")

    def forward(self) -> torch.Tensor:
        return self.w.repeat(1, self.num_ws, 1) if self.space == "w" else self.base + self.delta


def optimise(G_body, G_face, body_ws: torch.Tensor, face_ws: torch.Tensor, face_box, schedule: Schedule, lpips, *,
             steps_scale: float = 1.0, box_scale: float = 2.0, face_rect=None,
             redetect: Callable[[torch.Tensor], object] | None = None, noise_mode: str = "const",
             noise_seed: int = 0, border_px: int = 8, impl: str = "auto", precision: str = "fp32",
             callback: Callable[[int, int, dict], None] | None = None) -> InsetResult:
    """Run `schedule`. `face_box` is a tight face box (x0,y0,x1,y1[,score]) in body pixels; `redetect(body_img)`
    returns a new tight box or None; `precision` in `inversion.PRECISIONS` ('bf16': both generators and LPIPS in
    bfloat16, latents and losses in float32); `callback(step, total, info)` reports progress and may raise to stop."""
    if body_ws.ndim != 3 or face_ws.ndim != 3 or body_ws.shape[0] != 1 or face_ws.shape[0] != 1:
        raise HumanGenError("InsetGAN optimises one body and one face latent ([1, num_ws, w_dim] each)")
    synthesis_dtype(precision)  # an unknown precision fails before anything is copied
    with optimisation_mode(), frozen_weights():  # both generators are frozen: weight-derived tensors are reused
        return _optimise(autograd_ready(G_body), autograd_ready(G_face), normal_tensor(body_ws),
                         normal_tensor(face_ws), face_box, schedule, autograd_ready(lpips), steps_scale=steps_scale,
                         box_scale=box_scale, face_rect=face_rect, redetect=redetect, noise_mode=noise_mode,
                         noise_seed=noise_seed, border_px=border_px, impl=impl, precision=precision,
                         callback=callback)


def _optimise(G_body, G_face, body_ws, face_ws, face_box, schedule, lpips, *, steps_scale, box_scale, face_rect,
              redetect, noise_mode, noise_seed, border_px, impl, precision, callback) -> InsetResult:
    device = next(G_body.parameters()).device
    G_body = G_body.eval().requires_grad_(False)
    G_face = G_face.eval().requires_grad_(False)
    lat = {"body": _Latent(body_ws.to(device).float(), schedule.body_space),
           "face": _Latent(face_ws.to(device).float(), schedule.face_space)}
    gens = {"body": G_body, "face": G_face}
    opts = {s: adam(lat[s].parameters(), lr=0.0) for s in lat}
    w_avg = getattr(G_body.mapping, "w_avg", body_ws.mean(1)).detach().to(device).view(1, 1, -1)

    noise = {"noise_mode": noise_mode, "impl": impl, "dtype": synthesis_dtype(precision)}
    if noise_mode == "random":  # a local generator: the same seed gives the same result
        noise["generator"] = torch.Generator(device=device).manual_seed(noise_seed)

    def render(side):
        return gens[side].synthesis(lat[side](), **noise)

    with torch.no_grad():
        imgs = {s: render(s) for s in lat}
    # the latents each image in `imgs` was rendered from: a snapshot pairs these with the images, never the latents
    # after the optimiser's update (which render something else)
    shown = {s: lat[s]().detach().clone() for s in lat}
    stale = {s: False for s in lat}  # the side's latents moved since its image was rendered
    body_hw = tuple(imgs["body"].shape[2:])
    box = paste_box(face_box, body_hw, box_scale)
    face_rect = face_rect or default_face_rect(imgs["face"].shape[2:])
    run = scaled_schedule(schedule, steps_scale)  # reference steps and re-detection scale with the phases
    refs = {"body": imgs["body"].clone() if run.body_ref_at == 0 else None,
            "face": imgs["face"].clone() if run.face_ref_at == 0 else None}

    plan = side_plan(schedule, steps_scale)
    best = (float("inf"), -1, None)
    history = []
    body_steps = 0
    for step, (side, _, side_step, side_total, phase) in enumerate(plan):
        other = "face" if side == "body" else "body"
        imgs[side] = render(side)  # with grad for the side being optimised
        shown[side] = lat[side]().detach().clone()
        if stale[other]:  # its last turn ended with an update: re-render so the loss sees its current latents
            with torch.no_grad():
                imgs[other] = render(other)
            shown[other], stale[other] = lat[other]().detach().clone(), False
        if step == run.body_ref_at and refs["body"] is None:
            refs["body"] = imgs["body"].detach().clone()
        if step == run.face_ref_at and refs["face"] is None:
            refs["face"] = imgs["face"].detach().clone()
        if side == "body" and redetect is not None and phase.redetect_every and body_steps \
                and body_steps % phase.redetect_every == 0 and body_steps <= phase.redetect_until:
            found = redetect(imgs["body"].detach())
            if found is not None:
                box = recentre(box, found, body_hw, box_scale)
        for group in opts[side].param_groups:
            group["lr"] = lr_at(side_step, side_total, phase.lr[side])
        w_body = lat["body"]() if side == "body" else lat["body"]().detach()
        with perceptual_scope(precision, device):
            loss, terms = compute_losses(phase.weights[side], imgs["face"], imgs["body"], box, face_rect,
                                         refs["body"], refs["face"], w_body, w_avg, lpips, border_px)
        if terms["border_l1"] < best[0]:  # the state before this step's update: latents and images together
            best = (terms["border_l1"], step, (shown["body"], shown["face"], box, imgs["body"].detach().clone(),
                                               imgs["face"].detach().clone()))
        for opt in opts.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        opts[side].step()
        imgs[side] = imgs[side].detach()
        stale[side] = True
        history.append({"step": step, "side": side, "total": float(loss.detach()), **terms})
        body_steps += side == "body"
        if callback is not None:
            callback(step + 1, len(plan), history[-1])
    # every image above was rendered before its step's update; render the final latents once for the last state
    with torch.no_grad():
        final = {s: render(s) for s in lat}
        final_ws = {s: lat[s]().detach().clone() for s in lat}
    from_last = compute_losses({}, final["face"], final["body"], box, face_rect, None, None, final_ws["body"], w_avg,
                               lpips, border_px)[1]["border_l1"]
    if from_last < best[0]:
        best = (from_last, len(plan), (final_ws["body"], final_ws["face"], box, final["body"], final["face"]))
    b_ws, f_ws, b_box, b_img, f_img = best[2]
    return InsetResult(b_ws.cpu(), f_ws.cpu(), b_box, b_img.cpu(), f_img.cpu(), history, best[1])


# ---- compositing ----------------------------------------------------------------------------------------------
BLENDS = ("hard", "feather", "poisson")


def composite(body_img: torch.Tensor, face_img: torch.Tensor, box, blend: str = "feather",
              radius: int = 8) -> torch.Tensor:
    """Paste the face (area-resized into `box`) onto the body. [1,3,H,W] in [-1,1] -> same."""
    if blend not in BLENDS:
        raise HumanGenError(f"blend must be one of {BLENDS}, got {blend!r}")
    x0, y0, x1, y1 = box
    face_small = _area(face_img, (y1 - y0, x1 - x0))
    out = body_img.clone()
    if blend == "hard":
        out[:, :, y0:y1, x0:x1] = face_small
        return out
    if blend == "feather":
        alpha = feather_alpha(y1 - y0, x1 - x0, radius).to(out)
        out[:, :, y0:y1, x0:x1] = alpha * face_small + (1 - alpha) * out[:, :, y0:y1, x0:x1]
        return out
    import cv2
    src = _to_uint8(face_small)
    dst = _to_uint8(body_img)
    mask = np.zeros(src.shape[:2], np.uint8)
    b = max(1, min(radius, (y1 - y0) // 4))
    mask[b:-b, b:-b] = 255
    centre = (x0 + (x1 - x0) // 2, y0 + (y1 - y0) // 2)
    blended = cv2.seamlessClone(src[..., ::-1].copy(), dst[..., ::-1].copy(), mask, centre, cv2.NORMAL_CLONE)
    return torch.from_numpy(blended[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def feather_alpha(h: int, w: int, radius: int) -> torch.Tensor:
    """1 inside, ramping linearly to 0 over `radius` px at the box edge."""
    if radius <= 0:
        return torch.ones(h, w)
    ys = torch.arange(h).float()
    xs = torch.arange(w).float()
    dy = torch.minimum(ys + 0.5, h - ys - 0.5)
    dx = torch.minimum(xs + 0.5, w - xs - 0.5)
    d = torch.minimum(dy[:, None], dx[None, :])
    return (d / radius).clamp(0, 1)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x[0].detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def loss_curve(history: list[dict], width: int = 480, height: int = 240) -> np.ndarray:
    """A small uint8 plot of the total loss (per side) and the border L1 (log scale), for debugging by eye."""
    from PIL import Image, ImageDraw
    im = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(im)
    if not history:
        return np.asarray(im)
    pad = 24
    series = {"body": [(h["step"], h["total"]) for h in history if h["side"] == "body"],
              "face": [(h["step"], h["total"]) for h in history if h["side"] == "face"],
              "border": [(h["step"], h["border_l1"]) for h in history]}
    colours = {"body": (40, 90, 200), "face": (200, 60, 40), "border": (30, 150, 60)}
    n = max(h["step"] for h in history) + 1
    for i, (name, pts) in enumerate(series.items()):
        if len(pts) < 1:
            continue
        vals = np.log10(np.maximum([p[1] for p in pts], 1e-12))
        lo, hi = float(vals.min()), float(vals.max())
        span = hi - lo or 1.0
        xy = [(pad + (p[0] / max(n - 1, 1)) * (width - 2 * pad), height - pad - (v - lo) / span * (height - 2 * pad))
              for p, v in zip(pts, vals)]
        if len(xy) > 1:
            d.line(xy, fill=colours[name], width=2)
        d.text((pad + i * 140, 4), f"{name} (log, {10 ** lo:.3g}..{10 ** hi:.3g})", fill=colours[name])
    d.rectangle([pad, pad, width - pad, height - pad], outline=(160, 160, 160))
    d.text((pad, height - pad + 4), f"steps 0..{n - 1}", fill=(90, 90, 90))
    return np.asarray(im)
