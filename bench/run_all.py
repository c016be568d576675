"""Every benchmark of the pack in one command and one table: workload, reference, fast, ratio, peak memory, max abs diff.

    python bench/run_all.py --quick          # a few minutes on 2 CPU cores: small shapes
    python bench/run_all.py                  # full shapes (README tables), much longer on a CPU
    python bench/run_all.py --only sg3r,projection --device cuda --threads 8
    python bench/run_all.py --quick --threads 1 --clock cpu   # on a busy shared machine: CPU time of the process
    python bench/run_all.py --only sg3r --rounds 3            # a drifting machine: sides alternate, best of each

Each (workload, side) runs in its own subprocess, so peak RSS (or peak GPU memory) is that side's alone and one
side's caches cannot help the other. Both sides of a row run in the same invocation, one after the other, so the
ratio compares like with like on a shared machine. "reference" is the pack's reference ops path for the GAN rows
(`impl=ref`, NVIDIA's formulation) and a bare diffusers loop (UNet + scheduler, nothing else) for the diffusion rows;
"fast" is what the nodes run. Times are the best of `--runs` after one warm-up (per step for the optimisation and
diffusion rows). GFLOP is counted on the fast side with torch's FlopCounterMode (convolutions and matmuls;
forward + backward for the optimisation rows), and GFLOP/s is what that side attained. Where the device has no bf16
units the `-bf16` rows are listed as skipped unless named in `--only` (emulated bf16 takes 20-50x as long as fp32).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

from _pack import load_pack  # noqa: E402 (bench/ is the script's folder, on sys.path)

HERE = os.path.dirname(os.path.abspath(__file__))
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]  # set by --clock in each worker


@dataclass(frozen=True)
class Workload:
    name: str
    describe: Callable[[bool], str]  # quick -> text for the table
    run: Callable[..., dict]         # run(side, quick, device, runs) -> {"ms", "out", "gflop"?}
    sides: tuple[str, str] = ("ref", "fast")


WORKLOADS: dict[str, Workload] = {}


def register(name: str, describe, sides=("ref", "fast")):
    def wrap(fn):
        WORKLOADS[name] = Workload(name, describe, fn, sides)
        return fn
    return wrap


# ---- shared helpers -------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_ms(fn: Callable[[], object], runs: int, device: str, warmup: bool = True) -> tuple[float, object]:
    if warmup:
        fn()
    times, out = [], None
    for _ in range(runs):
        _sync(device)
        t = clock()
        out = fn()
        _sync(device)
        times.append(clock() - t)
    return 1000 * min(times), out


def peak_mb(device: str) -> float:
    """Peak memory of this worker so far: GPU memory allocated by torch, or the process's peak RSS."""
    import torch
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def count_gflop(fn: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def sg2_kwargs(res: int, square: bool, fp16_res: int = 4) -> dict:
    return {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": res, "img_channels": 3, "square": square,
            "mapping_kwargs": {"num_layers": 8},
            "synthesis_kwargs": {"channel_base": 32768, "channel_max": 512, "num_fp16_res": fp16_res,
                                 "conv_clamp": 256, "architecture": "skip"}}


def sg3r_kwargs(res: int) -> dict:
    return {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": res, "img_channels": 3, "square": False,
            "mapping_kwargs": {"num_layers": 2}, "channel_base": 65536, "channel_max": 1024, "num_fp16_res": 4,
            "conv_clamp": 256, "conv_kernel": 1, "use_radial_filters": True, "magnitude_ema_beta": 0.999}


def _generator(kwargs: dict, device: str):
    import numpy as np
    import torch
    from humangen.models import build_generator
    torch.manual_seed(0)
    G = build_generator(kwargs).to(device).eval().requires_grad_(False)
    z = torch.from_numpy(np.random.RandomState(1).randn(1, G.z_dim)).float().to(device)
    with torch.no_grad():
        ws = G.mapping(z, None, truncation_psi=0.7)
    return G, ws


def _synthesis_row(kwargs: dict, side: str, device: str, runs: int, slow_ref: bool) -> dict:
    import torch
    G, ws = _generator(kwargs, device)

    def once():
        with torch.no_grad():
            return G.synthesis(ws, noise_mode="const", impl=side)
    warm = not (slow_ref and side == "ref")  # the reference SG3-R is slow: timed once, without warm-up
    ms, img = best_ms(once, runs if warm else 1, device, warmup=warm)
    peak = peak_mb(device)  # of the timed calls: counting FLOPs hooks every module, which turns the arena off
    return {"ms": ms, "out": img.float().cpu(), "gflop": count_gflop(once) if side == "fast" else None,
            "peak_mb": peak}


# ---- StyleGAN synthesis ------------------------------------------------------------------------------------------
@register("sg2", lambda q: f"StyleGAN2 synthesis {'512x256' if q else '1024x512'}, batch 1, fp32")
def _sg2(side, quick, device, runs):
    return _synthesis_row(sg2_kwargs(512 if quick else 1024, False), side, device, runs, slow_ref=False)


@register("sg3r", lambda q: "StyleGAN3-R synthesis 512x256, batch 1, fp32")
def _sg3r(side, quick, device, runs):
    # 512x256 in both modes: the ≥10x target is set at this size, and at 256x128 fixed per-layer work weighs more
    return _synthesis_row(sg3r_kwargs(512), side, device, runs, slow_ref=True)


# ---- optimisation workloads: one forward + backward + Adam step ------------------------------------------------
def _step_timer(runner: Callable[[Callable], None], steps: int) -> float:
    """Run an optimisation with `steps` steps and return the best step time in ms (the first step is warm-up)."""
    times, last = [], [clock()]

    def tick(*_):
        now = clock()
        times.append(now - last[0])
        last[0] = now
    last[0] = clock()
    runner(tick)
    timed = times[1:] or times
    return 1000 * min(timed)


def _with_impl(side: str) -> str:
    """Set the ops path for a side ('ref', 'fast', or 'bf16': the fast ops at bf16 precision) and return the
    optimisation's precision."""
    os.environ["HUMANGEN_OPS_IMPL"] = "fast" if side == "bf16" else side  # the loops call synthesis with impl='auto'
    return "bf16" if side == "bf16" else "fp32"


def register_optimisation(name: str, describe):
    """An optimisation row (reference ops against the nodes' fp32 path) and its '<name>-bf16' row (reference fp32
    against the fast ops at precision bf16: convolutions and LPIPS in bfloat16, latents and losses in float32)."""
    def wrap(fn):
        register(name, describe)(fn)
        register(f"{name}-bf16", lambda q: describe(q) + ", fast side bf16", sides=("ref", "bf16"))(fn)
        return fn
    return wrap


@register_optimisation("projection", lambda q: f"projection step (SG2 {'256x128' if q else '512x256'} W+ and noise, "
                                               f"LPIPS vgg, fwd+bwd)")
def _projection(side, quick, device, runs):
    import torch
    from humangen.models import inversion
    from humangen.models.lpips import LPIPS
    precision = _with_impl(side)
    G, ws = _generator(sg2_kwargs(256 if quick else 512, False, fp16_res=0), device)
    target = torch.rand(1, 3, G.img_height, G.img_width, device=device) * 2 - 1
    lpips = LPIPS("vgg").to(device)
    cfg = inversion.ProjectionConfig(num_steps=runs + 1, w_avg_samples=200, precision=precision)
    out = {}

    def go(tick):
        out["r"] = inversion.project(G, target, lpips, cfg, callback=tick)
    ms = _step_timer(go, runs + 1)
    return {"ms": ms, "out": out["r"].ws}


@register_optimisation("pti", lambda q: f"PTI step (SG2 {'256x128' if q else '512x256'}, all weights, "
                                        f"MSE + LPIPS alex, fwd+bwd)")
def _pti(side, quick, device, runs):
    import torch
    from humangen.models import inversion
    from humangen.models.lpips import LPIPS
    precision = _with_impl(side)
    G, ws = _generator(sg2_kwargs(256 if quick else 512, False, fp16_res=0), device)
    target = torch.rand(1, 3, G.img_height, G.img_width, device=device) * 2 - 1
    lpips = LPIPS("alex").to(device)
    cfg = inversion.PTIConfig(max_steps=runs + 1, lpips_threshold=-1.0, precision=precision)
    out = {}

    def go(tick):
        out["r"] = inversion.pivotal_tuning(G, ws, target, lpips, cfg, callback=tick)
    ms = _step_timer(go, runs + 1)
    with torch.no_grad():
        img = out["r"].generator.synthesis(ws, noise_mode="const", impl="ref")
    return {"ms": ms, "out": img.float().cpu()}


def _insetgan(side, res, device, runs):
    from humangen.models import insetgan as ig
    from humangen.models.lpips import LPIPS
    G_body, wb = _generator(sg2_kwargs(res, False, fp16_res=0), device)
    G_face, wf = _generator(sg2_kwargs(res // 2, True, fp16_res=0), device)
    lpips = LPIPS("alex").to(device)
    joint = ig.SCHEDULES["stylegan-human"].phases[2]
    phase = ig.Phase("alternate", runs + 1, joint.lr, joint.weights, switch_every=1, first="body")
    schedule = ig.Schedule("bench", (phase,), "w+", "w+", "alex")
    box = (res * 0.23 / 2, res * 0.05, res * 0.30 / 2, res * 0.12)  # a face-sized box near the top of the body
    precision = _with_impl(side)
    out = {}

    def go(tick):
        out["r"] = ig.optimise(G_body, G_face, wb, wf, box, schedule, lpips, impl=os.environ["HUMANGEN_OPS_IMPL"],
                               precision=precision, callback=tick)
    ms = _step_timer(go, runs + 1)
    return {"ms": ms, "out": out["r"].body_ws}


@register_optimisation("insetgan256",
                       lambda q: "InsetGAN step, body 256x128 + face 128 (SG2, LPIPS alex, fwd+bwd)")
def _insetgan256(side, quick, device, runs):
    return _insetgan(side, 256, device, runs)


@register_optimisation("insetgan512",
                       lambda q: "InsetGAN step, body 512x256 + face 256 (SG2, LPIPS alex, fwd+bwd)")
def _insetgan512(side, quick, device, runs):
    return _insetgan(side, 512, device, runs)


# ---- diffusion: the pack's samplers against a bare diffusers loop ----------------------------------------------
def _humansd_model(full: bool, device: str):
    # bench/humansd.py (bench/ is on sys.path): random-weight HumanSD model (small or real dimensions)
    from humansd import build
    model = build(full, device)
    for m in (model.unet, model.vae, model.text_encoder):
        m.to(device)
    return model


@register("humansd", lambda q: f"HumanSD DDIM step, {'small UNet 256x256' if q else 'SD2.1 UNet 512x512'}, "
                               f"guidance 7.5 (per step)", sides=("bare", "ours"))
def _humansd(side, quick, device, runs):
    import torch
    from humangen.models.humansd import pipeline as P
    from humangen.models.humansd import sampler as S
    model = _humansd_model(not quick, device)
    size = 256 if quick else 512
    pose = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    off = P.Offloader(device, offload_device=device)
    guidance = 7.5

    def bare(steps):
        from diffusers import DDIMScheduler
        with torch.no_grad():
            cond = P.encode_text(model, ["a person"], device)
            unc = P.encode_text(model, ["bad"], device)
            lat = P.encode_images(model, pose, device)
            sched = DDIMScheduler(**model.configs["scheduler"])
            sched.set_timesteps(steps)
            x = S.randn_items(S.item_generators(0, 1), (4, *lat.shape[-2:]), device)
            ctx = torch.cat([unc, cond])
            lat2 = torch.cat([lat, lat])
            t0 = clock()
            for t in sched.timesteps[1:]:
                e = model.unet(torch.cat([torch.cat([x, x]), lat2], 1), t, encoder_hidden_states=ctx).sample
                e_u, e_c = e.chunk(2)
                x = sched.step(e_u + guidance * (e_c - e_u), t, x).prev_sample
            _sync(device)
            return (clock() - t0) / (steps - 1), x

    def ours(steps):
        stamps = []
        res = P.generate(model, pose, "a person", "bad", steps=steps, guidance=guidance, precision="fp32",
                         scheduler="ddim", offloader=off, callback=lambda *a: stamps.append(clock()))
        # per step: between the first and the last step callbacks (setup and decoding excluded, as in the bare loop)
        return (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1), res
    steps = 4  # DDIM as HumanSD runs 3 UNet steps (it skips the first timestep)
    fn = bare if side == "bare" else ours
    fn(steps)  # warm-up
    best, out = float("inf"), None
    for _ in range(runs):
        t, out = fn(steps)
        best = min(best, t)
    latents = out.latents if hasattr(out, "latents") else out
    return {"ms": 1000 * best, "out": latents.float().cpu()}


@register("parts2whole", lambda q: f"Parts2Whole DDIM step, "
                                  f"{'tiny random model 64x64' if q else 'SD 1.5 UNets 512x512'}, 2 parts, "
                                  f"guidance 3.5 (per step)", sides=("bare", "ours"))
def _parts2whole(side, quick, device, runs):
    """`bare` runs the UNet (with the pack's part-bank attention processors and pose hook installed: that is the
    model) and the scheduler in a plain loop; `ours` is the node's sampler, timed between step callbacks."""
    import torch
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
    import p2w_tiny  # builds the tiny random Parts2Whole folder the tests use, in the hub's layout
    from humangen.models.parts2whole import pipeline as P
    from humangen.models.parts2whole.attention import ReadState, installed_processors, read_processors
    from humangen.models.parts2whole.loader import load_parts2whole
    from humangen.models.parts2whole.parts import PartRef
    from humangen.models.parts2whole.pose_guider import pose_feature_added
    if quick:
        with tempfile.TemporaryDirectory() as tmp:
            model = load_parts2whole(p2w_tiny.build(os.path.join(tmp, "p2w")), device=device)
        size, steps = p2w_tiny.SIZE, 6
    else:
        sys.path.insert(0, HERE)
        import p2w_full  # bench/p2w_full.py: the released dimensions, random weights, in memory
        model = p2w_full.build(device)
        size, steps = 512, 2  # 2 steps: the step between their callbacks is timed
    g = torch.Generator().manual_seed(0)
    guidance = 3.5
    parts = [PartRef(torch.rand(size, size, 3, generator=g), "upper body clothes"),
             PartRef(torch.rand(size, size, 3, generator=g), "face")]
    pose = torch.rand(1, 3, size, size, generator=g)

    def ours():
        stamps = []
        out = P.generate(model, parts, pose, "a person", "bad", steps=steps, guidance=guidance, height=size,
                         width=size, callback=lambda *a: stamps.append(clock()))
        return (stamps[-1] - stamps[0]) / (len(stamps) - 1), out

    @torch.no_grad()
    def bare():
        names = P.self_attention_names(model.unet, "full")
        images, masks = P.prepare_references(parts, size, size)
        post = model.vae.encode(images.to(device)).latent_dist
        ref_latents = post.mean * model.vae.config.scaling_factor
        labels = [p.label for p in parts]
        embeds = P.encode_texts(model, labels + ["a person", "bad"])
        bank = P.build_part_bank(model, ref_latents, torch.cat([embeds[x] for x in labels]), masks, names)
        tokens = P.encode_part_tokens(model, parts)
        context = torch.cat([torch.cat([embeds["bad"], torch.zeros_like(tokens)], 1),
                             torch.cat([embeds["a person"], tokens], 1)])
        pose_feat = model.pose_guider(pose.to(device))
        sched = model.make_scheduler()
        sched.set_timesteps(steps, device=device)
        latents = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0)).to(device)
        state = ReadState(bank)
        state.num_uncond = 1
        with installed_processors(model.unet, read_processors(names, state)), pose_feature_added(model.unet, pose_feat):
            t0 = None
            for i, t in enumerate(sched.timesteps):
                if i == 1:
                    t0 = clock()  # like `ours`: from the end of the first step to the end of the last
                x = sched.scale_model_input(torch.cat([latents, latents]), t)
                e_u, e_c = model.unet(x, t, encoder_hidden_states=context, return_dict=False)[0].chunk(2)
                latents = sched.step(e_u + guidance * (e_c - e_u), t, latents, return_dict=False)[0]
        bank.clear()
        return (clock() - t0) / (steps - 1), None

    fn = bare if side == "bare" else ours
    fn()
    best = min(fn()[0] for _ in range(max(runs, 3) if quick else runs))  # full size: a run is ~30 s on a CPU
    return {"ms": 1000 * best, "out": None}


def run_side(name: str, side: str, quick: bool, device: str, runs: int, threads: int, out_path: str,
             clock_name: str = "wall") -> None:
    import torch
    global clock
    clock = CLOCKS[clock_name]
    torch.set_num_threads(threads)
    load_pack()
    res = WORKLOADS[name].run(side, quick, device, runs)
    if res.get("out") is not None:
        torch.save(res["out"], out_path)
    print(json.dumps({"ms": res["ms"], "gflop": res.get("gflop"), "peak_mb": res.get("peak_mb") or peak_mb(device)}))


def cpu_description(bf16_native: bool) -> str:
    """The CPU's model name, the widest vector instructions PyTorch's kernels use on it, and whether bf16 runs on
    bf16 units (AVX512-BF16 or AMX; `models.inversion.native_bf16`) or is emulated: the table's ratios and its bf16
    rows depend on all three."""
    import torch
    name = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            name = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), name)
    except OSError:  # not Linux: platform.processor() is the name
        pass
    return f"{name or 'unknown CPU'}, {torch.backends.cpu.get_cpu_capability()}, " \
           f"bf16 {'native' if bf16_native else 'emulated'}"


