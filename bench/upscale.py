"""Tiled vs untiled upscaling: time and peak memory, 1024x512 -> 4096x2048 with a random x4plus RRDBNet.

    python bench/upscale.py                      # CPU: reduced RRDBNet (nf 8, 1 block), see below
    python bench/upscale.py --full --device cuda # the real x4plus size (nf 64, 23 blocks) on a GPU

Each configuration runs in its own subprocess, so peak memory is per run: on CUDA `max_memory_allocated`, on CPU
the growth of the process's peak RSS (ru_maxrss) over its RSS just before the timed call (model built, input
allocated, one small warm-up pass done). Time: one more subprocess runs all tile sizes interleaved (A B C A B C ...,
--repeat rounds, best of each), so load from other processes on a shared machine hits every configuration alike.
The ratios come from one invocation of this script.

The full x4plus (16.7 M parameters, ~9 TMAC for a 1024x512 input) takes many minutes per pass on a 2-core CPU and
needs >10 GB untiled, so the CPU default is a reduced RRDBNet with the same layout (conv_first, RRDB trunk with 32
growth channels, two nearest-x2 + conv stages, conv_hr, conv_last) but 8 features and 1 block, on 1 torch thread
(our CPUs are shared; one thread gives steadier ratios). A smaller net makes the per-tile overhead look larger, not
smaller.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from _pack import load_pack  # noqa: E402 (bench/ is the script's folder, on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def _pack():
    return load_pack()


def _rrdb_state_dict(nf: int, nb: int, seed: int = 0):
    """Random RRDBNet x4plus weights in Real-ESRGAN's key layout (growth channels 32, as spandrel expects)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, cin, cout, gain=1.0, bias=0.0):
        sd[f"{name}.weight"] = torch.randn((cout, cin, 3, 3), generator=g) * gain / (cin * 9) ** 0.5
        sd[f"{name}.bias"] = torch.zeros(cout) + bias

    gc = 32
    conv("conv_first", 3, nf)
    for b in range(nb):
        for r in (1, 2, 3):
            for i in range(1, 6):
                conv(f"body.{b}.rdb{r}.conv{i}", nf + (i - 1) * gc, gc if i < 5 else nf, gain=1.4)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, nf, nf, gain=1.4)
    conv("conv_last", nf, 3, gain=0.5, bias=0.5)
    return {"params_ema": sd}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args) -> dict:
    import torch
    _pack()
    from humangen.models.upscale import TilePlan, load_descriptor, upscale

    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    desc = load_descriptor(_rrdb_state_dict(args.nf, args.nb))
    desc.to(device)
    x = torch.rand((1, 3, args.height, args.width), generator=torch.Generator().manual_seed(1)).to(device)
    upscale(desc, x[..., :64, :64], tile=0, device=device, output_device=device)  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0, peak0 = _rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if args.time_all:
        tiles = [int(t) for t in args.tiles.split(",")]
        best = {t: float("inf") for t in tiles}
        for _ in range(max(1, args.repeat)):
            for t in tiles:
                t0 = time.perf_counter()
                upscale(desc, x, tile=t, overlap=args.overlap, device=device, output_device=device,
                        precision=args.precision)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best[t] = min(best[t], time.perf_counter() - t0)
        return {"best_seconds": {str(k): v for k, v in best.items()}}
    t0 = time.perf_counter()
    res = upscale(desc, x, tile=args.tile, overlap=args.overlap, device=device, output_device=device,
                  precision=args.precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, peak0) - rss0
    shape = list(res.image.shape)
    tiles = len(TilePlan.make(args.height, args.width, args.tile, args.overlap if args.tile else 0))
    return {"tile": args.tile, "overlap": args.overlap, "tiles": tiles, "seconds": seconds, "peak_bytes": peak,
            "out_shape": shape, "device": str(device), "dtype": str(desc.dtype)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--full", action="store_true", help="real x4plus size: nf 64, 23 blocks")
    p.add_argument("--nf", type=int, default=8)
    p.add_argument("--nb", type=int, default=1)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--tiles", default="0,512,256", help="tile sizes to compare (0 = untiled)")
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=-1, help="torch CPU threads (0 = torch default; -1 = 1 on CPU)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tile", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--time-all", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.full:
        args.nf, args.nb = 64, 23
    if args.threads < 0:
        args.threads = 1 if args.device == "cpu" else 0
    if args.child:
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        print(json.dumps(child(args)))
        return

    common = [sys.executable, __file__, "--child", "--device", args.device, "--nf", str(args.nf), "--nb",
              str(args.nb), "--width", str(args.width), "--height", str(args.height), "--overlap", str(args.overlap),
              "--precision", args.precision, "--threads", str(args.threads), "--repeat", str(args.repeat),
              "--tiles", args.tiles]
    rows = []
    for tile in [int(t) for t in args.tiles.split(",")]:
        out = subprocess.run(common + ["--tile", str(tile)], capture_output=True, text=True)
        if out.returncode != 0:
            rows.append({"tile": tile, "error": (out.stderr.strip().splitlines() or ["?"])[-1]})
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  memory run, tile {tile or 'none'}: {rows[-1]['peak_bytes'] / 2**20:.0f} MiB, "
              f"{rows[-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
    out = subprocess.run(common + ["--time-all"], capture_output=True, text=True)
    if out.returncode == 0:
        best = json.loads(out.stdout.strip().splitlines()[-1])["best_seconds"]
        for r in rows:
            if "error" not in r and str(r["tile"]) in best:
                r["seconds"] = best[str(r["tile"])]
    else:
        print("timing run failed; showing single-run times: " + (out.stderr.strip().splitlines() or ["?"])[-1])
    ok = [r for r in rows if "error" not in r]
    base = next((r for r in ok if r["tile"] == 0), None)
    print(f"HumanGen upscale bench: {args.width}x{args.height} -> x4, RRDBNet nf={args.nf} nb={args.nb} "
          f"({'full x4plus' if (args.nf, args.nb) == (64, 23) else 'reduced'}), device {args.device}, "
          f"{args.precision}, overlap {args.overlap}, torch threads {args.threads or 'default'}")
    print(f"{'tile':>6} {'tiles':>5} {'seconds':>9} {'vs untiled':>10} {'peak MiB':>9} {'vs untiled':>10}  output")
    for r in rows:
        if "error" in r:
            print(f"{r['tile']:>6}  failed: {r['error']}")
            continue
        t_ratio = f"{r['seconds'] / base['seconds'] - 1:+.1%}" if base else "-"
        m_ratio = f"{r['peak_bytes'] / max(base['peak_bytes'], 1):.2f}x" if base else "-"
        print(f"{r['tile'] or 'none':>6} {r['tiles']:>5} {r['seconds']:>9.2f} {t_ratio:>10} "
              f"{r['peak_bytes'] / 2**20:>9.0f} {m_ratio:>10}  {'x'.join(map(str, r['out_shape'][2:]))}")
    out_mib = 3 * args.height * 4 * args.width * 4 * 4 / 2**20
    print(f"targets: tiled time overhead <= +15% vs untiled; peak memory bounded by the tile size (the "
          f"{args.width * 4}x{args.height * 4} float32 output, {out_mib:.0f} MiB, and its weight sum, "
          f"{out_mib / 3:.0f} MiB, are in every row)")


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
