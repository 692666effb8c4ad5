"""Tests that catch an unsound certificate (issue 14.3).

1. Hand-computed tickets whose certificate is known in closed form (and equal to the exact sup-error): asymmetric
   boxes with |a| > |b|, errors only on the negative half of a sign split, an output reading two copies whose errors
   add up (Σ|c|·e). Any edit that lowers a bound (drops a half, bounds inputs by |b|, scales the instance errors)
   changes these numbers.
2. The exact maximum of |ticket − target| over the box (MILP over activation regions, checked against closed forms
   and a dense grid here) is ≤ the certificate for small constructed tickets of every construction, on symmetric
   and asymmetric boxes; every bound of the error interval is ≥ that maximum and the attack is ≤ it.
"""
import numpy as np
import pytest

from construct.certificate import certify
from construct.error_interval import error_interval
from construct.exact_bound import exact_max_error
from construct.relaxation import crown_max_error, reduced_certificate
from construct.source import Source
from construct.strong import build_strong_ticket
from construct.targets import make_target, random_target, target_forward
from construct.ticket import CONST, LIFT, NEURON, UNUSED, Roles, Ticket, ticket_forward
from construct.ticket_network import reduce_network, target_network, ticket_network
from construct.weak import build_weak_ticket


def _roles(*units):
    """Roles from (kind, layer, index, scale) tuples."""
    kind, layer, index, scale = zip(*units)
    return Roles(np.array(kind, np.int8), np.array(layer, np.int32), np.array(index, np.int32), np.array(scale, float))


def _hand_ticket(target, weights, biases, roles):
    """A weak-form ticket with the given float64 weights/biases on a dense sub-mask (every edge kept)."""
    masks = [np.ones(w.shape, bool) for w in weights]
    source = Source.from_arrays([w.astype(np.float32) for w in weights], [b.astype(np.float32) for b in biases],
                                masks, [1.0] * len(weights), 0)
    kept = tuple(w != 0 for w in weights)
    bias_kept = tuple(np.ones(b.shape, bool) for b in biases)
    return Ticket(target, source, kept, bias_kept, tuple(roles), tuple(weights), tuple(biases), {})


def _exact(ticket, box):
    return exact_max_error(ticket_network(ticket), target_network(ticket.target), box, time_limit=30).upper


def _grid_max(ticket, box, n=200_001):
    x = np.linspace(box[0], box[1], n)[:, None]
    return float(np.max(np.abs(ticket_forward(ticket, x) - target_forward(ticket.target, x))))


BOXES = [(-1.0, 1.0), (-3.0, 0.5), (-0.5, 2.0)]


@pytest.mark.parametrize("box", BOXES)
def test_linear_ticket_asymmetric_box(box):
    """Depth 1: ticket 0.6·x against target 0.5·x; sup-error 0.1·max(|a|, |b|) (3 × 0.1 at x = −3 on [−3, 0.5])."""
    target = make_target([np.array([[0.5]])], [np.zeros(1)])
    ticket = _hand_ticket(target, [np.array([[0.6]])], [np.zeros(1)], [_roles((NEURON, 1, 0, 0.0))])
    expected = 0.1 * max(abs(box[0]), abs(box[1]))
    assert certify(ticket, box).certificate == pytest.approx(expected, rel=1e-12)
    assert _exact(ticket, box) == pytest.approx(expected, rel=1e-6)
    assert _grid_max(ticket, box) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("box", BOXES)
@pytest.mark.parametrize("negative", [True, False])
def test_sign_split_error_on_one_half(box, negative):
    """Target 0.5·x; ticket c⁺·ReLU(x) + c⁻·ReLU(−x) with the 0.1 error on one half only. The error is
    0.1·|a| on the negative half (x = a) and 0.1·b on the positive half: the certificate must keep both halves."""
    target = make_target([np.array([[0.5]])], [np.zeros(1)])
    c_pos, c_neg = (0.5, -0.5 + 0.1) if negative else (0.5 + 0.1, -0.5)
    ticket = _hand_ticket(target, [np.array([[1.0], [-1.0]]), np.array([[c_pos, c_neg]])], [np.zeros(2), np.zeros(1)],
                          [_roles((LIFT, 0, 0, 1.0), (LIFT, 0, 0, -1.0)), _roles((NEURON, 1, 0, 0.0))])
    expected = 0.1 * (max(-box[0], 0.0) if negative else max(box[1], 0.0))
    assert certify(ticket, box).certificate == pytest.approx(expected, rel=1e-12)
    assert _exact(ticket, box) == pytest.approx(expected, rel=1e-6)
    assert _grid_max(ticket, box) == pytest.approx(expected, rel=1e-9)


