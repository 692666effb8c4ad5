"""Sufficient source widths for weak tickets of plain CNNs inside an ER source of depth L+1 (docs/math.md §9, §4)
[ours], following Gadhikar et al. 2023.

A plain CNN is a chain of L weighted layers (conv2d or linear) with ReLU, pooling and flatten between them. Weight
sharing makes weighted layer t a dense layer over V_t virtual inputs (V_t = c_{t−1}·k_h·k_w for a convolution, the
number of input features for a linear layer) with c_t output channels and m_t nonzero weights (docs/math.md §9).
The construction of docs/math.md §9 (weak / L+1 ticket of a CNN):

- source layer 1 (lifting): 2·g channels per virtual input v of target layer 1 (groups G_v^+ and G_v^−);
- source layer t+1 (1 ≤ t ≤ L): r_{t+1} copies of every output channel of target layer t (r_{L+1} = 1).

A needed edge is missing with probability (1 − p_1·p_2)^g in source layer 2 (2·r_2·m_1 needed edges) and
(1 − p_{t+1})^{r_t} in source layer t+1 ≥ 3 (r_{t+1}·m_t needed edges, each with its own r_t candidates). A union
bound with budget δ/L per target layer gives, solved backwards from r_{L+1} = 1 (docs/math.md §4 item 3 with
n_{t−1} replaced by V_t):

  r_t = max(1, ⌈κ(p_{t+1})·log(r_{t+1}·m_t·L/δ)⌉)  for t = L, …, 2,
  g   = max(1, ⌈κ(p_1·p_2)·log(2·r_2·m_1·L/δ)⌉).

These are the formulas of :func:`theory.weak_widths.weak_widths`, which cannot be called directly here because it
checks m_t ≤ n_t·n_{t−1} with chained widths, while a CNN's V_t is not c_{t−1} (kernel entries, flatten); this module
reuses its rounding helper so that both give the same numbers for the same (m_t, densities, δ).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from theory.validation import check_open_unit, check_positive_int, check_unit_count
from theory.weak_widths import _kappa_log_ceil, per_layer_densities

__all__ = ["ConvWeakLayer", "ConvWeakWidths", "conv_weak_widths", "ConvWeakGraphWidths", "conv_weak_graph_widths"]


@dataclass(frozen=True)
class ConvWeakLayer:
    """One weighted target layer t as the widths read it: ``fan_in`` V_t (virtual inputs), ``fan_out`` c_t (output
    channels or features), ``nonzeros`` m_t (1 ≤ m_t ≤ c_t·V_t)."""

    fan_in: int
    fan_out: int
    nonzeros: int


@dataclass(frozen=True)
class ConvWeakWidths:
    """Widths and sizes of the weak ticket of a plain CNN (docs/math.md §9, §4).

    - ``layers`` the :class:`ConvWeakLayer` of every weighted target layer; ``densities`` (p_1, …, p_{L+1}), one
      per source layer; ``delta`` δ.
    - ``lifting_group`` g; ``copies`` (r_2, …, r_L, r_{L+1} = 1).
    - ``source_channels`` (2·g·V_1, r_2·c_1, …, r_L·c_{L−1}, c_L): output channels (features) of source layers 1..L+1.
    - ``source_params``: weights of the dense source, Σ over source layers of rows × (input channels·k_h·k_w):
      2·g·V_1·V_1 (lifting), r_2·c_1·2·g·V_1 (a 1×1 convolution), r_{t+1}·c_t·r_t·V_t for t ≥ 2.
    - ``expected_source_kept`` Σ p·(weights of that source layer).
    - ``ticket_params``: an upper bound of the ticket's kept weights: 2·r_2·m_1 + Σ_{t≥2} r_{t+1}·m_t edges plus one
      lifting entry per used lifting channel (at most min(2·g·V_1, 2·r_2·m_1)).
    - ``target_params`` Σ m_t.
    """

    layers: tuple
    densities: tuple
    delta: float
    lifting_group: int
    copies: tuple
    source_channels: tuple
    source_params: int
    expected_source_kept: float
    ticket_params: int
    target_params: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [asdict(layer) for layer in self.layers]
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _layers(layers) -> tuple:
    try:
        items = list(layers)
    except TypeError:
        raise ValueError(f"layers={layers!r} is not a list: allowed (fan_in, fan_out, nonzeros) per weighted "
                         "layer") from None
    if not items:
        raise ValueError("layers is empty: allowed at least one (fan_in, fan_out, nonzeros)")
    out = []
    for t, item in enumerate(items, start=1):
        try:
            fan_in, fan_out, nz = item
        except (TypeError, ValueError):
            raise ValueError(f"layers[{t - 1}]={item!r} is malformed: allowed (fan_in, fan_out, nonzeros)") from None
        fan_in = check_positive_int(fan_in, f"layers[{t - 1}].fan_in")
        fan_out = check_positive_int(fan_out, f"layers[{t - 1}].fan_out")
        nz = check_positive_int(nz, f"layers[{t - 1}].nonzeros")
        if nz > fan_in * fan_out:
            raise ValueError(f"layers[{t - 1}].nonzeros={nz} exceeds fan_out·fan_in={fan_out * fan_in}: allowed "
                             f"1..{fan_out * fan_in}")
        out.append(ConvWeakLayer(fan_in, fan_out, nz))
    return tuple(out)


def conv_weak_widths(layers, density, delta) -> ConvWeakWidths:
    """Sufficient widths of an ER source of depth L+1 that contains a weak ticket (exact representation) of a plain
    CNN with probability ≥ 1 − δ (docs/math.md §9, §4.3).

    ``layers``: per weighted target layer (fan_in V_t, fan_out c_t, nonzeros m_t); ``density``: one density for every
    source layer or L+1 of them (p_1 lifting, p_2 the 1×1 layer, p_{t+1} the layer that carries target layer t).
    Widths from the module docstring's formulas; a group size or width of 2^63 or more raises
    :class:`theory.validation.WidthOverflowError` (a ``ValueError``)."""
    lay = _layers(layers)
    L = len(lay)
    dens = per_layer_densities(density, L + 1)
    dl = check_open_unit(delta, "delta")
    m = [layer.nonzeros for layer in lay]
    r = {L + 1: 1}
    for t in range(L, 1, -1):
        r[t] = _kappa_log_ceil(dens[t], math.log(r[t + 1]) + math.log(m[t - 1]) + math.log(L) - math.log(dl),
                               f"copies r_{t} of target layer {t - 1}", f"p_{t + 1}")
    r2 = r.get(2, 1)
    g = _kappa_log_ceil(dens[0] * dens[1], math.log(2.0 * r2) + math.log(m[0]) + math.log(L) - math.log(dl),
                        "lifting group g", "p_1*p_2")
    copies = tuple(r[t] for t in range(2, L + 2))
    V1 = lay[0].fan_in
    channels = (2 * g * V1,) + tuple(r[t + 1] * lay[t - 1].fan_out for t in range(1, L + 1))
    for i, c in enumerate(channels, start=1):
        check_unit_count(c, f"channels of source layer {i}")
    params = [channels[0] * V1, channels[1] * channels[0]]
    params += [channels[t] * r[t] * lay[t - 1].fan_in for t in range(2, L + 1)]
    for i, n in enumerate(params, start=1):
        check_unit_count(n, f"weights of source layer {i}")
    ticket = (min(2 * g * V1, 2 * r2 * m[0]) + 2 * r2 * m[0]
              + sum(r[t + 1] * m[t - 1] for t in range(2, L + 1)))
    return ConvWeakWidths(layers=lay, densities=dens, delta=dl, lifting_group=g, copies=copies,
                          source_channels=channels, source_params=int(sum(params)),
                          expected_source_kept=float(sum(p * n for p, n in zip(dens, params))),
                          ticket_params=int(ticket), target_params=int(sum(m)))


# ------------------------------------------------------------------------------------------------ residual graphs
@dataclass(frozen=True)
class ConvWeakGraphWidths:
    """Widths of the weak ticket of a CNN with residual additions (docs/math.md §9 "residual blocks", §4) [ours].

    - ``layers``: the :class:`ConvWeakLayer` of every weighted target layer (topological order);
      ``reads``/``writes``: per weighted layer the copy class of its input value (None for layer 1, which reads the
      network input through the lifting) and of its output value; ``densities`` (p_1, …, p_{L+1}); ``delta``.
    - ``lifting_group`` g; ``class_copies``: r_c per copy class (values joined by a residual addition, or by ReLU,
      pooling and flatten, share one class: an addition adds copy s to copy s);
      ``copies``: r of every weighted layer's output class (what its source layer computes per channel);
      ``iterations``: passes of the fixed-point iteration.
    - ``source_channels``, ``source_params``, ``expected_source_kept``, ``ticket_params``, ``target_params``: as in
      :class:`ConvWeakWidths`.
    """

    layers: tuple
    reads: tuple
    writes: tuple
    densities: tuple
    delta: float
    lifting_group: int
    class_copies: tuple
    copies: tuple
    iterations: int
    source_channels: tuple
    source_params: int
    expected_source_kept: float
    ticket_params: int
    target_params: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [asdict(layer) for layer in self.layers]
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


#: passes of the fixed-point iteration before it is declared divergent (it converges in a handful: each pass
#: applies ⌈κ·log(·)⌉, which grows far slower than its argument)
GRAPH_MAX_ITERATIONS = 1000


def conv_weak_graph_widths(layers, reads, writes, density, delta) -> ConvWeakGraphWidths:
    """Sufficient widths of an ER source of depth L+1 that contains a weak ticket of a CNN with residual
    additions, with probability ≥ 1 − δ (docs/math.md §9, §4.3) [ours].

    ``layers``: per weighted layer t = 1..L (fan_in V_t, fan_out c_t, nonzeros m_t) in topological order;
    ``reads[t−1]``: the copy class (a non-negative int) of layer t's input value, None for t = 1 only;
    ``writes[t−1]``: the class of its output. A class holds r_c copies of each of its channels; a residual addition
    joins the classes of its two inputs and its output (copy s adds to copy s), so r_c must serve every layer that
    reads class c. With the union bound of budget δ/L per weighted layer:

      r_c = max(1, max over layers t ≥ 2 reading c of ⌈κ(p_{t+1})·log(r_{writes(t)}·m_t·L/δ)⌉),
      g   = max(1, ⌈κ(p_1·p_2)·log(2·r_{writes(1)}·m_1·L/δ)⌉),

    the least fixed point (a block reads its own output class through its shortcut, so the r_c depend on each
    other), found by iterating from r = 1; each r_c only grows, and each pass applies a logarithm. A chain
    (every class read by the next layer only) gives exactly :func:`conv_weak_widths`."""
    lay = _layers(layers)
    L = len(lay)
    reads, writes = tuple(reads), tuple(writes)
    if len(reads) != L or len(writes) != L:
        raise ValueError(f"reads/writes have {len(reads)}/{len(writes)} entries: allowed one per weighted layer ({L})")
    if reads[0] is not None or any(c is None for c in reads[1:]):
        raise ValueError(f"reads={list(reads)!r}: allowed None for layer 1 (the lifting reads the input) and a class "
                         "for every other layer")
    classes = sorted({int(c) for c in reads[1:]} | {int(c) for c in writes})
    if classes and (classes[0] < 0):
        raise ValueError(f"classes {classes}: allowed non-negative integers")
    dens = per_layer_densities(density, L + 1)
    dl = check_open_unit(delta, "delta")
    m = [layer.nonzeros for layer in lay]
    r = {c: 1 for c in classes}
    iterations = 0
    while True:
        iterations += 1
        new = {c: 1 for c in classes}
        for t in range(2, L + 1):
            need = _kappa_log_ceil(dens[t], math.log(r[writes[t - 1]]) + math.log(m[t - 1]) + math.log(L)
                                   - math.log(dl), f"copies of class {reads[t - 1]} read by layer {t}", f"p_{t + 1}")
            new[reads[t - 1]] = max(new[reads[t - 1]], need)
        new = {c: max(r[c], new[c]) for c in classes}
        if new == r:
            break
        r = new
        if iterations >= GRAPH_MAX_ITERATIONS:
            raise ValueError(f"the copy counts did not settle in {GRAPH_MAX_ITERATIONS} passes: allowed larger "
                             "densities")
    g = _kappa_log_ceil(dens[0] * dens[1], math.log(2.0 * r[writes[0]]) + math.log(m[0]) + math.log(L)
                        - math.log(dl), "lifting group g", "p_1*p_2")
    V1 = lay[0].fan_in
    copies = tuple(r[writes[t]] for t in range(L))
    channels = (2 * g * V1,) + tuple(copies[t] * lay[t].fan_out for t in range(L))
    for i, c in enumerate(channels, start=1):
        check_unit_count(c, f"channels of source layer {i}")
    params = [channels[0] * V1, channels[1] * channels[0]]
    params += [channels[t] * r[reads[t - 1]] * lay[t - 1].fan_in for t in range(2, L + 1)]
    for i, n in enumerate(params, start=1):
        check_unit_count(n, f"weights of source layer {i}")
    ticket = (min(2 * g * V1, 2 * copies[0] * m[0]) + 2 * copies[0] * m[0]
              + sum(copies[t - 1] * m[t - 1] for t in range(2, L + 1)))
    return ConvWeakGraphWidths(layers=lay, reads=reads, writes=writes, densities=dens, delta=dl, lifting_group=g,
                               class_copies=tuple(r[c] for c in classes), copies=copies, iterations=iterations,
                               source_channels=channels, source_params=int(sum(params)),
                               expected_source_kept=float(sum(p * n for p, n in zip(dens, params))),
                               ticket_params=int(ticket), target_params=int(sum(m)))
