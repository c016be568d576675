"""HumanSD sampler benchmark: seconds per sampling step and ratios, measured in one run.

    python bench/humansd.py                 # small random SD2-style model, 256x256, CPU or GPU
    python bench/humansd.py --full --size 512   # the real HumanSD dimensions with random weights (GPU)

Rows: our DDIM loop vs a hand-written loop over diffusers' DDIMScheduler (overhead of the pure-function sampler),
guidance 10 vs guidance 1 (the skipped unconditional pass), fp32 vs bf16 autocast, DPM++ 2M. Warm-up: one full
generate per row before timing; the median of `--repeats` runs is reported. Prints device, dtype and shapes.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from _pack import load_pack  # noqa: E402 (bench/ is the script's folder, on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def _pack():
    return load_pack()


SMALL = {
    "unet": dict(sample_size=32, in_channels=8, out_channels=4, layers_per_block=2, block_out_channels=[64, 128, 256],
                 down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                 up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                 attention_head_dim=[1, 2, 4], cross_attention_dim=128, use_linear_projection=True),
    "vae": dict(block_out_channels=[32, 64, 64, 64], down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1, norm_num_groups=32),
    "text_encoder": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2,
                         projection_dim=128),
}


def build(full: bool, device):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from humangen.models.humansd.configs import merge_configs
    from humangen.models.humansd.loader import HumanSDModel
    from humangen.models.humansd.tokenizer import OpenCLIPTokenizer
    cfg = merge_configs(None if full else SMALL)
    torch.manual_seed(0)  # bench only: random weights
    unet = UNet2DConditionModel(**cfg["unet"]).eval().requires_grad_(False)
    vae = AutoencoderKL(**cfg["vae"]).eval().requires_grad_(False)
    text = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])).eval().requires_grad_(False)
    return HumanSDModel(unet=unet, vae=vae, text_encoder=text, tokenizer=OpenCLIPTokenizer(), configs=cfg,
                        source="random")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="real HumanSD dimensions (random weights)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (1 avoids spinning on a busy box)")
    args = ap.parse_args()
    _pack()
    import torch
    torch.set_num_threads(args.threads)

    from humangen.models.humansd import pipeline as P
    from humangen.models.humansd import sampler as S
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build(args.full, device)
    off = P.Offloader(device, offload_device=device)
    for m in (model.unet, model.vae, model.text_encoder):
        m.to(device)
    pose = torch.rand(1, 3, args.size, args.size) * 2 - 1

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn):
        fn()
        sync()
        runs = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            sync()
            runs.append(time.perf_counter() - t)
        return statistics.median(runs)

    def ours(guidance=10.0, precision="fp32", scheduler="ddim"):
        return lambda: P.generate(model, pose, "a person", "bad", steps=args.steps, guidance=guidance,
                                  precision=precision, scheduler=scheduler, offloader=off)

    def handwritten():
        from diffusers import DDIMScheduler
        with torch.no_grad():
            cond = P.encode_text(model, ["a person"], device)
            unc = P.encode_text(model, ["bad"], device)
            lat = P.encode_images(model, pose, device)
            sched = DDIMScheduler(**model.configs["scheduler"])
            sched.set_timesteps(args.steps)
            x = S.randn_items(S.item_generators(0, 1), (4, *lat.shape[-2:]), device)
            for t in sched.timesteps[1:]:
                e = model.unet(torch.cat([torch.cat([x, x]), torch.cat([lat, lat])], 1), t,
                               encoder_hidden_states=torch.cat([unc, cond])).sample
                e_u, e_c = e.chunk(2)
                x = sched.step(e_u + 10.0 * (e_c - e_u), t, x).prev_sample
            P.decode_latents(model, x, device)

    rows = [("ours DDIM, guidance 10, fp32", ours()), ("hand-written diffusers DDIM loop, fp32", handwritten),
            ("ours DDIM, guidance 1 (no uncond pass)", ours(guidance=1.0)),
            ("ours DPM++ 2M, guidance 10, fp32", ours(scheduler="dpmpp_2m"))]
    if device.type == "cuda" and torch.cuda.is_bf16_supported() or device.type == "cpu":
        rows.append(("ours DDIM, guidance 10, bf16 autocast", ours(precision="bf16")))
    base = None
    params = sum(p.numel() for p in model.unet.parameters()) / 1e6
    print(f"device={device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} threads'})"
          f"  unet={params:.1f}M params  image={args.size}x{args.size}  latent={args.size // model.vae_scale}  "
          f"steps={args.steps} (DDIM runs {args.steps - 1}, as HumanSD)  repeats={args.repeats} (median, 1 warm-up)")
    print(f"{'variant':45s} {'s/image':>9s} {'ratio':>7s}")
    for name, fn in rows:
        dt = timed(fn)
        base = base or dt
        print(f"{name:45s} {dt:9.3f} {dt / base:7.2f}")


if __name__ == "__main__":
    main()
