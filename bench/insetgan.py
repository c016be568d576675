"""InsetGAN optimisation speed: seconds per step at StyleGAN-Human 1024x512 body + FFHQ 1024 face (random weights),
with the reference ops vs the fast ops. Each step renders one side with gradients, computes the stylegan-human
schedule's joint-phase losses (LPIPS alex with a random backbone: speed does not depend on the weights) and steps
Adam.

Runs `--steps` optimisation steps per mode after one warm-up step (body and face turns alternate), in one process,
`--threads` threads. Prints one markdown table.

    python bench/insetgan.py [--threads 2] [--steps 2] [--res 1024] [--modes ref,fast]
"""
from __future__ import annotations

import argparse
import os
import resource
import time
from _pack import load_pack  # noqa: E402 (bench/ is the script's folder, on sys.path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_pack():
    return load_pack()


def sg2_kwargs(res: int, square: bool) -> dict:
    return {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": res, "img_channels": 3, "square": square,
            "mapping_kwargs": {"num_layers": 8},
            "synthesis_kwargs": {"channel_base": 32768, "channel_max": 512, "num_fp16_res": 0, "conv_clamp": 256,
                                 "architecture": "skip"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--res", type=int, default=1024, help="body height = face size")
    ap.add_argument("--modes", default="ref,fast")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    _load_pack()
    from humangen.models import build_generator
    from humangen.models import insetgan as ig
    from humangen.models.lpips import LPIPS
    torch.manual_seed(0)
    Gb = build_generator(sg2_kwargs(args.res, False)).eval()
    Gf = build_generator(sg2_kwargs(args.res, True)).eval()
    lpips = LPIPS("alex")
    wb = Gb.mapping(torch.randn(1, 512), None).detach()
    wf = Gf.mapping(torch.randn(1, 512), None).detach()
    joint = ig.SCHEDULES["stylegan-human"].phases[2]
    phase = ig.Phase("alternate", args.steps + 1, joint.lr, joint.weights, switch_every=1, first="body")
    schedule = ig.Schedule("bench", (phase,), "w+", "w+", "alex")
    face = (args.res * 0.23, args.res * 0.05, args.res * 0.30, args.res * 0.12)  # a face-sized box near the top
    rows = []
    for mode in args.modes.split(","):
        times = []
        last = [time.perf_counter()]

        def tick(step, total, info):
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now
        ig.optimise(Gb, Gf, wb, wf, face, schedule, lpips, impl=mode, callback=tick)
        timed = times[1:] or times  # the first step is the warm-up
        rows.append((mode, sum(timed) / len(timed), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    ref = dict((m, t) for m, t, _ in rows).get("ref")
    print(f"\nInsetGAN step time, body {args.res}x{args.res // 2} + face {args.res}x{args.res}, "
          f"{args.threads} threads, torch {torch.__version__}, {args.steps} timed steps after 1 warm-up\n")
    print("| ops | s/step | peak RSS so far (MB) | speedup vs ref |")
    print("|---|---|---|---|")
    for mode, t, rss in rows:
        print(f"| {mode} | {t:.2f} | {rss:.0f} | {(ref / t if ref else float('nan')):.2f}x |")


if __name__ == "__main__":
    main()
