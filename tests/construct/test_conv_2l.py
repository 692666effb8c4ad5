"""The 2L strong ticket of convolutional and residual targets (docs/math.md §9): BatchNorm folding, the
virtual-input reduction against an explicit dense (im2col) construction, the unit-level network, the certificate
per value and channel, sub-masks of the ER source, and refusals."""
import numpy as np
import pytest
import torch
from torch import nn

from construct.conv_2l import build_conv_2l, graph_gains
from construct.conv_source import sample_conv_source
from construct.conv_target import conv_target
from construct.conv_ticket import (_windows, channel_bounds, conv_certificate, conv_sampled_error,
                                   conv_ticket_forward, effective_weights, target_values)


def _cnn(seed=0, bn=True):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 2, 3, padding=1)] + ([nn.BatchNorm2d(2)] if bn else []) + [
        nn.ReLU(), nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 4)]
    m = nn.Sequential(*layers).eval()
    if bn:
        with torch.no_grad():
            m[1].running_mean.uniform_(-0.3, 0.3)
            m[1].running_var.uniform_(0.5, 2.0)
            m[1].weight.uniform_(0.5, 1.5)
            m[1].bias.uniform_(-0.2, 0.2)
    return m


class _Residual(nn.Module):
    """stem conv+BN+ReLU, a block with an identity shortcut and one with a 1x1 conv + BN shortcut, avg pool,
    linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.stem, self.bn = nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2)
        self.c1, self.b1 = nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2)
        self.c2, self.b2 = nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2)
        self.c3, self.b3 = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(3)
        self.sc, self.bsc = nn.Conv2d(2, 3, 1, stride=2, bias=False), nn.BatchNorm2d(3)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(3 * 2 * 2, 3)
        for bn in (self.bn, self.b1, self.b2, self.b3, self.bsc):
            with torch.no_grad():
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 2.0)
        self.eval()

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        y = torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
        z = torch.relu(self.b3(self.c3(y)) + self.bsc(self.sc(y)))
        return self.fc(self.pool(z).flatten(1))


def _plan(target, k=160, g0=60, cap=(20, 3)):
    return ([{"parts": 1, "instance_eps": 0.01, "cap": cap, "bias_cap": cap} for _ in target.weighted],
            [(w.fan_in, w.fan_out, k, g0) for w in target.weighted])


def _build(model, shape, seed=1, density=0.5, box=(-1.0, 1.0), **kw):
    target = conv_target(model, shape, box=box)
    plan, layers = _plan(target, **kw)
    source = sample_conv_source(layers, [density] * (2 * len(layers)), seed)
    ticket, reports = build_conv_2l(target, source, plan)
    return target, ticket, reports


def _inputs(target, n=64, seed=0):
    a, b = target.box
    return np.random.default_rng(seed).uniform(a, b, size=(n,) + tuple(target.input_shape))


@pytest.mark.parametrize("model,shape", [(_cnn(), (1, 8, 8)), (_Residual(), (1, 8, 8))])
def test_batchnorm_folding_equals_the_module_in_eval_mode(model, shape):
    target = conv_target(model, shape)
    assert target.folded and all(r.kind != "batchnorm2d" for r in target.architecture.layers)
    x = _inputs(target, 16)
    with torch.no_grad():
        ref = model.double()(torch.tensor(x)).numpy()
    model.float()
    assert np.allclose(target.forward(x), ref, rtol=1e-10, atol=1e-12)


def test_signed_inputs_follow_relus_and_the_box():
    t = conv_target(_Residual(), (1, 8, 8))
    assert [w.signed for w in t.weighted] == [True] + [False] * 5
    t01 = conv_target(_Residual(), (1, 8, 8), box=(0.0, 1.0))
    assert not any(w.signed for w in t01.weighted)


def _unit_forward(ticket, x):
    """The ticket evaluated unit by unit: every kept A channel computes ReLU(a_u·x_v) from the im2col patches, every
    kept bias channel ReLU(β_u), every output channel sums its kept B entries (no grouping by virtual input)."""
    target = ticket.target

    def fn(h, wl):
        sel = ticket.layers[wl.index - 1]
        if wl.kind == "conv2d":
            win = _windows(h, wl.weight.shape[2:], wl.stride, wl.padding, 0.0)  # (N, C, H', W', kh, kw)
            n, c, ho, wo = win.shape[:4]
            patches = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, wl.fan_in, ho * wo)
        else:
            patches = h[:, :, None]
        out = np.zeros((h.shape[0], wl.fan_out, patches.shape[2]))
        unit_value = {}
        for u, a in zip(sel.units, sel.a):
            unit_value[int(u)] = np.maximum(a * patches[:, u // sel.k, :], 0.0)
        for u, beta in zip(sel.bias_units, sel.beta):
            unit_value[int(u)] = np.maximum(beta, 0.0) * np.ones_like(patches[:, 0, :])
        for i, u, v in zip(sel.rows, sel.cols, sel.v):
            out[:, i, :] += v * unit_value[int(u)]
        if wl.kind == "conv2d":
            return out.reshape(h.shape[0], wl.fan_out, ho, wo)
        return out[:, :, 0]

    from construct.conv_ticket import _walk

    return _walk(target, x, fn)


@pytest.mark.parametrize("model,shape", [(_cnn(), (1, 8, 8)), (_Residual(), (1, 8, 8))])
def test_grouped_forward_equals_the_unit_level_network(model, shape):
    target, ticket, _ = _build(model, shape)
    x = _inputs(target, 8)
    assert np.allclose(conv_ticket_forward(ticket, x), _unit_forward(ticket, x), rtol=1e-12, atol=1e-12)


def test_virtual_input_reduction_equals_the_dense_im2col_construction():
    """One conv layer solved by the conv construction and by the dense 2L construction on W.reshape(c_out, −1) over
    the same source numbers: the same instances, errors and kept entries; and the conv ticket on images equals the
    dense ticket on the im2col patches at every position."""
    from construct.source import Source
    from construct.strong_2l import build_2l
    from construct.targets import make_target
    from construct.ticket import ticket_forward

    torch.manual_seed(5)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).eval()
    model = nn.Sequential(conv)
    target = conv_target(model, (2, 5, 5))
    wl = target.weighted[0]
    k, g0 = 80, 40
    plan, layers = _plan(target, k=k, g0=g0)
    source = sample_conv_source(layers, [0.6, 0.7], 11)
    ticket, rep = build_conv_2l(target, source, plan)
    A, B = source.pairs[0]
    # the dense source with the same numbers: A's dedicated entries on their diagonal, nothing else kept
    a, usable = A.diagonal()
    m, n_in = A.shape
    wA = np.zeros((m, n_in), dtype=np.float32)
    mA = np.zeros((m, n_in), dtype=bool)
    u = np.arange(n_in * k)
    wA[u, u // k], mA[u, u // k] = a, usable
    dense_src = Source.from_arrays([wA, B.weights], [A.bias, B.bias], [mA, B.mask], [0.6, 0.7], 11)
    dense_target = make_target([wl.dense], [wl.bias])
    groups = {"k": (k,), "g0": (g0,), "P": 1}
    caps = [{"weight": (20, 3), "bias": (20, 3)}]
    dense, drep = build_2l(dense_target, dense_src, groups, (0.01,), caps)
    sel = ticket.layers[0]
    kept_rows, kept_cols = np.nonzero(dense.kept[1])
    assert np.array_equal(kept_rows, sel.rows) and np.array_equal(kept_cols, sel.cols)
    assert drep[0]["instances"] == rep[0]["instances"] and drep[0]["failures"] == rep[0]["failures"]
    assert drep[0]["max_instance_error"] == rep[0]["max_instance_error"]
    x = np.random.default_rng(2).uniform(-1, 1, size=(4, 2, 5, 5))
    win = _windows(x, (3, 3), (2, 2), (1, 1), 0.0)  # (N, C, H', W', 3, 3)
    n, c, ho, wo = win.shape[:4]
    patches = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * 9)
    dense_out = ticket_forward(dense, patches).reshape(n, ho, wo, 3).transpose(0, 3, 1, 2)
    assert np.allclose(conv_ticket_forward(ticket, x), dense_out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("model,shape,box", [(_cnn(), (1, 8, 8), (-1.0, 1.0)), (_Residual(), (1, 8, 8), (-1.0, 1.0)),
                                             (_Residual(), (1, 8, 8), (0.0, 1.0))])
def test_certificate_bounds_the_error_of_every_value_and_channel(model, shape, box):
    """Sampled |x̂ − x| of every value (every channel, every position) ≤ its certified error; in particular a residual
    addition's error ≤ e_in + e_F."""
    target, ticket, _ = _build(model, shape, box=box)
    cert = conv_certificate(ticket)
    x = _inputs(target, 128)
    got, want = {}, target_values(target, x)
    conv_ticket_forward(ticket, x, values_out=got)
    for name, e in cert.value_errors.items():
        diff = np.abs(got[name] - want[name])
        per_channel = diff.reshape(diff.shape[0], diff.shape[1], -1).max(axis=(0, 2))
        g = cert.grouped_value_errors[name]
        assert np.all(per_channel <= g + 1e-12 * (1 + g)), name
        assert np.all(g <= e + 1e-12 * (1 + e)), name
    assert cert.grouped_certificate <= cert.certificate
    adds = [r for r in target.architecture.layers if r.kind == "add"]
    for rec in adds:
        assert np.allclose(cert.value_errors[rec.name],
                           cert.value_errors[rec.inputs[0]] + cert.value_errors[rec.inputs[1]])
    assert conv_sampled_error(ticket, samples=64).sampled_error <= cert.certificate


