"""2L conv ticket files and their verification (construct/conv_io.py, construct/conv_verify.py; docs/math.md §6,
§9): a saved ticket loads back to the same function and verifies VALID; every tampered file is INVALID with its
reason, every malformed one is refused in one line naming the key."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from construct.conv_2l import build_conv_2l
from construct.conv_io import conv_ticket_arrays, is_conv_ticket_file, load_conv_ticket, save_conv_ticket
from construct.conv_source import sample_conv_source
from construct.conv_target import conv_target
from construct.conv_ticket import conv_certificate, conv_ticket_forward
from construct.conv_verify import verify_conv_ticket


class _Res(nn.Module):
    """conv-BN-ReLU, then a residual block with an identity shortcut, max pooling, flatten and a linear layer."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)
        self.c2 = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 3 * 3, 3)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = F.relu(x + self.c2(x))
        return self.fc(F.max_pool2d(x, 2).flatten(1))


def _build(model, shape, k, g0, seed, dtype="float32"):
    target = conv_target(model.eval(), shape)
    src = sample_conv_source([(w.fan_in, w.fan_out, k, g0) for w in target.weighted], [0.5] * (2 * len(target.weighted)),
                             seed=seed, dtype=dtype)
    plan = [{"parts": 1, "instance_eps": 0.02, "cap": (20, 3), "bias_cap": (20, 3)} for _ in target.weighted]
    ticket = build_conv_2l(target, src, plan)[0]
    ticket.meta.update({"eps": None, "weight_eps": 0.02, "delta": 0.1})
    return ticket


@pytest.fixture(scope="module")
def tickets():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(2)
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 3, 3, stride=2),
                        nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    out = {"cnn": _build(cnn, (1, 6, 6), 40, 20, seed=3), "res": _build(_Res(), (1, 6, 6), 40, 20, seed=4),
           "cnn64": _build(cnn, (1, 6, 6), 40, 20, seed=5, dtype="float64")}
    torch.set_num_threads(prev)
    return out


@pytest.fixture(scope="module")
def saved(tickets, tmp_path_factory):
    d = tmp_path_factory.mktemp("conv_io")
    paths = {}
    for name, t in tickets.items():
        paths[name] = d / f"{name}.npz"
        save_conv_ticket(paths[name], t)
    return paths


@pytest.mark.parametrize("name", ["cnn", "res", "cnn64"])
def test_round_trip_and_valid(name, tickets, saved):
    ticket, path = tickets[name], saved[name]
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temporary left behind
    assert is_conv_ticket_file(path)
    back = load_conv_ticket(path)
    assert back.kept_params == ticket.kept_params
    for s, t in zip(back.layers, ticket.layers):
        for key in ("units", "a", "bias_units", "beta", "rows", "cols", "v"):
            assert np.array_equal(getattr(s, key), getattr(t, key))
        assert (s.k, s.g0) == (t.k, t.g0)
    assert back.source.to_dict() == ticket.source.to_dict()
    x = np.random.default_rng(0).uniform(-1, 1, (4,) + tuple(ticket.target.input_shape))
    assert np.array_equal(back.target.forward(x), ticket.target.forward(x))
    assert np.array_equal(conv_ticket_forward(back, x), conv_ticket_forward(ticket, x))
    meta = back.meta
    assert meta["construction"] == "2l-conv"
    assert meta["certificate"] == conv_certificate(ticket).certificate
    assert meta["densities"] == [0.5] * (2 * len(ticket.layers))
    assert meta["batchnorm_folded"] == [list(f) for f in ticket.target.folded]
    assert meta["weight_eps"] == 0.02 and meta["delta"] == 0.1 and meta["eps"] is None
    res = verify_conv_ticket(path, samples=64)
    assert res.valid, res.reasons
    assert res.submask and res.source_matches and res.certificate_matches and res.sampled_within_certificate
    assert res.units_checked == sum(s.units.size for s in ticket.layers)
    assert res.b_entries_checked == sum(s.v.size for s in ticket.layers)
    assert res.sampled_error <= res.certificate


# --------------------------------------------------------------------------------------------------- tampering
def _write(tmp_path, ticket, change):
    arrays = conv_ticket_arrays(ticket)
    change(arrays)
    path = tmp_path / "tampered.npz"
    np.savez(path, **arrays)  # (object arrays are pickled by savez: the loader must refuse them)
    return path


def _json_change(key, **updates):
    def change(arrays):
        d = json.loads(str(arrays[key][()]))
        d.update(updates)
        arrays[key] = np.array(json.dumps(d))
    return change


def _set(key, index, value):
    def change(arrays):
        arr = arrays[key].copy()
        arr[index] = value
        arrays[key] = arr
    return change


def _insert_entry(ticket, layer, row, col, value):
    """Insert B entry (row, col) with weight ``value`` into layer ``layer`` (1-based), keeping row-major order."""
    def change(arrays):
        rows, cols, v = (arrays[f"ticket_{layer}_{k}"] for k in ("rows", "cols", "v"))
        pos = int(np.searchsorted(rows * 10 ** 9 + cols, row * 10 ** 9 + col))
        arrays[f"ticket_{layer}_rows"] = np.insert(rows, pos, row)
        arrays[f"ticket_{layer}_cols"] = np.insert(cols, pos, col)
        arrays[f"ticket_{layer}_v"] = np.insert(v, pos, value)
    return change


