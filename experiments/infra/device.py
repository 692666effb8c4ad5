"""``--device auto|cpu|cuda`` → ``torch.device`` (docs/experiments.md: ``auto`` picks CUDA when present)."""
from __future__ import annotations

import torch

from theory.validation import check_choice

__all__ = ["DEVICE_CHOICES", "resolve_device", "describe_device"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA if available else CPU; ``cuda`` without a visible GPU raises a one-line ValueError."""
    check_choice(name, "device", DEVICE_CHOICES)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' is unavailable: torch sees no CUDA GPU; allowed 'auto' or 'cpu' here")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """A short human-readable name: ``cpu (N threads)`` or the CUDA card's name."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"
