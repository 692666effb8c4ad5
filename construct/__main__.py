"""``python -m construct``: build weak / strong tickets inside seeded ER sources, verify ticket files, run the
check battery and the benchmark. Thin: parses arguments, calls library functions, prints in one place."""
from __future__ import annotations

import sys

from construct.progress import make_progress
from theory.cli import ArgumentParser, dumps, run_main
from theory.memory import parse_memory
from theory.validation import check_open_unit, check_positive_int, check_positive_real

__all__ = ["main"]


def _densities(text: str):
    try:
        vals = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"density={text!r} is malformed: allowed one density in (0, 1] or comma-separated "
                         "densities, one per source layer") from None
    return vals[0] if len(vals) == 1 else vals


def _bound_args(p):
    p.add_argument("--bound-seconds", type=float, default=10.0,
                   help="time budget of the exact maximum of |ticket - target| by MILP, in seconds (default 10; "
                        "0 skips the MILP; the other bounds and the attack are always computed)")
    p.add_argument("--no-bounds", dest="bounds", action="store_false",
                   help="do not compute the error interval [attacked error, best certified bound]")


def _common(p):
    p.add_argument("--target", required=True,
                   help="random:W0,W1,...,WL (seeded random target), digits (64-16-10 MLP trained on sklearn digits), "
                        "a .npz file with target_W{t}/target_b{t} (a ticket file works too), an architecture .json "
                        "with --weights sd.pt (a state_dict laid out by a JSON description), or model.py:factory "
                        "(imports that Python file, calls factory() for an nn.Module and reads it with torch.fx, "
                        "with --weights sd.pt loaded into it), or a convolutional/residual network: digits-cnn, digits-resnet "
                        "(small CNN / two-block ResNet trained on digits), resnet18[:width=W] (the CIFAR ResNet-18, "
                        "seeded random weights), or a model.py:factory / .json of conv2d, BatchNorm (folded), ReLU, "
                        "pooling, flatten, linear and residual additions (strong 2l only, with --input-shape). A .pt "
                        "state_dict alone is refused: names do not say the layer order")
    p.add_argument("--input-shape", default=None,
                   help="C,H,W of one input image, for a convolutional or residual model.py:factory or architecture "
                        ".json target (the named targets digits-cnn, digits-resnet and resnet18 know theirs)")
    p.add_argument("--weights",
                   help="a torch state_dict file (loaded with weights_only=True, no pickle code runs) for an "
                        "architecture .json or model.py:factory --target")
    p.add_argument("--density", default="0.5",
                   help="ER density (fraction of weights kept) of every source layer, or one per source layer "
                        "comma-separated (default 0.5)")
    p.add_argument("--density-scheme", default="uniform", choices=("uniform", "erk", "balanced", "pyramidal"),
                   help="turn a single --density into per-layer densities of the source with theory.layer_densities "
                        "(computed on the source shapes at uniform density; default uniform)")
    p.add_argument("--delta", type=float, default=0.1, help="failure probability δ in (0, 1) (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the source (and of a random target) (default 0)")
    p.add_argument("--box", default=None,
                   help="input box a,b: inputs in [a, b]^n0 (default: 0,1 for the digits targets — the range of "
                        "their pixels — and -1,1 otherwise)")
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
    p.add_argument("--samples", type=int, default=None,
                   help="random inputs for the sampled error (default 2048 for MLPs, 256 images for convolutional "
                        "targets)")
    p.add_argument("--out", help="write the ticket to this .npz file (atomic; no pickle)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the text summary")
    p.add_argument("--max-memory", default=None,
                   help="memory budget of the build, bytes or a size such as 8G or 512M (default 80%% of the available "
                        "memory): the target, the sampled inputs, the files read and the build (construct/footprint.py, "
                        "measured per source weight and unit) are estimated first and refused beyond it")
    p.add_argument("--progress", default="auto", choices=("auto", "bar", "lines", "none"),
                   help="per-layer progress on stderr: a bar, plain lines, or none (default auto: a bar when stderr "
                        "is a terminal, lines otherwise); stdout is the same either way")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m construct",
                            description="Weak and strong lottery tickets of ReLU MLPs, CNNs and ResNets inside seeded ER "
                                        "sources, with error certificates (docs/math.md §4-§6, §9).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    s = sub.add_parser("strong", help="build a strong ticket (pruning only)",
                       description="Build a strong ticket (docs/math.md §6) inside a seeded ER source of theory's widths.")
    _common(s)
    _bound_args(s)
    tol = s.add_mutually_exclusive_group(required=True)
    tol.add_argument("--eps", type=float,
                     help="certified sup-error of the whole network in (0, 1): a-priori split over layers (§6)")
    tol.add_argument("--weight-eps", type=float,
                     help="per-instance (per-weight) tolerance in (0, 1); the certificate is reported a posteriori")
    s.add_argument("--construction", default="2l", choices=("l+1", "2l"),
                   help="l+1 (depth L+1, after Burkholz 2022) or 2l (depth 2L, after Pensia et al. 2020); default 2l")
    s.add_argument("--max-source-params", type=float, default=None,
                   help="refuse sources with more weights than this (a size and run-time cap; default 4e8 for MLP "
                        "targets, no cap for convolutional ones, whose sources are computed only where read; inf for "
                        "no cap). Memory is guarded separately by --max-memory")
    w = sub.add_parser("weak", help="build a weak ticket (weights set on a sub-mask)",
                       description="Build a weak ticket (docs/math.md §4): exact representation inside an ER source.")
    _common(w)
    _bound_args(w)
    v = sub.add_parser("verify", help="check a ticket file, trusting nothing in it",
                       description="Reload a ticket .npz, regenerate its source from the stored seed, widths, densities "
                                   "and weight law and compare it with the stored arrays (the blocks the ticket uses), "
                                   "check every meta claim, recompute the certificate, the sampled error and the error "
                                   "interval [attacked error, best certified bound]. Exit 0 iff VALID, 1 if INVALID "
                                   "(with the reasons), 2 for a malformed file.")
    v.add_argument("path", help="ticket .npz file")
    v.add_argument("--samples", type=int, default=2048, help="random inputs for the sampled error (default 2048)")
    v.add_argument("--all-blocks", action="store_true",
                   help="compare every block of the source with the regenerated one, not only the blocks that hold "
                        "a kept edge or bias")
    _bound_args(v)
    v.add_argument("--max-memory", default=None,
                   help="memory budget, bytes or a size such as 512M or 8G (default: 80%% of the available memory): "
                        "the file's arrays (from its npz headers) and the sampled inputs are estimated first")
    v.add_argument("--json", action="store_true", help="print one JSON document")
    c = sub.add_parser("check", help="the constructive approximation checks (exit 0 iff every claim holds)",
                       description="Battery over targets (random, sparse, trained on digits; a CNN and a two-block "
                                   "ResNet trained on digits), densities 1 ... 0.05 and all constructions at theory's "
                                   "widths: success rate over seeds >= 1 - delta "
                                   "(binomial test, alpha 1e-3), certificate <= eps, sampled error <= certificate.")
    c.add_argument("--budget", default="fast", choices=("fast", "full"), help="fast (about two minutes on 2 cores) or full")
    c.add_argument("--json", action="store_true", help="print one JSON document")
    b = sub.add_parser("bench", help="solver benchmark, then the 784-300-100-10 2L ticket timing",
                       description="Benchmark the batched subset-sum solver against exhaustive search and MILP, then "
                                   "time the 2L strong ticket of a random 784-300-100-10 target at density 0.5.")
    b.add_argument("--json", action="store_true", help="print one JSON document")
    b.add_argument("--target", default=None,
                   help="instead: time the 2L strong ticket of a convolutional target — resnet18 (the CIFAR "
                        "ResNet-18, 11.2 M weights, seeded random weights, BatchNorm folded), resnet18:width=16, "
                        "digits-cnn or digits-resnet — at --conv-density with --weight-eps, and report instances, "
                        "failures, certificate, sampled and attacked error, time and peak memory")
    b.add_argument("--conv-density", type=float, default=0.5, help="--target: source density (default 0.5)")
    b.add_argument("--weight-eps", type=float, default=0.01,
                   help="--target: per-instance tolerance (default 0.01)")
    b.add_argument("--samples", type=int, default=32, help="--target: random inputs for the sampled error (default 32)")
    b.add_argument("--progress", default="auto", choices=("auto", "bar", "lines", "none"),
                   help="--target: per-layer progress on stderr (default auto)")
    b.add_argument("--width-multiplier", type=float, default=1.0,
                   help="ticket part: multiply theory's widths (default 1: theory's widths, a 2.2e9-weight source "
                        "drawn block by block; about 3 GB)")
    b.add_argument("--max-memory", default=None,
                   help="memory budget, bytes or a size such as 8G (default 80%% of the available memory): the ticket "
                        "part, and every --memory configuration, is refused beforehand when its estimate is larger")
    skip = b.add_mutually_exclusive_group()
    skip.add_argument("--skip-solver", action="store_true", help="only time the ticket")
    skip.add_argument("--skip-ticket", action="store_true", help="only run the solver benchmark")
    skip.add_argument("--memory", action="store_true",
                      help="instead: peak memory per source weight of every construction (weak, l+1, 2l) across "
                           "target shapes and densities, each configuration in a fresh process (the table behind "
                           "construct/footprint.py)")
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


