#!/usr/bin/env bash
# The GPU check (issue 13), one call on a lent GPU machine, within about 8 minutes:
#   1. pytest -m gpu (the CUDA paths: bf16 autocast, compile, FlexAttention, cached decoding);
#   2. training throughput and MFU at 0.16B, bf16 + FlexAttention + torch.compile, both
#      families, against the bf16 matmul peak measured in the same process (bench/train.py);
#   3. decoding speed with and without the KV cache (bench/decode.py);
#   4. one DDP step over NCCL with one process (bench/ddp_check.py).
# Everything it prints is appended to bench/RESULTS.md, with the GPU and the commit named.
# Without a CUDA device it says so and exits 0 (nothing to check here).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to torch: skipped"
  exit 0
fi
out=$(mktemp)
run() {  # run LIMIT_S LABEL CMD...: one step, its output and exit status in the record
  local limit=$1 label=$2; shift 2
  echo "### $label" >>"$out"; echo '```' >>"$out"
  timeout "$limit" "$@" >>"$out" 2>&1; local rc=$?
  echo '```' >>"$out"; echo "exit status: $rc" >>"$out"; echo >>"$out"
  echo "gpu_check: $label: exit $rc"
}
{
  echo "## GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); torch $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)')"
  echo
} >"$out"
run 150 "pytest -m gpu" "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
run 240 "training at 0.16B: bf16, FlexAttention, torch.compile (bench.train)" \
  "$PY" -m bench.train --device cuda --dtype bf16 --compile --sizes 0.16B --seq-len 2048 --batch 8 --steps 10 \
  --warmup 3 --latent-channels 8 --latent-size 32 --codebook 16384
run 60 "decoding (bench.decode)" "$PY" -m bench.decode --device cuda --dtype bf16 --size 0.16B --batch 8 \
  --prompt-len 512 --new-tokens 64 --image-steps 50
run 60 "one DDP step over NCCL (bench.ddp_check)" "$PY" -m bench.ddp_check --device cuda
cat "$out"
cat "$out" >>bench/RESULTS.md
rm -f "$out"
