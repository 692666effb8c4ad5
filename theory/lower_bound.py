"""The 3-layer lower bound of docs/math.md §3 [ours], following Gadhikar et al. 2023.

Source: d inputs → n hidden units → output(s), masks M_1 ~ ER(p_1) (n×d) and M_2 ~ ER(p_2) (k×n). Input j can
influence the output only if it has a path through some hidden unit u with M_1[u, j] = 1 and M_2[·, u] ≠ 0.
With K ~ Bin(n, p_2) hidden units connected to a (single) output,

    P(all d inputs connected) = E_K[(1 − (1 − p_1)^K)^d]      ((1 − (1 − p_1)^n)^d when p_2 = 1),

so representing a target that depends on every input with probability ≥ 1 − δ needs, for p_2 = 1,

    n ≥ κ(p_1) · log(1 / (1 − (1 − δ)^{1/d})).

Also here: the exact error floor Σ_{j disconnected} w_j² Var(x_j) of an affine-on-the-box target (§3).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import special

from theory.er_factor import er_factor
from theory.validation import check_density, check_open_unit, check_positive_int

__all__ = [
    "connection_probability",
    "disconnection_probability",
    "lower_bound_width",
    "lower_bound_width_closed_form",
    "connected_inputs",
    "uniform_variance",
    "error_floor",
    "LowerBoundSummary",
    "lower_bound_summary",
]

# Up to this many binomial terms the sum over k is exact; beyond, a quadrature replaces it (see _binomial_window).
_MAX_TERMS = 1_000_000
_MAX_PANELS = 4_000


def _check_common(inputs, width, input_density, output_density):
    d = check_positive_int(inputs, "inputs")
    n = check_positive_int(width, "width", minimum=0)
    p1 = check_density(input_density, "input_density")
    p2 = check_density(output_density, "output_density")
    return d, n, p1, p2


def _log_one_minus_pow(log_q: float, k: np.ndarray) -> np.ndarray:
    """log(1 − q^k) for integer k ≥ 0 given log q (−inf allowed for q = 0); −inf at k = 0."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_qk = np.where(k == 0, 0.0, k * log_q)  # log q^k; avoids 0·(−inf)
        # log1mexp: log(−expm1(x)) near 0, log1p(−exp(x)) for x < −log 2 (each exact in its range)
        return np.where(log_qk > -math.log(2.0), np.log(-np.expm1(log_qk)), np.log1p(-np.exp(log_qk)))


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _stirlerr(x: np.ndarray) -> np.ndarray:
    """log(x!) − log(√(2πx)·(x/e)^x) for x ≥ 1 (Loader 2000): gammaln below 16, the asymptotic series above."""
    x = np.asarray(x, dtype=float)
    out = np.empty_like(x)
    small = x < 16
    xs = x[small]
    out[small] = special.gammaln(xs + 1.0) - (xs + 0.5) * np.log(xs) + xs - _HALF_LOG_2PI
    xl = x[~small]
    with np.errstate(over="ignore"):  # x beyond ~1e154: x² overflows to inf and the series is 0, as it should be
        inv2 = 1.0 / (xl * xl)
    out[~small] = (1.0 / 12 - inv2 * (1.0 / 360 - inv2 * (1.0 / 1260 - inv2 * (1.0 / 1680 - inv2 / 1188)))) / xl
    return out