def test_amplification_adds_absolute_coefficients():
    """Target 2·ReLU(x) on [0, 1]. Ticket copies s₁ = ReLU(1.1x), s₂ = ReLU(0.9x), output 3s₁ − s₂ = 2.4x: the
    weights' sum matches (3 − 1 = 2) but the errors add: Σ|c|·e = 3·0.1 + 1·0.1 = 0.4 = the sup-error at x = 1."""
    box = (0.0, 1.0)
    target = make_target([np.array([[1.0]]), np.array([[2.0]])], [np.zeros(1), np.zeros(1)])
    ticket = _hand_ticket(target, [np.array([[1.1], [0.9]]), np.array([[3.0, -1.0]])], [np.zeros(2), np.zeros(1)],
                          [_roles((NEURON, 1, 0, 0.0), (NEURON, 1, 0, 0.0)), _roles((NEURON, 2, 0, 0.0))])
    assert certify(ticket, box).certificate == pytest.approx(0.4, rel=1e-12)
    assert _exact(ticket, box) == pytest.approx(0.4, rel=1e-6)


def test_constant_unit_and_bias_error():
    """Target ReLU(x) + 0.3 on [−1, 2]; the ticket's bias comes from a constant unit ReLU(0.5) read with weight 0.7
    (0.35 instead of 0.3) and its slope is 1.05: sup-error 0.05·2 + 0.05 = 0.15 at x = 2, certificate the same."""
    box = (-1.0, 2.0)
    target = make_target([np.array([[1.0]]), np.array([[1.0]])], [np.zeros(1), np.array([0.3])])
    ticket = _hand_ticket(target, [np.array([[1.05], [0.0]]), np.array([[1.0, 0.7]])],
                          [np.array([0.0, 0.5]), np.zeros(1)],
                          [_roles((NEURON, 1, 0, 0.0), (CONST, 0, 0, 0.5)), _roles((NEURON, 2, 0, 0.0))])
    assert certify(ticket, box).certificate == pytest.approx(0.15, rel=1e-12)
    assert _exact(ticket, box) == pytest.approx(0.15, rel=1e-6)
    assert _grid_max(ticket, box) == pytest.approx(0.15, rel=1e-9)


@pytest.fixture(scope="module")
def small_tickets():
    """Small constructed tickets of every construction, on symmetric and asymmetric boxes."""
    out = []
    t1 = random_target((2, 2, 1), 3)
    out.append(build_strong_ticket(t1, 1.0, 0.1, 3, eps=0.05, construction="l+1", samples=64, box=(-3.0, 0.5)))
    out.append(build_strong_ticket(t1, 1.0, 0.1, 4, eps=0.05, construction="l+1", samples=64))
    t2 = random_target((3, 2, 2), 5)
    out.append(build_strong_ticket(t2, 0.5, 0.1, 5, weight_eps=0.05, construction="2l", samples=64,
                                   box=(-3.0, 0.5)))
    out.append(build_strong_ticket(t2, 0.5, 0.1, 6, weight_eps=0.05, construction="2l", samples=64,
                                   box=(-0.5, 2.0)))
    out.append(build_weak_ticket(random_target((2, 3, 1), 7), 0.5, 0.1, 7, samples=64, box=(-3.0, 0.5)))
    return [(ticket, tuple(ticket.meta["box"])) for ticket, _ in out]


