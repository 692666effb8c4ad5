"""Command line of the experiments package (docs/experiments.md): ``run``, ``figures``, ``bench``, ``list``.

    python -m experiments run e1 --scale smoke|default|paper --device auto|cpu|cuda --out DIR [--seeds N] [--resume]
        [--engine local|ray [--address auto|HOST:PORT] [--cpus-per-run N] [--gpus-per-run F]] [--retries N]
        [--progress auto|bar|lines|none] [--where KEY=VALUE ...] [--limit N]
    python -m experiments figures [--results DIR] [--out DIR]
    python -m experiments bench [--device auto|cpu|cuda] [--json]
    python -m experiments bench-engine [--engine local|ray] [--address ADDR] [--tasks N] [--json]
"""
from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import torch

from theory.cli import ArgumentParser, dumps, run_main
from theory.memory import parse_memory
from theory.validation import check_positive_int

from .infra.device import DEVICE_CHOICES, resolve_device
from .infra.engine import ENGINES, RAY_EXTRA_HINT, EngineSpec, open_engine
from .infra.progress import PROGRESS_MODES
from .infra.registry import SCALES, experiment_names, get_experiment


_MAX_MEMORY_HELP = ("memory budget, e.g. 8G or 512M: what the command would allocate is estimated first and "
                    "refused beyond it (default 80%% of the available memory)")


def _max_memory(args):
    return None if args.max_memory is None else parse_memory(args.max_memory, "max_memory")


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m experiments", description="Experiments of 'Why Random Pruning Is All We "
                            "Need to Start Sparse' (Gadhikar et al. 2023): sweeps with resumable JSONL results, "
                            "figures from stored results, and a batching benchmark.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_common(p, default_threads=1, threads_help=""):
        p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                       help="auto = CUDA when torch sees a GPU, else CPU; cuda without a GPU is an error (default auto)")
        p.add_argument("--threads", type=int, default=default_threads,
                       help=threads_help or "torch CPU threads (default 1: on a shared or small CPU more threads are "
                                            "often slower)")

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
                     help="layerwise: use the released code's clamp-only ERK/balanced densities (docs/math.md §7), whose "
                          "realized global density undershoots the label; the realized density is always recorded")
    run.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                     help="run only the configs whose KEY equals VALUE (JSON value, else text; repeatable, all must "
                          "match), e.g. --where density=0.1; the selected runs keep their keys, so a later --resume "
                          "without --where completes the sweep")
    run.add_argument("--limit", type=int, default=None,
                     help="run only the first N configs (after --where), e.g. to time one run before a sweep")
    run.add_argument("--engine", default="local", choices=ENGINES,
                     help="local = in this process, one run after the other (default); ray = one Ray task per run "
                          f"(needs the extra: {RAY_EXTRA_HINT})")
    run.add_argument("--address", default=None,
                     help="ray: join a running cluster, 'auto' or HOST:PORT of its head (ray start --head); default: "
                          "start an embedded Ray instance on this machine (no dashboard), stopped at the end")
    run.add_argument("--cpus-per-run", type=int, default=1,
                     help="ray: CPUs reserved per run, also its torch threads unless --threads is given (default 1)")
    run.add_argument("--gpus-per-run", type=float, default=0.0,
                     help="ray: GPUs reserved per run, fractional allowed (0.25: four runs share a GPU; default 0)")
    run.add_argument("--max-cpus", type=int, default=None,
                     help="ray without --address: CPUs of the embedded instance (default: every CPU this process "
                          "may use)")
    run.add_argument("--retries", type=int, default=0,
                     help="run a run that raised again, at most N more times (default 0: a raising run is recorded "
                          "in <out>/<experiment>.failed.jsonl and the sweep goes on)")
    run.add_argument("--progress", default="auto", choices=PROGRESS_MODES,
                     help="auto = a bar on a terminal, else a line at least every 30 s (logs, nohup, notebooks)")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.add_argument("--max-memory", default=None, help=_MAX_MEMORY_HELP)
    add_common(run, default_threads=None,
               threads_help="torch CPU threads per run (default: --cpus-per-run, i.e. 1; on a shared or small CPU "
                            "more threads are often slower)")

    fig = sub.add_parser("figures", help="make every figure there are results for (PDF + PNG, reproducible bytes)")
    fig.add_argument("--results", default="figures",
                     help="directory searched (recursively) for <experiment>.jsonl results files (default figures)")
    fig.add_argument("--out", default="figures",
                     help="figures of <results>/SUB/<experiment>.jsonl go to <out>/SUB/ (default figures)")
    fig.add_argument("--json", action="store_true", help="print the written paths as JSON")
    fig.add_argument("--max-memory", default=None, help=_MAX_MEMORY_HELP)

    bench = sub.add_parser("bench", help="Python loop over models vs batched ensemble: models·steps per second")
    bench.add_argument("--models", type=int, default=64, help="number of small MLPs (default 64)")
    bench.add_argument("--steps", type=int, default=50, help="Adam steps per model (default 50)")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.add_argument("--max-memory", default=None, help=_MAX_MEMORY_HELP)
    add_common(bench)

    be = sub.add_parser("bench-engine", help="engine overhead: time to start/join, then wall time per no-op task")
    be.add_argument("--engine", default="local", choices=ENGINES)
    be.add_argument("--address", default=None, help="ray: 'auto' or HOST:PORT (default: embedded instance)")
    be.add_argument("--workers", type=int, default=None,
                    help="local: processes (default 1 = this process); ray without --address: CPUs (default all)")
    be.add_argument("--tasks", type=int, default=200, help="no-op tasks (default 200)")
    be.add_argument("--json", action="store_true", help="print the result as JSON")

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


