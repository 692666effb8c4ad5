"""Weak tickets of plain CNNs (docs/math.md §9, §4): the ticket equals the target (every copy computes its target
channel exactly), it lies inside the ER mask, missing edges are failures (reported, certified, never patched) whose
frequency is the one the widths assume, theory's widths succeed with probability ≥ 1 − δ, and refusals are one line."""
import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from construct.architecture import INPUT, Architecture, Layer
from construct.conv_source import IntermediateLayer
from construct.conv_ticket import target_values
from construct.conv_weak import build_conv_weak_ticket, conv_weak_accuracies, conv_weak_forward
from construct.source import SourceLayer
from theory.memory import MemoryBudgetError
from theory.testing import assert_binomial, assert_rate


def _cnn(seed=0):
    """conv+BN (padding) -> ReLU -> max pool -> conv -> ReLU -> flatten (4 positions per channel) -> linear -> ReLU
    -> linear: every path of the construction (lifting conv, 1x1 layer, conv over copies, linear after a flatten,
    linear after a linear)."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.3, 0.3)
        m[1].running_var.uniform_(0.5, 2.0)
        m[4].weight[0, 1] = 0.0  # zero weights need no edge
    return m


def _cnn_avg(seed=1):
    """strided padded conv, average pooling, a linear head straight after the flatten."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(3 * 2 * 2, 3)).eval()


def _tiny(seed=2):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2)).eval()


@pytest.mark.parametrize("model,shape,box,density", [(_cnn(), (1, 8, 8), (-1.0, 1.0), 0.5),
                                                     (_cnn_avg(), (2, 8, 8), (0.0, 1.0), [0.3, 0.6, 0.5])])
def test_ticket_equals_target_and_every_copy_its_channel(model, shape, box, density):
    ticket, report = build_conv_weak_ticket(model, shape, density, 0.1, 3, box=box, samples=32)
    assert report.success and report.failures == 0 and report.certificate == 0.0
    assert report.relative_error <= 1e-12
    x = np.random.default_rng(7).uniform(box[0], box[1], size=(40,) + shape)
    with torch.no_grad():
        expected = copy.deepcopy(model).double()(torch.as_tensor(x)).numpy()  # the module itself, float64
    values = {}
    out = conv_weak_forward(ticket, x, values_out=values)
    assert np.max(np.abs(out - expected)) <= 1e-10 * np.max(np.abs(expected))
    # every computed copy equals its target channel at every record after the first weighted layer
    tv = target_values(ticket.target, x)
    by_carries = {layer.carries: layer for layer in ticket.layers[1:]}
    layer = None
    for rec in ticket.target.architecture.layers:
        layer = by_carries.get(rec.name, layer)
        if layer is None or (values[rec.name].ndim == 2 and rec.name not in by_carries):
            continue  # before the first weighted layer (no copies yet), or a flattened value
        channel = layer.active // layer.copies
        assert np.allclose(values[rec.name], tv[rec.name][:, channel], rtol=0, atol=1e-12), rec.name
        assert np.all(np.bincount(channel, minlength=tv[rec.name].shape[1]) >= 1)  # every target channel computed


