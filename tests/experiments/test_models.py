"""Models of E2–E4: layer shapes, layer-wise densities (docs/math.md §7), ER masks, init, static sparse training."""
import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.infra.masked import masked_modules
from experiments.models import build_architecture, build_model, density_table, weight_shapes
from experiments.sparse_training import (TrainSettings, augment_batch, forward_macs, layer_output_sizes,
                                         train_model)
from theory.densities import SCHEMES, layer_densities
from theory.testing import assert_binomial


ALPHA = 1e-3


@pytest.fixture(scope="module")
def resnet_shapes():
    return weight_shapes(build_architecture("resnet18", (3, 32, 32), 10))


def test_resnet18_has_the_released_layers(resnet_shapes):
    # docs/math.md §7: 21 masked layers incl. 3 shortcut convs and a 1×1-conv classifier, N = 11,164,352.
    assert len(resnet_shapes) == 21
    assert sum(math.prod(s) for s in resnet_shapes) == 11_164_352
    assert resnet_shapes[0] == (64, 3, 3, 3)
    assert resnet_shapes[-1] == (10, 512, 1, 1)
    assert sum(1 for s in resnet_shapes if s[2:] == (1, 1)) == 4  # 3 shortcuts + classifier
    # Independent count: stem + 4 stages of two BasicBlocks + shortcuts + classifier.
    widths = [64, 128, 256, 512]
    expected = 3 * 64 * 9
    c = 64
    for w in widths:
        expected += c * w * 9 + w * w * 9 + 2 * w * w * 9 + (c * w if c != w else 0)
        c = w
    assert expected + 512 * 10 == 11_164_352


@pytest.mark.parametrize("label, balanced, erk", [(0.5, 0.266, 0.389), (0.1, 0.079, 0.092)])
def test_compat_mode_reproduces_the_released_numbers(resnet_shapes, label, balanced, erk):
    # Numbers quoted in docs/math.md §7 from the released code.
    assert layer_densities(resnet_shapes, label, "balanced", compat=True).global_density == pytest.approx(balanced, abs=6e-4)
    assert layer_densities(resnet_shapes, label, "erk", compat=True).global_density == pytest.approx(erk, abs=6e-4)
    assert layer_densities(resnet_shapes, label, "pyramidal", compat=True).global_density == pytest.approx(label, rel=1e-9)


@settings(max_examples=25)
@given(density=st.floats(1e-3, 1.0), scheme=st.sampled_from(SCHEMES), model=st.sampled_from(["mlp", "cnn"]))
def test_exact_schemes_hit_the_label(density, scheme, model):
    shapes = weight_shapes(build_architecture(model, (1, 28, 28), 10, hidden=(30, 20), channels=(4, 8)))
    result = layer_densities(shapes, density, scheme)
    n = sum(math.prod(s) for s in shapes)
    assert sum(p * math.prod(s) for p, s in zip(result.densities, shapes)) == pytest.approx(density * n, rel=1e-9)
    assert all(0.0 < p <= 1.0 for p in result.densities)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_masks_are_er_with_the_scheme_densities(scheme):
    built = build_model("mlp", (1, 28, 28), 10, density=0.1, scheme=scheme, seed=3)
    table = built.table
    assert table.target_global_density == pytest.approx(0.1, rel=1e-9)
    for row, layer, p in zip(table.rows, masked_modules(built.module), built.densities.densities):
        kept = int(layer.mask.sum())
        assert row.kept == kept and row.realized_density == kept / layer.mask.numel() and row.target_density == p
        if p < 1.0:
            assert_binomial(kept, layer.mask.numel(), p, alpha=ALPHA)
        else:
            assert kept == layer.mask.numel()
    assert table.realized_global_density == table.kept / table.total


def test_same_seed_same_model_and_different_seed_differs():
    a = build_model("cnn", (1, 8, 8), 10, density=0.3, scheme="erk", seed=5, channels=(4, 8), hidden=(16,))
    b = build_model("cnn", (1, 8, 8), 10, density=0.3, scheme="erk", seed=5, channels=(4, 8), hidden=(16,))
    c = build_model("cnn", (1, 8, 8), 10, density=0.3, scheme="erk", seed=6, channels=(4, 8), hidden=(16,))
    for x, y, z in zip(a.module.state_dict().values(), b.module.state_dict().values(), c.module.state_dict().values()):
        assert torch.equal(x, y)
    assert not torch.equal(masked_modules(a.module)[1].mask, masked_modules(c.module)[1].mask)


