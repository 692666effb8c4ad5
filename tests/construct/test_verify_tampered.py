"""`construct verify` trusts nothing in the file (issues 14.2 and 15.4): every tampered ticket is INVALID (exit 1)
with its reason, every malformed one is a one-line error (exit 2), and only untouched files are VALID."""
import json
import subprocess
import sys

import numpy as np
import pytest

import construct.source as source_module
from construct.__main__ import main
from construct.strong import build_strong_ticket
from construct.targets import random_target
from construct.ticket import save_ticket, ticket_arrays
from construct.verify import verify_ticket
from construct.weak import build_weak_ticket
from theory.cli import run_main


@pytest.fixture(scope="module")
def tickets():
    target = random_target((3, 2), 1)
    strong = build_strong_ticket(target, 0.5, 0.1, 1, eps=0.05, construction="2l", samples=64)[0]
    weak = build_weak_ticket(target, 0.5, 0.1, 1, samples=64)[0]
    return strong, weak


def _write(tmp_path, ticket, change=None, name="t.npz"):
    arrays = ticket_arrays(ticket)
    if change is not None:
        change(arrays)
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _meta(**updates):
    """A change that sets (or, for the value ``...``, deletes) meta entries; values may be raw JSON text."""
    def change(arrays):
        meta = json.loads(str(arrays["meta"][()]))
        raw = {}
        for key, value in updates.items():
            if value is ...:
                meta.pop(key, None)
            elif isinstance(value, RawJSON):
                raw[key] = value.text
                meta[key] = f"@@{key}@@"
            else:
                meta[key] = value
        text = json.dumps(meta)
        for key, value in raw.items():
            text = text.replace(json.dumps(f"@@{key}@@"), value)
        arrays["meta"] = np.array(text)
    return change


class RawJSON:
    def __init__(self, text):
        self.text = text


def _kept_edge(arrays, t):
    rows, cols = np.nonzero(arrays[f"ticket_S{t}"])
    return rows[0], cols[0]


def test_untouched_files_are_valid(tmp_path, tickets):
    for i, ticket in enumerate(tickets):
        res = verify_ticket(_write(tmp_path, ticket, name=f"t{i}.npz"), samples=64)
        assert res.valid and res.reasons == () and res.source_matches and res.submask
        assert res.blocks_compared >= 1


def _forge_mask_and_keep_dropped_edge(arrays):
    m = arrays["source_M2"]
    i, j = np.argwhere(~m)[0]          # an edge the seeded mask dropped
    arrays["source_M2"] = np.ones_like(m)
    s = arrays["ticket_S2"].copy()
    s[i, j] = True
    arrays["ticket_S2"] = s


def _scale_kept_weight(arrays):
    i, j = _kept_edge(arrays, 2)
    w = arrays["source_W2"].copy()
    w[i, j] *= np.float32(1.0001)
    arrays["source_W2"] = w


def _change_kept_bias(arrays):
    kept = np.nonzero(arrays["ticket_bias1"])[0]
    b = arrays["source_b1"].copy()
    b[kept[0] if kept.size else 0] += np.float32(0.5)
    arrays["source_b1"] = b


def _huge_target(arrays):
    arrays["target_W1"] = np.full_like(arrays["target_W1"], 1.7e308)  # finite, but |C - T|·B sums overflow


@pytest.mark.parametrize("change, fragment", [
    (lambda a: a.__setitem__("source_M2", np.ones_like(a["source_M2"])), "source_M2 differs"),
    (_forge_mask_and_keep_dropped_edge, "outside the ER mask regenerated"),
    (_scale_kept_weight, "source_W2 differs"),
    (_change_kept_bias, "source_b1 differs"),
    (_meta(source_seed=2), "differs from the"),
    (_meta(source_seed=-1), "source_seed=-1"),
    (_meta(source_seed=...), "source_seed is missing"),
    (_meta(certificate=...), "certificate is missing"),
    (_meta(certificate=None), "certificate is null"),
    (_meta(certificate=RawJSON("Infinity")), "allowed a finite number"),
    (_meta(certificate=0.0121), "differs from the recomputed"),
    (_meta(eps=1e-6), "exceeds the claimed eps"),
    (_meta(eps=0.0), "eps=0.0"),
    (_meta(eps=RawJSON("NaN")), "eps=nan"),
    (_meta(source_densities=2.0), "source_densities contains 2.0"),
    (_meta(source_densities=[0.5, 2.0]), "source_densities contains 2.0"),
    (_meta(source_densities=[0.5, 0.0]), "source_densities contains 0.0"),
    (_meta(source_densities=...), "source_densities is missing"),
    (_meta(weight_law="cauchy"), "weight_law='cauchy'"),
    (_meta(box=[-1, 0, 1]), "box=[-1, 0, 1]"),
    (_meta(box=[1, -1]), "box=[1, -1]"),
    (_meta(box=RawJSON("[NaN, 1]")), "allowed two finite numbers"),
    (_meta(box=...), "box is missing"),
    (_meta(kind="medium"), "kind='medium'"),
    (_meta(construction="l+2"), "construction='l+2'"),
    (_meta(construction="weak"), "does not match the arrays"),
    (_huge_target, "recomputed certificate is"),
])
def test_tampered_strong_ticket_is_invalid(tmp_path, tickets, change, fragment, capsys):
    path = _write(tmp_path, tickets[0], change)
    res = verify_ticket(path, samples=64)
    assert not res.valid
    assert any(fragment in r for r in res.reasons), res.reasons
    assert run_main(main, ["verify", str(path), "--samples", "64", "--no-bounds"]) == 1
    out = capsys.readouterr().out
    assert "verdict: INVALID" in out and fragment in out


