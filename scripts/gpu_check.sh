#!/usr/bin/env bash
# GPU check of the experiments (issue 12): ≤ 8 minutes on one CUDA GPU; everything is written to one directory.
#
#   scripts/gpu_check.sh [DIR] [--device cuda|cpu] [--tiny]
#
# DIR defaults to $OUT (set on the lent GPU machines), else ./gpu_check. Steps (each under its own timeout; a failed
# step is recorded in summary.txt and the next one still runs):
#   1. environment: nvidia-smi, torch / CUDA versions                                  -> env.txt
#   2. python -m experiments bench --device D (batched ensembles vs a Python loop)     -> bench.json
#   3. E1 at paper scale, one row of the sweep (affine teacher d = 32, seed 0, all 12 widths 4 … 8192, every run
#      holding all 8 densities)                                                          -> e1/e1.jsonl
#   4. one epoch of the CIFAR ResNet-18 layerwise experiment (paper hyper-parameters, balanced, density 0.1) on
#      synthetic CIFAR-shaped data (50000 + 10000 random images): time per epoch, peak memory -> cifar_epoch.json
#   5. python -m construct bench (CPU: subset-sum solver, 784-300-100-10 2L ticket)     -> construct_bench.json
#   6. paper-scale GPU-hour estimates from the measured times                          -> estimates.json
# --tiny: the same commands at a size a CPU finishes in minutes (bench 8 models × 5 steps; E1 first width only;
# 500 + 200 synthetic images at ResNet width 8; construct solver only). Run it with --device cpu --tiny before
# a GPU is lent, so that on the GPU the only unknown is the GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

DIR="${OUT:-./gpu_check}"
DEVICE=cuda
TINY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --device=*) DEVICE="${1#*=}"; shift ;;
    --tiny) TINY=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1: allowed [DIR] [--device cuda|cpu] [--tiny]" >&2; exit 2 ;;
    *) DIR="$1"; shift ;;
  esac
done
case "$DEVICE" in cpu|cuda) ;; *) echo "error: --device=$DEVICE: allowed cpu or cuda" >&2; exit 2 ;; esac
mkdir -p "$DIR"
SUMMARY="$DIR/summary.txt"
: > "$SUMMARY"
STARTED=$(date +%s)

step() {  # step NAME TIMEOUT_S COMMAND...: run, log to DIR/NAME.log, record status and seconds
  local name="$1" limit="$2"; shift 2
  local t0=$(date +%s)
  echo "== $name: $*" | tee -a "$DIR/$name.log"
  timeout --kill-after=10 "$limit" "$@" >> "$DIR/$name.log" 2>&1
  local rc=$? t=$(( $(date +%s) - t0 ))
  printf '%-14s rc=%-3s %4d s  %s\n' "$name" "$rc" "$t" "$*" | tee -a "$SUMMARY"
  tail -n 3 "$DIR/$name.log" | sed 's/^/    /'
}

if [ "$TINY" = 1 ]; then
  BENCH=(--models 8 --steps 5); E1_LIMIT=(--limit 1); CIFAR=(--train 500 --test 200); WIDTH=8; CONSTRUCT=(--skip-ticket)
else
  BENCH=(); E1_LIMIT=(); CIFAR=(); WIDTH=64; CONSTRUCT=()
fi

{ date -u; uname -a; nvidia-smi 2>&1 || echo "nvidia-smi: not available";
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"; } > "$DIR/env.txt" 2>&1
step bench 120 bash -c "python -m experiments bench --device $DEVICE --json ${BENCH[*]} > '$DIR/bench.json'"
rm -rf "$DIR/e1"
step e1_paper_row 240 python -m experiments run e1 --scale paper --device "$DEVICE" --out "$DIR/e1" --seeds 1 \
  --where task=affine --where inputs=32 --progress lines "${E1_LIMIT[@]}"
step cifar_data 60 python scripts/gpu_check.py write-cifar "$DIR/cifar" "${CIFAR[@]}"
step cifar_epoch 180 python scripts/gpu_check.py cifar-epoch --data-dir "$DIR/cifar" --device "$DEVICE" \
  --width "$WIDTH" --out "$DIR/cifar_epoch.json"
step construct 120 bash -c "python -m construct bench --json ${CONSTRUCT[*]} > '$DIR/construct_bench.json'"
step estimate 60 python scripts/gpu_check.py estimate --epoch "$DIR/cifar_epoch.json" --e1 "$DIR/e1/e1.jsonl" \
  --out "$DIR/estimates.json"
rm -rf "$DIR/cifar"  # 180 MB of random pixels: not worth bringing back
echo "total $(( $(date +%s) - STARTED )) s; device $DEVICE; tiny $TINY" | tee -a "$SUMMARY"
! grep -q "rc=[1-9]" "$SUMMARY"
