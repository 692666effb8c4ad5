"""Benchmark: a Python loop over models vs the batched ensemble (``python -m experiments bench``).

The same set of small masked MLPs (ER masks on both layers, densities cycling through E1's grid) is trained for
a fixed number of Adam steps on the same minibatches, (a) one model at a time with :func:`train_single` and
(b) as a batched ensemble with :func:`train_ensemble`; throughput is models·steps per second.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from theory.memory import check_memory
from theory.validation import check_positive_int

from .infra.data import affine_teacher_task
from .infra.device import describe_device
from .e1_three_layer import DENSITIES
from .infra.ensemble import MLPSpec, TrainConfig, train_ensemble, train_single

__all__ = ["BenchCase", "BenchResult", "MAX_MODELS", "MAX_STEPS", "bench_memory_estimate", "bench_specs", "run_bench"]

#: Upper bounds of ``--models`` and ``--steps`` (the default is 64 × 50; beyond these it is a typo, not a plan).
MAX_MODELS = 100_000
MAX_STEPS = 1_000_000
#: Samples of the benchmark's teacher task (train split), as float64 numpy and float32 tensors.
_SAMPLES = 4096


@dataclass(frozen=True)
class BenchCase:
    name: str
    models: int
    steps: int
    loop_seconds: float
    batched_seconds: float

    @property
    def loop_rate(self) -> float:
        return self.models * self.steps / self.loop_seconds

    @property
    def batched_rate(self) -> float:
        return self.models * self.steps / self.batched_seconds

    def to_dict(self) -> dict:
        return {"name": self.name, "models": self.models, "steps": self.steps,
                "loop_seconds": round(self.loop_seconds, 4), "batched_seconds": round(self.batched_seconds, 4),
                "loop_model_steps_per_s": round(self.loop_rate, 1),
                "batched_model_steps_per_s": round(self.batched_rate, 1),
                "speedup": round(self.batched_rate / self.loop_rate, 2)}


@dataclass(frozen=True)
class BenchResult:
    device: str
    threads: int
    cases: tuple[BenchCase, ...]

    def to_dict(self) -> dict:
        return {"device": self.device, "torch_threads": self.threads, "cases": [c.to_dict() for c in self.cases]}


def bench_specs(models: int, inputs: int, widths: tuple[int, ...]) -> list[MLPSpec]:
    """``models`` specs d → n → 1, widths cycling through ``widths``, densities through E1's grid."""
    return [MLPSpec((inputs, widths[i % len(widths)], 1), (DENSITIES[i % len(DENSITIES)],) * 2, seed=i)
            for i in range(models)]


def bench_memory_estimate(models: int, inputs: int, width: int, batch_size: int) -> int:
    """Bytes the benchmark needs (an upper estimate): per model d → width → 1, 8 float32 per parameter
    (weights, mask, gradient, Adam's moments, copies) and 2 float32 per unit of one batch; the spec objects
    (1 KiB each); the data. Measured on CPU (peak RSS, 2 steps): 161 KiB per model at the defaults
    (width ≤ 128, batch 128) between 1024 and 4096 models; the estimate is 266 KiB per model."""
    params = inputs * width + width + width + 1
    per_model = 4 * (8 * params + 2 * batch_size * (width + 1)) + 1024
    return int(models * per_model + _SAMPLES * (inputs + 1) * (8 + 4) * 2)


def _time(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run_bench(device: torch.device, models: int = 64, steps: int = 50, inputs: int = 32, width: int = 64,
              mixed_widths: tuple[int, ...] = (16, 32, 64, 128), batch_size: int = 128,
              max_memory: int | None = None) -> BenchResult:
    """Time the loop and the batched ensemble side by side on one bucket and on a mixed-width set.

    Before allocating, :func:`bench_memory_estimate` is checked against ``max_memory`` (default: a fraction of
    the available memory); ``models`` and ``steps`` are bounded by :data:`MAX_MODELS` and :data:`MAX_STEPS`."""
    models = check_positive_int(models, "models")
    steps = check_positive_int(steps, "steps")
    if models > MAX_MODELS:
        raise ValueError(f"models={models} is out of range: allowed 1..{MAX_MODELS}")
    if steps > MAX_STEPS:
        raise ValueError(f"steps={steps} is out of range: allowed 1..{MAX_STEPS}")
    estimate = bench_memory_estimate(models, inputs, max((width, *mixed_widths)), batch_size)
    check_memory(estimate, f"the benchmark of {models} models", max_memory)
    data = affine_teacher_task(inputs, 0, _SAMPLES, 16)
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train - data.y_train.mean())
    config = TrainConfig(lr=1e-2, max_steps=steps, batch_size=batch_size, schedule="constant",
                         check_every=steps, patience=1_000_000)
    cases = []
    for name, widths in (("one bucket (width %d)" % width, (width,)),
                         ("mixed widths %s" % "/".join(map(str, mixed_widths)), tuple(mixed_widths))):
        specs = bench_specs(models, inputs, widths)
        warm = TrainConfig(max_steps=2, check_every=2, patience=10)  # warm-up of both code paths
        train_ensemble(specs[:2], x, y, warm, device=device)
        train_single(specs[0], x, y, warm, device=device)
        loop = _time(lambda: [train_single(s, x, y, config, device=device) for s in specs], device)
        batched = _time(lambda: train_ensemble(specs, x, y, config, device=device), device)
        cases.append(BenchCase(name, models, steps, loop, batched))
    return BenchResult(describe_device(device), torch.get_num_threads(), tuple(cases))