def _parse_where(items: list[str]) -> list[tuple[str, object]]:
    """``KEY=VALUE`` filters; VALUE is read as JSON when it parses (0.1, true, "x"), else kept as text."""
    import json

    out = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"where={item!r} is invalid: allowed KEY=VALUE, e.g. density=0.1")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        out.append((key, value))
    return out


def _select(configs: list[dict], where: list[tuple[str, object]]) -> list[dict]:
    """The configs matching every filter; a filter that matches nothing is refused (one line, names the values)."""
    for key, value in where:
        if not any(key in c for c in configs):
            keys = sorted({k for c in configs for k in c})
            raise ValueError(f"where key={key!r} is not a config field: allowed {', '.join(keys)}")
        chosen = [c for c in configs if key in c and c[key] == value]
        if not chosen:
            values = sorted({json.dumps(c[key], sort_keys=True) for c in configs if key in c})[:20]
            raise ValueError(f"where {key}={value!r} matches no config: allowed {', '.join(values)}")
        configs = chosen
    return configs


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
        from .infra.sweep import run_sweep

        from .infra.registry import check_seeds
        from .infra.sweep_memory import plan_sweep

        experiment = get_experiment(args.experiment)
        seeds = None if args.seeds is None else check_seeds(args.seeds)
        max_memory = _max_memory(args)
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
        # a cluster's workers resolve --device themselves (their GPUs are not this machine's)
        device = args.device if args.address is not None else resolve_device(args.device)
        planned = plan_sweep(experiment, args.scale, seeds, options, Path(args.out) / f"{experiment.name}.jsonl",
                             max_memory, device=None if isinstance(device, str) else device).configs
        configs = _select(planned, _parse_where(args.where))
        if args.limit is not None:
            configs = configs[:check_positive_int(args.limit, "limit")]
        retries = check_positive_int(args.retries, "retries", minimum=0)
        if args.max_cpus is not None and (args.engine != "ray" or args.address is not None):
            raise ValueError("--max-cpus applies to an embedded Ray instance only: allowed with --engine ray and "
                             "no --address")
        spec = EngineSpec(args.engine, workers=args.max_cpus if args.engine == "ray" else 1, address=args.address,
                          cpus_per_task=check_positive_int(args.cpus_per_run, "cpus_per_run"),
                          gpus_per_task=args.gpus_per_run)
        threads = check_positive_int(args.threads if args.threads is not None else args.cpus_per_run, "threads")
        if spec.kind == "local":
            torch.set_num_threads(threads)
        with open_engine(spec) as engine:
            summary = run_sweep(experiment, configs, Path(args.out), device, resume=args.resume, engine=engine,
                                retries=retries, progress=args.progress, threads=threads)
        if args.json:
            print(dumps(summary))
        else:
            print(f"{summary.experiment}: {summary.ran} run(s) done, {summary.skipped} already finished, "
                  f"{summary.failed} failed, {summary.total} in the sweep; {summary.wall_seconds:.1f} s on "
                  f"{summary.engine}; results in {summary.results}")
            if summary.failed:
                print(f"{summary.experiment}: {summary.failed} failed run(s) recorded in {summary.failures} "
                      f"(--resume runs them again; first error: {summary.errors[0]['error']})", file=sys.stderr)
        return 1 if summary.failed else 0
    if args.command == "figures":
        from .infra.results import ResultsStore

        results_dir, out_dir = Path(args.results), Path(args.out)
        max_memory = _max_memory(args)
        if not results_dir.is_dir():
            if results_dir.exists():
                raise NotADirectoryError(f"results={str(results_dir)!r} is not a directory: allowed a directory "
                                         "holding <experiment>.jsonl results files")
            raise FileNotFoundError(f"results directory {str(results_dir)!r} does not exist")
        written: dict[str, list[str]] = {}
        for name in experiment_names():
            for path in _find_results(results_dir, name):
                records = ResultsStore(path, name).load(max_memory)
                if records:  # figures go to the results file's place, mirrored under --out
                    target = out_dir / path.parent.relative_to(results_dir)
                    written.setdefault(name, []).extend(str(p) for p in get_experiment(name).figures(records, target))
        if not written:
            raise FileNotFoundError(f"no results files (<name>.jsonl) for {', '.join(experiment_names())} "
                                    f"under {str(results_dir)!r}")
        from .density_figure import make_density_figures  # needs no results: exact, from the shapes (docs/math.md §7)

        written["densities"] = [str(p) for p in make_density_figures(out_dir / "densities")]
        if args.json:
            print(dumps(written))
        else:
            for name, paths in written.items():
                for p in paths:
                    print(f"{name}: {p}")
        return 0
    if args.command == "bench-engine":
        from .infra.engine import measure_overhead

        workers = args.workers if args.workers is not None else (1 if args.engine == "local" else None)
        result = measure_overhead(EngineSpec(args.engine, workers=workers, address=args.address),
                                  check_positive_int(args.tasks, "tasks"))
        if args.json:
            print(dumps(result))
        else:
            print(f"{result['engine']}: open {result['open_seconds']:.2f} s, first {result['warmup_tasks']} tasks "
                  f"{result['warmup_seconds']:.2f} s, then {result['tasks']} no-op tasks in "
                  f"{result['wall_seconds']:.2f} s = {result['ms_per_task']:.2f} ms per task")
        return 0
    if args.command == "bench":
        from .bench import run_bench

        _set_threads(args.threads)
        result = run_bench(resolve_device(args.device), models=args.models, steps=args.steps,
                           max_memory=_max_memory(args))
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
