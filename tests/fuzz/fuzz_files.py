"""Hostile input files for the fuzz cases: built on demand in a directory, named by the placeholders
``{file:NAME}`` of :mod:`cases`.

Pickle canaries: :class:`Payload` unpickles as ``open(canary, "w")``, which creates the canary file. It is planted
in an npz object array, in an npz ``meta`` member, in a torch file and in a CIFAR batch; the contract asserts the canary never
appears (every loader refuses pickles: ``allow_pickle=False``, ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np


class Payload:
    """Unpickling this object calls ``open(path, "w")``: the canary file appears iff a pickle was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _npy_header(shape, dtype="<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _header_only_npz(path: Path, members: dict) -> None:
    """An npz whose members hold only a header declaring ``members[name]`` = shape (no data)."""
    with zipfile.ZipFile(path, "w") as z:
        for name, shape in members.items():
            z.writestr(f"{name}.npy", _npy_header(shape))


def valid_ticket(path: Path) -> None:
    """A small valid weak ticket (built with the library, as ``construct weak --out`` would)."""
    from construct.targets import random_target
    from construct.ticket import save_ticket
    from construct.weak import build_weak_ticket

    ticket, _ = build_weak_ticket(random_target((3, 2), 0), 0.5, 0.1, 0, samples=16)
    save_ticket(path, ticket)


def _ticket_with_meta(src: Path, path: Path, meta) -> None:
    """Copy of the ticket ``src`` with its ``meta`` member replaced by the array ``meta`` (saved with pickle when
    it is an object array — that is the attack)."""
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["meta"] = meta
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _zip_member(path: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(name, data)


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


BUILDERS = {
    # shapes JSON for `theory densities --shapes`
    "shapes_good.json": lambda p, c: p.write_text("[[300, 784], [10, 300]]"),
    "shapes_deep.json": lambda p, c: p.write_text(_deep_json(100_000)),
    "shapes_deep_shape.json": lambda p, c: p.write_text("[" + _deep_json(500) + "]"),
    "shapes_bigint.json": lambda p, c: p.write_text("[[" + "9" * 400 + ", 3]]"),
    "shapes_bigint_digits.json": lambda p, c: p.write_text("[[" + "9" * 5000 + ", 3]]"),
    "shapes_overflow_product.json": lambda p, c: p.write_text("[[4294967296, 4294967296], [3, 3]]"),
    "shapes_float.json": lambda p, c: p.write_text("[[1e400, 3]]"),
    "shapes_nan.json": lambda p, c: p.write_text("[[NaN, 3]]"),
    "shapes_dict.json": lambda p, c: p.write_text('{"a": [3, 4]}'),
    "shapes_dict_shape.json": lambda p, c: p.write_text('[{"a": 3, "b": 4}]'),
    "shapes_bool.json": lambda p, c: p.write_text("[[true, 4]]"),
    "shapes_nonutf8.json": lambda p, c: p.write_bytes(b"[[3, 4]]\xff\xfe"),
    "shapes_empty_file.json": lambda p, c: p.write_text(""),
    # target npz files
    "target_huge_header.npz": lambda p, c: _header_only_npz(p, {"target_W1": (100_000, 100_000), "target_b1": (100_000,)}),
    "target_gap.npz": lambda p, c: np.savez(p, target_W1=np.ones((3, 4)), target_b1=np.zeros(3),
                                            target_W3=np.ones((2, 3)), target_b3=np.zeros(2)),
    "target_no_bias.npz": lambda p, c: np.savez(p, target_W1=np.ones((3, 4))),
    "target_nan.npz": lambda p, c: np.savez(p, target_W1=np.full((3, 4), np.nan), target_b1=np.zeros(3)),
    "target_huge_values.npz": lambda p, c: np.savez(p, target_W1=np.full((3, 4), 1e300), target_b1=np.zeros(3),
                                                    target_W2=np.full((2, 3), 1e300), target_b2=np.zeros(2)),
    "target_bad_shape.npz": lambda p, c: np.savez(p, target_W1=np.ones((3, 4, 2)), target_b1=np.zeros(3)),
    "target_mismatch.npz": lambda p, c: np.savez(p, target_W1=np.ones((3, 4)), target_b1=np.zeros(3),
                                                 target_W2=np.ones((2, 5)), target_b2=np.zeros(2)),
    "target_strings.npz": lambda p, c: np.savez(p, target_W1=np.array([["a", "b"]]), target_b1=np.zeros(1)),
    "target_pickle.npz": lambda p, c: np.savez(p, target_W1=np.array([[Payload(c), 1.0]], dtype=object),
                                               target_b1=np.zeros(1)),
    "target_bad_header.npz": lambda p, c: _zip_member(p, "target_W1.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': !!!}  \n"),
    "target_not_zip.npz": lambda p, c: p.write_bytes(b"this is not a zip archive"),
    "target_empty.npz": lambda p, c: p.write_bytes(b""),
    "target_pickle.pt": lambda p, c: __import__("torch").save({"0.weight": Payload(c)}, p),
    "plain_file": lambda p, c: p.write_text("a plain file, not a directory\n"),
    # ticket files for `construct verify`
    "ticket.npz": lambda p, c: valid_ticket(p),
    "ticket_huge_header.npz": lambda p, c: _header_only_npz(
        p, {"meta": (), "target_W1": (100_000, 100_000), "target_b1": (100_000,)}),
}


def _ticket_pickle_meta(p: Path, canary: Path) -> None:
    src = p.parent / "ticket.npz"
    if not src.exists():
        valid_ticket(src)
    _ticket_with_meta(src, p, np.array([Payload(canary)], dtype=object))


BUILDERS["ticket_pickle_meta.npz"] = _ticket_pickle_meta


def _truncated_ticket(p: Path, canary: Path) -> None:
    src = p.parent / "ticket.npz"
    if not src.exists():
        valid_ticket(src)
    data = src.read_bytes()
    p.write_bytes(data[: len(data) // 2])


BUILDERS["ticket_truncated.npz"] = _truncated_ticket


def build(directory: Path, name: str, canary: Path, builders=None) -> Path:
    """Create ``directory/name`` with its builder (special names: ``fifo*`` make a FIFO)."""
    path = directory / name
    if path.exists() or path.is_symlink():
        return path
    if name.startswith("fifo"):
        os.mkfifo(path)
        return path
    table = dict(BUILDERS)
    table.update(builders or {})
    table[name](path, canary)
    return path


def shapes_text(value) -> str:
    return json.dumps(value)


def _torch_file(make_state):
    def write(path, canary):
        import torch

        torch.save(make_state(torch), path)
    return write


def _ticket_with_meta_change(change):
    """A copy of the valid ticket with ``change(meta) -> meta`` applied to its JSON meta (tampered tickets)."""
    def write(path, canary):
        src = path.parent / "ticket.npz"
        if not src.exists():
            valid_ticket(src)
        with np.load(src, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays["meta"][()]))
        text = change(meta)
        arrays["meta"] = np.array(text if isinstance(text, str) else json.dumps(text))
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    return write


def _set(key, value):
    def change(meta):
        meta[key] = value
        return meta
    return change


def _drop(key):
    def change(meta):
        meta.pop(key, None)
        return meta
    return change


def _results_file(lines):
    def write(path, canary):
        path.mkdir(parents=True, exist_ok=True)
        (path / "e1.jsonl").write_text("".join(line + "\n" for line in lines))
    return write


def _cifar_dir(labels, pixels_dtype=np.uint8, pixel_value=0):
    def write(path, canary):
        import pickle

        path.mkdir(parents=True, exist_ok=True)
        n = len(labels)
        data = np.full((n, 3072), pixel_value, dtype=pixels_dtype)
        for name in ["data_batch_%d" % i for i in range(1, 6)] + ["test_batch"]:
            with open(path / name, "wb") as fh:
                pickle.dump({b"data": data, b"labels": list(labels)}, fh)
    return write


def _cifar_pickle_payload(path, canary):
    import pickle

    path.mkdir(parents=True, exist_ok=True)
    for name in ["data_batch_%d" % i for i in range(1, 6)] + ["test_batch"]:
        with open(path / name, "wb") as fh:
            pickle.dump({b"data": Payload(canary), b"labels": [0]}, fh)


BUILDERS.update({
    # state_dict entries (13.3) and the complex tensor of 15.5
    "sd_int_keys.pt": _torch_file(lambda t: {0: t.ones(2, 3)}),
    "sd_nested.pt": _torch_file(lambda t: {"0": {"weight": t.ones(2, 3)}}),
    "sd_non_tensor.pt": _torch_file(lambda t: {"0.weight": 3.0, "0.bias": t.zeros(2)}),
    "sd_list.pt": _torch_file(lambda t: {"0.weight": [[1.0, 2.0]], "0.bias": [0.0]}),
    "sd_string_bias.pt": _torch_file(lambda t: {"0.weight": t.ones(2, 3), "0.bias": "zero"}),
    "sd_sparse.pt": _torch_file(lambda t: {"0.weight": t.ones(2, 3).to_sparse(), "0.bias": t.zeros(2)}),
    "sd_meta.pt": _torch_file(lambda t: {"0.weight": t.empty(2, 3, device="meta"), "0.bias": t.zeros(2)}),
    "sd_complex.pt": _torch_file(lambda t: {"0.weight": t.ones(2, 3, dtype=t.complex64), "0.bias": t.zeros(2)}),
    "sd_nan.pt": _torch_file(lambda t: {"0.weight": t.full((2, 3), float("nan")), "0.bias": t.zeros(2)}),
    # tampered ticket meta (15.4)
    "t_cert_inf_string.npz": _ticket_with_meta_change(_set("certificate", "inf")),
    "t_cert_inf.npz": _ticket_with_meta_change(lambda m: json.dumps({**m, "certificate": float("inf")})),
    "t_cert_above_eps.npz": _ticket_with_meta_change(lambda m: {**m, "eps": 1e-12, "certificate": 0.5}),
    "t_no_cert.npz": _ticket_with_meta_change(_drop("certificate")),
    "t_null_cert.npz": _ticket_with_meta_change(_set("certificate", None)),
    "t_cert_list.npz": _ticket_with_meta_change(_set("certificate", [1])),
    "t_eps_dict.npz": _ticket_with_meta_change(_set("eps", {})),
    "t_densities_2.npz": _ticket_with_meta_change(_set("source_densities", [2.0, 2.0])),
    "t_law_cauchy.npz": _ticket_with_meta_change(_set("weight_law", "cauchy")),
    "t_box_three.npz": _ticket_with_meta_change(_set("box", [-1, 0, 1])),
    "t_box_nan.npz": _ticket_with_meta_change(lambda m: json.dumps({**m, "box": [float("nan"), 1]})),
    "t_box_5.npz": _ticket_with_meta_change(_set("box", 5)),
    "t_seed_null.npz": _ticket_with_meta_change(_set("source_seed", None)),
    "t_seed_1e400.npz": _ticket_with_meta_change(lambda m: json.dumps(m)[:-1] + ', "source_seed": 1e400}'),
    "t_meta_deep.npz": _ticket_with_meta_change(lambda m: "[" * 100_000 + "]" * 100_000),
    # results files (13.6) and CIFAR batch directories (13.8, 15.5)
    "res_no_key": _results_file(['{"experiment": "e1", "config": {}, "metrics": {"x": 1}}']),
    "res_list_key": _results_file(['{"experiment": "e1", "key": [1, 2], "config": {}, "metrics": {"x": 1}}']),
    "res_nan_metric": _results_file(['{"experiment": "e1", "key": "abc", "config": {}, "metrics": {"x": NaN}}']),
    "res_no_metrics": _results_file(['{"experiment": "e1", "key": "abc", "config": {}}']),
    "cifar_labels_99": _cifar_dir([99, 1, 2]),
    "cifar_float_pixels": _cifar_dir([1, 2, 3], np.float64, 1e9),
    "cifar_pickle_payload": _cifar_pickle_payload,
})