#: named targets whose inputs are digits pixels in [0, 1]: their default box
_DIGITS_TARGETS = ("digits", "digits-cnn", "digits-resnet")


def _box(args) -> tuple[float, float]:
    """--box, or the target's own input range when it is not given ([0, 1] for the digits targets, else [−1, 1])."""
    from construct.targets import parse_box

    if args.box is not None:
        return parse_box(args.box)
    return (0.0, 1.0) if str(args.target).split(":", 1)[0] in _DIGITS_TARGETS else (-1.0, 1.0)


def _resolve_densities(args, construction):
    from construct.targets import check_target_range, load_target

    box = _box(args)
    check_open_unit(args.delta, "delta")
    check_positive_int(args.seed, "seed", minimum=0)
    budget = _budget(args)
    check_positive_int(args.samples, "samples")
    target = load_target(args.target, seed=args.seed, scale=args.target_scale, biases=args.target_biases,
                         target_density=args.target_density, weights=args.weights, max_memory=budget)
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
    print(report)
    if out:
        print(f"  written to {out}")


def _bound_seconds(args) -> float:
    if not (args.bound_seconds >= 0 and args.bound_seconds < 1e6):
        raise ValueError(f"bound-seconds={args.bound_seconds}: allowed a number of seconds in [0, 1e6)")
    return float(args.bound_seconds)