def _bd0(x: np.ndarray, mean, offset: np.ndarray | None = None) -> np.ndarray:
    """x·log(x/mean) + mean − x without cancellation (Loader 2000): a series in v = (x−mean)/(x+mean) near
    x = mean. ``offset`` = x − mean, if known more precisely than the float difference (huge n)."""
    x = np.asarray(x, dtype=float)
    mean = np.broadcast_to(np.asarray(mean, dtype=float), x.shape)
    t = x - mean if offset is None else np.asarray(offset, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = x * np.log(x / mean) + mean - x
    near = np.abs(t) < 0.1 * (x + mean)
    if near.any():
        xn, mn, tn = x[near], mean[near], t[near]
        v = tn / (xn + mn)
        s = tn * v
        ej = 2.0 * xn * v
        v2 = v * v
        for j in range(1, 40):  # |v| < 0.1: at most 40 terms reach far below double precision
            ej = ej * v2
            term = ej / (2 * j + 1)
            s = s + term
            if np.all(np.abs(term) <= 1e-17 * np.abs(s)):
                break
        out[near] = s
    return out


def _binom_logpmf(k: np.ndarray, n: int, p: float, offset: np.ndarray | None = None) -> np.ndarray:
    """log P(K = k), K ~ Bin(n, p), 0 < p < 1, by Loader's saddle-point formula (accurate for any n, unlike
    scipy.stats.binom.logpmf, which loses ~1e−9 relative at n = 1e6 and ~1e−3 at n = 1e12). Real k are allowed
    (the Γ-function extension). ``offset`` = k − n·p, when the float k cannot resolve it (n beyond 2^53)."""
    k = np.asarray(k, dtype=float)
    nf = float(n)
    q = 1.0 - p
    t = k - nf * p if offset is None else np.asarray(offset, dtype=float)
    out = np.empty_like(k)
    lo, hi = k == 0, k == nf
    out[lo] = nf * math.log1p(-p)
    out[hi] = nf * math.log(p)
    mid = ~(lo | hi)
    km, tm = k[mid], t[mid]
    nk = nf * q - tm
    out[mid] = (
        _stirlerr(np.array([nf]))[0] - _stirlerr(km) - _stirlerr(nk)
        - _bd0(km, nf * p, tm) - _bd0(nk, nf * q, -tm)
        - _HALF_LOG_2PI - 0.5 * (np.log(km) + np.log(nk) - math.log(nf))
    )
    return out


def _binomial_window(n: int, p2: float, scale: float):
    """Nodes k and log-weights covering K ~ Bin(n, p2) up to mass ~1e−300, so that Σ exp(logw)·g(k) ≈ E g(K)
    for functions g that vary on a k-scale of at least ``scale`` (here κ(p_1); f(k) = (1 − (1 − p_1)^k)^d).

    The window is mean ± (40σ + 800) (Bernstein's inequality puts less than e^{−700} outside it). Up to
    _MAX_TERMS integers it is summed exactly (weights = log pmf). Beyond (σ > ~12 000), the sum over integers is
    replaced by the integral of the (real-argument, Loader) pmf — the Euler–Maclaurin error is negligible for a
    summand that is smooth on the unit scale — computed by composite 16-point Gauss–Legendre on panels of width
    min(σ, scale)/4 (at most _MAX_PANELS panels).
    """
    if p2 == 1.0:
        return np.array([float(n)]), np.array([0.0])
    mean = n * p2
    sd = math.sqrt(n * p2 * (1.0 - p2))
    half = 40.0 * sd + 800.0
    if 2 * half + 1 <= _MAX_TERMS:
        lo = max(0, int(math.floor(mean - half)))
        hi = min(n, int(math.ceil(mean + half)))
        k = np.arange(lo, hi + 1, dtype=float)
        return k, _binom_logpmf(k, n, p2)
    # work in offsets t = k − n·p2 (a float k cannot resolve ±40σ around a mean beyond 2^53)
    t_lo = max(0.5 - mean, -half)  # K = 0 lies more than 40σ + 800 below the mean here
    t_hi = min(n * (1.0 - p2) - 0.5, half)
    panel = max(min(sd, scale) / 4.0, (t_hi - t_lo) / _MAX_PANELS)
    count = int(math.ceil((t_hi - t_lo) / panel))
    edges = np.linspace(t_lo, t_hi, count + 1)
    x, w = np.polynomial.legendre.leggauss(16)
    half_width = (edges[1:] - edges[:-1])[:, None] / 2.0
    offsets = ((edges[1:] + edges[:-1])[:, None] / 2.0 + half_width * x[None, :]).ravel()
    weights = (half_width * w[None, :]).ravel()
    nodes = mean + offsets
    return nodes, _binom_logpmf(nodes, n, p2, offsets) + np.log(weights)


def _log_connection_and_failure(d: int, n: int, p1: float, p2: float) -> tuple[float, float]:
    """(log P(all connected), P(some input disconnected)), each computed without cancellation."""
    log_q = math.log1p(-p1) if p1 < 1.0 else -math.inf
    k, log_w = _binomial_window(n, p2, er_factor(p1) if p1 < 1.0 else math.inf)
    log_f1 = _log_one_minus_pow(log_q, k)  # log(1 − q^k): −inf at k = 0
    log_f = d * log_f1                      # log P(all connected | K = k)
    with np.errstate(divide="ignore", invalid="ignore"):
        fail_given_k = -np.expm1(log_f)     # P(some disconnected | K = k), accurate when tiny
    log_conn = float(special.logsumexp(log_w + log_f)) if np.isfinite(log_f).any() else -math.inf
    failure = float(np.sum(np.exp(log_w) * fail_given_k))
    return log_conn, min(1.0, max(0.0, failure))


def connection_probability(inputs, width, input_density, output_density=1.0) -> float:
    """P(all d inputs connected) = E_K[(1 − (1 − p_1)^K)^d], K ~ Bin(n, p_2) (docs/math.md §3).

    ``inputs`` = d, ``width`` = n hidden units, ``input_density`` = p_1 (density of M_1),
    ``output_density`` = p_2 (density of M_2). Summed over k in log space (log1p/expm1), so it is accurate
    both when the probability is close to 0 and (through :func:`disconnection_probability`) close to 1;
    the binomial tails beyond mean ± (40σ + 800) are dropped (absolute error below 1e−300). The binomial pmf
    is Loader's saddle-point formula; windows of more than 1e6 integers (σ ≳ 12 000) are integrated by
    Gauss–Legendre quadrature instead of summed (agreement with the exact sum ~1e−15 in the tests).
    """
    d, n, p1, p2 = _check_common(inputs, width, input_density, output_density)
    log_conn, failure = _log_connection_and_failure(d, n, p1, p2)
    if failure < 0.5:
        return 1.0 - failure
    return math.exp(log_conn)


def disconnection_probability(inputs, width, input_density, output_density=1.0) -> float:
    """1 − connection_probability, computed directly: E_K[1 − (1 − (1 − p_1)^K)^d] (docs/math.md §3).

    Accurate with full relative precision when it is tiny (e.g. 1e−30), where 1 − connection_probability
    would round to 0.
    """
    d, n, p1, p2 = _check_common(inputs, width, input_density, output_density)
    log_conn, failure = _log_connection_and_failure(d, n, p1, p2)
    if failure < 0.5:
        return failure
    return -math.expm1(log_conn)


def lower_bound_width_closed_form(inputs, input_density, delta) -> float:
    """n* = κ(p_1) · log(1 / (1 − (1 − δ)^{1/d})) (docs/math.md §3, p_2 = 1): real-valued width at which
    (1 − (1 − p_1)^n)^d = 1 − δ. 1 − (1 − δ)^{1/d} is computed as −expm1(log1p(−δ)/d)."""
    d = check_positive_int(inputs, "inputs")
    p1 = check_density(input_density, "input_density")
    dl = check_open_unit(delta, "delta")
    per_input = -math.expm1(math.log1p(-dl) / d)  # 1 − (1 − δ)^{1/d}
    if p1 == 1.0:
        return 0.0
    return er_factor(p1) * -math.log(per_input)


def lower_bound_width(inputs, input_density, delta, output_density=1.0) -> int:
    """Smallest integer width n with connection_probability(d, n, p_1, p_2) ≥ 1 − δ (docs/math.md §3).

    The connection probability is non-decreasing in n, so the answer is found by bisection on integers
    (tested as: n satisfies the bound, n − 1 does not; for widths above 2^53 the answer is minimal only up to
    relative 2^−52, the resolution of the float arithmetic). The comparison is made as
    disconnection_probability ≤ δ, so it is exact for tiny δ. The initial bracket uses
    (1 − (1 − p_1p_2)^n)^d ≤ P(all connected) ≤ 1 − (1 − p_1p_2)^n (Harris inequality / one input),
    and is then checked and widened if floating point disagrees.
    """
    d = check_positive_int(inputs, "inputs")
    p1 = check_density(input_density, "input_density")
    dl = check_open_unit(delta, "delta")
    p2 = check_density(output_density, "output_density")

    def ok(n: int) -> bool:
        return _log_connection_and_failure(d, n, p1, p2)[1] <= dl

    p12 = p1 * p2
    if p12 == 1.0:
        return 1
    if p12 < 1e-300:
        raise ValueError(f"input_density*output_density={p12!r} is too small: allowed a product >= 1e-300")
    kappa = er_factor(p12)
    lo = max(0, int(math.floor(kappa * -math.log(dl))) - 1)
    hi = max(lo + 1, int(math.ceil(kappa * -math.log(-math.expm1(math.log1p(-dl) / d)))) + 1)
    while lo > 0 and ok(lo):
        lo //= 2
    while not ok(hi):
        lo, hi = hi, 2 * hi
    # invariant: not ok(lo) (or lo == 0), ok(hi); beyond 2^53 stop at float resolution of the width
    while hi - lo > max(1, hi >> 52):
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def connected_inputs(input_mask, output_mask) -> np.ndarray:
    """Boolean vector over the d inputs: j is connected iff some hidden u has M_1[u, j] and M_2[o, u] for some
    output o (docs/math.md §3). ``input_mask`` = M_1 (n×d), ``output_mask`` = M_2 (k×n; a length-n vector is read
    as 1×n). Entries must be booleans or 0/1."""
    m1 = _as_mask(input_mask, "input_mask")
    m2 = _as_mask(output_mask, "output_mask")
    if m2.ndim == 1:
        m2 = m2[None, :]
    if m1.ndim != 2 or m2.ndim != 2:
        raise ValueError(f"input_mask/output_mask have shapes {m1.shape}/{m2.shape}: allowed (n, d) and (k, n)")
    if m2.shape[1] != m1.shape[0]:
        raise ValueError(
            f"output_mask has {m2.shape[1]} columns but input_mask has {m1.shape[0]} rows: allowed shapes (n, d) and (k, n)"
        )
    hidden_used = m2.any(axis=0)  # hidden units with an edge to some output
    return m1[hidden_used].any(axis=0)


def _as_mask(mask, name: str) -> np.ndarray:
    try:
        arr = np.asarray(mask)
    except Exception:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name} is not an array: allowed a boolean or 0/1 array") from None
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "iuf" or not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} has dtype {arr.dtype} or entries outside {{0, 1}}: allowed a boolean or 0/1 array")
    return arr.astype(bool)


