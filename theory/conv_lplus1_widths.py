"""Sufficient source widths for strong tickets of plain CNNs inside an ER source of depth L+1 (docs/math.md §9 "weak /
L+1 ticket of a CNN" with §5, §6) [ours], following Gadhikar et al. 2023 (L+1 construction after Burkholz 2022, with
ER thinning).

A plain CNN is a chain of L weighted layers (conv2d or linear) with ReLU, pooling and flatten between them. Weighted
layer t is a dense layer over V_t virtual inputs (V_t = c_{t−1}·k_h·k_w for a convolution, the number of input
features for a linear layer) with c_t output channels (docs/math.md §9). Its source layer reads K_t columns per input
channel (the ``block``: k_h·k_w for a convolution, S for a linear layer reading a flatten of S positions per channel,
1 otherwise), so V_t = c_{t−1}·K_t for t ≥ 2.

The layout is the L+1 layout of :func:`theory.strong_widths.strong_widths` (construction "l+1") with the n_{t−1}
inputs of target layer t replaced by its V_t virtual inputs:

- source layer 1 (lifting, a convolution with target layer 1's kernel; P = P_1): g channels per virtual input and
  a bias group B_0 of g_0 channels, g = P·n(ε_1/P, δ', p_1·p_2/2, product),
  g_0 = max(P·n(ε_1/P, δ', p_2/2, product), n(ε_1, δ', p_2/2, product));
- source layer l = 2..L (P = P_l): r_l copies of each of the c_{l−1} channels of target layer l−1 plus c_l constants,
  r_l = P·n(ε_l/P, δ', p_{l+1}, uniform), c_l = max(P·n(ε_l/P, δ', p_{l+1}, uniform), n(ε_l, δ', p_{l+1}, uniform));
  source layer L+1: the c_L outputs (constants only with biases);
- instances: sides_1·P·R_2·V_1 + P·R_2 + c_2 for target layer 1 (R_l = r_l·c_{l−1} channels carrying target layer
  l−1, R_{L+1} = c_L), P·R_{t+1}·V_t + P·R_{t+1} + c_{t+1} for t ≥ 2 (bias terms only with ``biases``). sides_1 = 2
  when the network input can be negative (the sign split of §6), else 1 (then ReLU(−x) = 0 for target and ticket).

n(ε, δ', a, law) is the binomial-thinning group of :mod:`theory.strong_widths` (docs/math.md §5 [ours-1] with the
solver's search plan), δ' = δ / #instances (iterated to a fixed point), P = P_t = max(1, ⌈w̄_t⌉) weight parts of the
layer the group serves (``weight_bound`` one w̄ or one per target layer, |W_t|, |b_t| ≤ w̄_t), the source
dtype chosen as :func:`theory.strong_widths.strong_widths` does. With the network sup-error ``eps`` the forward split
of §6 is used: ε_t = ε / (L·(‖B_{t−1}‖_1 + 1)·Π_{k>t} Λ_k) with the worst-case amplification
Λ_t = (V_t + [biases])·C_t·P_t (every instance chooses at most C_t candidates of modulus ≤ 1 per part). ‖B_{t−1}‖_1 is
the sum over the V_t virtual inputs of their bounds: ``input_bounds_l1`` when given (the actual target's, e.g.
:func:`construct.conv_ticket.channel_bounds`), else the worst case over all targets with |W|, |b| ≤ w̄:
B_0 = max(|a|, |b|) per input, B_t ≤ V_t·w̄_t·B_{t−1} + w̄_t per channel, ‖B_{t−1}‖_1 = V_t·B_{t−1}.

For an MLP (K_t = 1, V_t = n_{t−1}, signed input, one w̄) every number equals
``strong_widths(..., construction="l+1")`` (whose P is global; here ``parts`` is the tuple (P, …, P)). Per-layer
bounds matter for trained CNNs: a folded first layer with |W| > 1 doubles only its own groups.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from theory.strong_widths import (FLOAT32_MIN_TOLERANCE, _cap, _search_blocks, _thin,
                                  backward_layer_tolerance, forward_tolerance_split, weight_parts)
from theory.validation import (check_choice, check_open_unit, check_positive_int, check_positive_real,
                               check_unit_count)
from theory.weak_widths import per_layer_densities

__all__ = ["ConvLPlus1Layer", "ConvLPlus1Widths", "conv_lplus1_widths"]


@dataclass(frozen=True)
class ConvLPlus1Layer:
    """One weighted target layer t as the widths read it: ``fan_in`` V_t, ``fan_out`` c_t, ``block`` K_t (columns of
    its source layer per input channel; 1 for the first layer and for a linear layer on a flat input)."""

    fan_in: int
    fan_out: int
    block: int = 1


@dataclass(frozen=True)
class ConvLPlus1Widths:
    """Widths of the strong L+1 ticket of a plain CNN (module docstring).

    ``groups``: {"g", "g0", "r": (r_2..r_L), "c": (c_2..c_L)}; ``candidates``/``caps``/``blocks`` per target layer
    {"weight", "bias", "const"} as in :class:`theory.strong_widths.StrongWidths`; ``source_channels``: output
    channels of source layers 1..L+1 (g·V_1 + g_0, r_2·c_1 + c_2, …, c_L); ``source_params``: weights of the dense
    source (lifting (g·V_1 + g_0)·V_1, the 1×1 layer, then rows × (input channels·K_t))."""

    layers: tuple
    densities: tuple
    delta: float
    eps: float | None
    tolerance_split: str
    instance_eps: tuple
    instance_delta: float
    instances: int
    weight_bound: tuple
    parts: tuple
    biases: bool
    signed_input: bool
    candidates: tuple
    caps: tuple
    blocks: tuple
    source_dtype: str
    groups: dict
    source_channels: tuple
    source_params: int
    expected_er_params: float
    expected_ticket_params: float
    amplification_bounds: tuple
    input_bounds_l1: tuple

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [asdict(layer) for layer in self.layers]
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _layers(layers) -> tuple:
    try:
        items = list(layers)
    except TypeError:
        raise ValueError(f"layers={layers!r} is not a list: allowed (fan_in, fan_out[, block]) per weighted "
                         "layer") from None
    if not items:
        raise ValueError("layers is empty: allowed at least one (fan_in, fan_out[, block])")
    out = []
    for t, item in enumerate(items):
        try:
            vals = tuple(item)
        except TypeError:
            vals = ()
        if len(vals) not in (2, 3):
            raise ValueError(f"layers[{t}]={item!r} is malformed: allowed (fan_in, fan_out[, block])")
        fan_in = check_positive_int(vals[0], f"layers[{t}].fan_in")
        fan_out = check_positive_int(vals[1], f"layers[{t}].fan_out")
        block = check_positive_int(vals[2], f"layers[{t}].block") if len(vals) == 3 else 1
        if t > 0 and fan_in != out[-1].fan_out * block:
            raise ValueError(f"layers[{t}].fan_in={fan_in} is not fan_out of layer {t - 1} ({out[-1].fan_out}) times "
                             f"block {block}: allowed fan_in = c_(t-1)·block (shapes must chain)")
        out.append(ConvLPlus1Layer(fan_in, fan_out, block))
    return tuple(out)


def _worst_bounds(lay, wb, box) -> tuple:
    unit = max(abs(float(box[0])), abs(float(box[1])))
    out = []
    for layer, w in zip(lay, wb):
        out.append(layer.fan_in * unit)
        unit = layer.fan_in * w * unit + w
    return tuple(out)


def _weight_bounds(weight_bound, L: int) -> tuple:
    """``weight_bound`` as L per-layer bounds w̄_t (one number is repeated)."""
    if isinstance(weight_bound, (int, float)) and not isinstance(weight_bound, bool):
        return (check_positive_real(weight_bound, "weight_bound"),) * L
    try:
        items = list(weight_bound)
    except TypeError:
        raise ValueError(f"weight_bound={weight_bound!r} is malformed: allowed a number > 0 or {L} of them") from None
    if len(items) != L:
        raise ValueError(f"weight_bound has {len(items)} entries: allowed one number or exactly {L} (one per target "
                         "layer)")
    return tuple(check_positive_real(v, f"weight_bound[{i}]") for i, v in enumerate(items))


def _layout(lay, dens, eps_t, delta_i, P, biases, sides1, dtype):
    """Group sizes, candidates, caps, source channels, instance count and expected ticket size (module docstring)."""
    L = len(lay)
    V = [layer.fan_in for layer in lay]
    c = [layer.fan_out for layer in lay]
    Ps = P
    P = Ps[0]
    g = P * _thin(eps_t[0] / P, delta_i, dens[0] * dens[1] / 2, "product", dtype)
    g0 = 0
    if biases:
        g0 = max(P * _thin(eps_t[0] / P, delta_i, dens[1] / 2, "product", dtype),
                 _thin(eps_t[0], delta_i, dens[1] / 2, "product", dtype))
    cand = [{"weight": g // P, "bias": g0, "const": g0}]
    caps = [{"weight": _cap(eps_t[0] / P, delta_i, "product", dtype),
             "bias": _cap(eps_t[0] / P, delta_i, "product", dtype), "const": _cap(eps_t[0], delta_i, "product", dtype)}]
    r, cc = [], []
    for l in range(2, L + 1):  # source layer l carries target layer l-1; its candidates serve target layer l
        p, e, P = dens[l], eps_t[l - 1], Ps[l - 1]
        rl = P * _thin(e / P, delta_i, p, "uniform", dtype)
        cl = max(P * _thin(e / P, delta_i, p, "uniform", dtype), _thin(e, delta_i, p, "uniform", dtype)) if biases else 0
        r.append(rl)
        cc.append(cl)
        cand.append({"weight": rl // P, "bias": cl, "const": cl})
        caps.append({"weight": _cap(e / P, delta_i, "uniform", dtype), "bias": _cap(e / P, delta_i, "uniform", dtype),
                     "const": _cap(e, delta_i, "uniform", dtype)})
    channels = [g * V[0] + g0] + [r[l - 2] * c[l - 2] + cc[l - 2] for l in range(2, L + 1)] + [c[L - 1]]
    R = [None, None] + [r[l - 2] * c[l - 2] for l in range(2, L + 1)] + [c[L - 1]]
    C = [0, 0] + cc + [0]
    count = 0
    ticket = 0.0
    for t in range(1, L + 1):
        sides = sides1 if t == 1 else 1
        P = Ps[t - 1]
        count += sides * P * R[t + 1] * V[t - 1]
        if biases:
            count += P * R[t + 1] + C[t + 1]
        ticket += (R[t + 1] * V[t - 1] * sides * caps[t - 1]["weight"] * P
                   + (R[t + 1] + C[t + 1]) * (caps[t - 1]["bias"] * P if biases else 0))
    ticket += min(g * V[0], sides1 * R[2] * V[0] * caps[0]["weight"] * Ps[0])  # lifting entries (one per used channel)
    groups = {"g": g, "g0": g0, "r": tuple(r), "c": tuple(cc)}
    return groups, tuple(cand), tuple(caps), tuple(channels), count, ticket


def conv_lplus1_widths(layers, density, delta, *, eps=None, instance_eps=None, signed_input=True, biases=True,
                       weight_bound=1.0, box=(-1.0, 1.0), input_bounds_l1=None, source_dtype=None) -> ConvLPlus1Widths:
    """Sufficient widths of an ER source of depth L+1 containing a strong ticket of a plain CNN with probability
    ≥ 1 − δ (docs/math.md §9, §6; formulas in the module docstring).

    ``layers``: per weighted target layer (fan_in V_t, fan_out c_t[, block K_t]); ``density``: one value or L+1
    (lifting, the 1×1 layer, one per later weighted layer); exactly one of ``eps`` (network sup-error, forward split)
    and ``instance_eps`` (one value or one per target layer); ``signed_input``: whether the network input can be
    negative (sign split of layer 1); ``input_bounds_l1``: ‖B_{t−1}‖_1 per target layer (None: worst case over all
    targets with |W|, |b| ≤ ``weight_bound`` on ``box``). One-line ValueErrors as
    :func:`theory.strong_widths.strong_widths`."""
    lay = _layers(layers)
    L = len(lay)
    dens = per_layer_densities(density, L + 1)
    delta = check_open_unit(delta, "delta")
    wb = _weight_bounds(weight_bound, L)
    P = tuple(weight_parts(w) for w in wb)
    biases = bool(biases)
    sides1 = 2 if bool(signed_input) else 1
    a, b = float(box[0]), float(box[1])
    if not (math.isfinite(a) and math.isfinite(b) and a < b):
        raise ValueError(f"box={box!r} is out of range: allowed finite a < b")
    if input_bounds_l1 is None:
        bounds = _worst_bounds(lay, wb, (a, b))
    else:
        bounds = tuple(float(v) for v in input_bounds_l1)
        if len(bounds) != L or not all(math.isfinite(v) and v >= 0 for v in bounds):
            raise ValueError(f"input_bounds_l1={list(input_bounds_l1)!r} is malformed: allowed {L} finite numbers >= 0")
    if (eps is None) == (instance_eps is None):
        raise ValueError("eps and instance_eps: allowed exactly one of them (network sup-error or per-instance tolerance)")
    if instance_eps is not None:
        if isinstance(instance_eps, (int, float)) and not isinstance(instance_eps, bool):
            eps_fixed = (check_open_unit(instance_eps, "instance_eps"),) * L
        else:
            items = list(instance_eps)
            if len(items) != L:
                raise ValueError(f"instance_eps has {len(items)} entries: allowed one value or exactly {L} (one per "
                                 "target layer)")
            eps_fixed = tuple(check_open_unit(v, f"instance_eps[{i}]") for i, v in enumerate(items))
        split = "instance"
    else:
        eps = check_open_unit(eps, "eps")
        split = "forward"
    extra = 1 if biases else 0

    def amps_for(caps):
        return [1.0] + [float((lay[t - 1].fan_in + extra) * caps[t - 1]["weight"] * P[t - 1]) for t in range(2, L + 1)]

    def fixed_point(dtype):
        delta_i = delta / (4.0 * sum(layer.fan_in * layer.fan_out for layer in lay))
        for _ in range(50):
            if split == "instance":
                eps_t = eps_fixed
            else:
                eps_list = [0.0] * L
                prod = 1.0
                for t in range(L, 0, -1):
                    eps_list[t - 1] = backward_layer_tolerance(eps, L, bounds[t - 1], prod)
                    if t > 1:
                        prod *= ((lay[t - 1].fan_in + extra) * _cap(eps_list[t - 1] / P[t - 1], delta_i, "uniform", dtype)
                                 * P[t - 1])
                eps_t = tuple(eps_list)
            layout = _layout(lay, dens, eps_t, delta_i, P, biases, sides1, dtype)
            new_delta = delta / layout[4]
            if new_delta >= delta_i * (1 - 1e-12):
                return eps_t, delta_i, layout
            delta_i = new_delta
        raise ValueError("conv_lplus1_widths did not converge: allowed smaller targets")  # pragma: no cover

    if source_dtype is None:  # float32 when its resolution costs at most half of every tolerance, else float64
        eps_t, delta_i, layout = fixed_point("float64")
        dtype = "float64"
        if min(e / p for e, p in zip(eps_t, P)) >= FLOAT32_MIN_TOLERANCE:
            try:
                eps32, delta32, layout32 = fixed_point("float32")
            except ValueError:
                eps32 = None
            if eps32 is not None and min(e / p for e, p in zip(eps32, P)) >= FLOAT32_MIN_TOLERANCE:
                eps_t, delta_i, layout, dtype = eps32, delta32, layout32, "float32"
    else:
        dtype = check_choice(source_dtype, "source_dtype", ("float32", "float64"))
        eps_t, delta_i, layout = fixed_point(dtype)
    groups, cand, caps, channels, count, ticket = layout
    blocks = tuple(_search_blocks("l+1", eps_t, delta_i, p, dtype)[t] for t, p in enumerate(P))
    amps = tuple(amps_for(caps))
    if split == "forward":
        check = forward_tolerance_split(eps, bounds, amps)
        eps_t = tuple(min(e, c) for e, c in zip(eps_t, check))
    for i, w in enumerate(channels, start=1):
        check_unit_count(w, f"channels of source layer {i}")
    params = [channels[0] * lay[0].fan_in, channels[1] * channels[0]]
    params += [channels[t] * channels[t - 1] * lay[t - 1].block for t in range(2, L + 1)]
    for i, n in enumerate(params, start=1):
        check_unit_count(n, f"weights of source layer {i}")
    return ConvLPlus1Widths(
        layers=lay, densities=dens, delta=delta, eps=None if split == "instance" else eps, tolerance_split=split,
        instance_eps=tuple(eps_t), instance_delta=delta_i, instances=int(count), weight_bound=wb, parts=P,
        biases=biases, signed_input=sides1 == 2, candidates=cand, caps=caps, blocks=blocks, source_dtype=dtype,
        groups=groups, source_channels=channels, source_params=int(sum(params)),
        expected_er_params=float(sum(p * n for p, n in zip(dens, params))), expected_ticket_params=float(ticket),
        amplification_bounds=amps, input_bounds_l1=bounds)
