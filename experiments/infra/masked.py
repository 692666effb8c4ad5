"""Masked layers with a fixed Erdős–Rényi (ER) mask, following Gadhikar et al. 2023 (docs/math.md §1).

An ER(p) mask M has i.i.d. Bernoulli(p) entries, p = ``density`` (fraction of weights kept). Masks are drawn on
the CPU from an explicit ``torch.Generator`` (same seed → same mask on every device) and then moved. A masked
layer computes with ``weight * mask``; the mask is a registered boolean buffer (saved in the state dict), and
:func:`enforce_masks_` keeps every weight — and every optimizer-state entry (Adam moments, SGD momentum) —
outside the mask exactly 0. :func:`attach_mask_enforcement` runs it after every optimizer step, and a load
hook runs it after ``load_state_dict`` (which also refuses a mask whose values are not 0/1).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from theory.validation import check_density, check_positive_int, check_positive_real

__all__ = [
    "er_mask",
    "as_mask",
    "init_std",
    "MaskedLinear",
    "MaskedConv2d",
    "masked_modules",
    "enforce_masks_",
    "attach_mask_enforcement",
]


def er_mask(shape: Iterable[int], density: float, generator: torch.Generator, device="cpu") -> torch.Tensor:
    """An ER(``density``) mask: a bool tensor of ``shape`` with i.i.d. Bernoulli(density) entries (docs/math.md §1).

    Drawn on the CPU from ``generator`` (so the mask does not depend on the device), then moved to ``device``.
    """
    density = check_density(density)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator={generator!r} is not a torch.Generator: allowed an explicit torch.Generator")
    shape = tuple(check_positive_int(s, "shape entry") for s in shape)
    uniform = torch.rand(shape, generator=generator, dtype=torch.float64)
    return (uniform < density).to(device)


def as_mask(values, name: str = "mask") -> torch.Tensor:
    """Return ``values`` as a bool mask tensor, refusing anything whose entries are not exactly 0 or 1."""
    tensor = torch.as_tensor(values)
    if tensor.dtype != torch.bool:
        if tensor.is_complex() or not bool(((tensor == 0) | (tensor == 1)).all()):
            bad = tensor[(tensor != 0) & (tensor != 1)].flatten()[:1].tolist()
            raise ValueError(f"{name} contains {bad[0]!r}: allowed only 0/1 (or bool) entries")
        tensor = tensor != 0
    return tensor


def init_std(fan_in: int, density: float, density_aware: bool = True, gain: float = 1.0) -> float:
    """Initial weight standard deviation ``gain / sqrt(density·fan_in)`` (density-aware) or ``gain / sqrt(fan_in)``.

    A unit of an ER(p) layer has on average p·fan_in incoming weights; scaling by 1/√(p·fan_in) keeps the
    pre-activation variance independent of p (docs/experiments.md, E1). The effective fan-in is floored at 1.
    """
    fan_in = check_positive_int(fan_in, "fan_in")
    density = check_density(density)
    gain = check_positive_real(gain, "gain")
    effective = max(density * fan_in, 1.0) if density_aware else float(fan_in)
    return gain / math.sqrt(effective)


def _check_mask_shape(mask: torch.Tensor, shape, name: str) -> None:
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(mask.shape)}: allowed exactly the weight shape {tuple(shape)}")


class _MaskedMixin:
    """Shared mask handling: validated bool buffer ``mask``, load-time check and re-masking."""

    weight: nn.Parameter
    mask: torch.Tensor

    def _setup_mask(self, mask: torch.Tensor) -> None:
        mask = as_mask(mask)
        _check_mask_shape(mask, self.weight.shape, "mask")
        self.register_buffer("mask", mask.to(self.weight.device))
        self._register_load_state_dict_pre_hook(self._check_loaded_mask)
        self.register_load_state_dict_post_hook(lambda module, incompatible: module.apply_mask_())

    def _check_loaded_mask(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "mask"
        if key in state_dict:
            loaded = as_mask(state_dict[key], name=key)
            _check_mask_shape(loaded, self.weight.shape, key)
            state_dict[key] = loaded

    def _init_weight(self, generator: torch.Generator, density: float, density_aware: bool, gain: float) -> None:
        fan_in = int(self.weight[0].numel())
        std = init_std(fan_in, density, density_aware, gain)
        draw = torch.randn(tuple(self.weight.shape), generator=generator, dtype=torch.float64) * std
        with torch.no_grad():
            self.weight.copy_(draw.to(self.weight.dtype))
            if self.bias is not None:
                self.bias.zero_()
        self.apply_mask_()

    @torch.no_grad()
    def apply_mask_(self) -> None:
        """Set every weight outside the mask to exactly 0 (in place)."""
        self.weight.mul_(self.mask.to(self.weight.dtype))

    @property
    def density(self) -> float:
        """Realized density of the mask (fraction of ones)."""
        return float(self.mask.float().mean())


class MaskedLinear(_MaskedMixin, nn.Linear):
    """``y = x (W ⊙ M)ᵀ + b`` with a fixed ER(``density``) mask M (a bool buffer of W's shape, out × in).

    Pass ``mask=`` to use a given 0/1 mask, otherwise one is drawn with :func:`er_mask` from ``generator``.
    Weights are N(0, init_std²) drawn from ``generator`` (density-aware by default), biases 0.
    """

    def __init__(self, in_features: int, out_features: int, density: float = 1.0, *,
                 generator: torch.Generator, mask=None, bias: bool = True, density_aware_init: bool = True,
                 init_gain: float = 1.0, device=None, dtype=None):
        density = check_density(density)
        nn.Linear.__init__(self, check_positive_int(in_features, "in_features"),
                           check_positive_int(out_features, "out_features"), bias=bias, dtype=dtype)
        if mask is None:
            mask = er_mask((out_features, in_features), density, generator)
        self._setup_mask(mask)
        self._init_weight(generator, density, density_aware_init, init_gain)
        if device is not None:
            self.to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MaskedConv2d(_MaskedMixin, nn.Conv2d):
    """2-d convolution with kernel ``W ⊙ M``, M a fixed ER(``density``) mask of the kernel's shape."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, density: float = 1.0, *,
                 generator: torch.Generator, mask=None, stride=1, padding=0, dilation=1, groups: int = 1,
                 bias: bool = True, density_aware_init: bool = True, init_gain: float = 1.0, device=None,
                 dtype=None):
        density = check_density(density)
        nn.Conv2d.__init__(self, check_positive_int(in_channels, "in_channels"),
                           check_positive_int(out_channels, "out_channels"), kernel_size, stride=stride,
                           padding=padding, dilation=dilation, groups=groups, bias=bias, dtype=dtype)
        if mask is None:
            mask = er_mask(tuple(self.weight.shape), density, generator)
        self._setup_mask(mask)
        self._init_weight(generator, density, density_aware_init, init_gain)
        if device is not None:
            self.to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


def masked_modules(model: nn.Module) -> list[nn.Module]:
    """All masked layers inside ``model`` (in module order)."""
    return [m for m in model.modules() if isinstance(m, _MaskedMixin)]


@torch.no_grad()
def enforce_masks_(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Zero every masked-out weight of ``model`` and, if given, the matching entries of the optimizer state.

    Optimizer state tensors of the weight's shape (Adam ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``, SGD
    ``momentum_buffer``) are multiplied by the mask, so no update can move a masked-out weight off 0.
    """
    for module in masked_modules(model):
        module.apply_mask_()
        if optimizer is not None and module.weight in optimizer.state:
            for value in optimizer.state[module.weight].values():
                if isinstance(value, torch.Tensor) and value.shape == module.weight.shape:
                    value.mul_(module.mask.to(value.dtype))


def attach_mask_enforcement(model: nn.Module, optimizer: torch.optim.Optimizer):
    """Run :func:`enforce_masks_` after every ``optimizer.step()``; returns the hook handle."""
    return optimizer.register_step_post_hook(lambda opt, args, kwargs: enforce_masks_(model, opt))