def test_tampered_weak_ticket_is_invalid(tmp_path, tickets):
    def forge(arrays):
        arrays["source_M1"] = np.ones_like(arrays["source_M1"])

    res = verify_ticket(_write(tmp_path, tickets[1], forge), samples=64)
    assert not res.valid and any("source_M1 differs" in r for r in res.reasons)


@pytest.mark.parametrize("change, fragment", [
    (_meta(certificate=[1]), "certificate"),
    (_meta(eps={}), "eps"),
    (_meta(box=RawJSON("NaN")), "box"),
    (_meta(box=5), "box"),
    (_meta(box=["a", "b"]), "box"),
    (_meta(source_seed=None), "source_seed"),
    (_meta(source_seed=RawJSON("1e400")), "source_seed"),
    (_meta(source_seed=1.5), "source_seed"),
    (_meta(source_seed=True), "source_seed"),
    (_meta(source_seed=RawJSON("1" * 400)), "source_seed"),
    (_meta(source_densities="0.5"), "source_densities"),
    (_meta(source_densities=[0.5]), "source_densities"),
    (_meta(source_densities=RawJSON("[" + "1" * 400 + ", 1]")),
     "source_densities"),
    (_meta(weight_law=5), "weight_law"),
    (_meta(kind=["strong"]), "kind"),
    (lambda a: a.__setitem__("meta", np.array("[" * 100_000 + "]" * 100_000)), "meta"),
    (lambda a: a.__setitem__("meta", np.array('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")), "meta"),
    (lambda a: a.__setitem__("meta", np.array("[1, 2]")), "meta"),
])
def test_malformed_meta_is_one_line_exit_2(tmp_path, tickets, change, fragment, capsys):
    path = _write(tmp_path, tickets[0], change)
    with pytest.raises(ValueError, match=fragment):
        verify_ticket(path, samples=64)
    assert run_main(main, ["verify", str(path), "--no-bounds"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and fragment in err


def test_cli_forged_mask_exit_1_and_nested_meta_exit_2(tmp_path, tickets):
    """The same through a real process: no traceback, exit statuses 1 and 2."""
    forged = _write(tmp_path, tickets[0], _forge_mask_and_keep_dropped_edge, "forged.npz")
    r = subprocess.run([sys.executable, "-m", "construct", "verify", str(forged), "--no-bounds"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "verdict: INVALID" in r.stdout and "Traceback" not in r.stderr
    nested = _write(tmp_path, tickets[0], lambda a: a.__setitem__("meta", np.array("[" * 100_000 + "]" * 100_000)),
                    "nested.npz")
    r = subprocess.run([sys.executable, "-m", "construct", "verify", str(nested)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_only_used_blocks_are_compared_unless_all_blocks(tmp_path, monkeypatch):
    """With small blocks, verify regenerates only the blocks holding kept edges or biases; a forgery in a block the
    ticket does not use is found with ``all_blocks``; a forgery in a used block always."""
    monkeypatch.setattr(source_module, "_BLOCK_ENTRIES", 64)
    target = random_target((3, 2), 1)
    ticket = build_strong_ticket(target, 0.5, 0.1, 1, eps=0.05, construction="2l", samples=64)[0]
    arrays = ticket_arrays(ticket)
    path = _write(tmp_path, ticket)
    res = verify_ticket(path, samples=64)
    assert res.valid and 0 < res.blocks_compared < res.blocks_total
    rows_per_block = 64 // arrays["source_W1"].shape[1]
    used = arrays["ticket_S1"].any(axis=1) | arrays["ticket_bias1"]
    blocks = np.arange(arrays["source_W1"].shape[0]) // rows_per_block
    unused = np.setdiff1d(blocks, blocks[used])
    assert unused.size

    def forge_unused(a):
        w = a["source_W1"].copy()
        w[np.nonzero(blocks == unused[0])[0][0], 0] *= np.float32(1.0001)
        a["source_W1"] = w

    forged = _write(tmp_path, ticket, forge_unused, "unused.npz")
    assert verify_ticket(forged, samples=64).valid  # the ticket's function and claims about it are untouched
    full = verify_ticket(forged, samples=64, all_blocks=True)
    assert not full.valid and full.blocks_compared == full.blocks_total
    assert any("source_W1 differs" in r for r in full.reasons)


def test_verify_reports_the_error_interval(tmp_path, tickets):
    res = verify_ticket(_write(tmp_path, tickets[0]), samples=64, bounds=True, bound_seconds=5)
    iv = res.interval
    assert res.valid and iv is not None and iv["consistent"]
    assert iv["attacked_error"] <= iv["best_bound"] <= res.certificate + 1e-12


def test_float64_source_is_regenerated_in_its_dtype(tmp_path):
    """A ticket whose tolerance needs float64 weights (construct.source, refined draws) is VALID as written, and a
    change far below float32 resolution, or a meta dtype that disagrees with the arrays, is INVALID."""
    ticket = build_strong_ticket(random_target((3, 2), 1), 0.5, 0.1, 1, eps=1e-6, construction="2l", samples=64)[0]
    assert ticket.meta["source_dtype"] == "float64"
    assert verify_ticket(_write(tmp_path, ticket, name="ok.npz")).valid

    def nudge(arrays):
        w = arrays["source_W2"]
        i, j = map(int, np.argwhere(arrays["ticket_S2"])[0])
        w[i, j] = np.nextafter(w[i, j], 2.0)  # one float64 ulp: invisible in float32
    res = verify_ticket(_write(tmp_path, ticket, nudge, name="nudged.npz"))
    assert not res.valid and any("source_W2 differs" in r for r in res.reasons), res.reasons
    res = verify_ticket(_write(tmp_path, ticket, _meta(source_dtype="float32"), name="dtype.npz"))
    assert not res.valid and any("source_dtype" in r for r in res.reasons), res.reasons
