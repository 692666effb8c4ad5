"""Edge-popup (Ramanujan et al. 2020) inside an ER source, following Gadhikar et al. 2023 (docs/math.md §8, E4).

The weights W (and biases, 0) are frozen; every masked layer gets learnable scores S of W's shape. The forward
pass uses W ⊙ P with the popup mask

    P = M_ER ⊙ 1[|S_ij| is among the k largest of {|S_ab| : M_ER,ab = 1}],   k = round(p_final,l · N_l),

so P is binary, zero outside the ER mask and has exactly k ones (ties broken by ``torch.topk``). The gradient
is straight-through through the top-k: ∂L/∂S = sign(S) ⊙ M_ER ⊙ ∂L/∂P (zero outside the ER mask). The dense-source baseline is M_ER = 1.
Per-layer final densities p_final,l come from the same layer-wise scheme as the source (docs/math.md §7); they never
exceed the source's p_l (every scheme is monotone in the global density).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from theory.validation import check_density

from .infra.masked import MaskedConv2d, MaskedLinear, masked_modules

__all__ = ["TopKMask", "popup_mask", "PopupLinear", "PopupConv2d", "POPUP_LAYERS", "popup_layers",
           "prepare_edge_popup_", "popup_masks", "score_parameters", "check_final_density"]


class TopKMask(torch.autograd.Function):
    """P = M ⊙ 1[A among the top k of the M-kept entries] for magnitudes A = |S| (applied outside, so the
    gradient reaching S is sign(S)·∂L/∂P); backward: straight-through, masked by M."""

    @staticmethod
    def forward(ctx, magnitudes: torch.Tensor, er_mask: torch.Tensor, k: int) -> torch.Tensor:
        keep = er_mask.reshape(-1)
        magnitude = magnitudes.detach().reshape(-1).masked_fill(~keep, -math.inf)
        index = torch.topk(magnitude, k, sorted=False).indices
        out = torch.zeros(magnitudes.numel(), dtype=magnitudes.dtype, device=magnitudes.device)
        out[index] = 1.0
        ctx.save_for_backward(er_mask)
        return out.view_as(magnitudes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (er_mask,) = ctx.saved_tensors
        return grad * er_mask.to(grad.dtype), None, None


def popup_mask(scores: torch.Tensor, er_mask: torch.Tensor, k: int) -> torch.Tensor:
    """The popup mask P of the module docstring (float 0/1, exactly ``k`` ones, inside ``er_mask``)."""
    er_mask = er_mask.to(torch.bool)
    available = int(er_mask.sum())
    if not 1 <= k <= available:
        raise ValueError(f"k={k} is out of range: allowed 1 … {available} (the ER-kept entries of the layer)")
    return TopKMask.apply(scores.abs(), er_mask, int(k))


class _PopupMixin:
    """Adds ``scores`` (a Parameter) and ``k``; the forward weight is W ⊙ popup_mask(S, M_ER, k)."""

    def effective_mask(self) -> torch.Tensor:
        if not hasattr(self, "scores"):
            raise ValueError("edge-popup layer has no scores: call prepare_edge_popup_ first")
        # k was checked against the ER mask in prepare_edge_popup_ (no per-step device sync here)
        return TopKMask.apply(self.scores.abs(), self.mask, self.k)


class PopupLinear(_PopupMixin, MaskedLinear):
    """A masked linear layer whose forward uses W ⊙ P (edge-popup inside its ER mask)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.effective_mask(), self.bias)


class PopupConv2d(_PopupMixin, MaskedConv2d):
    """A masked conv layer whose forward uses W ⊙ P (edge-popup inside its ER mask)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.effective_mask(), self.bias)


POPUP_LAYERS = (PopupLinear, PopupConv2d)


def popup_layers(model: nn.Module) -> list[nn.Module]:
    """The edge-popup layers of ``model`` in module order."""
    return [m for m in masked_modules(model) if isinstance(m, _PopupMixin)]


def check_final_density(final_density: float, source_density: float) -> float:
    """``final_density`` in (0, 1] and not above ``source_density``; one-line ValueError otherwise."""
    final = check_density(final_density, "final_density")
    source = check_density(source_density, "source_density")
    if final > source:
        raise ValueError(f"final_density={final!r} is above the ER source density {source!r}: "
                         f"allowed final_density ≤ source_density")
    return final


@torch.no_grad()
def prepare_edge_popup_(model: nn.Module, final_densities: Sequence[float], generator: torch.Generator) -> list[int]:
    """Freeze all weights and biases of ``model``, give every popup layer k = max(1, round(p_final,l·N_l)) and
    scores drawn U(−1/√fan_in, 1/√fan_in) from ``generator`` (CPU); return the k per layer. Raises a one-line
    ValueError when a layer's ER mask keeps fewer than k entries."""
    layers = popup_layers(model)
    if len(layers) != len(masked_modules(model)) or not layers:
        raise ValueError("model has masked layers that are not edge-popup layers: build it with "
                         "layer_classes=POPUP_LAYERS")
    if len(final_densities) != len(layers):
        raise ValueError(f"final_densities has {len(final_densities)} entries: allowed one per layer ({len(layers)})")
    for p in model.parameters():
        p.requires_grad_(False)
    ks = []
    for i, (layer, density) in enumerate(zip(layers, final_densities)):
        density = check_density(density, f"final_densities[{i}]")
        numel = layer.weight.numel()
        k = max(1, int(round(density * numel)))
        available = int(layer.mask.sum())
        if k > available:
            raise ValueError(f"final density {density:.6g} of layer {i} needs k={k} weights but its ER mask keeps "
                             f"{available}: allowed a final density below the layer's realized ER density")
        fan_in = int(math.prod(layer.weight.shape[1:]))
        bound = 1.0 / math.sqrt(fan_in)
        draw = (torch.rand(tuple(layer.weight.shape), generator=generator, dtype=torch.float64) * 2 - 1) * bound
        layer.scores = nn.Parameter(draw.to(device=layer.weight.device, dtype=layer.weight.dtype))
        layer.k = k
        ks.append(k)
    return ks


def score_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learnable scores of every popup layer (the only trained parameters of edge-popup)."""
    return [layer.scores for layer in popup_layers(model)]


@torch.no_grad()
def popup_masks(model: nn.Module) -> list[torch.Tensor]:
    """The current forward masks P of every popup layer (float 0/1)."""
    return [layer.effective_mask().detach().clone() for layer in popup_layers(model)]
