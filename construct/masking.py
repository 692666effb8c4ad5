"""ER masks for any PyTorch model in one call, :func:`er_masks` (docs/math.md §1, §7), following Gadhikar et al. 2023.

:func:`er_masks` draws, for every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` of a model (module order), an ER(p_l) mask —
i.i.d. Bernoulli(p_l) per weight entry (per kernel entry for convolutions, docs/math.md §9) — with the per-layer densities
p_l of :func:`theory.densities.layer_densities` for the scheme (uniform, ERK, balanced, pyramidal; exact budget
Σ p_l N_l = p·N), and applies each mask as a ``torch.nn.utils.parametrize`` parametrization (:class:`ERMask`):
``layer.weight`` is ``original ⊙ mask``. So masked-out weights are exactly 0 in every forward pass, whatever the
optimizer does to ``original`` (momentum, Adam moments, weight decay), and the masks are buffers saved in and loaded
from ``state_dict`` (a checkpoint restores them, whatever seed the receiving model was masked with).

``compat`` reproduces the released code: ``"pruning"`` its random-pruning/IMP path, where balanced and ERK clamp
p_l at 1 *without* redistributing (the realized global density undershoots the label); ``"dst"`` its
dynamic-sparse-training path, whose ERK redistributes like the exact mode (offered for ``erk`` and ``uniform``,
the schemes this project models for that path). The returned :class:`MaskTable` puts the realized densities next to
the planned ones and the realized global density next to the label.

Compared with ``torch.nn.utils.prune``: ``prune.random_unstructured`` keeps an exact count of weights per layer
(not i.i.d. Bernoulli), draws from the global RNG, has no layer-wise schemes, and its masks live in
``weight_orig``/``weight_mask`` pairs with a forward pre-hook; here the draws come from an explicit
``torch.Generator`` seeded by ``seed``, the densities follow §7 with an exact global budget, unknown layers are
refused instead of silently skipped, and a table of realized densities is returned.
"""
from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from theory.densities import SCHEMES, layer_densities
from theory.validation import check_choice, check_density, check_positive_int

__all__ = ["ERMask", "MaskRow", "MaskTable", "er_masks", "mask_table", "COMPAT_MODES"]

