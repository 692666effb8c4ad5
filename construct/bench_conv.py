"""``python -m construct bench --target resnet18``: the 2L strong ticket of a convolutional target (by default the
CIFAR ResNet-18 of ``experiments/models.py``, seeded random weights, BatchNorm folded) inside an ER source at
theory's widths, timed phase by phase, with the peak resident memory of the process (docs/math.md §9).
"""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass

__all__ = ["ConvBench", "run_conv_bench", "format_conv_bench"]


@dataclass(frozen=True)
class ConvBench:
    target: str
    target_params: int
    weighted_layers: int
    batchnorm_folded: int
    density: float
    weight_eps: float | None
    eps: float | None
    delta: float
    width_multiplier: float
    source_params: int
    source_dtype: str
    instances: int
    failures: int
    ticket_params: int
    certificate: float
    grouped_certificate: float
    sampled_error: float
    samples: int
    target_output_max: float
    attacked_error: float | None
    seconds: dict
    peak_rss_bytes: int
    machine: str

    def to_dict(self) -> dict:
        return asdict(self)


def _peak_rss() -> int:
    """Peak resident set size of this process in bytes (Linux reports kilobytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def run_conv_bench(spec: str = "resnet18", *, density: float = 0.5, weight_eps: float | None = 0.01,
                   eps: float | None = None, delta: float = 0.1, width_multiplier: float = 1.0, samples: int = 32,
                   seed: int = 0, attack: bool = True, max_memory=None, progress=None) -> ConvBench:
    """Build and time the 2L ticket of the named convolutional target (:data:`construct.conv_strong.CONV_MODEL_NAMES`)."""
    import os

    from construct.conv_strong import build_conv_strong_ticket, load_conv_target

    t0 = time.perf_counter()
    target = load_conv_target(spec, seed=seed)
    if target is None:
        raise ValueError(f"target={spec!r} is not a convolutional target: allowed digits-cnn, digits-resnet, "
                         "resnet18[:width=W]")
    t_target = time.perf_counter() - t0
    ticket, rep = build_conv_strong_ticket(target, target.input_shape, density, delta, seed, eps=eps,
                                           weight_eps=weight_eps, width_multiplier=width_multiplier, samples=samples,
                                           max_memory=max_memory, progress=progress)
    t_build = time.perf_counter() - t0 - t_target
    import numpy as np

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0AA]))  # the sampled-error stream
    a, b = target.box
    x = rng.uniform(a, b, size=(min(samples, 8),) + tuple(target.input_shape))
    output_max = float(np.abs(target.forward(x)).max())
    attacked = None
    t_attack = 0.0
    if attack:
        from construct.conv_attack import conv_attack_error

        t1 = time.perf_counter()
        attacked = conv_attack_error(ticket, seed=seed, samples=samples, starts=4, steps=10).error
        t_attack = time.perf_counter() - t1
    return ConvBench(
        target=spec, target_params=target.params, weighted_layers=len(target.weighted),
        batchnorm_folded=len(target.folded), density=density, weight_eps=weight_eps, eps=eps, delta=delta,
        width_multiplier=width_multiplier, source_params=rep.source_params, source_dtype=rep.source_dtype,
        instances=rep.instances, failures=rep.failures, ticket_params=rep.ticket_params,
        certificate=rep.certificate, grouped_certificate=rep.grouped_certificate, sampled_error=rep.sampled_error,
        samples=samples, target_output_max=output_max, attacked_error=attacked,
        seconds={"target": round(t_target, 2), "build, certificate and sampled error": round(t_build, 2),
                 "attack": round(t_attack, 2), "total": round(time.perf_counter() - t0, 2)},
        peak_rss_bytes=_peak_rss(), machine=f"{os.cpu_count()} CPUs")


def format_conv_bench(b: ConvBench) -> str:
    tol = f"weight-eps {b.weight_eps}" if b.weight_eps is not None else f"eps {b.eps}"
    attacked = "not run" if b.attacked_error is None else f"{b.attacked_error:.3e}"
    return "\n".join([
        f"2L strong ticket of {b.target}: {b.target_params:,} target weights in {b.weighted_layers} conv/linear "
        f"layers ({b.batchnorm_folded} BatchNorm folded)",
        f"  ER source at density {b.density}, {tol}, delta {b.delta}, width multiplier {b.width_multiplier:g} "
        f"(1 = theory's widths): {b.source_params:,} source weights ({b.source_dtype}; drawn only where read, never "
        "materialized)",
        f"  {b.instances:,} subset-sum instances, {b.failures} failed; ticket keeps {b.ticket_params:,} weights",
        f"  certificate {b.certificate:.3e} (grouped bound {b.grouped_certificate:.3e}); sampled error "
        f"{b.sampled_error:.3e} over {b.samples} inputs; attacked error {attacked}; the target's outputs reach "
        f"{b.target_output_max:.3g} in absolute value",
        "  time: " + ", ".join(f"{k} {v:.1f} s" for k, v in b.seconds.items())
        + f"; peak memory {b.peak_rss_bytes / 2**30:.2f} GiB ({b.machine})"])
