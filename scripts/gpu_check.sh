#!/usr/bin/env bash
# GPU check, for a machine with CUDA and PyTorch but no ROS (run from anywhere):
#   1. the model library's tests (a check of the library on that machine's torch/transformers);
#   2. the benchmark's model-only part on the GPU in fp16: the paper-size model (random
#      weights) and the demo model; glance, DeepLens, zoom and the naive path; peak memory.
# Results go to $OUT (default out/gpu): gpu_results.json, model_tests.log, benchmark.log,
# versions.txt, nvidia-smi.txt. Fold them into docs/benchmarks.md on the development machine:
#   benchmark --merge out/gpu/gpu_results.json --tests-log out/gpu/model_tests.log
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-$PWD/out/gpu}"
mkdir -p "$out"
python="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed" > "$out/nvidia-smi.txt"
"$python" -c "import torch, transformers; print('torch', torch.__version__, '| cuda', torch.version.cuda, \
torch.cuda.is_available(), '| transformers', transformers.__version__)" 2>&1 | tee "$out/versions.txt"

parallel=()
if "$python" -c "import xdist" 2>/dev/null; then parallel=(-n 8); fi
echo "== model tests"
timeout "${TEST_TIMEOUT:-150}" "$python" -m pytest test/model -q -p no:cacheprovider "${parallel[@]}" \
  > "$out/model_tests.log" 2>&1
echo "model tests: exit $? ($(tail -n 1 "$out/model_tests.log"))"

if ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: the GPU benchmark did not run" | tee "$out/benchmark.log"
  exit 1
fi
echo "== benchmark, model-only, cuda float16"
timeout "${BENCH_TIMEOUT:-330}" "$python" -m sharpeye_ros.benchmark.run --model-only --device cuda \
  --dtype float16 --repeats "${REPEATS:-10}" --warmup 2 --json "$out/gpu_results.json" 2>&1 \
  | tee "$out/benchmark.log"
status=${PIPESTATUS[0]}
echo "benchmark: exit $status"
exit "$status"
