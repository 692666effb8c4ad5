"""Static sparse training of one masked model, following Gadhikar et al. 2023 (docs/math.md §8, docs/experiments.md E2–E4).

:func:`train_model` trains an ``nn.Module`` whose weight layers are masked layers with SGD (+momentum, weight
decay) or Adam, cosine or constant learning rate, optional CIFAR augmentation (random crop with 4-pixel
padding + horizontal flip), minibatches from a seeded ``torch.Generator``. After every optimizer step
:func:`experiments.infra.masked.enforce_masks_` sets every weight outside its mask — and the matching momentum/Adam
state — to exactly 0, so nothing outside the mask ever becomes non-zero. It also counts the multiply-adds
actually performed in masked layers: a training step on B samples costs 3·B·Σ_l nnz(M_l)·s_l, where s_l is the
layer's output spatial size (1 for a linear layer) and the factor 3 is the usual forward + two backward products.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from theory.validation import check_choice, check_positive_int, check_positive_real

from .infra.data import Dataset
from .infra.masked import attach_mask_enforcement, enforce_masks_, masked_modules

__all__ = [
    "OPTIMIZERS",
    "TrainSettings",
    "TrainOutcome",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "prepare_inputs",
    "augment_batch",
    "layer_output_sizes",
    "forward_macs",
    "make_optimizer",
    "train_model",
    "evaluate",
    "majority_rate",
    "CLASSIFICATION_TASKS",
    "load_classification",
]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of one training run.

    ``epochs`` passes over the training set in minibatches of ``batch_size`` (the last partial batch dropped
    when more than one batch exists); ``max_steps`` caps the number of steps (for tests). The learning rate
    decays from ``lr`` to 0 over all steps (``cosine``) or stays (``constant``).
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 128
    schedule: str = "cosine"
    augment: bool = False
    max_steps: int | None = None

    def __post_init__(self):
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        check_choice(self.schedule, "schedule", SCHEDULES)
        check_positive_real(self.lr, "lr")
        if not (isinstance(self.momentum, (int, float)) and 0.0 <= self.momentum < 1.0):
            raise ValueError(f"momentum={self.momentum!r} is out of range: allowed [0, 1)")
        if not (isinstance(self.weight_decay, (int, float)) and 0.0 <= self.weight_decay < 1.0):
            raise ValueError(f"weight_decay={self.weight_decay!r} is out of range: allowed [0, 1)")
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size")
        if not isinstance(self.augment, bool):
            raise ValueError(f"augment={self.augment!r} is not a bool: allowed true or false")
        if self.max_steps is not None:
            check_positive_int(self.max_steps, "max_steps")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainSettings":
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"train settings have unknown key(s) {sorted(unknown)}: allowed "
                             f"{sorted(cls.__dataclass_fields__)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainOutcome:
    """What a training run did: steps taken, mean loss of the last epoch, multiply-adds in masked layers."""

    steps: int
    final_loss: float
    train_macs: float

    def to_dict(self) -> dict:
        return asdict(self)


def prepare_inputs(data: Dataset, model: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                       tuple[int, int, int]]:
    """(x_train, y_train, x_test, y_test, input_shape) as float32/int64 CPU tensors shaped for ``model``.

    Flat grey images (MNIST-5k 784, digits 64) become (N, 1, s, s); CIFAR images (N, 3, 32, 32) are normalized
    per channel with :data:`CIFAR_MEAN`/:data:`CIFAR_STD`. The MLP flattens inside its forward.
    """
    def shaped(x):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 2:
            side = int(round(math.sqrt(x.shape[1])))
            if side * side != x.shape[1]:
                raise ValueError(f"data {data.name!r} has {x.shape[1]} features: allowed a square grey image")
            x = x.reshape(len(x), 1, side, side)
        if x.ndim != 4:
            raise ValueError(f"data {data.name!r} has inputs of shape {x.shape[1:]}: allowed images (C, H, W)")
        if x.shape[1] == 3:
            mean = np.asarray(CIFAR_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
            std = np.asarray(CIFAR_STD, dtype=np.float32).reshape(1, 3, 1, 1)
            x = (x - mean) / std
        return torch.from_numpy(np.ascontiguousarray(x))

    x_train, x_test = shaped(data.x_train), shaped(data.x_test)
    y_train = torch.as_tensor(np.asarray(data.y_train, dtype=np.int64))
    y_test = torch.as_tensor(np.asarray(data.y_test, dtype=np.int64))
    return x_train, y_train, x_test, y_test, tuple(int(v) for v in x_train.shape[1:])


def augment_batch(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``padding``) and random horizontal flip of a batch (N, C, H, W); offsets and
    flips are drawn on the CPU from ``generator`` (device-independent), applied on x's device."""
    n, c, h, w = x.shape
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = (oy[:, None] + torch.arange(h)[None, :]).to(x.device)  # (n, h)
    cols = (ox[:, None] + torch.arange(w)[None, :])
    cols = torch.where(flip[:, None], cols.flip(1), cols).to(x.device)  # (n, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def layer_output_sizes(model: nn.Module, input_shape: Sequence[int], device="cpu") -> list[int]:
    """Output spatial size s_l (H_out·W_out; 1 for a linear layer) of every masked layer, by one forward pass
    of a zero input in eval mode."""
    sizes: dict[int, int] = {}
    layers = masked_modules(model)
    hooks = [m.register_forward_hook(lambda mod, inp, out: sizes.__setitem__(id(mod), int(math.prod(out.shape[2:]))))
             for m in layers]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [sizes[id(m)] for m in layers]