def format_verify(res) -> str:
    """The verdict of ``verify`` as text."""
    from construct.report import interval_text

    lines = [f"{res.path}: {res.kind} ticket ({res.construction}), {res.kept_params:,} kept weights",
             f"  source regenerated from its seed: {res.blocks_compared} of {res.blocks_total} blocks compared, "
             f"equal to the stored arrays: {res.source_matches}; ticket is a sub-mask of the seeded ER mask: "
             f"{res.submask}",
             f"  certificate {res.certificate:.3e} (stored {res.stored_certificate}; matches {res.certificate_matches}); "
             f"sampled error {res.sampled_error:.3e}"
             + ("" if res.corner_error is None else f", corner error {res.corner_error:.3e}")
             + f" <= certificate: {res.sampled_within_certificate}"
             + ("" if res.eps is None else f"; certificate <= eps {res.eps}: {res.certificate_within_eps}")]
    if res.interval is not None:
        lines.append("  " + interval_text(res.interval))
    for reason in res.reasons:
        lines.append(f"  INVALID: {reason}")
    lines.append(f"  verdict: {'VALID' if res.valid else 'INVALID'}")
    return "\n".join(lines)


def _check_out_directory(path) -> None:
    """Refuse (one line) an --out that is a directory, or whose directory does not exist or cannot be written (a
    probe file), before building."""
    import os

    parent = os.path.dirname(os.path.abspath(str(path)))
    if os.path.isdir(str(path)):
        raise ValueError(f"out={str(path)!r} is a directory: allowed a file path such as DIR/ticket.npz")
    if not os.path.isdir(parent):
        raise ValueError(f"out={str(path)!r}: the directory {parent} does not exist or is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"out={str(path)!r}: the directory {parent} is not writable")
    # create and remove the temporary file theory.atomic will write (same name length), so a name too long or a
    # directory that refuses files (/proc, a read-only mount) is one line before the build, not after its progress
    from theory.atomic import temporary_name

    probe = os.path.join(parent, temporary_name(os.path.basename(str(path)), ".npz"))  # as construct.ticket.save_ticket
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    os.unlink(probe)


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
    if "architecture" in headers and "input_shape" in headers:  # a conv ticket: (c, H, W) per input
        import numpy as np

        with np.load(args.path, allow_pickle=False) as data:
            shape = np.asarray(data["input_shape"])
        if shape.dtype.kind in "iu" and shape.ndim == 1 and shape.size and np.all(shape >= 1):
            inputs = int(np.prod(shape.astype(float)))
    return _check_samples(samples, inputs, budget)


def format_conv_verify(res) -> str:
    """The verdict of ``verify`` on a conv ticket file as text."""
    lines = [f"{res.path}: strong ticket ({res.construction}), {res.kept_params:,} kept weights",
             f"  source regenerated from its seed: {res.units_checked:,} kept A units and {res.b_entries_checked:,} "
             f"kept B entries compared, equal to the stored weights: {res.source_matches}; ticket is a sub-mask of "
             f"the seeded ER masks: {res.submask}",
             f"  certificate {res.certificate:.3e} (stored {res.stored_certificate}; matches {res.certificate_matches});"
             f" grouped bound {res.grouped_certificate:.3e}; sampled error {res.sampled_error:.3e} over "
             f"{res.samples} inputs <= grouped bound: {res.sampled_within_certificate}"
             + ("" if res.eps is None else f"; grouped bound <= eps {res.eps}: {res.certificate_within_eps}")]
    for reason in res.reasons:
        lines.append(f"  INVALID: {reason}")
    lines.append(f"  verdict: {'VALID' if res.valid else 'INVALID'}")
    return "\n".join(lines)


def format_weak_conv_verify(res) -> str:
    """The verdict of ``verify`` on a weak conv ticket file as text."""
    lines = [f"{res.path}: weak ticket ({res.construction}), {res.kept_params:,} kept weights",
             f"  ticket is a sub-mask of the seeded ER masks: {res.submask}; weights are the construction's: "
             f"{res.weights_match}; computed channels read computed channels: {res.channels_consistent}",
             f"  certificate {res.certificate:.3e} ({res.missing_edges} needed edges missing; stored "
             f"{res.stored_certificate}; matches {res.certificate_matches}); sampled error {res.sampled_error:.3e} "
             f"over {res.samples} inputs <= certificate: {res.sampled_within_certificate}"]
    for reason in res.reasons:
        lines.append(f"  INVALID: {reason}")
    lines.append(f"  verdict: {'VALID' if res.valid else 'INVALID'}")
    return "\n".join(lines)


def _input_shape(text):
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"input-shape={text!r} is malformed: allowed C,H,W (positive integers)") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input-shape={text!r} is out of range: allowed C,H,W (three positive integers)")
    return shape


