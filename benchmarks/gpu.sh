#!/usr/bin/env bash
# GPU benchmarks. gpu_bench.py (< 8 minutes): images/s of the reference U-Net with fp32 vs bf16
# autocast vs channels_last vs torch.compile; how many trials pack on one GPU before per-trial
# throughput drops below 80%; time to >= 98% judge accuracy. Then peer.py (< 5 minutes): ours vs
# diffusers' UNet2DModel, when diffusers can be imported.
#   bash benchmarks/gpu.sh /path/to/mnist-idx-dir               # both
#   bash benchmarks/gpu.sh --peer-only /path/to/mnist-idx-dir   # peer.py alone
#   bash benchmarks/gpu.sh --fetch-peer-libs                    # where a package registry is reachable
# Needs a CUDA machine with torch installed; takes the offline MNIST IDX folder as its argument.
# diffusers is a dev-only dependency and GPU machines may have no registry: --fetch-peer-libs
# installs it (pure Python, no dependencies: huggingface_hub, safetensors, Pillow, regex and
# requests must already be there) into benchmarks/.peerlibs (git-ignored, about 30 MB); carry that
# folder to the GPU machine and this script puts it on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERLIBS=benchmarks/.peerlibs
DIFFUSERS=diffusers==0.42.1

if [[ "${1:-}" == "--fetch-peer-libs" ]]; then
    py=python3
    [[ -x .venv/bin/python ]] && py=.venv/bin/python
    rm -rf "$PEERLIBS"
    "$py" -m pip install --quiet --no-deps --no-compile --target "$PEERLIBS" "$DIFFUSERS"
    du -sh "$PEERLIBS"
    exit 0
fi
peer_only=false
if [[ "${1:-}" == "--peer-only" ]]; then
    peer_only=true
    shift
fi
export STUDY_DATA_DIR="${1:-${STUDY_DATA_DIR:-../shared/data/mnist}}"

$peer_only || python benchmarks/gpu_bench.py

if [[ -d "$PEERLIBS" ]]; then
    export PYTHONPATH="$PWD/$PEERLIBS${PYTHONPATH:+:$PYTHONPATH}"
fi
if err=$(python -c "import diffusers.training_utils" 2>&1); then
    echo
    python benchmarks/peer.py --device cuda --batch 256 --budget-seconds 60
else
    echo "peer.py skipped: cannot import diffusers (${err##*$'\n'}); run" \
         "bash benchmarks/gpu.sh --fetch-peer-libs where a registry is reachable, carry $PEERLIBS"
    $peer_only && exit 1
fi
