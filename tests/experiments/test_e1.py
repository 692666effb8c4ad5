"""E1 end to end at smoke scale, with physical checks against docs/math.md §3, and its figures."""
import filecmp
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from experiments.infra.data import affine_teacher_task
from experiments.e1_figures import flatten, heatmap_table
from experiments.e1_three_layer import EXPERIMENT, scaled_width, student_metrics
from experiments.infra.ensemble import init_mlp_params, MLPSpec
from experiments.infra.sweep import results_path, run_sweep
from theory.er_factor import er_factor


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("e1")
    summary = run_sweep(EXPERIMENT, EXPERIMENT.configs("smoke"), out, torch.device("cpu"), progress=False)
    records = [json.loads(line) for line in results_path(out, "e1").read_text().splitlines()]
    return summary, records, flatten(records)


def test_smoke_sweep_records_every_run(smoke):
    summary, records, rows = smoke
    assert summary.ran == summary.total == len(records) == len(EXPERIMENT.configs("smoke"))
    for r in rows:
        assert 0.0 <= r["connected_fraction"] <= 1.0 and r["n_star"] >= 1
        assert r["train_loss"] >= 0 and r["test_loss"] >= 0


def test_trained_loss_respects_the_error_floor(smoke):
    rows = [r for r in smoke[2] if r["task"] == "affine"]
    assert rows
    for r in rows:
        # test MSE >= exact floor up to the test sample's fluctuation (2048 samples: a few per cent)
        assert r["test_loss"] >= 0.9 * r["error_floor"] - 1e-3, r
        # and >= the floor measured on the same test sample, minus what fitting noise can win
        assert r["normalized_test_loss"] >= r["normalized_test_sample_error_floor"] - 0.02, r


def test_dense_wide_student_fits_and_sparse_narrow_one_is_disconnected(smoke):
    rows = [r for r in smoke[2] if r["task"] == "affine"]
    widest = max(r["width"] for r in rows)
    dense = [r for r in rows if r["density"] == 1.0 and r["width"] == widest]
    assert dense and all(r["normalized_test_loss"] < 0.05 for r in dense)
    sparse = [r for r in rows if r["density"] == min(x["density"] for x in rows) and r["width"] == min(x["width"] for x in rows)]
    assert sparse and all(r["connected_fraction"] < 1.0 and r["normalized_error_floor"] > 0.1 for r in sparse)