def _dense_torch_source(ticket):
    """The ticket as a torch network over ALL source channels (every pruned entry and bias 0), built from the kept
    entries alone: lifting conv + ReLU, 1x1 conv, then the target's records with each weighted one replaced by its
    source layer — an evaluation independent of conv_weak_forward's restriction to computed channels."""
    import torch.nn.functional as F

    layers = ticket.layers

    def weight(layer):
        W = torch.zeros(layer.n_rows, layer.n_cols, dtype=torch.float64)
        W[torch.as_tensor(layer.rows), torch.as_tensor(layer.cols)] = torch.as_tensor(layer.weight)
        return W.reshape((layer.n_rows, layer.in_channels) + tuple(layer.kernel)) if layer.kind == "conv2d" else W

    def apply(layer, h):
        b = torch.as_tensor(layer.bias)
        if layer.kind == "conv2d":
            return F.conv2d(h, weight(layer), b, stride=layer.stride, padding=layer.padding)
        return F.linear(h, weight(layer), b)

    def run(x):
        h = torch.as_tensor(x)
        by_carries = {layer.carries: layer for layer in layers[1:]}
        for rec in ticket.target.architecture.layers:
            if rec.name in by_carries:
                if by_carries[rec.name].index == 2:
                    h = torch.relu(apply(layers[0], h))
                h = apply(by_carries[rec.name], h)
            elif rec.kind == "relu":
                h = torch.relu(h)
            elif rec.kind == "maxpool2d":
                h = F.max_pool2d(h, rec.attrs["kernel_size"], rec.attrs["stride"], rec.attrs["padding"])
            elif rec.kind == "avgpool2d":
                h = F.avg_pool2d(h, rec.attrs["kernel_size"], rec.attrs["stride"], rec.attrs["padding"])
            elif rec.kind == "flatten":
                h = h.flatten(1)
            else:
                raise AssertionError(rec.kind)
        return h.numpy()

    return run


@pytest.mark.parametrize("model,shape,box", [(_cnn(), (1, 8, 8), (-1.0, 1.0)), (_cnn_avg(), (2, 8, 8), (0.0, 1.0))])
def test_the_ticket_as_a_dense_torch_network_over_all_copies_equals_the_target(model, shape, box):
    ticket, _ = build_conv_weak_ticket(model, shape, 0.4, 0.1, 4, box=box, samples=4)
    x = np.random.default_rng(8).uniform(box[0], box[1], size=(30,) + shape)
    with torch.no_grad():
        expected = copy.deepcopy(model).double()(torch.as_tensor(x)).numpy()
        got = _dense_torch_source(ticket)(x)
    assert np.max(np.abs(got - expected)) <= 1e-10 * np.max(np.abs(expected))
    assert np.max(np.abs(conv_weak_forward(ticket, x) - got)) <= 1e-12 * np.max(np.abs(expected))


def _zero_first(m):
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim > 1:
                p.view(-1)[0] = 0.0
    return m.eval()


_SHAPES = {
    "mlp on a flat input": (lambda: nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)), (5,)),
    "flatten first": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(18, 4), nn.ReLU(), nn.Linear(4, 2)), (2, 3, 3)),
    "conv-conv without ReLU, global pool": (lambda: nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 2, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(2, 2)), (2, 6, 6)),
    "pooling on the input, padded max pool": (lambda: nn.Sequential(
        nn.AvgPool2d(2), nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2, stride=1, padding=1), nn.Flatten(),
        nn.Linear(32, 3)), (1, 8, 8)),
    "one conv layer": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3)), (1, 5, 5)),
}


@pytest.mark.parametrize("case", sorted(_SHAPES))
def test_other_plain_chains_are_represented_exactly(case):
    torch.manual_seed(5)
    make, shape = _SHAPES[case]
    model = _zero_first(make())
    ticket, report = build_conv_weak_ticket(model, shape, 0.4, 0.1, 1, samples=8)
    assert report.success
    x = np.random.default_rng(0).uniform(-1, 1, (20,) + shape)
    with torch.no_grad():
        expected = copy.deepcopy(model).double()(torch.as_tensor(x)).numpy()
    assert np.max(np.abs(conv_weak_forward(ticket, x) - expected)) <= 1e-10 * np.max(np.abs(expected))


