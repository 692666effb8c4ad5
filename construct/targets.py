"""Target ReLU networks f_T (docs/math.md §1): seeded random targets, loading from npz, nn.Modules, state_dicts with an
architecture description (see :mod:`construct.modules`), validation.

A target of depth L has weights W_t of shape (n_t, n_{t−1}) and biases b_t of shape (n_t,), t = 1..L; it computes
h^{(t)} = W_t x^{(t−1)} + b_t, x^{(t)} = ReLU(h^{(t)}) for t < L and a linear output layer.
"""
from __future__ import annotations

import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from theory.input_files import check_input_file, npz_bytes, npz_headers
from theory.memory import check_memory
from theory.validation import check_density, check_positive_int, check_positive_real, parse_int_list

__all__ = ["Target", "make_target", "random_target", "load_target", "digits_target", "parse_box", "target_forward",
           "check_target_range", "MAX_ACTIVATION"]

#: Largest |activation| of a target over the input box that the certificate and error computations accept: the
#: float64 range (~1.8e308) with a margin of 1e8 for the sums of the certificate and the error of a ticket.
MAX_ACTIVATION = 1e300


@dataclass(frozen=True)
class Target:
    """A validated target network: ``weights[t-1]`` = W_t (n_t × n_{t−1}), ``biases[t-1]`` = b_t (float64)."""

    weights: tuple
    biases: tuple
    name: str = "target"

    @property
    def widths(self) -> tuple[int, ...]:
        return (int(self.weights[0].shape[1]),) + tuple(int(w.shape[0]) for w in self.weights)

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def nonzeros(self) -> tuple[int, ...]:
        """m_t = number of non-zero entries of W_t (docs/math.md §1)."""
        return tuple(int(np.count_nonzero(w)) for w in self.weights)

    @property
    def has_biases(self) -> bool:
        return any(bool(np.any(b != 0)) for b in self.biases)

    @property
    def weight_bound(self) -> float:
        """max(|W_t[i, j]|, |b_t[i]|) over all layers."""
        return float(max(max(np.max(np.abs(w), initial=0.0), np.max(np.abs(b), initial=0.0))
                         for w, b in zip(self.weights, self.biases)))

    def to_dict(self) -> dict:
        return {"name": self.name, "widths": list(self.widths), "nonzeros": list(self.nonzeros),
                "params": int(sum(w.size for w in self.weights)), "has_biases": self.has_biases,
                "weight_bound": self.weight_bound}


def make_target(weights, biases=None, name: str = "target") -> Target:
    """Validate arrays into a :class:`Target`: finite float values, 2-D weights, consecutive shapes match."""
    weights = [np.asarray(w) for w in weights]
    if len(weights) == 0:
        raise ValueError("target has no layers: allowed at least one weight matrix")
    if biases is None:
        biases = [np.zeros(w.shape[0]) for w in weights]
    biases = [np.asarray(b) for b in biases]
    if len(biases) != len(weights):
        raise ValueError(f"target has {len(weights)} weight matrices but {len(biases)} bias vectors: allowed equal counts")
    out_w, out_b = [], []
    for t, (w, b) in enumerate(zip(weights, biases), start=1):
        if w.ndim != 2:
            raise ValueError(f"target_W{t} has shape {w.shape}: allowed a 2-D (n_out, n_in) array")
        if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)) or w.dtype == bool:
            raise ValueError(f"target_W{t} has dtype {w.dtype}: allowed a float array")
        if not (np.issubdtype(b.dtype, np.floating) or np.issubdtype(b.dtype, np.integer)) or b.dtype == bool:
            raise ValueError(f"target_b{t} has dtype {b.dtype}: allowed a float array")
        if b.shape != (w.shape[0],):
            raise ValueError(f"target_b{t} has shape {b.shape}: allowed ({w.shape[0]},) to match target_W{t}")
        if w.size == 0:
            raise ValueError(f"target_W{t} has shape {w.shape}: allowed non-empty layers")
        if t > 1 and w.shape[1] != weights[t - 2].shape[0]:
            raise ValueError(f"target_W{t} has {w.shape[1]} inputs but layer {t - 1} has {weights[t - 2].shape[0]} outputs: "
                             "allowed matching consecutive shapes")
        if not np.all(np.isfinite(w)):
            raise ValueError(f"target_W{t} contains NaN or inf: allowed finite weights")
        if not np.all(np.isfinite(b)):
            raise ValueError(f"target_b{t} contains NaN or inf: allowed finite biases")
        out_w.append(np.ascontiguousarray(w, dtype=np.float64))
        out_b.append(np.ascontiguousarray(b, dtype=np.float64))
    return Target(tuple(out_w), tuple(out_b), name)


