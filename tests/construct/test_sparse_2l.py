"""The 2L construction at ≈ 1 byte per source weight or less (issue 15 item 6): sparse sub-masks and roles, streamed
source reads, certificate on the used units — and the same tickets as before.

- the tickets equal a file written by the code at the branch point (main, before this change; committed, gzipped)
  byte for byte, and equal a reference build that uses the dense arrays of the earlier construction (kept here);
- the streamed reads of a source (chunks of a block, columns of rows, biases by index, mask counts) equal the
  one-shot draws of the documented drawing scheme, written out here;
- the build's traced peak memory per source weight on a narrow target stays below a bound (tracemalloc counts
  allocations, so the bound is deterministic).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import construct.source as source_mod
import construct.strong as strong_mod
from construct.active import used_layers
from construct.certificate import certify, sampled_error
from construct.source import SourceLayer, sample_source
from construct.strong import build_strong_ticket, plan_strong
from construct.strong_2l import _diagonal, _padded_parts, _sign_groups, build_2l, twol_source_widths
from construct.strong_common import (empty_selection, layer_input_norms, layer_tolerance, prune_unused,
                                     solve_grouped)
from construct.targets import random_target
from construct.ticket import (CONST, LIFT, NEURON, Roles, SparseMask, SparseRoles, Ticket, effective_layers,
                              save_ticket, ticket_arrays, ticket_forward)
from construct.ticket_network import reduce_network, ticket_network
from construct.verify import verify_ticket

DATA = Path(__file__).parent / "data"

# (target, density, tolerance, width multiplier, seed): the configurations of the files written by main's code
# (regenerate: build them with build_strong_ticket(target, density, 0.1, seed, construction="2l",
# width_multiplier=mult, samples=64, **tolerance) at package version 0.1.0 and save_ticket)
MAIN_FILES = {
    "p1_eps": ((lambda: random_target((2, 3, 2), 5)), 0.5, {"eps": 0.2}, 0.15, 4,
               "c614b37b72b530cbe5466d6e60322d85f525a1050131e27a21dcad60359e110e"),
    "p3_weps": ((lambda: random_target((2, 2, 2), 6, scale=3.0)), 0.5, {"weight_eps": 0.05}, 0.1, 7,
                "c84b277b040a5d95b7e78bf765eec1395ff08c0a7a699ec1e3b4a6d7e3a95c4d"),
    "deep_sparse": ((lambda: random_target((2, 3, 2, 1), 8, target_density=0.7)), 0.4, {"eps": 0.3}, 0.05, 9,
                    "85780997ee07b2b34ed47af75c50005f35c40b61d8f60238f50f40d397cb7728"),
}


def _file_bytes(ticket) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **ticket_arrays(ticket))
    return buf.getvalue()


def _build(name, monkeypatch):
    make, density, tol, mult, seed, _ = MAIN_FILES[name]
    monkeypatch.setattr(strong_mod, "_version", lambda: "0.1.0")  # the version the files were written with
    return build_strong_ticket(make(), density, 0.1, seed, construction="2l", width_multiplier=mult, samples=64, **tol)


@pytest.mark.parametrize("name", sorted(MAIN_FILES))
def test_ticket_file_equals_the_one_main_wrote(name, monkeypatch, tmp_path):
    ticket, report = _build(name, monkeypatch)
    assert isinstance(ticket.kept[0], SparseMask) and isinstance(ticket.roles[0], SparseRoles)
    path = tmp_path / "t.npz"
    save_ticket(path, ticket)
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == MAIN_FILES[name][5]
    assert data == _file_bytes(ticket)
    if name == "deep_sparse":  # the committed file itself: same bytes, and verify finds it VALID
        main = DATA / "main_2l_deep_sparse.npz.gz"
        assert gzip.decompress(main.read_bytes()) == data
        written = tmp_path / "main.npz"
        written.write_bytes(gzip.decompress(main.read_bytes()))
        assert verify_ticket(written).valid


# ----------------------------------------------------------------------------- the dense reference (before)
def _reference_build_2l(target, source, groups, instance_eps, caps, *, eps=None, box=(-1.0, 1.0)):
    """The 2L construction as it was before this change: dense bool sub-masks and dense Roles of every source layer,
    the intermediate layer's diagonal gathered as dense arrays (a_u and "usable" for every unit), a dense scale
    vector, whole rows read by the solver. Kept as the reference of the sparse build."""
    n = target.widths
    L = target.depth
    P = groups["P"]
    kept, bias_kept, roles = empty_selection(source, twol_source_widths(target, groups), "2L")
    norms = layer_input_norms(target, box)
    caps = caps or [{"weight": None, "bias": None}] * L
    downstream, certs = 1.0, []
    for t in range(L, 0, -1):
        eps_t = layer_tolerance(t, instance_eps, eps, target, norms, downstream)
        k, g0 = groups["k"][t - 1], groups["g0"][t - 1]
        inter_layer, out_layer = source.layers[2 * t - 2], source.layers[2 * t - 1]
        nin = n[t - 1]
        rows = np.arange(n[t])
        roles[2 * t - 1].kind[:] = NEURON
        roles[2 * t - 1].layer[:] = t
        roles[2 * t - 1].index[:] = rows
        a32, usable = _diagonal(inter_layer, nin, k)
        scale = np.zeros(out_layer.shape[1], dtype=np.result_type(a32.dtype, inter_layer.bias.dtype))
        np.abs(a32, out=scale[: nin * k])
        grp, tj, ts = [], [], []
        for sign in ((1.0, -1.0) if t == 1 else (1.0,)):
            for q in range(P):
                grp.append(_sign_groups(a32, usable, nin, k, sign, q, P))
                tj.append(np.arange(nin))
                ts.append(np.full(nin, sign))
        width = max(x.shape[1] for x in grp)
        grp = np.concatenate([np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=-1) for x in grp])
        targets = target.weights[t - 1][:, np.concatenate(tj)] * np.concatenate(ts)[None, :] / P
        chosen_l1 = np.zeros(n[t])
        errs = [solve_grouped(out_layer, rows, grp, scale, targets, eps_t / P, caps[t - 1]["weight"],
                              kept[2 * t - 1], chosen_l1)]
        bt = target.biases[t - 1]
        b0 = nin * k + np.arange(g0)
        BA = inter_layer.bias
        if g0 and bt.any():
            beta = BA[b0].astype(np.float64)
            scale[b0] = np.maximum(BA[b0], 0)
            errs.append(solve_grouped(out_layer, rows, _padded_parts(b0, beta > 0, P), scale,
                                      np.repeat(bt[:, None] / P, P, axis=1), eps_t / P, caps[t - 1]["bias"],
                                      kept[2 * t - 1]))
        used = kept[2 * t - 1].any(axis=0)
        inter = np.nonzero(used[: nin * k])[0]
        j_of = inter // k
        kept[2 * t - 2][inter, j_of] = True
        roles[2 * t - 2].kind[inter] = LIFT
        roles[2 * t - 2].layer[inter] = t - 1
        roles[2 * t - 2].index[inter] = j_of
        roles[2 * t - 2].scale[inter] = a32[inter].astype(np.float64)
        bused = b0[used[b0]]
        bias_kept[2 * t - 2][bused] = True
        roles[2 * t - 2].kind[bused] = CONST
        roles[2 * t - 2].scale[bused] = BA[bused].astype(np.float64)
        if t >= 2:
            downstream *= max(float(np.max(chosen_l1, initial=0.0)), 1e-300)
        certs.append(errs)
    prune_unused(kept, bias_kept, roles, 1, source.depth - 1)
    return Ticket(target, source, tuple(kept), tuple(bias_kept), tuple(roles), None, None, {}), certs


_REFERENCE_CASES = [(random_target((3, 4, 2), 1), 0.5, {"weight_eps": 0.05}, 0.3, 1),
                    (random_target((2, 3, 2), 2, scale=2.5), 0.6, {"eps": 0.2}, 0.2, 3),  # P = 2 parts
                    (random_target((3, 3, 2, 2), 4, target_density=0.6), 0.4, {"eps": 0.2}, 0.1, 5),  # float64, L = 3
                    (random_target((2, 3, 1), 6, biases=False), 0.3, {"eps": 0.1}, 0.2, 7)]  # no bias groups


@pytest.mark.parametrize("case", range(len(_REFERENCE_CASES)))
def test_sparse_build_equals_the_dense_reference(case):
    target, density, tol, mult, seed = _REFERENCE_CASES[case]
    sw, groups, widths = plan_strong(target, density, 0.1, construction="2l", width_multiplier=mult, **tol)
    caps = [{key: (c[key], b[key]) if c[key] else None for key in c} for c, b in zip(sw.caps, sw.blocks)]
    eps = tol.get("eps")

    def source():
        return sample_source(widths, sw.densities, seed, dtype=sw.source_dtype)

    new, reports = build_2l(target, source(), groups, sw.instance_eps, caps, eps=eps)
    ref, ref_errs = _reference_build_2l(target, source(), groups, sw.instance_eps, caps, eps=eps)
    assert new.kept_params == ref.kept_params > 0
    for l in range(len(ref.kept)):
        assert np.array_equal(np.asarray(new.kept[l]), ref.kept[l])
        assert np.array_equal(np.asarray(new.bias_kept[l]), ref.bias_kept[l])
        for field in ("kind", "layer", "index", "scale"):
            got, want = getattr(new.roles[l], field), getattr(ref.roles[l], field)
            assert got.dtype == want.dtype and np.array_equal(got, want), (l, field)
    for rep, errs in zip(reports, reversed(ref_errs)):
        assert rep["max_instance_error"] == float(max(e.max(initial=0.0) for e in errs))
    assert _file_bytes(new) == _file_bytes(ref)
    # the certificate and the sampled error on the used units equal those on the full dense layers
    full = effective_layers(ref)
    c_new, c_ref = certify(new, (-1.0, 1.0)), certify(ref, (-1.0, 1.0), full)
    assert c_new.certificate == c_ref.certificate and c_new.layer_errors == c_ref.layer_errors
    assert c_new.layer_mismatch == c_ref.layer_mismatch
    assert c_new.layer_amplification == c_ref.layer_amplification
    assert np.array_equal(c_new.output_errors, c_ref.output_errors)
    e_new = sampled_error(new, (-1.0, 1.0), samples=100, seed=2)
    e_ref = sampled_error(ref, (-1.0, 1.0), samples=100, seed=2, layers=full)
    assert e_new.sampled_error == e_ref.sampled_error and e_new.corner_error == e_ref.corner_error
    x = np.random.default_rng(0).uniform(-1, 1, (20, target.widths[0]))
    assert np.array_equal(ticket_forward(new, x, used_layers(new)), ticket_forward(ref, x, full))
    # the reduced network of the used units is the reduced network of all units, origins in source units
    red_new, org_new = reduce_network(ticket_network(new), with_origin=True)
    red_ref, org_ref = reduce_network(ticket_network(ref, full), with_origin=True)
    assert red_new.widths == red_ref.widths
    for (wa, ba), (wb, bb) in zip(red_new.layers, red_ref.layers):
        assert (wa != wb).nnz == 0 and np.array_equal(ba, bb)
    for oa, ob in zip(org_new, org_ref):
        assert oa.layer == ob.layer and np.array_equal(oa.unit, ob.unit) and np.array_equal(oa.col, ob.col)


# ----------------------------------------------------------------------------- sparse containers
@settings(max_examples=30, deadline=None)
@given(shape=st.tuples(st.integers(1, 7), st.integers(1, 9)), seed=st.integers(0, 10**6))
def test_sparse_mask_equals_its_dense_array(shape, seed):
    rng = np.random.default_rng(seed)
    dense = rng.random(shape) < 0.3
    rows, cols = np.nonzero(dense)
    order = rng.permutation(rows.size)
    mask = SparseMask.from_coords(shape, np.concatenate([rows[order], rows]), np.concatenate([cols[order], cols]))
    assert np.array_equal(np.asarray(mask), dense) and np.asarray(mask).dtype == bool
    assert all(np.array_equal(a, b) for a, b in zip(mask.nonzero(), np.nonzero(dense)))
    assert mask.count() == int(dense.sum())
    assert np.array_equal(mask.any(axis=0), dense.any(axis=0)) and np.array_equal(mask.any(axis=1), dense.any(axis=1))
    other = rng.random(shape) < 0.5
    assert np.array_equal(mask & other, dense & other) and np.array_equal(other | mask, other | dense)
    assert np.array_equal(~mask, ~dense) and np.array_equal(mask[1:], dense[1:])
    vec = SparseMask((shape[1],), np.flatnonzero(dense[0]))
    assert np.array_equal(np.asarray(vec), dense[0]) and np.array_equal(vec.nonzero()[0], np.flatnonzero(dense[0]))


def test_sparse_roles_equal_their_dense_arrays():
    dense = Roles.empty(10)
    units = np.array([7, 2, 5])
    dense.kind[units], dense.layer[units], dense.index[units], dense.scale[units] = [LIFT, CONST, 0], 1, [3, 0, 4], \
        [-0.5, 0.25, 2.0]
    sparse = SparseRoles(10, units, dense.kind[units], dense.layer[units], dense.index[units], dense.scale[units])
    for field in ("kind", "layer", "index", "scale"):
        got = getattr(sparse, field)
        assert got.dtype == getattr(dense, field).dtype and np.array_equal(got, getattr(dense, field))
        with pytest.raises(ValueError):
            got[0] = 1  # read-only: a write to the dense view cannot be lost silently
    pick = np.array([5, 0, 7, 7, 9])
    for field in ("kind", "layer", "index", "scale"):
        assert np.array_equal(getattr(sparse.take(pick), field), getattr(dense.take(pick), field))
    assert np.array_equal(sparse.assigned(), [2, 7]) and np.array_equal(dense.assigned(), [2, 7])
    with pytest.raises(ValueError, match="distinct"):
        SparseRoles(10, [1, 1], [1, 1], [0, 0], [0, 0], [0.0, 0.0])


# ----------------------------------------------------------------------------- streamed source reads
def _one_shot_block(layer: SourceLayer, b: int):
    """Block b of a drawn layer by the documented scheme in one draw (construct/source.py module docstring)."""
    r0 = b * layer.rows_per_block
    r1 = min(layer.shape[0], r0 + layer.rows_per_block)
    cw, cm, cr = np.random.SeedSequence([layer.seed, 0x5EED, layer.index, b]).spawn(3)
    shape = (r1 - r0, layer.shape[1])
    if layer.law == "uniform":
        w = np.random.default_rng(cw).random(shape, dtype=np.float32)
        w *= 2.0
        w -= 1.0
        if layer.dtype == "float64":
            w = w.astype(np.float64) + np.random.default_rng(cr).random(shape) * 2.0**-23
    else:
        w = np.random.default_rng(cw).standard_normal(shape, dtype=np.float32)
        w *= np.float32(1.0 / np.sqrt(layer.shape[1]))
    m = np.ones(shape, bool) if layer.density >= 1 else np.random.default_rng(cm).random(shape) < layer.density
    return w, m


@settings(max_examples=25, deadline=None)
@given(n_out=st.integers(1, 40), n_in=st.integers(1, 30), rpb=st.integers(1, 9), chunk=st.integers(1, 50),
       kind=st.sampled_from([("uniform", "float32", 0.3), ("uniform", "float64", 0.6), ("normal", "float32", 1.0)]),
       seed=st.integers(0, 10**6))
def test_streamed_reads_equal_the_one_shot_draw(n_out, n_in, rpb, chunk, kind, seed):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(source_mod, "_UNIFORM_CHUNK", chunk)  # chunk boundaries anywhere, even inside rows
        _check_streamed_reads(n_out, n_in, rpb, kind, seed)


def _check_streamed_reads(n_out, n_in, rpb, kind, seed):
    law, dtype, density = kind
    rng = np.random.default_rng(seed)

    def layer():
        lay = SourceLayer(n_out, n_in, density, law, seed=seed, index=2, dtype=dtype)
        lay.rows_per_block = rpb
        return lay

    lay = layer()
    blocks = [_one_shot_block(lay, b) for b in range(lay.n_blocks)]
    W, M = np.concatenate([w for w, _ in blocks]), np.concatenate([m for _, m in blocks])
    for b, (w, m) in enumerate(blocks):
        bw, bm = lay.block(b)
        assert np.array_equal(bw, w) and bw.dtype == w.dtype and np.array_equal(bm, m)
        flat = np.unique(rng.integers(0, w.size, 7))
        ew, em = layer().block_entries(b, flat)
        assert np.array_equal(ew, w.reshape(-1)[flat]) and np.array_equal(em, m.reshape(-1)[flat])
    rows = rng.integers(0, n_out, 5)
    cols = rng.integers(0, n_in, 4)
    tw, tm = layer().take_rows(rows, cols=cols)
    assert np.array_equal(tw, W[rows][:, cols]) and np.array_equal(tm, M[rows][:, cols])
    idx = rng.integers(0, n_in, rows.size)
    gw, gm = layer().gather(rows, idx)
    assert np.array_equal(gw, W[rows, idx]) and np.array_equal(gm, M[rows, idx])
    assert layer().kept_count() == int(M.sum())
    units = rng.integers(0, n_out, 6)
    assert np.array_equal(layer().bias_at(units), lay.bias[units])


# ----------------------------------------------------------------------------- memory
def test_narrow_2l_build_traced_peak_per_source_weight(monkeypatch):
    """random:4,3,2 at density 0.01 (≈ 6 source weights per unit, the case where per-unit arrays dominated; 5.7e7
    weights, one drawing thread): the build, certificate and sampled error allocate at most 0.6 bytes per source
    weight at their peak (measured 0.42: ≈ 24 MB, the streamed reads of one 2^22-entry block; before this change
    ≈ 11 — a dense bool sub-mask, 17 bytes of roles per unit, dense diagonal and scale arrays)."""
    monkeypatch.setattr(source_mod, "_threads", lambda: 1)
    target = random_target((4, 3, 2), 0)
    build_strong_ticket(random_target((2, 2), 0), 0.5, 0.1, 0, eps=0.1, samples=8)  # load the solver first
    tracemalloc.start()
    try:
        _, report = build_strong_ticket(target, 0.01, 0.1, 0, eps=0.05, width_multiplier=0.5, samples=256,
                                        max_source_params=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.source_params > 5e7
    assert peak / report.source_params < 0.6, peak / report.source_params