COMPAT_MODES = (None, "pruning", "dst")
_MASKABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class ERMask(nn.Module):
    """Parametrization ``weight = original ⊙ mask`` with a fixed bool ``mask`` buffer of the weight's shape."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


@dataclass(frozen=True)
class MaskRow:
    """One masked layer: module name, type, weight shape, N_l, planned p_l, realized fraction kept, kept count."""

    name: str
    layer: str
    shape: tuple
    numel: int
    planned_density: float
    realized_density: float
    kept: int


@dataclass(frozen=True)
class MaskTable:
    """Per-layer planned and realized densities, with the label and the planned/realized global densities."""

    scheme: str
    compat: str | None
    label_density: float
    planned_global_density: float
    realized_global_density: float
    total: int
    kept: int
    seed: int | None
    rows: tuple

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "rows"}
        out["rows"] = [asdict(r) for r in self.rows]
        return out

    def format(self) -> str:
        """A plain-text table: one line per layer, then the global line (realized next to the label)."""
        head = f"{'layer':<24} {'type':<8} {'shape':<16} {'N_l':>10} {'planned':>8} {'realized':>8}"
        lines = [head]
        for r in self.rows:
            lines.append(f"{r.name:<24} {r.layer:<8} {'x'.join(map(str, r.shape)):<16} {r.numel:>10} "
                         f"{r.planned_density:>8.4f} {r.realized_density:>8.4f}")
        mode = "exact" if self.compat is None else f"compat={self.compat}"
        lines.append(f"{'global (label ' + format(self.label_density, 'g') + ')':<24} {self.scheme + ',' + mode:<25} "
                     f"{self.total:>10} {self.planned_global_density:>8.4f} {self.realized_global_density:>8.4f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _excluded(name: str, module: nn.Module, exclude) -> object | None:
    for pat in exclude:
        if isinstance(pat, type):
            if isinstance(module, pat):
                return pat
        elif fnmatch.fnmatchcase(name, pat) or any(fnmatch.fnmatchcase(name[:i], pat)
                                                   for i in range(len(name)) if name[i] == "."):
            return pat
    return None


def _check_exclude(exclude) -> tuple:
    if isinstance(exclude, (str, type)):
        exclude = (exclude,)
    try:
        items = tuple(exclude)
    except TypeError:
        raise ValueError(f"exclude={exclude!r}: allowed a tuple of module names (glob patterns) or module types") from None
    for pat in items:
        if not (isinstance(pat, str) or (isinstance(pat, type) and issubclass(pat, nn.Module))):
            raise ValueError(f"exclude entry {pat!r}: allowed a module name (glob pattern) or an nn.Module subclass")
    return items


def _layers(model: nn.Module, exclude) -> list:
    """[(name, module)] of the layers to mask, in module order; refuses layers er_masks does not know."""
    found, used = [], set()
    for name, module in model.named_modules():
        hit = _excluded(name, module, exclude)
        if hit is not None:
            used.add(hit)
            continue
        label = f"layer {name!r} ({type(module).__name__})"
        if isinstance(module, _MASKABLE):
            if parametrize.is_parametrized(module, "weight"):
                raise ValueError(f"{label} already has a parametrization on its weight: allowed layers without one "
                                 "(er_masks once per model)")
            if hasattr(module, "mask"):
                raise ValueError(f"{label} already carries a mask: allowed plain layers")
            found.append((name, module))
            continue
        if isinstance(module, nn.modules.conv._ConvNd) or any(
                p.ndim >= 2 for p in module.parameters(recurse=False)):
            raise ValueError(f"{label} has weights er_masks does not know: allowed Linear and Conv1d/2d/3d; "
                             f"leave it dense with exclude=({name!r},)")
    unused = [p for p in exclude if p not in used]
    if unused:
        raise ValueError(f"exclude entry {unused[0]!r} matches no module: allowed names from model.named_modules()")
    if not found:
        raise ValueError("the model has no Linear or Conv layer to mask (after exclude): allowed a model with at least one")
    return found


def er_masks(model: nn.Module, density: float = 0.1, scheme: str = "balanced", seed: int = 0, exclude=(),
             compat: str | None = None) -> MaskTable:
    """Put ER masks on every Linear and Conv layer of ``model`` (in place) and return the density table.

    ``density``: global fraction of weights kept, p ∈ (0, 1]; ``scheme``: uniform, erk, balanced or pyramidal
    (docs/math.md §7, exact budget Σ p_l N_l = p·N); ``seed``: the masks are drawn in module order from
    ``torch.Generator().manual_seed(seed)`` (on the CPU, float64 uniforms < p_l, then moved to the weight's device:
    same seed → same masks on every device); ``exclude``: module names (glob patterns; a name also excludes the
    modules inside it) or module types to leave dense; ``compat``: None (exact), "pruning" or "dst" (the released
    code's two paths, see the module docstring). Weights outside the mask are set to 0 and the mask is applied as a
    parametrization (:class:`ERMask`). Layers with ≥ 2-D weights that are not Linear/Conv (Embedding, attention,
    transposed convolutions, …) are refused in one line unless excluded."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model is a {type(model).__name__}: allowed an nn.Module")
    density = check_density(density)
    scheme = check_choice(scheme, "scheme", SCHEMES)
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat={compat!r}: allowed None (exact budget), 'pruning' (released random-pruning/IMP path: "
                         "balanced and ERK clamp without redistributing) or 'dst' (released dynamic-sparse-training "
                         "path: ERK redistributed)")
    if compat == "dst" and scheme not in ("erk", "uniform"):
        raise ValueError(f"compat='dst' with scheme={scheme!r}: allowed scheme 'erk' or 'uniform' (the released DST "
                         "path as modelled here); use compat='pruning' or None for balanced and pyramidal")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r}: allowed a non-negative integer")
    seed = check_positive_int(seed, "seed", 0)
    layers = _layers(model, _check_exclude(exclude))
    shapes = [tuple(m.weight.shape) for _, m in layers]
    plan = layer_densities(shapes, density, scheme, compat=compat == "pruning")
    generator = torch.Generator().manual_seed(seed)
    for (name, module), p_l in zip(layers, plan.densities):
        mask = torch.rand(tuple(module.weight.shape), generator=generator, dtype=torch.float64) < p_l
        mask = mask.to(module.weight.device)
        with torch.no_grad():
            module.weight.mul_(mask.to(module.weight.dtype))
        parametrize.register_parametrization(module, "weight", ERMask(mask))
    return _table(layers, plan.densities, scheme, compat, density, seed)


def _table(layers, planned, scheme, compat, label, seed) -> MaskTable:
    rows, total, kept_total, planned_kept = [], 0, 0, 0.0
    for (name, module), p_l in zip(layers, planned):
        mask = module.parametrizations.weight[0].mask
        numel, kept = int(mask.numel()), int(mask.sum())
        p_l = kept / numel if p_l is None else float(p_l)
        rows.append(MaskRow(name, type(module).__name__.replace("Parametrized", ""), tuple(mask.shape), numel, p_l,
                            kept / numel, kept))
        total += numel
        kept_total += kept
        planned_kept += p_l * numel
    return MaskTable(scheme, compat, float(label), planned_kept / total, kept_total / total, total, kept_total,
                     seed, tuple(rows))


def mask_table(model: nn.Module) -> MaskTable:
    """The realized density table of a model masked by :func:`er_masks` (e.g. after loading a checkpoint):
    planned = realized per layer, label = the realized global density."""
    layers = [(n, m) for n, m in model.named_modules()
              if parametrize.is_parametrized(m, "weight") and isinstance(m.parametrizations.weight[0], ERMask)]
    if not layers:
        raise ValueError("the model has no layer masked by er_masks: allowed a model passed through construct.er_masks")
    table = _table(layers, [None] * len(layers), "unknown", None, 1.0, None)
    return MaskTable(table.scheme, None, table.realized_global_density, table.planned_global_density,
                     table.realized_global_density, table.total, table.kept, None, table.rows)
