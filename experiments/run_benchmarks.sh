#!/bin/bash
# Produces experiments/benchmark_cpu.md's tables: bash experiments/run_benchmarks.sh [TORCH_PYTHON]
# TORCH_PYTHON: a python with torch 2.13 installed (a separate venv: pip install torch==2.13.0
# absl-py numpy); without it the PyTorch rows are skipped. Run on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_PYTHON=${1:-}
run() { echo; echo "\$ $*"; "$@" 2>&1 | grep -v '^[IWE][0-9]\{4\} '; }

# PyTorch eager vs JAX on the identical default model, interleaved (this CPU's speed drifts).
for round in 1 2; do
  if [ -n "$TORCH_PYTHON" ]; then
    run "$TORCH_PYTHON" experiments/benchmark_torch.py --batch_sizes=64,128 --dtypes=float32,bfloat16 --steps=20
  fi
  run python experiments/benchmark.py --upsamplers=transpose --batch_sizes=64,128 --dtypes=float32,bfloat16 --steps=20
done
# Every upsampler, batch 64/128/256, float32 and bfloat16.
run python experiments/benchmark.py --batch_sizes=64,128,256 --dtypes=float32,bfloat16 --compare_flax_transpose=false --steps=10
# 8 seed replicas in one program (loop and vmap) against one replica.
run python experiments/benchmark.py --upsamplers=transpose --compare_flax_transpose=false --batch_sizes=64 --replicas=1,8 --steps=10
# The bound on any replica formulation here: one replica on one core vs on both.
run taskset -c 0 python experiments/benchmark.py --upsamplers=transpose --compare_flax_transpose=false --batch_sizes=64 --steps=20
run python experiments/benchmark.py --upsamplers=transpose --compare_flax_transpose=false --batch_sizes=64 --steps=20
# Data parallel over 1, 2 and 8 host devices (they share the same 2 cores).
for n in 2 8; do
  run env XLA_FLAGS=--xla_force_host_platform_device_count=$n python experiments/benchmark.py \
    --upsamplers=transpose --compare_flax_transpose=false --batch_sizes=64,128 --parallelism=single,pmap,sharded --steps=10
done
# Can XLA use the CPU's bfloat16 matrix units? Matmuls, the two largest layers, and the whole
# step with convolutions as im2col + float32-accumulating matmuls.
run python experiments/bf16_amx.py --batch_sizes=64,128 --steps=15
