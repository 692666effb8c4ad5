"""``python -m construct check``: the constructive approximation checks (docs/math.md §4–§6).

For every case (construction, target, density) the ticket is built at the widths ``theory`` gives, over several
seeds, and three claims are tested:
1. success rate over seeds ≥ 1 − δ: rejected iff scipy.stats.binomtest(successes, seeds, 1 − δ,
   alternative="less") has p-value < 1e−3;
2. certificate ≤ ε for every successful strong ticket built with ``eps`` (weak tickets: certificate ≤ 1e−9, exact);
3. sampled and box-corner error ≤ certificate (+ 1e−9·(1 + certificate) of floating-point rounding) for every ticket;
4. every upper bound of the error interval (:mod:`construct.error_interval`) ≥ the attacked error, for every ticket.
Cases whose source would not fit the memory guard are listed as infeasible with their size (not counted as claims).
Convolutional rows (digits CNN and two-block ResNet, docs/math.md §9; :func:`run_conv_case`) make the same claims on
the grouped bound, which is what their ``eps`` promises, plus: the ticket's digits test accuracy equals the target's.
The digits-CNN L+1 rows (:func:`run_conv_lplus1_case`) make them on the §6 certificate; with ``eps`` theory refuses
them (listed as infeasible with the tolerance it would need), with a per-instance ``weight_eps`` the certificate ≤ ε
claim does not apply.
The certificate column is the largest certificate of the *successful* seeds (the ones claim 2 is about); seeds that
failed are named in the note with their certificate (no claim is made about them). Every row also reports the
error interval [attacked error, best certified bound] (largest over seeds) and the largest ratio of the two.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from scipy.stats import binomtest
from tqdm import tqdm

__all__ = ["CheckCase", "CaseResult", "CheckResult", "cases_for", "run_case", "run_check", "format_table"]

ALPHA = 1e-3


@dataclass(frozen=True)
class CheckCase:
    construction: str  # "weak", "l+1", "2l"
    target: str
    density: float
    delta: float = 0.1
    eps: float | None = 0.01
    weight_eps: float | None = None
    seeds: int = 5
    target_density: float = 1.0


@dataclass(frozen=True)
class CaseResult:
    case: CheckCase
    feasible: bool
    note: str
    successes: int
    runs: int
    width_factor: float
    source_params: int
    kept_params: int
    certificate: float          # largest certificate over the successful seeds (0 when none succeeded)
    sampled_error: float
    success_claim: bool
    certificate_claim: bool
    sampled_claim: bool
    seconds: float
    failed_certificate: float | None = None  # largest certificate over the failed seeds (None: no seed failed)
    attacked_error: float = 0.0              # largest attacked error over all seeds
    best_bound: float = 0.0                  # largest best certified bound over all seeds
    bound_ratio: float = 0.0                 # largest best bound / attacked error over all seeds
    bound_methods: tuple = ()                # which bound was the best, per seed
    interval_claim: bool = True              # every bound ≥ the attacked error, every seed
    accuracy_claim: bool = True              # conv digits rows: ticket test accuracy = target's, successful seeds

    @property
    def passed(self) -> bool:
        return (not self.feasible) or (self.success_claim and self.certificate_claim and self.sampled_claim
                                       and self.interval_claim and self.accuracy_claim)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["case"] = dict(self.case.__dict__)
        d["passed"] = self.passed
        return d


@dataclass(frozen=True)
class CheckResult:
    budget: str
    results: tuple
    seconds: float

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def to_dict(self) -> dict:
        return {"budget": self.budget, "passed": self.passed, "seconds": self.seconds,
                "results": [r.to_dict() for r in self.results]}


def cases_for(budget: str) -> list[CheckCase]:
    """The battery: random, sparse random and digits-trained targets; densities 1 … 0.05; weak, L+1 and 2L."""
    seeds = 5 if budget == "fast" else 20
    cases = []
    for p in (1.0, 0.5, 0.2, 0.05):
        cases.append(CheckCase("weak", "random:4,6,3", p, seeds=seeds))
    cases.append(CheckCase("weak", "random:6,6,4", 0.1, seeds=seeds, target_density=0.5))
    cases.append(CheckCase("weak", "digits", 0.2, seeds=2 if budget == "fast" else 5))
    for p in ((1.0, 0.5) if budget == "fast" else (1.0, 0.5, 0.3)):
        cases.append(CheckCase("l+1", "random:2,2,1", p, seeds=seeds))
    for p in ((1.0, 0.5, 0.2, 0.05) if budget == "fast" else (1.0, 0.5, 0.2, 0.1, 0.05)):
        cases.append(CheckCase("2l", "random:3,3,2", p, seeds=seeds))
    cases.append(CheckCase("2l", "random:4,4,2", 0.3, seeds=seeds, target_density=0.5))
    cases.append(CheckCase("2l", "random:3,3,2", 0.5, eps=None, weight_eps=0.01, seeds=seeds))
    cases.append(CheckCase("2l", "digits", 1.0, eps=None, weight_eps=0.01, seeds=1 if budget == "fast" else 3))
    if budget == "full":
        cases.append(CheckCase("2l", "digits", 0.5, eps=0.01, seeds=3))
        cases.append(CheckCase("l+1", "random:2,3,2", 1.0, seeds=seeds))
    # convolutional and residual targets trained on digits (docs/math.md §9), one trained target per case
    conv_seeds = 3 if budget == "fast" else 10
    for p in ((1.0, 0.5, 0.1) if budget == "fast" else (1.0, 0.5, 0.2, 0.1)):
        cases.append(CheckCase("2l", "digits-cnn", p, eps=CONV_EPS, seeds=conv_seeds))
    for p in ((0.5,) if budget == "fast" else (1.0, 0.5, 0.1)):
        cases.append(CheckCase("2l", "digits-resnet", p, eps=CONV_EPS, seeds=conv_seeds))
    cases.append(CheckCase("2l", "digits-resnet", 0.5, eps=None, weight_eps=0.01, seeds=conv_seeds))
    for p in ((0.2,) if budget == "fast" else (0.5, 0.2, 0.1)):
        cases.append(CheckCase("weak", "digits-cnn", p, seeds=conv_seeds))
    for p in ((0.5,) if budget == "fast" else (0.5, 0.2, 0.1)):
        cases.append(CheckCase("weak", "digits-resnet", p, seeds=conv_seeds))
    # strong L+1 tickets of the digits CNN (docs/math.md §9): at eps 0.05 theory refuses the widths (the section 6
    # certificate's worst-case amplification asks layer 1 for a tolerance below what the exact solver searches), at
    # eps 0.1 it does not; the weight-eps rows make the other claims at a lower density
    for p in (1.0, 0.5):
        cases.append(CheckCase("l+1", "digits-cnn", p, eps=CONV_EPS, seeds=conv_seeds))
    # (seconds per seed on a loaded 2-core machine: eps 0.1 about 85 at density 1 and 240 at 0.5; weight-eps about 17
    # at density 1 and 60 at 0.5 — fewer seeds than the other conv rows keep the fast budget near its few minutes)
    cases.append(CheckCase("l+1", "digits-cnn", 1.0, eps=LPLUS1_EPS, seeds=1 if budget == "fast" else 5))
    if budget == "full":
        cases.append(CheckCase("l+1", "digits-cnn", 0.5, eps=LPLUS1_EPS, seeds=2))
    for p in ((1.0,) if budget == "fast" else (1.0, 0.5)):
        cases.append(CheckCase("l+1", "digits-cnn", p, eps=None, weight_eps=LPLUS1_WEIGHT_EPS,
                               seeds=2 if budget == "fast" else 5))
    return cases


#: network sup-error of the convolutional rows (digits images in the box [0, 1])
CONV_EPS = 0.05
#: network sup-error of the digits-CNN L+1 row that theory's widths can meet (at CONV_EPS they are refused)
LPLUS1_EPS = 0.1
#: per-instance tolerance of the digits-CNN L+1 weight-eps rows
LPLUS1_WEIGHT_EPS = 0.001


def run_conv_lplus1_case(case) -> CaseResult:
    """A strong L+1 row of the digits CNN (docs/math.md §9, §6): the target (trained once, seed 0) inside sources of
    seeds 1..seeds. Claims: success rate ≥ 1 − δ (binomial test), certificate ≤ ε for every successful seed (rows with
    ``eps``), sampled and attacked error (:func:`construct.conv_lplus1.conv_lplus1_attack`) ≤ certificate for every
    seed, and (rows with ``eps``) the ticket's digits test accuracy equal to the target's for every successful seed.
    A row whose tolerances theory cannot meet (the exact solver's candidate cap) is listed as infeasible with
    theory's reason."""
    from construct.conv_lplus1 import build_conv_lplus1_ticket, conv_lplus1_accuracies, conv_lplus1_attack
    from construct.conv_strong import load_conv_target
    from construct.conv_targets import digits_data

    t0 = time.perf_counter()
    target = load_conv_target(case.target, seed=0, box=(0.0, 1.0))
    data = digits_data(0)
    successes = runs = 0
    cert_ok = sampled_ok = interval_ok = acc_ok = True
    worst_cert = worst_sampled = attacked = 0.0
    failed_cert, accs, rep = None, [], None
    for seed in range(1, case.seeds + 1):
        try:
            ticket, rep = build_conv_lplus1_ticket(target, target.input_shape, case.density, case.delta, seed,
                                                   eps=case.eps, weight_eps=case.weight_eps, box=target.box,
                                                   samples=128)
        except ValueError as exc:
            if "the exact solver searches at most" in str(exc):
                return CaseResult(case, False, "theory: " + str(exc).split(":")[0], 0, 0, 0.0, 0, 0, 0.0, 0.0, True,
                                  True, True, time.perf_counter() - t0)
            raise
        runs += 1
        successes += int(rep.success)
        att = conv_lplus1_attack(ticket, seed=seed)
        attacked = max(attacked, att)
        slack = 1e-9 * (1.0 + rep.certificate)
        interval_ok &= att <= rep.certificate + slack
        worst_sampled = max(worst_sampled, rep.sampled_error)
        sampled_ok &= rep.sampled_error <= rep.certificate + slack
        acc = conv_lplus1_accuracies(ticket, data.x_test, data.y_test)
        accs.append(acc)
        if rep.success:
            worst_cert = max(worst_cert, rep.certificate)
            if case.eps is not None:  # equal accuracy is claimed where the ticket is within ε everywhere
                cert_ok &= rep.certificate <= case.eps
                acc_ok &= acc["digits test accuracy (ticket)"] == acc["digits test accuracy (target)"]
        else:
            failed_cert = max(failed_cert or 0.0, rep.certificate)
    pvalue = binomtest(successes, runs, 1.0 - case.delta, alternative="less").pvalue
    k_acc = [a["digits test accuracy (ticket)"] for a in accs]
    note = (f"p={pvalue:.3g}; test accuracy target {accs[0]['digits test accuracy (target)']:.4f}, tickets "
            f"{min(k_acc):.4f}-{max(k_acc):.4f} (predictions that differ: up to "
            f"{max(a['test predictions that differ'] for a in accs)})")
    if case.eps is None:
        note += " (accuracy: no claim, a per-weight tolerance bounds no network error)"
    if failed_cert is not None:
        note += f"; {runs - successes} seed(s) failed, certificate up to {failed_cert:.3e} (no claim)"
    ratio = worst_cert / attacked if attacked > 0 else 0.0
    return CaseResult(case, True, note, successes, runs, rep.source_params / max(1, rep.target_params),
                      rep.source_params, rep.ticket_params, worst_cert, worst_sampled, bool(pvalue >= ALPHA),
                      bool(cert_ok), bool(sampled_ok), time.perf_counter() - t0, failed_cert, attacked, worst_cert,
                      ratio, ("certificate",) * runs, bool(interval_ok), bool(acc_ok))


def run_conv_weak_case(case) -> CaseResult:
    """A weak row of a CNN or ResNet trained on digits (docs/math.md §9, §4): the target (trained once, seed 0) inside
    sources of seeds 1..seeds; claims: success rate ≥ 1 − δ, certificate 0 (exact) for every successful seed,
    sampled error ≤ certificate (+ rounding) for every seed, ticket test accuracy = target's for successful seeds."""
    from construct.conv_strong import load_conv_target
    from construct.conv_targets import digits_data
    from construct.conv_weak import build_conv_weak_ticket, conv_weak_accuracies

    t0 = time.perf_counter()
    target = load_conv_target(case.target, seed=0, box=(0.0, 1.0))
    data = digits_data(0)
    successes = runs = 0
    cert_ok = sampled_ok = acc_ok = True
    worst_cert = worst_sampled = 0.0
    failed_cert, accs, rep = None, [], None
    for seed in range(1, case.seeds + 1):
        ticket, rep = build_conv_weak_ticket(target, target.input_shape, case.density, case.delta, seed,
                                             box=target.box, samples=128)
        runs += 1
        successes += int(rep.success)
        worst_sampled = max(worst_sampled, rep.sampled_error)
        sampled_ok &= rep.sampled_error <= rep.certificate + 1e-9 * (1.0 + rep.certificate)
        acc = conv_weak_accuracies(ticket, data.x_test, data.y_test)
        accs.append(acc)
        if rep.success:
            worst_cert = max(worst_cert, rep.certificate)
            cert_ok &= rep.certificate <= 1e-9
            acc_ok &= acc["digits test accuracy (ticket)"] == acc["digits test accuracy (target)"]
        else:
            failed_cert = max(failed_cert or 0.0, rep.certificate)
    pvalue = binomtest(successes, runs, 1.0 - case.delta, alternative="less").pvalue
    k_acc = [a["digits test accuracy (ticket)"] for a in accs]
    note = (f"p={pvalue:.3g}; test accuracy target {accs[0]['digits test accuracy (target)']:.4f}, tickets "
            f"{min(k_acc):.4f}-{max(k_acc):.4f} (predictions that differ: up to "
            f"{max(a['test predictions that differ'] for a in accs)})")
    if failed_cert is not None:
        note += f"; {runs - successes} seed(s) failed, certificate up to {failed_cert:.3e} (no claim)"
    return CaseResult(case, True, note, successes, runs, rep.source_params / max(1, rep.target_params),
                      rep.source_params, rep.ticket_params, worst_cert, worst_sampled, bool(pvalue >= ALPHA),
                      bool(cert_ok), bool(sampled_ok), time.perf_counter() - t0, failed_cert, 0.0, worst_cert, 0.0,
                      ("exact",) * runs, True, bool(acc_ok))


def run_conv_case(case: CheckCase) -> CaseResult:
    """A convolutional row: the target (trained once, seed 0) inside sources of seeds 1..seeds. Claims: success rate
    (binomial test), the grouped bound ≤ ε for every successful seed (the promise of the construction with ``eps``;
    the §6 certificate is reported in the note), sampled and attacked error
    (:func:`construct.conv_attack.conv_attack_error`) ≤ grouped bound ≤ certificate, and — for rows with ``eps``,
    whose ticket is within ε of the target everywhere — the ticket's digits test accuracy equal to the target's for
    every successful seed. With only ``weight_eps`` the accuracies are reported without a claim: a per-weight
    tolerance bounds no network error (the full budget's ResNet row measured one seed of ten at 0.9867 against the
    target's 0.9822)."""
    from construct.conv_attack import conv_attack_error
    from construct.conv_strong import build_conv_strong_ticket, digits_accuracies, load_conv_target

    t0 = time.perf_counter()
    target = load_conv_target(case.target, seed=0, box=(0.0, 1.0))
    successes = runs = 0
    cert_ok = sampled_ok = interval_ok = acc_ok = True
    worst_cert = worst_sampled = attacked = worst_l1 = 0.0
    failed_cert = None
    width_factor, src, kept = 0.0, 0, 0
    accs = []
    for seed in range(1, case.seeds + 1):
        ticket, rep = build_conv_strong_ticket(target, target.input_shape, case.density, case.delta, seed,
                                               eps=case.eps, weight_eps=case.weight_eps, box=target.box, samples=128)
        runs += 1
        successes += int(rep.success)
        att = conv_attack_error(ticket, seed=seed).error
        attacked = max(attacked, att)
        bound = rep.grouped_certificate
        interval_ok &= att <= bound + 1e-9 * (1.0 + bound) and bound <= rep.certificate
        worst_sampled = max(worst_sampled, rep.sampled_error)
        sampled_ok &= rep.sampled_error <= bound + 1e-9 * (1.0 + bound)
        worst_l1 = max(worst_l1, rep.certificate)
        acc = digits_accuracies(ticket)
        accs.append(acc)
        if rep.success:
            worst_cert = max(worst_cert, bound)
            if case.eps is not None:
                cert_ok &= bound <= case.eps
                acc_ok &= acc["digits test accuracy (ticket)"] == acc["digits test accuracy (target)"]
        else:
            failed_cert = max(failed_cert or 0.0, bound)
        src, kept = rep.source_params, rep.ticket_params
        width_factor = rep.source_params / max(1, rep.target_params)
    pvalue = binomtest(successes, runs, 1.0 - case.delta, alternative="less").pvalue
    t_acc = accs[0]["digits test accuracy (target)"]
    k_acc = [a["digits test accuracy (ticket)"] for a in accs]
    note = (f"p={pvalue:.3g}; cert = grouped bound (section 6 certificate up to {worst_l1:.3e}); test accuracy "
            f"target {t_acc:.4f}, tickets {min(k_acc):.4f}-{max(k_acc):.4f} (predictions that differ: up to "
            f"{max(a['test predictions that differ'] for a in accs)})")
    if case.eps is None:
        note += " (accuracy: no claim, a per-weight tolerance bounds no network error)"
    if failed_cert is not None:
        note += f"; {runs - successes} seed(s) failed, certificate up to {failed_cert:.3e} (no claim)"
    ratio = worst_cert / attacked if attacked > 0 else 0.0
    return CaseResult(case, True, note, successes, runs, width_factor, src, kept, worst_cert, worst_sampled,
                      bool(pvalue >= ALPHA), bool(cert_ok), bool(sampled_ok), time.perf_counter() - t0, failed_cert,
                      attacked, worst_cert, ratio, ("grouped bound",) * runs, bool(interval_ok), bool(acc_ok))


def run_case(case: CheckCase, max_source_params: int = 60_000_000, bound_seconds: float = 3.0) -> CaseResult:
    """Build the case's ticket for seeds 1..seeds and evaluate the four claims (``bound_seconds``: MILP budget of
    each ticket's error interval)."""
    from construct.conv_strong import CONV_MODEL_NAMES

    if case.target.split(":", 1)[0] in CONV_MODEL_NAMES:
        if case.construction == "l+1":
            return run_conv_lplus1_case(case)
        return run_conv_weak_case(case) if case.construction == "weak" else run_conv_case(case)
    from construct.error_interval import error_interval

    from construct.strong import build_strong_ticket
    from construct.targets import load_target
    from construct.weak import build_weak_ticket

    t0 = time.perf_counter()
    successes, runs = 0, 0
    cert_ok = sampled_ok = interval_ok = True
    worst_cert = worst_sampled = 0.0
    failed_cert = None
    attacked = best = ratio = 0.0
    methods = []
    width_factor = 0.0
    src = kept = 0
    for seed in range(1, case.seeds + 1):
        target = load_target(case.target, seed=seed, target_density=case.target_density)
        try:
            if case.construction == "weak":
                ticket, rep = build_weak_ticket(target, case.density, case.delta, seed, samples=512)
            else:
                ticket, rep = build_strong_ticket(target, case.density, case.delta, seed, eps=case.eps,
                                                  weight_eps=case.weight_eps, construction=case.construction,
                                                  samples=512, max_source_params=max_source_params)
        except ValueError as exc:
            if "source would have" in str(exc):
                return CaseResult(case, False, str(exc).split(":")[0], 0, 0, 0.0, 0, 0, 0.0, 0.0, True, True, True,
                                  time.perf_counter() - t0)
            raise
        runs += 1
        successes += int(rep.success)
        if rep.success:
            worst_cert = max(worst_cert, rep.certificate)
        else:
            failed_cert = max(failed_cert or 0.0, rep.certificate)
        iv = error_interval(ticket, (-1.0, 1.0), rep.certificate, seed=seed, seconds=bound_seconds)
        interval_ok &= iv.consistent
        attacked, best, ratio = max(attacked, iv.attacked_error), max(best, iv.best_bound), max(ratio, iv.ratio)
        methods.append(iv.method)
        observed = max(rep.sampled_error, rep.corner_error or 0.0)
        worst_sampled = max(worst_sampled, observed)
        sampled_ok &= observed <= rep.certificate + 1e-9 * (1.0 + rep.certificate)
        if rep.success:
            if case.construction == "weak":
                cert_ok &= rep.certificate <= 1e-9
            elif case.eps is not None:
                cert_ok &= rep.certificate <= case.eps
        src = rep.source_params
        kept = rep.ticket_params
        width_factor = rep.source_params / max(1, sum(a * b for a, b in zip(target.widths[:-1], target.widths[1:])))
    pvalue = binomtest(successes, runs, 1.0 - case.delta, alternative="less").pvalue
    note = f"p={pvalue:.3g}"
    if failed_cert is not None:
        if case.construction == "weak":
            limit, bound = "1e-9 (exact)", 1e-9
        else:
            limit, bound = (f"eps {case.eps}", case.eps) if case.eps is not None else (None, None)
        over = "" if limit is None else (" > " if failed_cert > bound else " <= ") + limit
        note += f"; {runs - successes} seed(s) failed, certificate up to {failed_cert:.3e}{over} (no claim)"
    return CaseResult(case, True, note, successes, runs, width_factor, src, kept, worst_cert,
                      worst_sampled, bool(pvalue >= ALPHA), bool(cert_ok), bool(sampled_ok), time.perf_counter() - t0,
                      failed_cert, attacked, best, ratio, tuple(methods), bool(interval_ok))


def run_check(budget: str = "fast") -> CheckResult:
    """Run the battery (``budget`` "fast" ≈ two minutes on 2 cores, or "full")."""
    if budget not in ("fast", "full"):
        raise ValueError(f"budget={budget!r} is unknown: allowed 'fast', 'full'")
    t0 = time.perf_counter()
    results = []
    for case in tqdm(cases_for(budget), desc="construct check", disable=not sys.stderr.isatty()):
        results.append(run_case(case))
    return CheckResult(budget, tuple(results), time.perf_counter() - t0)


def format_table(result: CheckResult) -> str:
    """The battery as a text table."""
    head = (f"{'constr':>6} {'target':>14} {'dens':>5} {'tol':>11} {'width x':>9} {'source':>11} {'kept':>8} "
            f"{'cert (ok)':>10} {'sampled':>9} {'attacked':>9} {'best bound':>10} {'ratio':>6} {'success':>8} "
            f"{'verdict':>7}  note")
    lines = [head, "-" * len(head)]
    for r in result.results:
        c = r.case
        tol = "exact" if c.construction == "weak" else (f"eps={c.eps}" if c.eps is not None else f"w-eps={c.weight_eps}")
        name = c.target + ("" if c.target_density == 1.0 else f"@{c.target_density}")
        if not r.feasible:
            lines.append(f"{c.construction:>6} {name:>14} {c.density:>5} {tol:>11}  infeasible: {r.note}")
            continue
        verdict = "ok" if r.passed else "FAIL"
        cert = f"{r.certificate:>10.3e}" if r.successes else f"{'-':>10}"
        lines.append(f"{c.construction:>6} {name:>14} {c.density:>5} {tol:>11} {r.width_factor:>9.3g} "
                     f"{r.source_params:>11,} {r.kept_params:>8,} {cert} {r.sampled_error:>9.2e} "
                     f"{r.attacked_error:>9.2e} {r.best_bound:>10.3e} {r.bound_ratio:>6.3g} "
                     f"{r.successes:>3}/{r.runs:<4} {verdict:>7}  {r.note}")
    lines.append(f"claims: success rate >= 1 - delta (binomial test, alpha {ALPHA}), certificate <= eps for the "
                 f"successful seeds (weak: <= 1e-9), sampled/corner error <= certificate, every bound >= attacked error, "
                 f"digits CNN/ResNet rows built with eps or weak: ticket test accuracy = target's; "
                 f"cert (ok) = largest certificate of the successful seeds; attacked / best bound = error interval "
                 f"(largest over seeds), ratio = largest best bound / attacked error; {result.seconds:.1f} s; "
                 f"{'ALL PASS' if result.passed else 'SOME CLAIM FAILED'}")
    return "\n".join(lines)
