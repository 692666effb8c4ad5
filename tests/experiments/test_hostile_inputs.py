"""``python -m experiments`` against hostile inputs (issue 13 §1, §5–§8; issue 15 §5), through the real CLI in
subprocesses: absurd sizes and memory budgets, damaged results files, two writers on one results file, damaged
CIFAR batches, a file-size limit while results and figures are written.

A refusal is: exit status 2, exactly one line on stderr naming the problem, no traceback, nothing left behind.
The independent refusals run two at a time in one module fixture (each subprocess imports torch, ~3 s of CPU).
"""
from __future__ import annotations

import json
import os
import pickle
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from experiments.e1_three_layer import EXPERIMENT as E1
from experiments.infra.results import ResultsStore

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def _cli(args, cwd, fsize: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m experiments ARGS`` in ``cwd`` (optionally under a file-size limit of ``fsize`` bytes)."""
    def limit():  # runs in the child before exec; Python ignores SIGXFSZ, so writes fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "experiments", *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=None if fsize is None else limit)


def _assert_refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) if directory.exists() else []


# ------------------------------------------------------------------------------------------- damaged inputs

def _records(n: int = 3) -> list[dict]:
    """``n`` well-formed E1 records (the first ``n`` smoke configs; metrics are stand-ins, never plotted)."""
    return [ResultsStore.make_record("e1", c, {"members": [{"density": 1.0}]}, "cpu", 0.0)
            for c in E1.configs("smoke", 1)[:n]]


def _line(record) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def _damaged_lines(kind: str) -> tuple[list[str], str]:
    """Lines of a damaged results file and the text the refusal must contain."""
    good = _records()
    lines = [_line(r) for r in good]
    if kind == "no_key":
        del good[1]["key"]
        lines[1] = _line(good[1])
        return lines, "line 2 has no 'key'"
    if kind == "list_key":
        good[1]["key"] = [good[1]["key"]]
        lines[1] = _line(good[1])
        return lines, "line 2 has a 'key' that is a JSON list"
    if kind == "duplicate":
        return lines + [lines[0]], "line 4 repeats the run of line 1"
    if kind == "no_metrics":
        del good[2]["metrics"]
        lines[2] = _line(good[2])
        return lines, "line 3 has no 'metrics'"
    if kind == "nan_metric":  # on the last line, which is complete: not an interrupted write
        lines[2] = lines[2].replace('"density":1.0', '"density":NaN')
        assert "NaN" in lines[2]
        return lines, "line 3 holds NaN"
    raise AssertionError(kind)


DAMAGES = ("no_key", "list_key", "duplicate", "no_metrics", "nan_metric")
FIGURE_DAMAGES = ("no_key", "nan_metric")  # figures reads through the same validation as --resume


def _write_cifar10(directory: Path, data=None, labels=None) -> Path:
    """Six tiny CIFAR-10 batch files; ``data_batch_3`` gets ``data``/``labels`` when given."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, size=(4, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, 10, size=4)]}
        if name == "data_batch_3":
            batch["data"] = batch["data"] if data is None else data
            batch["labels"] = batch["labels"] if labels is None else labels
        with open(directory / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    return directory


def _cases(base: Path) -> dict[str, tuple[list, Path, tuple[str, ...]]]:
    """id → (argv, output directory that must stay empty/unchanged, needles of the one-line refusal)."""
    cases = {
        "run_seeds_absurd": (["run", "e1", "--seeds", 10**9, "--out", base / "seeds"], base / "seeds",
                             ("seeds=1000000000 is out of range", "1..1000")),
        "run_paper_over_budget": (["run", "e1", "--scale", "paper", "--out", base / "paper", "--max-memory", "2G"],
                                  base / "paper", ("largest run", "over the budget of 2 GiB", "--max-memory")),
        "bench_models_absurd": (["bench", "--models", 10**9], base / "none", ("models=1000000000 is out of range",)),
        "bench_over_budget": (["bench", "--models", 1000, "--max-memory", "10M"], base / "none",
                              ("benchmark of 1000 models", "over the budget of 10 MiB", "--max-memory")),
        "cifar_label_99": (["run", "layerwise", "--scale", "paper", "--data-dir",
                            _write_cifar10(base / "cifar99", labels=[1, 99, 2, 3]), "--out", base / "c99"],
                           base / "c99", ("data_batch_3", "holds label 99: allowed labels 0..9")),
        "cifar_float_pixels": (["run", "layerwise", "--scale", "paper", "--data-dir",
                                _write_cifar10(base / "cifarf", data=np.full((4, 3072), 1e9)), "--out", base / "cf"],
                               base / "cf", ("data_batch_3", "'data' has dtype float64: allowed a uint8 array")),
    }
    for kind in DAMAGES:
        lines, needle = _damaged_lines(kind)
        for command in ("resume", "figures") if kind in FIGURE_DAMAGES else ("resume",):
            results = base / f"{kind}-{command}"
            results.mkdir()
            (results / "e1.jsonl").write_text("\n".join(lines) + "\n")
            argv = (["run", "e1", "--out", results, "--resume"] if command == "resume"
                    else ["figures", "--results", results, "--out", base / f"{kind}-figs"])
            target = results if command == "resume" else base / f"{kind}-figs"
            cases[f"{command}_{kind}"] = (argv, target, (str(results / "e1.jsonl"), needle))
    return cases


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    """Run every independent refusal case, two subprocesses at a time; id → (process, directory, needles, before)."""
    base = tmp_path_factory.mktemp("hostile")
    cases = _cases(base)
    before = {name: {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} if target.exists() else {}
              for name, (_, target, _) in cases.items()}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_cli, argv, base) for name, (argv, _, _) in cases.items()}
        return {name: (futures[name].result(), cases[name][1], cases[name][2], before[name]) for name in cases}


