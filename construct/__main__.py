"""``python -m construct``: build weak / strong tickets inside seeded ER sources, verify ticket files, run the
check battery and the benchmark. Thin: parses arguments, calls library functions, prints in one place."""
from __future__ import annotations

import sys

from theory.cli import ArgumentParser, dumps, run_main
from theory.validation import check_open_unit, check_positive_int, check_positive_real

__all__ = ["main"]


def _densities(text: str):
    try:
        vals = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"density={text!r} is malformed: allowed one density in (0, 1] or comma-separated "
                         "densities, one per source layer") from None
    return vals[0] if len(vals) == 1 else vals


def _common(p):
    p.add_argument("--target", required=True,
                   help="random:W0,W1,...,WL (seeded random target), digits (64-16-10 MLP trained on sklearn digits), "
                        "a .npz file with target_W{t}/target_b{t} (a ticket file works too) or a torch .pt state_dict")
    p.add_argument("--density", default="0.5",
                   help="ER density (fraction of weights kept) of every source layer, or one per source layer "
                        "comma-separated (default 0.5)")
    p.add_argument("--density-scheme", default="uniform", choices=("uniform", "erk", "balanced", "pyramidal"),
                   help="turn a single --density into per-layer densities of the source with theory.layer_densities "
                        "(computed on the source shapes at uniform density; default uniform)")
    p.add_argument("--delta", type=float, default=0.1, help="failure probability δ in (0, 1) (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the source (and of a random target) (default 0)")
    p.add_argument("--box", default="-1,1", help="input box a,b: inputs in [a, b]^n0 (default -1,1)")
    p.add_argument("--width-multiplier", type=float, default=1.0,
                   help="multiply theory's group sizes (g, r_t, k_t, ...) by this factor (default 1)")
    p.add_argument("--weight-law", default="uniform", choices=("uniform", "normal"),
                   help="source weight law: U[-1,1] or N(0, 1/fan_in) (normal: weak tickets only)")
    p.add_argument("--target-scale", type=float, default=1.0,
                   help="random targets: weights U[-1,1]*scale/sqrt(fan_in) (default 1)")
    p.add_argument("--target-density", type=float, default=1.0,
                   help="random targets: keep each target weight with this probability (sparse targets; default 1)")
    p.add_argument("--target-biases", action="store_true", default=True,
                   help="random targets: draw non-zero biases (default)")
    p.add_argument("--no-target-biases", dest="target_biases", action="store_false",
                   help="random targets: all biases zero")
    p.add_argument("--samples", type=int, default=2048, help="random inputs for the sampled error (default 2048)")
    p.add_argument("--out", help="write the ticket to this .npz file (atomic; no pickle)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the text summary")
    p.add_argument("--max-memory", default=None,
                   help="memory budget of the build, bytes or a size such as 8G or 512M (default 80%% of the available "
                        "memory): the target, the sampled inputs and the files read are estimated first and refused "
                        "beyond it")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m construct",
                            description="Weak and strong lottery tickets of ReLU MLPs inside materialized ER sources, "
                                        "with error certificates (MATH.md §4-§6).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    s = sub.add_parser("strong", help="build a strong ticket (pruning only)",
                       description="Build a strong ticket (MATH.md §6) inside a seeded ER source of theory's widths.")
    _common(s)
    tol = s.add_mutually_exclusive_group(required=True)
    tol.add_argument("--eps", type=float,
                     help="certified sup-error of the whole network in (0, 1): a-priori split over layers (§6)")
    tol.add_argument("--weight-eps", type=float,
                     help="per-instance (per-weight) tolerance in (0, 1); the certificate is reported a posteriori")
    s.add_argument("--construction", default="2l", choices=("l+1", "2l"),
                   help="l+1 (depth L+1, after Burkholz 2022) or 2l (depth 2L, after Pensia et al. 2020); default 2l")
    s.add_argument("--max-source-params", type=float, default=4e8,
                   help="refuse sources with more weights than this (memory guard; default 4e8). Memory per source "
                        "weight: about 1 byte for 2l (the source is drawn block by block, the ticket keeps one bool "
                        "per weight), about 6 bytes for l+1 (materialized source)")
    w = sub.add_parser("weak", help="build a weak ticket (weights set on a sub-mask)",
                       description="Build a weak ticket (MATH.md §4): exact representation inside an ER source.")
    _common(w)
    v = sub.add_parser("verify", help="check a ticket file from its arrays alone",
                       description="Reload a ticket .npz, check it is a sub-mask of its ER mask, recompute the forward "
                                   "pass and certificate, and print the verdict (exit 0 iff valid, 1 otherwise).")
    v.add_argument("path", help="ticket .npz file")
    v.add_argument("--samples", type=int, default=2048, help="random inputs for the sampled error (default 2048)")
    v.add_argument("--max-memory", default=None,
                   help="memory budget, bytes or a size such as 512M or 8G (default: 80%% of the available memory): "
                        "the file's arrays (from its npz headers) and the sampled inputs are estimated first")
    v.add_argument("--json", action="store_true", help="print one JSON document")
    c = sub.add_parser("check", help="the constructive approximation checks (exit 0 iff every claim holds)",
                       description="Battery over targets (random, sparse, trained on digits), densities 1 ... 0.05 and "
                                   "both constructions at theory's widths: success rate over seeds >= 1 - delta "
                                   "(binomial test, alpha 1e-3), certificate <= eps, sampled error <= certificate.")
    c.add_argument("--budget", default="fast", choices=("fast", "full"), help="fast (about a minute) or full")
    c.add_argument("--json", action="store_true", help="print one JSON document")
    b = sub.add_parser("bench", help="solver benchmark, then the 784-300-100-10 2L ticket timing",
                       description="Benchmark the batched subset-sum solver against exhaustive search and MILP, then "
                                   "time the 2L strong ticket of a random 784-300-100-10 target at density 0.5.")
    b.add_argument("--json", action="store_true", help="print one JSON document")
    b.add_argument("--width-multiplier", type=float, default=1.0,
                   help="ticket part: multiply theory's widths (default 1: theory's widths, a 2.2e9-weight source "
                        "drawn block by block; about 3 GB)")
    skip = b.add_mutually_exclusive_group()
    skip.add_argument("--skip-solver", action="store_true", help="only time the ticket")
    skip.add_argument("--skip-ticket", action="store_true", help="only run the solver benchmark")
    return parser


