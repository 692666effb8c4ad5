"""IMP restricted to a fixed ER mask (docs/math.md §8): schedule, global magnitude ranking, nesting, rewinding, cost."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.imp import (current_masks, global_magnitude_prune, imp_counts, levels_to_reach, rewind_,
                             run_imp, snapshot)
from experiments.infra.masked import masked_modules
from experiments.models import build_model
from experiments.sparse_training import TrainSettings, train_model


@given(count=st.integers(1, 10**7), levels=st.integers(0, 30))
def test_imp_counts_follow_the_20_percent_rule(count, levels):
    counts = imp_counts(count, 0.2, levels)
    assert len(counts) == levels + 1 and counts[0] == count
    for a, b in zip(counts, counts[1:]):
        assert b == max(1, a - round(0.2 * a))  # independent restatement
        assert 1 <= b <= a
        if a >= 10:
            assert abs(b - 0.8 * a) <= 0.5


def test_levels_to_reach_matches_the_paper_configuration():
    # docs/experiments.md: balanced start at 0.3, 20 % per level, 15 levels (≈ 0.0106 final).
    assert levels_to_reach(0.3, 0.0106) == 15
    assert 0.3 * 0.8 ** 15 == pytest.approx(0.0106, abs=5e-5)
    assert levels_to_reach(1.0, 0.01) == 21 and 0.8 ** 21 < 0.01 < 0.8 ** 20
    with pytest.raises(ValueError, match="final_density"):
        levels_to_reach(0.3, 0.5)


def _brute_force_prune(weights, masks, n_remove):
    kept = [(abs(float(w.reshape(-1)[j])), i, j) for i, (w, m) in enumerate(zip(weights, masks))
            for j in range(m.numel()) if bool(m.reshape(-1)[j])]
    kept.sort()
    out = [m.clone() for m in masks]
    for _, i, j in kept[:n_remove]:
        out[i].view(-1)[j] = False
    return out


@settings(max_examples=40)
@given(data=st.data())
def test_global_magnitude_prune_equals_brute_force(data):
    n_layers = data.draw(st.integers(1, 3))
    seed = data.draw(st.integers(0, 10**6))
    g = torch.Generator().manual_seed(seed)
    weights, masks = [], []
    for _ in range(n_layers):
        shape = (data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6)))
        # few distinct magnitudes, so ties happen
        weights.append(torch.randint(-3, 4, shape, generator=g).float())
        masks.append(torch.rand(shape, generator=g) < data.draw(st.floats(0.2, 1.0)))
    total = sum(int(m.sum()) for m in masks)
    n_remove = data.draw(st.integers(0, total))
    new = global_magnitude_prune(weights, masks, n_remove)
    expected = _brute_force_prune(weights, masks, n_remove)
    for a, b, m in zip(new, expected, masks):
        assert torch.equal(a, b)
        assert not (a & ~m).any()  # nested
    assert sum(int(m.sum()) for m in new) == total - n_remove


def test_prune_refuses_removing_more_than_kept():
    with pytest.raises(ValueError, match="n_remove"):
        global_magnitude_prune([torch.ones(2, 2)], [torch.ones(2, 2, dtype=torch.bool)], 5)


def _data(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g)
    y = (x[:, 0, :3].sum(dim=(1, 2)) > 0).long() + (x[:, 0, 3:].sum(dim=(1, 2)) > 0).long()
    return x, y


def test_rewinding_restores_exactly_the_initial_kept_weights():
    built = build_model("mlp", (1, 6, 6), 3, density=0.5, scheme="balanced", seed=1, hidden=(20,))
    model = built.module
    initial = snapshot(model)
    x, y = _data()
    train_model(model, x, y, TrainSettings(epochs=2, batch_size=20, optimizer="adam", lr=0.05, weight_decay=1e-3),
                seed=0)
    layers = masked_modules(model)
    masks = global_magnitude_prune([m.weight for m in layers], current_masks(model), 50)
    trained = [m.weight.detach().clone() for m in layers]
    rewind_(model, initial, masks)
    names = {id(m): n for n, m in model.named_modules()}
    for i, (layer, mask) in enumerate(zip(layers, masks)):
        start = initial[names[id(layer)] + ".weight"]
        assert torch.equal(layer.mask, mask)
        assert torch.equal(layer.weight[mask], start[mask])
        assert not torch.equal(layer.weight[mask], trained[i][mask])
        assert torch.count_nonzero(layer.weight[~mask]) == 0
    for key, value in model.state_dict().items():  # biases and BatchNorm statistics rewound too
        if not key.endswith("mask") and not key.endswith(".weight"):
            assert torch.equal(value, initial[key]), key


@pytest.mark.parametrize("start", [1.0, 0.4])
def test_run_imp_masks_nested_inside_er_and_on_schedule(start):
    built = build_model("mlp", (1, 6, 6), 3, density=start, scheme="dense" if start == 1.0 else "balanced", seed=2,
                        hidden=(16,))
    model = built.module
    er = current_masks(model)
    seen = [current_masks(model)]
    x, y = _data()
    settings_ = TrainSettings(epochs=1, batch_size=30, lr=0.05)
    results = run_imp(model, x, y, x, y, settings_, levels=4, seed=0,
                      on_level=lambda r: seen.append(current_masks(model)))
    seen = seen[1:]
    counts = imp_counts(sum(int(m.sum()) for m in er), 0.2, 4)
    total = sum(m.numel() for m in er)
    for level, (result, masks) in enumerate(zip(results, seen)):
        kept = sum(int(m.sum()) for m in masks)
        assert result.level == level and result.kept == kept == counts[level] == result.target_kept
        assert result.density == kept / total
        for m, e in zip(masks, er):
            assert not (m & ~e).any()  # inside the ER mask
        if level:
            for m, prev in zip(masks, seen[level - 1]):
                assert not (m & ~prev).any()  # nested
        for layer in masked_modules(model):
            assert torch.count_nonzero(layer.weight[~layer.mask]) == 0
    # cost: 3 · samples · Σ_l nnz(M_l) per level (MLP: output size 1), cumulated
    steps = 4  # 120 samples / batch 30, one epoch
    for result, masks in zip(results, seen):
        assert result.train_macs == 3 * steps * 30 * sum(int(m.sum()) for m in masks)
    assert results[-1].cumulative_macs == pytest.approx(sum(r.train_macs for r in results))
