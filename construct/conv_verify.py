"""Verify a 2L conv ticket file trusting nothing in it (docs/math.md §6, §9). Pure numpy.

1. Reload it (:func:`construct.conv_io.load_conv_ticket`: keys, dtypes, shapes, index ranges, order, finite values;
   a malformed file is a one-line ValueError).
2. Regenerate the source from the stored (seed, dtype, densities, layer shapes) and check, layer by layer:
   - every kept A_ℓ unit is dedicated (index < fan_in·k, checked on loading), usable (its one kept entry
     (u, u // k) has mask 1) and its stored a_u equals the regenerated weight bit for bit (in float64);
   - every kept bias-group unit's stored β_u equals the regenerated bias and β_u > 0 (a unit with β_u ≤ 0 outputs 0);
   - every kept B_ℓ entry (i, u) has mask 1 and its stored v equals the regenerated weight (only the B_ℓ blocks
     that hold kept entries are drawn: :meth:`construct.source.SourceLayer.gather`).
3. Recompute the certificate and the grouped bound (:func:`construct.conv_ticket.conv_certificate`, from the arrays
   and the target alone) and the sampled error (:func:`construct.conv_ticket.conv_sampled_error`): the recomputed
   certificate finite, the stored one present, finite and equal to it (relative 1e−9); a stored grouped bound equal
   to the recomputed one; the grouped bound (what ``eps`` promises, :mod:`construct.conv_strong`) ≤ ``eps`` where
   ``eps`` is claimed; the sampled error ≤ the grouped bound (+ 1e−9·(1 + bound) of rounding); meta densities equal
   to the source's.

VALID iff every check holds; otherwise INVALID with one reason per failed check.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from construct.conv_io import load_conv_ticket

__all__ = ["ConvVerifyResult", "verify_conv_ticket", "compare_conv_source"]

_GATHER = 1 << 24  # B entries gathered per call


@dataclass(frozen=True)
class ConvVerifyResult:
    """Verdict on a 2L conv ticket file: ``valid`` iff ``reasons`` is empty."""

    path: str
    construction: str
    kept_params: int
    units_checked: int
    b_entries_checked: int
    submask: bool                 # every kept entry has mask 1 in the regenerated ER masks
    source_matches: bool          # every kept weight / bias equals the regenerated one
    certificate: float
    stored_certificate: float | None
    certificate_matches: bool
    sampled_error: float
    samples: int
    sampled_within_certificate: bool
    eps: float | None
    certificate_within_eps: bool | None   # the grouped bound ≤ eps (the promise of eps)
    reasons: tuple
    valid: bool
    grouped_certificate: float = float("nan")

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["reasons"] = list(self.reasons)
        return d


def _same(stored: np.ndarray, regenerated: np.ndarray) -> np.ndarray:
    """Bit-for-bit equality in float64 (the file stores float64; float32 sources are exact in float64)."""
    return np.asarray(stored, dtype=np.float64) == np.asarray(regenerated, dtype=np.float64)


def compare_conv_source(ticket) -> tuple[list, bool, bool, int, int]:
    """Compare the ticket's kept weights with its regenerated source (module docstring, step 2). Returns (reasons,
    submask, source_matches, units checked, B entries checked)."""
    reasons, submask, matches = [], True, True
    n_units = n_entries = 0
    seed = ticket.source.seed
    for sel, (A, B) in zip(ticket.layers, ticket.source.pairs):
        name = sel.name
        a_all, usable = A.diagonal()
        bad_mask = int(np.count_nonzero(~usable[sel.units]))
        bad_a = int(np.count_nonzero(~_same(sel.a, a_all[sel.units])))
        n_units += sel.units.size
        if bad_mask:
            submask = False
            reasons.append(f"layer {name!r}: {bad_mask} kept A units have mask 0 in the ER mask regenerated from "
                           f"seed {seed}")
        if bad_a:
            matches = False
            reasons.append(f"layer {name!r}: {bad_a} stored a_u differ from the weights regenerated from seed {seed}")
        if sel.bias_units.size:
            bad_beta = int(np.count_nonzero(~_same(sel.beta, A.bias[sel.bias_units])))
            if bad_beta:
                matches = False
                reasons.append(f"layer {name!r}: {bad_beta} stored beta differ from the biases regenerated from seed {seed}")
            nonpos = int(np.count_nonzero(sel.beta <= 0))
            if nonpos:
                reasons.append(f"layer {name!r}: {nonpos} kept bias units have beta <= 0: allowed beta > 0")
        bad_m = bad_v = 0
        for s in range(0, sel.v.size, _GATHER):
            w, m = B.gather(sel.rows[s:s + _GATHER], sel.cols[s:s + _GATHER])
            bad_m += int(np.count_nonzero(~m))
            bad_v += int(np.count_nonzero(~_same(sel.v[s:s + _GATHER], w)))
        n_entries += sel.v.size
        if bad_m:
            submask = False
            reasons.append(f"layer {name!r}: {bad_m} kept B entries have mask 0 in the ER mask regenerated from seed {seed}")
        if bad_v:
            matches = False
            reasons.append(f"layer {name!r}: {bad_v} stored B weights v differ from the weights regenerated from seed {seed}")
    return reasons, submask, matches, n_units, n_entries


def verify_conv_ticket(path, samples: int = 256, *, seed: int = 0) -> ConvVerifyResult:
    """Reload ``path`` and check every claim it makes (module docstring). A malformed file raises a one-line
    ValueError; a well-formed file whose claims do not hold gives ``valid`` False with the reasons."""
    from construct.conv_ticket import conv_certificate, conv_sampled_error, effective_weights

    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"samples={samples!r}: allowed a positive integer")
    ticket = load_conv_ticket(path)
    meta = ticket.meta
    reasons, submask, matches, n_units, n_entries = compare_conv_source(ticket)
    if meta.get("densities") is not None and [float(d) for d in meta["densities"]] != list(ticket.source.densities):
        reasons.append("meta densities differ from the source densities")
    eff = [effective_weights(s, w) for s, w in zip(ticket.layers, ticket.target.weighted)]
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite result is reported below, not warned about
        full = conv_certificate(ticket, eff)
        cert, grouped = full.certificate, full.grouped_certificate
        err = conv_sampled_error(ticket, samples=int(samples), seed=seed, effective=eff).sampled_error
    if not math.isfinite(cert):
        reasons.append(f"the recomputed certificate is {cert}: allowed a finite number")
    from construct.verify import check_stored_certificate

    stored = meta.get("certificate")
    cert_ok = check_stored_certificate(meta, cert, reasons)
    stored_grouped = meta.get("grouped_certificate")
    if stored_grouped is not None and not (math.isfinite(float(stored_grouped)) and
                                           abs(float(stored_grouped) - grouped) <= 1e-9 * max(1.0, abs(grouped))):
        reasons.append(f"meta grouped_certificate={stored_grouped!r} differs from the recomputed {grouped!r}")
    within = bool(err <= grouped + 1e-9 * (1.0 + grouped))
    if not within:
        reasons.append(f"sampled error {err:.6g} exceeds the grouped bound {grouped:.6g}")
    eps = meta.get("eps")
    cert_eps = None
    if eps is not None:
        if not (math.isfinite(float(eps)) and float(eps) > 0):
            reasons.append(f"meta eps={eps!r}: allowed a positive finite number or null")
        else:
            cert_eps = bool(grouped <= float(eps))
            if not cert_eps:
                reasons.append(f"the grouped bound {grouped:.6g} exceeds the claimed eps {float(eps):.6g}")
    return ConvVerifyResult(str(path), str(meta.get("construction")), ticket.kept_params, int(n_units), int(n_entries),
                            bool(submask), bool(matches), float(cert), None if stored is None else float(stored),
                            bool(cert_ok), float(err), int(samples), within, None if eps is None else float(eps),
                            cert_eps, tuple(reasons), not reasons, float(grouped))