def _budget(args):
    from theory.memory import parse_memory

    return None if args.max_memory is None else parse_memory(args.max_memory, "max_memory")


def _check_samples(samples, inputs: int, budget) -> int:
    """--samples as a positive int whose sampled inputs (samples × n_0 float64, plus the bounded forward chunks
    of construct.certificate) fit the memory budget."""
    from theory.memory import check_memory

    samples = check_positive_int(samples, "samples")
    check_memory(8.0 * samples * inputs + 3 * 8 * 2**24, f"--samples {samples} random inputs of dimension {inputs}",
                 budget)
    return samples


def _resolve_densities(args, construction):
    from construct.targets import check_target_range, load_target, parse_box

    box = parse_box(args.box)
    check_open_unit(args.delta, "delta")
    check_positive_int(args.seed, "seed", minimum=0)
    budget = _budget(args)
    check_positive_int(args.samples, "samples")
    target = load_target(args.target, seed=args.seed, scale=args.target_scale, biases=args.target_biases,
                         target_density=args.target_density, max_memory=budget)
    check_target_range(target, box)
    _check_samples(args.samples, target.widths[0], budget)
    density = _densities(args.density)
    if args.density_scheme != "uniform":
        if isinstance(density, list):
            raise ValueError("--density-scheme needs a single --density: allowed one global density")
        density = _scheme_densities(target, density, args, construction, box)
    return target, density, box


def _scheme_densities(target, density, args, construction, box):
    from theory.densities import layer_densities

    if construction == "weak":
        from construct.weak import weak_source_widths

        widths = weak_source_widths(target, density, args.delta, width_multiplier=args.width_multiplier)[3]
    else:
        from construct.strong import plan_strong

        widths = plan_strong(target, density, args.delta, eps=args.eps, weight_eps=args.weight_eps,
                             construction=construction, box=box, width_multiplier=args.width_multiplier)[2]
    shapes = [(b, a) for a, b in zip(widths[:-1], widths[1:])]
    return list(layer_densities(shapes, density, args.density_scheme).densities)


