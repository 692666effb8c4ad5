"""Weak CNN/ResNet ticket files (construct/conv_weak_io.py): a saved ticket verifies VALID (also one with missing
edges, whose certificate verify recomputes from the entries alone), every tampering of a claim is INVALID with its
reason, every malformed key is a one-line refusal naming it, and the CLI writes and verifies them."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from construct.conv_weak import build_conv_weak_ticket
from construct.conv_weak_io import load_weak_conv_ticket, save_weak_conv_ticket, verify_weak_conv_ticket


def _plain():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 3, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(27, 2)).eval()


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.c2(torch.relu(self.c1(x))) + x)


def _residual():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), _Block(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2, 2)).eval()


@pytest.fixture(scope="module", params=["plain", "residual"])
def saved(request, tmp_path_factory):
    model = _plain() if request.param == "plain" else _residual()
    for seed in range(20):  # a source in which every needed edge is kept (the union bound: most seeds)
        ticket, report = build_conv_weak_ticket(model, (1, 6, 6), 0.4, 0.1, seed, samples=8)
        if report.success:
            break
    assert report.success
    path = tmp_path_factory.mktemp("weak") / f"{request.param}.npz"
    save_weak_conv_ticket(path, ticket)
    return path, ticket, report


def _rewrite(src, dst, **changes):
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(dst, **arrays)
    return dst


def _json_change(path, key, **fields):
    with np.load(path, allow_pickle=False) as data:
        doc = json.loads(str(data[key][()]))
    doc.update(fields)
    return np.array(json.dumps(doc))


def test_saved_ticket_is_valid(saved):
    path, ticket, report = saved
    res = verify_weak_conv_ticket(path, samples=32)
    assert res.valid, res.reasons
    assert res.kept_params == ticket.kept_params and res.certificate == report.certificate == 0.0
    loaded = load_weak_conv_ticket(path)
    assert loaded.lifting_group == report.lifting_group and list(loaded.copies) == list(report.copies)


def test_a_ticket_with_missing_edges_verifies_with_the_builders_certificate(tmp_path):
    for seed in range(10):
        ticket, report = build_conv_weak_ticket(_residual(), (1, 6, 6), 0.5, 0.1, seed, width_multiplier=0.2,
                                                samples=8)
        if report.certificate > 0:
            break
    assert report.certificate > 0, "no seed missed a needed edge"
    save_weak_conv_ticket(tmp_path / "t.npz", ticket)
    res = verify_weak_conv_ticket(tmp_path / "t.npz", samples=64)
    assert res.valid, res.reasons
    assert res.missing_edges > 0
    assert res.certificate == pytest.approx(report.certificate, rel=1e-12)


def test_tampered_claims_are_invalid(saved, tmp_path):
    path, ticket, _ = saved
    with np.load(path, allow_pickle=False) as data:
        w2, r2, c2, a3 = (data["ticket_2_weight"], data["ticket_2_rows"], data["ticket_2_cols"],
                          data["ticket_2_active"])
    cases = {
        "weights": dict(ticket_2_weight=w2 * 1.5),
        "ER masks": dict(source=_json_change(path, "source", seed=987654)),
        "certificate": dict(meta=_json_change(path, "meta", certificate=0.5)),
        "computed": dict(ticket_2_active=a3[1:]),
        "drop": dict(ticket_2_weight=w2[1:], ticket_2_rows=r2[1:], ticket_2_cols=c2[1:]),
    }
    for name, change in cases.items():
        res = verify_weak_conv_ticket(_rewrite(path, tmp_path / f"{name}.npz", **change), samples=8)
        assert not res.valid, name
        if name == "weights":
            assert not res.weights_match
        elif name == "ER masks":
            assert not res.submask
        elif name == "certificate":
            assert not res.certificate_matches and res.submask and res.weights_match
        elif name == "computed":
            assert not res.channels_consistent
        else:  # a dropped entry is a missing needed edge: the stored certificate 0 no longer holds
            assert res.missing_edges >= 1 and not res.certificate_matches


@pytest.mark.parametrize("key,value,needle", [
    ("ticket_2_rows", "int32", "ticket_2_rows has dtype int32"),
    ("ticket_3_weight", None, "missing key ticket_3_weight"),
    ("ticket_2_cols", "shift", "ticket_2_cols has entries outside"),
    ("ticket_1_rows", "reverse", "not strictly increasing"),
    ("source", {"seed": None}, "source seed=None"),
    ("source", {"densities": [2.0]}, "source densities"),
    ("source", {"input_copies": [1, 2, 3]}, "input_copies"),
    ("meta", {"certificate": [1]}, "meta certificate=[1]"),
    ("box", np.array([1.0, 0.0]), "box="),
    ("ticket_2_weight", "nan", "NaN or inf"),
    ("ticket_2_active", "object", "object array"),
])
def test_malformed_files_are_one_line_refusals(saved, tmp_path, key, value, needle):
    path = saved[0]
    with np.load(path, allow_pickle=False) as data:
        arr = data[key] if key in data.files else None
    if isinstance(value, dict):
        new = _json_change(path, key, **value)
    elif isinstance(value, np.ndarray) or value is None:
        new = value
    elif value == "int32":
        new = arr.astype(np.int32)
    elif value == "shift":
        new = arr + 10 ** 9
    elif value == "reverse":
        new = arr[::-1].copy()
    elif value == "nan":
        new = arr.copy()
        new[0] = np.nan
    else:  # "object"
        new = np.array([None, 1], dtype=object)
    bad = tmp_path / "bad.npz"
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    if new is None:
        arrays.pop(key)
    else:
        arrays[key] = new
    np.savez(bad, **arrays)
    with pytest.raises(ValueError) as info:
        verify_weak_conv_ticket(bad, samples=4)
    assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)


FACTORY = """
import torch
from torch import nn

def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(2 * 3 * 3, 3)).eval()
"""


def test_cli_writes_and_verifies_a_weak_cnn_ticket(tmp_path):
    out = tmp_path / "w.npz"
    (tmp_path / "net.py").write_text(FACTORY)
    run = [sys.executable, "-m", "construct"]
    proc = subprocess.run(run + ["weak", "--target", f"{tmp_path / 'net.py'}:make", "--input-shape", "1,6,6",
                                 "--density", "0.5", "--seed", "2", "--samples", "8", "--progress", "none",
                                 "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"written to {out}" in proc.stdout
    ver = subprocess.run(run + ["verify", str(out), "--samples", "16", "--json"], capture_output=True, text=True,
                         timeout=300)
    res = json.loads(ver.stdout)
    assert ver.returncode == (0 if res["valid"] else 1) and res["construction"] == "weak-conv"
    # a refused --out leaves nothing and costs no build
    bad = subprocess.run(run + ["weak", "--target", "digits-cnn", "--density", "0.5", "--out",
                                str(tmp_path / "missing" / "w.npz"), "--progress", "none"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    assert "missing" in bad.stderr and not (tmp_path / "missing").exists()
