"""Batched ensembles of small masked MLPs, following Gadhikar et al. 2023 (docs/experiments.md, E1).

Many MLPs with the same layer widths (a *width bucket*) are trained as one batched model: their weights,
biases and ER masks are stacked along a leading model axis and every layer is one batched matrix product
(``torch.baddbmm``). Each model keeps its own loss, its own Adam state and its own early stopping; a model
that stops is removed from the batch (its parameters are frozen at that step). Training every model alone
with :func:`train_single` (``torch.optim.Adam`` on :class:`~experiments.infra.masked.MaskedLinear` layers) gives
the same parameters to float tolerance — ``tests/experiments/test_ensemble.py`` checks it.

Parameters of one model are drawn by :func:`init_mlp_params` from ``torch.Generator().manual_seed(seed)``:
per layer t = 1…L, first the ER(p_t) mask (out × in), then the weights N(0, init_std²); biases start at 0.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from theory.validation import (check_choice, check_density, check_positive_int, check_positive_real,
                               check_widths)

from .masked import MaskedLinear, attach_mask_enforcement, er_mask, init_std

__all__ = [
    "MLPSpec",
    "TrainConfig",
    "LayerParams",
    "TrainedModel",
    "init_mlp_params",
    "build_single_mlp",
    "batch_indices",
    "learning_rate",
    "per_model_loss",
    "train_ensemble",
    "train_single",
    "evaluate_models",
]

LOSSES = ("mse", "cross_entropy")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class MLPSpec:
    """One masked MLP: layer widths (n_0, …, n_L), one ER density per layer, and its seed."""

    widths: tuple[int, ...]
    densities: tuple[float, ...]
    seed: int
    density_aware_init: bool = True

    def __post_init__(self):
        widths = check_widths(self.widths, "widths", minimum_length=2)
        densities = tuple(check_density(p, f"densities[{i}]") for i, p in enumerate(self.densities))
        if len(densities) != len(widths) - 1:
            raise ValueError(f"densities has {len(densities)} entries: allowed exactly one per layer ({len(widths) - 1})")
        object.__setattr__(self, "widths", widths)
        object.__setattr__(self, "densities", densities)
        object.__setattr__(self, "seed", check_positive_int(self.seed, "seed", minimum=0))

    def to_dict(self) -> dict:
        return {"widths": list(self.widths), "densities": list(self.densities), "seed": self.seed,
                "density_aware_init": self.density_aware_init}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every model of an ensemble (Adam, optional cosine decay).

    Early stopping: every ``check_every`` steps the mean training loss of the last window is compared with the
    best so far; a model stops after ``patience`` windows without a relative improvement of ``rel_tol``.
    ``batch_size=None`` means full-batch training.
    """

    loss: str = "mse"
    lr: float = 1e-3
    max_steps: int = 1000
    batch_size: int | None = None
    schedule: str = "cosine"
    check_every: int = 50
    patience: int = 4
    rel_tol: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self):
        check_choice(self.loss, "loss", LOSSES)
        check_choice(self.schedule, "schedule", SCHEDULES)
        check_positive_real(self.lr, "lr")
        check_positive_int(self.max_steps, "max_steps")
        if self.batch_size is not None:
            check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.check_every, "check_every")
        check_positive_int(self.patience, "patience")
        check_positive_real(self.rel_tol, "rel_tol")

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class LayerParams:
    """One layer of one model: weight (out × in, zero outside the mask), bias (out), bool mask (out × in)."""

    weight: torch.Tensor
    bias: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class TrainedModel:
    """A trained model: its spec, final parameters (CPU), the step it stopped at and its last window loss."""

    spec: MLPSpec
    layers: tuple[LayerParams, ...]
    steps: int
    final_train_loss: float
    loss_history: tuple[float, ...] = field(default=(), repr=False)


def init_mlp_params(spec: MLPSpec, dtype=torch.float32) -> list[LayerParams]:
    """Initial parameters of ``spec`` on the CPU (mask, then weights, per layer, from one seeded generator)."""
    generator = torch.Generator().manual_seed(spec.seed)
    layers = []
    for t in range(len(spec.widths) - 1):
        fan_in, fan_out = spec.widths[t], spec.widths[t + 1]
        mask = er_mask((fan_out, fan_in), spec.densities[t], generator)
        std = init_std(fan_in, spec.densities[t], spec.density_aware_init)
        weight = (torch.randn((fan_out, fan_in), generator=generator, dtype=torch.float64) * std).to(dtype)
        weight = weight * mask.to(dtype)
        layers.append(LayerParams(weight, torch.zeros(fan_out, dtype=dtype), mask))
    return layers


