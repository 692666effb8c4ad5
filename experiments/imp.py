"""Iterative magnitude pruning (IMP, Frankle & Carbin 2019) restricted to a fixed ER mask, following
Gadhikar et al. 2023 (docs/math.md §8, docs/experiments.md E3).

Level 0 trains the model inside its starting mask M_0 (an ER mask, or all ones for the dense start). Level
k → k+1 removes the ``prune_fraction`` share of the c_k currently kept weights with the smallest |w|, ranked
globally across all masked layers (ties broken by position: layer order, then row-major index), so
c_{k+1} = c_k − round(prune_fraction·c_k); then every parameter is rewound to its initial value (kept
weights to exactly their value at initialisation, everything outside the new mask to 0) and the model is
trained again. Masks are nested, M_{k+1} ≤ M_k ≤ … ≤ M_0, hence always inside the ER mask. The cost of level k
is the multiply-adds actually performed in masked layers while training with M_k (see
:mod:`experiments.sparse_training`); the dense start pays for its dense phase.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from theory.validation import check_density, check_open_unit, check_positive_int

from .infra.masked import masked_modules
from .sparse_training import TrainSettings, evaluate, forward_macs, layer_output_sizes, train_model

__all__ = [
    "imp_counts",
    "levels_to_reach",
    "global_magnitude_prune",
    "snapshot",
    "rewind_",
    "current_masks",
    "set_masks_",
    "LevelResult",
    "run_imp",
]


def imp_counts(initial_count: int, prune_fraction: float, levels: int) -> list[int]:
    """Kept-weight counts c_0 … c_levels with c_{k+1} = c_k − round(prune_fraction·c_k) (at least 1 kept)."""
    count = check_positive_int(initial_count, "initial_count")
    fraction = check_open_unit(prune_fraction, "prune_fraction")
    levels = check_positive_int(levels, "levels", minimum=0)
    counts = [count]
    for _ in range(levels):
        counts.append(max(1, counts[-1] - int(round(fraction * counts[-1]))))
    return counts


def levels_to_reach(start_density: float, final_density: float, prune_fraction: float = 0.2) -> int:
    """The number of levels k whose density start·(1 − f)^k is nearest to ``final_density`` on a log scale,
    i.e. round(log(final/start)/log(1 − f)) (15 levels for 0.3 → ≈ 0.0106 at f = 0.2)."""
    start = check_density(start_density, "start_density")
    final = check_density(final_density, "final_density")
    fraction = check_open_unit(prune_fraction, "prune_fraction")
    if final > start:
        raise ValueError(f"final_density={final!r} is above start_density={start!r}: allowed final ≤ start")
    return int(round(math.log(final / start) / math.log1p(-fraction)))


@torch.no_grad()
def current_masks(model: nn.Module) -> list[torch.Tensor]:
    """Copies of the masks of ``model``'s masked layers (module order)."""
    return [m.mask.detach().clone() for m in masked_modules(model)]


@torch.no_grad()
def set_masks_(model: nn.Module, masks: Sequence[torch.Tensor]) -> None:
    """Install ``masks`` (bool, one per masked layer) and zero the weights outside them."""
    layers = masked_modules(model)
    if len(masks) != len(layers):
        raise ValueError(f"masks has {len(masks)} entries: allowed one per masked layer ({len(layers)})")
    for layer, mask in zip(layers, masks):
        if tuple(mask.shape) != tuple(layer.weight.shape):
            raise ValueError(f"mask of shape {tuple(mask.shape)}: allowed the weight shape {tuple(layer.weight.shape)}")
        layer.mask = mask.to(device=layer.weight.device, dtype=torch.bool).clone()
        layer.apply_mask_()


