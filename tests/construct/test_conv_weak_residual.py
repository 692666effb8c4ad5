"""Weak tickets of CNNs with residual additions (docs/math.md §9 residual blocks, §4): the ticket equals the target
(the module itself, run in float64), it lies inside the ER mask, every weighted layer's candidates are the copies of
its input class, missing edges are failures whose errors the certificate bounds (through additions: e(a+b) ≤ e(a) +
e(b)), theory's widths succeed with probability ≥ 1 − δ, and what the construction cannot carry is refused in one
line."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from construct.architecture import INPUT, Architecture, Layer
from construct.conv_target import conv_target
from construct.conv_weak import _mask_rows, build_conv_weak_ticket, conv_weak_accuracies
from construct.conv_weak_residual import (build_residual_weak_ticket, copy_classes, residual_weak_forward,
                                          restricted_weights)
from theory.testing import assert_rate


class _Block(nn.Module):
    """y = ReLU(F(x) + shortcut(x)), F = conv-BN-ReLU-conv-BN; shortcut identity or 1×1 conv + BN (stride 2)."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)
        self.c2, self.b2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
        self.short = (nn.Sequential() if stride == 1 and c_in == c_out else
                      nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x):
        return torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))) + self.short(x))


def _resnet(seed=0):
    """stem conv+BN+ReLU, an identity block, a downsampling block (1×1 shortcut), global average pooling, linear."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2), nn.ReLU(), _Block(2, 2, 1),
                      _Block(2, 3, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            with torch.no_grad():
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return m.eval()


def _module_out(model, x):
    with torch.no_grad():
        return copy.deepcopy(model).double()(torch.as_tensor(x)).numpy()


@pytest.mark.parametrize("density,box", [(0.5, (-1.0, 1.0)), ([1.0, 0.3, 0.6, 0.5, 0.5, 0.4, 0.7, 0.5], (0.0, 1.0))])
def test_ticket_equals_the_module(density, box):
    model = _resnet()
    ticket, report = build_residual_weak_ticket(model, (1, 6, 6), density, 0.1, 4, box=box, samples=32)
    assert report.success and report.certificate == 0.0 and report.relative_error <= 1e-12
    x = np.random.default_rng(5).uniform(box[0], box[1], size=(30, 1, 6, 6))
    expected = _module_out(model, x)
    assert np.max(np.abs(residual_weak_forward(ticket, x) - expected)) <= 1e-10 * np.max(np.abs(expected))
    # the plain entry point builds the same ticket for a residual network
    same, _ = build_conv_weak_ticket(model, (1, 6, 6), density, 0.1, 4, box=box, samples=32)
    assert all(np.array_equal(a.rows, b.rows) and np.array_equal(a.cols, b.cols)
               for a, b in zip(ticket.layers, same.layers))


def test_copy_classes_join_the_two_ends_of_every_addition():
    cc = copy_classes(conv_target(_resnet(), (1, 6, 6)))
    names = [w.name for w in conv_target(_resnet(), (1, 6, 6)).weighted]
    writes = dict(zip(names, cc.writes))
    # stem, first block's c2 write one class (identity shortcut); second block's c2 and shortcut conv another
    assert writes["0"] == writes["3.c2"] != writes["3.c1"]
    assert writes["4.c2"] == writes["4.short.0"] not in (writes["0"], writes["4.c1"])
    assert cc.reads[0] is None and cc.output == writes[names[-1]]


def test_ticket_lies_in_the_er_mask_and_reads_copies_of_its_input_class():
    model = _resnet(1)
    ticket, report = build_residual_weak_ticket(model, (1, 6, 6), 0.4, 0.1, 9, samples=4)
    cc = ticket.classes
    lift = ticket.layers[0]
    a, usable = ticket.lifting.diagonal()
    assert np.all(usable[lift.rows]) and np.all(lift.cols == lift.rows // lift.copies)
    for t, layer in enumerate(ticket.layers[1:]):
        src = ticket.source_layers[t]
        assert layer.rows.size > 0
        for b in np.unique(layer.rows // src.rows_per_block):
            sel = layer.rows // src.rows_per_block == b
            M = _mask_rows(src, int(b))
            assert np.all(M[layer.rows[sel] - b * src.rows_per_block, layer.cols[sel]])
        if t >= 1:  # input channel (col // block) is copy u of target channel j: j = channel // r_in
            wl = ticket.target.weighted[t]
            r_in = layer.n_cols // wl.fan_in
            assert r_in == dict(zip(sorted(set(cc.reads[1:]) | set(cc.writes)), report.theory["class_copies"]))[
                cc.reads[t]]
            W = wl.dense
            K = layer.block
            j = (layer.cols // K) // r_in
            v = j * K + layer.cols % K
            assert np.array_equal(layer.weight, W[layer.rows // layer.copies, v])


def test_failures_are_certified_through_additions():
    model = _resnet(2)
    x = np.random.default_rng(8).uniform(-1, 1, size=(64, 1, 6, 6))
    expected = _module_out(model, x)
    failed = 0
    for seed in range(6):
        ticket, report = build_residual_weak_ticket(model, (1, 6, 6), 0.5, 0.1, seed, width_multiplier=0.2,
                                                    samples=64)
        got = residual_weak_forward(ticket, x, restricted_weights(ticket))
        err = float(np.max(np.abs(got - expected)))
        assert err <= report.certificate + 1e-9 * (1 + report.certificate)
        assert report.sampled_error <= report.certificate + 1e-9 * (1 + report.certificate)
        if not report.success:
            failed += 1
            assert report.certificate > 0 and report.failures > 0
    assert failed >= 1  # the small multiplier does cost edges, so the certificate path is exercised


def test_theory_widths_succeed_with_probability_at_least_one_minus_delta():
    delta, seeds = 0.2, 20
    wins = sum(build_residual_weak_ticket(_resnet(3), (1, 6, 6), 0.3, delta, s, samples=2)[1].success
               for s in range(seeds))
    assert_rate(wins, seeds, 1 - delta, what="weak residual tickets at density 0.3")


def test_same_seed_same_ticket():
    a, _ = build_residual_weak_ticket(_resnet(), (1, 6, 6), 0.4, 0.1, 11, samples=2)
    b, _ = build_residual_weak_ticket(_resnet(), (1, 6, 6), 0.4, 0.1, 11, samples=2)
    c, _ = build_residual_weak_ticket(_resnet(), (1, 6, 6), 0.4, 0.1, 12, samples=2)
    assert all(np.array_equal(x.rows, y.rows) and np.array_equal(x.cols, y.cols) for x, y in zip(a.layers, b.layers))
    assert any(not np.array_equal(x.cols, y.cols) for x, y in zip(a.layers, c.layers))


def _conv(name, src, c_in=1, c_out=1):
    return Layer("conv2d", name, (src,), {"weight": np.ones((c_out, c_in, 3, 3)), "bias": np.zeros(c_out)},
                 {"stride": (1, 1), "padding": (1, 1)})


@pytest.mark.parametrize("arch,needle", [
    # an addition of the network input (the input is not copied)
    (Architecture((_conv("c", INPUT), Layer("add", "a", ("c", INPUT)), Layer("flatten", "f", ("a",)),
                   Layer("linear", "fc", ("f",), {"weight": np.ones((2, 16)), "bias": np.zeros(2)}))),
     "reads the network input"),
    # a second weighted layer reading the input
    (Architecture((_conv("c", INPUT), _conv("d", INPUT), Layer("add", "a", ("c", "d")), Layer("flatten", "f", ("a",)),
                   Layer("linear", "fc", ("f",), {"weight": np.ones((2, 16)), "bias": np.zeros(2)}))),
     "first conv/linear layer only"),
])
def test_refusals_are_one_line(arch, needle):
    with pytest.raises(ValueError) as info:
        build_residual_weak_ticket(arch, (1, 4, 4), 0.5, 0.1, 0)
    assert "\n" not in str(info.value) and needle in str(info.value), str(info.value)


def test_digits_accuracy_through_the_plain_entry_points():
    model = _resnet(4)
    ticket, _ = build_conv_weak_ticket(model, (1, 6, 6), 0.5, 0.1, 1, samples=2)
    x = np.random.default_rng(2).uniform(-1, 1, size=(40, 1, 6, 6))
    labels = _module_out(model, x).argmax(axis=1)
    acc = conv_weak_accuracies(ticket, x, labels)
    assert acc["digits test accuracy (target)"] == acc["digits test accuracy (ticket)"] == 1.0
    assert acc["test predictions that differ"] == 0


@pytest.mark.parametrize("residual", [True, False])
def test_exported_ticket_equals_the_numpy_forward(residual):
    from construct.architecture import architecture_forward
    from construct.conv_weak import conv_weak_forward
    from construct.conv_weak_export import weak_ticket_architecture

    model = _resnet(5) if residual else nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                                      nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                                      nn.Linear(27, 2)).eval()
    ticket, report = build_conv_weak_ticket(model, (1, 6, 6), 0.4, 0.1, 3, samples=2)
    x = np.random.default_rng(1).uniform(-1, 1, size=(20, 1, 6, 6))
    own = residual_weak_forward(ticket, x) if residual else conv_weak_forward(ticket, x)
    arch = weak_ticket_architecture(ticket)
    assert np.max(np.abs(architecture_forward(arch, x) - own)) <= 1e-12 * (1 + np.max(np.abs(own)))
    with torch.no_grad():
        out = ticket.to_module()(torch.as_tensor(x)).numpy()
    assert np.max(np.abs(out - own)) <= 1e-12 * (1 + np.max(np.abs(own)))
    assert np.max(np.abs(out - _module_out(model, x))) <= report.certificate + 1e-10 * np.max(np.abs(own))
    # the exported weights are the kept entries: as many non-zeros as kept weights (none of them zero)
    assert sum(int(np.count_nonzero(r.params["weight"])) for r in arch.layers if r.params) == ticket.kept_params
