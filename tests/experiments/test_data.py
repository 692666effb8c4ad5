"""Data loaders: shapes, labels, determinism, the affine teacher's box property, safe CIFAR reading."""
import os
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from experiments.infra.data import (affine_teacher_task, cifar_task, digits_task, mnist5k_task, relu_teacher_task,
                              restricted_load, seeded_split)


@given(d=st.integers(1, 64), seed=st.integers(0, 1000))
@settings(max_examples=25)
def test_affine_teacher_is_affine_on_the_box(d, seed):
    task = affine_teacher_task(d, seed, n_train=64, n_test=16)
    t = task.teacher
    assert np.all(t.weight != 0)
    assert t.bias >= np.sum(np.abs(t.weight)) * 1.0 - 1e-12
    # at every corner of the box the pre-activation is ≥ 0, hence f_T is affine on the box
    worst = -np.sign(t.weight)  # the corner minimising wᵀx
    assert worst @ t.weight + t.bias >= -1e-12
    assert np.allclose(task.y_train, task.x_train @ t.weight + t.bias)
    assert task.x_train.min() >= -1 and task.x_train.max() <= 1
    again = affine_teacher_task(d, seed, n_train=64, n_test=16)
    assert np.array_equal(again.x_train, task.x_train) and np.array_equal(again.y_test, task.y_test)


def test_teacher_tasks_depend_on_seed_and_shapes():
    a, b = affine_teacher_task(8, 0, 32, 16), affine_teacher_task(8, 1, 32, 16)
    assert a.x_train.shape == (32, 8) and a.y_test.shape == (16,)
    assert not np.array_equal(a.teacher.weight, b.teacher.weight)
    r = relu_teacher_task(8, 4, 0, 32, 16)
    assert r.kind == "regression" and r.x_train.shape == (32, 8) and np.all(np.isfinite(r.y_train))


@given(n=st.integers(2, 500), frac=st.floats(0.01, 0.99), seed=st.integers(0, 100))
@settings(max_examples=40)
def test_seeded_split_partitions(n, frac, seed):
    train, test = seeded_split(n, frac, seed)
    assert len(set(train) & set(test)) == 0 and len(train) + len(test) == n
    assert np.array_equal(seeded_split(n, frac, seed)[1], test)


def test_digits_and_mnist5k():
    d = digits_task(0)
    assert d.x_train.shape[1] == 64 and len(d.x_train) + len(d.x_test) == 1797
    assert d.x_train.min() >= 0 and d.x_train.max() <= 1 and set(np.unique(d.y_train)) == set(range(10))
    assert np.array_equal(digits_task(0).y_test, d.y_test) and not np.array_equal(digits_task(1).y_test, d.y_test)
    m = mnist5k_task(0)
    assert m.x_train.shape == (4000, 784) and m.x_test.shape == (1000, 784)
    assert m.x_train.max() <= 1 and set(np.unique(m.y_test)) == set(range(10)) and m.n_classes == 10


def _write_batch(path, n, label_key, rng, byte_keys):
    batch = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
             label_key: [int(v) for v in rng.integers(0, 10, size=n)], "batch_label": "tiny"}
    if byte_keys:
        batch = {k.encode(): v for k, v in batch.items()}
    with open(path, "wb") as fh:
        pickle.dump(batch, fh, protocol=2)
    return batch


@pytest.mark.parametrize("byte_keys", [False, True])
def test_cifar10_tiny_files(tmp_path, byte_keys):
    rng = np.random.default_rng(0)
    written = [_write_batch(tmp_path / f"data_batch_{i}", 4, "labels", rng, byte_keys) for i in range(1, 6)]
    test = _write_batch(tmp_path / "test_batch", 3, "labels", rng, byte_keys)
    task = cifar_task(tmp_path, 10)
    assert task.x_train.shape == (20, 3, 32, 32) and task.x_test.shape == (3, 3, 32, 32)
    key = b"data" if byte_keys else "data"
    first = written[0][key][0].reshape(3, 32, 32).astype(np.float32) / 255
    assert np.allclose(task.x_train[0], first)
    assert list(task.y_test) == list(test[b"labels" if byte_keys else "labels"])


def test_cifar100_tiny_files(tmp_path):
    rng = np.random.default_rng(1)
    _write_batch(tmp_path / "train", 5, "fine_labels", rng, False)
    _write_batch(tmp_path / "test", 2, "fine_labels", rng, False)
    task = cifar_task(tmp_path, 100)
    assert task.x_train.shape == (5, 3, 32, 32) and task.n_classes == 100


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_cifar_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil", "wb") as fh:
        pickle.dump({"data": _Evil(marker)}, fh, protocol=2)
    with pytest.raises(ValueError, match="refusing to load global"):
        restricted_load(tmp_path / "evil")
    assert not marker.exists()


def test_cifar_directory_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cifar_task(tmp_path / "nope")
    _write_batch(tmp_path / "data_batch_1", 2, "labels", np.random.default_rng(0), False)
    with pytest.raises(FileNotFoundError, match="data_batch_2"):
        cifar_task(tmp_path)
    (tmp_path / "junk").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="junk"):
        restricted_load(tmp_path / "junk")