@torch.no_grad()
def global_magnitude_prune(weights: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
                           n_remove: int) -> list[torch.Tensor]:
    """New masks: ``masks`` minus the ``n_remove`` kept entries with the smallest |w|, ranked globally across
    layers (ties by position: layer order, then row-major index). Exactly ``n_remove`` entries are removed."""
    if len(weights) != len(masks):
        raise ValueError(f"weights has {len(weights)} entries and masks {len(masks)}: allowed equal lengths")
    n_remove = check_positive_int(n_remove, "n_remove", minimum=0)
    kept_values, kept_where = [], []
    for i, (w, m) in enumerate(zip(weights, masks)):
        flat = m.reshape(-1).to(torch.bool).cpu()
        index = torch.nonzero(flat).reshape(-1)
        kept_values.append(w.detach().reshape(-1).cpu().abs().to(torch.float64)[index])
        kept_where.append(torch.stack([torch.full_like(index, i), index], dim=1))
    values = torch.cat(kept_values)
    where = torch.cat(kept_where)
    if n_remove > len(values):
        raise ValueError(f"n_remove={n_remove} is above the {len(values)} kept weights: allowed at most that many")
    order = torch.sort(values, stable=True).indices[:n_remove]
    new = [m.detach().clone().to(torch.bool).cpu() for m in masks]
    removed = where[order]
    for i, mask in enumerate(new):
        mask.view(-1)[removed[removed[:, 0] == i, 1]] = False
    return [n.to(m.device) for n, m in zip(new, masks)]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A deep copy of ``model``'s state (parameters and buffers), taken at initialisation for rewinding."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def rewind_(model: nn.Module, initial: dict[str, torch.Tensor], masks: Sequence[torch.Tensor],
            buffers: bool = True) -> None:
    """Restore every parameter and buffer of ``model`` to ``initial`` except the masks, install ``masks``,
    and zero the weights outside them: kept weights get exactly their initial values. ``buffers=False`` keeps
    the current buffers (BatchNorm running statistics), as the released code's IMP does."""
    kept = set() if buffers else {name for name, _ in model.named_buffers()}
    state = {k: v for k, v in initial.items() if not k.endswith("mask") and k not in kept}
    model.load_state_dict(state, strict=False)
    set_masks_(model, masks)


@dataclass(frozen=True)
class LevelResult:
    """One IMP level: kept weights, density (kept / all weights of masked layers), target count of the schedule,
    test accuracy/loss, training multiply-adds of this level and cumulated over levels 0..k."""

    level: int
    kept: int
    target_kept: int
    density: float
    test_accuracy: float
    test_loss: float
    train_loss: float
    train_macs: float
    cumulative_macs: float

    def to_dict(self) -> dict:
        return asdict(self)


def run_imp(model: nn.Module, x_train, y_train, x_test, y_test, settings: TrainSettings, *, levels: int,
            prune_fraction: float = 0.2, seed: int, device="cpu",
            on_level: Callable[[LevelResult], None] | None = None,
            on_loss: Callable[[float], None] | None = None, final_settings: TrainSettings | None = None,
            rewind_buffers: bool = True) -> list[LevelResult]:
    """IMP with rewinding to initialisation inside ``model``'s current masks (see module docstring).

    ``final_settings``: training of the last level (default ``settings``); ``rewind_buffers=False``: rewinding
    keeps the BatchNorm running statistics (the released code's behaviour, used at paper scale).

    ``model`` must be freshly initialised (its state is the rewind point). Returns one :class:`LevelResult`
    per level 0 … ``levels``; level k's kept count equals :func:`imp_counts` (c_0 = nnz of the start mask).
    """
    levels = check_positive_int(levels, "levels", minimum=0)
    initial = snapshot(model)
    layers = masked_modules(model)
    total = sum(m.mask.numel() for m in layers)
    counts = imp_counts(int(sum(int(m.mask.sum()) for m in layers)), prune_fraction, levels)
    sizes = layer_output_sizes(model, tuple(x_train.shape[1:]), device)
    results, cumulative = [], 0.0
    for level in range(levels + 1):
        if level > 0:
            masks = current_masks(model)
            kept_now = sum(int(m.sum()) for m in masks)
            masks = global_magnitude_prune([m.weight for m in layers], masks, kept_now - counts[level])
            rewind_(model, initial, masks, buffers=rewind_buffers)
        level_settings = final_settings if (final_settings is not None and level == levels) else settings
        outcome = train_model(model, x_train, y_train, level_settings, seed=seed * 1000 + level, device=device,
                              macs_per_sample=forward_macs(model, sizes), on_loss=on_loss)
        cumulative += outcome.train_macs
        test = evaluate(model, x_test, y_test, device=device)
        kept = sum(int(m.mask.sum()) for m in layers)
        result = LevelResult(level, kept, counts[level], kept / total, test["accuracy"], test["loss"],
                             outcome.final_loss, outcome.train_macs, cumulative)
        results.append(result)
        if on_level is not None:
            on_level(result)
    return results