def test_channel_bounds_contain_every_sampled_value():
    target = conv_target(_Residual(), (1, 8, 8))
    bounds = channel_bounds(target)
    values = target_values(target, _inputs(target, 256))
    for name, v in values.items():
        lo, hi = bounds[name]
        flat = v.reshape(v.shape[0], v.shape[1], -1)
        assert np.all(flat.min(axis=(0, 2)) >= lo - 1e-12) and np.all(flat.max(axis=(0, 2)) <= hi + 1e-12), name


def test_a_wrong_kept_weight_is_caught_by_the_certificate_recursion():
    """Changing one kept B weight changes the ticket; the certificate (recomputed from the arrays) still bounds the
    new error — the certificate reads the arrays, not the solver's report."""
    import dataclasses

    target, ticket, _ = _build(_cnn(), (1, 8, 8))
    sel = ticket.layers[1]
    v = sel.v.copy()
    v[0] += 0.5
    bad = dataclasses.replace(ticket, layers=(ticket.layers[0], dataclasses.replace(sel, v=v), ticket.layers[2]))
    c_good, c_bad = conv_certificate(ticket).certificate, conv_certificate(bad).certificate
    assert c_bad > c_good
    assert conv_sampled_error(bad, samples=128).sampled_error <= c_bad


def test_to_module_computes_the_ticket():
    target, ticket, _ = _build(_Residual(), (1, 8, 8))
    x = _inputs(target, 4)
    with torch.no_grad():
        out = ticket.to_module()(torch.tensor(x)).numpy()
    assert np.allclose(out, conv_ticket_forward(ticket, x), rtol=1e-9, atol=1e-12)


