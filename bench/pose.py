"""Pose toolkit timings on scikit-image's astronaut.png (512x512), CPU: detectors, segmentation, aligner, renderers.

    python bench/pose.py [--repeat 3]

Prints one table (median wall time and process CPU time per call, after one warm-up call). mmpose models use
random weights built from the wheel configs: speed only, not accuracy.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from _pack import load_pack  # noqa: E402 (bench/ is the script's folder, on sys.path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timeit(fn, repeat):
    fn()  # warm-up (imports, graph init)
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-mmpose", action="store_true")
    args = ap.parse_args()
    load_pack()
    import numpy as np
    import torch
    from skimage import data

    from humangen.models import pose as M
    from humangen.models.pose import align as A
    from humangen.models.pose import faces, mediapipe_backend
    from humangen.utils import pose as P

    img = np.ascontiguousarray(data.astronaut())
    det = M.detect_mediapipe(img, 0.3)
    frame = det.frame(512, 512)
    rows = [
        ("mediapipe pose + segmentation", lambda: M.detect_mediapipe(img, 0.3)),
        ("mediapipe selfie segmentation", lambda: M.segment_person(img, "mediapipe_selfie")),
        ("mediapipe face detection", lambda: mediapipe_backend.detect_faces(img)),
        ("MTCNN faces (min face 20 px)", lambda: faces.detect_faces_mtcnn(img)),
        ("align 1024x512 (given pose + mask)", lambda: A.align_full_body(img, det.mask, det.coco17(),
                                                                          size=(512, 1024), allow_partial=True)),
        ("render HumanSD skeleton 512x512", lambda: P.render_skeleton([frame], "humansd")),
        ("render OpenPose skeleton 512x512", lambda: P.render_skeleton([frame], "openpose")),
    ]
    if not args.skip_mmpose:
        from humangen.models.pose import mmpose_backend as MB
        box = np.array([[60.0, 0.0, 460.0, 512.0]])
        for name in ("rtmpose-m_coco_256x192", "hrnet-w32_coco_256x192"):
            model = MB.build_model(name)
            rows.append((f"mmpose {name} (1 box, flip test)", lambda m=model: MB.detect(m, img, boxes=box)))
        ae = MB.build_model("ae_hrnet-w32_coco_512x512")
        rows.append(("mmpose AE HRNet-w32 bottom-up 512", lambda: MB.detect(ae, img)))
    print(f"device cpu, torch threads {torch.get_num_threads()}, image 512x512, repeat {args.repeat} "
          f"(median after 1 warm-up)")
    print(f"| {'step':<42} | wall ms | cpu ms |")
    print(f"|{'-' * 44}|---------|--------|")
    for name, fn in rows:
        wall, cpu = timeit(fn, args.repeat)
        print(f"| {name:<42} | {wall * 1000:7.0f} | {cpu * 1000:6.0f} |")


if __name__ == "__main__":
    main()
