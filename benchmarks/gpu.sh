#!/usr/bin/env bash
# GPU benchmark (one short script, < 8 minutes): images/s of the reference U-Net with fp32 vs bf16
# autocast vs channels_last vs torch.compile; how many trials pack on one GPU before per-trial
# throughput drops below 80%; time to >= 98% judge accuracy.
#   bash benchmarks/gpu.sh /path/to/mnist-idx-dir
# Needs a CUDA machine with torch installed; takes the offline MNIST IDX folder as its argument.
set -euo pipefail
cd "$(dirname "$0")/.."
export STUDY_DATA_DIR="${1:-${STUDY_DATA_DIR:-../shared/data/mnist}}"
python benchmarks/gpu_bench.py