def test_ticket_is_a_submask_of_the_er_source():
    target, ticket, _ = _build(_Residual(), (1, 8, 8), density=0.3)
    for sel, (A, B) in zip(ticket.layers, ticket.source.pairs):
        a, usable = A.diagonal()
        assert np.all(usable[sel.units]) and np.array_equal(sel.a, a[sel.units].astype(np.float64))
        assert np.all(A.bias[sel.bias_units] > 0) and np.all(sel.bias_units >= A.dedicated)
        w, m = B.take_rows(np.arange(B.shape[0]))
        assert np.all(m[sel.rows, sel.cols]) and np.array_equal(sel.v, w[sel.rows, sel.cols].astype(np.float64))


def test_same_seed_same_ticket_and_the_diagonal_is_bernoulli():
    from scipy.stats import binomtest

    t1 = _build(_cnn(), (1, 8, 8), seed=4)[1]
    t2 = _build(_cnn(), (1, 8, 8), seed=4)[1]
    for s1, s2 in zip(t1.layers, t2.layers):
        assert np.array_equal(s1.cols, s2.cols) and np.array_equal(s1.v, s2.v)
    from construct.conv_source import IntermediateLayer

    layer = IntermediateLayer(300, 200, 0, 0.3, seed=9, index=1)
    a, usable = layer.diagonal()
    assert binomtest(int(usable.sum()), usable.size, 0.3).pvalue > 1e-3
    assert a.min() >= -1.0 and a.max() < 1.0 and abs(float(a.mean())) < 0.01


def test_graph_gains_of_a_residual_block():
    target = conv_target(_Residual(), (1, 8, 8))
    amps = {w.name: 2.0 for w in target.weighted}
    g = graph_gains(target, amps)
    # the stem's output feeds c1 (then c2) and the identity shortcut: G = G(add)·(Λ_c2·Λ_c1 + 1)
    assert g["stem"] == pytest.approx(g["add"] * (2.0 * 2.0 + 1.0))


@pytest.mark.parametrize("build,match", [
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2)), "dilation"),
    (lambda: nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), "groups"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh()), "Tanh"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.BatchNorm2d(2)), "batchnorm2d"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(7, 2)), "linear"),
])
def test_unsupported_layers_and_shapes_are_refused_in_one_line(build, match):
    with pytest.raises(ValueError, match=match) as info:
        conv_target(build().eval(), (1, 6, 6))
    assert "\n" not in str(info.value)


def test_nan_weights_are_refused():
    from construct.architecture import Architecture, Layer

    w = np.ones((2, 1, 3, 3))
    w[0, 0, 0, 0] = np.nan
    arch = Architecture((Layer("conv2d", "c", ("<input>",), {"weight": w, "bias": np.zeros(2)},
                               {"stride": (1, 1), "padding": (0, 0)}),))
    with pytest.raises(ValueError, match="NaN or inf"):
        conv_target(arch, (1, 4, 4))


@pytest.mark.parametrize("model,box", [(_cnn(), (0.0, 1.0)), (_Residual(), (-1.0, 1.0))])
def test_eps_promise_holds_for_the_grouped_bound_at_theorys_widths(model, box):
    """build_conv_strong_ticket with eps: every instance succeeds at theory's widths here, and then the grouped bound
    is <= eps (the promise), the sampled error below it, the section 6 certificate above it."""
    from construct.conv_strong import build_conv_strong_ticket

    ticket, rep = build_conv_strong_ticket(model, (1, 8, 8), 0.5, 0.1, 3, eps=0.05, box=box, samples=64)
    assert rep.success and rep.failures == 0
    assert rep.sampled_error <= rep.grouped_certificate <= 0.05
    assert rep.grouped_certificate <= rep.certificate
    assert ticket.meta["construction"] == "2l-conv" and ticket.meta["eps"] == 0.05
