"""The engine layer without a Ray cluster: the local engine (in process and as a process pool), retries, and the
CLI's bad input for the Ray engine (one line, exit 2, nothing written)."""
import os
import socket
import sys
from pathlib import Path

import pytest
import torch

from experiments.__main__ import main
from experiments.infra.engine import EngineSpec, LocalEngine, check_address, open_engine
from theory.cli import run_main

def _square_or_raise(x):
    if x == 3:
        raise ValueError("three is refused\nsecond line")
    return x * x


def _threads(_):
    import threadpoolctl

    return max((p["num_threads"] for p in threadpoolctl.threadpool_info()), default=1), os.environ["OMP_NUM_THREADS"]


@pytest.mark.parametrize("workers", [1, 2])
def test_local_engine_yields_every_task_once_with_errors_as_outcomes(workers):
    with open_engine(EngineSpec("local", workers=workers)) as engine:
        outcomes = sorted(engine.imap_unordered(_square_or_raise, range(6)), key=lambda o: o.index)
    assert [o.value for o in outcomes] == [0, 1, 4, None, 16, 25]
    assert outcomes[3].error == "ValueError: three is refused" and outcomes[3].attempts == 1
    assert all(o.ok for i, o in enumerate(outcomes) if i != 3)
    with open_engine(EngineSpec("local", workers=workers)) as engine:
        again = [o for o in engine.imap_unordered(_square_or_raise, range(6), retries=2) if not o.ok]
        assert [(o.index, o.attempts) for o in again] == [(3, 3)]
        with pytest.raises(RuntimeError, match="task 3 failed: ValueError: three is refused"):
            engine.map(_square_or_raise, range(6))
        assert engine.map(_square_or_raise, [5, 1, 2]) == [25, 1, 4]


def test_pool_workers_run_with_the_requested_threads():
    with LocalEngine(EngineSpec("local", workers=2, cpus_per_task=1)) as engine:
        assert set(engine.map(_threads, range(4))) == {(1, "1")}


def test_spec_and_address_validation():
    with pytest.raises(ValueError, match="engine='spark' is unknown"):
        EngineSpec("spark")
    with pytest.raises(ValueError, match="gpus_per_run=0.5 applies to engine 'ray' only"):
        EngineSpec("local", gpus_per_task=0.5)
    with pytest.raises(ValueError, match="gpus_per_run=-1 is invalid"):
        EngineSpec("ray", gpus_per_task=-1)
    with pytest.raises(ValueError, match="address='nowhere' is invalid"):
        check_address("nowhere")
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(ValueError, match=f"address='127.0.0.1:{port}' is unreachable"):
            check_address(f"127.0.0.1:{port}", timeout_s=2)


def _run_cli(capsys, out, *args):
    """``python -m experiments run e1 --scale smoke --out OUT ARGS`` in this process: (exit status, stdout, stderr)."""
    status = run_main(main, ["run", "e1", "--scale", "smoke", "--out", str(out), *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_ray_without_the_extra_is_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is not installed
    status, _, err = _run_cli(capsys, tmp_path / "out", "--engine", "ray")
    assert status == 2 and not (tmp_path / "out").exists()
    assert err.strip().splitlines() == [
        "error: engine='ray' needs the optional Ray extra, which is not installed: pip install 'er-tickets[cluster]' "
        "(or allowed --engine local)"]


def test_cli_unreachable_address_is_one_line_exit_2_nothing_written(tmp_path, capsys):
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        status, _, err = _run_cli(capsys, tmp_path / "out", "--engine", "ray", "--address", f"127.0.0.1:{port}")
    assert status == 2 and not (tmp_path / "out").exists()
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: address='127.0.0.1:{port}' is unreachable (")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
@pytest.mark.parametrize("engine", ["ray", "local"])
def test_cli_gpus_per_run_without_gpus_is_one_line_exit_2_nothing_written(tmp_path, capsys, engine):
    status, _, err = _run_cli(capsys, tmp_path / "out", "--engine", engine, "--gpus-per-run", "0.25")
    assert status == 2 and not (tmp_path / "out").exists()
    (line,) = err.strip().splitlines()
    assert line.startswith("error: gpus_per_run=0.25 ")
    assert ("needs a GPU, but this machine has none" if engine == "ray" else "applies to engine 'ray' only") in line


def test_cli_where_selects_configs_and_refuses_unknown(tmp_path, capsys):
    status, out, err = _run_cli(capsys, tmp_path / "a", "--where", "task=affine", "--progress", "none", "--device",
                                "cpu")
    assert status == 0, err
    assert "2 run(s) done, 0 already finished, 0 failed, 2 in the sweep" in out
    status, _, err = _run_cli(capsys, tmp_path / "b", "--where", "task=cifar")
    assert status == 2 and not (tmp_path / "b").exists()
    assert "error: where task='cifar' matches no config: allowed \"affine\", \"digits\"" in err


def test_calibration_table_does_not_depend_on_the_engine_or_workers(tmp_path):
    """scripts/calibrate_nss.py: the same seed gives the same table in this process and in a 2-process pool."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "calibrate_nss.py"
    spec = importlib.util.spec_from_file_location("calibrate_nss_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the pool's workers find needed_batch by this name (fork)
    spec.loader.exec_module(module)
    kwargs = dict(trials=300, seed=3, confidence=0.99, grid_points=5, k_max=12, eps_grid=(1e-1, 1e-2), batch=70)
    serial = module.calibrate(**kwargs, engine=EngineSpec("local", workers=1))
    pooled = module.calibrate(**kwargs, engine=EngineSpec("local", workers=2))
    assert serial == pooled
    assert serial["laws"]["uniform"]["rows"][0]["fail_counts"] != serial["laws"]["uniform"]["rows"][1]["fail_counts"]