def build_single_mlp(spec: MLPSpec, device="cpu", dtype=torch.float32) -> nn.Sequential:
    """``spec`` as an ``nn.Sequential`` of :class:`MaskedLinear` + ReLU with the same initial parameters."""
    generator = torch.Generator().manual_seed(spec.seed)
    modules: list[nn.Module] = []
    for t in range(len(spec.widths) - 1):
        modules.append(MaskedLinear(spec.widths[t], spec.widths[t + 1], spec.densities[t], generator=generator,
                                    density_aware_init=spec.density_aware_init, dtype=dtype))
        if t < len(spec.widths) - 2:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules).to(device)


def batch_indices(n_samples: int, batch_size: int | None, steps: int, data_seed: int) -> Iterator[torch.Tensor | None]:
    """Minibatch indices for ``steps`` steps: consecutive slices of seeded random permutations (epochs).

    Yields ``None`` for every step when ``batch_size`` is None or ≥ ``n_samples`` (full batch).
    """
    if batch_size is None or batch_size >= n_samples:
        for _ in range(steps):
            yield None
        return
    generator = torch.Generator().manual_seed(data_seed)
    perm, pos = torch.randperm(n_samples, generator=generator), 0
    for _ in range(steps):
        if pos + batch_size > n_samples:
            perm, pos = torch.randperm(n_samples, generator=generator), 0
        yield perm[pos:pos + batch_size]
        pos += batch_size


def learning_rate(config: TrainConfig, step: int) -> float:
    """Learning rate at 0-based ``step``: constant, or cosine decay from ``lr`` to 0 over ``max_steps``."""
    if config.schedule == "constant":
        return config.lr
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * step / config.max_steps))


