"""Sufficient source widths for strong tickets inside ER sources (docs/math.md §6) [ours], following Gadhikar et al.
2023 (L+1 construction after Burkholz 2022, 2L construction after Pensia et al. 2020, with ER thinning).

Every subset-sum instance needs N_SS(ε_t, δ'/2, law) surviving candidates, where δ' = δ / (#instances) (union
bound) and law is "product" (products of two source weights) or "uniform". Candidates survive the ER masks
independently with an *availability* a, so with the binomial-thinning margin [ours-1] of docs/math.md §5 a group of

    n(ε, δ', a, law) = ⌈(2·N + 8·log(2/δ')) / a⌉,   N = a_b·k = search_plan(ε_eff, δ'/2, law).total,

candidates fails with probability ≤ δ' (binomial thinning [ours-1] of docs/math.md §5 with N searched candidates).
**What the solver searches** (issue 14): one exact search covers at most k ≤ SOLVER_MAX_CANDIDATES = 40 candidates
(:data:`theory.subset_sum.SOLVER_MAX_CANDIDATES`, imported by ``construct.subset_sum`` as its prefix cap). When
N_SS(ε_eff, δ'/2) > 40, the plan uses a_b independent blocks of k = N_SS(ε_eff, (δ'/2)^{1/a_b}) ≤ 40 candidates,
each searched exactly, the best block taken: all blocks fail w.p. ≤ δ'/2 (:func:`theory.subset_sum.search_plan`).
When no k ≤ 40 exists (N_SS(ε_eff, 0.1) > 40) the configuration is refused with a one-line ValueError naming the
tolerance, the N_SS it needs and the cap. **Precision**: N_SS is calibrated for continuous weights; drawn weights
of spacing ρ (float32: 2^−23, float64: 2^−52; products 2ρ) meet ε when the continuous ones meet
ε_eff = ε − 40·ρ (:func:`theory.subset_sum.effective_tolerance`). ``source_dtype`` is float32 only when every
per-instance tolerance is ≥ :data:`FLOAT32_MIN_TOLERANCE` (the margin costs at most half of it), else float64; a
tolerance below the chosen dtype's margin is refused. The caps C_t below are the block sizes k (at most k
candidates are chosen per instance), ``blocks`` the a_b. Target weights with |W| ≤ w̄ (``weight_bound``) are split into
P = max(1, ⌈w̄⌉) parts W/P ∈ [−1, 1], each solved to ε_t/P over its own disjoint sub-group (columns q, q+P, …);
so every group is P·n(ε_t/P, δ', a, law) wide and the instance count is multiplied by P.

**L+1** (source depth L+1; densities p_1..p_{L+1}; c_l, g_0 only with ``biases``):
- layer 1: n_0 groups B_j of g = P·n(ε_1/P, δ', p_1·p_2/2, product) units, then the bias group B_0 of
  g_0 = max(P·n(ε_1/P, δ', p_2/2, product), n(ε_1, δ', p_2/2, product)) units;
- layer l = 2..L: r_l·n_{l−1} copies with r_l = P·n(ε_l/P, δ', p_{l+1}, uniform), then c_l constant units with
  c_l = max(P·n(ε_l/P, δ', p_{l+1}, uniform), n(ε_l, δ', p_{l+1}, uniform)); layer L+1: n_L outputs.
- instances: 2·P·R_2·n_0 + P·R_2 + c_2 for target layer 1 (R_l = units carrying target layer l−1: r_l·n_{l−1},
  R_{L+1} = n_L), P·R_{t+1}·n_{t−1} + P·R_{t+1} + c_{t+1} for t ≥ 2 (bias terms only with ``biases``).
**2L** (source depth 2L; densities p_1..p_{2L}): source layer 2t−1 holds k_t units per input of target layer t,
k_t = P·n(ε_t/P, δ', p_{2t−1}·p_{2t}/2, product), then g0_t = P·n(ε_t/P, δ', p_{2t}/2, product) bias units; source
layer 2t holds the n_t target neurons. Instances: P·n_t·n_{t−1}·(2 if t = 1 else 1) + P·n_t (only the positive side
is needed for t ≥ 2: hidden target values are ≥ 0, so ReLU(−x_j) = 0).

Tolerances. Given ``instance_eps`` (one value or one per target layer) it is used directly. Given ``eps`` (the
network's sup-error), the worst-case forward split of §6 is used: with at most C_t = P·N_SS(ε_t/P, δ'/2, law)
candidates chosen per instance (constructions search only the first C_t available candidates of an instance) and
|c| ≤ 1 (U[−1, 1] source weights), the amplification of target layer t ≥ 2 is at most
Λ_t = (n_{t−1} + [biases, L+1 only])·C_t, the input bounds are ‖B_0‖_1 = n_0·max(|a|, |b|) and
B_t ≤ n_{t−1}·w̄·B_{t−1} + w̄ per unit (interval propagation), and

    ε_t = ε / (L · (‖B_{t−1}‖_1 + 1) · Π_{k>t} Λ_k),

solved from t = L down to 1 (Λ_k depends on ε_k); δ' and the widths are iterated to a fixed point.
Unrolling e_t ≤ Λ_t·e_{t−1} + ε_t·(‖B_{t−1}‖_1 + 1) gives a certificate ≤ ε when every instance succeeds.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from theory.validation import check_choice, check_open_unit, check_positive_real, check_unit_count, check_widths
from theory.weak_widths import per_layer_densities

__all__ = ["StrongWidths", "strong_widths", "backward_layer_tolerance", "forward_tolerance_split",
           "weight_parts", "input_bounds_l1"]

CONSTRUCTIONS = ("l+1", "2l")

#: float32 source weights are used only when every per-instance tolerance (ε_t/P) is at least this value: then the
#: coupling margin C·ρ = 40·2^−22 ≈ 9.5e−6 (products of two float32 weights) costs at most half of it.
FLOAT32_MIN_TOLERANCE = 2.0 * 40 * 2.0 ** -22


def backward_layer_tolerance(eps: float, num_layers: int, input_bound_l1: float,
                             downstream_amplification: float) -> float:
    """ε_t = ε / (L · (‖B_{t−1}‖_1 + 1) · Π_{k>t} Λ_k) (docs/math.md §6 tolerance split);
    ``downstream_amplification`` is the product Π_{k>t} Λ_k (1 for the last layer)."""
    eps = check_positive_real(eps, "eps")
    if isinstance(num_layers, bool) or int(num_layers) != num_layers or num_layers < 1:
        raise ValueError(f"num_layers={num_layers!r} is out of range: allowed integers >= 1")
    if not (math.isfinite(input_bound_l1) and input_bound_l1 >= 0):
        raise ValueError(f"input_bound_l1={input_bound_l1!r} is out of range: allowed a finite number >= 0")
    amp = check_positive_real(downstream_amplification, "downstream_amplification")
    return eps / (int(num_layers) * (float(input_bound_l1) + 1.0) * amp)


def forward_tolerance_split(eps: float, input_bounds_l1, amplification_bounds) -> tuple[float, ...]:
    """(ε_1, …, ε_L) with ε_t = ε / (L·(‖B_{t−1}‖_1 + 1)·Π_{k>t} Λ_k) for given ‖B_{t−1}‖_1 (t = 1..L) and
    amplification bounds Λ_1..Λ_L (Λ_1 is never used: e_0 = 0). Then Σ_t ε_t (‖B_{t−1}‖_1 + 1) Π_{k>t} Λ_k = ε."""
    bounds = [float(b) for b in input_bounds_l1]
    amps = [float(a) for a in amplification_bounds]
    if len(bounds) != len(amps) or not bounds:
        raise ValueError(f"input_bounds_l1 has {len(bounds)} entries and amplification_bounds {len(amps)}: "
                         "allowed equal, non-zero lengths")
    L = len(bounds)
    out = []
    for t in range(1, L + 1):
        prod = math.prod(amps[t:]) if t < L else 1.0
        out.append(backward_layer_tolerance(eps, L, bounds[t - 1], prod))
    return tuple(out)


def weight_parts(weight_bound: float) -> int:
    """P = max(1, ⌈w̄⌉): a target weight |W| ≤ w̄ is split into P parts W/P ∈ [−1, 1]."""
    wb = check_positive_real(weight_bound, "weight_bound")
    return max(1, math.ceil(wb - 1e-12))


def input_bounds_l1(target_widths, weight_bound: float = 1.0, box=(-1.0, 1.0)) -> tuple[float, ...]:
    """Worst-case ‖B_{t−1}‖_1 for t = 1..L over all targets with |W|, |b| ≤ w̄: B_0 = max(|a|, |b|) per input,
    B_t ≤ n_{t−1}·w̄·B_{t−1} + w̄ per unit (interval propagation)."""
    widths = check_widths(target_widths, "target_widths", minimum_length=2)
    wb = check_positive_real(weight_bound, "weight_bound")
    unit = max(abs(float(box[0])), abs(float(box[1])))
    out = []
    for t in range(1, len(widths)):
        out.append(widths[t - 1] * unit)
        unit = widths[t - 1] * wb * unit + wb
    return tuple(out)


@dataclass(frozen=True)
class StrongWidths:
    """Widths of the strong-ticket constructions of docs/math.md §6 (see the module docstring for every formula).

    ``groups``: l+1: {"g", "g0", "r": (r_2..r_L), "c": (c_2..c_L)}; 2l: {"k": (k_1..k_L), "g0": (g0_1..g0_L)}.
    ``candidates``: per target layer t, {"weight": n per part, "bias": n per part, "const": n} (group sizes per
    part before multiplying by P) and ``caps``: C_t per part = the block size k of the search plan (at most
    :data:`theory.subset_sum.SOLVER_MAX_CANDIDATES`; at most C_t candidates are chosen per instance), ``blocks``:
    the number of blocks a (an instance searches its first a·k available candidates as a blocks of k).
    ``source_dtype``: the dtype the source weights must be drawn in ("float32" or "float64").
    """

    construction: str
    target_widths: tuple
    densities: tuple
    delta: float
    eps: float | None
    tolerance_split: str
    instance_eps: tuple
    instance_delta: float
    instances: int
    weight_bound: float
    parts: int
    biases: bool
    candidates: tuple
    caps: tuple
    blocks: tuple
    source_dtype: str
    groups: dict
    source_widths: tuple
    source_params: int
    expected_er_params: float
    expected_ticket_params: float
    amplification_bounds: tuple
    input_bounds_l1: tuple

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _plan(eps, delta, law, dtype):
    """The search plan of one instance with tolerance ε and failure δ' (the N_SS part gets δ'/2): N_SS is evaluated
    at ε_eff = ε − C·ρ(dtype, law) (:func:`theory.subset_sum.effective_tolerance`) and split into blocks of at most
    :data:`theory.subset_sum.SOLVER_MAX_CANDIDATES` candidates (:func:`theory.subset_sum.search_plan`)."""
    from theory.subset_sum import SOLVER_MAX_CANDIDATES, candidate_resolution, effective_tolerance, search_plan

    eff = effective_tolerance(eps, dtype, law)
    if not eff > 0:
        raise ValueError(f"per-instance tolerance eps={eps:.3g} is below the resolution of {dtype} source weights "
                         f"({SOLVER_MAX_CANDIDATES} candidates x {candidate_resolution(dtype, law):.3g}): allowed "
                         f"eps > {SOLVER_MAX_CANDIDATES * candidate_resolution(dtype, law):.3g} (float64 sources "
                         "resolve 2^-52)")
    try:
        return search_plan(min(eff, 0.5), delta / 2.0, law)
    except OverflowError:
        return check_unit_count(math.inf, f"N_SS(eps={eps:.3g}, delta'={delta / 2.0:.3g})")


def _thin(eps, delta, availability, law, dtype):
    """[ours-1] of docs/math.md §5 with the searched candidates: ⌈(2·a·k + 8·log(2/δ'))/availability⌉ for the plan a·k.
    A group of 2^63 units or more (tiny ε, δ' or availability, including an availability that underflows to 0) is
    refused with WidthOverflowError."""
    what = f"a subset-sum group (eps={eps:.3g}, delta'={delta:.3g}, availability={availability:.3g})"
    if availability == 0.0:
        check_unit_count(math.inf, what + " after float underflow")
    total = _plan(eps, delta, law, dtype).total
    try:
        return check_unit_count(math.ceil((2 * total + 8 * math.log(2 / delta)) / availability - 1e-12), what)
    except OverflowError:
        return check_unit_count(math.inf, what)


def _cap(eps, delta, law, dtype):
    return int(_plan(eps, delta, law, dtype).block)


def _blocks(eps, delta, law, dtype):
    return int(_plan(eps, delta, law, dtype).blocks)


def _search_blocks(construction, eps_t, delta_i, P, dtype):
    """Per target layer {"weight", "bias", "const"}: the number of blocks a of the search plan (like ``caps``)."""
    out = []
    for t, e in enumerate(eps_t, start=1):
        law = "product" if (construction == "2l" or t == 1) else "uniform"
        const = _blocks(e, delta_i, law, dtype) if construction == "l+1" else 0
        out.append({"weight": _blocks(e / P, delta_i, law, dtype), "bias": _blocks(e / P, delta_i, law, dtype),
                    "const": const})
    return tuple(out)


def _layout(construction, n, dens, eps_t, delta_i, P, biases, dtype):
    """Group sizes, per-layer candidate counts and caps, source widths and the instance count."""
    L = len(n) - 1
    cand, caps = [], []
    if construction == "l+1":
        g = P * _thin(eps_t[0] / P, delta_i, dens[0] * dens[1] / 2, "product", dtype)
        g0 = 0
        if biases:
            g0 = max(P * _thin(eps_t[0] / P, delta_i, dens[1] / 2, "product", dtype),
                     _thin(eps_t[0], delta_i, dens[1] / 2, "product", dtype))
        cand.append({"weight": g // P, "bias": g0, "const": g0})
        caps.append({"weight": _cap(eps_t[0] / P, delta_i, "product", dtype),
                     "bias": _cap(eps_t[0] / P, delta_i, "product", dtype), "const": _cap(eps_t[0], delta_i, "product", dtype)})
        r, c = [], []
        for l in range(2, L + 1):  # source layer l carries target layer l-1; its candidates serve target layer l
            p = dens[l]
            rl = P * _thin(eps_t[l - 1] / P, delta_i, p, "uniform", dtype)
            cl = max(P * _thin(eps_t[l - 1] / P, delta_i, p, "uniform", dtype), _thin(eps_t[l - 1], delta_i, p, "uniform", dtype)) if biases else 0
            r.append(rl)
            c.append(cl)
            cand.append({"weight": rl // P, "bias": cl, "const": cl})
            caps.append({"weight": _cap(eps_t[l - 1] / P, delta_i, "uniform", dtype),
                         "bias": _cap(eps_t[l - 1] / P, delta_i, "uniform", dtype), "const": _cap(eps_t[l - 1], delta_i, "uniform", dtype)})
        widths = [n[0], g * n[0] + g0] + [r[l - 2] * n[l - 1] + c[l - 2] for l in range(2, L + 1)] + [n[L]]
        R = [None, None] + [r[l - 2] * n[l - 1] for l in range(2, L + 1)] + [n[L]]
        C = [0, 0] + c + [0]
        count = 0
        for t in range(1, L + 1):
            sides = 2 if t == 1 else 1
            count += sides * P * R[t + 1] * n[t - 1]
            if biases:
                count += P * R[t + 1] + C[t + 1]
        groups = {"g": g, "g0": g0, "r": tuple(r), "c": tuple(c)}
        ticket = 0.0
        for t in range(1, L + 1):
            per_inst = caps[t - 1]["weight"] * P
            sides = 2 if t == 1 else 1
            ticket += R[t + 1] * n[t - 1] * sides * per_inst + (R[t + 1] + C[t + 1]) * (caps[t - 1]["bias"] * P if biases else 0)
        ticket += min(g * n[0], 2 * (R[2]) * n[0] * caps[0]["weight"] * P)  # lifting edges (at most one per unit)
    else:
        k, g0s = [], []
        for t in range(1, L + 1):
            pa, pb = dens[2 * t - 2], dens[2 * t - 1]
            kt = P * _thin(eps_t[t - 1] / P, delta_i, pa * pb / 2, "product", dtype)
            gt = P * _thin(eps_t[t - 1] / P, delta_i, pb / 2, "product", dtype) if biases else 0
            k.append(kt)
            g0s.append(gt)
            cand.append({"weight": kt // P, "bias": gt // P if biases else 0, "const": 0})
            cap = _cap(eps_t[t - 1] / P, delta_i, "product", dtype)
            caps.append({"weight": cap, "bias": cap if biases else 0, "const": 0})
        widths = [n[0]]
        for t in range(1, L + 1):
            widths += [k[t - 1] * n[t - 1] + g0s[t - 1], n[t]]
        count = sum(P * n[t] * n[t - 1] * (2 if t == 1 else 1) + (P * n[t] if biases else 0) for t in range(1, L + 1))
        groups = {"k": tuple(k), "g0": tuple(g0s)}
        ticket = 0.0
        for t in range(1, L + 1):
            sides = 2 if t == 1 else 1
            chosen = n[t] * n[t - 1] * sides * caps[t - 1]["weight"] * P
            ticket += chosen + min(k[t - 1] * n[t - 1], chosen) + (n[t] * caps[t - 1]["bias"] * P if biases else 0)
    return groups, tuple(cand), tuple(caps), tuple(widths), count, ticket


def strong_widths(target_widths, density, delta, *, eps=None, instance_eps=None, construction="l+1",
                  biases=True, weight_bound=1.0, box=(-1.0, 1.0), source_dtype=None) -> StrongWidths:
    """Sufficient widths of an ER source containing a strong ticket of any target with widths (n_0, …, n_L),
    |weights|, |biases| ≤ ``weight_bound``, with probability ≥ 1 − δ (docs/math.md §6; formulas in the module
    docstring). Exactly one of ``eps`` (network sup-error; forward split) and ``instance_eps`` (per-instance
    tolerance, one value or one per target layer) must be given. ``density``: one value or one per source layer
    (L+1 for "l+1", 2L for "2l"). ``source_dtype``: "float32", "float64" or None (float32 iff every per-instance
    tolerance is ≥ :data:`FLOAT32_MIN_TOLERANCE`, else float64); N_SS is evaluated at ε − C·ρ(dtype) (module
    docstring). Raises a one-line ValueError when a tolerance needs more candidates per exact search than the
    solver searches (:data:`theory.subset_sum.SOLVER_MAX_CANDIDATES`) or lies below the weights' resolution."""
    n = check_widths(target_widths, "target_widths", minimum_length=2)
    L = len(n) - 1
    construction = check_choice(construction, "construction", CONSTRUCTIONS)
    depth = L + 1 if construction == "l+1" else 2 * L
    dens = per_layer_densities(density, depth)
    delta = check_open_unit(delta, "delta")
    wb = check_positive_real(weight_bound, "weight_bound")
    P = weight_parts(wb)
    biases = bool(biases)
    a, b = float(box[0]), float(box[1])
    if not (math.isfinite(a) and math.isfinite(b) and a < b):
        raise ValueError(f"box={box!r} is out of range: allowed finite a < b")
    if (eps is None) == (instance_eps is None):
        raise ValueError("eps and instance_eps: allowed exactly one of them (network sup-error or per-instance tolerance)")
    bounds = input_bounds_l1(n, wb, (a, b))
    if instance_eps is not None:
        if isinstance(instance_eps, (int, float)) and not isinstance(instance_eps, bool):
            eps_fixed = (check_open_unit(instance_eps, "instance_eps"),) * L
        else:
            items = list(instance_eps)
            if len(items) != L:
                raise ValueError(f"instance_eps has {len(items)} entries: allowed one value or exactly {L} (one per target layer)")
            eps_fixed = tuple(check_open_unit(v, f"instance_eps[{i}]") for i, v in enumerate(items))
        split = "instance"
    else:
        eps = check_open_unit(eps, "eps")
        split = "forward"

    def amps_for(caps):
        out = [1.0]
        for t in range(2, L + 1):
            extra = 1 if (biases and construction == "l+1") else 0
            out.append(float((n[t - 1] + extra) * caps[t - 1]["weight"] * P))
        return out

    def fixed_point(dtype):
        # the instance count fixes δ', δ' fixes the caps and widths, the widths fix the count
        delta_i = delta / (4.0 * sum(n[t] * n[t - 1] for t in range(1, L + 1)))
        for _ in range(50):
            if split == "instance":
                eps_t = eps_fixed
            else:
                eps_list = [0.0] * L
                prod = 1.0
                for t in range(L, 0, -1):
                    eps_list[t - 1] = backward_layer_tolerance(eps, L, bounds[t - 1], prod)
                    if t > 1:
                        law = "product" if construction == "2l" else "uniform"
                        cap = _cap(eps_list[t - 1] / P, delta_i, law, dtype)
                        extra = 1 if (biases and construction == "l+1") else 0
                        prod *= (n[t - 1] + extra) * cap * P
                eps_t = tuple(eps_list)
            layout = _layout(construction, n, dens, eps_t, delta_i, P, biases, dtype)
            new_delta = delta / layout[4]
            if new_delta >= delta_i * (1 - 1e-12):
                return eps_t, delta_i, layout
            delta_i = new_delta
        raise ValueError("strong_widths did not converge: allowed smaller targets")  # pragma: no cover

    if source_dtype is None:  # float32 when its resolution costs at most half of every tolerance, else float64
        eps_t, delta_i, layout = fixed_point("float64")
        dtype = "float64"
        if min(eps_t) / P >= FLOAT32_MIN_TOLERANCE:
            try:
                eps32, delta32, layout32 = fixed_point("float32")
            except ValueError:
                eps32 = None
            if eps32 is not None and min(eps32) / P >= FLOAT32_MIN_TOLERANCE:
                eps_t, delta_i, layout, dtype = eps32, delta32, layout32, "float32"
    else:
        dtype = check_choice(source_dtype, "source_dtype", ("float32", "float64"))
        eps_t, delta_i, layout = fixed_point(dtype)
    groups, cand, caps, widths, count, ticket = layout
    blocks = _search_blocks(construction, eps_t, delta_i, P, dtype)
    amps = tuple(amps_for(caps))
    if split == "forward":
        check = forward_tolerance_split(eps, bounds, amps)
        eps_t = tuple(min(e, c) for e, c in zip(eps_t, check))
    for i, w in enumerate(widths):
        check_unit_count(w, f"source width n_S{i}")
    layer_params = [widths[l - 1] * widths[l] for l in range(1, len(widths))]
    return StrongWidths(
        construction=construction, target_widths=n, densities=dens, delta=delta,
        eps=None if split == "instance" else eps, tolerance_split=split, instance_eps=tuple(eps_t),
        instance_delta=delta_i, instances=int(count), weight_bound=wb, parts=P, biases=biases,
        candidates=cand, caps=caps, blocks=blocks, source_dtype=dtype, groups=groups, source_widths=widths, source_params=int(sum(layer_params)),
        expected_er_params=float(sum(p * m for p, m in zip(dens, layer_params))),
        expected_ticket_params=float(ticket), amplification_bounds=amps, input_bounds_l1=bounds)
