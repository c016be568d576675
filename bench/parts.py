"""Parts2Whole read pass: attention FLOPs and time per denoising step for K = 1..6 parts, ours vs upstream-style.

Ours (models/parts2whole/attention.py): queries from the image's own N tokens; keys/values over [own || K*N banked
tokens] for the conditional CFG row only (the unconditional row is plain self-attention); the bank's K/V are projected
once per generation. Upstream-style (huanngzh/Parts2Whole `mutual_self_attention.py`, re-written here for the bench):
query = key/value source = [own || banks] ((1+K)N queries, first N kept) for every CFG row, K/V of the bank
re-projected every step, then plain self-attention recomputed for the unconditional rows.

FLOPs are analytic for the self-attention (attn1) layers of SD 1.5 (multiply-add = 2 FLOPs; worst case: every
reference token kept). Time is that of the attn1 layers of one denoising step (CFG batch 2, random weights; the rest
of the UNet is the same for both), each SD 1.5 level's layer timed at its token count and width, measured in one
run, alternating implementations per K, median of `--repeats` after one warm-up.

    python bench/parts.py                       # CPU-friendly: timed at 256x192
    python bench/parts.py --device cuda --dtype fp16 --height 768 --width 512
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _pack import load_pack  # noqa: E402 (bench/ is the script's folder, on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def _pack():
    return load_pack()


# ---- analytic FLOPs -----------------------------------------------------------------------------------------------
SD15_LEVELS = ((320, 1, 2 + 3), (640, 2, 2 + 3), (1280, 4, 2 + 3), (1280, 8, 1))  # (C, downscale vs latent, #attn1)


def attn1_flops(height: int, width: int, k: int, upstream: bool, steps: int = 50) -> float:
    """FLOPs of all attn1 layers for one CFG step (an uncond and a cond row). A linear map of L tokens costs
    2*L*C^2, scores + weighted sum for Lq queries over Lk keys 4*Lq*Lk*C. Our bank K/V projection (4*K*N*C^2 once per
    generation) is amortised over `steps`."""

    def attention(lq: int, lk: int, c: int, projected: int) -> float:
        return 2 * projected * c * c * 3 + 4 * lq * lk * c + 2 * lq * c * c  # q/k/v, scores+AV, to_out

    total = 0.0
    for c, down, layers in SD15_LEVELS:
        n = (height // 8 // down) * (width // 8 // down)
        if upstream:
            m = (1 + k) * n
            per_layer = 2 * attention(m, m, c, m) + attention(n, n, c, n)  # both rows over (1+K)N; uncond redone
        else:
            per_layer = attention(n, n + k * n, c, n) + attention(n, n, c, n) + 4 * k * n * c * c / steps
        total += layers * per_layer
    return total


# ---- upstream-style read processor (for comparison only) ----------------------------------------------------------
class UpstreamStyleRead:
    """[own || banks] as query and K/V source for every row, first N kept; uncond rows recomputed plain."""

    def __init__(self, name, bank_features):
        self.name = name
        self.bank = bank_features  # name -> [K, N, C] (zeros where masked, as upstream)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        from humangen.models.parts2whole.attention import plain_attention
        if encoder_hidden_states is not None or self.name not in self.bank:
            return plain_attention(attn, hidden_states, encoder_hidden_states)
        b, n, c = hidden_states.shape
        feats = self.bank[self.name]
        full = torch.cat([hidden_states, feats.reshape(1, -1, c).expand(b, -1, -1)], dim=1)
        out = plain_attention(attn, full)[:, :n]
        half = b // 2
        out[:half] = plain_attention(attn, hidden_states[:half])
        return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=256, help="image height for the timing (FLOPs also at 768x512)")
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--parts", type=int, nargs="*", default=[1, 2, 3, 4, 5, 6])
    args = ap.parse_args(argv)
    _pack()
    from diffusers.models.attention_processor import Attention

    from humangen.models.parts2whole.attention import BankReadProcessor, PartBank, ReadState
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    dev = torch.device(args.device)
    torch.manual_seed(0)
    layers = {c: Attention(query_dim=c, heads=8, dim_head=c // 8, bias=False).to(dev, dtype).eval()
              for c in sorted({c for c, _, _ in SD15_LEVELS})}

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step_ms(k: int, impl: str) -> float:
        """attn1 time of one CFG denoising step: each level's layer timed once, times its layer count."""
        total = 0.0
        for level, (c, down, count) in enumerate(SD15_LEVELS):
            n = (args.height // 8 // down) * (args.width // 8 // down)
            g = torch.Generator().manual_seed(level)
            h = torch.randn(2, n, c, generator=g).to(dev, dtype)
            feats = torch.randn(k, n, c, generator=g).to(dev, dtype)
            if impl == "ours":
                st = ReadState(PartBank(features={"l": feats}, weights={"l": torch.ones(k, n, device=dev)}))
                st.num_uncond = 1
                proc = BankReadProcessor("l", st)
            else:
                proc = UpstreamStyleRead("l", {"l": feats})
            times = []
            with torch.no_grad():
                for r in range(args.repeats + 1):  # warm-up also fills our per-generation bank K/V cache
                    sync()
                    t = time.perf_counter()
                    proc(layers[c], h)
                    sync()
                    if r:
                        times.append(time.perf_counter() - t)
            total += statistics.median(times) * count
        return total * 1000

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"Parts2Whole read pass (attn1 layers of one CFG denoising step, SD 1.5 widths 320/640/1280, 8 heads) | "
          f"device={dev} ({name}) dtype={args.dtype} | timed at {args.height}x{args.width}, warm-up 1, median of "
          f"{args.repeats}, implementations alternated per K | FLOPs analytic, every reference token kept, our bank "
          f"K/V projection amortised over 50 steps")
    print(f"{'K':>2} | {'GFLOP ours':>10} | {'GFLOP upstr.':>12} | {'ratio':>6} | {'GFLOP@768x512 ours':>18} | "
          f"{'upstr.':>8} | {'ratio':>6} | {'ms ours':>8} | {'ms upstr.':>9} | {'speed-up':>8}")
    for k in args.parts:
        fo, fu = attn1_flops(args.height, args.width, k, False), attn1_flops(args.height, args.width, k, True)
        Fo, Fu = attn1_flops(768, 512, k, False), attn1_flops(768, 512, k, True)
        to, tu = step_ms(k, "ours"), step_ms(k, "upstream")
        print(f"{k:>2} | {fo / 1e9:>10.1f} | {fu / 1e9:>12.1f} | {fu / fo:>5.2f}x | {Fo / 1e9:>18.0f} | "
              f"{Fu / 1e9:>8.0f} | {Fu / Fo:>5.2f}x | {to:>8.1f} | {tu:>9.1f} | {tu / to:>7.2f}x")


if __name__ == "__main__":
    main()