def _conv_target(args):
    """The ConvTarget of --target, or None for an MLP target. What the named targets cannot do is refused before
    they are trained."""
    from construct.conv_strong import CONV_MODEL_NAMES, RESIDUAL_MODEL_NAMES, load_conv_target

    name = str(args.target).split(":", 1)[0]
    if name in CONV_MODEL_NAMES:
        if args.command == "strong" and args.construction == "l+1" and name in RESIDUAL_MODEL_NAMES:
            raise ValueError(f"target={args.target!r} is a residual network: the l+1 construction takes plain CNNs "
                             "only: allowed --construction 2l")
        if args.command == "strong" and args.construction == "l+1" and args.out:  # before the target is trained
            raise ValueError(f"out={args.out!r}: l+1 tickets of convolutional networks cannot be saved yet: allowed "
                             "no --out (or --construction 2l)")

    return load_conv_target(args.target, weights=args.weights, input_shape=_input_shape(args.input_shape),
                            seed=args.seed, box=_box(args))


def _weak_conv(args, target) -> int:
    """``construct weak`` for a plain CNN (docs/math.md §9, §4)."""
    from construct.conv_weak import build_conv_weak_ticket, conv_weak_accuracies

    check_open_unit(args.delta, "delta")
    check_positive_int(args.seed, "seed", minimum=0)
    progress = make_progress(args.progress, "construct weak")
    try:
        ticket, report = build_conv_weak_ticket(target, target.input_shape, _densities(args.density), args.delta,
                                                args.seed, box=target.box, width_multiplier=args.width_multiplier,
                                                samples=256 if args.samples is None else args.samples,
                                                max_memory=_budget(args), progress=progress)
    finally:
        progress.close()
    text = str(report)
    if str(args.target).startswith("digits-"):
        from construct.conv_targets import digits_data

        d = digits_data(0)
        text += "".join(f"\n  {k}: {v:.4f}" if isinstance(v, float) else f"\n  {k}: {v}"
                        for k, v in conv_weak_accuracies(ticket, d.x_test, d.y_test).items())
    if args.out:
        from construct.conv_weak_io import save_weak_conv_ticket

        save_weak_conv_ticket(args.out, ticket)
        text += f"\n  written to {args.out}"
    print(dumps(report) if args.json else text)
    return 0


