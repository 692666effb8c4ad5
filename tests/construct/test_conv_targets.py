"""Conv / ResNet targets (construct.conv_targets, docs/math.md §9): the digits split, the trained digits CNN and
ResNet (determinism, test accuracy, read_module round trip) and the seeded ResNet-18 (reading, weight count)."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from construct.architecture import LAYER_KINDS, Architecture, Layer, architecture_forward, fold_batchnorm
from construct.conv_targets import (DigitsData, accuracy, conv_module, digits_cnn, digits_data, digits_resnet,
                                    module_logits, module_test_accuracy, resnet18_target)
from construct.modules import read_module


@pytest.fixture(scope="module")
def data():
    return digits_data(0)


@pytest.fixture(scope="module")
def cnn(data):
    return digits_cnn(0, data)


@pytest.fixture(scope="module")
def resnet(data):
    return digits_resnet(0, data)


def _state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------ data
def test_digits_split_is_a_seeded_partition_of_load_digits(data):
    from sklearn.datasets import load_digits

    assert data.x_train.shape == (1347, 1, 8, 8) and data.x_test.shape == (450, 1, 8, 8)
    assert data.x_train.dtype == np.float64 and data.y_train.dtype == np.int64 and data.y_test.dtype == np.int64
    assert data.x_train.min() >= 0.0 and max(data.x_train.max(), data.x_test.max()) == 1.0
    # train ∪ test is load_digits() (pixels / 16) up to the order of the rows
    raw = load_digits()
    want = np.column_stack([raw.target, raw.data / 16.0])
    got = np.column_stack([np.concatenate([data.y_train, data.y_test]),
                           np.concatenate([data.x_train, data.x_test]).reshape(-1, 64)])
    np.testing.assert_array_equal(want[np.lexsort(want.T[::-1])], got[np.lexsort(got.T[::-1])])
    again, other = digits_data(0), digits_data(1)
    np.testing.assert_array_equal(again.x_test, data.x_test)
    np.testing.assert_array_equal(again.y_train, data.y_train)
    assert not np.array_equal(other.y_test, data.y_test)
    with pytest.raises(ValueError):
        data.x_train[0, 0, 0, 0] = 0.5  # read-only arrays of a frozen dataclass


# ------------------------------------------------------------------------------------------------ digits models
def test_digits_cnn_accuracy_and_architecture(cnn, data):
    assert not cnn.training and next(cnn.parameters()).dtype == torch.float64
    assert module_test_accuracy(cnn, data) >= 0.90
    arch = read_module(cnn)
    assert [r.kind for r in arch.layers] == ["conv2d", "relu", "conv2d", "relu", "flatten", "linear"]
    assert [r.attrs.get("stride") for r in arch.layers if r.kind == "conv2d"] == [(1, 1), (2, 2)]
    assert [r.params["weight"].shape for r in arch.layers if r.kind in ("conv2d", "linear")] == \
        [(8, 1, 3, 3), (16, 8, 3, 3), (10, 256)]
    np.testing.assert_allclose(architecture_forward(arch, data.x_test), module_logits(cnn, data.x_test),
                               rtol=0, atol=1e-5)


def test_digits_resnet_accuracy_and_architecture(resnet, data):
    assert not resnet.training and next(resnet.parameters()).dtype == torch.float64
    assert module_test_accuracy(resnet, data) >= 0.85
    arch = read_module(resnet)
    kinds = [r.kind for r in arch.layers]
    assert set(kinds) <= set(LAYER_KINDS)
    assert set(kinds) == {"conv2d", "batchnorm2d", "relu", "add", "global_avgpool", "flatten", "linear"}
    # stem + 2 per block + the 1×1 shortcut of block 2; a BatchNorm after each; one residual addition per block
    assert (kinds.count("conv2d"), kinds.count("batchnorm2d"), kinds.count("add")) == (6, 6, 2)
    shortcut = [r for r in arch.layers if r.kind == "conv2d" and r.params["weight"].shape[2:] == (1, 1)]
    assert len(shortcut) == 1 and shortcut[0].attrs["stride"] == (2, 2)
    # BatchNorm running statistics come from training (not the fresh 0 / 1)
    bn = [r for r in arch.layers if r.kind == "batchnorm2d"]
    assert all(np.abs(r.params["running_var"] - 1).max() > 1e-3 for r in bn)
    np.testing.assert_allclose(architecture_forward(arch, data.x_test), module_logits(resnet, data.x_test),
                               rtol=0, atol=1e-5)


def _fold_all_batchnorms(arch: Architecture) -> Architecture:
    """Every BatchNorm folded into the conv it reads (docs/math.md §9); readers of the BatchNorm read the conv."""
    layers, rename = [], {}
    for rec in arch.layers:
        inputs = tuple(rename.get(i, i) for i in rec.inputs)
        if rec.kind == "batchnorm2d":
            k = next(i for i, r in enumerate(layers) if r.name == inputs[0])
            layers[k] = fold_batchnorm(layers[k], rec)
            rename[rec.name] = layers[k].name
        else:
            layers.append(Layer(rec.kind, rec.name, inputs, rec.params, rec.attrs))
    return Architecture(tuple(layers), name=arch.name)


def test_digits_resnet_with_folded_batchnorm_keeps_its_test_accuracy(resnet, data):
    arch = read_module(resnet)
    folded = _fold_all_batchnorms(arch)
    assert [r.kind for r in folded.layers].count("batchnorm2d") == 0
    assert [r.kind for r in folded.layers].count("conv2d") == 6
    got, want = architecture_forward(folded, data.x_test), architecture_forward(arch, data.x_test)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.abs(want).max())
    assert accuracy(got, data.y_test) == module_test_accuracy(resnet, data)


def test_digits_training_is_bit_identical_and_leaves_torch_state_alone(cnn, data):
    threads = torch.get_num_threads()
    rng_before = torch.get_rng_state()
    torch.set_num_threads(2 if threads == 1 else 1)  # the caller's thread count does not change the weights
    try:
        again, shape, text = conv_module("digits-cnn", 0)  # the named spec is digits_cnn(0) on digits_data(0)
        assert torch.get_num_threads() == (2 if threads == 1 else 1)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert _state_equal(again, cnn)
    assert shape == (1, 8, 8) and "digits-cnn" in text and "450 test" in text
    assert not _state_equal(digits_cnn(1, data, epochs=1), digits_cnn(0, data, epochs=1))
    short = [digits_resnet(3, data, epochs=2) for _ in range(2)]  # BatchNorm buffers included
    assert _state_equal(*short)


# ------------------------------------------------------------------------------------------------ ResNet-18
def _resnet18_weight_count(width: int, in_channels: int, n_classes: int) -> int:
    """Weights of the CIFAR ResNet-18 written out from its definition (3×3 stem; per stage two BasicBlocks of two
    3×3 convs, a 1×1 shortcut where the width changes; 1×1 classifier)."""
    total, c = 9 * in_channels * width, width
    for planes in (width, 2 * width, 4 * width, 8 * width):
        total += 9 * c * planes + 9 * planes * planes + (c * planes if c != planes else 0)  # block 1
        total += 2 * 9 * planes * planes  # block 2
        c = planes
    return total + c * n_classes


def test_resnet18_target_is_read_and_has_its_weight_count():
    module = resnet18_target(0, bn="default")
    arch = read_module(module)
    counted = sum(r.params["weight"].size for r in arch.layers if r.kind in ("conv2d", "linear"))
    from_shapes = sum(int(np.prod(m.weight.shape)) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert counted == from_shapes == _resnet18_weight_count(64, 3, 10) == 11_164_352
    kinds = [r.kind for r in arch.layers]
    assert (kinds.count("conv2d"), kinds.count("add"), kinds.count("global_avgpool")) == (21, 8, 1)


def test_resnet18_calibrated_batchnorm_is_seeded_and_read_exactly():
    rng_before = torch.get_rng_state()
    a = resnet18_target(5, width=4, n_classes=3)
    assert torch.equal(torch.get_rng_state(), rng_before)  # layer constructors' placeholder draws are undone
    b = resnet18_target(5, width=4, n_classes=3)
    assert _state_equal(a, b) and not _state_equal(a, resnet18_target(6, width=4, n_classes=3))
    default = resnet18_target(5, width=4, n_classes=3, bn="default")
    assert not a.training
    for name, buf in a.named_buffers():
        if name.endswith("running_var"):
            assert not torch.equal(buf, torch.ones_like(buf))
            assert torch.equal(default.get_buffer(name), torch.ones_like(buf))
    arch = read_module(a)
    assert sum(r.params["weight"].size for r in arch.layers if r.kind in ("conv2d", "linear")) == \
        _resnet18_weight_count(4, 3, 3)
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 32, 32))
    want = module_logits(a, x)
    assert want.shape == (2, 3)
    np.testing.assert_allclose(architecture_forward(arch, x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# ------------------------------------------------------------------------------------------------ accuracy, specs
@settings(max_examples=30)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=40), st.data())
def test_accuracy_counts_argmax_hits(labels, draw):
    labels = np.array(labels)
    logits = np.zeros((len(labels), 5))
    logits[np.arange(len(labels)), labels] = 1.0
    assert accuracy(logits, labels) == 1.0
    wrong = draw.draw(st.lists(st.booleans(), min_size=len(labels), max_size=len(labels)))
    shifted = np.where(wrong, (labels + 1) % 5, labels)
    assert accuracy(logits, shifted) == pytest.approx(1 - sum(wrong) / len(labels))


@pytest.mark.parametrize("call, words", [
    (lambda: conv_module("digits-mlp", 0), ["digits-mlp", "digits-cnn", "digits-resnet", "resnet18"]),
    (lambda: conv_module("resnet18:depth=3", 0), ["depth=3", "width=W"]),
    (lambda: conv_module("resnet18:width=x", 0), ["width", "'x'"]),
    (lambda: conv_module("digits-cnn:width=3", 0), ["digits-cnn:width=3", "allowed"]),
    (lambda: resnet18_target(0, bn="frozen"), ["bn", "frozen", "calibrated"]),
    (lambda: digits_cnn(-1), ["seed", "-1"]),
    (lambda: digits_cnn(0, data=np.zeros(3)), ["data", "DigitsData"]),
    (lambda: digits_resnet(0, lr=float("nan")), ["lr"]),
    (lambda: accuracy(np.zeros((3, 2)), np.zeros(4)), ["(3, 2)", "(4,)"]),
])
def test_bad_input_is_a_one_line_value_error(call, words):
    with pytest.raises(ValueError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_conv_module_resnet18_options():
    module, shape, text = conv_module("resnet18:width=4,classes=3,bn=default", 2)
    assert shape == (3, 32, 32) and "width 4" in text and f"{_resnet18_weight_count(4, 3, 3):,} weights" in text
    assert _state_equal(module, resnet18_target(2, width=4, n_classes=3, bn="default"))


def test_importing_construct_conv_targets_needs_no_torch():
    code = "import sys, construct, construct.conv_targets; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert isinstance(digits_data(0), DigitsData)
