"""Strong tickets (docs/math.md §6): pruning only, sub-mask of the ER mask, sampled error ≤ certificate ≤ ε when
successful, |W| > 1 handled by splitting, widths equal to theory's, success rate at theory's widths."""
import numpy as np
import pytest

from construct.certificate import certify, sampled_error
from construct.strong import build_strong_ticket, plan_strong
from construct.targets import make_target, random_target
from construct.ticket import effective_layer
from theory.testing import assert_rate


def _check_pruning_only(ticket):
    for t, (s, m) in enumerate(zip(ticket.kept, ticket.source.masks), start=1):
        assert not np.any(s & ~m)
        mat, bias = effective_layer(ticket, t)
        rows, cols = np.nonzero(s)
        assert np.array_equal(np.asarray(mat[rows, cols]).ravel(), ticket.source.weights[t - 1][rows, cols].astype(np.float64))
        assert np.array_equal(bias[ticket.bias_kept[t - 1]], ticket.source.biases[t - 1][ticket.bias_kept[t - 1]].astype(np.float64))
        assert np.all(bias[~ticket.bias_kept[t - 1]] == 0)


@pytest.mark.parametrize("construction, widths, density, tol", [
    ("2l", (3, 3, 2), 0.5, {"eps": 0.01}),
    ("2l", (2, 3, 2, 1), 1.0, {"eps": 0.05}),
    ("2l", (3, 2), 0.3, {"weight_eps": 0.01}),
    ("l+1", (2, 2, 1), 1.0, {"eps": 0.01}),
    ("l+1", (2, 2), 1.0, {"weight_eps": 0.001}),
])
def test_strong_ticket_claims(construction, widths, density, tol):
    target = random_target(widths, 4)
    ticket, rep = build_strong_ticket(target, density, 0.1, 4, construction=construction, samples=512, **tol)
    _check_pruning_only(ticket)
    assert max(rep.sampled_error, rep.corner_error or 0) <= rep.certificate + 1e-9
    if rep.success and "eps" in tol:
        assert rep.certificate <= tol["eps"]
    sw = plan_strong(target, density, 0.1, construction=construction, **tol)[0]
    assert tuple(ticket.source.widths) == tuple(sw.source_widths)  # theory's widths are what is built


def test_large_weights_with_biases_both_constructions():
    target = make_target([np.array([[1.6, -0.4], [0.2, -1.3]]), np.array([[0.7, -1.9]])],
                         [np.array([0.5, -1.2]), np.array([0.3])])
    for construction in ("l+1", "2l"):
        ticket, rep = build_strong_ticket(target, 1.0, 0.1, 3, eps=0.05, construction=construction, samples=1024)
        _check_pruning_only(ticket)
        assert rep.widths["parts"] == 2
        assert max(rep.sampled_error, rep.corner_error) <= rep.certificate + 1e-9
        if rep.success:
            assert rep.certificate <= 0.05


def test_large_weights_and_zero_biases():
    w1 = np.array([[2.5, -1.7], [0.3, 0.0]])
    w2 = np.array([[-3.2, 1.1]])
    target = make_target([w1, w2])  # zero biases: no bias group, weights split into P = 4 parts
    ticket, rep = build_strong_ticket(target, 1.0, 0.1, 2, eps=0.05, construction="2l", samples=512)
    assert rep.widths["parts"] == 4
    assert rep.widths["groups"]["g0"] == [0, 0]
    assert rep.success
    assert rep.sampled_error <= rep.certificate <= 0.05


def test_certificate_sound_for_damaged_tickets():
    """The certificate bounds the error for any sub-mask (here: random edges dropped from a good ticket)."""
    target = random_target((3, 3, 2), 9)
    ticket, rep = build_strong_ticket(target, 1.0, 0.1, 9, weight_eps=0.02, construction="2l", samples=64)
    rng = np.random.default_rng(0)
    for _ in range(5):
        kept = tuple(s & (rng.random(s.shape) < 0.97) for s in ticket.kept)
        damaged = type(ticket)(ticket.target, ticket.source, kept, ticket.bias_kept, ticket.roles, None, None, {})
        cert = certify(damaged).certificate
        err = sampled_error(damaged, samples=2048, seed=1)
        assert max(err.sampled_error, err.corner_error) <= cert + 1e-9


def test_strong_success_rate_at_theory_widths():
    delta = 0.2
    runs = 30
    ok = 0
    for seed in range(runs):
        target = random_target((2, 2, 1), seed)
        ok += build_strong_ticket(target, 0.5, delta, seed, eps=0.02, construction="2l", samples=16)[1].success
    assert_rate(ok, runs, 1 - delta, alpha=1e-3)


def test_memory_guard_and_law():
    target = random_target((16, 12, 4), 0)
    with pytest.raises(ValueError, match="source would have"):
        build_strong_ticket(target, 0.3, 0.1, 0, eps=0.01, construction="l+1", max_source_params=10**6)
    with pytest.raises(ValueError, match="weight_law"):
        build_strong_ticket(target, 0.3, 0.1, 0, eps=0.01, law="normal")
    with pytest.raises(ValueError, match="exactly one"):
        build_strong_ticket(target, 0.3, 0.1, 0)