def test_exact_maximum_within_certificate(small_tickets):
    for ticket, box in small_tickets:
        cert = certify(ticket, box).certificate
        exact = exact_max_error(reduce_network(ticket_network(ticket)), target_network(ticket.target), box,
                                time_limit=30)
        assert exact.exact
        assert exact.upper <= cert + 1e-9 * (1.0 + cert), (ticket.meta["construction"], box, exact.upper, cert)
        # the MILP's maximizer is a real point: the original ticket's error there is the maximum
        x = exact.x[None]
        real = float(np.max(np.abs(ticket_forward(ticket, x) - target_forward(ticket.target, x))))
        assert real == pytest.approx(exact.upper, rel=1e-6, abs=1e-9)


def test_reduced_network_is_the_same_function(small_tickets):
    rng = np.random.default_rng(0)
    for ticket, box in small_tickets:
        net = ticket_network(ticket)
        red = reduce_network(net)
        assert sum(red.widths) < sum(net.widths)
        x = rng.uniform(box[0], box[1], (256, ticket.target.widths[0]))
        np.testing.assert_allclose(red.forward(x), ticket_forward(ticket, x), rtol=1e-12, atol=1e-12)


def test_interval_brackets_the_exact_maximum(small_tickets):
    """attack ≤ exact maximum ≤ every upper bound (reduced certificate, relaxation, certificate)."""
    for ticket, box in small_tickets:
        cert = certify(ticket, box).certificate
        red, origins = reduce_network(ticket_network(ticket), with_origin=True)
        tn = target_network(ticket.target)
        exact = exact_max_error(red, tn, box, time_limit=30).upper
        tol = 1e-7 * (1.0 + exact)
        assert reduced_certificate(ticket, box, (red, origins)) >= exact - tol
        assert crown_max_error(red, tn, box) >= exact - tol
        iv = error_interval(ticket, box, cert, seconds=0)  # without the MILP
        assert iv.consistent and iv.attacked_error <= exact + tol <= iv.best_bound + 2 * tol
        assert iv.best_bound <= cert


@pytest.mark.parametrize("box", BOXES)
def test_back_substituted_target_bounds_contain_activations(box):
    """The bounds B of the reduced certificate (back-substitution ∩ interval arithmetic) contain every sampled
    activation and are inside the interval bounds."""
    from construct.certificate import interval_bounds
    from construct.relaxation import target_bounds

    target = random_target((4, 6, 5, 2), 11, scale=2.0)
    tb, ib = target_bounds(target, box), interval_bounds(target, box)
    x = np.random.default_rng(1).uniform(box[0], box[1], (4000, 4))
    h = x
    for t, (w, b) in enumerate(zip(target.weights, target.biases), start=1):
        h = h @ w.T + b
        if t < target.depth:
            h = np.maximum(h, 0.0)
        assert np.all(h >= tb[t][0]) and np.all(h <= tb[t][1])
        assert np.all(tb[t][0] >= ib[t][0]) and np.all(tb[t][1] <= ib[t][1])


def test_reduction_is_exact_on_random_sparse_networks():
    """Random networks whose units are mostly univariate (any sign, zero / positive / negative bias, dead units):
    the reduced network computes the same function."""
    import scipy.sparse as sp

    from construct.ticket_network import Network

    rng = np.random.default_rng(5)
    for trial in range(20):
        widths = [int(rng.integers(1, 5))] + [int(rng.integers(2, 30)) for _ in range(int(rng.integers(1, 5)))] + [2]
        layers = []
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            w = np.zeros((n_out, n_in))
            for i in range(n_out):
                k = int(rng.choice([0, 1, 1, 1, 2, n_in]))
                cols = rng.choice(n_in, size=min(k, n_in), replace=False)
                w[i, cols] = rng.uniform(-2, 2, cols.size)
            b = rng.choice([0.0, 0.0, 0.5, -0.5], n_out) * rng.uniform(0, 1, n_out)
            layers.append((sp.csr_matrix(w), b))
        net = Network(tuple(layers))
        red = reduce_network(net)
        x = rng.uniform(-2, 1.5, (300, widths[0]))
        np.testing.assert_allclose(red.forward(x), net.forward(x), rtol=1e-12, atol=1e-12)
