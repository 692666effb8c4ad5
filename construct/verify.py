"""Verify a ticket file trusting nothing in it (docs/math.md §6).

1. Reload it (keys, dtypes, shapes, ticket ⊆ stored mask, roles, and the JSON types of the meta entries read here;
   a malformed file is a one-line ValueError, exit 2 in the CLI).
2. Every stored claim must be present, well typed and re-derived; anything else makes the ticket INVALID with the
   reason (exit 1):
   - ``kind`` (weak/strong, matching the arrays), ``construction``, ``weight_law`` ∈ {uniform, normal},
     ``source_densities`` in (0, 1] (one per source layer), ``source_seed`` a non-negative integer,
     ``box`` two finite numbers a < b;
   - the source: regenerated from seed, widths (the arrays' shapes), densities and weight law — sources are drawn
     block by block, bit-identically (:mod:`construct.source`) — and compared bit for bit with the stored weights,
     biases and ER masks on every block that holds a kept edge or a kept bias (all blocks with ``all_blocks``), so
     the ticket is a sub-mask of the *seeded* ER mask and uses the seeded weights;
   - the certificate: stored, finite, equal to the recomputed one (relative 1e−9), the recomputed one finite, and
     ≤ ``eps`` where ``eps`` is claimed (a positive finite number);
   - the sampled and box-corner error ≤ the certificate (+ 1e−9·(1 + certificate) of rounding).
3. Optionally (``bounds``) the error interval [attacked error, best certified bound] (:mod:`construct.error_interval`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from construct.certificate import certify, sampled_error
from construct.source import WEIGHT_LAWS, SourceLayer
from construct.ticket import Ticket, effective_layers, load_ticket

__all__ = ["VerifyResult", "verify_ticket", "check_claims", "compare_source"]

CONSTRUCTIONS = ("weak", "l+1", "2l")


@dataclass(frozen=True)
class VerifyResult:
    """Verdict on a ticket file: ``valid`` iff ``reasons`` is empty (every stored claim re-derived)."""

    path: str
    kind: str
    construction: str
    submask: bool               # ticket ⊆ the regenerated (seeded) ER mask on the compared blocks
    source_matches: bool        # stored weights, biases, masks = regenerated ones on the compared blocks
    blocks_compared: int
    blocks_total: int
    certificate: float
    stored_certificate: float | None
    certificate_matches: bool
    sampled_error: float
    corner_error: float | None
    sampled_within_certificate: bool
    eps: float | None
    certificate_within_eps: bool | None
    kept_params: int
    reasons: tuple
    interval: dict | None
    valid: bool

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["reasons"] = list(self.reasons)
        return d


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def check_claims(ticket: Ticket) -> list[str]:
    """Reasons why the meta claims (other than the source and the certificate) are not acceptable; [] if none."""
    meta = ticket.meta
    reasons = []
    depth = len(ticket.kept)
    kind = meta.get("kind")
    if kind not in ("weak", "strong"):
        reasons.append(f"meta kind={kind!r}: allowed 'weak' or 'strong'")
    construction = meta.get("construction")
    if construction not in CONSTRUCTIONS:
        reasons.append(f"meta construction={construction!r}: allowed one of {', '.join(CONSTRUCTIONS)}")
    elif (construction == "weak") != ticket.is_weak:
        reasons.append(f"meta construction={construction!r} does not match the arrays "
                       f"({'with' if ticket.is_weak else 'without'} ticket_W)")
    law = meta.get("weight_law")
    if law not in WEIGHT_LAWS:
        reasons.append(f"meta weight_law={law!r}: allowed one of {', '.join(WEIGHT_LAWS)}")
    dens = meta.get("source_densities")
    if dens is None:
        reasons.append("meta source_densities is missing: allowed one density in (0, 1] per source layer")
    else:
        vals = [dens] * depth if not isinstance(dens, list) else dens
        bad = [v for v in vals if not (_finite_number(v) and 0.0 < float(v) <= 1.0)]
        if bad:
            reasons.append(f"meta source_densities contains {bad[0]!r}: allowed densities in (0, 1]")
    claimed = meta.get("densities")
    if isinstance(claimed, list) and isinstance(dens, list) and claimed != dens:
        reasons.append("meta densities and source_densities differ")
    seed = meta.get("source_seed")
    if seed is None:
        reasons.append("meta source_seed is missing: allowed a non-negative integer")
    elif seed < 0:
        reasons.append(f"meta source_seed={seed}: allowed a non-negative integer")
    box = meta.get("box")
    if box is None:
        reasons.append("meta box is missing: allowed two finite numbers a < b")
    elif len(box) != 2 or not all(_finite_number(v) for v in box) or not float(box[0]) < float(box[1]):
        reasons.append(f"meta box={box!r}: allowed two finite numbers a < b")
    return reasons


def check_stored_certificate(meta: dict, cert: float, reasons: list) -> bool:
    """Whether meta's certificate is present, finite and equal to the recomputed ``cert`` (relative 1e−9); appends
    the reason to ``reasons`` when it is not (shared by the MLP and the conv ticket verdicts)."""
    stored = meta.get("certificate")
    if stored is None:
        reasons.append(f"meta certificate is {'null' if 'certificate' in meta else 'missing'}: a ticket must "
                       "store its certificate")
        return False
    if not math.isfinite(float(stored)):
        reasons.append(f"meta certificate={stored}: allowed a finite number")
        return False
    matches = math.isfinite(cert) and abs(float(stored) - cert) <= 1e-9 * max(1.0, abs(cert))
    if not matches:
        reasons.append(f"meta certificate={stored!r} differs from the recomputed {cert!r}")
    return bool(matches)


def _used_blocks(kept: np.ndarray, bias_kept: np.ndarray, rows_per_block: int) -> np.ndarray:
    rows = np.nonzero(kept.any(axis=1) | bias_kept)[0]
    return np.unique(rows // rows_per_block)


def compare_source(ticket: Ticket, all_blocks: bool = False):
    """Regenerate the seeded source (seed, widths, densities, weight law from the file) and compare it with the
    stored arrays on the blocks the ticket uses (or all). Returns (reasons, submask, blocks compared, blocks)."""
    meta = ticket.meta
    seed, law = int(meta["source_seed"]), meta["weight_law"]
    dens = meta["source_densities"]
    dens = [dens] * len(ticket.kept) if not isinstance(dens, list) else dens
    reasons = []
    submask = True
    compared = total = 0
    for t, layer in enumerate(ticket.source.layers, start=1):
        n_out, n_in = layer.shape
        # drawn in the stored arrays' dtype (float32, or float64 refined from the same float32 draw: construct.source)
        claimed_dtype = meta.get("source_dtype")
        if claimed_dtype is not None and claimed_dtype != layer.dtype:
            reasons.append(f"meta source_dtype={claimed_dtype!r} but source_W{t} is {layer.dtype}")
        if layer.dtype == "float64" and law != "uniform":
            reasons.append(f"source_W{t} is float64 but weight_law={law!r}: float64 sources are uniform only")
            return reasons, False, compared, total
        regen = SourceLayer(n_out, n_in, float(dens[t - 1]), law, seed=seed, index=t, dtype=layer.dtype)
        total += regen.n_blocks
        blocks = np.arange(regen.n_blocks) if all_blocks else _used_blocks(ticket.kept[t - 1], ticket.bias_kept[t - 1],
                                                                           regen.rows_per_block)
        stored_w, stored_m, stored_b = layer.weights, layer.mask, layer.bias
        bad_w = bad_m = 0
        outside = 0
        for blk in blocks:
            r0 = int(blk) * regen.rows_per_block
            r1 = min(n_out, r0 + regen.rows_per_block)
            w, m = regen.block(blk)
            bad_w += int(np.count_nonzero(stored_w[r0:r1].astype(np.float64) != w.astype(np.float64)))
            bad_m += int(np.count_nonzero(stored_m[r0:r1] != m))
            outside += int(np.count_nonzero(ticket.kept[t - 1][r0:r1] & ~m))
        compared += blocks.size
        bad_b = int(np.count_nonzero(np.asarray(stored_b, np.float64) != regen.bias.astype(np.float64)))
        if outside:
            submask = False
            reasons.append(f"ticket_S{t} keeps {outside} edges outside the ER mask regenerated from source_seed {seed}")
        if bad_m:
            reasons.append(f"source_M{t} differs from the ER mask regenerated from source_seed {seed} in {bad_m} entries")
        if bad_w:
            reasons.append(f"source_W{t} differs from the weights regenerated from source_seed {seed} in {bad_w} entries")
        if bad_b:
            reasons.append(f"source_b{t} differs from the biases regenerated from source_seed {seed} in {bad_b} entries")
    return reasons, submask, compared, total


def verify_ticket(path, *, samples: int = 2048, seed: int = 0, all_blocks: bool = False, bounds: bool = False,
                  bound_seconds: float = 10.0) -> VerifyResult:
    """Reload ``path`` and check every claim it makes (module docstring). A malformed file raises a one-line
    ValueError; a well-formed file whose claims do not hold gives ``valid`` False with the reasons."""
    ticket = load_ticket(path)
    reasons = check_claims(ticket)
    names = ("source_seed", "source_densities", "weight_law")
    if any(r.startswith(f"meta {n}") for r in reasons for n in names):
        reasons.append("the source cannot be regenerated from the stored seed, densities and weight law")
        submask, source_ok, compared, total = False, False, 0, sum(l.n_blocks for l in ticket.source.layers)
    else:
        src_reasons, submask, compared, total = compare_source(ticket, all_blocks)
        reasons += src_reasons
        source_ok = not src_reasons
    box_ok = not any(r.startswith("meta box") for r in reasons)
    box = tuple(float(v) for v in ticket.meta["box"]) if box_ok else (-1.0, 1.0)
    layers = effective_layers(ticket)
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite result is reported below, not warned about
        cert = certify(ticket, box, layers).certificate
        err = sampled_error(ticket, box, samples=samples, seed=seed, layers=layers)
    if not box_ok:
        reasons.append("the certificate cannot be re-derived without a valid box (computed on [-1, 1] for display)")
    if not math.isfinite(cert):
        reasons.append(f"the recomputed certificate is {cert}: allowed a finite number")
    stored = ticket.meta.get("certificate")
    matches = check_stored_certificate(ticket.meta, cert, reasons)
    worst = max(err.sampled_error, err.corner_error or 0.0)
    within = bool(worst <= cert + 1e-9 * (1.0 + cert))
    if not within:
        reasons.append(f"sampled error {worst:.6g} exceeds the certificate {cert:.6g}")
    eps = ticket.meta.get("eps")
    cert_eps = None
    if eps is not None:
        if not (math.isfinite(float(eps)) and float(eps) > 0):
            reasons.append(f"meta eps={eps!r}: allowed a positive finite number or null")
        else:
            cert_eps = bool(cert <= float(eps))
            if not cert_eps:
                reasons.append(f"the certificate {cert:.6g} exceeds the claimed eps {float(eps):.6g}")
    interval = None
    if bounds and box_ok and math.isfinite(cert):
        from construct.error_interval import error_interval

        interval = error_interval(ticket, box, cert, seed=seed, seconds=bound_seconds, layers=layers).to_dict()
    kind = "weak" if ticket.is_weak else "strong"
    return VerifyResult(str(path), kind, str(ticket.meta.get("construction", "?")), bool(submask), bool(source_ok),
                        int(compared), int(total), cert, None if stored is None else float(stored), bool(matches),
                        err.sampled_error, err.corner_error, within, None if eps is None else float(eps), cert_eps,
                        ticket.kept_params, tuple(reasons), interval, not reasons)
