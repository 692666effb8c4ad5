"""End-to-end smoke runs of E2–E4 (seconds), their figures, the paper-scale code path on a tiny CIFAR-format
directory, and bad input."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from experiments.infra.registry import get_experiment
from experiments.infra.results import ResultsStore
from experiments.infra.sweep import run_sweep


CPU = torch.device("cpu")


def _sweep(name, tmp_path):
    experiment = get_experiment(name)
    configs = experiment.configs("smoke")
    summary = run_sweep(experiment, configs, tmp_path, CPU, progress=False)
    assert summary.ran == len(configs)
    records = ResultsStore(tmp_path / f"{name}.jsonl", name).load()
    assert len(records) == len(configs)
    return experiment, records


def _figures_are_reproducible(experiment, records, tmp_path):
    first = experiment.figures(records, tmp_path / "fig1")
    second = experiment.figures(records, tmp_path / "fig2")
    assert first and all(p.stat().st_size > 0 for p in first)
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_layerwise_smoke(tmp_path):
    experiment, records = _sweep("layerwise", tmp_path)
    majority = records[0]["metrics"]["majority_rate"]
    assert majority < 0.2  # digits: ten balanced classes
    for r in records:
        m, c = r["metrics"], r["config"]
        if c["density"] >= 0.5:  # dense and density-0.5 runs must have learned something
            assert m["test_accuracy"] > majority + 0.4, c
        assert m["target_global_density"] == pytest.approx(c["density"], rel=1e-9)  # exact mode
        assert all(0.0 < row["target_density"] <= 1.0 for row in m["layers"])
        kept = sum(row["kept"] for row in m["layers"])
        assert m["realized_global_density"] == kept / sum(row["numel"] for row in m["layers"])
    _figures_are_reproducible(experiment, records, tmp_path)
    table = (tmp_path / "fig1" / "realized_densities.md").read_text()
    assert "| mlp | balanced | 0.05 |" in table


def test_imp_smoke(tmp_path):
    experiment, records = _sweep("imp", tmp_path)
    majority = records[0]["metrics"]["majority_rate"]
    for r in records:
        levels = r["metrics"]["levels"]
        assert len(levels) == r["config"]["levels"] + 1
        for lv in levels:
            assert lv["test_accuracy"] > majority + 0.4
            assert lv["kept"] == lv["target_kept"]
        assert [lv["kept"] for lv in levels] == sorted((lv["kept"] for lv in levels), reverse=True)
    dense = next(r for r in records if r["config"]["start_density"] == 1.0)
    er = next(r for r in records if r["config"]["start_density"] == 0.5)
    # the dense start pays for its dense phase: its first level alone costs more than the ER start's first level
    assert dense["metrics"]["levels"][0]["train_macs"] > 1.5 * er["metrics"]["levels"][0]["train_macs"]
    _figures_are_reproducible(experiment, records, tmp_path)


def test_edgepopup_smoke(tmp_path):
    experiment, records = _sweep("edgepopup", tmp_path)
    majority = records[0]["metrics"]["majority_rate"]
    for r in records:
        assert r["metrics"]["test_accuracy"] > majority + 0.3, r["config"]
        assert r["metrics"]["final_realized_density"] == pytest.approx(r["config"]["final_density"], rel=0.05)
    _figures_are_reproducible(experiment, records, tmp_path)


def _tiny_cifar(directory, n=12, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir()
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, size=n)]}
        with open(directory / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    return directory


@pytest.mark.parametrize("name", ["layerwise", "imp", "edgepopup"])
def test_paper_scale_code_path_on_a_tiny_cifar_file(name, tmp_path):
    data_dir = _tiny_cifar(tmp_path / "cifar")
    experiment = get_experiment(name)
    configs = experiment.configs("paper", seeds=1, data_dir=str(data_dir))
    assert all(c["task"] == "cifar10" and c["model"] == "resnet18" and c["data_dir"] for c in configs)
    config = next(c for c in configs if c.get("scheme") != "dense" and c.get("start_density", 0.5) < 1.0)
    assert config["architecture"]["width"] == 64 and config["train"]["augment"] is True
    # the same code path, narrowed and shortened to a few steps
    config = dict(config, architecture={"width": 4}, train=dict(config["train"], epochs=1, batch_size=16, max_steps=2))
    if name == "imp":
        config["levels"] = 1
    metrics = experiment.run(config, CPU)
    accuracies = [lv["test_accuracy"] for lv in metrics["levels"]] if name == "imp" else [metrics["test_accuracy"]]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    assert metrics["task_name"] == "cifar10"


def test_bad_input_is_refused_before_anything_runs(tmp_path):
    for name in ["layerwise", "imp", "edgepopup"]:
        experiment = get_experiment(name)
        with pytest.raises(ValueError, match="data-dir"):
            experiment.configs("paper")
        with pytest.raises(FileNotFoundError, match="does not exist"):
            experiment.configs("paper", data_dir=str(tmp_path / "missing"))
        (tmp_path / "partial").mkdir(exist_ok=True)
        (tmp_path / "partial" / "data_batch_1").write_bytes(b"")
        with pytest.raises(FileNotFoundError, match="data_batch_2"):
            experiment.configs("paper", data_dir=str(tmp_path / "partial"))
        with pytest.raises(ValueError, match="scale="):
            experiment.configs("huge")
        with pytest.raises(ValueError, match="seeds="):
            experiment.configs("smoke", seeds=0)
    with pytest.raises(ValueError, match="final_density=0.6"):
        get_experiment("edgepopup").run({"final_density": 0.6, "source_density": 0.5}, CPU)
    # the command line: one line on stderr, exit 2, no results file
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root)
    out = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "experiments", "run", "layerwise", "--scale", "paper", "--out",
                           str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "data-dir" in proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_default_and_paper_configs_follow_experiments_md(tmp_path):
    data_dir = str(_tiny_cifar(tmp_path / "cifar"))
    e2 = get_experiment("layerwise").configs("default")
    assert {c["seed"] for c in e2} == {0, 1, 2} and {c["model"] for c in e2} == {"mlp", "cnn"}
    assert {c["scheme"] for c in e2} == {"uniform", "erk", "balanced", "pyramidal", "dense"}
    assert max(c["density"] for c in e2 if c["scheme"] != "dense") == 0.5
    assert min(c["density"] for c in e2) == 0.01
    paper = get_experiment("layerwise").configs("paper", data_dir=data_dir)[0]["train"]
    assert (paper["lr"], paper["momentum"], paper["weight_decay"], paper["batch_size"], paper["epochs"]) == \
        (0.1, 0.9, 1e-4, 256, 160)
    e3 = get_experiment("imp").configs("default")
    assert {(c["start_density"], c["scheme"]) for c in e3} == {(1.0, "dense"), (0.5, "balanced"), (0.3, "balanced")}
    for c in e3:  # down to ≈ 0.01 at 20 % per level
        assert c["prune_fraction"] == 0.2 and 0.007 < c["start_density"] * 0.8 ** c["levels"] < 0.014
    e3p = [c for c in get_experiment("imp").configs("paper", data_dir=data_dir) if c["start_density"] == 0.3][0]
    assert e3p["levels"] == 15 and e3p["train"]["epochs"] == 150
    e4 = get_experiment("edgepopup").configs("default")
    assert {c["source_density"] for c in e4} == {1.0, 0.5, 0.3}
    assert all(c["final_density"] < c["source_density"] for c in e4)
    e4p = get_experiment("edgepopup").configs("paper", data_dir=data_dir)
    assert {c["final_density"] for c in e4p} == {0.2, 0.1, 0.05, 0.01} and {c["source_density"] for c in e4p} == {1.0, 0.5}
    assert (e4p[0]["train"]["lr"], e4p[0]["train"]["weight_decay"], e4p[0]["train"]["batch_size"]) == (0.1, 5e-4, 128)