def _verdict(path):
    res = verify_conv_ticket(path, samples=32)
    assert not res.valid
    return " | ".join(res.reasons)


def test_changed_v_is_invalid(tickets, tmp_path):
    t = tickets["cnn"]
    path = _write(tmp_path, t, _set("ticket_2_v", 3, float(t.layers[1].v[3]) + 2.0 ** -20))
    assert "1 stored B weights v differ from the weights regenerated" in _verdict(path)


def test_changed_a_is_invalid(tickets, tmp_path):
    t = tickets["cnn"]
    path = _write(tmp_path, t, _set("ticket_1_a", 0, float(t.layers[0].a[0]) * (1 + 2.0 ** -40)))
    assert "1 stored a_u differ from the weights regenerated" in _verdict(path)


def test_b_entry_outside_the_er_mask_is_invalid(tickets, tmp_path):
    """A kept B entry (i, u) on a kept unit whose regenerated mask entry is 0, with its true source weight."""
    t = tickets["cnn"]
    sel, (_, B) = t.layers[0], t.source.pairs[0]
    w, m = B.take_rows([0])
    free = [u for u in sel.units if not m[0, u]]
    assert free
    path = _write(tmp_path, t, _insert_entry(t, 1, 0, int(free[0]), float(w[0, free[0]])))
    text = _verdict(path)
    assert "1 kept B entries have mask 0" in text
    assert "B weights v differ" not in text  # the weight itself is the source's: only the mask is violated


def test_a_unit_outside_the_er_mask_is_invalid(tickets, tmp_path):
    t = tickets["cnn"]
    sel, (A, _) = t.layers[0], t.source.pairs[0]
    a_all, usable = A.diagonal()
    u = int(np.nonzero(~usable)[0][0])
    assert u not in sel.units

    def change(arrays):
        pos = int(np.searchsorted(sel.units, u))
        arrays["ticket_1_units"] = np.insert(sel.units, pos, u)
        arrays["ticket_1_a"] = np.insert(sel.a, pos, float(a_all[u]))
    text = _verdict(_write(tmp_path, t, change))
    assert "1 kept A units have mask 0" in text and "a_u differ" not in text


def test_changed_seed_is_invalid(tickets, tmp_path):
    t = tickets["cnn"]
    path = _write(tmp_path, t, _json_change("source", seed=t.source.seed + 1))
    text = _verdict(path)
    assert "regenerated from seed 4" in text and "differ" in text


def test_changed_source_dtype_is_invalid(tickets, tmp_path):
    """A float64 ticket claiming a float32 source: the a_u and v are not the float32 source's numbers."""
    path = _write(tmp_path, tickets["cnn64"], _json_change("source", dtype="float32"))
    assert "differ from the weights regenerated" in _verdict(path)


@pytest.mark.parametrize("entry, delta", [(2, 1), (2, -1), (3, 1)])
def test_changed_source_shape_is_invalid(tickets, tmp_path, entry, delta):
    """k or g0 changed: the kept channels no longer fit the layout (refused), or B_ℓ has another width, so its
    regenerated blocks hold other numbers (INVALID)."""
    t = tickets["cnn"]
    layers = [[A.fan_in, B.shape[0], A.k, A.g0] for A, B in t.source.pairs]
    layers[1][entry] += delta
    path = _write(tmp_path, t, _json_change("source", layers=layers))
    try:
        res = verify_conv_ticket(path, samples=32)
    except ValueError as exc:
        assert "ticket_2_" in str(exc)
    else:
        assert not res.valid and any(r.startswith("layer '3': ") for r in res.reasons), res.reasons


def test_certificate_claim_too_small_is_invalid(tickets, tmp_path):
    t = tickets["cnn"]
    cert = conv_certificate(t).certificate
    path = _write(tmp_path, t, _json_change("meta", certificate=cert / 2))
    assert "differs from the recomputed" in _verdict(path)


def test_eps_claim_below_the_grouped_bound_is_invalid(tickets, tmp_path):
    """eps promises the grouped bound (construct.conv_strong): a claimed eps below it is INVALID, one between it and
    the section 6 certificate is VALID."""
    t = tickets["cnn"]
    c = conv_certificate(t)
    assert c.grouped_certificate < c.certificate
    path = _write(tmp_path, t, _json_change("meta", eps=c.grouped_certificate * 0.9))
    assert "exceeds the claimed eps" in _verdict(path)
    between = _write(tmp_path, t, _json_change("meta", eps=(c.grouped_certificate + c.certificate) / 2))
    assert verify_conv_ticket(between, samples=32).valid


def test_a_wrong_stored_grouped_bound_is_invalid(tickets, tmp_path):
    t = tickets["cnn"]
    path = _write(tmp_path, t, _json_change("meta", grouped_certificate=conv_certificate(t).grouped_certificate / 2))
    assert "grouped_certificate" in _verdict(path)