def _print_ticket(report, out):
    d = report.to_dict()
    print(f"{report.construction} ticket of {report.target['name']} (widths {report.target['widths']}), "
          f"densities {[round(x, 4) for x in report.densities]}, delta {report.delta}, seed {report.seed}")
    print(f"  source widths {d['widths']['source_widths']}: {report.source_params:,} weights "
          f"({report.er_kept_params:,} kept by the ER masks); ticket keeps {report.ticket_params:,} "
          f"(target has {report.target_params:,})")
    print(f"  {'layer':>5} {'instances':>10} {'failures':>9} {'max inst err':>13} {'inst eps':>10} "
          f"{'cert contrib':>13} {'amplif':>9}")
    for l in report.layers:
        print(f"  {l.layer:>5} {l.instances:>10} {l.failures:>9} {l.max_instance_error:>13.3e} {l.instance_eps:>10.3e} "
              f"{l.certificate_contribution:>13.3e} {l.amplification:>9.3g}")
    eps = "" if report.eps is None else f" (a-priori eps {report.eps})"
    corner = "" if report.corner_error is None else f", corner error {report.corner_error:.3e}"
    print(f"  success {report.success} ({report.failures} failed instances); certificate {report.certificate:.3e}{eps}; "
          f"sampled error {report.sampled_error:.3e}{corner}; {report.seconds:.2f} s")
    if out:
        print(f"  written to {out}")


def _check_finite_report(report) -> None:
    """Refuse to report (or write) a ticket whose certificate or errors are nan: a float overflow happened
    somewhere (the target range check makes this unreachable for the inputs it knows)."""
    import math

    values = {"certificate": report.certificate, "sampled error": report.sampled_error,
              "corner error": report.corner_error}
    bad = [k for k, v in values.items() if v is not None and math.isnan(v)]
    if bad:
        raise ValueError(f"the {' and '.join(bad)} of this ticket is nan (a float overflow): refused; scale the "
                         "target or the box down")


def _check_verify_input(args) -> int:
    """verify's file and --samples: a regular file whose arrays (from its npz headers) and sampled inputs fit the
    memory budget, checked before anything is loaded."""
    from theory.input_files import npz_bytes, npz_headers
    from theory.memory import check_memory

    budget = _budget(args)
    samples = check_positive_int(args.samples, "samples")
    headers = npz_headers(args.path, "path")
    check_memory(2 * npz_bytes(headers), f"loading the ticket file {args.path!r} (arrays declared in its npz headers, "
                 "and their converted copies)", budget)
    first = headers.get("target_W1")
    inputs = first.shape[1] if first is not None and len(first.shape) == 2 else 1
    return _check_samples(samples, inputs, budget)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("strong", "weak"):
        target, density, box = _resolve_densities(args, args.construction if args.command == "strong" else "weak")
        if args.command == "strong":
            from construct.strong import build_strong_ticket

            ticket, report = build_strong_ticket(target, density, args.delta, args.seed, eps=args.eps,
                                                 weight_eps=args.weight_eps, construction=args.construction, box=box,
                                                 width_multiplier=args.width_multiplier, law=args.weight_law,
                                                 samples=args.samples, max_source_params=int(args.max_source_params))
        else:
            from construct.weak import build_weak_ticket

            ticket, report = build_weak_ticket(target, density, args.delta, args.seed, box=box,
                                               width_multiplier=args.width_multiplier, law=args.weight_law,
                                               samples=args.samples)
        _check_finite_report(report)
        if args.out:
            from construct.ticket import save_ticket

            save_ticket(args.out, ticket)
        if args.json:
            print(dumps(report))
        else:
            _print_ticket(report, args.out)
        return 0
    if args.command == "verify":
        from construct.verify import verify_ticket

        samples = _check_verify_input(args)
        res = verify_ticket(args.path, samples=samples)
        if args.json:
            print(dumps(res))
        else:
            print(f"{res.path}: {res.kind} ticket ({res.construction}), {res.kept_params:,} kept weights, sub-mask of the "
                  f"ER mask: {res.submask}")
            print(f"  certificate {res.certificate:.3e} (stored {res.stored_certificate}; matches {res.certificate_matches}); "
                  f"sampled error {res.sampled_error:.3e}"
                  + ("" if res.corner_error is None else f", corner error {res.corner_error:.3e}")
                  + f" <= certificate: {res.sampled_within_certificate}"
                  + ("" if res.eps is None else f"; certificate <= eps {res.eps}: {res.certificate_within_eps}"))
            print(f"  verdict: {'VALID' if res.valid else 'INVALID'}")
        return 0 if res.valid else 1
    if args.command == "check":
        from construct.check import format_table, run_check

        result = run_check(args.budget)
        print(dumps(result) if args.json else format_table(result))
        return 0 if result.passed else 1
    if args.command == "bench":
        from construct.bench_ticket import format_bench, run_bench

        check_positive_real(args.width_multiplier, "width_multiplier")
        result = run_bench(width_multiplier=args.width_multiplier, solver=not args.skip_solver,
                           ticket=not args.skip_ticket)
        print(dumps(result) if args.json else format_bench(result))
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(run_main(main))
