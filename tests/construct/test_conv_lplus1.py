"""Strong L+1 tickets of plain CNNs (docs/math.md §9, §6): the ticket lies inside the ER masks with the source's own
weights, every computed channel is within its certificate of its target channel, the certificate is ≤ eps when every
instance succeeds, the torch module equals the numpy forward, an explicit loop computation equals the forward, and
the refusals are one line."""
import copy

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from torch import nn

from construct.architecture import INPUT, Architecture, Layer
from construct.conv_lplus1 import (LPLUS1_RESIDUAL_REFUSAL, build_conv_lplus1_ticket, conv_lplus1_attack)
from construct.conv_ticket import target_values


def _cnn(seed=0):
    """conv+BN (padding 1) -> ReLU -> max pool -> conv (padding 1) -> ReLU -> flatten (4 positions) -> linear: the
    lifting conv, the 1×1 layer, a conv over copies with the constants read at the central offset, a linear layer
    after a flatten."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)).eval()
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.3, 0.3)
        m[1].running_var.uniform_(0.5, 2.0)
    return m


@pytest.fixture(scope="module")
def signed_ticket():
    """Box [-1, 1] (layer 1 needs both sides of the sign split), density 0.5, per-instance tolerance 0.05."""
    return build_conv_lplus1_ticket(_cnn(), (1, 4, 4), 0.5, 0.1, 3, weight_eps=0.05, box=(-1.0, 1.0), samples=64)


@pytest.fixture(scope="module")
def eps_ticket():
    """Box [0, 1] (one side), densities per source layer, network error eps = 0.2 (backward split)."""
    return build_conv_lplus1_ticket(_cnn(1), (1, 4, 4), [1.0, 0.6, 0.8, 0.7], 0.1, 5, eps=0.2, box=(0.0, 1.0),
                                    samples=64)


def test_ticket_is_inside_the_er_masks_with_the_source_weights(signed_ticket):
    ticket, report = signed_ticket
    src = ticket.source
    lift = ticket.layers[0]
    g = lift.copies
    V1 = src.lifting.fan_in
    a, usable = src.lifting.diagonal()
    # the lifting keeps only dedicated entries (u, u // g) of usable channels, with the source weight a_u
    assert lift.kept > 0 and np.all(lift.rows < V1 * g) and np.array_equal(lift.cols, lift.rows // g)
    assert np.all(usable[lift.rows]) and np.array_equal(lift.weight, a[lift.rows].astype(np.float64))
    # kept lifting biases: exactly the used bias-group channels, positive, the source's bias
    kept_bias = np.nonzero(lift.bias)[0]
    assert kept_bias.size > 0 and np.all(kept_bias >= V1 * g)
    assert np.array_equal(lift.bias[kept_bias], src.lifting.bias[kept_bias].astype(np.float64))
    assert np.all(lift.bias[kept_bias] > 0) and set(kept_bias) <= set(lift.active)
    # later layers: every kept entry has mask 1 and the source's own weight bit for bit; their biases are pruned
    for layer, source_layer in zip(ticket.layers[1:], src.layers):
        w, m = source_layer.gather(layer.rows, layer.cols)
        assert layer.kept > 0 and m.all()
        assert np.array_equal(layer.weight, w.astype(np.float64))
        assert not layer.bias.any()
        assert np.all(np.isin(layer.rows, layer.active))
    assert report.ticket_params == ticket.kept_params


def _check_channels(ticket, x):
    """Every computed channel of every source layer against its target channel (copies) or its constant value."""
    values = {}
    out = ticket.forward(x, values_out=values)
    tv = target_values(ticket.target, x)
    worst = 0.0
    for layer in ticket.layers[1:]:
        got = values[layer.carries]
        want = tv[layer.carries]
        R = layer.copies * want.shape[1]
        for pos, ch in enumerate(layer.active):
            if ch < R:
                err = float(np.max(np.abs(got[:, pos] - want[:, ch // layer.copies])))
                assert err <= layer.error[ch] + 1e-9 * (1.0 + layer.error[ch]), (layer.index, ch, err, layer.error[ch])
                worst = max(worst, err)
            else:  # a constant channel: one value at every position of every input
                vals = got[:, pos]
                assert np.ptp(vals) <= 1e-12 and vals.reshape(-1)[0] > 0
    assert np.max(np.abs(out - tv[ticket.target.architecture.layers[-1].name])) <= ticket.certificate + 1e-9
    return worst


def test_every_channel_is_within_its_certificate(signed_ticket, eps_ticket):
    for ticket, report in (signed_ticket, eps_ticket):
        a, b = ticket.target.box
        x = np.random.default_rng(11).uniform(a, b, size=(48, 1, 4, 4))
        x[:4] = np.where(np.random.default_rng(12).random((4, 1, 4, 4)) < 0.5, a, b)  # corners of the box
        assert _check_channels(ticket, x) > 0
        attacked = conv_lplus1_attack(ticket, seed=2, samples=16, starts=2, steps=8)
        assert 0 < attacked <= report.certificate + 1e-9 * (1.0 + report.certificate)


def test_certificate_is_within_eps_when_every_instance_succeeds(eps_ticket, signed_ticket):
    ticket, report = eps_ticket
    assert report.success and report.tolerance_split == "backward"
    assert 0 < report.sampled_error <= report.certificate <= 0.2
    # layer 1 has sides·P·R_2·V_1 weight instances (both signs only on the box [-1, 1]), P·R_2 bias instances and
    # c_2 constants; R_2 = r_2·c_1 copies of its 2 channels over V_1 = 9 virtual inputs
    for rep, sides in ((report, 1), (signed_ticket[1], 2)):
        gr = rep.groups
        R = gr["r"][0] * 2
        P = gr["P"][0]
        assert rep.layers[0]["instances"] == sides * P * R * 9 + P * R + gr["c"][0]


def test_torch_module_equals_the_numpy_forward(signed_ticket):
    ticket, _ = signed_ticket
    x = np.random.default_rng(5).uniform(-1, 1, size=(10, 1, 4, 4))
    with torch.no_grad():
        y = ticket.to_module()(torch.tensor(x)).numpy()
    assert np.max(np.abs(y - ticket.forward(x))) <= 1e-9
    assert all(buf.dtype == torch.float64 for buf in ticket.to_module().buffers() if buf.is_floating_point())


def test_a_tiny_ticket_equals_an_explicit_loop_computation():
    """conv 2x2 (stride 1, no padding) on a 3x3 image -> ReLU -> flatten -> linear, the ticket evaluated by loops over
    its kept entries (lifting, 1×1 layer, linear layer over the flattened copies) instead of convolutions."""
    torch.manual_seed(4)
    m = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)).eval()
    ticket, report = build_conv_lplus1_ticket(m, (1, 3, 3), 0.7, 0.1, 2, weight_eps=0.05, box=(-1.0, 1.0),
                                              samples=16)
    lift, second, last = ticket.layers
    x = np.random.default_rng(0).uniform(-1, 1, size=(3, 1, 3, 3))
    n = x.shape[0]
    h1 = np.zeros((n, lift.n_rows, 2, 2))
    for u in range(lift.n_rows):
        h1[:, u] = lift.bias[u]
    for u, v, w in zip(lift.rows, lift.cols, lift.weight):
        j, r, s = v // 4, (v % 4) // 2, v % 2
        for y1 in range(2):
            for y2 in range(2):
                h1[:, u, y1, y2] += w * x[:, j, y1 + r, y2 + s]
    h1 = np.maximum(h1, 0.0)
    h2 = np.zeros((n, second.n_rows, 2, 2))
    for o, u, w in zip(second.rows, second.cols, second.weight):
        h2[:, o] += w * h1[:, u]
    h2 = np.maximum(h2, 0.0).reshape(n, -1)  # flatten: feature c·4 + position
    out = np.zeros((n, last.n_rows))
    for k, f, w in zip(last.rows, last.cols, last.weight):
        out[:, k] += w * h2[:, f]
    assert np.max(np.abs(out - ticket.forward(x))) <= 1e-12
    with torch.no_grad():
        target = m.double()(torch.tensor(x)).numpy()
    assert np.max(np.abs(out - target)) <= report.certificate


def test_source_masks_are_bernoulli_of_the_density(signed_ticket):
    ticket, _ = signed_ticket
    layer = ticket.source.layers[1]
    _, m = layer.take_rows(np.arange(min(layer.shape[0], 200)))
    assert binomtest(int(m.sum()), m.size, layer.density).pvalue >= 1e-3
    _, usable = ticket.source.lifting.diagonal()
    assert binomtest(int(usable.sum()), usable.size, ticket.source.lifting.density).pvalue >= 1e-3


def test_same_seed_same_ticket(eps_ticket):
    ticket, report = eps_ticket
    again, rep2 = build_conv_lplus1_ticket(_cnn(1), (1, 4, 4), [1.0, 0.6, 0.8, 0.7], 0.1, 5, eps=0.2,
                                           box=(0.0, 1.0), samples=64)
    assert rep2.certificate == report.certificate
    for a, b in zip(ticket.layers, again.layers):
        assert np.array_equal(a.rows, b.rows) and np.array_equal(a.cols, b.cols) and np.array_equal(a.weight, b.weight)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        return self.fc(torch.relu(h + self.c2(h)).flatten(1))


def _padding_beyond_kernel():
    """A 1×1 conv with padding 1: its constant read at offset (1, 1) is outside its 1×1 kernel."""
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 1, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(2 * 6 * 6, 2)).eval()


def _avgpool_with_padding():
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2, padding=1), nn.Flatten(),
                         nn.Linear(2 * 3 * 3, 2)).eval()


def _no_bias(model):
    model = copy.deepcopy(model)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                mod.bias.zero_()
    return model


@pytest.mark.parametrize("model,kwargs,needle", [
    (_Residual(), {}, LPLUS1_RESIDUAL_REFUSAL),
    (_padding_beyond_kernel(), {}, "kernel offset (1, 1)"),
    (_avgpool_with_padding(), {}, "avgpool2d, padding [1, 1]"),
    (_cnn(), {"eps": 0.1}, "eps and weight_eps"),
    (_cnn(), {"delta": 1.5}, "delta=1.5"),
    (_cnn(), {"weight_eps": None, "eps": 1e-9}, "the exact solver searches at most 40"),
    (_cnn(), {"max_memory": 1000}, "--max-memory"),
])
def test_refusals_are_one_line(model, kwargs, needle):
    args = {"density": 0.5, "delta": 0.1, "weight_eps": 0.05, **kwargs}
    with pytest.raises(ValueError) as info:
        build_conv_lplus1_ticket(model, (1, 4, 4), args.pop("density"), args.pop("delta"), 0, **args)
    msg = str(info.value)
    assert "\n" not in msg and needle in msg, msg


def test_a_target_without_biases_needs_no_constants_and_may_pad_freely():
    """Without biases there are no constant channels, so the central-offset rule does not apply."""
    ticket, report = build_conv_lplus1_ticket(_no_bias(_padding_beyond_kernel()), (1, 4, 4), 1.0, 0.1, 0,
                                              weight_eps=0.05, samples=16)
    assert report.success and report.groups["g0"] == 0 and not any(report.groups["c"])
    assert report.sampled_error <= report.certificate


def test_residual_architecture_records_are_refused_naming_2l():
    conv = {"weight": np.ones((1, 1, 3, 3)), "bias": np.zeros(1)}
    arch = Architecture((Layer("conv2d", "c", (INPUT,), conv, {"stride": (1, 1), "padding": (1, 1)}),
                         Layer("relu", "r", ("c",)), Layer("add", "a", ("r", "c")), Layer("flatten", "f", ("a",)),
                         Layer("linear", "fc", ("f",), {"weight": np.ones((2, 16)), "bias": np.zeros(2)})))
    with pytest.raises(ValueError, match="--construction 2l"):
        build_conv_lplus1_ticket(arch, (1, 4, 4), 0.5, 0.1, 0, weight_eps=0.05)