def test_missing_certificate_is_invalid(tickets, tmp_path):
    path = _write(tmp_path, tickets["cnn"], _json_change("meta", certificate=None))
    assert "meta certificate is null" in _verdict(path)


def test_changed_target_weight_is_invalid(tickets, tmp_path):
    """The stored certificate no longer belongs to the stored target (the claim is about another target)."""
    t = tickets["res"]
    path = _write(tmp_path, t, _set("target_2_weight", (0, 0, 1, 1), float(t.target.weighted[1].weight[0, 0, 1, 1]) + 0.5))
    assert "differs from the recomputed" in _verdict(path)


# --------------------------------------------------------------------------------------------------- malformed
@pytest.mark.parametrize("change, match", [
    (lambda a: a.__setitem__("ticket_1_v", a["ticket_1_v"].astype(np.float32)), "ticket_1_v has dtype float32"),
    (lambda a: a.__setitem__("ticket_2_units", a["ticket_2_units"].astype(np.int32)), "ticket_2_units has dtype int32"),
    (_set("ticket_1_v", 0, np.nan), "ticket_1_v contains NaN"),
    (_set("ticket_1_a", 0, np.inf), "ticket_1_a contains NaN or inf"),
    (_set("target_1_weight", (0, 0, 0, 0), np.nan), "target_1_weight contains NaN"),
    (lambda a: a.__setitem__("ticket_1_units", a["ticket_1_units"][::-1].copy()), "ticket_1_units is not strictly"),
    (_set("ticket_1_cols", 0, 10 ** 7), "ticket_1_cols has entries outside"),
    (_set("ticket_1_rows", -1, 99), "ticket_1_rows has entries outside"),
    (lambda a: a.__setitem__("ticket_1_units", a["ticket_1_units"][1:].copy()), "ticket_1_a has shape"),
    (lambda a: a.pop("ticket_3_beta"), "missing key ticket_3_beta"),
    (_json_change("meta", construction="2l"), "meta construction='2l'"),
    (_json_change("meta", certificate="small"), "meta certificate='small' has type str"),
    (_json_change("source", densities=[0.5, 1.5, 0.5, 0.5, 0.5, 0.5]), "source densities="),
    (_json_change("source", seed=-1), "source seed=-1"),
    (_json_change("source", dtype="float16"), "source dtype='float16'"),
    (_json_change("source", layers=[[9, 2, 40, 20], [18, 3, 40, 20], [12, 7, 40, 20]]), "has fan_in, fan_out 12, 7"),
    (lambda a: a.__setitem__("box", np.array([1.0, -1.0])), "box=.*allowed a < b"),
    (lambda a: a.__setitem__("architecture", np.array("[1, 2")), "architecture is not valid JSON"),
    (lambda a: a.__setitem__("ticket_1_v", np.array([{"x": 1}], dtype=object)), "ticket_1_v is an object array"),
])
def test_malformed_files_are_refused_in_one_line(tickets, tmp_path, change, match):
    path = _write(tmp_path, tickets["cnn"], change)
    with pytest.raises(ValueError, match=match) as info:
        load_conv_ticket(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):
        verify_conv_ticket(path)


def test_b_entry_on_a_unit_that_is_not_kept_is_refused(tickets, tmp_path):
    t = tickets["cnn"]
    sel = t.layers[0]
    missing = next(u for u in range(sel.k * 9) if u not in sel.units)
    path = _write(tmp_path, t, _insert_entry(t, 1, 0, missing, 0.1))
    with pytest.raises(ValueError, match="reads A channels that are not kept"):
        load_conv_ticket(path)


def test_not_an_npz_is_refused(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"not a zip")
    assert not is_conv_ticket_file(path)
    with pytest.raises(ValueError, match="not a valid npz file"):
        load_conv_ticket(path)


def test_target_files_round_trip_and_ticket_files_are_targets(tickets, saved, tmp_path):
    from construct.conv_io import is_conv_target_file, load_conv_target_file, save_conv_target
    from construct.conv_strong import load_conv_target

    t = tickets["res"].target
    path = tmp_path / "target.npz"
    save_conv_target(path, t)
    assert is_conv_target_file(path) and not is_conv_ticket_file(path)
    back = load_conv_target(str(path), box=(0.0, 1.0))
    x = np.random.default_rng(0).uniform(0, 1, size=(4,) + tuple(t.input_shape))
    assert np.array_equal(back.forward(x), t.forward(x)) and back.box == (0.0, 1.0)
    assert [w.signed for w in back.weighted] == [False] * len(back.weighted)  # box [0, 1]: no sign split
    from_ticket = load_conv_target_file(saved["cnn"])
    assert np.array_equal(from_ticket.weighted[0].weight, tickets["cnn"].target.weighted[0].weight)
    with pytest.raises(ValueError, match="input-shape"):
        load_conv_target(str(path), input_shape=(1, 6, 6))
    arrays = dict(np.load(path))
    del arrays["target_2_weight"]
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match="target_2_weight") as info:
        load_conv_target_file(bad)
    assert "\n" not in str(info.value)
