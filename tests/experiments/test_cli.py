"""``python -m experiments``: one-line errors with exit status 2, no results file corrupted, --device paths."""
import json
import subprocess
import sys

import pytest
import torch

from experiments.__main__ import main
from experiments.infra.device import resolve_device
from theory.cli import run_main


def _run(argv, capsys):
    code = run_main(main, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("argv,needle", [
    (["run", "e99", "--out", "X"], "experiment='e99' is unknown"),
    (["run", "e1", "--scale", "huge", "--out", "X"], "invalid choice"),
    (["run", "e1", "--seeds", "0", "--out", "X"], "seeds=0"),
    (["run", "e1", "--device", "tpu", "--out", "X"], "invalid choice"),
    (["run", "e1", "--threads", "0", "--out", "X"], "threads=0"),
    (["figures", "--results", "/nonexistent/dir"], "does not exist"),
    (["run", "e1", "--compat", "--out", "X"], "--compat does not apply to experiment 'e1'"),
    (["run", "e1", "--data-dir", "/nonexistent/cifar", "--out", "X"], "--data-dir does not apply to experiment 'e1'"),
    (["run", "imp", "--scale", "paper", "--out", "X"], "--data-dir"),
    (["run", "layerwise", "--scale", "paper", "--data-dir", "/nonexistent/cifar", "--out", "X"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys, tmp_path):
    argv = [a if a != "X" else str(tmp_path / "out") for a in argv]
    with pytest.raises(SystemExit) if "invalid choice" in needle else _nullcontext():
        code, out, err = _run(argv, capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if "invalid choice" in needle:
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "e1.jsonl").exists()


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_foreign_results_file_is_refused_and_untouched(tmp_path, capsys):
    path = tmp_path / "e1.jsonl"
    text = '{"experiment": "layerwise", "key": "abc", "config": {}}\n'
    path.write_text(text)
    code, _, err = _run(["run", "e1", "--scale", "smoke", "--device", "cpu", "--out", str(tmp_path), "--resume"], capsys)
    assert code == 2 and "holds runs of experiment 'layerwise'" in err and len(err.strip().splitlines()) == 1
    assert path.read_text() == text


def test_run_resume_and_figures_via_cli(tmp_path, capsys):
    out = tmp_path / "res"
    code, stdout, _ = _run(["run", "e1", "--scale", "smoke", "--device", "cpu", "--out", str(out), "--json"], capsys)
    assert code == 0 and json.loads(stdout)["ran"] == json.loads(stdout)["total"]
    lines = (out / "e1.jsonl").read_text().splitlines()
    code, stdout, _ = _run(["run", "e1", "--scale", "smoke", "--out", str(out), "--resume", "--json"], capsys)
    assert code == 0 and json.loads(stdout)["ran"] == 0
    assert (out / "e1.jsonl").read_text().splitlines() == lines
    code, _, err = _run(["run", "e1", "--scale", "smoke", "--out", str(out)], capsys)
    assert code == 2 and "--resume" in err
    code, stdout, _ = _run(["figures", "--results", str(out), "--out", str(tmp_path / "figs"), "--json"], capsys)
    written = json.loads(stdout)["e1"]
    assert code == 0 and str(tmp_path / "figs" / "e1_a_heatmap.png") in written
    code, _, err = _run(["run", "layerwise", "--first-layer-only", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "--first-layer-only" in err


def test_help_and_exit_status_in_a_subprocess():
    help_text = subprocess.run([sys.executable, "-m", "experiments", "run", "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "--resume" in help_text.stdout and "--scale" in help_text.stdout
    bad = subprocess.run([sys.executable, "-m", "experiments", "run", "nope", "--out", "/tmp/unused-e1-dir"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_requested_without_gpu(capsys, tmp_path):
    with pytest.raises(ValueError, match="cuda"):
        resolve_device("cuda")
    code, _, err = _run(["run", "e1", "--device", "cuda", "--out", str(tmp_path)], capsys)
    assert code == 2 and "device='cuda' is unavailable" in err
    assert not (tmp_path / "e1.jsonl").exists()
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_smoke_run_and_bench_on_cuda(tmp_path, capsys):
    code, stdout, _ = _run(["run", "e1", "--scale", "smoke", "--device", "cuda", "--out", str(tmp_path), "--json"], capsys)
    assert code == 0
    record = json.loads((tmp_path / "e1.jsonl").read_text().splitlines()[0])
    assert record["device"].startswith("cuda")
    code, stdout, _ = _run(["bench", "--device", "cuda", "--models", "8", "--steps", "5", "--json"], capsys)
    assert code == 0 and json.loads(stdout)["device"].startswith("cuda")


def test_bench_runs_small(capsys):
    code, stdout, _ = _run(["bench", "--device", "cpu", "--models", "4", "--steps", "3", "--json"], capsys)
    result = json.loads(stdout)
    assert code == 0 and len(result["cases"]) == 2
    assert all(c["models"] == 4 and c["loop_seconds"] > 0 and c["batched_seconds"] > 0 for c in result["cases"])
