"""Benchmark: UnitedHuman-style continuous canvas rendering, time and peak RSS per canvas size, batched vs one
patch at a time. Each measurement runs in a fresh child process so its peak RSS is its own.

    python bench/continuous.py                          # 'small' random generator, sizes 256..2048
    python bench/continuous.py --config unitedhuman --sizes 256 512 1024 2048 4096 --batches 1 4
    python bench/continuous.py --device cuda

Configs (random weights; speed does not depend on the values):
  unitedhuman: SG3-T, 256-px patches, z = w = 512, channel_base 32768, channel_max 512 (UnitedHuman's size).
  small:       SG3-T, 256-px patches, channel_base 8192, channel_max 128 (same geometry, ~1/16 of the channels).
  tiny:        SG3-T, 256-px patches, channel_base 1024, channel_max 16 (renderer overhead and canvas memory).
Prints a table: size, patches, patch batch, seconds, seconds per patch, peak RSS (MiB), speed-up vs batch 1.
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
CONFIGS = {
    "unitedhuman": dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3, channel_base=32768,
                        channel_max=512, mapping_kwargs={"num_layers": 2}, training_mode="patch",
                        scale_mapping_kwargs={"scale_mapping_min": 1, "scale_mapping_max": 8,
                                              "scale_mapping_norm": "positive"}),
    "small": dict(z_dim=64, c_dim=0, w_dim=64, img_resolution=256, img_channels=3, channel_base=8192,
                  channel_max=128, mapping_kwargs={"num_layers": 2}, training_mode="patch",
                  scale_mapping_kwargs={"scale_mapping_min": 1, "scale_mapping_max": 8,
                                        "scale_mapping_norm": "positive"}),
    "tiny": dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=256, img_channels=3, channel_base=1024,
                 channel_max=16, mapping_kwargs={"num_layers": 2}, training_mode="patch",
                 scale_mapping_kwargs={"scale_mapping_min": 1, "scale_mapping_max": 8,
                                       "scale_mapping_norm": "positive"}),
}


def _load_pack():
    return load_pack()


def run_one(config: str, size: int, batch: int, device: str) -> dict:
    """Child process: build the generator, render one canvas, report time and peak RSS."""
    import torch
    _load_pack()
    from humangen.models import anyres, continuous
    torch.manual_seed(0)
    G = anyres.Generator(**CONFIGS[config]).eval().requires_grad_(False).to(device)
    ws = G.mapping(torch.randn(1, G.z_dim, device=device), None)
    # warm-up: one patch (allocator, kernels)
    continuous.render_patch(G, ws, torch.eye(3))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    out = continuous.render_canvas(G, ws, size, patch_batch=batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return {"size": size, "batch": batch, "patches": len(continuous.patch_grid(size, G.img_resolution)),
            "seconds": dt, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_warmup_mib": rss_before, "shape": list(out.shape),
            "gpu_peak_mib": (torch.cuda.max_memory_allocated() / 2 ** 20) if device.startswith("cuda") else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="small")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the children (0 = torch default)")
    ap.add_argument("--child", nargs=3, type=int, metavar=("SIZE", "BATCH", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        import torch
        if args.child[2]:
            torch.set_num_threads(args.child[2])
        print(json.dumps(run_one(args.config, args.child[0], args.child[1], args.device)))
        return
    import torch
    print(f"# continuous canvas bench: config={args.config} device={args.device} torch={torch.__version__} "
          f"threads={args.threads or torch.get_num_threads()} cpus={os.cpu_count()} "
          f"ops={os.environ.get('HUMANGEN_OPS_IMPL', 'auto')}")
    print("# each row: a fresh process; one warm-up patch before timing; canvas kept on the CPU")
    print(f"{'size':>6} {'patches':>7} {'batch':>5} {'seconds':>9} {'s/patch':>8} {'peak RSS MiB':>12} "
          f"{'vs batch 1':>10}")
    for size in args.sizes:
        base = None
        for batch in args.batches:
            cmd = [sys.executable, __file__, "--config", args.config, "--device", args.device,
                   "--child", str(size), str(batch), str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"{size:>6} {'-':>7} {batch:>5} failed: {res.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            base = r["seconds"] if batch == args.batches[0] else base
            ratio = f"{base / r['seconds']:.2f}x" if base else "-"
            print(f"{size:>6} {r['patches']:>7} {batch:>5} {r['seconds']:>9.2f} {r['seconds'] / r['patches']:>8.3f} "
                  f"{r['peak_rss_mib']:>12.0f} {ratio:>10}", flush=True)


if __name__ == "__main__":
    main()
