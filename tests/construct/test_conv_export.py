"""2L conv tickets as PyTorch modules and the conv attack (construct/conv_export.py, construct/conv_attack.py;
docs/math.md §6, §9): the units form (the real pruned source subnetwork), the collapsed form, the numpy forward and
the target's module agree; the units module is a sub-network of the seeded ER source; the attack is a lower bound
of the sup-error that reaches the exact sup where it is known."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
import torch.nn.functional as F
from torch import nn

from construct.architecture import INPUT, Architecture, Layer, architecture_forward
from construct.conv_2l import build_conv_2l
from construct.conv_attack import conv_attack_error
from construct.conv_export import architecture_module, conv_ticket_module
from construct.conv_source import sample_conv_source
from construct.conv_target import conv_target
from construct.conv_ticket import ConvTicket, LayerSelection, conv_certificate, conv_sampled_error, conv_ticket_forward
from construct.modules import read_module
from theory.memory import MemoryBudgetError


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny float64 convolutions: with 2 OpenMP threads on a loaded 2-core machine one call takes ~10 ms of
    spinning instead of ~20 µs; the tests run single-threaded and restore the setting."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _randomize_bn(model, gen):
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            mod.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            mod.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            mod.bias.data.copy_(torch.rand(c, generator=gen) - 0.5)
    return model.eval()


class Residual(nn.Module):
    """conv-BN-ReLU, a block with a 1×1 conv + BN shortcut (stride 2), a block with an identity shortcut, global
    average pooling and a linear classifier."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)
        self.c2, self.b2 = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(3)
        self.c3, self.b3 = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
        self.sc, self.bsc = nn.Conv2d(2, 3, 1, stride=2, bias=False), nn.BatchNorm2d(3)
        self.c4, self.b4 = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
        self.c5, self.b5 = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        y = self.b3(self.c3(F.relu(self.b2(self.c2(x)))))
        x = F.relu(y + self.bsc(self.sc(x)))
        y = self.b5(self.c5(F.relu(self.b4(self.c4(x)))))
        x = F.relu(x + y)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Pools(nn.Module):
    """Average and max pooling with padding, on non-negative and on signed values, a padded conv, flatten, linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.c2 = nn.Conv2d(3, 3, 3, padding=2)
        self.fc = nn.Linear(27, 2)

    def forward(self, x):
        h = F.relu(self.b1(self.c1(x)))
        h = F.avg_pool2d(h, 3, 2, 1) + F.max_pool2d(h, 3, 2, 1)
        h = F.max_pool2d(self.c2(h), 3, 1, 1)
        return self.fc(F.avg_pool2d(h, 2, 2, 1).flatten(1))


def _build(model, input_shape, k, g0, seed=1, box=(-1.0, 1.0)):
    target = conv_target(model, input_shape, box=box)
    src = sample_conv_source([(w.fan_in, w.fan_out, k, g0) for w in target.weighted], [0.5] * (2 * len(target.weighted)),
                             seed=seed)
    plan = [{"parts": 1, "instance_eps": 0.01, "cap": (20, 3), "bias_cap": (20, 3)} for _ in target.weighted]
    return build_conv_2l(target, src, plan)[0]


@pytest.fixture(scope="module")
def cnn():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 3, 3, stride=2, padding=1),
                      nn.ReLU(), nn.Flatten(), nn.Linear(48, 4))
    return _build(_randomize_bn(m, gen), (1, 8, 8), 60, 30)


@pytest.fixture(scope="module")
def resnet():
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    return _build(_randomize_bn(Residual(), gen), (1, 6, 6), 40, 20)


@pytest.fixture(scope="module")
def pools():
    torch.manual_seed(2)
    return _build(_randomize_bn(Pools(), torch.Generator().manual_seed(2)), (2, 6, 6), 30, 20, seed=2, box=(-0.5, 2.0))


def _x(ticket, n, seed):
    a, b = ticket.target.box
    return np.random.default_rng(seed).uniform(a, b, (n,) + tuple(ticket.target.input_shape))


# ------------------------------------------------------------------------------------------ architecture_module
def test_architecture_module_runs_every_kind_like_numpy_and_torch():
    """Every record kind (pooling with padding, residual add, BatchNorm not folded) against architecture_forward
    and against the original torch model in float64 (an independent evaluation)."""
    gen = torch.Generator().manual_seed(3)

    class AllKinds(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
            self.fc = nn.Linear(4 * 2 * 2, 3)

        def forward(self, x):
            h = F.relu(self.bn(self.conv(x)))
            h = h + F.max_pool2d(h, 3, 1, 1)
            h = F.avg_pool2d(self.conv2(h), 2, 2, 1)
            g = F.adaptive_avg_pool2d(h, 1)
            return self.fc(torch.flatten(h + g, 1))

    model = _randomize_bn(AllKinds(), gen).double()
    arch = read_module(model)
    assert {r.kind for r in arch.layers} >= {"conv2d", "batchnorm2d", "relu", "maxpool2d", "avgpool2d", "add",
                                             "global_avgpool", "flatten", "linear"}
    x = np.random.default_rng(0).uniform(-1, 1, (5, 2, 6, 6))
    mod = architecture_module(arch)
    y = mod(torch.tensor(x)).numpy()
    assert np.max(np.abs(y - architecture_forward(arch, x))) <= 1e-10
    with torch.no_grad():
        assert np.max(np.abs(y - model(torch.tensor(x)).numpy())) <= 1e-10
    assert mod.to(torch.float32)(torch.tensor(x, dtype=torch.float32)).dtype == torch.float32


@st.composite
def _conv_chains(draw):
    """A random Architecture: conv2d (kernel, stride, padding), optional BatchNorm, ReLU, optional pooling (max or
    average, with padding ≤ half the window), optional residual addition x + conv1×1(x); then optionally a global
    average pool, a flatten and a linear layer. Returns (architecture, input shape)."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    c, h = draw(st.integers(1, 3)), draw(st.integers(3, 7))
    shape = (c, h, h)
    recs, prev = [], INPUT
    for i in range(draw(st.integers(1, 3))):
        k = draw(st.integers(1, min(3, h)))
        pad = draw(st.integers(0, 1))
        stride = draw(st.integers(1, 2))
        c_out = draw(st.integers(1, 3))
        recs.append(Layer("conv2d", f"c{i}", (prev,), {"weight": rng.uniform(-1, 1, (c_out, c, k, k)),
                                                       "bias": rng.uniform(-1, 1, c_out)},
                          {"stride": (stride, stride), "padding": (pad, pad)}))
        prev, c, h = f"c{i}", c_out, (h + 2 * pad - k) // stride + 1
        if draw(st.booleans()):
            recs.append(Layer("batchnorm2d", f"bn{i}", (prev,), {"weight": rng.uniform(0.5, 1.5, c),
                              "bias": rng.uniform(-1, 1, c), "running_mean": rng.uniform(-1, 1, c),
                              "running_var": rng.uniform(0.5, 2, c)}, {"eps": 1e-5}))
            prev = f"bn{i}"
        recs.append(Layer("relu", f"r{i}", (prev,)))
        prev = f"r{i}"
        pool = draw(st.sampled_from(["none", "maxpool2d", "avgpool2d"]))
        if pool != "none" and h >= 2:
            kp = draw(st.integers(1, min(3, h)))
            pp = draw(st.integers(0, kp // 2))
            sp = draw(st.integers(1, 2))
            recs.append(Layer(pool, f"p{i}", (prev,), {}, {"kernel_size": (kp, kp), "stride": (sp, sp),
                                                           "padding": (pp, pp)}))
            prev, h = f"p{i}", (h + 2 * pp - kp) // sp + 1
        if draw(st.booleans()):  # a residual addition: prev + conv1x1(prev)
            recs.append(Layer("conv2d", f"s{i}", (prev,), {"weight": rng.uniform(-1, 1, (c, c, 1, 1)),
                                                           "bias": rng.uniform(-1, 1, c)},
                              {"stride": (1, 1), "padding": (0, 0)}))
            recs.append(Layer("add", f"a{i}", (prev, f"s{i}")))
            prev = f"a{i}"
    if draw(st.booleans()):
        recs.append(Layer("global_avgpool", "gap", (prev,)))
        prev, h = "gap", 1
    recs.append(Layer("flatten", "flat", (prev,)))
    n = c * h * h
    recs.append(Layer("linear", "fc", ("flat",), {"weight": rng.uniform(-1, 1, (2, n)), "bias": rng.uniform(-1, 1, 2)}))
    return Architecture(tuple(recs)), shape


@settings(max_examples=40, deadline=None)
@given(_conv_chains(), st.integers(0, 1000))
def test_architecture_module_equals_architecture_forward(chain, seed):
    arch, shape = chain
    x = np.random.default_rng(seed).uniform(-2, 2, (3,) + shape)
    ref = architecture_forward(arch, x)
    with torch.no_grad():
        y = architecture_module(arch)(torch.tensor(x)).numpy()
    assert y.shape == ref.shape
    assert np.max(np.abs(y - ref)) <= 1e-10 * max(1.0, np.max(np.abs(ref)))


# ------------------------------------------------------------------------------------------ conv_ticket_module
@pytest.mark.parametrize("name", ["cnn", "resnet", "pools"])
def test_units_collapsed_and_numpy_forward_agree(name, request):
    ticket = request.getfixturevalue(name)
    x = _x(ticket, 6, 5)
    ref = conv_ticket_forward(ticket, x)
    scale = np.max(np.abs(ref))
    outs = {}
    for form, dense_limit, chunk in (("units", 0, 37), ("units", 1 << 20, 1 << 24), ("collapsed", 0, 1)):
        mod = conv_ticket_module(ticket, form, dense_limit=dense_limit, chunk_entries=chunk)
        with torch.no_grad():
            outs[(form, dense_limit)] = mod(torch.tensor(x)).numpy()
        assert outs[(form, dense_limit)].shape == ref.shape
        assert np.max(np.abs(outs[(form, dense_limit)] - ref)) <= 1e-9 * scale, (form, dense_limit)
    # the ticket approximates its target (it is a ticket of this target, not of some other function)
    target_out = architecture_module(ticket.target.architecture)(torch.tensor(x)).detach().numpy()
    assert np.max(np.abs(target_out - ticket.target.forward(x))) <= 1e-10 * max(1.0, np.max(np.abs(target_out)))
    assert np.max(np.abs(ref - target_out)) <= conv_certificate(ticket).certificate


def test_units_module_is_differentiable_like_the_collapsed_one(resnet):
    """Input gradients through the units form (sparse and dense B) equal those of the collapsed form."""
    x = torch.tensor(_x(resnet, 3, 9), requires_grad=True)
    (ref,) = torch.autograd.grad(conv_ticket_module(resnet, "collapsed")(x).sum(), x)
    for dense_limit in (0, 1 << 20):
        (g,) = torch.autograd.grad(conv_ticket_module(resnet, "units", dense_limit=dense_limit)(x).sum(), x)
        assert torch.max(torch.abs(g - ref)) <= 1e-9 * torch.max(torch.abs(ref))


def test_units_module_converts_and_counts_kept_weights(cnn):
    mod = conv_ticket_module(cnn, "units", dense_limit=0)
    assert mod.kept_weights() == cnn.kept_params
    assert conv_ticket_module(cnn, "units").kept_weights() == cnn.kept_params
    x = _x(cnn, 3, 7)
    ref = conv_ticket_forward(cnn, x)
    for form in ("units", "collapsed"):
        m32 = conv_ticket_module(cnn, form).to(torch.float32)
        with torch.no_grad():
            y = m32(torch.tensor(x))  # float64 input cast to the module's dtype
        assert y.dtype == torch.float32
        assert np.max(np.abs(y.numpy() - ref)) <= 1e-4 * np.max(np.abs(ref))
        assert all(b.dtype in (torch.float32, torch.int64) for b in m32.buffers())
    assert any(n.endswith("virtual") for n, _ in mod.named_buffers())
    before = [s.a.copy() for s in cnn.layers], [w.weight.copy() for w in cnn.target.weighted]
    for m in (mod, architecture_module(cnn.target.architecture)):
        for b in m.buffers():
            if b.is_floating_point():
                b.mul_(2.0)  # the modules own their arrays: the ticket and its target are untouched
    assert all(np.array_equal(s.a, a) for s, a in zip(cnn.layers, before[0]))
    assert all(np.array_equal(w.weight, x) for w, x in zip(cnn.target.weighted, before[1]))


def test_units_module_is_a_subnetwork_of_the_er_source(cnn):
    """Every weight the units module holds is the seeded source's weight at its position, with mask 1: the A
    entries (u, u // k) from the regenerated diagonal, the B entries from the regenerated rows."""
    mod = conv_ticket_module(cnn, "units", dense_limit=0)
    units_layers = [m for m in mod.layers.values() if hasattr(m, "crow")]
    assert len(units_layers) == len(cnn.layers)
    fresh = sample_conv_source([(A.fan_in, B.shape[0], A.k, A.g0) for A, B in cnn.source.pairs],
                               list(cnn.source.densities), seed=cnn.source.seed)
    for m, (A, B), sel in zip(units_layers, fresh.pairs, cnn.layers):
        a_all, usable = A.diagonal()
        units = m.units.numpy()
        assert units.size > 0 and np.all(units < A.dedicated)
        assert np.array_equal(m.virtual.numpy(), units // A.k)
        assert np.all(usable[units])
        assert np.array_equal(m.a.numpy(), a_all[units].astype(np.float64))
        assert np.array_equal(m.beta.numpy(), A.bias[m.bias_units.numpy()].astype(np.float64))
        channels = np.concatenate([units, m.bias_units.numpy()])
        crow = m.crow.numpy()
        rows = np.repeat(np.arange(crow.size - 1), np.diff(crow))
        cols = channels[m.col.numpy()]
        w_rows, m_rows = B.take_rows(np.arange(B.shape[0]))
        assert np.all(m_rows[rows, cols])
        assert np.array_equal(m.val.numpy(), w_rows[rows, cols].astype(np.float64))
        assert len(set(zip(rows.tolist(), cols.tolist()))) == rows.size  # each source entry at most once


def test_units_module_rejects_a_b_entry_on_a_unit_that_is_not_kept(cnn):
    sel = cnn.layers[0]
    bad = LayerSelection(sel.name, sel.k, sel.g0, sel.units[1:], sel.a[1:], sel.bias_units, sel.beta, sel.rows,
                         sel.cols, sel.v)
    ticket = ConvTicket(cnn.target, cnn.source, (bad,) + cnn.layers[1:], {})
    with pytest.raises(ValueError, match="not kept"):
        conv_ticket_module(ticket, "units")


def test_conv_ticket_module_bad_arguments(cnn):
    with pytest.raises(ValueError, match="form='dense'"):
        conv_ticket_module(cnn, "dense")
    with pytest.raises(ValueError, match="chunk_entries=0"):
        conv_ticket_module(cnn, "units", chunk_entries=0)
    with pytest.raises(ValueError, match="dtype="):
        conv_ticket_module(cnn, "units", dtype=torch.int64)
    with pytest.raises(MemoryBudgetError, match="the units module of this ticket .* over the budget of 1000 B"):
        conv_ticket_module(cnn, "units", max_memory=1000)
    conv_ticket_module(cnn, "collapsed", max_memory=1000)  # the guard is for the units form


# ------------------------------------------------------------------------------------------------------ attack
@pytest.mark.parametrize("name", ["cnn", "resnet", "pools"])
def test_attack_is_between_sampled_error_and_certificate(name, request):
    ticket = request.getfixturevalue(name)
    res = conv_attack_error(ticket, seed=4, samples=64, starts=4, steps=15, batch=16)
    sampled = conv_sampled_error(ticket, samples=64, seed=4, batch=16).sampled_error
    assert res.sampled_error == sampled
    assert res.error >= sampled
    assert res.error <= conv_certificate(ticket).certificate
    # the reported value is attained at the reported point of the box (numpy forward)
    a, b = ticket.target.box
    assert np.all((res.x >= a) & (res.x <= b))
    at = np.max(np.abs(conv_ticket_forward(ticket, res.x[None]) - ticket.target.forward(res.x[None])))
    assert abs(at - res.error) <= 1e-12 * res.error  # (batch vs single input: summation order)
    assert res.evaluated == 64 + 4 * 15


def _scaled_b(ticket, factor):
    """The ticket with every kept B weight multiplied by ``factor`` (deliberately wrong weights)."""
    layers = tuple(LayerSelection(s.name, s.k, s.g0, s.units, s.a, s.bias_units, s.beta, s.rows, s.cols, s.v * factor)
                   for s in ticket.layers)
    return ConvTicket(ticket.target, ticket.source, layers, {})


def test_attack_reaches_the_exact_sup_error_of_a_wrong_one_layer_ticket():
    """One linear layer on the box [0, 1]^n (inputs ≥ 0: only ReLU(x) = x is used): the error x ↦ ticket(x) −
    target(x) is affine, c + Σ_v e_v·x_v, so its sup over the box is max over outputs of max(c + Σ_v max(e_v, 0),
    −c − Σ_v min(e_v, 0)), computed here from n + 1 point evaluations. With every B weight 20 % too large the sup is
    far above what 256 uniform samples see; a correct ascent reaches it exactly (a broken one, e.g. a wrong gradient
    sign or output, stays near the sampled value), and never exceeds it (a lower bound)."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(24, 2)).eval()
    good = _build(model, (24,), 30, 20, box=(0.0, 1.0))
    assert not good.target.weighted[0].signed
    ticket = _scaled_b(good, 1.2)
    n = 24

    def err(x):
        return conv_ticket_forward(ticket, x) - ticket.target.forward(x)

    c = err(np.zeros((1, n)))[0]
    e = err(np.eye(n)) - c  # rows: e_v for every v
    sup = float(np.max(np.maximum(c + np.maximum(e, 0.0).sum(axis=0), -(c + np.minimum(e, 0.0).sum(axis=0)))))
    res = conv_attack_error(ticket, seed=0, samples=256, starts=8, steps=30)
    assert res.error <= sup * (1 + 1e-12)
    assert res.error >= sup * (1 - 1e-12)
    assert res.sampled_error < 0.8 * sup  # sampling alone is far from the sup: the ascent did the work