def test_classification_runs_report_accuracy(smoke):
    rows = [r for r in smoke[2] if r["task"] == "digits"]
    assert rows and all(0.0 <= r["test_accuracy"] <= 1.0 for r in rows)
    dense = [r for r in rows if r["density"] == 1.0 and r["family"] == "grid" and r["width"] == 64]
    assert dense[0]["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert {r["family"] for r in rows} == {"grid", "scaled"}


def test_figures_from_results_are_byte_identical(smoke, tmp_path):
    records = smoke[1]
    first = EXPERIMENT.figures(records, tmp_path / "a")
    second = EXPERIMENT.figures(records, tmp_path / "b")
    assert len(first) == 7 and {p.suffix for p in first} == {".pdf", ".png", ".json"}
    for p, q in zip(first, second):
        assert p.stat().st_size > (500 if p.suffix == ".json" else 1000) and filecmp.cmp(p, q, shallow=False)


def test_heatmap_table_averages_seeds():
    rows = [dict(task="affine", family="grid", inputs=8, first_layer_only=False, density=p, width=n,
                 normalized_test_loss=v) for p, n, v in [(0.1, 4, 1.0), (0.1, 4, 0.5), (1.0, 4, 0.0), (1.0, 8, 0.2)]]
    densities, widths, table, counts = heatmap_table(rows, 8, False)
    assert list(densities) == [0.1, 1.0] and list(widths) == [4, 8]
    assert table[0, 0] == 0.75 and counts[0, 0] == 2 and np.isnan(table[1, 0])


def test_error_floor_convention_matches_mse_of_the_best_predictor():
    # MSE as the mean over samples of (f − y)²; the best predictor using the connected inputs is
    # f_T(x) − Σ_{j disc.} w_j x_j, whose MSE on a large sample must match Σ_{j disc.} w_j² Var(x_j).
    task = affine_teacher_task(12, 3, n_train=8, n_test=200_000)
    layers = init_mlp_params(MLPSpec((12, 3, 1), (0.2, 0.5), seed=0))
    metrics = student_metrics(layers, task, 0.2, 0.1, False)
    connected = np.zeros(12, dtype=bool)
    connected[:] = False
    m1, m2 = layers[0].mask.numpy(), layers[1].mask.numpy()
    for j in range(12):  # brute force over paths input j → hidden u → output
        connected[j] = any(m1[u, j] and m2[0, u] for u in range(3))
    assert metrics["connected_fraction"] == connected.mean()
    w = task.teacher.weight
    best = task.y_test - task.x_test[:, ~connected] @ w[~connected]
    mse = np.mean((best - task.y_test) ** 2)
    assert metrics["error_floor"] == pytest.approx(np.sum(w[~connected] ** 2) / 3.0)
    assert mse == pytest.approx(metrics["error_floor"], rel=0.02, abs=1e-4)
    assert metrics["target_variance"] == pytest.approx(np.sum(w ** 2) / 3.0)


@given(density=st.floats(0.001, 1.0), n_ref=st.integers(1, 256))
@settings(max_examples=50)
def test_scaled_width(density, n_ref):
    n = scaled_width(n_ref, density)
    assert n >= n_ref
    if density < 0.5:
        assert abs(n - n_ref * er_factor(density) / er_factor(0.5)) <= 0.5 + 1e-9


def test_configs_scales_and_bad_names():
    smoke = EXPERIMENT.configs("smoke")
    assert len(EXPERIMENT.configs("smoke", seeds=2)) == 2 * len(smoke)
    default = EXPERIMENT.configs("default")
    assert {c["seed"] for c in default} == {0, 1, 2}
    paper = EXPERIMENT.configs("paper")
    assert max(m[1] for c in paper if c["family"] == "grid" for m in c["members"]) == 8192
    assert {c["inputs"] for c in paper if c["task"] == "affine"} == {32, 64, 128, 256}
    assert all(c["first_layer_only"] for c in EXPERIMENT.configs("smoke", first_layer_only=True)
               if c["family"] == "grid" and c["task"] == "affine")
    with pytest.raises(ValueError, match="scale"):
        EXPERIMENT.configs("huge")
    with pytest.raises(ValueError, match="seeds"):
        EXPERIMENT.configs("smoke", seeds=0)


def test_sweep_guard_checks_the_gpu_part_against_the_cards_free_memory(monkeypatch):
    """With a CUDA device the largest run's device part (run_memory_parts) is compared with the card's free memory,
    the host part with --max-memory; without one both count against the host. (No GPU here: the card's free memory
    is what torch.cuda.mem_get_info would report, replaced by a fixed number.)"""
    import torch

    from experiments.infra import sweep_memory
    from theory.memory import MemoryBudgetError

    e1 = EXPERIMENT
    configs = e1.configs("default", 1)
    parts = [e1.run_memory_parts(c) for c in configs]
    assert all(h + d == e1.run_memory(c) for (h, d), c in zip(parts, configs))
    gpu_need = max(d for _, d in parts)
    host_need = max(h for h, _ in parts)
    assert host_need < gpu_need  # the training tensors live on the device
    cuda = torch.device("cuda")
    monkeypatch.setattr(sweep_memory, "_gpu_free", lambda device: (gpu_need - 1, "Test GPU"))
    with pytest.raises(MemoryBudgetError, match=r"needs about .* of GPU memory, over the .* free on Test GPU"):
        sweep_memory.plan_sweep(e1, "default", 1, {}, None, max_memory=2**40, device=cuda)
    monkeypatch.setattr(sweep_memory, "_gpu_free", lambda device: (gpu_need, "Test GPU"))
    plan = sweep_memory.plan_sweep(e1, "default", 1, {}, None, max_memory=2**40, device=cuda)
    assert len(plan.configs) == len(configs) and plan.estimate_bytes < sweep_memory.plan_sweep(
        e1, "default", 1, {}, None, max_memory=2**40, device=torch.device("cpu")).estimate_bytes
