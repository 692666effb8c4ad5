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


# ------------------------------------------------------------------ damaged or hostile CIFAR batch files

def _tiny_cifar10(tmp_path, train_data=None, train_labels=None):
    """A CIFAR-10 directory of tiny batches; ``data_batch_1`` gets ``train_data``/``train_labels`` if given."""
    rng = np.random.default_rng(2)
    for i in range(1, 6):
        _write_batch(tmp_path / f"data_batch_{i}", 3, "labels", rng, False)
    _write_batch(tmp_path / "test_batch", 2, "labels", rng, False)
    batch = {"data": rng.integers(0, 256, size=(3, 3072), dtype=np.uint8), "labels": [1, 2, 3]}
    if train_data is not None:
        batch["data"] = train_data
    if train_labels is not None:
        batch["labels"] = train_labels
    with open(tmp_path / "data_batch_1", "wb") as fh:
        pickle.dump(batch, fh, protocol=2)
    return tmp_path


@pytest.mark.parametrize("data, labels, needle", [
    (None, [1, 99, 3], "holds label 99: allowed labels 0..9"),
    (None, [1, -1, 3], "holds label -1"),
    (None, [1, 2], "2 labels for 3 images"),
    (None, [1.0, 2.0, 3.0], "allowed a list of integer labels"),
    (None, ["a", "b", "c"], "allowed a list of integer labels"),
    (None, [1, 2, 2**70], "holds an integer beyond 64 bits"),
    (None, np.array([0.5, 1.0, 2.0]), "has dtype float64"),
    (np.full((3, 3072), 1e9), None, "'data' has dtype float64: allowed a uint8 array"),
    (np.zeros((3, 3072), dtype=np.float32), None, "'data' has dtype float32"),
    (np.zeros((3, 3072), dtype=np.int64), None, "'data' has dtype int64"),
    (np.zeros((3, 1000), dtype=np.uint8), None, "'data' has shape (3, 1000)"),
    (np.zeros((3, 3, 32, 32), dtype=np.uint8), None, "'data' has shape (3, 3, 32, 32)"),
    ([[0] * 3072] * 3, None, "'data' has type list"),
])
def test_damaged_cifar_batch_is_refused_naming_file_and_problem(tmp_path, data, labels, needle):
    directory = _tiny_cifar10(tmp_path, data, labels)
    with pytest.raises(ValueError) as info:
        cifar_task(directory, 10)
    message = str(info.value)
    assert needle in message and "data_batch_1" in message and "\n" not in message


def test_cifar100_labels_beyond_100_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    _write_batch(tmp_path / "test", 2, "fine_labels", rng, False)
    with open(tmp_path / "train", "wb") as fh:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "fine_labels": [5, 100]}, fh, protocol=2)
    with pytest.raises(ValueError, match="holds label 100: allowed labels 0..99"):
        cifar_task(tmp_path, 100)


class _HugeArray:
    """Pickles as ``numpy.ndarray((n,))``: an uninitialized array the file does not hold."""

    def __init__(self, n):
        self.n = n

    def __reduce__(self):
        return (np.ndarray, ((self.n,), np.uint8))


def test_array_larger_than_its_file_is_refused(tmp_path):
    with open(tmp_path / "bomb", "wb") as fh:
        pickle.dump({"data": _HugeArray(2**33)}, fh, protocol=2)  # 8 GiB declared, never touched
    with pytest.raises(ValueError, match="bomb"):
        restricted_load(tmp_path / "bomb")


def test_cifar_memory_guard_refuses_before_reading(tmp_path):
    from experiments.infra.data import cifar_memory_estimate
    from theory.memory import MemoryBudgetError

    directory = _tiny_cifar10(tmp_path)
    sizes = [(directory / n).stat().st_size for n in
             ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]]
    assert cifar_memory_estimate(directory, 10) == 6 * sum(sizes) + 2 * max(sizes)
    with pytest.raises(MemoryBudgetError, match="reading CIFAR-10 .* raise --max-memory"):
        cifar_task(directory, 10, max_memory=1000)
    assert cifar_task(directory, 10, max_memory=10**8).x_train.shape == (15, 3, 32, 32)


def test_fifo_batch_file_is_refused_without_blocking(tmp_path):
    directory = _tiny_cifar10(tmp_path)
    (directory / "test_batch").unlink()
    os.mkfifo(directory / "test_batch")
    with pytest.raises(ValueError, match="test_batch: not a regular file"):
        cifar_task(directory, 10)
    with pytest.raises(ValueError, match="not a regular file"):
        restricted_load(directory / "test_batch")
