"""`python -m theory <command>`: the bounds of docs/math.md as command-line tools, following Gadhikar et al. 2023.

Commands: lower-bound (§3), densities (§7), widths (§4 weak / §6 strong), check (property-test the bounds).
Vocabulary: density = fraction of weights kept (sparsity = 1 − density).
"""
from __future__ import annotations

import sys
from typing import Sequence

from theory.cli import ArgumentParser, dumps, run_main
from theory.validation import parse_int_list

TICKETS = ("weak", "strong")
CONSTRUCTIONS = ("l+1", "2l")


def _parse_density_list(text: str, name: str):
    """"0.1" → 0.1; "0.5,0.4,0.3" → (0.5, 0.4, 0.3) (range checks happen in the library)."""
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"{name}={text!r} is malformed: allowed a density in (0, 1] or comma-separated densities") from None
    return values[0] if len(values) == 1 else tuple(values)


def _build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m theory",
        description="Bounds of 'Why Random Pruning Is All We Need to Start Sparse' (Gadhikar et al. 2023) as computed "
        "by this project (docs/math.md). Density = fraction of weights kept; sparsity = 1 - density.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    lb = sub.add_parser(
        "lower-bound",
        help="smallest hidden width of a d -> n -> 1 ER network whose inputs are all connected w.p. >= 1 - delta (docs/math.md §3)",
        description="Smallest hidden width n of a d -> n -> 1 network with ER masks M_1 ~ ER(input density) and "
        "M_2 ~ ER(output density) such that every input has a path to the output with probability >= 1 - delta "
        "(docs/math.md §3), with the exact connection probability there and the closed form "
        "kappa(p_1)*log(1/(1-(1-delta)^(1/d))).",
    )
    lb.add_argument("--inputs", type=int, required=True, help="number of inputs d (positive integer)")
    lb.add_argument("--density", type=float, required=True,
                    help="density p_1 of the first mask M_1 (fraction of input->hidden weights kept), in (0, 1]")
    lb.add_argument("--delta", type=float, required=True, help="allowed failure probability delta, in (0, 1)")
    lb.add_argument("--output-density", type=float, default=1.0,
                    help="density p_2 of the second mask M_2 (fraction of hidden->output weights kept), in (0, 1]; default 1")
    lb.add_argument("--json", action="store_true", help="print one JSON document instead of text")

    de = sub.add_parser(
        "densities",
        help="per-layer densities of a layer-wise scheme (uniform, erk, balanced, pyramidal; docs/math.md §7)",
        description="Per-layer densities p_l for the weight shapes in a JSON file, at global density p "
        "(docs/math.md §7). Exact budget sum_l p_l N_l = p N unless --compat.",
    )
    de.add_argument("--shapes", required=True,
                    help="JSON file holding a non-empty list of weight shapes, e.g. [[300, 784], [64, 3, 3, 3]] "
                    "((out, in) for linear layers, (out, in, kh, kw) for convolutions)")
    de.add_argument("--density", type=float, required=True,
                    help="global density p (fraction of all weights kept), in (0, 1]")
    de.add_argument("--scheme", required=True, choices=("uniform", "erk", "balanced", "pyramidal"),
                    help="layer-wise scheme: uniform (p_l = p), erk (Erdos-Renyi-kernel), balanced (same kept count "
                    "per layer), pyramidal (p_l = r^l)")
    de.add_argument("--compat", action="store_true",
                    help="reproduce the released code: balanced and erk clamp at 1 without redistributing, so the "
                    "realized global density undershoots the label (pyramidal and uniform unchanged)")
    de.add_argument("--max-memory", default=None,
                    help="memory budget for reading --shapes, bytes or a size such as 512M or 8G (default: 80%% of the "
                    "available memory); a file whose parsed JSON could need more is refused before it is read")
    de.add_argument("--json", action="store_true", help="print one JSON document instead of text")

    wi = sub.add_parser(
        "widths",
        help="source widths that contain a weak (docs/math.md §4) or strong (§6) ticket for a target w.p. >= 1 - delta",
        description="Sufficient source widths of an ER source network that contains a ticket for any target with "
        "the given widths, with probability >= 1 - delta: per-layer source widths, total source parameters, "
        "kept weights of the ticket and the overparameterization factor.",
    )
    wi.add_argument("--target", required=True, help="target widths n_0,...,n_L, comma-separated (e.g. 784,300,100,10)")
    wi.add_argument("--density", required=True,
                    help="density of every source layer (fraction of weights kept), in (0, 1]; for --ticket weak also "
                    "a comma-separated list of L+1 per-source-layer densities")
    wi.add_argument("--delta", type=float, required=True, help="allowed failure probability delta, in (0, 1)")
    wi.add_argument("--eps", type=float, default=None,
                    help="approximation error epsilon of a strong ticket, in (0, 1); required for --ticket strong, "
                    "not used by --ticket weak (weak tickets are exact)")
    wi.add_argument("--ticket", required=True, choices=TICKETS,
                    help="weak: weights inside the mask are free (exact representation, §4); strong: source weights "
                    "kept as they are, pruning only (epsilon-approximation, §6)")
    wi.add_argument("--construction", choices=CONSTRUCTIONS, default="2l",
                    help="strong-ticket construction: l+1 (depth L+1, after Burkholz 2022) or 2l (depth 2L, after "
                    "Pensia et al. 2020); default 2l, the default of 'python -m construct strong'; not used by "
                    "--ticket weak")
    wi.add_argument("--json", action="store_true", help="print one JSON document instead of text")

    ch = sub.add_parser(
        "check",
        help="property-test the bounds against seeded Monte Carlo; exit 0 iff every claim holds",
        description="Property-test the bounds: kappa inequalities on a grid, the lower-bound connection "
        "probability and weak-ticket widths against Monte Carlo on sampled ER masks, density-scheme budgets, "
        "and subset-sum thinning. Every Monte Carlo row is judged at alpha = 1e-3 "
        "with a fixed seed (deterministic). Exit status 0 iff every claim holds, 1 otherwise.",
    )
    ch.add_argument("--budget", choices=("fast", "full"), default="fast",
                    help="fast: under a minute on 2 cores; full: more settings and trials; default fast")
    ch.add_argument("--seed", type=int, default=0, help="seed of every random draw (integer >= 0); default 0")
    ch.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    return parser


