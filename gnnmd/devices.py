"""Which torch device a command computes on: `--device auto|cpu|cuda|cuda:N` (auto: the GPU when there is
one). Nothing is moved to a GPU unless asked or auto finds one; checkpoints are always written with CPU
tensors, so a model trained on a GPU loads on a machine without one."""

from __future__ import annotations

import re

import torch

DEVICE_HELP = "auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N"


def check_device_spec(spec: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(spec)):
        raise ValueError(f"--device must be {DEVICE_HELP}; got {spec!r}")
    return spec


def resolve_device(spec: str = "auto", local_rank: int | None = None) -> torch.device:
    """The torch.device `spec` names. Under torchrun (`local_rank`), `auto` and `cuda` mean this rank's own
    GPU, cuda:LOCAL_RANK."""
    check_device_spec(spec)
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: this machine has no CUDA device (torch {torch.__version__})")
    if spec in ("auto", "cuda"):
        return torch.device("cuda", local_rank or 0)
    device = torch.device(spec)
    if device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {spec}: there are only {torch.cuda.device_count()} CUDA devices")
    return device