CASE_IDS = (["run_seeds_absurd", "run_paper_over_budget", "bench_models_absurd", "bench_over_budget",
             "cifar_label_99", "cifar_float_pixels"]
            + [f"resume_{kind}" for kind in DAMAGES] + [f"figures_{kind}" for kind in FIGURE_DAMAGES])


@pytest.mark.parametrize("case", CASE_IDS)
def test_refused_in_one_line_and_nothing_left_behind(refusals, case):
    proc, target, needles, before = refusals[case]
    _assert_refused(proc, *needles)
    after = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} if target.exists() else {}
    assert after == before  # a damaged results file is left as it was; no results or figure file appears
    assert not target.exists() or before or not any(target.iterdir())


# ------------------------------------------------------------------------------------ two writers, one file

def test_second_writer_is_refused_while_a_sweep_holds_the_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom experiments.infra.results import ResultsStore\n"
         f"lock = ResultsStore({str(tmp_path / 'e1.jsonl')!r}, 'e1').lock()\nprint('locked', flush=True)\n"
         "sys.stdin.readline()\nlock.release()\nprint('released', flush=True)\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = _cli(["run", "e1", "--out", tmp_path, "--resume"], tmp_path)
        _assert_refused(proc, str(tmp_path / "e1.jsonl"), "in use by another sweep")
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    assert _files(tmp_path) == []  # the holder created the file, wrote nothing, and removed it on release


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory):
    """Two ``run e1`` sweeps (smoke, --resume) started together on one --out: (processes, results directory)."""
    out = tmp_path_factory.mktemp("two-writers")
    argv = [sys.executable, "-m", "experiments", "run", "e1", "--out", str(out), "--resume"]
    procs = [subprocess.Popen(argv, cwd=out, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    return [(p.returncode, o, e) for p, (o, e) in zip(procs, outputs)], out


def test_two_concurrent_sweeps_one_runs_one_is_refused(two_sweeps):
    results, out = two_sweeps
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(r for r in results if r[0] == 2)
    _assert_refused(subprocess.CompletedProcess([], 2, refused[1], refused[2]), "in use by another sweep")
    records = ResultsStore(out / "e1.jsonl", "e1").load()  # validates every line, refuses duplicates
    assert len(records) == len(E1.configs("smoke", 1)) == 8
    assert _files(out) == ["e1.jsonl"]


# ----------------------------------------------------------------------------------- a full disk (EFBIG)

def _complete_lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), raw[-80:]
    return [json.loads(line) for line in raw.decode().splitlines()]


def test_results_append_hitting_the_file_size_limit_leaves_no_partial_line(tmp_path):
    # E1 smoke records are 1.6-2.2 kB: the first fits under 3000 bytes, the second is cut by the limit
    proc = _cli(["run", "e1", "--out", tmp_path, "--progress", "none"], tmp_path, fsize=3000)
    # the OSError (EFBIG) becomes one line naming the file, exit 2 (theory.cli.run_main), no traceback
    _assert_refused(proc, "File too large", "e1.jsonl")
    records = _complete_lines(tmp_path / "e1.jsonl")
    assert 1 <= len(records) < 8
    assert ResultsStore(tmp_path / "e1.jsonl", "e1").load() == records
    assert _files(tmp_path) == ["e1.jsonl"]


def test_figures_hitting_the_file_size_limit_leave_no_partial_file(tmp_path, two_sweeps):
    _, out = two_sweeps
    results = tmp_path / "results"
    results.mkdir()
    (results / "e1.jsonl").write_bytes((out / "e1.jsonl").read_bytes())
    proc = _cli(["figures", "--results", results, "--out", tmp_path / "figs"], tmp_path, fsize=20_000)
    _assert_refused(proc, "File too large", "figs")
    left = _files(tmp_path / "figs")
    assert not [name for name in left if Path(name).name.startswith(".")]  # no temporary file
    for name in left:  # whatever was written before the limit hit is whole
        data = (tmp_path / "figs" / name).read_bytes()
        if name.endswith(".pdf"):
            assert data.rstrip().endswith(b"%%EOF")
        elif name.endswith(".png"):
            assert data.endswith(b"IEND\xaeB`\x82")


# ------------------------------------------------------------------- the same guards, in-process (fast)

@pytest.mark.parametrize("kind", DAMAGES)
def test_damaged_results_file_is_refused_with_file_and_line(tmp_path, kind):
    lines, needle = _damaged_lines(kind)
    path = tmp_path / "e1.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as info:
        ResultsStore(path, "e1").load()
    assert str(path) in str(info.value) and needle in str(info.value) and "\n" not in str(info.value)


def test_edited_config_and_bad_key_format_are_refused(tmp_path):
    record = _records(1)[0]
    path = tmp_path / "e1.jsonl"
    edited = dict(record, config=dict(record["config"], seed=7))
    path.write_text(_line(edited) + "\n")
    with pytest.raises(ValueError, match="line 1 has key .* not the hash of its config"):
        ResultsStore(path, "e1").load()
    path.write_text(_line(dict(record, key="x" * 16)) + "\n")
    with pytest.raises(ValueError, match="line 1 has key 'xxxxxxxxxxxxxxxx': allowed 16 hexadecimal digits"):
        ResultsStore(path, "e1").load()
    path.write_text("[1, 2]\n" + _line(record) + "\n")
    with pytest.raises(ValueError, match="line 1 is a JSON list"):
        ResultsStore(path, "e1").load()


def test_failed_append_is_cut_back_to_the_previous_length(tmp_path, monkeypatch):
    import errno

    import experiments.infra.results as results

    path = tmp_path / "e1.jsonl"
    store = ResultsStore(path, "e1")
    first, second = _records(2)
    store.append(first)
    good = path.read_bytes()
    real_pwrite = os.pwrite

    def full_disk(fd, data, offset):  # writes half the line, then the disk is full
        if len(data) > 100:
            return real_pwrite(fd, bytes(data[:len(data) // 2]), offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results.os, "pwrite", full_disk)
    with pytest.raises(OSError, match="No space left"):
        store.append(second)
    assert path.read_bytes() == good
    monkeypatch.setattr(results.os, "pwrite", real_pwrite)
    store.append(second)
    assert [r["key"] for r in ResultsStore(path, "e1").load()] == [first["key"], second["key"]]


def test_lock_is_exclusive_and_released(tmp_path):
    path = tmp_path / "sub" / "e1.jsonl"
    store = ResultsStore(path, "e1")
    with store.lock():
        with pytest.raises(ValueError, match="in use by another sweep"):
            store.lock()
        assert path.exists()
    assert not (tmp_path / "sub").exists()  # created for the lock, unused: removed with its directory
    lock = store.lock()
    store.append(_records(1)[0])
    lock.release()
    assert path.exists()  # holds a run: kept
    with store.lock():
        pass
