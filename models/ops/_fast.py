"""Fast CPU paths for upfirdn2d and filtered_lrelu.

The reference zero-stuffs the upsampled tensor, filters every sample with a grouped convolution in NCHW layout and
then throws away the samples that downsampling drops. Here every FIR pass is one depthwise convolution in
channels-last layout (oneDNN's fast depthwise path): upsampling is a strided *transposed* depthwise convolution
(no zero-stuffed tensor), downsampling a strided convolution (dropped samples are never computed), separable 1-D
filters run as a (1,K) then a (K,1) pass. filtered_lrelu runs bias -> up -> lrelu*gain, clamp (in place) -> down
per chunk of channels, so the upsampled intermediate only ever exists for one chunk (bounded memory).
Results equal the reference up to floating-point summation order.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import _workspace as workspace
from ._spec import blocked_depthwise, needs_grad, parse_padding, parse_scaling

CHUNK_ELEMS = 1 << 22  # ~16 MB (fp32) of upsampled intermediate per band in filtered_lrelu


CL = torch.channels_last


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def _dw(f2d: torch.Tensor, c: int, dtype) -> torch.Tensor:
    """Depthwise weight [C, 1, kh, kw] (a broadcast view: no per-channel copy)."""
    return f2d.to(dtype).reshape(1, 1, *f2d.shape).expand(c, 1, *f2d.shape)


def _crop_pad(y: torch.Tensor, start_h: int, length_h: int, start_w: int, length_w: int) -> torch.Tensor:
    """The window y[:, :, start_h:start_h+length_h, start_w:start_w+length_w] with zeros where it leaves y: a start
    may be negative or past the end (a crop larger than y reaches into the padding on the other side), one pad."""
    pads = []
    for dim, start, length in ((3, start_w, length_w), (2, start_h, length_h)):
        length, size = max(length, 0), y.shape[dim]
        lo = min(max(start, 0), size)
        hi = max(min(start + length, size), lo)
        before = min(max(-start, 0), length)
        y = y.narrow(dim, lo, hi - lo)
        pads += [before, length - before - (hi - lo)]
    return F.pad(y, pads) if any(pads) else y


def _up_polyphase(x: torch.Tensor, g: torch.Tensor, u: int, p0: int, p1: int, dim: int) -> torch.Tensor:
    """1-D zero-insert-by-u + pad(p0, p1) + correlate with taps g along dim (2 = H, 3 = W), as u phase
    convolutions on the original samples (sub-filters g[k_r::u]) interleaved by one stack: no zero-stuffed
    tensor and no transposed convolution."""
    n, c = x.shape[0], x.shape[1]
    L = x.shape[dim]
    taps, L_out, c_min = _phase_taps(g, u, p0, p1, L)
    A = _ceil_div(L_out, u)
    M = taps.shape[1]
    # input window [c_min, c_min + A + M - 1), zero outside [0, L)
    if dim == 2:
        xs = _crop_pad(x, c_min, A + M - 1, 0, x.shape[3])
    else:
        xs = _crop_pad(x, 0, x.shape[2], c_min, A + M - 1)
    shape = (M, 1) if dim == 2 else (1, M)
    ys = [F.conv2d(xs, _dw(taps[r].reshape(shape), c, x.dtype), groups=c).permute(0, 2, 3, 1) for r in range(u)]
    y = torch.stack(ys, dim=dim)  # NHWC view: [N, A, u, W, C] (H) or [N, H, A, u, C] (W)
    if dim == 2:
        y = y.reshape(n, A * u, y.shape[3], c)
    else:
        y = y.reshape(n, y.shape[1], A * u, c)
    y = y.permute(0, 3, 1, 2)  # NCHW view of channels-last memory
    return y.narrow(dim, 0, L_out)


ROW_TILE = 8  # output rows (per phase) per GEMM tile in _up_rows_gemm


def _phase_layout(taps: int, u: int, p0: int, p1: int, L: int):
    """Where the phases of a 1-D zero-insert-by-u + pad(p0, p1) + correlate pass (a filter of `taps` taps, L samples)
    read: returns (output length, [(k_r, o_r)] per output phase r: its sub-filter starts at tap k_r, and its first
    output reads input o_r)."""
    phases = [((p0 - r) % u, (r + (p0 - r) % u - p0) // u) for r in range(u)]
    return L * u + p0 + p1 - taps + 1, phases


def _phase_taps(g: torch.Tensor, u: int, p0: int, p1: int, L: int):
    """Polyphase form of a 1-D zero-insert-by-u + pad(p0, p1) + correlate-with-g pass over L samples: output phase r
    reads the M inputs from c_min on with taps[r] (the sub-filter g[k_r::u], zero-padded to the common span).
    Returns (taps [u, M], output length, c_min)."""
    L_out, phases = _phase_layout(g.shape[0], u, p0, p1, L)
    subs = [g[k_r::u] for k_r, _ in phases]
    offs = [o for _, o in phases]
    c_min = min(offs)
    M = max(o - c_min + len(h) for o, h in zip(offs, subs))
    taps = torch.zeros([u, M], dtype=g.dtype, device=g.device)
    for r, (o, h) in enumerate(zip(offs, subs)):
        taps[r, o - c_min: o - c_min + len(h)] = h
    return taps, L_out, c_min


_BANDS: dict = {}  # (taps, u, p0 mod u, dtype, device) -> banded matrix: a generator has a handful of filters


def _upsampling_band(g: torch.Tensor, u: int, p0: int, p1: int, L: int, dtype, device):
    """The banded matrix of a 1-D u-times upsampling FIR pass over tiles of ROW_TILE inputs: row t*u + r (phase r
    of output tile position t) holds phase r's taps, shifted by t. Returns (band [T*u, T+M-1], output length,
    first input offset c_min, taps span M, tile T, number of tiles). The matrix depends on the padding only through
    p0 mod u (a shift by u moves every phase's window by one input), so it is built once per filter and cached:
    building it costs more than a small band's GEMM."""
    L_out, phases = _phase_layout(g.shape[0], u, p0, p1, L)
    c_min = min(o for _, o in phases)
    key = (tuple(g.tolist()), u, p0 % u, dtype, str(device))
    band = _BANDS.get(key)
    if band is None:
        taps = _phase_taps(g, u, p0, p1, L)[0]
        M = taps.shape[1]
        band = torch.zeros([ROW_TILE * u, ROW_TILE + M - 1], dtype=dtype, device=device)
        for t in range(ROW_TILE):
            band[t * u: (t + 1) * u, t: t + M] = taps.to(dtype)
        if len(_BANDS) >= 256:  # bounded: filters are per layer, but a caller could vary them
            _BANDS.clear()
        _BANDS[key] = band
    T = ROW_TILE
    M = band.shape[1] - T + 1
    nT = _ceil_div(_ceil_div(L_out, u), T)
    return band, L_out, c_min, M, T, nT


def _up_rows_gemm(x: torch.Tensor, g: torch.Tensor, u: int, p0: int, p1: int, out=None) -> torch.Tensor:
    """Vertical (H) upsampling pass as GEMMs: in channels-last memory every image row is one contiguous [W*C]
    vector, so a tile of T*u output rows (all u phases, already interleaved) is a [T*u, T+M-1] banded matrix times
    the T+M-1 input rows it reads. One batched GEMM over tiles; no per-channel filtering, no interleave copy.
    `out`: an NHWC tensor [N, >= tiles*T*u, W, C] with contiguous rows that the GEMMs write into directly."""
    n, c, L, w = x.shape
    band, L_out, c_min, M, T, nT = _upsampling_band(g, u, p0, p1, L, x.dtype, x.device)
    rows = nT * T + M - 1  # padded input rows [c_min, c_min + rows)
    xh = x.permute(0, 2, 3, 1)  # NHWC view (contiguous for channels-last x)
    z = _padded_slab(xh, 1, c_min, rows)
    wc = w * c
    rs = z.stride(1)  # >= wc when the rows are padded
    outs = []
    for i in range(n):
        zi = z[i]
        win = zi.as_strided([nT, T + M - 1, wc], [T * rs, rs, 1], zi.storage_offset())
        if out is not None:
            torch.matmul(band, win, out=out[i].narrow(0, 0, nT * T * u).view(nT, T * u, wc))
        else:
            outs.append(torch.matmul(band, win).reshape(nT * T * u, w, c)[:L_out])
    if out is not None:
        return out.narrow(1, 0, L_out).permute(0, 3, 1, 2)
    y = torch.stack(outs) if n > 1 else outs[0].unsqueeze(0)
    return y.permute(0, 3, 1, 2)


def _up_rows_tiles(L_out: int, u: int) -> int:
    """Rows that _up_rows_gemm writes (whole tiles) for L_out output rows."""
    return _ceil_div(_ceil_div(L_out, u), ROW_TILE) * ROW_TILE * u


def _padded_slab(xh: torch.Tensor, dim: int, start: int, length: int, out: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
    """NHWC tensor -> entries [start, start + length) along dim (1 = H, 2 = W), zeros outside the tensor; a view
    when nothing is outside (and the slab is contiguous in the trailing dims), else a copy with zeroed borders
    (written into `out` when given: a tensor of the slab's shape). `bias` [C]: added to the entries inside the
    tensor while they are copied (the borders stay zero)."""
    L = xh.shape[dim]
    lo, hi = max(start, 0), min(start + length, L)
    if out is None and bias is None and lo == start and hi == start + length and xh.stride(-1) == 1 \
            and xh.stride(-2) == xh.shape[-1]:
        return xh.narrow(dim, start, length)  # rows may be padded (row stride > W*C): the GEMMs take a leading dim
    if out is None:
        shape = list(xh.shape)
        shape[dim] = length
        out = xh.new_empty(shape)
    if lo - start > 0:
        out.narrow(dim, 0, lo - start).zero_()
    if start + length - hi > 0:
        out.narrow(dim, max(hi - start, 0), start + length - max(hi, start)).zero_()
    if hi > lo:
        inside, dest = xh.narrow(dim, lo, hi - lo), out.narrow(dim, lo - start, hi - lo)
        if bias is None:
            dest.copy_(inside)
        else:
            torch.add(inside, bias, out=dest)
    return out


def _up_cols_gemm(x: torch.Tensor, g: torch.Tensor, u: int, p0: int, p1: int,
                  full_width: bool = False, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Horizontal (W) upsampling pass as GEMMs over channels-last pixels: a tile of T*u output pixels of one row
    (all phases, interleaved) = [T*u, T+M-1] banded matrix @ the T+M-1 input pixels ([*, C] rows) it reads.
    The input rows are copied into rows of P pixels, P a whole number of tiles, plus one zero row: the windows of
    all rows of an image are then one strided batch (windows that straddle two rows only feed output columns past
    the row's end, which are dropped), so each image is one batched GEMM. The result's rows keep that padding
    (row stride P*u pixels); W and C are contiguous. `bias` [C]: added to x as its rows are copied (x + bias is
    never made)."""
    n, c, h, L = x.shape
    band, L_out, c_min, M, T, nT = _upsampling_band(g, u, p0, p1, L, x.dtype, x.device)
    P = _ceil_div(nT * T + M - 1, T) * T
    xh = x.permute(0, 2, 3, 1)  # NHWC view
    z = x.new_empty([n, h + 1, P, c])
    z[:, h].zero_()
    _padded_slab(xh, 2, c_min, P, out=z[:, :h], bias=bias)
    windows = h * P // T
    y = x.new_empty([n, h, P * u, c])
    for i in range(n):
        zi = z[i]
        win = zi.as_strided([windows, T + M - 1, c], [T * c, c, 1], zi.storage_offset())
        torch.matmul(band, win, out=y[i].view(windows, T * u, c))
    y = y.narrow(2, 0, nT * T * u if full_width else L_out)
    return y.permute(0, 3, 1, 2)


def _pass(x: torch.Tensor, f2d: torch.Tensor, up: tuple, down: tuple, pad: tuple) -> torch.Tensor:
    """One 2-D FIR pass with correlation-ready filter semantics of the reference (f2d already flipped/gained for
    correlation, i.e. y = corr(pad(zero_insert(x)), f2d)[::down]); f2d [kh, kw] (kh or kw may be 1)."""
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = pad
    n, c, h, w = x.shape
    kh, kw = f2d.shape
    out_h = (h * upy + py0 + py1 - kh) // downy + 1
    out_w = (w * upx + px0 + px1 - kw) // downx + 1
    if upx == 1 and upy == 1:
        x = _crop_pad(x, -py0, h + py0 + py1, -px0, w + px0 + px1)
        return F.conv2d(x, _dw(f2d, c, x.dtype), stride=(downy, downx), groups=c)
    nograd = not needs_grad(x)
    if kh == 1 and upy == 1 and downx == 1 and downy == 1 and py0 == 0 and py1 == 0:
        if nograd:
            return _up_cols_gemm(x, f2d[0], upx, px0, px1).contiguous(memory_format=CL)
        return _up_polyphase(x, f2d[0], upx, px0, px1, 3)
    if kw == 1 and upx == 1 and downx == 1 and downy == 1 and px0 == 0 and px1 == 0:
        if nograd:
            return _up_rows_gemm(x.contiguous(memory_format=CL), f2d[:, 0], upy, py0, py1)
        return _up_polyphase(x, f2d[:, 0], upy, py0, py1, 2)
    # zero-insert + correlate == transposed conv with the correlation taps reversed
    y = F.conv_transpose2d(x, _dw(f2d.flip([0, 1]), c, x.dtype), stride=(upy, upx), groups=c)
    full_h, full_w = out_h * downy - (downy - 1), out_w * downx - (downx - 1)  # samples before decimation
    y = _crop_pad(y, kh - 1 - py0, (h * upy + py0 + py1 - kh) + 1, kw - 1 - px0, (w * upx + px0 + px1 - kw) + 1)
    if downx > 1 or downy > 1:
        y = y[:, :, ::downy, ::downx]
    assert y.shape[2:] == (out_h, out_w) and full_h >= out_h and full_w >= out_w, (y.shape, out_h, out_w)
    return y


def _corr_taps(f, gain: float, flip_filter: bool):
    """Filter -> list of 2-D correlation kernels applied one after the other (1-D f: a (1,K) then a (K,1) pass)."""
    if f is None:
        return [torch.full([1, 1], float(gain))]
    g = f if flip_filter else f.flip(list(range(f.ndim)))
    if f.ndim == 1:
        return [g.reshape(1, -1), (g * gain).reshape(-1, 1)]
    return [g * gain]


def upfirdn2d_fast(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1.0, crop_w=True):
    """Same contract as upfirdn2d_ref: depthwise (transposed) convolutions in channels-last layout, upsampling
    without zero-stuffing and strided downsampling (only kept samples are computed)."""
    assert x.ndim == 4, x.shape
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    x = x.contiguous(memory_format=CL)
    kernels = _corr_taps(f, gain, flip_filter)
    if len(kernels) == 1:
        k = kernels[0]
        if (upx > 1 or upy > 1) and (downx > 1 or downy > 1):
            y = _pass(x, k, (upx, upy), (1, 1), (px0, px1, py0, py1))
            return _pass(y, torch.ones([1, 1]), (1, 1), (downx, downy), (0, 0, 0, 0))
        return _pass(x, k, (upx, upy), (downx, downy), (px0, px1, py0, py1))
    kx, ky = kernels  # separable: W pass then H pass
    if upx > 1 and upy > 1 and downx == 1 and downy == 1 and not needs_grad(x):
        return _up_separable_gemm(x, kx, ky, (upx, upy), (px0, px1, py0, py1), crop_w)
    y = _pass(x, kx, (upx, 1), (downx, 1), (px0, px1, 0, 0))
    return _pass(y, ky, (1, upy), (1, downy), (0, 0, py0, py1))


def _up_separable_gemm(x, kx, ky, up: tuple, pad: tuple, crop_w: bool = True, bias=None):
    """Inference upsampling by a separable filter (correlation taps kx (1, K), ky (K, 1)): the W pass then the H pass
    as banded GEMMs. crop_w=False keeps the W pass's extra right columns (the caller crops later: no copy). `bias`
    [C] is added to x on the way in (inside the W pass's row copy)."""
    (upx, upy), (px0, px1, py0, py1) = up, pad
    out_w = x.shape[3] * upx + px0 + px1 - kx.shape[1] + 1
    y = _up_cols_gemm(x, kx[0], upx, px0, px1, full_width=True, bias=bias)  # extra columns cropped at the end
    y = _up_rows_gemm(y, ky[:, 0], upy, py0, py1)
    return y.narrow(3, 0, out_w) if crop_w else y


def _act_(y, gain, slope, clamp, grad_mode, folded):
    if grad_mode:
        y = F.leaky_relu(y, slope) * gain
        return y.clamp(-clamp, clamp) if clamp is not None and clamp >= 0 else y
    if slope != 1:
        F.leaky_relu_(y, slope)
    if not folded and gain != 1:
        y.mul_(gain)
    if clamp is not None and clamp >= 0:
        y.clamp_(-clamp, clamp)
    return y


def _phase_l1(f, up: int) -> float:
    """Largest sum of |taps| that one output sample of an up-by-`up` FIR pass reads (per phase: the taps f[k::up];
    a 1-D filter runs along both axes, so its bound is squared)."""
    if f is None:
        return 1.0
    if f.ndim == 1:
        return max(f[k::up].abs().sum().item() for k in range(up)) ** 2
    return max(f[ky::up, kx::up].abs().sum().item() for ky in range(up) for kx in range(up))


def _clamp_never_binds(x, fu, up: int, gain: float, slope: float, clamp: float, bias=None) -> bool:
    """True when no sample of lrelu(up(x + bias)) * gain can reach the clamp: |up(v)| <= max|v| * phase L1 of the up
    filter * up**2 (its gain), |x + bias| <= max|x| + max|bias|, and leaky ReLU never grows a magnitude by more than
    max(1, |slope|). The margin covers rounding. Then the clamp pass is skipped and the output is bit-identical; NaN
    or inf in x keeps the clamp."""
    lo, hi = torch.aminmax(x.permute(0, 2, 3, 1).reshape(-1))  # flat: a reduction over the 4-D CL view is 30x slower
    peak = max(-lo.item(), hi.item()) + (0.0 if bias is None else bias.abs().max().item())
    bound = peak * _phase_l1(fu, up) * up ** 2 * abs(gain) * max(1.0, abs(slope))
    return bound * (1 + 1e-4) <= clamp


def filtered_lrelu_fast(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter):
    """Same contract as filtered_lrelu_ref: bias -> up (depthwise transposed convs) -> lrelu * gain, clamp
    (in place unless autograd needs the graph; the gain is folded into the up filter) -> down (strided depthwise
    convs), in channels-last layout, one band of output rows at a time: each band reads its input rows plus the
    filters' halo, so the upsampled intermediate exists only for one band (bounded memory) and every band is a
    contiguous block of memory (no channel gathers)."""
    from .filtered_lrelu import output_size
    assert x.ndim == 4, x.shape
    grad_mode = needs_grad(x, b)
    n, c, h, w = x.shape
    px0, px1, py0, py1 = parse_padding(padding)
    out_w, out_h = output_size(w, h, fu, fd, up, down, padding)
    fu_w, fu_h = (1, 1) if fu is None else ((fu.shape[0],) * 2 if fu.ndim == 1 else (fu.shape[1], fu.shape[0]))
    fd_w, fd_h = (1, 1) if fd is None else ((fd.shape[0],) * 2 if fd.ndim == 1 else (fd.shape[1], fd.shape[0]))
    x = x.contiguous(memory_format=CL)
    # inference with a separable up filter: banded GEMMs, and the bias is added in their row copy (no pass of its own)
    gemm_up = not grad_mode and fu is not None and fu.ndim == 1 and up > 1
    bias = None if b is None or not gemm_up else b.to(x.dtype)
    if b is not None and not gemm_up:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    folded = not grad_mode and gain > 0  # lrelu(g*v) == g*lrelu(v)
    if not grad_mode and clamp is not None and clamp >= 0 and _clamp_never_binds(x, fu, up, gain, slope, clamp, bias):
        clamp = None  # one pass over the upsampled intermediate fewer
    g_up = up ** 2 * (gain if folded else 1)
    taps = _corr_taps(fu, g_up, flip_filter) if gemm_up else None  # (1, K) and (K, 1), once for every band

    def upsample(xs, pad, crop_w):
        if gemm_up:
            return _up_separable_gemm(xs, *taps, (up, up), pad, crop_w, bias)
        return upfirdn2d_fast(xs, fu, up=up, padding=pad, gain=g_up, flip_filter=flip_filter, crop_w=crop_w)
    tmp_w = w * up + px0 + px1 - fu_w + 1
    rows = max(1, CHUNK_ELEMS // max(1, n * c * tmp_w * down))  # output rows per band
    crop = grad_mode  # inference: keep the up pass's extra right columns, crop after the down pass (smaller)
    if rows < out_h and gemm_up and fd_h > down:
        if fd.ndim == 2 and c % DOWN_BLOCK == 0 and blocked_depthwise(x.device):
            return _filtered_lrelu_blocked(x, fu, fd, up, down, (px0, px1, py0, py1), g_up, gain, slope, clamp,
                                           folded, flip_filter, out_w, out_h, fu_h, fd_h, rows, bias)
        return _filtered_lrelu_rolling(x, fu, fd, up, down, (px0, px1, py0, py1), g_up, gain, slope, clamp, folded,
                                       flip_filter, out_w, out_h, fu_h, fd_h, rows, bias)
    if rows >= out_h or grad_mode:
        y = upsample(x, [px0, px1, py0, py1], crop)
        y = _act_(y, gain, slope, clamp, grad_mode, folded)
        return upfirdn2d_fast(y, fd, down=down, flip_filter=flip_filter).narrow(3, 0, out_w)
    out = workspace.empty([n, c, out_h, out_w], x.dtype, x.device, channels_last=True)
    for j0 in range(0, out_h, rows):
        j1 = min(out_h, j0 + rows)
        t0, t1 = j0 * down, (j1 - 1) * down + fd_h  # rows of the upsampled intermediate this band needs
        i0 = max(0, _ceil_div(t0 - py0, up))  # input rows feeding them
        i1 = min(h, (t1 + fu_h - 2 - py0) // up + 1)
        if i1 <= i0:
            i0, i1 = min(i0, h - 1), min(i0, h - 1) + 1
        q0 = i0 * up + py0 - t0
        q1 = (t1 - t0) - 1 + fu_h - (i1 - i0) * up - q0
        y = upsample(x[:, :, i0:i1], [px0, px1, q0, q1], False)
        y = _act_(y, gain, slope, clamp, grad_mode, folded)
        out[:, :, j0:j1] = upfirdn2d_fast(y, fd, down=down, flip_filter=flip_filter).narrow(3, 0, out_w)
    return out


def _filtered_lrelu_rolling(x, fu, fd, up, down, pad, g_up, gain, slope, clamp, folded, flip_filter, out_w, out_h,
                            fu_h, fd_h, rows, bias=None):
    """Inference band loop for a separable up filter: consecutive bands of output rows share fd_h - down activated
    rows of the upsampled intermediate; they are kept instead of being upsampled and activated again. The bands
    move down a ring buffer of two bands' rows, so a band starts where the shared rows already are; only when the
    next band would run past the ring's end are the shared rows copied to its head (every other band or less).
    Each band's new rows are a whole number of GEMM tiles written straight into the ring by the vertical pass (no
    copy). `bias` [C]: added in the horizontal pass's row copy."""
    n, c, h, w = x.shape
    px0, px1, py0, py1 = pad
    overlap = fd_h - down
    rows = _band_rows(rows, down, up)
    kx, ky = _corr_taps(fu, g_up, flip_filter)  # (1, K) horizontal taps, (K, 1) vertical taps (carry the gain)
    xc = x.contiguous(memory_format=CL)
    wfull = _ceil_div(_ceil_div(w * up + px0 + px1 - kx.shape[1] + 1, up), ROW_TILE) * ROW_TILE * up  # cols W'
    first = (min(rows, out_h) - 1) * down + fd_h
    alloc = max(_up_rows_tiles(first, up), overlap + _up_rows_tiles(rows * down, up))
    cap = 2 * alloc
    ring = workspace.empty([n, cap, wfull, c], x.dtype, x.device)
    out = workspace.empty([n, c, out_h, out_w], x.dtype, x.device, channels_last=True)
    base, prev_t0 = 0, None  # the band's upsampled row t0 is ring row base
    for b in _band_plan(h, up, down, py0, fu_h, fd_h, out_h, rows):
        if b.keep:
            base += b.t0 - prev_t0
            if base + alloc > cap:  # the band would run past the end: carry the shared rows to the head
                ring.narrow(1, 0, b.keep).copy_(ring.narrow(1, base, b.keep))  # base >= alloc > keep: disjoint
                base = 0
        cols = _up_cols_gemm(xc[:, :, b.i0:b.i1], kx[0], up, px0, px1, full_width=True, bias=bias)  # [N,C,i,W']
        assert cols.shape[3] == wfull, (cols.shape, wfull)
        new = _up_rows_gemm(cols, ky[:, 0], up, b.q0, b.q1, out=ring.narrow(1, base + b.keep, alloc - b.keep))
        assert new.shape[2] == b.t1 - b.t0 - b.keep, (new.shape, b)
        _act_(new, gain, slope, clamp, False, folded)
        band = ring.narrow(1, base, b.t1 - b.t0).permute(0, 3, 1, 2)
        out[:, :, b.j0:b.j1] = upfirdn2d_fast(band, fd, down=down, flip_filter=flip_filter).narrow(3, 0, out_w)
        prev_t0 = b.t0
    workspace.recycle(ring)
    return out


DOWN_BLOCK = 8  # channels per block in _filtered_lrelu_blocked: oneDNN's AVX2 depthwise kernels work on 8


class _Band(NamedTuple):
    """One band of a banded filtered_lrelu: output rows [j0, j1), upsampled rows [t0, t1) of which the first `keep`
    are shared with the band before (already activated), and the input rows [i0, i1) its new rows read, which
    the vertical up pass sees with q0, q1 zero rows of padding."""
    j0: int
    j1: int
    t0: int
    t1: int
    keep: int
    i0: int
    i1: int
    q0: int
    q1: int


def _band_rows(rows: int, down: int, up: int) -> int:
    """Output rows per band, rounded so that a band's new upsampled rows are whole GEMM tiles."""
    tile_rows = ROW_TILE * up
    return max(1, (rows * down) // tile_rows) * tile_rows // down if (tile_rows % down == 0) else rows


def _band_plan(h: int, up: int, down: int, py0: int, fu_h: int, fd_h: int, out_h: int, rows: int) -> list[_Band]:
    """Consecutive bands of `rows` output rows; each band after the first keeps the fd_h - down upsampled rows it
    shares with the band before."""
    plan, done = [], None
    for j0 in range(0, out_h, rows):
        j1 = min(out_h, j0 + rows)
        t0, t1 = j0 * down, (j1 - 1) * down + fd_h
        keep = 0 if done is None else done - t0
        s0 = t0 + keep  # first new row
        i0 = max(0, _ceil_div(s0 - py0, up))
        i1 = min(h, (t1 + fu_h - 2 - py0) // up + 1)
        if i1 <= i0:
            i0, i1 = min(i0, h - 1), min(i0, h - 1) + 1
        q0 = i0 * up + py0 - s0
        q1 = (t1 - s0) - 1 + fu_h - (i1 - i0) * up - q0
        plan.append(_Band(j0, j1, t0, t1, keep, i0, i1, q0, q1))
        done = t1
    return plan


def _filtered_lrelu_blocked(x, fu, fd, up, down, pad, g_up, gain, slope, clamp, folded, flip_filter, out_w, out_h,
                            fu_h, fd_h, rows, bias=None):
    """Inference band loop of _filtered_lrelu_rolling on channel blocks (memory [N*C/8, H, W, 8]) for CPUs where
    the depthwise down filter is 3-4x faster on blocks than on channels-last (_spec.blocked_depthwise). Per band
    the input rows it reads are copied into blocks (adding the bias, with zero borders), the horizontal up pass is
    one depthwise transposed convolution, the vertical one a GEMM per tile over all blocks (a block's image row is
    a contiguous [W*8] vector) written into the band's buffer and activated while it is in cache, and the down
    filter reads the buffer in place. A tile reads x's own rows where the rolling path pads the band's input
    with zeros: those rows meet only zero taps or feed rows past the band's end, which are dropped. The buffer
    holds one band contiguously (the convolution needs that), so consecutive bands alternate between two buffers
    and the fd_h - down shared rows are copied to the next band's head."""
    n, c, h, w = x.shape
    px0, px1, py0, py1 = pad
    bs, dtype, device = DOWN_BLOCK, x.dtype, x.device
    nb, blocks = n * c // bs, c // bs
    kx, ky = _corr_taps(fu, g_up, flip_filter)  # (1, K) horizontal taps, (K, 1) vertical taps (carry the gain)
    kd = _corr_taps(fd, 1.0, flip_filter)[0]
    K = kx.shape[1]
    plan = _band_plan(h, up, down, py0, fu_h, fd_h, out_h, _band_rows(rows, down, up))
    # per band its vertical up pass: (banded matrix, first input row read (< 0: zero padding), GEMM tiles)
    passes = []
    for b in plan:
        band, L_out, c_min, _, _, tiles = _upsampling_band(ky[:, 0], up, b.q0, b.q1, b.i1 - b.i0, dtype, device)
        assert L_out == b.t1 - b.t0 - b.keep, (L_out, b)
        passes.append((band, b.i0 + c_min, tiles))
    T = ROW_TILE  # a GEMM tile's output rows per phase; it reads band.shape[1] input rows (per band: p0 mod up)
    # horizontal pass: column j of its output is column j + K-1-px0 of the transposed convolution's full output;
    # zero columns left of x move that start inside, zero columns right of it make the full output long enough
    lw = w * up + px0 + px1 - K + 1
    left = _ceil_div(max(0, px0 + 1 - K), up)
    start = K - 1 - px0 + left * up
    right = max(0, _ceil_div(start + lw - K, up) + 1 - w - left)
    wp = w + left + right
    wf = (wp - 1) * up + K  # the transposed convolution's output columns
    xh = x.permute(0, 2, 3, 1)  # NHWC view
    bias_blocks = None if bias is None else bias.reshape(blocks, 1, 1, bs)
    slab_rows = max(tiles * T + band.shape[1] - T for band, _, tiles in passes)
    slabs = workspace.empty([nb * slab_rows * wp * bs], dtype, device)
    w_up = _dw(kx.flip([0, 1]), bs, dtype)  # zero-insert + correlate == transposed conv with reversed taps
    w_down = _dw(kd, bs, dtype)
    size = max(nb * (b.keep + tiles * T * up) * lw * bs for b, (_, _, tiles) in zip(plan, passes))
    buffers = [workspace.empty([size], dtype, device) for _ in range(2 if len(plan) > 1 else 1)]
    out = workspace.empty([n, c, out_h, out_w], dtype, device, channels_last=True)
    out_rows = out.permute(0, 2, 3, 1)
    prev = None
    for k, (b, (band, first, tiles)) in enumerate(zip(plan, passes)):
        A = b.keep + tiles * T * up  # rows in this band's buffer (>= t1 - t0; the rest feed dropped outputs)
        buf = buffers[k % len(buffers)].narrow(0, 0, nb * A * lw * bs).view(nb, A, lw, bs)
        if b.keep:
            buf.narrow(1, 0, b.keep).copy_(prev[0].narrow(1, b.t0 - prev[1], b.keep))
        span = band.shape[1]
        rows_in = tiles * T + span - T
        slab = _blocked_slab(xh, first, rows_in, left, right, bias_blocks,
                             slabs.narrow(0, 0, nb * rows_in * wp * bs).view(nb, rows_in, wp, bs))
        hv = F.conv_transpose2d(slab.permute(0, 3, 1, 2), w_up, stride=(1, up), groups=bs)
        hv = hv.permute(0, 2, 3, 1).contiguous()  # [nb, rows_in, wf, bs] (a view: the output is channels-last)
        for t in range(tiles):
            win = hv.as_strided([nb, span, lw * bs], [rows_in * wf * bs, wf * bs, 1],
                                hv.storage_offset() + (t * T * wf + start) * bs)
            new = buf.narrow(1, b.keep + t * T * up, T * up).view(nb, T * up, lw * bs)
            torch.matmul(band, win, out=new)
            _act_(new, gain, slope, clamp, False, folded)
        y = F.conv2d(buf.permute(0, 3, 1, 2), w_down, stride=down, groups=bs)
        rows_out = b.j1 - b.j0
        assert y.shape[2] >= rows_out and y.shape[3] >= out_w, (y.shape, rows_out, out_w)
        ys = y.permute(0, 2, 3, 1).reshape(n, blocks, y.shape[2], y.shape[3], bs).permute(0, 2, 3, 1, 4)
        _copy_chunks(out_rows.narrow(1, b.j0, rows_out).view(n, rows_out, out_w, blocks, bs),
                     ys.narrow(1, 0, rows_out).narrow(2, 0, out_w))
        prev = (buf, b.t0)
    workspace.recycle(slabs, *buffers)
    return out


def _copy_chunks(dst, src):
    """dst.copy_(src) for tensors whose last dim is contiguous in both (a block's channels): moved as 16-byte
    complex128 elements where sizes and offsets allow. A transposing copy's inner loop runs over that dim only, so
    wider elements mean fewer, fuller iterations (measured 5-9 % of the blocked layers' time on AVX2)."""
    unit = 16 // dst.element_size() if 16 % dst.element_size() == 0 else 0
    if unit > 1 and all(t.shape[-1] % unit == 0 and t.stride(-1) == 1 and t.storage_offset() % unit == 0
                        and all(st % unit == 0 for st in t.stride()[:-1]) for t in (dst, src)) \
            and dst.dtype == src.dtype:
        dst, src = dst.view(torch.complex128), src.view(torch.complex128)
    dst.copy_(src)


def _blocked_slab(xh, first: int, rows: int, left: int, right: int, bias, out):
    """Rows [first, first + rows) of the NHWC tensor xh (+ bias [C/8, 1, 1, 8]) as channel blocks of DOWN_BLOCK in out
    [N*C/8, rows, left + W + right, 8]: zero rows outside xh and zero columns left and right of it."""
    n, h, w, c = xh.shape
    lo = min(rows, max(0, -first))
    hi = max(lo, min(rows, h - first))
    for border in (out.narrow(1, 0, lo), out.narrow(1, hi, rows - hi), out.narrow(2, 0, left),
                   out.narrow(2, left + w, right)):
        border.zero_()
    if hi > lo:
        dest = out.narrow(1, lo, hi - lo).narrow(2, left, w).view(n, c // DOWN_BLOCK, hi - lo, w, DOWN_BLOCK)
        src = xh.narrow(1, first + lo, hi - lo).reshape(n, hi - lo, w, c // DOWN_BLOCK, DOWN_BLOCK)
        src = src.permute(0, 3, 1, 2, 4)
        if bias is None:
            _copy_chunks(dest, src)
        else:
            torch.add(src, bias, out=dest)
    return out
