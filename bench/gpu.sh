#!/usr/bin/env bash
# GPU check and timing: correctness of DEQ-DDIM against sequential DDIM, then the wall-clock table of
# sequential DDIM vs DEQ at T = 100 and 1000, batches of 1 and 16 images, on one GPU and on all visible GPUs, with the
# digits UNet and a random 32x32 diffusers UNet2DModel,
# and the torch.distributed check on the visible GPUs (NCCL) when there are two or more. The table is printed last and
# written to $OUT/gpu_speed.txt (OUT defaults to ~/.cache/deq-ddim-nb/bench; the file there is replaced).
#   bash bench/gpu.sh            (from the repository root; PYTHON=... to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu.sh: no CUDA device visible to torch; for a CPU smoke test run: $PY bench/gpu_bench.py --device cpu --quick" >&2
  exit 2
fi
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -ge 2 ]; then
  timeout 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 bench/torchrun_check.py --device cuda
fi
OUT="${OUT:-${XDG_CACHE_HOME:-$HOME/.cache}/deq-ddim-nb/bench}"
mkdir -p "$OUT"
timeout 900 "$PY" bench/gpu_bench.py --device cuda "$@" | tee "$OUT/gpu_speed.txt"
