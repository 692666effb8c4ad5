"""`python -m theory <command>`: the bounds of docs/math.md as command-line tools, following Gadhikar et al. 2023.

Commands: lower-bound (§3), densities (§7), widths (§4 weak / §6 strong; §9 for convolutional and residual targets
given as a JSON architecture description), check (property-test the bounds).
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
    wi.add_argument("--target", required=True,
                    help="target widths n_0,...,n_L, comma-separated (e.g. 784,300,100,10), or a JSON architecture "
                    "description file ending in .json (convolutional and residual targets, docs/math.md §9; the "
                    "format construct writes, e.g. theory/data/digits_cnn.json): strong 2l tickets only")
    wi.add_argument("--density", required=True,
                    help="density of every source layer (fraction of weights kept), in (0, 1]; or a comma-separated "
                    "list of per-source-layer densities (L+1 for --ticket weak and l+1, 2L for 2l; for a .json target "
                    "p_A,p_B of every conv/linear layer); with --scheme the global density")
    wi.add_argument("--delta", type=float, required=True, help="allowed failure probability delta, in (0, 1)")
    wi.add_argument("--eps", type=float, default=None,
                    help="network sup-error epsilon of a strong ticket, in (0, 1), split over the layers a priori "
                    "(worst-case forward split, docs/math.md §6); for --ticket strong give exactly one of --eps and "
                    "--weight-eps; not used by --ticket weak (weak tickets are exact)")
    wi.add_argument("--weight-eps", default=None,
                    help="per-instance tolerance epsilon_l of every target weight's subset sum, in (0, 1), or one per "
                    "target (conv/linear) layer, comma-separated; the alternative to --eps for --ticket strong")
    wi.add_argument("--box", default="-1,1",
                    help="input box [a, b] as a,b (e.g. 0,1 for images in [0, 1]); sets the worst-case input bounds of "
                    "--ticket strong and, for a .json target, whether the first layer needs the sign split; default -1,1")
    wi.add_argument("--scheme", default=None, choices=("uniform", "erk", "balanced", "pyramidal"),
                    help="for a .json target: distribute the global --density over the source layers with this "
                    "layer-wise scheme (docs/math.md §7), iterated with the widths; default: --density per layer")
    wi.add_argument("--max-memory", default=None,
                    help="memory budget for reading a .json --target, bytes or a size such as 512M or 8G (default: 80%% "
                    "of the available memory)")
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


def _parse_eps(text):
    """--weight-eps "0.01" → 0.01; "0.01,0.02" → (0.01, 0.02); None stays None (range checks in the library)."""
    if text is None:
        return None
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"weight_eps={text!r} is malformed: allowed a tolerance in (0, 1) or comma-separated "
                         "tolerances") from None
    return values[0] if len(values) == 1 else tuple(values)


def _parse_box(text: str):
    """--box "a,b" → (a, b) (a < b is checked in the library)."""
    try:
        a, b = (float(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"box={text!r} is malformed: allowed two comma-separated numbers a,b with a < b") from None
    return a, b


def _tolerances(args):
    """(eps, instance_eps) of --ticket strong: exactly one of --eps and --weight-eps."""
    weight_eps = _parse_eps(args.weight_eps)
    if (args.eps is None) == (weight_eps is None):
        raise ValueError(f"eps={args.eps!r}, weight_eps={args.weight_eps!r}: allowed exactly one of --eps (network "
                         "sup-error) and --weight-eps (per-instance tolerance), in (0, 1), for --ticket strong")
    return args.eps, weight_eps


def _conv_widths(args, density):
    """Widths for a JSON architecture description (theory.conv_widths; strong 2l tickets only)."""
    from theory.conv_widths import conv_strong_widths, nodes_from_description
    from theory.input_files import read_json_file
    from theory.memory import parse_memory

    if args.ticket != "strong":
        raise ValueError(f"ticket={args.ticket!r} is not implemented for convolutional targets (a .json --target): "
                         "allowed strong")
    if args.construction != "2l":
        raise ValueError(f"construction={args.construction!r} is not implemented for convolutional targets: allowed 2l")
    eps, weight_eps = _tolerances(args)
    box = _parse_box(args.box)
    budget = None if args.max_memory is None else parse_memory(args.max_memory, "max_memory")
    nodes = nodes_from_description(read_json_file(args.target, "target", budget=budget))
    return conv_strong_widths(nodes, density, args.delta, eps=eps, instance_eps=weight_eps, box=box, scheme=args.scheme)


def _strong_widths(target, density, delta, args):
    from theory.strong_widths import strong_widths

    eps, weight_eps = _tolerances(args)
    return strong_widths(target, density, delta, eps=eps, instance_eps=weight_eps, construction=args.construction,
                         box=_parse_box(args.box))


def _compute(args):
    """Call the library function of the chosen command; returns its data record."""
    if args.command == "lower-bound":
        from theory.lower_bound import lower_bound_summary

        return lower_bound_summary(args.inputs, args.density, args.delta, args.output_density)
    if args.command == "densities":
        from theory.densities import layer_densities

        return layer_densities(_read_shapes(args.shapes, args.max_memory), args.density, args.scheme, compat=args.compat)
    if args.command == "widths":
        density = _parse_density_list(args.density, "density")
        if str(args.target).lower().endswith(".json"):
            return _conv_widths(args, density)
        target = parse_int_list(args.target, "target")
        if args.scheme is not None:
            raise ValueError(f"scheme={args.scheme!r} is implemented for .json targets only: allowed --density per "
                             "source layer for target widths")
        if args.ticket == "weak":
            from theory.weak_widths import weak_widths

            return weak_widths(target, density, args.delta)
        return _strong_widths(target, density, args.delta, args)
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


def _format_conv_widths(record) -> str:
    """Per-layer table and totals of a theory.conv_widths.ConvStrongWidths."""
    name_width = max([len("layer")] + [len(layer.name) for layer in record.layers])
    header = (f"{'layer':<{name_width}} {'fan_in':>7} {'fan_out':>7} {'sides':>5} {'p_A':>7} {'p_B':>7} {'k':>7} {'g0':>7} "
              f"{'source A (m x fan_in)':>22} {'source B (fan_out x m)':>22} {'source weights':>15} {'instances':>10} "
              f"{'eps_l':>10}")
    lines = [header, "-" * len(header)]
    for i, layer in enumerate(record.layers):
        (m, fi), (fo, _) = layer.source_shapes
        lines.append(f"{layer.name:<{name_width}} {layer.fan_in:>7} {layer.fan_out:>7} {layer.sides:>5} "
                     f"{record.densities[2 * i]:>7.4g} {record.densities[2 * i + 1]:>7.4g} {layer.k:>7} {layer.g0:>7} "
                     f"{f'{m} x {fi}':>22} {f'{fo} x {m}':>22} {layer.source_params:>15} {layer.instances:>10} "
                     f"{layer.instance_eps:>10.3g}")
    split = (f"forward split of eps={record.eps:g}" if record.tolerance_split == "forward"
             else "per-instance tolerance given")
    scheme = "" if record.scheme is None else (f", scheme {record.scheme}"
                                               + ("" if record.scheme_converged else " (not converged)"))
    lines.append(f"total: {len(record.layers)} weighted layers, {record.source_params} source weights, "
                 f"{record.expected_er_params:.6g} expected kept (global density {record.global_density:.4g}{scheme}), "
                 f"{record.instances} instances")
    lines.append(f"delta={record.delta:g}, delta'={record.instance_delta:.3g} per instance, {split}, weight bound "
                 f"{record.weight_bound:g} (P={record.parts}), box [{record.box[0]:g}, {record.box[1]:g}], source dtype "
                 f"{record.source_dtype}")
    return "\n".join(lines)


def _format(command: str, record) -> str:
    if command == "check":
        return _format_check(record)
    if command == "widths" and hasattr(record, "layers"):
        return _format_conv_widths(record)
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