def random_target(widths, seed: int, *, scale: float = 1.0, biases: bool = True, target_density: float = 1.0,
                  name: str | None = None, max_memory: int | None = None) -> Target:
    """Seeded random target: W_t[i, j] ~ U[−1, 1]·scale/√n_{t−1}, b_t[i] likewise (or 0 without biases).

    With ``target_density`` < 1 every weight is kept independently with that probability (a sparse target).
    Before drawing, the memory it needs (8 bytes per weight, and two temporaries of the largest layer) is checked
    against ``max_memory`` (:func:`theory.memory.check_memory`; default budget 80 % of the available memory).
    """
    widths = tuple(widths)
    scale = check_positive_real(scale, "target_scale")
    target_density = check_density(target_density, "target_density")
    sizes = [a * b for a, b in zip(widths[:-1], widths[1:])]
    check_memory(8.0 * (sum(sizes) + sum(widths) + 2 * max(sizes, default=0)),
                 f"a random target of widths {list(widths)} ({float(sum(sizes)):.3g} weights at 8 bytes)", max_memory)
    rng = np.random.default_rng(np.random.SeedSequence([check_positive_int(seed, "seed", 0), 0x7A26]))
    ws, bs = [], []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        bound = scale / np.sqrt(n_in)
        w = rng.uniform(-bound, bound, size=(n_out, n_in))
        if target_density < 1.0:
            w = w * (rng.random((n_out, n_in)) < target_density)
        b = rng.uniform(-bound, bound, size=n_out) if biases else np.zeros(n_out)
        ws.append(w)
        bs.append(b)
    return make_target(ws, bs, name or "random:" + ",".join(map(str, widths)))


def target_forward(target: Target, x: np.ndarray) -> np.ndarray:
    """f_T(x) for a batch x of shape (N, n_0) (docs/math.md §1)."""
    h = np.asarray(x, dtype=np.float64)
    for t, (w, b) in enumerate(zip(target.weights, target.biases), start=1):
        h = h @ w.T + b
        if t < target.depth:
            h = np.maximum(h, 0.0)
    return h


def parse_box(text) -> tuple[float, float]:
    """Parse ``"a,b"`` (or a pair) into the input box [a, b] with finite a < b."""
    try:
        if isinstance(text, str):
            a, b = (float(v) for v in text.split(","))
        else:
            a, b = (float(v) for v in text)
    except (ValueError, TypeError):
        raise ValueError(f"box={text!r} is malformed: allowed two comma-separated numbers a,b with a < b") from None
    if not (np.isfinite(a) and np.isfinite(b) and a < b and np.isfinite(b - a)):
        raise ValueError(f"box={text!r} is out of range: allowed finite a < b whose difference b - a is finite")
    return (a, b)


def check_target_range(target: Target, box) -> float:
    """Refuse (one-line ``ValueError``) a target whose activations over the box [a, b]^{n_0} could exceed
    :data:`MAX_ACTIVATION` in magnitude (interval bounds of docs/math.md §6; e.g. ``--target-scale 1e308``): beyond it
    the forward passes and the certificate overflow to inf and the errors become nan. Returns the largest bound."""
    from construct.certificate import interval_bounds  # certificate imports this module

    with np.errstate(over="ignore", invalid="ignore"):
        bounds = interval_bounds(target, box)
        largest = max(float(np.max(np.maximum(np.abs(lo), np.abs(hi)), initial=0.0)) for lo, hi in bounds)
    if not largest <= MAX_ACTIVATION:  # also catches nan
        raise ValueError(f"target {target.name!r}: its activations over the box [{box[0]:g}, {box[1]:g}] reach "
                         f"{largest:.3g}: allowed at most {MAX_ACTIVATION:g} (float64 range with a margin for the "
                         "error sums); scale the target or the box down")
    return largest