def select_workloads(only: list[str], quick: bool, bf16_native: bool) -> tuple[list[str], list[str]]:
    """(workloads to run, workloads skipped) for `--only` (empty: all) on a device with or without bf16 units.
    Without --only: InsetGAN at 256 in quick mode, at 512 in full mode; and where bf16 is emulated the bf16 rows are
    skipped (20-50x slower than fp32 on an AVX2 CPU, half an hour of a quick run, and never what the nodes should
    run there). A workload named in --only always runs."""
    if only:
        return list(only), []
    names = [n for n in WORKLOADS if not n.startswith("insetgan512" if quick else "insetgan256")]
    skipped = [] if bf16_native else [n for n in names if "bf16" in WORKLOADS[n].sides]
    return [n for n in names if n not in skipped], skipped


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes: a few minutes on 2 CPU cores")
    ap.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(WORKLOADS)}")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run each row's sides this many times, alternating (ref, fast, ref, fast, ...), and keep each "
                         "side's best: on a machine whose speed drifts, both sides then see the same spells")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall time, or the process's CPU time (with --threads 1: what a loaded machine cannot inflate "
                         "by time-slicing; not for --device cuda)")
    ap.add_argument("--worker", nargs=3, metavar=("WORKLOAD", "SIDE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        name, side, out = args.worker
        run_side(name, side, args.quick, args.device, args.runs, args.threads, out, args.clock)
        return 0
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    load_pack()
    from humangen.models.inversion import native_bf16
    bf16_native = native_bf16(args.device)
    names, skipped = select_workloads(only, args.quick, bf16_native)
    import torch
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            wl = WORKLOADS[name]
            res = {}
            for _ in range(max(1, args.rounds)):
                for side in wl.sides:
                    out = os.path.join(tmp, f"{name}-{side}.pt")
                    cmd = [sys.executable, os.path.abspath(__file__), "--device", args.device, "--threads",
                           str(args.threads), "--runs", str(args.runs), "--clock", args.clock, "--worker", name,
                           side, out]
                    if args.quick:
                        cmd.insert(2, "--quick")
                    p = subprocess.run(cmd, capture_output=True, text=True)
                    if p.returncode != 0:
                        print(p.stderr[-3000:], file=sys.stderr)
                        raise SystemExit(f"bench {name}/{side} failed")
                    got = json.loads(p.stdout.strip().splitlines()[-1])
                    got["out"] = torch.load(out, weights_only=True) if os.path.exists(out) else None
                    print(f"# {name} {side}: {got['ms']:.1f} ms", file=sys.stderr, flush=True)
                    peak = max(got["peak_mb"], res[side]["peak_mb"]) if side in res else got["peak_mb"]
                    if side not in res or got["ms"] < res[side]["ms"]:  # the best time, the highest peak
                        res[side] = got
                    res[side]["peak_mb"] = peak
            ref, fast = (res[s] for s in wl.sides)
            diff = ((fast["out"] - ref["out"]).abs().max().item()
                    if ref["out"] is not None and fast["out"] is not None else None)
            rows.append((wl, ref, fast, diff))
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_description(bf16_native)
    rounds = f" | best of {args.rounds} alternating rounds" if args.rounds > 1 else ""
    print(f"\n{'quick' if args.quick else 'full'} run | device {args.device} ({dev}) | {args.threads} threads | "
          f"torch {torch.__version__} | {args.clock} clock | best of {args.runs} after a warm-up{rounds}\n")
    print("| workload | reference | ms | fast | ms | ratio | peak MB ref / fast | max abs diff | GFLOP | GFLOP/s |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for wl, ref, fast, diff in rows:
        gflop = fast.get("gflop")
        rate = f"{gflop / (fast['ms'] / 1000):.0f}" if gflop else "-"
        print(f"| {wl.describe(args.quick)} | {wl.sides[0]} | {ref['ms']:.1f} | {wl.sides[1]} | {fast['ms']:.1f} | "
              f"{ref['ms'] / fast['ms']:.2f}x | {ref['peak_mb']:.0f} / {fast['peak_mb']:.0f} | "
              f"{'-' if diff is None else f'{diff:.1e}'} | {'-' if not gflop else f'{gflop:.1f}'} | {rate} |")
    for name in skipped:
        wl = WORKLOADS[name]
        print(f"| {wl.describe(args.quick)} | {wl.sides[0]} | - | {wl.sides[1]} | - | skipped: bf16 is emulated on "
              f"this device (`--only {name}` times it) | - | - | - | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
