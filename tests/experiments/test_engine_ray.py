"""The Ray engine against a real local Ray cluster (no mocks): `ray start --head` on a free port of this machine with
2 CPUs and no dashboard, stopped with `ray stop --force` at the end of the module whatever happens. The sweeps on
Ray equal the local engine's metric for metric; a SIGKILLed Ray driver resumed on the local engine loses and
duplicates nothing; a raising run is recorded as failed; E5's nested construction tasks run as Ray tasks.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from sweep_doubles import Fake  # noqa: E402

from experiments.infra.engine import EngineSpec, open_engine  # noqa: E402
from experiments.infra.sweep import failures_path, results_path, run_sweep  # noqa: E402

CPU = torch.device("cpu")
# Ray 2.60 turns token authentication on for `ray start --head` when a token exists (~/.ray/auth_token), and a
# driver joining with an explicit address uses it only with RAY_AUTH_MODE=token, read when ray is first imported —
# which may have happened earlier in this pytest process. The test's short-lived cluster therefore runs without
# authentication (RAY_AUTH_MODE=disabled for the head and every driver it starts).
AUTH = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _env():
    """This process's environment with the repository and the test doubles importable (drivers and Ray workers)."""
    env = dict(os.environ, **AUTH)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _ray_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "ray.scripts.scripts", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """Address of a `ray start --head` cluster (2 CPUs, no dashboard); `ray stop --force` at teardown, always."""
    saved = {k: os.environ.get(k) for k in AUTH}
    os.environ.update(AUTH)  # the in-process drivers of this module join with the same token
    try:
        started = _ray_cli("start", "--head", f"--port={_free_port()}", "--num-cpus=2", "--include-dashboard=false",
                           "--disable-usage-stats")
        found = re.search(r"ray start --address='([^']+)'", started.stdout + started.stderr)
        assert started.returncode == 0 and found, (started.stdout + started.stderr)[-2000:]
        yield found.group(1)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        stopped = _ray_cli("stop", "--force", timeout=120)
        assert stopped.returncode == 0, stopped.stderr[-1000:]


@pytest.fixture(scope="module")
def ray_engine(cluster):
    """This process joined to the test's cluster (one connection, so its Ray workers are reused across tests)."""
    with open_engine(EngineSpec("ray", address=cluster)) as engine:
        yield engine


@pytest.fixture(scope="module")
def local_e1_file(tmp_path_factory):
    """The local engine's results file of the E1 smoke sweep."""
    out = tmp_path_factory.mktemp("local_e1")
    _cli("run", "e1", "--scale", "smoke", "--device", "cpu", "--out", str(out))
    return results_path(out, "e1")


@pytest.fixture(scope="module")
def local_e1(local_e1_file):
    """key → metrics of the local engine's E1 smoke sweep."""
    return _metrics(local_e1_file)


def _cli(*args, expect=0):
    proc = subprocess.run([sys.executable, "-m", "experiments", *args, "--progress", "none"], capture_output=True,
                          text=True, timeout=600, env=_env())
    assert proc.returncode == expect, proc.stderr[-2000:]
    return proc


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _metrics(path):
    records = _lines(path)
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)), "duplicated runs"
    return {r["key"]: r["metrics"] for r in records}


def test_joined_cluster_sweep_equals_local(cluster, local_e1, tmp_path):
    """A second process joins the test's cluster with --address and runs the E1 smoke sweep: same metrics."""
    proc = _cli("run", "e1", "--scale", "smoke", "--device", "cpu", "--out", str(tmp_path), "--engine", "ray",
                "--address", cluster)
    assert f"on ray (cluster {cluster}; 2 CPUs, 0 GPUs)" in proc.stdout
    assert _metrics(results_path(tmp_path, "e1")) == local_e1