def _target_npz_keys(path: Path, headers: dict) -> list[str]:
    """The keys target_W1, target_b1, …, target_WL, target_bL of a target npz, checked to be complete: every
    target_W{t}/target_b{t} key present must belong to layers 1..L with no gap (target_W3 without target_W2
    would silently drop layer 3)."""
    layers = {}
    for key in headers:
        for kind in ("W", "b"):
            prefix = f"target_{kind}"
            if key.startswith(prefix) and key[len(prefix):].isdigit():
                layers.setdefault(int(key[len(prefix):]), set()).add(kind)
    if 1 not in layers or "W" not in layers[1]:
        raise ValueError(f"{path}: no key target_W1: not a valid target or ticket file")
    depth = max(layers)
    for t in range(1, depth + 1):
        for kind in ("W", "b"):
            if kind not in layers.get(t, set()):
                raise ValueError(f"{path}: missing key target_{kind}{t} (the file has layers up to {depth}): a target "
                                 "file needs target_W{t} and target_b{t} for every t = 1..L")
    return [f"target_{kind}{t}" for t in range(1, depth + 1) for kind in ("W", "b")]


def _load_npz_target(path: Path, max_memory: int | None = None) -> Target:
    headers = npz_headers(path, "target")
    keys = _target_npz_keys(path, headers)
    for key in keys:
        if headers[key].dtype.hasobject:
            raise ValueError(f"{path}: {key} has dtype {headers[key].dtype} (Python objects; loading would unpickle): "
                             "allowed a float array")
    # the arrays as stored plus their float64 copies
    stored = npz_bytes(headers, keys)
    as_float = 8 * sum(headers[k].entries for k in keys)
    check_memory(stored + as_float, f"loading the target {str(path)!r} ({sum(headers[k].entries for k in keys):.3g} "
                 "entries declared in its npz headers)", max_memory)
    with np.load(path, allow_pickle=False) as data:
        ws = [data[k] for k in keys[0::2]]
        bs = [data[k] for k in keys[1::2]]
    return make_target(ws, bs, name=path.name)


def _is_torch_module(obj) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and not isinstance(obj, Target)


def load_target(spec, *, seed: int = 0, scale: float = 1.0, biases: bool = True, target_density: float = 1.0,
                weights=None, architecture=None, max_memory: int | None = None) -> Target:
    """Target from a spec (docs/math.md §1):

    - a :class:`Target` (returned as is) or a :class:`construct.architecture.Architecture` (its MLP);
    - an ``nn.Module``, read in execution order by tracing it with ``torch.fx`` (:func:`construct.modules.read_module`);
    - a ``state_dict`` (a mapping of names to tensors) *with* ``architecture=`` (a JSON description as dict/list or
      a path to a ``.json`` file; see :mod:`construct.modules`) — a state_dict alone is refused: names do not say
      the order of the layers;
    - ``random:784,300,10``, ``digits`` (a 64-16-10 MLP trained on sklearn digits), a ``.npz`` file (keys
      target_W{t}, target_b{t});
    - ``arch.json`` with ``weights="sd.pt"`` (a state_dict file, ``torch.load(weights_only=True)``);
    - ``path/to/model.py:factory`` (the file is imported and ``factory()`` called), optionally with
      ``weights="sd.pt"`` loaded into the module.

    Only ReLU MLPs ([Flatten] Linear (ReLU Linear)*) become targets; other layers are refused in one line naming
    the layer. Every tensor is validated (real, dense, finite float of the layer's shape). Files must be regular
    files (a FIFO or device is refused before it is opened); what a random or digits target or an npz file (from its
    headers) will allocate is checked against ``max_memory`` before allocating."""
    if isinstance(spec, Target):
        return spec
    if weights is not None and not (isinstance(spec, (str, Path)) and
                                    (str(spec).endswith(".json") or ".py:" in str(spec))):
        raise ValueError(f"weights={str(weights)!r} is only used with an architecture .json or a model.py:factory "
                         "target: allowed no weights for this target")
    if architecture is not None and not _is_state_dict(spec):
        raise ValueError("architecture= is only used with a state_dict: allowed no architecture for this target")
    from construct.architecture import Architecture

    if isinstance(spec, Architecture):
        return spec.to_target()
    if _is_torch_module(spec):
        from construct.modules import read_module

        return read_module(spec).to_target()
    if _is_state_dict(spec):
        if architecture is None:
            raise ValueError("a state_dict alone does not say the order of its layers: allowed a state_dict with "
                             "architecture= (a JSON description), or the nn.Module itself")
        from construct.modules import _read_regular_json, architecture_from_state_dict

        desc = _read_regular_json(Path(architecture)) if isinstance(architecture, (str, Path)) else architecture
        return architecture_from_state_dict(spec, desc).to_target()
    if not isinstance(spec, (str, Path)):
        raise ValueError(f"target is a {type(spec).__name__}: allowed a Target, an nn.Module, a state_dict with "
                         "architecture=, random:W0,W1,..., digits, a .npz, an architecture .json with weights, "
                         "or model.py:factory")
    spec = str(spec)
    if spec.startswith("random:"):
        widths = parse_int_list(spec[len("random:"):], "target")
        if len(widths) < 2:
            raise ValueError(f"target={spec!r} has one width: allowed at least two (input and output)")
        return random_target(widths, seed, scale=scale, biases=biases, target_density=target_density,
                             max_memory=max_memory)
    if spec == "digits" or spec.startswith("digits:"):
        hidden = parse_int_list(spec.split(":", 1)[1], "target") if ":" in spec else (16,)
        return digits_target(seed, hidden=hidden, max_memory=max_memory)
    if ".py:" in spec:
        from construct.modules import load_module_factory, read_module

        return read_module(load_module_factory(spec, weights), name=spec.rpartition(":")[2]).to_target(name=spec)
    if not Path(spec).exists() and not Path(spec).is_symlink():
        raise FileNotFoundError(f"target={spec!r}: no such file (allowed random:W0,W1,..., digits, a .npz, an "
                                "architecture .json with --weights, or model.py:factory)")
    path = check_input_file(spec, "target")
    if path.suffix == ".npz":
        try:
            return _load_npz_target(path, max_memory)
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: not a valid npz file ({exc})") from None
    if path.suffix == ".json":
        if weights is None:
            raise ValueError(f"target={spec!r} is an architecture description: allowed with weights (--weights sd.pt)")
        from construct.modules import architecture_from_json

        return architecture_from_json(path, weights).to_target(name=path.name)
    if path.suffix in {".pt", ".pth"}:
        raise ValueError(f"target={spec!r} is a state_dict alone, which does not say the order of its layers: "
                         f"allowed --target arch.json --weights {spec} (a JSON architecture description) or "
                         f"--target model.py:factory --weights {spec}")
    raise ValueError(f"target={spec!r} has an unknown extension: allowed .npz, .json (with --weights), "
                     "model.py:factory, random:..., digits")


