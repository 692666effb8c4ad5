"""The certificate and the sampled error on the active sub-network equal those on the whole source (construct.active),
and the 2L construction's low-memory pieces give exactly what the array versions gave."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import construct.certificate as certificate
from construct.active import active_subnetwork, active_units
from construct.source import SourceLayer
from construct.strong import build_strong_ticket
from construct.strong_2l import _diagonal, _sign_groups
from construct.strong_common import compact_groups
from construct.targets import random_target
from construct.ticket import CONST, LIFT, UNUSED, Roles, Ticket, effective_layers, ticket_forward
from construct.weak import build_weak_ticket


def _whole(layers, roles):  # the computation before construct.active: every unit of the source
    return list(layers), list(roles)


@pytest.fixture(scope="module")
def tickets():
    t = random_target((3, 4, 2), 1)
    out = [build_weak_ticket(t, 0.5, 0.1, 1, samples=64)[0]]
    for c in ("l+1", "2l"):
        out.append(build_strong_ticket(t, 0.5, 0.1, 1, weight_eps=0.05, construction=c, samples=64,
                                       width_multiplier=0.5)[0])
    return out


def _tampered(ticket, seed):
    """Same edges, random roles on the hidden layers (the certificate is sound for any roles)."""
    rng = np.random.default_rng(seed)
    roles = []
    for l, r in enumerate(ticket.roles, start=1):
        if l == len(ticket.roles):
            roles.append(r)
            continue
        kind = rng.choice(np.array([UNUSED, CONST, LIFT], np.int8), r.kind.size)  # LIFT of an input: valid anywhere
        layer = np.zeros(r.kind.size, np.int32)
        index = rng.integers(0, ticket.target.widths[0], r.kind.size).astype(np.int32)
        scale = rng.uniform(-1, 1, r.kind.size)
        roles.append(Roles(kind, layer, index, scale))
    return Ticket(ticket.target, ticket.source, ticket.kept, ticket.bias_kept, tuple(roles), ticket.weak_weights,
                  ticket.weak_biases, ticket.meta)


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("tamper", [False, True])
def test_certificate_and_error_equal_on_active_units(tickets, which, tamper, monkeypatch):
    ticket = _tampered(tickets[which], which) if tamper else tickets[which]
    layers = effective_layers(ticket)
    cert_active = certificate.certify(ticket, (-1.0, 1.0), layers)
    err_active = certificate.sampled_error(ticket, (-1.0, 1.0), samples=200, seed=3, layers=layers)
    monkeypatch.setattr(certificate, "active_subnetwork", _whole)
    cert_whole = certificate.certify(ticket, (-1.0, 1.0), layers)
    err_whole = certificate.sampled_error(ticket, (-1.0, 1.0), samples=200, seed=3, layers=layers)
    assert cert_active.certificate == cert_whole.certificate
    assert cert_active.layer_errors == cert_whole.layer_errors
    assert cert_active.layer_mismatch == cert_whole.layer_mismatch
    assert cert_active.layer_amplification == cert_whole.layer_amplification
    assert np.array_equal(cert_active.output_errors, cert_whole.output_errors)
    assert err_active.sampled_error == err_whole.sampled_error and err_active.corner_error == err_whole.corner_error


def test_active_units_drop_only_silent_units(tickets):
    ticket = tickets[2]
    layers = effective_layers(ticket)
    keep = active_units(layers, ticket.roles)
    n_dropped = 0
    for l, ((mat, bias), role, rows) in enumerate(zip(layers, ticket.roles, keep), start=1):
        dropped = np.setdiff1d(np.arange(mat.shape[0]), rows)
        if l == len(layers):
            assert dropped.size == 0
            continue
        n_dropped += dropped.size
        assert np.all(np.diff(mat.indptr)[dropped] == 0) and np.all(bias[dropped] == 0)
        assert np.all(role.kind[dropped] == UNUSED)
    assert n_dropped > 0  # a 2L source has many unused intermediate units
    x = np.random.default_rng(0).uniform(-1, 1, (50, ticket.target.widths[0]))
    small = active_subnetwork(layers, ticket.roles)[0]
    assert np.array_equal(ticket_forward(ticket, x, small), ticket_forward(ticket, x, layers))


@settings(max_examples=40, deadline=None)
@given(nin=st.integers(1, 5), k=st.integers(1, 12), P=st.integers(1, 3), seed=st.integers(0, 10**6),
       density=st.sampled_from([0.1, 0.5, 1.0]))
def test_sign_groups_equal_compact_groups(nin, k, P, seed, density):
    k = P * max(1, k // P)  # group sizes are multiples of P
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, nin * k).astype(np.float32)
    a[rng.random(a.size) < 0.1] = 0.0
    usable = rng.random(a.size) < density
    ids = np.arange(nin)[:, None] * k + np.arange(k)[None, :]
    A, U = a.reshape(nin, k), usable.reshape(nin, k)
    for sign in (1.0, -1.0):
        sel = U & ((A > 0) if sign > 0 else (A < 0))
        for q in range(P):
            expected = compact_groups(ids[:, q::P], sel[:, q::P])
            got = _sign_groups(a, usable, nin, k, sign, q, P)
            assert got.dtype == expected.dtype and np.array_equal(got, expected)


@pytest.mark.parametrize("nin, k, chunk", [(3, 7, 1), (4, 50, 3), (2, 1000, 1 << 21)])
def test_diagonal_equals_gather(nin, k, chunk, monkeypatch):
    import construct.strong_2l as s2

    monkeypatch.setattr(s2, "_DIAGONAL_CHUNK", chunk)
    layer = SourceLayer(nin * k + 5, nin, 0.4, seed=11, index=1)
    layer.rows_per_block = 4  # several blocks (the drawing scheme is fixed per instance; both reads use it)
    u = np.arange(nin * k)
    w_ref, m_ref = layer.gather(u, u // k)
    w, m = _diagonal(layer, nin, k)
    assert np.array_equal(w, w_ref) and np.array_equal(m, m_ref)
