#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go: the GPU tests (tests/test_cuda.py), the rest
# of the suite on the GPU machine (where it must pass as on a CPU one: its tests see no
# GPU), and bench_unet.py's training step on the GPU against the peers: about 8 minutes.
# Each step's log goes to LOGS (default gpu-check/); the summary lines print last.
#
#     GUIDED_DIFFUSION=/path/to/guided-diffusion benchmarks/gpu_check.sh [LOGS]
set -uo pipefail
cd "$(dirname "$0")/.."
logs=${1:-gpu-check}
mkdir -p "$logs"
python=${PYTHON:-python3}
nvidia-smi -L | tee "$logs/gpu.txt"
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' \
    | tee -a "$logs/gpu.txt"
timeout 60 "$python" -m pytest -q -p no:cacheprovider tests/test_cuda.py >"$logs/cuda-tests.txt" 2>&1
# one line per measurement as it finishes (a fresh process each: ~10 s on an H200 machine)
PYTHONUNBUFFERED=1 timeout 240 "$python" benchmarks/bench_unet.py --device cuda --networks bench \
    --modes training --rounds 1 --warmup 10 --iterations 20 >"$logs/bench-unet-cuda.txt" 2>&1
timeout 200 "$python" -m pytest -v -p no:cacheprovider -n 14 --tb=short -rfE \
    --ignore=tests/test_cuda.py >"$logs/suite-on-gpu.txt" 2>&1
echo "== GPU tests";  tail -n 15 "$logs/cuda-tests.txt"
echo "== suite";      grep -E "^(FAILED|ERROR)|passed|failed" "$logs/suite-on-gpu.txt" | tail -n 30
echo "== bench_unet"; cat "$logs/bench-unet-cuda.txt"
