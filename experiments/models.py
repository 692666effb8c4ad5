"""Masked models for E2–E4 (docs/experiments.md), following Gadhikar et al. 2023: an MLP, a small CNN for 28×28 and
8×8 inputs, and the CIFAR ResNet-18 of the paper's released code.

Every weight layer is a masked layer (:class:`~experiments.infra.masked.MaskedLinear` /
:class:`~experiments.infra.masked.MaskedConv2d`, or a subclass passed in ``layer_classes``). Its density p_l comes from
:func:`theory.densities.layer_densities` over the model's weight shapes in module order (docs/math.md §7, any scheme,
exact or ``compat``). :func:`build_model` builds the architecture, then draws — from one ``torch.Generator`` seeded
with ``seed``, layer by layer in module order — the ER(p_l) mask (i.i.d. Bernoulli(p_l), docs/math.md §1) and the
weights N(0, std²) with Kaiming-normal std = √(2/fan_in) (or the density-aware √(2/(p_l·fan_in))); biases are 0.
:func:`density_table` reports the realized density of every layer next to its target and the label.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from theory.densities import SCHEMES, LayerDensities, layer_densities
from theory.validation import check_choice, check_density, check_positive_int

from .infra.masked import MaskedConv2d, MaskedLinear, er_mask, masked_modules

__all__ = [
    "MODELS",
    "MaskedMLP",
    "MaskedCNN",
    "BasicBlock",
    "ResNet18",
    "LayerDensityRow",
    "DensityTable",
    "BuiltModel",
    "build_architecture",
    "build_model",
    "weight_shapes",
    "sparsify_",
    "density_table",
    "check_input_shape",
]

MODELS = ("mlp", "cnn", "resnet18")
SCHEMES_WITH_DENSE = SCHEMES + ("dense",)

# A throwaway generator for the placeholder parameters of the first construction pass (all overwritten).
_PLACEHOLDER_SEED = 0


def check_input_shape(input_shape) -> tuple[int, int, int]:
    """(channels, height, width) of one input, each a positive int; one-line ValueError otherwise."""
    try:
        dims = tuple(input_shape)
    except TypeError:
        raise ValueError(f"input_shape={input_shape!r} is not a shape: allowed (channels, height, width)") from None
    if len(dims) != 3:
        raise ValueError(f"input_shape={dims!r} is not a shape: allowed (channels, height, width)")
    return tuple(check_positive_int(v, "input_shape entry") for v in dims)


class MaskedMLP(nn.Module):
    """x ↦ flatten → [masked linear → BatchNorm1d → ReLU] per hidden width → masked linear (logits)."""

    def __init__(self, inputs: int, hidden: Sequence[int], n_classes: int, *, batchnorm_affine: bool = True,
                 layer_classes=(MaskedLinear, MaskedConv2d), generator: torch.Generator):
        super().__init__()
        linear = layer_classes[0]
        widths = [check_positive_int(inputs, "inputs")] + [check_positive_int(h, "hidden width") for h in hidden]
        blocks = []
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            blocks += [linear(n_in, n_out, generator=generator, bias=False),
                       nn.BatchNorm1d(n_out, affine=batchnorm_affine), nn.ReLU()]
        self.features = nn.Sequential(*blocks)
        self.classifier = linear(widths[-1], check_positive_int(n_classes, "n_classes"), generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.flatten(1)))


class MaskedCNN(nn.Module):
    """A small CNN for 28×28 (MNIST) or 8×8 (digits) inputs: per entry of ``channels`` a masked 3×3 conv (pad 1,
    no bias) → BatchNorm2d → ReLU → 2×2 max-pool; then flatten → masked linear ``hidden`` → BN → ReLU → masked
    linear (logits)."""

    def __init__(self, input_shape, channels: Sequence[int], hidden: int, n_classes: int, *,
                 batchnorm_affine: bool = True, layer_classes=(MaskedLinear, MaskedConv2d),
                 generator: torch.Generator):
        super().__init__()
        linear, conv = layer_classes
        c, h, w = check_input_shape(input_shape)
        blocks = []
        for out in channels:
            out = check_positive_int(out, "channels entry")
            if h < 2 or w < 2:
                raise ValueError(f"input_shape={tuple(input_shape)!r} is too small for {len(channels)} pooling "
                                 f"stages: allowed height and width ≥ 2^{len(channels)}")
            blocks += [conv(c, out, 3, padding=1, bias=False, generator=generator),
                       nn.BatchNorm2d(out, affine=batchnorm_affine), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        self.features = nn.Sequential(*blocks)
        hidden = check_positive_int(hidden, "hidden")
        self.head = nn.Sequential(linear(c * h * w, hidden, bias=False, generator=generator),
                                  nn.BatchNorm1d(hidden, affine=batchnorm_affine), nn.ReLU())
        self.classifier = linear(hidden, check_positive_int(n_classes, "n_classes"), generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.features(x).flatten(1)))


class BasicBlock(nn.Module):
    """ResNet BasicBlock: conv3×3(stride) → BN → ReLU → conv3×3 → BN, plus identity or a masked 1×1 conv + BN
    shortcut when the shape changes; ReLU after the sum."""

    def __init__(self, in_planes: int, planes: int, stride: int, *, batchnorm_affine: bool, conv,
                 generator: torch.Generator):
        super().__init__()
        self.conv1 = conv(in_planes, planes, 3, stride=stride, padding=1, bias=False, generator=generator)
        self.bn1 = nn.BatchNorm2d(planes, affine=batchnorm_affine)
        self.conv2 = conv(planes, planes, 3, stride=1, padding=1, bias=False, generator=generator)
        self.bn2 = nn.BatchNorm2d(planes, affine=batchnorm_affine)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(conv(in_planes, planes, 1, stride=stride, bias=False, generator=generator),
                                          nn.BatchNorm2d(planes, affine=batchnorm_affine))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """The CIFAR ResNet-18 of the released code: 3×3 stem (stride 1, no max-pool), BasicBlocks [2, 2, 2, 2] at
    ``width``·(1, 2, 4, 8) channels (64/128/256/512 by default), 1×1 shortcut convs, global average pool and a
    masked 1×1-conv classifier (with bias). 21 masked layers; N = 11,164,352 weights at width 64, 10 classes."""

    def __init__(self, input_shape, n_classes: int, *, width: int = 64, batchnorm_affine: bool = True,
                 layer_classes=(MaskedLinear, MaskedConv2d), generator: torch.Generator):
        super().__init__()
        conv = layer_classes[1]
        c = check_input_shape(input_shape)[0]
        width = check_positive_int(width, "width")
        self.conv1 = conv(c, width, 3, stride=1, padding=1, bias=False, generator=generator)
        self.bn1 = nn.BatchNorm2d(width, affine=batchnorm_affine)
        layers, in_planes = [], width
        for i, planes in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            blocks = []
            for s in (stride, 1):
                blocks.append(BasicBlock(in_planes, planes, s, batchnorm_affine=batchnorm_affine, conv=conv,
                                         generator=generator))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.classifier = conv(in_planes, check_positive_int(n_classes, "n_classes"), 1, bias=True,
                               generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1)
        return self.classifier(out).flatten(1)


def build_architecture(model: str, input_shape, n_classes: int, *, hidden: Sequence[int] = (300, 100),
                       channels: Sequence[int] = (16, 32), width: int = 64, batchnorm_affine: bool = True,
                       layer_classes=(MaskedLinear, MaskedConv2d)) -> nn.Module:
    """The architecture ``model`` ∈ {mlp, cnn, resnet18} with dense masks and placeholder weights.

    ``hidden``: MLP hidden widths (CNN: first entry = width of the hidden linear layer); ``channels``: CNN conv
    channels; ``width``: ResNet-18 base width. Use :func:`build_model` for a seeded sparse model.
    """
    model = check_choice(model, "model", MODELS)
    shape = check_input_shape(input_shape)
    n_classes = check_positive_int(n_classes, "n_classes", minimum=2)
    generator = torch.Generator().manual_seed(_PLACEHOLDER_SEED)
    kwargs = dict(batchnorm_affine=batchnorm_affine, layer_classes=layer_classes, generator=generator)
    if model == "mlp":
        return MaskedMLP(math.prod(shape), hidden, n_classes, **kwargs)
    if model == "cnn":
        return MaskedCNN(shape, channels, list(hidden)[0], n_classes, **kwargs)
    return ResNet18(shape, n_classes, width=width, **kwargs)


def weight_shapes(module: nn.Module) -> list[tuple[int, ...]]:
    """Weight shapes of the masked layers of ``module`` in module order (the input of docs/math.md §7)."""
    return [tuple(m.weight.shape) for m in masked_modules(module)]


@torch.no_grad()
def sparsify_(module: nn.Module, densities: Sequence[float], generator: torch.Generator, *,
              density_aware_init: bool = False) -> None:
    """Redraw, layer by layer in module order, the ER(p_l) mask and then the weights N(0, std²) from
    ``generator``; std = √(2/fan_in) (Kaiming normal, fan-in mode, ReLU gain) or √(2/(p_l·fan_in)) with
    ``density_aware_init`` (effective fan-in floored at 1); biases set to 0; weights outside the mask 0."""
    layers = masked_modules(module)
    if len(densities) != len(layers):
        raise ValueError(f"densities has {len(densities)} entries: allowed one per masked layer ({len(layers)})")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator={generator!r} is not a torch.Generator: allowed an explicit torch.Generator")
    for i, (layer, density) in enumerate(zip(layers, densities)):
        density = check_density(density, f"densities[{i}]")
        shape = tuple(layer.weight.shape)
        layer.mask = er_mask(shape, density, generator).to(layer.weight.device)
        fan_in = int(math.prod(shape[1:]))
        effective = max(density * fan_in, 1.0) if density_aware_init else float(fan_in)
        draw = torch.randn(shape, generator=generator, dtype=torch.float64) * math.sqrt(2.0 / effective)
        layer.weight.copy_(draw.to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.zero_()
        layer.apply_mask_()


@dataclass(frozen=True)
class LayerDensityRow:
    """One masked layer: its name, weight shape, N_l, target p_l, realized density (fraction of mask ones)."""

    name: str
    shape: tuple[int, ...]
    numel: int
    target_density: float
    realized_density: float
    kept: int

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class DensityTable:
    """Per-layer target and realized densities of a built model, with the label and global densities."""

    scheme: str
    compat: bool
    label_density: float
    target_global_density: float
    realized_global_density: float
    total: int
    kept: int
    rows: tuple[LayerDensityRow, ...]

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "rows"}
        out["rows"] = [r.to_dict() for r in self.rows]
        return out

    def format(self) -> str:
        """A plain-text table (one line per layer, then the global line)."""
        lines = [f"{'layer':<28} {'shape':<20} {'N_l':>10} {'target':>9} {'realized':>9}"]
        for r in self.rows:
            lines.append(f"{r.name:<28} {'x'.join(map(str, r.shape)):<20} {r.numel:>10} "
                         f"{r.target_density:>9.4f} {r.realized_density:>9.4f}")
        lines.append(f"{'global (label ' + format(self.label_density, 'g') + ')':<28} {'':<20} {self.total:>10} "
                     f"{self.target_global_density:>9.4f} {self.realized_global_density:>9.4f}")
        return "\n".join(lines)


def density_table(module: nn.Module, scheme: str = "uniform", compat: bool = False, label_density: float = 1.0,
                  target: Sequence[float] | None = None) -> DensityTable:
    """Realized density of every masked layer of ``module`` (fraction of ones of its mask) next to ``target``
    p_l (default: the realized value), and the global Σ kept / Σ N_l."""
    names = {id(m): n for n, m in module.named_modules()}
    rows, total, kept_total, target_kept = [], 0, 0, 0.0
    layers = masked_modules(module)
    if not layers:
        raise ValueError(f"module {type(module).__name__} has no masked layers: allowed a model built with masked layers "
                         "(build_model); for any other model use construct.er_masks, which returns its density table")
    target = [None] * len(layers) if target is None else list(target)
    for layer, p_l in zip(layers, target):
        numel = int(layer.mask.numel())
        kept = int(layer.mask.sum())
        realized = kept / numel
        p_l = realized if p_l is None else float(p_l)
        rows.append(LayerDensityRow(names[id(layer)], tuple(layer.weight.shape), numel, p_l, realized, kept))
        total += numel
        kept_total += kept
        target_kept += p_l * numel
    return DensityTable(scheme, bool(compat), float(label_density), target_kept / total, kept_total / total, total,
                        kept_total, tuple(rows))


@dataclass(frozen=True)
class BuiltModel:
    """A seeded sparse model, its per-layer target densities (docs/math.md §7) and its realized density table."""

    module: nn.Module
    densities: LayerDensities | None
    table: DensityTable


def build_model(model: str, input_shape, n_classes: int, *, density: float = 1.0, scheme: str = "uniform",
                compat: bool = False, seed: int, density_aware_init: bool = False, device="cpu",
                **architecture) -> BuiltModel:
    """Build ``model`` with ER masks at global ``density`` distributed by ``scheme`` (docs/math.md §7;
    ``scheme="dense"`` requires density 1) and weights/masks drawn from ``torch.Generator().manual_seed(seed)``.

    ``architecture`` is passed to :func:`build_architecture` (hidden, channels, width, batchnorm_affine,
    layer_classes). The result's ``table`` reports target and realized density per layer and globally.
    """
    density = check_density(density)
    scheme = check_choice(scheme, "scheme", SCHEMES_WITH_DENSE)
    if scheme == "dense" and density != 1.0:
        raise ValueError(f"density={density!r} with scheme='dense': allowed only density 1")
    module = build_architecture(model, input_shape, n_classes, **architecture)
    shapes = weight_shapes(module)
    if scheme == "dense":
        per_layer, densities = [1.0] * len(shapes), None
    else:
        densities = layer_densities(shapes, density, scheme, compat=compat)
        per_layer = list(densities.densities)
    generator = torch.Generator().manual_seed(int(seed))
    sparsify_(module, per_layer, generator, density_aware_init=density_aware_init)
    module.to(device)
    table = density_table(module, scheme, compat, density, per_layer)
    return BuiltModel(module, densities, table)
