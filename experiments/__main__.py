"""Command line of the experiments package (EXPERIMENTS.md): ``run``, ``figures``, ``bench``, ``list``.

    python -m experiments run e1 --scale smoke|default|paper --device auto|cpu|cuda --out DIR [--seeds N] [--resume]
    python -m experiments figures [--results DIR] [--out DIR]
    python -m experiments bench [--device auto|cpu|cuda] [--json]
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

import torch

from theory.cli import ArgumentParser, dumps, run_main
from theory.validation import check_positive_int

from .device import DEVICE_CHOICES, resolve_device
from .registry import SCALES, experiment_names, get_experiment


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m experiments", description="Experiments of 'Why Random Pruning Is All We "
                            "Need to Start Sparse' (Gadhikar et al. 2023): sweeps with resumable JSONL results, "
                            "figures from stored results, and a batching benchmark.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_common(p, default_threads=1):
        p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                       help="auto = CUDA when torch sees a GPU, else CPU; cuda without a GPU is an error (default auto)")
        p.add_argument("--threads", type=int, default=default_threads,
                       help="torch CPU threads (default 1: on a shared or small CPU more threads are often slower)")

    run = sub.add_parser("run", help="run (or resume) an experiment's sweep, appending one JSON line per run")
    run.add_argument("experiment", help=f"experiment name: one of {', '.join(experiment_names())}")
    run.add_argument("--scale", default="smoke", choices=SCALES,
                     help="smoke = seconds (tests), default = minutes on a 2-core CPU, paper = one GPU (default smoke)")
    run.add_argument("--out", required=True, help="directory for the results file <out>/<experiment>.jsonl")
    run.add_argument("--seeds", type=int, default=None, help="number of seeds 0..N-1 (default: the scale's own, 1 or 3)")
    run.add_argument("--resume", action="store_true",
                     help="continue an existing results file, skipping finished runs (without it an existing "
                          "results file with runs is refused)")
    run.add_argument("--first-layer-only", action="store_true",
                     help="E1: mask only the first layer (the output layer stays dense); default masks both")
    run.add_argument("--data-dir", default=None,
                     help="directory holding the CIFAR python batch files (data_batch_1..5, test_batch); required "
                          "by the paper scale of layerwise/imp/edgepopup, never downloaded")
    run.add_argument("--compat", action="store_true",
                     help="layerwise: use the released code's clamp-only ERK/balanced densities (MATH.md §7), whose "
                          "realized global density undershoots the label; the realized density is always recorded")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_common(run)

    fig = sub.add_parser("figures", help="make every figure there are results for (PDF + PNG, reproducible bytes)")
    fig.add_argument("--results", default="figures",
                     help="directory searched (recursively) for <experiment>.jsonl results files (default figures)")
    fig.add_argument("--out", default="figures",
                     help="figures of <results>/SUB/<experiment>.jsonl go to <out>/SUB/ (default figures)")
    fig.add_argument("--json", action="store_true", help="print the written paths as JSON")

    bench = sub.add_parser("bench", help="Python loop over models vs batched ensemble: models·steps per second")
    bench.add_argument("--models", type=int, default=64, help="number of small MLPs (default 64)")
    bench.add_argument("--steps", type=int, default=50, help="Adam steps per model (default 50)")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    add_common(bench)

    sub.add_parser("list", help="list the registered experiments")
    return parser


def _set_threads(threads: int) -> None:
    """--threads: 1 .. 4 × the CPUs this process may run on (more only oversubscribes, and an absurd count makes
    the OpenMP runtime abort while allocating its thread stacks)."""
    from construct.cpus import available_cpus

    threads = check_positive_int(threads, "threads")
    limit = 4 * available_cpus()
    if threads > limit:
        raise ValueError(f"threads={threads} is out of range: allowed 1..{limit} (4 x the {available_cpus()} CPUs "
                         "this process may run on)")
    torch.set_num_threads(threads)


def _find_results(results_dir: Path, name: str) -> list[Path]:
    """Every ``<name>.jsonl`` under ``results_dir`` (any depth), sorted."""
    return sorted(p for p in results_dir.rglob(f"{name}.jsonl") if p.is_file())


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        for name in experiment_names():
            print(f"{name}: {get_experiment(name).description}")
        return 0
    if args.command == "run":
        from .sweep import run_sweep

        experiment = get_experiment(args.experiment)
        seeds = None if args.seeds is None else check_positive_int(args.seeds, "seeds")
        options = {"first_layer_only": True} if args.first_layer_only else {}
        if args.compat:
            options["compat"] = True
        if args.data_dir is not None:
            options["data_dir"] = args.data_dir
        accepted = inspect.signature(experiment.configs).parameters
        for key in options:
            if key not in accepted:
                users = [n for n in experiment_names() if key in inspect.signature(get_experiment(n).configs).parameters]
                raise ValueError(f"--{key.replace('_', '-')} does not apply to experiment {args.experiment!r}: "
                                 f"allowed only with {', '.join(users)}")
        configs = experiment.configs(args.scale, seeds, **options)
        _set_threads(args.threads)
        device = resolve_device(args.device)
        summary = run_sweep(experiment, configs, Path(args.out), device, resume=args.resume)
        if args.json:
            print(dumps(summary))
        else:
            print(f"{summary.experiment}: {summary.ran} run(s) done, {summary.skipped} already finished, "
                  f"{summary.total} in the sweep; {summary.wall_seconds:.1f} s; results in {summary.results}")
        return 0
    if args.command == "figures":
        from .results import ResultsStore

        results_dir, out_dir = Path(args.results), Path(args.out)
        if not results_dir.is_dir():
            if results_dir.exists():
                raise NotADirectoryError(f"results={str(results_dir)!r} is not a directory: allowed a directory "
                                         "holding <experiment>.jsonl results files")
            raise FileNotFoundError(f"results directory {str(results_dir)!r} does not exist")
        written: dict[str, list[str]] = {}
        for name in experiment_names():
            for path in _find_results(results_dir, name):
                records = ResultsStore(path, name).load()
                if records:  # figures go to the results file's place, mirrored under --out
                    target = out_dir / path.parent.relative_to(results_dir)
                    written.setdefault(name, []).extend(str(p) for p in get_experiment(name).figures(records, target))
        if not written:
            raise FileNotFoundError(f"no results files (<name>.jsonl) for {', '.join(experiment_names())} "
                                    f"under {str(results_dir)!r}")
        if args.json:
            print(dumps(written))
        else:
            for name, paths in written.items():
                for p in paths:
                    print(f"{name}: {p}")
        return 0
    if args.command == "bench":
        from .bench import run_bench

        _set_threads(args.threads)
        result = run_bench(resolve_device(args.device), models=args.models, steps=args.steps)
        if args.json:
            print(dumps(result))
        else:
            print(f"device: {result.device}, torch threads {result.threads}")
            for case in result.cases:
                c = case.to_dict()
                print(f"{c['name']}: {c['models']} models x {c['steps']} steps: loop {c['loop_model_steps_per_s']:.0f}, "
                      f"batched {c['batched_model_steps_per_s']:.0f} model·steps/s, speedup {c['speedup']:.2f}x")
        return 0
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(run_main(main))
