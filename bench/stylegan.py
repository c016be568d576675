"""StyleGAN synthesis speed/memory: reference ops vs fast ops (fp32) vs fast ops in reduced precision (bf16 on CPU,
fp16 on CUDA), for StyleGAN-Human-shaped SG2 1024x512 and SG3-R 512x256 generators with random weights.

Each (config, mode) runs in its own subprocess so peak RSS is per configuration. `--batch` images per call (default
1; times are per image), `--threads` threads (default 2). Wall time is the minimum over runs; CPU time (process time
of all threads) is reported too because on a shared machine it is far less sensitive to other processes than wall
time. Warm-up: one untimed run for the fast modes (the reference SG3-R run is long, so it is timed once without
warm-up). Prints one markdown table: ms/image, peak RSS, max |diff| vs the reference output, PSNR of the [0,1] image
vs the fast fp32 output, and the speedup over the reference.

    python bench/stylegan.py [--threads 2] [--configs sg2_1024x512,sg3r_512x256] [--device cpu] [--runs 3]
                             [--batch 1]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from _pack import load_pack  # noqa: E402 (bench/ is the script's folder, on sys.path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIGS = {
    "sg2_1024x512": {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": 1024, "img_channels": 3,
                     "square": False, "mapping_kwargs": {"num_layers": 8},
                     "synthesis_kwargs": {"channel_base": 32768, "channel_max": 512, "num_fp16_res": 4,
                                          "conv_clamp": 256, "architecture": "skip"}},
    "sg3r_512x256": {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": 512, "img_channels": 3,
                     "square": False, "mapping_kwargs": {"num_layers": 2}, "channel_base": 65536,
                     "channel_max": 1024, "num_fp16_res": 4, "conv_clamp": 256, "conv_kernel": 1,
                     "use_radial_filters": True, "magnitude_ema_beta": 0.999},
}
MODES = {"ref": ("ref", None), "fast": ("fast", None), "fast-reduced": ("fast", "reduced")}


def _load_pack():
    return load_pack()


def worker(cfg: str, mode: str, threads: int, device: str, runs: int, out_path: str, batch: int = 1) -> None:
    import torch
    torch.set_num_threads(threads)
    _load_pack()
    from humangen.models import build_generator
    impl, prec = MODES[mode]
    torch.manual_seed(0)
    G = build_generator(CONFIGS[cfg]).to(device)
    dtype = None if prec is None else (torch.float16 if device.startswith("cuda") else torch.bfloat16)
    z = torch.from_numpy(__import__("numpy").random.RandomState(1).randn(batch, G.z_dim)).float().to(device)
    with torch.no_grad():
        ws = G.mapping(z, None, truncation_psi=0.7)
        slow = impl == "ref" and cfg.startswith("sg3")
        if not slow:
            G.synthesis(ws, noise_mode="const", impl=impl, dtype=dtype)
        times, cpu = [], []
        for _ in range(1 if slow else runs):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            img = G.synthesis(ws, noise_mode="const", impl=impl, dtype=dtype)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    torch.save(img.float().cpu(), out_path)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_mb = torch.cuda.max_memory_allocated() / 2 ** 20 if device.startswith("cuda") else None
    print(json.dumps({"ms": 1000 * min(times) / batch, "cpu_ms": 1000 * min(cpu) / batch, "rss_mb": rss_mb,
                      "gpu_mb": gpu_mb}))


def psnr(a, b) -> float:
    import torch
    a = ((a + 1) / 2).clamp(0, 1)
    b = ((b + 1) / 2).clamp(0, 1)
    mse = torch.mean((a - b) ** 2).item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1, help="images per synthesis call (times are per image)")
    ap.add_argument("--worker", nargs=3, metavar=("CFG", "MODE", "OUT"))
    args = ap.parse_args()
    if args.worker:
        cfg, mode, out = args.worker
        worker(cfg, mode, args.threads, args.device, args.runs, out, args.batch)
        return
    import torch
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in args.configs.split(","):
            res = {}
            for mode in args.modes.split(","):
                out = os.path.join(tmp, f"{cfg}-{mode}.pt")
                p = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--device", args.device,
                                    "--runs", str(args.runs), "--batch", str(args.batch), "--worker", cfg, mode, out],
                                   capture_output=True, text=True)
                if p.returncode != 0:
                    print(p.stderr[-2000:], file=sys.stderr)
                    raise SystemExit(f"worker {cfg}/{mode} failed")
                res[mode] = json.loads(p.stdout.strip().splitlines()[-1])
                res[mode]["img"] = torch.load(out, weights_only=True)
                print(f"# {cfg} {mode}: {res[mode]['ms']:.0f} ms", file=sys.stderr, flush=True)
            ref = res.get("ref")
            fast = res.get("fast")
            for mode, r in res.items():
                diff = (r["img"] - ref["img"]).abs().max().item() if ref else float("nan")
                p_db = psnr(r["img"], fast["img"]) if fast and mode != "fast" else float("nan")
                speed = ref["ms"] / r["ms"] if ref else float("nan")
                speed_cpu = ref["cpu_ms"] / r["cpu_ms"] if ref else float("nan")
                rows.append((cfg, mode, r["ms"], r["cpu_ms"], r["rss_mb"], r["gpu_mb"], diff, p_db, speed, speed_cpu))
    print(f"\ndevice={args.device} threads={args.threads} batch={args.batch} torch={torch.__version__} "
          f"(random weights, psi 0.7, noise const)\n")
    print("| config | mode | wall ms/image | CPU ms/image | peak RSS MB | GPU MB | max abs diff vs ref | "
          "PSNR vs fast fp32 (dB) | speedup (wall) | speedup (CPU time) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cfg, mode, ms, cpu_ms, rss, gpu, diff, p_db, speed, speed_cpu in rows:
        gpu_s = f"{gpu:.0f}" if gpu is not None else "-"
        p_s = "-" if math.isnan(p_db) or mode == "ref" else f"{p_db:.1f}"
        print(f"| {cfg} | {mode} | {ms:.0f} | {cpu_ms:.0f} | {rss:.0f} | {gpu_s} | {diff:.2e} | {p_s} | "
              f"{speed:.2f}x | {speed_cpu:.2f}x |")


if __name__ == "__main__":
    main()
