#!/usr/bin/env bash
# GPU checks for a lent CUDA machine (no registry there): the GPU training tests, then the
# CPU-vs-GPU learner benchmark. Run from the repository root with the wheels JPO needs
# beyond that machine's image in .whl/ (ray 2.60.0 without its Java jar, gymnasium, dm-tree,
# lz4, pydantic, jsonschema and their pure-Python needs; benchmarks/train/RESULTS.md §6).
# Writes logs and bench_gpu.json under $OUT (default /tmp/jpo-gpu-check).
set -uo pipefail
OUT="${OUT:-/tmp/jpo-gpu-check}"
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
python3 -c 'import torch, ray; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "ray", ray.__version__)'
python3 -m pytest -p no:cacheprovider -m gpu -v -o addopts="" tests/train/test_train_gpu.py 2>&1 \
  | tee "$OUT/pytest-gpu.log" | grep -E "PASS|FAIL|SKIP|ERROR|passed|failed|Error" | tail -20
python3 benchmarks/train/bench_gpu.py --budget-s "${BUDGET_S:-10}" --out "$OUT/bench_gpu.json" 2>&1 \
  | grep -v -E "WARN|warn\(" | tee "$OUT/bench_gpu.log" | tail -12