def digits_target(seed: int, hidden=(16,), *, steps: int = 300, weight_decay: float = 1e-3,
                  max_memory: int | None = None) -> Target:
    """A small MLP 64-hidden-10 trained (seeded, numpy full-batch Adam) on sklearn's digits, inputs scaled to [0, 1].

    Used as the 'trained' target of the check battery; inputs live in [0, 1] ⊂ the default box [−1, 1].
    Training holds five arrays per parameter (weights, two Adam moments, gradient, update) and three activation
    arrays per layer over the 1797 images; that estimate is checked against ``max_memory`` first.
    """
    widths = (64,) + tuple(check_positive_int(h, f"hidden[{i}]") for i, h in enumerate(hidden)) + (10,)
    params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    check_memory(8.0 * (5 * params + 3 * 1797 * sum(widths)),
                 f"training the digits target of widths {list(widths)} ({float(params):.3g} parameters)", max_memory)
    from sklearn.datasets import load_digits
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # tiny matrices: BLAS threads only contend on a shared machine
        return _train_digits(load_digits(), seed, tuple(hidden), steps, weight_decay)


def _train_digits(data, seed, hidden, steps, weight_decay) -> Target:
    x = data.data / 16.0
    y = data.target
    widths = (64,) + tuple(hidden) + (10,)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xD161]))
    params = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        params.append(rng.normal(0, np.sqrt(2.0 / n_in), size=(n_out, n_in)))
        params.append(np.zeros(n_out))
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    onehot = np.eye(10)[y]
    lr, b1, b2 = 0.01, 0.9, 0.999
    for step in range(1, steps + 1):
        acts = [x]
        h = x
        for k in range(len(widths) - 1):
            h = h @ params[2 * k].T + params[2 * k + 1]
            if k < len(widths) - 2:
                h = np.maximum(h, 0.0)
            acts.append(h)
        z = h - h.max(axis=1, keepdims=True)
        prob = np.exp(z)
        prob /= prob.sum(axis=1, keepdims=True)
        grad = (prob - onehot) / len(x)
        grads = [None] * len(params)
        for k in range(len(widths) - 2, -1, -1):
            grads[2 * k] = grad.T @ acts[k] + weight_decay * params[2 * k]
            grads[2 * k + 1] = grad.sum(axis=0)
            if k > 0:
                grad = (grad @ params[2 * k]) * (acts[k] > 0)
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            params[i] = params[i] - lr * (m[i] / (1 - b1 ** step)) / (np.sqrt(v[i] / (1 - b2 ** step)) + 1e-8)
    return make_target(params[0::2], params[1::2], name="digits:" + ",".join(map(str, widths)))