def test_local_partial_then_embedded_ray_resume_equals_local(cluster, local_e1_file, local_e1, tmp_path):
    """The first 2 runs of the local sweep's file, the rest resumed on an embedded Ray instance (no --address; a
    fresh instance although the test's cluster runs on this machine): same metrics, nothing duplicated."""
    head = local_e1_file.read_text().splitlines(keepends=True)[:2]
    results_path(tmp_path, "e1").write_text("".join(head))
    proc = _cli("run", "e1", "--scale", "smoke", "--device", "cpu", "--out", str(tmp_path), "--resume",
                "--engine", "ray", "--max-cpus", "2")
    assert "6 run(s) done, 2 already finished, 0 failed" in proc.stdout and "embedded, 2 CPUs" in proc.stdout
    assert _metrics(results_path(tmp_path, "e1")) == local_e1


def test_sigkill_ray_driver_then_local_resume_loses_and_duplicates_nothing(cluster, tmp_path):
    runs = 12
    script = textwrap.dedent(f"""
        import torch
        from sweep_doubles import Fake
        from experiments.infra.engine import EngineSpec, open_engine
        from experiments.infra.sweep import run_sweep
        exp = Fake(delay_s=0.4, runs={runs})
        with open_engine(EngineSpec("ray", address={cluster!r})) as engine:
            run_sweep(exp, exp.configs("smoke"), {str(tmp_path)!r}, torch.device("cpu"), engine=engine,
                      progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, env=_env())
    path = results_path(tmp_path, "fake")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and (
            not path.exists() or len(path.read_text().splitlines()) < 2):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(_lines(path))
    assert 2 <= done < runs, proc.stderr.read().decode()[-1000:]
    summary = run_sweep(Fake(runs=runs), Fake(runs=runs).configs("smoke"), tmp_path, CPU, resume=True,
                        progress=False)
    metrics = _metrics(path)
    assert len(metrics) == runs and summary.skipped == done and summary.ran == runs - done
    assert sorted(m["square"] for m in metrics.values()) == [i * i for i in range(runs)]


def test_raising_run_on_ray_is_recorded_failed_and_retries_are_explicit(ray_engine, tmp_path):
    engine = ray_engine
    crashing = Fake(crash_at=3)
    summary = run_sweep(crashing, crashing.configs("smoke"), tmp_path / "a", CPU, engine=engine, progress=False)
    (failure,) = _lines(failures_path(tmp_path / "a", "fake"))
    assert (summary.ran, summary.failed) == (7, 1)
    assert failure["error"] == "RuntimeError: injected crash at i=3" and failure["attempts"] == 1
    assert failure["engine"] == "ray" and failure["config"] == {"i": 3, "seed": 1}
    assert sorted(r["config"]["i"] for r in _lines(results_path(tmp_path / "a", "fake"))) == [0, 1, 2, 4, 5, 6, 7]
    again = run_sweep(crashing, crashing.configs("smoke"), tmp_path / "b", CPU, engine=engine, progress=False,
                      retries=2)
    assert _lines(failures_path(tmp_path / "b", "fake"))[0]["attempts"] == 3 and again.failed == 1


def test_e5_nested_construction_tasks_on_ray_equal_local(ray_engine, tmp_path):
    """E5 runs its (multiplier, seed) tasks as nested Ray tasks inside each sweep run: same metrics as local."""
    from experiments.e5_construction import EXPERIMENT as E5

    configs = [c for c in E5.configs("smoke") if c["construction"] == "2l"][:1]
    local = run_sweep(E5, configs, tmp_path / "local", CPU, progress=False)
    on_ray = run_sweep(E5, configs, tmp_path / "ray", CPU, engine=ray_engine, progress=False)
    assert local.ran == on_ray.ran == 1 and on_ray.failed == 0
    assert len(_lines(results_path(tmp_path / "ray", "construction"))[0]["metrics"]["tasks"]) >= 2

    def strip(metrics):  # per-task seconds are wall times
        return {k: {**m, "tasks": [{a: b for a, b in t.items() if a != "seconds"} for t in m["tasks"]]}
                for k, m in metrics.items()}

    assert strip(_metrics(results_path(tmp_path / "ray", "construction"))) == strip(
        _metrics(results_path(tmp_path / "local", "construction")))