def _lplus1_conv(args, target) -> int:
    """``construct strong --construction l+1`` for a plain CNN (docs/math.md §9, §6)."""
    import dataclasses

    from construct.conv_lplus1 import build_conv_lplus1_ticket, conv_lplus1_accuracies, conv_lplus1_attack

    check_open_unit(args.delta, "delta")
    check_positive_int(args.seed, "seed", minimum=0)
    if args.out:
        raise ValueError(f"out={args.out!r}: l+1 tickets of convolutional networks cannot be saved yet: allowed no "
                         "--out (or --construction 2l)")
    if args.density_scheme != "uniform":
        raise ValueError(f"density-scheme={args.density_scheme!r}: the l+1 construction of a CNN takes one density or "
                         "one per source layer: allowed --density-scheme uniform")
    progress = make_progress(args.progress, "construct strong")
    try:
        ticket, report = build_conv_lplus1_ticket(target, target.input_shape, _densities(args.density), args.delta,
                                                  args.seed, eps=args.eps, weight_eps=args.weight_eps, box=target.box,
                                                  width_multiplier=args.width_multiplier,
                                                  samples=256 if args.samples is None else args.samples,
                                                  max_memory=_budget(args), progress=progress)
    finally:
        progress.close()
    extra = {}
    if args.bounds:
        report = dataclasses.replace(report, attacked_error=conv_lplus1_attack(ticket, seed=args.seed))
    if str(args.target).startswith("digits-"):
        from construct.conv_targets import digits_data

        d = digits_data(0)
        extra.update(conv_lplus1_accuracies(ticket, d.x_test, d.y_test))
    if extra:
        report = dataclasses.replace(report, extra=extra)
    print(dumps(report) if args.json else str(report))
    return 0