def per_model_loss(output: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-model loss of batched outputs (B, N, out) against targets (N, out) or labels (N,): shape (B,).

    ``mse``: mean over samples and output coordinates of (f − y)²; ``cross_entropy``: mean over samples.
    """
    if loss == "mse":
        return ((output - target.unsqueeze(0)) ** 2).mean(dim=(1, 2))
    b, n, c = output.shape
    labels = target.unsqueeze(0).expand(b, n).reshape(-1)
    return F.cross_entropy(output.reshape(b * n, c), labels, reduction="none").view(b, n).mean(dim=1)


class _EarlyStopper:
    """Per-model early stopping on windowed mean training loss (see :class:`TrainConfig`)."""

    def __init__(self, n_models: int, config: TrainConfig, device):
        self.config = config
        self.window = torch.zeros(n_models, dtype=torch.float64, device=device)
        self.best = torch.full((n_models,), math.inf, dtype=torch.float64, device=device)
        self.bad = torch.zeros(n_models, dtype=torch.long, device=device)
        self.count = 0

    def update(self, losses: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Add one step's losses; at a window end return (window means, stop flags), else (None, None)."""
        self.window += losses.detach().to(torch.float64)
        self.count += 1
        if self.count < self.config.check_every:
            return None, None
        mean = self.window / self.count
        improved = mean < self.best * (1.0 - self.config.rel_tol)
        self.best = torch.where(improved, mean, torch.minimum(self.best, mean))
        self.bad = torch.where(improved, torch.zeros_like(self.bad), self.bad + 1)
        self.window.zero_()
        self.count = 0
        return mean, self.bad >= self.config.patience

    def keep(self, index: torch.Tensor) -> None:
        self.window, self.best, self.bad = self.window[index], self.best[index], self.bad[index]


def _batched_forward(weights, biases, masks, x: torch.Tensor) -> torch.Tensor:
    """Forward pass of a bucket: x (N, n_0) shared by all models → (B, N, n_L)."""
    h = x.unsqueeze(0).expand(weights[0].shape[0], *x.shape)
    last = len(weights) - 1
    for t, (w, b, m) in enumerate(zip(weights, biases, masks)):
        h = torch.baddbmm(b.unsqueeze(1), h, (w * m).transpose(1, 2))
        if t < last:
            h = torch.relu(h)
    return h


def _train_bucket(specs: Sequence[MLPSpec], x, y, config: TrainConfig, device, dtype, data_seed: int,
                  on_step: Callable[[int, float], None] | None) -> list[TrainedModel]:
    inits = [init_mlp_params(s, dtype) for s in specs]
    n_layers = len(inits[0])
    weights = [torch.stack([p[t].weight for p in inits]).to(device) for t in range(n_layers)]
    biases = [torch.stack([p[t].bias for p in inits]).to(device) for t in range(n_layers)]
    masks = [torch.stack([p[t].mask for p in inits]).to(device=device, dtype=dtype) for t in range(n_layers)]
    params = weights + biases
    exp_avg = [torch.zeros_like(p) for p in params]
    exp_avg_sq = [torch.zeros_like(p) for p in params]
    beta1, beta2 = config.betas
    alive = torch.arange(len(specs))  # positions (in ``specs``) of the models still in the batch
    stopper = _EarlyStopper(len(specs), config, device)
    histories: list[list[float]] = [[] for _ in specs]
    results: dict[int, TrainedModel] = {}

    def finish(positions, step, final_losses):
        for pos, loss in zip(positions, final_losses):
            idx = int(alive[pos])
            layers = tuple(LayerParams(weights[t][pos].detach().cpu().clone(), biases[t][pos].detach().cpu().clone(),
                                       masks[t][pos].detach().cpu().bool()) for t in range(n_layers))
            results[idx] = TrainedModel(specs[idx], layers, step, float(loss), tuple(histories[idx]))

    step = 0
    last_mean = None
    for step, batch in enumerate(batch_indices(x.shape[0], config.batch_size, config.max_steps, data_seed)):
        xb, yb = (x, y) if batch is None else (x[batch.to(x.device)], y[batch.to(y.device)])
        for p in params:
            p.requires_grad_(True)
        losses = per_model_loss(_batched_forward(weights, biases, masks, xb), yb, config.loss)
        grads = torch.autograd.grad(losses.sum(), params)
        lr = learning_rate(config, step)
        t_step = step + 1
        bias_correction1 = 1.0 - beta1 ** t_step
        bias_correction2_sqrt = math.sqrt(1.0 - beta2 ** t_step)
        with torch.no_grad():
            for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq):
                p.requires_grad_(False)
                m.lerp_(g, 1.0 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                denom = (v.sqrt() / bias_correction2_sqrt).add_(config.eps)
                p.addcdiv_(m, denom, value=-lr / bias_correction1)
            for w, mk in zip(weights, masks):
                w.mul_(mk)
        mean, stop = stopper.update(losses)
        if mean is not None:
            last_mean = mean
            for pos in range(len(alive)):
                histories[int(alive[pos])].append(float(mean[pos]))
            if on_step is not None:
                on_step(step + 1, float(mean.mean()))
            if bool(stop.any()):
                stopped = torch.nonzero(stop).flatten().tolist()
                finish(stopped, step + 1, mean[stop].tolist())
                keep = torch.nonzero(~stop).flatten()
                if keep.numel() == 0:
                    alive = alive[:0]
                    break
                keep_dev = keep.to(device)
                weights = [w[keep_dev] for w in weights]
                biases = [b[keep_dev] for b in biases]
                masks = [m[keep_dev] for m in masks]
                params = weights + biases
                exp_avg = [m[keep_dev] for m in exp_avg]
                exp_avg_sq = [v[keep_dev] for v in exp_avg_sq]
                alive = alive[keep]
                stopper.keep(keep_dev)
    if len(alive):
        if last_mean is None or stopper.count:
            with torch.no_grad():
                final = per_model_loss(_batched_forward(weights, biases, masks, x), y, config.loss)
        else:
            final = last_mean
        finish(range(len(alive)), step + 1, final.tolist())
    return [results[i] for i in range(len(specs))]


def train_ensemble(specs: Sequence[MLPSpec], x: torch.Tensor, y: torch.Tensor, config: TrainConfig, *,
                   device="cpu", dtype=torch.float32, data_seed: int = 0,
                   on_step: Callable[[int, float], None] | None = None) -> list[TrainedModel]:
    """Train every model of ``specs`` on (x, y) with Adam, bucketed by widths; results in ``specs`` order.

    All models see the same minibatches (:func:`batch_indices` with ``data_seed``). ``on_step(step, loss)`` is
    called at each early-stopping check with the mean window loss of the models still training.
    """
    if not specs:
        raise ValueError("specs=[] is empty: allowed a non-empty list of MLPSpec")
    x = torch.as_tensor(x).to(device=device, dtype=dtype)
    y = torch.as_tensor(y).to(device)
    y = y.to(dtype) if config.loss == "mse" else y.long()
    if config.loss == "mse" and y.dim() == 1:
        y = y.unsqueeze(1)
    buckets: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, spec in enumerate(specs):
        if spec.widths[0] != x.shape[1]:
            raise ValueError(f"widths[0]={spec.widths[0]} does not match the data: allowed the input dimension {x.shape[1]}")
        buckets[spec.widths].append(i)
    out: list[TrainedModel | None] = [None] * len(specs)
    for widths, members in buckets.items():
        trained = _train_bucket([specs[i] for i in members], x, y, config, device, dtype, data_seed, on_step)
        for i, model in zip(members, trained):
            out[i] = model
    return out  # type: ignore[return-value]


def train_single(spec: MLPSpec, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, *, device="cpu",
                 dtype=torch.float32, data_seed: int = 0) -> TrainedModel:
    """Train one model alone: ``nn.Sequential`` of MaskedLinear, ``torch.optim.Adam``, the same schedule,
    minibatches and early stopping as :func:`train_ensemble` (the reference the ensemble is tested against)."""
    model = build_single_mlp(spec, device, dtype)
    x = torch.as_tensor(x).to(device=device, dtype=dtype)
    y = torch.as_tensor(y).to(device)
    y = y.to(dtype) if config.loss == "mse" else y.long()
    if config.loss == "mse" and y.dim() == 1:
        y = y.unsqueeze(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas, eps=config.eps,
                                 foreach=False)
    attach_mask_enforcement(model, optimizer)
    stopper = _EarlyStopper(1, config, device)
    history: list[float] = []
    step, final = 0, None
    for step, batch in enumerate(batch_indices(x.shape[0], config.batch_size, config.max_steps, data_seed)):
        xb, yb = (x, y) if batch is None else (x[batch.to(x.device)], y[batch.to(y.device)])
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        optimizer.zero_grad(set_to_none=True)
        loss = per_model_loss(model(xb).unsqueeze(0), yb, config.loss)
        loss.sum().backward()
        optimizer.step()
        mean, stop = stopper.update(loss)
        if mean is not None:
            history.append(float(mean[0]))
            final = float(mean[0])
            if bool(stop[0]):
                break
    if final is None or stopper.count:
        with torch.no_grad():
            final = float(per_model_loss(model(x).unsqueeze(0), y, config.loss)[0])
    linears = [m for m in model if isinstance(m, MaskedLinear)]
    layers = tuple(LayerParams(m.weight.detach().cpu().clone(), m.bias.detach().cpu().clone(), m.mask.cpu().clone())
                   for m in linears)
    return TrainedModel(spec, layers, step + 1, final, tuple(history))


@torch.no_grad()
def evaluate_models(models: Sequence[TrainedModel], x: torch.Tensor, y: torch.Tensor, loss: str, *,
                    device="cpu", dtype=torch.float32, chunk: int = 64) -> list[dict]:
    """Per-model loss (and accuracy for ``cross_entropy``) of trained models on (x, y), batched by widths."""
    x = torch.as_tensor(x).to(device=device, dtype=dtype)
    y = torch.as_tensor(y).to(device)
    y = y.to(dtype) if loss == "mse" else y.long()
    if loss == "mse" and y.dim() == 1:
        y = y.unsqueeze(1)
    buckets: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, model in enumerate(models):
        buckets[model.spec.widths].append(i)
    out: list[dict | None] = [None] * len(models)
    for members in buckets.values():
        for start in range(0, len(members), chunk):
            part = members[start:start + chunk]
            n_layers = len(models[part[0]].layers)
            stack = lambda attr, t: torch.stack([getattr(models[i].layers[t], attr) for i in part]).to(device=device, dtype=dtype)
            weights = [stack("weight", t) for t in range(n_layers)]
            biases = [stack("bias", t) for t in range(n_layers)]
            masks = [stack("mask", t) for t in range(n_layers)]
            output = _batched_forward(weights, biases, masks, x)
            losses = per_model_loss(output, y, loss)
            for j, i in enumerate(part):
                record = {"loss": float(losses[j])}
                if loss == "cross_entropy":
                    record["accuracy"] = float((output[j].argmax(dim=1) == y).double().mean())
                out[i] = record
    return out  # type: ignore[return-value]
