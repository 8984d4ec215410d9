"""Where bf16 autocast pays: on a CPU whose oneDNN has native bf16 kernels (AVX512-BF16 or AMX).

There the study's small U-Nets train 1.66x faster (benchmarks/cpu_amp.py) and sample 1.3-2.2x
faster (benchmarks/sample_precision.py) at the same quality. Elsewhere bf16 is emulated on a
CPU, and on CUDA it measured 0.76x the fp32 (TF32) throughput (casts cost these small models
more than they save), so both stay fp32 unless a config asks.
"""

from __future__ import annotations

import torch


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast pays on `device`: a CPU with native bf16 kernels."""
    if device.type != "cpu":
        return False
    try:  # torch's own check (private); each row records the precision used
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the check: fp32
        return False


def resolve(amp: bool | None, device: torch.device) -> bool:
    """A config's `amp` setting on `device`: as asked, or where it pays when None."""
    return native_bf16(device) if amp is None else amp


def dtype_name(amp: bool) -> str:
    """What a row records: the precision the step or the sampler ran in."""
    return "bf16" if amp else "fp32"
