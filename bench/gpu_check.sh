#!/usr/bin/env bash
# The GPU checks of the speed issue in one call, for a machine with a CUDA GPU (the `device` tool runs it from the
# repository root): parity on CUDA, StyleGAN per-image times at batch 1 and 8 with fp16 PSNR, the one bench table,
# HumanSD 512x512 steps per second. Every step writes its own log under $OUT and a failing step does not stop the
# others; the exit status is the number of failed steps. About 5-8 minutes on an H100.
#
#   bash bench/gpu_check.sh                    # logs in ./gpu-check (or $OUT)
#   DEVICE=cpu QUICK=1 bash bench/gpu_check.sh # the same steps at small shapes on a CPU: checks the script itself
#
# The device image has PyTorch but not every package the pack uses (diffusers for HumanSD/Parts2Whole, for one):
# carry their wheels as the device tool's README says, or those steps fail and say which package is missing.
set -u -o pipefail
OUT=${OUT:-gpu-check}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
THREADS=${THREADS:-8}
export PYTHONUNBUFFERED=1 HUMANGEN_DEVICE="$DEVICE"
mkdir -p "$OUT"
failed=0

step() {  # step NAME COMMAND...: run it, keep its output in $OUT/NAME.txt, count a failure
    local name=$1
    shift
    echo "== $name: $*" | tee "$OUT/$name.txt"
    if ! "$@" 2>&1 | tee -a "$OUT/$name.txt"; then
        echo "== $name FAILED" | tee -a "$OUT/$name.txt"
        failed=$((failed + 1))
    fi
}

if [ -n "${QUICK:-}" ]; then
    SG_CONFIGS=--configs=sg2_1024x512
    RUN_ALL=(--quick --only sg2,projection-bf16,humansd)
    HUMANSD=(--size 256 --steps 2 --repeats 1)
else
    SG_CONFIGS=--configs=sg2_1024x512,sg3r_512x256
    RUN_ALL=()
    HUMANSD=(--full --size 512)
fi

step device "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, \
    torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"
# parity: every op on the device against the CPU reference, the golden fixtures, the GPU variants of the pack's tests
step parity "$PY" -m pytest -q -p no:cacheprovider tests/test_stylegan_ops.py tests/test_stylegan_parity.py \
    tests/test_anyres_parity.py tests/test_upscale_tiled.py tests/test_smplx.py tests/test_parts2whole.py \
    -k "cuda or gpu or every_op or fixtures"
step stylegan_batch1 "$PY" bench/stylegan.py --device "$DEVICE" --threads "$THREADS" --batch 1 "$SG_CONFIGS"
step stylegan_batch8 "$PY" bench/stylegan.py --device "$DEVICE" --threads "$THREADS" --batch 8 \
    --modes fast,fast-reduced "$SG_CONFIGS"
step run_all "$PY" bench/run_all.py --device "$DEVICE" --threads "$THREADS" --runs 3 "${RUN_ALL[@]}"
step humansd "$PY" bench/humansd.py --device "$DEVICE" --threads "$THREADS" "${HUMANSD[@]}"
echo "== $failed step(s) failed; logs in $OUT"
exit "$failed"