def _read_shapes(path: str, max_memory):
    """The JSON of the --shapes file: a regular file only (a FIFO or a device is refused before it is opened),
    sized against the memory budget before it is read (theory.input_files)."""
    from theory.input_files import read_json_file
    from theory.memory import parse_memory

    budget = None if max_memory is None else parse_memory(max_memory, "max_memory")
    return read_json_file(path, "shapes", budget=budget)


def _strong_widths(target, density, delta, eps, construction):
    from theory.strong_widths import strong_widths

    if eps is None:
        raise ValueError("eps=None: allowed --eps in (0, 1), required for --ticket strong")
    return strong_widths(target, density, delta, eps=eps, construction=construction)


def _compute(args):
    """Call the library function of the chosen command; returns its data record."""
    if args.command == "lower-bound":
        from theory.lower_bound import lower_bound_summary

        return lower_bound_summary(args.inputs, args.density, args.delta, args.output_density)
    if args.command == "densities":
        from theory.densities import layer_densities

        return layer_densities(_read_shapes(args.shapes, args.max_memory), args.density, args.scheme, compat=args.compat)
    if args.command == "widths":
        target = parse_int_list(args.target, "target")
        density = _parse_density_list(args.density, "density")
        if args.ticket == "weak":
            from theory.weak_widths import weak_widths

            return weak_widths(target, density, args.delta)
        return _strong_widths(target, density, args.delta, args.eps, args.construction)
    from theory.check import run_checks

    return run_checks(args.budget, args.seed, progress=sys.stderr.isatty())


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return " ".join(f"{k}={_format_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        nested = any(isinstance(v, (dict, list, tuple)) for v in value)
        return ("; " if nested else ", ").join(_format_value(v) for v in value)
    return str(value)


def _format_check(report) -> str:
    header = f"{'claim':<66} {'parameters':<58} {'trials':>7} {'observed [CP interval]':>28} {'bound':>9}  verdict"
    lines = [header, "-" * len(header)]
    for r in report.rows:
        interval = f"{r.observed:.4f}" + (f" [{r.ci_low:.4f}, {r.ci_high:.4f}]" if r.ci_low is not None else "")
        bound = "" if r.bound is None else (f"{r.bound:.4f}" if r.kind != "all" else "all")
        verdict = "holds" if r.holds else "FAILS"
        if r.kind == "at least":
            bound = ">=" + bound
        lines.append(f"{r.claim:<66} {r.parameters:<58} {r.trials:>7} {interval:>28} {bound:>9}  {verdict}"
                     + (f"  ({r.note})" if r.note else ""))
    lines.append(f"budget={report.budget} seed={report.seed} alpha={report.alpha:g} time={report.seconds:.1f}s: "
                 + ("every claim holds" if report.all_hold else "SOME CLAIM FAILS"))
    return "\n".join(lines)


def _format(command: str, record) -> str:
    if command == "check":
        return _format_check(record)
    data = record.to_dict()
    width = max(len(k) for k in data)
    return "\n".join(f"{k:<{width}}  {_format_value(v)}" for k, v in data.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    record = _compute(args)
    print(dumps(record) if args.json else _format(args.command, record))
    if args.command == "check":
        return 0 if record.all_hold else 1
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