def _strong_conv(args, target) -> int:
    """``construct strong`` for a convolutional or residual target (docs/math.md §9)."""
    import dataclasses

    from construct.conv_strong import build_conv_strong_ticket

    if args.command == "weak":
        return _weak_conv(args, target)
    if args.construction == "l+1":
        return _lplus1_conv(args, target)
    check_open_unit(args.delta, "delta")
    check_positive_int(args.seed, "seed", minimum=0)
    density = _densities(args.density)
    scheme = None if args.density_scheme == "uniform" else args.density_scheme
    if scheme is not None and isinstance(density, list):
        raise ValueError("--density-scheme needs a single --density: allowed one global density")
    if args.out:
        _check_out_directory(args.out)
    from construct.strong import check_max_source_params

    cap = check_max_source_params(args.max_source_params)  # None (the default): no cap, memory is guarded
    progress = make_progress(args.progress, "construct strong")
    try:
        ticket, report = build_conv_strong_ticket(target, target.input_shape, density, args.delta, args.seed,
                                                  eps=args.eps, weight_eps=args.weight_eps, box=target.box,
                                                  width_multiplier=args.width_multiplier,
                                                  samples=256 if args.samples is None else args.samples,
                                                  scheme=scheme, max_source_params=cap, max_memory=_budget(args),
                                                  progress=progress)
    finally:
        progress.close()
    extra = {}
    if args.bounds:
        from construct.conv_attack import conv_attack_error

        attack = conv_attack_error(ticket, seed=args.seed)
        report = dataclasses.replace(report, attacked_error=attack.error)
    if str(args.target).startswith("digits-"):
        from construct.conv_strong import digits_accuracies

        extra.update(digits_accuracies(ticket))
    if extra:
        report = dataclasses.replace(report, extra=extra)
    if args.out:
        from construct.conv_io import save_conv_ticket

        save_conv_ticket(args.out, ticket)
    print(dumps(report) if args.json else str(report) + (f"\n  written to {args.out}" if args.out else ""))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("strong", "weak"):
        if args.out:
            _check_out_directory(args.out)  # before a target is loaded or trained, and before any build
        conv = _conv_target(args)
        if conv is not None:
            return _strong_conv(args, conv)
        if args.input_shape is not None:
            raise ValueError(f"input-shape={args.input_shape!r} is only used with convolutional or residual targets: "
                             f"allowed no --input-shape for target {args.target!r}")
        if args.samples is None:
            args.samples = 2048
        max_memory = _budget(args)
        target, density, box = _resolve_densities(args, args.construction if args.command == "strong" else "weak")
        if args.out:
            _check_out_directory(args.out)  # before a long build, not after it
        progress = make_progress(args.progress, f"construct {args.command}")
        try:
            if args.command == "strong":
                from construct.strong import build_strong_ticket

                ticket, report = build_strong_ticket(target, density, args.delta, args.seed, eps=args.eps,
                                                     weight_eps=args.weight_eps, construction=args.construction,
                                                     box=box, width_multiplier=args.width_multiplier,
                                                     law=args.weight_law, samples=args.samples,
                                                     max_source_params=4e8 if args.max_source_params is None
                                                     else args.max_source_params, max_memory=max_memory,
                                                     will_save=bool(args.out), progress=progress)
            else:
                from construct.weak import build_weak_ticket

                ticket, report = build_weak_ticket(target, density, args.delta, args.seed, box=box,
                                                   width_multiplier=args.width_multiplier, law=args.weight_law,
                                                   samples=args.samples, max_memory=max_memory,
                                                   will_save=bool(args.out), progress=progress)
        finally:
            progress.close()
        if args.bounds:
            import dataclasses

            from construct.error_interval import error_interval

            iv = error_interval(ticket, box, report.certificate, seed=args.seed, seconds=_bound_seconds(args))
            report = dataclasses.replace(report, interval=iv.to_dict())
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
        from construct.conv_io import is_conv_ticket_file
        from construct.verify import verify_ticket

        samples = _check_verify_input(args)
        if is_conv_ticket_file(args.path):
            from construct.conv_verify import verify_conv_ticket

            res = verify_conv_ticket(args.path, samples=samples)
            print(dumps(res) if args.json else format_conv_verify(res))
            return 0 if res.valid else 1
        from construct.conv_weak_io import is_weak_conv_ticket_file

        if is_weak_conv_ticket_file(args.path):
            from construct.conv_weak_io import verify_weak_conv_ticket

            res = verify_weak_conv_ticket(args.path, samples=samples)
            print(dumps(res) if args.json else format_weak_conv_verify(res))
            return 0 if res.valid else 1
        res = verify_ticket(args.path, samples=samples, all_blocks=args.all_blocks, bounds=args.bounds,
                            bound_seconds=_bound_seconds(args))
        print(dumps(res) if args.json else format_verify(res))
        return 0 if res.valid else 1
    if args.command == "check":
        from construct.check import format_table, run_check

        result = run_check(args.budget)
        print(dumps(result) if args.json else format_table(result))
        return 0 if result.passed else 1
    if args.command == "bench":
        from construct.bench_ticket import format_bench, run_bench

        max_memory = None if args.max_memory is None else parse_memory(args.max_memory, "max_memory")
        if args.target is not None:
            from construct.bench_conv import format_conv_bench, run_conv_bench

            progress = make_progress(args.progress, "construct bench")
            try:
                result = run_conv_bench(args.target, density=args.conv_density, weight_eps=args.weight_eps,
                                        width_multiplier=check_positive_real(args.width_multiplier, "width_multiplier"),
                                        samples=check_positive_int(args.samples, "samples"), max_memory=max_memory,
                                        progress=progress)
            finally:
                progress.close()
            print(dumps(result) if args.json else format_conv_bench(result))
            return 0
        if args.memory:
            from construct.bench_memory import format_memory_bench, run_memory_bench

            rows = run_memory_bench(max_memory=max_memory)
            print(dumps(rows) if args.json else format_memory_bench(rows))
            return 0
        check_positive_real(args.width_multiplier, "width_multiplier")
        result = run_bench(width_multiplier=args.width_multiplier, solver=not args.skip_solver,
                           ticket=not args.skip_ticket, max_memory=max_memory)
        print(dumps(result) if args.json else format_bench(result))
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(run_main(main))
