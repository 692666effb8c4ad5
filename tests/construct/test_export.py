"""Tickets out as compact PyTorch modules: exact forward, parametrized masks that survive training and state_dicts."""
import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import construct
from construct import build_strong_ticket, build_weak_ticket, random_target, ticket_forward
from construct.source import Source
from construct.ticket import CONST, Roles, Ticket


@pytest.fixture(scope="module")
def example():
    """A 472-weight target (8-24-10-4) and its 2L strong ticket (certified eps 0.05) at density 0.5."""
    target = random_target((8, 24, 10, 4), 0)
    assert sum(w.size for w in target.weights) == 472
    return build_strong_ticket(target, 0.5, 0.1, 1, eps=0.05, samples=64)


@pytest.fixture(scope="module")
def small():
    target = random_target((3, 3, 2), 1)
    return [build_strong_ticket(target, 0.5, 0.1, 1, eps=0.05, construction="l+1", samples=32)[0],
            build_weak_ticket(target, 0.5, 0.1, 1, samples=32)[0]]


def _linears(module):
    return [m for m in module if isinstance(m, nn.Linear)]


def _x(n, d, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, d))


def test_compact_module_is_small_and_exact(example):
    ticket, report = example
    assert report.success
    kept = ticket.kept_params
    module = construct.to_module(ticket, torch.float64)
    params = sum(p.numel() for p in module.parameters())
    assert params <= 2 * kept, (params, kept)
    widths = [_linears(module)[0].in_features] + [m.out_features for m in _linears(module)]
    source = list(ticket.source.widths)
    assert widths[0] == source[0] and widths[-1] == source[-1]
    assert all(a <= b for a, b in zip(widths[1:-1], source[1:-1]))
    assert sum(widths) < sum(source)  # unused and constant units removed
    assert any(np.any(r.kind == CONST) for r in ticket.roles)  # the bias groups were folded into biases
    x = _x(256, 8)
    want = ticket_forward(ticket, x)
    np.testing.assert_allclose(module(torch.as_tensor(x)).detach().numpy(), want, rtol=1e-10, atol=1e-10)
    f32 = ticket.to_module()  # float32 by default; float64 input is cast
    assert next(f32.parameters()).dtype == torch.float32
    scale = np.abs(want).max()
    np.testing.assert_allclose(f32(torch.as_tensor(x)).detach().double().numpy(), want, atol=1e-5 * scale, rtol=0)
    bf = ticket.to_module(torch.bfloat16)
    assert bf(torch.as_tensor(x, dtype=torch.float32)).dtype == torch.bfloat16


def test_full_layout_matches_and_keeps_the_ticket_zeros(example, small):
    ticket, _ = example
    full = ticket.to_module(torch.float64, compact=False)
    assert [m.out_features for m in _linears(full)] == list(ticket.source.widths[1:])
    x = _x(64, 8, 1)
    np.testing.assert_allclose(full(torch.as_tensor(x)).detach().numpy(), ticket_forward(ticket, x), rtol=1e-10,
                               atol=1e-10)
    for lin, s in zip(_linears(full), ticket.kept):
        assert np.array_equal(lin.weight.detach().numpy() != 0, s)
    for t in small:
        x = _x(32, 3, 2)
        for compact in (True, False):
            out = construct.to_module(t, torch.float64, compact)(torch.as_tensor(x)).detach().numpy()
            np.testing.assert_allclose(out, ticket_forward(t, x), rtol=1e-10, atol=1e-10)
    legacy = construct.to_torch(small[0])  # the earlier call: float64, full source layout
    assert next(legacy.parameters()).dtype == torch.float64


def _pattern(module):
    return [lin.weight.detach() != 0 for lin in _linears(module)], [lin.bias.detach() != 0 for lin in _linears(module)]


@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
                                      lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, weight_decay=1e-3)])
def test_fine_tuning_keeps_pruned_weights_zero_and_state_dict_round_trips(example, make_opt):
    ticket, _ = example
    module = ticket.to_module(torch.float32)
    w_before, b_before = _pattern(module)
    opt = make_opt(module.parameters())
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 8, generator=gen) * 2 - 1
    y = torch.rand(64, 4, generator=gen)
    for _ in range(5):
        opt.zero_grad()
        loss = ((module(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    w_after, b_after = _pattern(module)
    for before, after in zip(w_before + b_before, w_after + b_after):
        assert not bool((after & ~before).any())  # nothing outside the ticket became non-zero
    assert any(not torch.equal(a, b) for a, b in zip(
        [lin.weight for lin in _linears(module)], [lin.weight for lin in _linears(ticket.to_module(torch.float32))]))
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    fresh = ticket.to_module(torch.float32)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh(x), module(x))
    w_fresh, _ = _pattern(fresh)
    assert all(torch.equal(a, b) for a, b in zip(w_fresh, w_after))


def test_bad_dtype_and_memory_budget_refused(small):
    with pytest.raises(ValueError, match="dtype=torch.int64"):
        small[0].to_module(torch.int64)
    with pytest.raises(ValueError, match="max_memory"):
        small[0].to_module(compact=False, max_memory=100)


@st.composite
def _random_tickets(draw):
    """Any sub-mask of a small random source, including units with no kept input (constants, chains of them)."""
    depth = draw(st.integers(1, 4))
    widths = draw(st.lists(st.integers(1, 6), min_size=depth + 1, max_size=depth + 1))
    seed = draw(st.integers(0, 2**31 - 1))
    keep = draw(st.sampled_from([0.2, 0.5, 0.9]))
    rng = np.random.default_rng(seed)
    ws = [rng.uniform(-1, 1, (b, a)).astype(np.float32) for a, b in zip(widths[:-1], widths[1:])]
    bs = [rng.uniform(-1, 1, b).astype(np.float32) for b in widths[1:]]
    ms = [np.ones(w.shape, dtype=bool) for w in ws]
    kept = tuple(rng.random(w.shape) < keep for w in ws)
    bias_kept = tuple(rng.random(b.shape) < 0.7 for b in bs)
    source = Source.from_arrays(ws, bs, ms, [1.0] * depth, seed)
    target = random_target((widths[0], widths[-1]), 0)
    return Ticket(target, source, kept, bias_kept, tuple(Roles.empty(w.shape[0]) for w in ws))


@given(_random_tickets())
@settings(max_examples=60, deadline=None)
def test_compact_and_full_modules_equal_the_numpy_forward_on_any_submask(ticket):
    x = _x(16, ticket.source.widths[0], 3) * 2
    want = ticket_forward(ticket, x)
    for compact in (True, False):
        module = construct.to_module(ticket, torch.float64, compact)
        np.testing.assert_allclose(module(torch.as_tensor(x)).detach().numpy(), want, rtol=1e-12, atol=1e-12)
    compact = construct.to_module(ticket, torch.float64)
    weights = sum(m.parametrizations.weight.original.numel() for m in compact if isinstance(m, nn.Linear))
    biases = sum(m.parametrizations.bias.original.numel() for m in compact if isinstance(m, nn.Linear))
    assert weights <= ticket.kept_params and biases <= sum(ticket.source.widths[1:])
