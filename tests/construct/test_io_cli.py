"""npz format round trip, verify, bad files, torch export, and the CLI's bad-input behaviour."""
import json
import subprocess
import sys

import numpy as np
import pytest

from construct.strong import build_strong_ticket
from construct.targets import random_target
from construct.ticket import load_ticket, save_ticket, ticket_arrays, ticket_forward
from construct.verify import verify_ticket
from construct.weak import build_weak_ticket


@pytest.fixture(scope="module")
def tickets():
    target = random_target((3, 3, 2), 1)
    strong = build_strong_ticket(target, 0.5, 0.1, 1, eps=0.01, construction="2l", samples=64)[0]
    weak = build_weak_ticket(target, 0.5, 0.1, 1, samples=64)[0]
    return strong, weak


def test_round_trip_and_verify(tmp_path, tickets):
    x = np.random.default_rng(0).uniform(-1, 1, (32, 3))
    for i, ticket in enumerate(tickets):
        path = tmp_path / f"t{i}.npz"
        save_ticket(path, ticket)
        again = load_ticket(path)
        for a, b in zip(ticket.source.weights + ticket.source.masks + ticket.kept,
                        again.source.weights + again.source.masks + again.kept):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        assert np.array_equal(ticket_forward(ticket, x), ticket_forward(again, x))
        res = verify_ticket(path)
        assert res.valid and res.submask and res.certificate_matches
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _corrupt(tmp_path, ticket, change):
    arrays = ticket_arrays(ticket)
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("change, fragment", [
    (lambda a: a.pop("source_M2"), "missing key source_M2"),
    (lambda a: a.__setitem__("ticket_S1", a["ticket_S1"].astype(np.int8)), "dtype"),
    (lambda a: a.__setitem__("ticket_S1", np.ones_like(a["ticket_S1"])), "outside the ER mask"),
    (lambda a: a.__setitem__("source_W1", a["source_W1"][:, :2]), "inputs"),
    (lambda a: a.__setitem__("role_kind2", np.full_like(a["role_kind2"], 7)), "role_kind2"),
    (lambda a: a.__setitem__("meta", np.array("not json")), "meta"),
])
def test_bad_ticket_files(tmp_path, tickets, change, fragment):
    path = _corrupt(tmp_path, tickets[0], change)
    with pytest.raises(ValueError, match=fragment):
        load_ticket(path)


def test_pickled_object_array_rejected(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        load_ticket(path)


def test_torch_export_matches_numpy(tickets):
    torch = pytest.importorskip("torch")
    from construct.export import to_torch

    x = np.random.default_rng(1).uniform(-1, 1, (16, 3))
    for ticket in tickets:
        net = to_torch(ticket)
        out = net(torch.as_tensor(x)).detach().numpy()
        np.testing.assert_allclose(out, ticket_forward(ticket, x), rtol=1e-12, atol=1e-12)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "construct", *args], capture_output=True, text=True, timeout=120)


def test_cli_strong_json_and_verify(tmp_path):
    out = tmp_path / "t.npz"
    r = _cli("strong", "--target", "random:3,2", "--density", "0.5", "--eps", "0.05", "--delta", "0.1",
             "--seed", "1", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for key in ("success", "certificate", "sampled_error", "source_params", "ticket_params", "widths", "failures", "seconds",
                "interval"):
        assert key in doc
    iv = doc["interval"]
    assert iv["consistent"] and iv["attacked_error"] <= iv["best_bound"] <= doc["certificate"]
    v = _cli("verify", str(out))
    assert v.returncode == 0 and "verdict: VALID" in v.stdout and "sup error in [" in v.stdout


@pytest.mark.parametrize("args, fragment", [
    (["strong", "--target", "random:3,2", "--density", "1.5", "--eps", "0.1"], "density"),
    (["strong", "--target", "random:3,2", "--eps", "1.0"], "eps"),
    (["weak", "--target", "random:3,2", "--delta", "0"], "delta"),
    (["weak", "--target", "random:3,x"], "target"),
    (["weak", "--target", "nofile.npz"], "no such file"),
    (["strong", "--target", "random:3,2"], "required"),
])
def test_cli_bad_input(tmp_path, args, fragment):
    out = tmp_path / "x.npz"
    r = _cli(*args, "--out", str(out))
    assert r.returncode == 2
    assert fragment in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_verify_bad_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    r = _cli("verify", str(bad))
    assert r.returncode == 2 and "not a valid npz" in r.stderr and "Traceback" not in r.stderr


def test_verify_detects_wrong_stored_certificate(tmp_path, tickets):
    def change(arrays):
        meta = json.loads(str(arrays["meta"][()]))
        meta["certificate"] = meta["certificate"] / 10
        arrays["meta"] = np.array(json.dumps(meta))

    path = _corrupt(tmp_path, tickets[0], change)
    res = verify_ticket(path)
    assert not res.certificate_matches and not res.valid
    r = _cli("verify", str(path))
    assert r.returncode == 1 and "INVALID" in r.stdout


def test_ticket_bench_small_target_drawn_source():
    """The bench's ticket part on a small target: the drawn (never materialized) source gives a successful 2L
    ticket whose numbers match a direct build with the same seed, and the report formats."""
    from construct.bench_ticket import format_bench, run_ticket_bench

    bench = run_ticket_bench(0.3, widths=(6, 5, 2), weight_eps=0.05)
    ticket, rep = build_strong_ticket(random_target((6, 5, 2), 0), 0.5, 0.1, 0, weight_eps=0.05,
                                      construction="2l", width_multiplier=0.3, samples=256)
    assert bench.success and bench.failures == 0 == rep.failures
    assert bench.source_params == rep.source_params < bench.theory_source_params
    assert bench.certificate == rep.certificate and bench.sampled_error == rep.sampled_error <= rep.certificate
    assert not any(layer.materialized for layer in ticket.source.layers)
    iv = bench.interval
    assert iv["consistent"] and iv["attacked_error"] <= iv["best_bound"] <= bench.certificate
    text = format_bench({"solver": None, "ticket": bench.to_dict()})
    assert "6-5-2" in text and "0 failed" in text and "sup error in [" in text
