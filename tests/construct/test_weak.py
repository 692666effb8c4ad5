"""Weak tickets (docs/math.md §4): exact representation, sub-mask of the ER mask, success rate at theory's widths."""
import numpy as np
from hypothesis import given, settings, strategies as st

from construct.targets import random_target, target_forward
from construct.ticket import ticket_forward
from construct.weak import build_weak_ticket
from theory.strategies import widths as widths_st
from theory.testing import assert_rate


@settings(max_examples=15, deadline=None)
@given(widths=widths_st(max_width=5, max_layers=3), density=st.sampled_from([1.0, 0.6, 0.3]),
       seed=st.integers(0, 10_000), tdens=st.sampled_from([1.0, 0.5]), scale=st.sampled_from([1.0, 5.0]))
def test_weak_ticket_exact_when_successful(widths, density, seed, tdens, scale):
    target = random_target(widths, seed, target_density=tdens, scale=scale)
    ticket, rep = build_weak_ticket(target, density, 0.2, seed, samples=64)
    for s, m in zip(ticket.kept, ticket.source.masks):
        assert not np.any(s & ~m)
    x = np.random.default_rng(seed).uniform(-1, 1, (64, widths[0]))
    err = np.max(np.abs(ticket_forward(ticket, x) - target_forward(target, x)))
    assert err <= rep.certificate + 1e-9 * (1 + rep.certificate)
    if rep.success:
        assert err <= 1e-9 * scale
        assert rep.certificate <= 1e-9 * scale


def test_weak_failure_is_reported_not_patched():
    target = random_target((6, 6, 3), 3)
    ticket, rep = build_weak_ticket(target, 0.1, 0.1, 3, width_multiplier=0.05, samples=64)
    assert not rep.success and rep.failures > 0
    assert rep.widths["lifting_group"] < 60  # the width was not increased
    assert rep.sampled_error <= rep.certificate + 1e-12


def test_weak_success_rate_at_theory_widths():
    delta = 0.2
    runs = 40
    ok = 0
    for seed in range(runs):
        target = random_target((3, 4, 2), seed)
        ok += build_weak_ticket(target, 0.3, delta, seed, samples=8)[1].success
    assert_rate(ok, runs, 1 - delta, alpha=1e-3)
