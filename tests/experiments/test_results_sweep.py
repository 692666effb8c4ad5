"""Results store and sweep runner: append + fsync, corrupt last line, foreign files, crash/kill and resume."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from sweep_doubles import Fake  # noqa: E402

from experiments.infra.results import ResultsStore, ResultsWarning, config_key
from experiments.infra.sweep import failures_path, results_path, run_sweep


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_config_key_is_canonical():
    assert config_key({"a": 1, "b": [1, 2]}) == config_key({"b": [1, 2], "a": 1})
    assert config_key({"a": 1}) != config_key({"a": 2})


def test_append_load_and_foreign_experiment(tmp_path):
    store = ResultsStore(tmp_path / "x.jsonl", "fake")
    record = ResultsStore.make_record("fake", {"i": 1, "seed": 0}, {"m": 2.5}, "cpu", 0.1)
    store.append(record)
    loaded = ResultsStore(tmp_path / "x.jsonl", "fake").load()
    assert loaded[0]["metrics"] == {"m": 2.5} and loaded[0]["key"] == config_key({"i": 1, "seed": 0})
    assert set(loaded[0]) >= {"config", "seed", "metrics", "versions", "device", "wall_seconds"}
    with pytest.raises(ValueError, match="holds runs of experiment 'fake'"):
        ResultsStore(tmp_path / "x.jsonl", "other").load()


def test_corrupt_last_line_is_ignored_then_cut(tmp_path):
    path = tmp_path / "x.jsonl"
    store = ResultsStore(path, "fake")
    store.append(ResultsStore.make_record("fake", {"i": 1}, {"m": 1}, "cpu", 0))
    with open(path, "ab") as fh:
        fh.write(b'{"experiment": "fake", "key": "trunc')  # a write interrupted mid-line
    fresh = ResultsStore(path, "fake")
    with pytest.warns(ResultsWarning, match="corrupt last line 2"):
        assert len(fresh.load()) == 1
    fresh.append(ResultsStore.make_record("fake", {"i": 2}, {"m": 2}, "cpu", 0))
    assert [r["config"]["i"] for r in _lines(path)] == [1, 2]


def test_corrupt_middle_line_is_refused(tmp_path):
    path = tmp_path / "x.jsonl"
    good = [json.dumps(ResultsStore.make_record("fake", {"i": i}, {"m": i}, "cpu", 0)) for i in (1, 2)]
    path.write_text(good[0] + "\nnot json\n" + good[1] + "\n")
    with pytest.raises(ValueError, match="corrupt line 2"):
        ResultsStore(path, "fake").load()


def test_raising_run_is_recorded_failed_not_retried_and_resume_reruns_it(tmp_path):
    crashing = Fake(crash_at=5)
    configs = crashing.configs("smoke")
    summary = run_sweep(crashing, configs, tmp_path, torch.device("cpu"), progress=False)
    path = results_path(tmp_path, "fake")
    assert [r["config"]["i"] for r in _lines(path)] == [0, 1, 2, 3, 4, 6, 7]  # the sweep went on
    assert (summary.ran, summary.failed, crashing.calls) == (7, 1, 8)  # run 5 was tried once, not retried
    (failure,) = _lines(failures_path(tmp_path, "fake"))
    assert failure["config"] == {"i": 5, "seed": 1} and failure["status"] == "failed" and failure["attempts"] == 1
    assert failure["error"] == "RuntimeError: injected crash at i=5" and failure["key"] == config_key(configs[5])
    assert summary.failures == str(failures_path(tmp_path, "fake"))
    with pytest.raises(ValueError, match="--resume"):
        run_sweep(Fake(), configs, tmp_path, torch.device("cpu"), progress=False)
    assert len(_lines(path)) == 7  # refusing did not touch the file
    healthy = Fake()
    summary = run_sweep(healthy, configs, tmp_path, torch.device("cpu"), resume=True, progress=False)
    assert (summary.skipped, summary.ran, summary.failed, healthy.calls) == (7, 1, 0, 1)
    records = _lines(path)
    assert sorted(r["config"]["i"] for r in records) == list(range(8))
    assert all(r["metrics"]["square"] == r["config"]["i"] ** 2 for r in records)


def test_retries_rerun_a_raising_run_at_most_n_more_times(tmp_path):
    crashing = Fake(crash_at=2)
    summary = run_sweep(crashing, crashing.configs("smoke"), tmp_path, torch.device("cpu"), progress=False, retries=2)
    assert (summary.ran, summary.failed, crashing.calls) == (7, 1, 10)
    assert _lines(failures_path(tmp_path, "fake"))[0]["attempts"] == 3


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    """--progress auto writes plain lines to a pipe: a start line, heartbeats while a run is in progress, an end line."""
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from sweep_doubles import Fake
        from experiments.infra.sweep import run_sweep
        exp = Fake(delay_s=0.3, runs=3)
        run_sweep(exp, exp.configs("smoke"), {str(tmp_path)!r}, torch.device("cpu"), progress_interval_s=0.1)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]
    lines = proc.stderr.splitlines()
    assert lines[0] == "fake: 3 runs, 0 already finished"
    beats = [line for line in lines[1:-1] if line.startswith("fake: ") and "runs done" in line]
    assert len(beats) >= 4  # 0.9 s of runs at one line per 0.1 s
    assert lines[-1].startswith("fake: 3/3 runs done (0 failed), ")
    assert "\r" not in proc.stderr  # no bar redraws in a log


def test_sigkill_mid_sweep_then_resume(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time, torch
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from sweep_doubles import Fake
        from experiments.infra.sweep import run_sweep

        class Slow(Fake):
            def run(self, config, device, on_loss=None):
                time.sleep(0.15)
                return super().run(config, device, on_loss)

        exp = Slow()
        run_sweep(exp, exp.configs("smoke"), {str(tmp_path)!r}, torch.device("cpu"), resume=True, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    path = results_path(tmp_path, "fake")
    deadline = time.time() + 60
    while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < 2):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(_lines(path))
    assert 2 <= done < 8, proc.stderr.read().decode()[-500:]
    summary = run_sweep(Fake(), Fake().configs("smoke"), tmp_path, torch.device("cpu"), resume=True, progress=False)
    records = _lines(path)
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == 8
    assert summary.skipped == done and summary.ran == 8 - done