@pytest.mark.parametrize("aware", [False, True])
def test_kaiming_normal_init(aware):
    built = build_model("mlp", (1, 28, 28), 10, density=0.2, scheme="uniform", seed=0, density_aware_init=aware)
    layer = masked_modules(built.module)[0]  # 300 × 784
    kept = layer.weight.detach()[layer.mask]
    std = math.sqrt(2.0 / ((0.2 if aware else 1.0) * 784))
    # sample variance of ~47k normals: relative standard error √(2/n) ≈ 0.65 %; allow 4 %
    assert float(kept.double().std()) == pytest.approx(std, rel=0.04)
    assert abs(float(kept.double().mean())) < 5 * std / math.sqrt(kept.numel())
    assert torch.count_nonzero(layer.weight[~layer.mask]) == 0


def test_density_table_format_lists_every_layer():
    built = build_model("cnn", (1, 28, 28), 10, density=0.05, scheme="balanced", seed=1)
    text = built.table.format()
    assert len(text.splitlines()) == 2 + len(masked_modules(built.module))
    assert "global (label 0.05)" in text
    again = density_table(built.module)
    assert again.realized_global_density == built.table.realized_global_density


@pytest.mark.parametrize("kwargs, word", [
    (dict(model="vgg"), "model="), (dict(scheme="random"), "scheme="), (dict(density=0.0), "density="),
    (dict(density=1.5), "density="), (dict(scheme="dense", density=0.5), "density="),
])
def test_bad_input_is_one_line(kwargs, word):
    args = dict(model="mlp", density=0.5, scheme="uniform")
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        build_model(args.pop("model"), (1, 8, 8), 10, seed=0, **args)
    assert word in str(info.value) and "\n" not in str(info.value)


def _tiny(model):
    if model == "resnet18":
        return build_model("resnet18", (3, 8, 8), 3, density=0.2, scheme="balanced", seed=2, width=4)
    return build_model(model, (1, 8, 8), 3, density=0.2, scheme="erk", seed=2, hidden=(12,), channels=(4, 4))


@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet18"])
@pytest.mark.parametrize("train", [
    dict(optimizer="sgd", lr=0.2, momentum=0.9, weight_decay=1e-2),
    dict(optimizer="adam", lr=0.05, weight_decay=1e-2),
])
def test_static_sparse_training_keeps_zeros_outside_the_mask(model, train):
    built = _tiny(model)
    channels = 3 if model == "resnet18" else 1
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, channels, 8, 8, generator=g)
    y = torch.randint(0, 3, (24,), generator=g)
    before = [m.weight.detach().clone() for m in masked_modules(built.module)]
    train_model(built.module, x, y, TrainSettings(epochs=2, batch_size=8, **train), seed=0)
    for layer, old in zip(masked_modules(built.module), before):
        assert torch.count_nonzero(layer.weight[~layer.mask]) == 0
        assert not torch.equal(layer.weight[layer.mask], old[layer.mask])  # it did train
    # checkpoint round trip without pickle; a tampered checkpoint is re-masked on load
    buffer = io.BytesIO()
    state = {k: v.clone() for k, v in built.module.state_dict().items()}
    first = masked_modules(built.module)[0]
    name = [k for k, v in built.module.state_dict().items() if v is not None and k.endswith("weight")][0]
    state[name] = state[name] + 1.0
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = _tiny(model).module
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    loaded = masked_modules(fresh)[0]
    assert torch.equal(loaded.mask, first.mask)
    assert torch.count_nonzero(loaded.weight[~loaded.mask]) == 0
    assert torch.equal(loaded.weight[loaded.mask], first.weight[first.mask] + 1.0)


def test_forward_macs_count_kept_weights_times_output_size():
    built = build_model("cnn", (1, 8, 8), 10, density=0.3, scheme="uniform", seed=0, channels=(4, 8), hidden=(16,))
    sizes = layer_output_sizes(built.module, (1, 8, 8))
    assert sizes == [64, 16, 1, 1]  # 8×8 conv, 4×4 conv (after one pool), two linear layers
    layers = masked_modules(built.module)
    expected = sum(int(m.mask.sum()) * s for m, s in zip(layers, [64, 16, 1, 1]))
    assert forward_macs(built.module, sizes) == expected


def test_augment_batch_is_a_shifted_or_flipped_crop():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    out = augment_batch(x, torch.Generator().manual_seed(1), padding=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        candidates = [padded[i, :, a:a + 6, b:b + 6] for a in range(5) for b in range(5)]
        candidates += [c.flip(2) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)