def forward_macs(model: nn.Module, output_sizes: Sequence[int]) -> int:
    """Multiply-adds of one sample's forward pass through the masked layers: Σ_l nnz(M_l)·s_l."""
    return int(sum(int(m.mask.sum()) * s for m, s in zip(masked_modules(model), output_sizes)))


def make_optimizer(params, settings: TrainSettings) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or Adam (L2 weight decay) over ``params`` at ``settings.lr``."""
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                               weight_decay=settings.weight_decay)
    return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)


def _steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size) if n >= batch_size else 1


def train_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings, *, seed: int,
                device="cpu", params=None, macs_per_sample: int | None = None,
                on_loss: Callable[[float], None] | None = None) -> TrainOutcome:
    """Train ``model`` on (x, y) with cross-entropy; masks enforced after every step (see module docstring).

    ``params``: the parameters to optimise (default: all with ``requires_grad``). ``macs_per_sample``: forward
    multiply-adds per sample for the cost count (default: :func:`forward_macs` of the current masks).
    """
    device = torch.device(device)
    n = len(x)
    steps_per_epoch = _steps_per_epoch(n, settings.batch_size)
    total = settings.epochs * steps_per_epoch
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    if params is None:
        params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, settings)
    handle = attach_mask_enforcement(model, optimizer)
    enforce_masks_(model, optimizer)
    if macs_per_sample is None:
        macs_per_sample = forward_macs(model, layer_output_sizes(model, tuple(x.shape[1:]), device))
    generator = torch.Generator().manual_seed(int(seed))
    x_dev, y_dev = x.to(device), y.to(device)
    model.train()
    step, samples, epoch_losses = 0, 0, []
    try:
        while step < total:
            perm = torch.randperm(n, generator=generator)
            epoch_losses = []
            for b in range(steps_per_epoch):
                if step >= total:
                    break
                index = perm[b * settings.batch_size:(b + 1) * settings.batch_size].to(device)
                xb, yb = x_dev[index], y_dev[index]
                if settings.augment:
                    xb = augment_batch(xb, generator)
                lr = settings.lr if settings.schedule == "constant" else \
                    settings.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss = F.cross_entropy(model(xb), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                samples += len(index)
                epoch_losses.append(float(loss.detach()))
            if on_loss is not None and epoch_losses:
                on_loss(float(np.mean(epoch_losses)))
    finally:
        handle.remove()
    final = float(np.mean(epoch_losses)) if epoch_losses else float("nan")
    return TrainOutcome(step, final, 3.0 * samples * macs_per_sample)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, device="cpu", batch_size: int = 1024) -> dict:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) on (x, y)."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        yb = y[start:start + batch_size].to(device)
        logits = model(xb)
        total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    model.train()
    return {"loss": total_loss / len(x), "accuracy": correct / len(x)}


def majority_rate(labels) -> float:
    """Accuracy of always predicting the most frequent label."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    return float(counts.max() / counts.sum())


CLASSIFICATION_TASKS = ("digits", "mnist5k", "cifar10", "cifar100")


def load_classification(task: str, seed: int, data_dir: str | None = None) -> Dataset:
    """The data set of a config: ``digits`` / ``mnist5k`` (seeded split) or ``cifar10`` / ``cifar100`` read
    from ``data_dir`` (official split; FileNotFoundError naming a missing directory or batch file)."""
    from .infra.data import cifar_task, digits_task, mnist5k_task

    check_choice(task, "task", CLASSIFICATION_TASKS)
    if task == "digits":
        return digits_task(seed)
    if task == "mnist5k":
        return mnist5k_task(seed)
    if data_dir is None:
        raise ValueError(f"task={task!r} needs a data directory: allowed --data-dir DIR holding the CIFAR batch files")
    return cifar_task(data_dir, classes=10 if task == "cifar10" else 100)
