"""SMPL-X transformer speed: joint evaluation (ours vs smplx's forward) and whole fits, on CPU.

Uses a synthetic SMPL-X file with the real vertex count (10475) and key set (tests/smplx_synth.py), or your real
model with --model-dir (a folder holding SMPLX_NEUTRAL.npz). Prints a table; numbers within one run compare.

    python bench/smplx_fit.py [--model-dir DIR] [--repeats 3]

(Not bench/smplx.py: a script named smplx.py would shadow the smplx package.)
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from _pack import load_pack  # noqa: E402 (bench/ is the script's folder, on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def _pack():
    return load_pack()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    _pack()
    import numpy as np
    import torch

    from humangen.models.body import keypoints as kp
    from humangen.models.body.fit import fit_smplx, prior_mean_pose, project
    from humangen.models.body.model import load_smplx

    model_dir = args.model_dir
    if model_dir is None:
        sys.path.insert(0, str(ROOT / "tests"))
        import smplx_synth
        model_dir = tempfile.mkdtemp(prefix="hg_bench_smplx_")
        smplx_synth.write(Path(model_dir) / "SMPLX_NEUTRAL.npz")
    t = time.perf_counter()
    body = load_smplx("neutral", [model_dir])
    load_s = time.perf_counter() - t
    d = torch.float64
    rng = np.random.RandomState(0)
    go = torch.tensor(rng.randn(1, 3) * 0.3, requires_grad=True)
    bp = torch.tensor(prior_mean_pose()[None] + rng.randn(1, 63) * 0.2, requires_grad=True)
    be = torch.zeros(1, body.num_betas, dtype=d, requires_grad=True)
    rows = []

    def timeit(fn, n):
        fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1000

    def ours():
        body.joints(go, bp, be).sum().backward()

    m = body.module
    gof, bpf, bef = (x.detach().float().requires_grad_(True) for x in (go, bp, be))

    def theirs():
        m(global_orient=gof, body_pose=bpf, betas=bef).joints.sum().backward()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fitter does (tiny tensors)
    rows.append(("joints fwd+bwd, ours (float64, 66 joints)", f"{timeit(ours, 50):.2f} ms"))
    rows.append(("joints fwd+bwd, smplx forward (float32, full mesh)", f"{timeit(theirs, 10):.2f} ms"))
    torch.set_num_threads(threads)
    J = body.joints(go.detach(), bp.detach(), be.detach())
    p25 = project(J, torch.tensor([400.0], dtype=d), torch.tensor([[256.0, 520.0]], dtype=d))[0].numpy()
    p25 = p25[list(kp.BODY25_TO_SMPLX)] + rng.randn(25, 2)
    full = [(x, y, 1.0) for x, y in p25]
    face = [(x, y, 1.0 if i in (0, 1, 2, 5, 15, 16, 17, 18) else 0.0) for i, (x, y) in enumerate(p25)]
    for name, pts in (("fit full body BODY_25", full), ("fit head + shoulders", face)):
        times, errs = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            f = fit_smplx(body, pts, (1024, 512))
            times.append(time.perf_counter() - t0)
            errs.append(f.fit_error_px)
        rows.append((name, f"{np.median(times):.2f} s (error {np.mean(errs):.2f} px)"))
    print(f"device: cpu ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"model {body.name} from {model_dir}, load {load_s:.2f} s")
    w = max(len(r[0]) for r in rows)
    print(f"| {'what'.ljust(w)} | time |\n|{'-' * (w + 2)}|------|")
    for a, b in rows:
        print(f"| {a.ljust(w)} | {b} |")


if __name__ == "__main__":
    main()
