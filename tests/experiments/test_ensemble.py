"""The batched ensemble equals training each model alone (experiments.infra.ensemble)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from experiments.infra.ensemble import (MLPSpec, TrainConfig, batch_indices, build_single_mlp, evaluate_models,
                                  init_mlp_params, per_model_loss, train_ensemble, train_single)


def _regression(n=200, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1
    y = torch.relu(x @ torch.randn(d, generator=g, dtype=torch.float64) + 0.3)
    return x, y


def _classification(n=150, d=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = (x[:, :classes]).argmax(dim=1)
    return x, y


def _max_diff(a, b):
    return max(float((la.weight - lb.weight).abs().max()) + float((la.bias - lb.bias).abs().max())
               for la, lb in zip(a.layers, b.layers))


@pytest.mark.parametrize("loss,batch_size,schedule", [("mse", 32, "cosine"), ("mse", None, "constant"),
                                                       ("cross_entropy", 40, "cosine")])
def test_ensemble_equals_single_model_training(loss, batch_size, schedule):
    x, y = _regression() if loss == "mse" else _classification()
    out = 1 if loss == "mse" else 3
    d = x.shape[1]
    config = TrainConfig(loss=loss, lr=2e-2, max_steps=240, batch_size=batch_size, schedule=schedule,
                         check_every=20, patience=2, rel_tol=5e-3)
    specs = [MLPSpec((d, w, out), (p, q), seed) for seed, (w, p, q) in enumerate(
        [(8, 1.0, 1.0), (8, 0.5, 0.5), (8, 0.2, 1.0), (16, 0.3, 0.3), (16, 1.0, 0.5), (8, 0.05, 0.05)])]
    batched = train_ensemble(specs, x, y, config, dtype=torch.float64, data_seed=11)
    steps = set()
    for spec, model in zip(specs, batched):
        alone = train_single(spec, x, y, config, dtype=torch.float64, data_seed=11)
        assert model.steps == alone.steps
        assert _max_diff(model, alone) < 1e-9
        assert model.final_train_loss == pytest.approx(alone.final_train_loss, rel=1e-9, abs=1e-12)
        for layer in model.layers:
            assert torch.count_nonzero(layer.weight[~layer.mask]) == 0
        steps.add(model.steps)
    assert len(steps) > 1  # per-model early stopping actually stopped some models at different steps


def test_ensemble_float32_close_to_single():
    x, y = _regression()
    config = TrainConfig(lr=1e-2, max_steps=100, batch_size=50, check_every=100, patience=5)
    specs = [MLPSpec((6, 12, 1), (0.5, 0.5), s) for s in range(4)]
    batched = train_ensemble(specs, x, y, config, data_seed=1)
    for spec, model in zip(specs, batched):
        assert _max_diff(model, train_single(spec, x, y, config, data_seed=1)) < 1e-4


def test_init_matches_single_mlp_and_is_seeded():
    spec = MLPSpec((7, 9, 2), (0.4, 0.6), seed=3)
    layers = init_mlp_params(spec)
    model = build_single_mlp(spec)
    linears = [model[0], model[2]]
    for p, m in zip(layers, linears):
        assert torch.equal(p.mask, m.mask) and torch.equal(p.weight, m.weight.detach())
    other = init_mlp_params(MLPSpec((7, 9, 2), (0.4, 0.6), seed=4))
    assert not torch.equal(layers[0].weight, other[0].weight)


@given(n=st.integers(2, 60), batch=st.integers(1, 70), steps=st.integers(1, 40), seed=st.integers(0, 10))
@settings(max_examples=40)
def test_batch_indices_are_epochs_of_permutations(n, batch, steps, seed):
    batches = list(batch_indices(n, batch, steps, seed))
    assert len(batches) == steps
    if batch >= n:
        assert all(b is None for b in batches)
        return
    per_epoch = n // batch
    flat = torch.cat(batches[:per_epoch]) if per_epoch else torch.tensor([], dtype=torch.long)
    assert len(set(flat.tolist())) == len(flat)  # no repeats inside an epoch
    assert all(len(b) == batch for b in batches)
    again = list(batch_indices(n, batch, steps, seed))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))


def test_per_model_loss_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(3, 10, 1, generator=g)
    y = torch.randn(10, 1, generator=g)
    expected = torch.stack([((out[b, :, 0] - y[:, 0]) ** 2).mean() for b in range(3)])
    assert torch.allclose(per_model_loss(out, y, "mse"), expected)
    logits = torch.randn(2, 10, 4, generator=g)
    labels = torch.randint(0, 4, (10,), generator=g)
    expected = torch.stack([torch.nn.functional.cross_entropy(logits[b], labels) for b in range(2)])
    assert torch.allclose(per_model_loss(logits, labels, "cross_entropy"), expected)


def test_evaluate_models_matches_single_forward():
    x, y = _classification()
    specs = [MLPSpec((5, 10, 3), (0.5, 0.5), 0), MLPSpec((5, 20, 3), (1.0, 1.0), 1)]
    models = train_ensemble(specs, x, y, TrainConfig(loss="cross_entropy", max_steps=30, check_every=30), dtype=torch.float64)
    results = evaluate_models(models, x, y, "cross_entropy", dtype=torch.float64)
    for model, result in zip(models, results):
        h = x
        for t, layer in enumerate(model.layers):
            h = h @ (layer.weight * layer.mask).T + layer.bias
            if t == 0:
                h = torch.relu(h)
        assert result["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(h, y)), rel=1e-9)
        assert result["accuracy"] == pytest.approx(float((h.argmax(1) == y).double().mean()))


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="densities"):
        MLPSpec((4, 5, 1), (0.5,), 0)
    with pytest.raises(ValueError, match="density"):
        MLPSpec((4, 5, 1), (0.0, 0.5), 0)
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="hinge")
    with pytest.raises(ValueError, match="widths\\[0\\]"):
        train_ensemble([MLPSpec((4, 5, 1), (1.0, 1.0), 0)], torch.zeros(3, 5), torch.zeros(3), TrainConfig(max_steps=1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_ensemble_on_cuda_matches_cpu():
    x, y = _regression()
    config = TrainConfig(lr=1e-2, max_steps=50, batch_size=50, check_every=50)
    specs = [MLPSpec((6, 12, 1), (0.5, 0.5), s) for s in range(3)]
    cpu = train_ensemble(specs, x, y, config, dtype=torch.float64)
    gpu = train_ensemble(specs, x, y, config, dtype=torch.float64, device="cuda")
    for a, b in zip(cpu, gpu):
        assert _max_diff(a, b) < 1e-8
