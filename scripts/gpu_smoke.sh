#!/usr/bin/env bash
# GPU smoke test: run once on a new GPU machine (or node) before a sweep. Uses every visible NVIDIA GPU,
# one process each, and needs no hub access. What it checks: study/gpu_smoke.py.
#   scripts/gpu_smoke.sh                   # or: make gpu-smoke
#   scripts/gpu_smoke.sh --length 2048     # less memory (the default is the recipes' 4 x 4096-token step)
#   PY=/path/to/python scripts/gpu_smoke.sh
# Exit code: 0 all checks passed, 1 a check failed, 3 no NVIDIA GPU here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-smoke: no NVIDIA GPU on this machine (nvidia-smi is missing or lists none); nothing to check here." >&2
  echo "gpu-smoke: run it on a GPU node (e.g. srun --gpus-per-node=N scripts/gpu_smoke.sh); '$PY -m study gpu-smoke --tiny' runs the code path on CPU." >&2
  exit 3
fi
GPUS=$(nvidia-smi -L | wc -l)
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
exec "$PY" -m torch.distributed.run --standalone --nproc-per-node="$GPUS" -m study gpu-smoke "$@"