def uniform_variance(low, high) -> float:
    """Var(x) = (high − low)² / 12 for x ~ U[low, high] (the inputs of docs/math.md §3 live in a box [a, b])."""
    lo = float(low) if _finite(low) else None
    hi = float(high) if _finite(high) else None
    if lo is None or hi is None or not hi > lo:
        raise ValueError(f"low={low!r}, high={high!r}: allowed finite numbers with low < high")
    return (hi - lo) ** 2 / 12.0


def _finite(x) -> bool:
    try:
        return not isinstance(x, (bool, str)) and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def error_floor(teacher_weight, connected, input_variance) -> float:
    """Σ_{j not connected} w_j² Var(x_j) (docs/math.md §3 "Error floor"): the least mean-squared error any function of
    the connected inputs reaches for an affine-on-the-box target with independent inputs.

    ``teacher_weight`` = w (length d), ``connected`` = boolean vector of length d (see
    :func:`connected_inputs`), ``input_variance`` = Var(x_j): a number or a length-d array, all ≥ 0.
    """
    try:
        w = np.asarray(teacher_weight, dtype=float)
        var = np.asarray(input_variance, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("teacher_weight/input_variance are not numeric arrays: allowed finite numbers") from None
    c = _as_mask(connected, "connected")
    if w.ndim != 1 or c.shape != w.shape:
        raise ValueError(f"teacher_weight has shape {w.shape} and connected {c.shape}: allowed two vectors of equal length d")
    if not np.isfinite(w).all():
        raise ValueError("teacher_weight contains a non-finite value: allowed finite numbers")
    if var.ndim not in (0, 1) or (var.ndim == 1 and var.shape != w.shape):
        raise ValueError(f"input_variance has shape {var.shape}: allowed a number or a vector of length {w.shape[0]}")
    if not np.isfinite(var).all() or (var < 0).any():
        raise ValueError("input_variance contains a negative or non-finite value: allowed finite numbers >= 0")
    var = np.broadcast_to(var, w.shape)
    return float(np.sum(np.where(c, 0.0, w * w * var)))


@dataclass(frozen=True)
class LowerBoundSummary:
    """The 3-layer lower bound at one setting (docs/math.md §3): ``width`` = smallest n with
    P(all inputs connected) ≥ 1 − δ, the probability there and at n − 1, κ(p_1) and the closed form
    κ(p_1)·log(1/(1 − (1 − δ)^{1/d})) (which assumes output_density = 1)."""

    inputs: int
    input_density: float
    output_density: float
    delta: float
    width: int
    connection_probability_at_width: float
    connection_probability_below_width: float
    er_factor: float
    closed_form_width: float

    def to_dict(self) -> dict:
        return asdict(self)


def lower_bound_summary(inputs, input_density, delta, output_density=1.0) -> LowerBoundSummary:
    """Collect :func:`lower_bound_width` and the quantities around it into one record (docs/math.md §3)."""
    n = lower_bound_width(inputs, input_density, delta, output_density)
    return LowerBoundSummary(
        inputs=int(inputs),
        input_density=float(input_density),
        output_density=float(output_density),
        delta=float(delta),
        width=n,
        connection_probability_at_width=connection_probability(inputs, n, input_density, output_density),
        connection_probability_below_width=connection_probability(inputs, n - 1, input_density, output_density),
        er_factor=er_factor(input_density),
        closed_form_width=lower_bound_width_closed_form(inputs, input_density, delta),
    )