def test_an_mlp_gets_the_widths_of_the_mlp_weak_construction():
    from construct.targets import load_target
    from construct.weak import weak_source_widths

    torch.manual_seed(6)
    model = _zero_first(nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    _, report = build_conv_weak_ticket(model, (5,), 0.3, 0.05, 0, width_multiplier=1.5, samples=4)
    _, g, copies, widths = weak_source_widths(load_target(model), 0.3, 0.05, width_multiplier=1.5)
    assert (report.lifting_group, report.copies) == (g, copies)
    assert list(report.source_channels) == list(widths[1:])


def test_ticket_is_inside_the_er_mask_and_keeps_one_edge_per_needed_weight():
    density, seed = 0.4, 5
    ticket, report = build_conv_weak_ticket(_cnn(), (1, 8, 8), density, 0.1, seed, samples=8)
    assert report.success
    target = ticket.target
    g = report.lifting_group
    lift = ticket.layers[0]
    fresh = IntermediateLayer(target.weighted[0].fan_in, 2 * g, 0, density, seed=seed, index=1)
    assert fresh.diagonal()[1][lift.rows].all()                      # usable: M_1[u, u // 2g] = 1
    assert np.array_equal(lift.cols, lift.rows // (2 * g))
    assert np.array_equal(lift.weight, np.where(lift.rows % (2 * g) < g, 1.0, -1.0))
    kept = 0
    for t, layer in enumerate(ticket.layers[1:], start=1):
        mask = SourceLayer(layer.n_rows, layer.n_cols, density, seed=seed, index=layer.index).mask  # regenerated
        assert mask[layer.rows, layer.cols].all()
        assert len(set(zip(layer.rows.tolist(), layer.cols.tolist()))) == layer.kept
        wl = target.weighted[t - 1]
        W = wl.dense
        i = layer.rows // layer.copies
        if t == 1:  # one G^+ and one G^- edge per nonzero weight of every computed copy
            v = layer.cols // (2 * g)
            sign = np.where(layer.cols % (2 * g) < g, 1.0, -1.0)
            assert np.array_equal(layer.weight, sign * W[i, v])
            per_row = 2 * np.count_nonzero(W, axis=1)
        else:  # one edge from some copy of channel j per nonzero W[i, (j, r, s)]
            r_in = ticket.layers[t - 1].copies
            v = (layer.cols // layer.block // r_in) * layer.block + layer.cols % layer.block
            assert np.array_equal(layer.weight, W[i, v])
            per_row = np.count_nonzero(W, axis=1)
        counts = np.bincount(layer.rows, minlength=layer.n_rows)[layer.active]
        assert np.array_equal(counts, per_row[layer.active // layer.copies])
        assert np.array_equal(layer.bias[layer.active], wl.bias[layer.active // layer.copies])
        kept += layer.kept
    assert report.ticket_params == kept + lift.kept


def test_missing_edges_are_failures_reported_and_certified_not_patched():
    model = _cnn()
    ticket, report = build_conv_weak_ticket(model, (1, 8, 8), 0.3, 0.1, 0, width_multiplier=0.05, samples=64)
    assert not report.success and report.failures > 0
    assert report.failures == sum(r["missing"] for r in report.layers)
    assert report.sampled_error > 1e-3                                # the ticket really is wrong
    assert report.certificate >= report.sampled_error                 # and the certificate bounds it
    x = np.random.default_rng(1).uniform(-1, 1, size=(64, 1, 8, 8))
    assert np.max(np.abs(conv_weak_forward(ticket, x) - ticket.target.forward(x))) <= report.certificate
    # nothing was patched: every copy keeps at most one edge per nonzero target weight (two in source layer 2)
    for t, layer in enumerate(ticket.layers[1:], start=1):
        W = ticket.target.weighted[t - 1].dense
        per_row = (2 if t == 1 else 1) * np.count_nonzero(W, axis=1)[layer.active // layer.copies]
        assert np.all(np.bincount(layer.rows, minlength=layer.n_rows)[layer.active] <= per_row)


def test_failure_frequency_is_the_one_the_widths_assume():
    # source layer 3 (target layer 2 over r_2 copies): each needed edge has its own r_2 candidates, missing
    # independently with probability (1 - p_3)^{r_2}
    p, missing, needed = 0.5, 0, 0
    for seed in range(6):
        _, report = build_conv_weak_ticket(_cnn(), (1, 8, 8), p, 0.1, seed, width_multiplier=0.15, samples=1)
        r2 = report.copies[0]
        missing += report.layers[2]["missing"]
        needed += report.layers[2]["needed"]
    assert r2 >= 2
    assert_binomial(missing, needed, (1 - p) ** r2, what="missing edges of source layer 3")


@pytest.mark.parametrize("density", [0.5, 0.2])
def test_theory_widths_succeed_with_probability_at_least_one_minus_delta(density):
    delta, seeds = 0.2, 20
    wins = sum(build_conv_weak_ticket(_tiny(), (1, 4, 4), density, delta, s, samples=4)[1].success
               for s in range(seeds))
    assert_rate(wins, seeds, 1 - delta, what=f"weak CNN tickets at density {density}")


def test_same_seed_same_ticket():
    a, _ = build_conv_weak_ticket(_tiny(), (1, 4, 4), 0.3, 0.1, 11, samples=4)
    b, _ = build_conv_weak_ticket(_tiny(), (1, 4, 4), 0.3, 0.1, 11, samples=4)
    c, _ = build_conv_weak_ticket(_tiny(), (1, 4, 4), 0.3, 0.1, 12, samples=4)
    assert all(np.array_equal(x.rows, y.rows) and np.array_equal(x.cols, y.cols) and np.array_equal(x.weight, y.weight)
               for x, y in zip(a.layers, b.layers))
    assert any(not np.array_equal(x.cols, y.cols) for x, y in zip(a.layers, c.layers))


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):  # the shortcut adds the network input, which the weak source does not copy
        h = torch.relu(self.c1(x))
        return self.fc(torch.relu(x + self.c2(h)).flatten(1))


def _branch():
    conv = {"weight": np.ones((1, 1, 3, 3)), "bias": np.zeros(1)}
    return Architecture((Layer("conv2d", "c", (INPUT,), conv, {"stride": (1, 1), "padding": (1, 1)}),
                         Layer("relu", "r", ("c",)), Layer("relu", "s", ("c",)), Layer("flatten", "f", ("s",)),
                         Layer("linear", "fc", ("f",), {"weight": np.ones((2, 16)), "bias": np.zeros(2)})))


@pytest.mark.parametrize("model,kwargs,needle", [
    (_Residual(), {}, "reads the network input"),
    (nn.Sequential(nn.Conv2d(1, 1, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(4, 2)), {}, "allowed"),
    (_branch(), {}, "allowed a plain chain"),
    (_tiny(), {"delta": 1.5}, "delta=1.5"),
    (_tiny(), {"density": 0.0}, "density"),
    (_tiny(), {"density": [0.5, 0.5]}, "density"),
    (_tiny(), {"width_multiplier": 0}, "width_multiplier"),
    (_tiny(), {"max_memory": 1000}, "--max-memory"),
])
def test_refusals_are_one_line(model, kwargs, needle):
    args = {"density": 0.5, "delta": 0.1, **kwargs}
    shape = (1, 6, 6) if model.__class__.__name__ == "Sequential" and len(model) == 4 else (1, 4, 4)
    with pytest.raises(ValueError) as info:
        build_conv_weak_ticket(model, shape, args.pop("density"), args.pop("delta"), 0, **args)
    msg = str(info.value)
    assert "\n" not in msg and needle in msg, msg
    if "max_memory" in kwargs:
        assert isinstance(info.value, MemoryBudgetError)


def test_report_is_json_and_accuracies_agree():
    ticket, report = build_conv_weak_ticket(_cnn(), (1, 8, 8), 0.5, 0.1, 2, samples=8)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["construction"] == "weak" and d["success"] and d["copies"][-1] == 1
    assert [r["source_layer"] for r in d["layers"]] == [1, 2, 3, 4, 5]
    assert "weak (L+1) ticket" in str(report)
    x = np.random.default_rng(3).uniform(-1, 1, size=(50, 1, 8, 8))
    labels = ticket.target.forward(x).argmax(axis=1)  # labels the target gets right by construction
    acc = conv_weak_accuracies(ticket, x, labels)
    assert acc == {"digits test accuracy (target)": 1.0, "digits test accuracy (ticket)": 1.0,
                   "test predictions that differ": 0}
