"""Convolutional and residual targets (docs/math.md §9): a small CNN and a two-block ResNet trained on scikit-learn's
digits, and the CIFAR ResNet-18 of :mod:`experiments.models` with seeded random weights.

These are the targets the conv/ResNet constructions are checked on: the constructions read them with
:func:`construct.modules.read_module` (``torch.fx`` → :class:`construct.architecture.Architecture`), folding
eval-mode BatchNorm, and the claim to test is that a ticket's digits *test* accuracy equals its target's.

Everything is seeded and nothing is cached or written: every model is rebuilt (and retrained) from its seed.

- :func:`digits_data` — a fixed, seeded split of sklearn's ``load_digits()`` (1,797 grey 8×8 images, 10 classes):
  1,347 train / 450 test, images float64 (N, 1, 8, 8) scaled to [0, 1] (pixel / 16), labels int64.
- :func:`digits_cnn` — conv3×3 1→8 (pad 1), ReLU, conv3×3 8→16 (stride 2, pad 1), ReLU, flatten, linear 256→10.
- :func:`digits_resnet` — stem conv3×3 1→8 + BatchNorm + ReLU, BasicBlock 8→8 (identity shortcut), BasicBlock
  8→16 stride 2 (1×1 conv + BatchNorm shortcut), global average pool, flatten, linear 16→10.
- :func:`resnet18_target` — :class:`experiments.models.ResNet18` (input 3×32×32) with density-1 masks, Kaiming-normal
  weights drawn by :func:`experiments.models.build_model` from the seed, and (``bn="calibrated"``) BatchNorm running
  statistics measured on seeded uniform [0, 1] inputs.
- :func:`conv_module` — the named specs ``digits-cnn``, ``digits-resnet``, ``resnet18[:width=W][,classes=C][,bn=B]``.

Training (digits models): float32, minibatch Adam (batch 64, lr 0.01 with cosine decay to 0; 15 epochs for the
CNN, 20 for the ResNet), weights drawn from a ``torch.Generator`` seeded with ``seed`` (Kaiming normal N(0, 2/fan_in),
biases 0), batch order from a second generator; BatchNorm in train mode while
training and in eval mode (running statistics) at the end. It runs on one torch thread (restored afterwards), so the
same seed gives bit-identical weights on the same machine and torch build whatever the caller's thread setting.
The trained digits models are returned in float64 (an exact conversion of the float32 weights) and in eval mode,
so ``module(torch.from_numpy(x))`` takes the float64 images directly and matches
:func:`construct.architecture.architecture_forward` to rounding. ``resnet18_target`` stays float32.

torch is imported inside the functions only, so ``import construct`` needs no torch.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import numpy as np

from theory.validation import check_choice, check_positive_int

__all__ = ["DigitsData", "digits_data", "digits_cnn", "digits_resnet", "resnet18_target", "accuracy",
           "module_logits", "module_test_accuracy", "conv_module", "CONV_SPECS", "DIGITS_SHAPE", "CIFAR_SHAPE"]

DIGITS_SHAPE = (1, 8, 8)
CIFAR_SHAPE = (3, 32, 32)
CONV_SPECS = ("digits-cnn", "digits-resnet", "resnet18[:width=W,classes=C,bn=calibrated|default]")
_SPLIT_TAG = 0xD1C5  # SeedSequence tag of the train/test split
_INIT_TAG = 0xC0DE  # of the weight initialization
_ORDER_TAG = 0xBA7C  # of the batch order
_CALIB_TAG = 0xB2C4  # of the BatchNorm calibration inputs
N_TEST = 450


@dataclass(frozen=True)
class DigitsData:
    """A train/test split of sklearn's digits: images (N, 1, 8, 8) float64 in [0, 1], labels (N,) int64.

    The arrays are read-only; ``seed`` is the split's seed."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    seed: int

    def describe(self) -> str:
        return f"sklearn digits split seed {self.seed}: {len(self.y_train)} train / {len(self.y_test)} test images"


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def digits_data(seed: int = 0) -> DigitsData:
    """The digits split of seed ``seed``: a permutation of the 1,797 images drawn from
    ``np.random.default_rng(SeedSequence([seed, tag]))``; its first 450 are the test set, the other 1,347 the
    training set. Images are pixel/16 ∈ [0, 1], shape (N, 1, 8, 8), float64; labels int64."""
    from sklearn.datasets import load_digits

    seed = check_positive_int(seed, "seed", 0)
    raw = load_digits()
    x = (np.asarray(raw.images, dtype=np.float64) / 16.0)[:, None, :, :]
    y = np.asarray(raw.target, dtype=np.int64)
    perm = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_TAG])).permutation(len(y))
    test, train = perm[:N_TEST], perm[N_TEST:]
    return DigitsData(_readonly(x[train]), _readonly(y[train]), _readonly(x[test]), _readonly(y[test]), seed)


# ------------------------------------------------------------------------------------------------ building
def _generator(seed: int, tag: int):
    import torch

    word = np.random.SeedSequence([seed, tag]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(word[0]) | (int(word[1]) << 32)) & ((1 << 63) - 1))


def _kaiming_(weight, generator) -> None:
    """weight ← N(0, 2/fan_in) drawn from ``generator`` (float64 draw, cast)."""
    import torch

    fan_in = int(math.prod(weight.shape[1:]))
    draw = torch.randn(tuple(weight.shape), generator=generator, dtype=torch.float64) * math.sqrt(2.0 / fan_in)
    with torch.no_grad():
        weight.copy_(draw.to(weight.dtype))


def _conv_factory():
    """A conv factory in the signature :class:`experiments.models.BasicBlock` calls: a plain ``nn.Conv2d``
    allocated without touching the global RNG (``skip_init``), weights Kaiming-normal from ``generator``."""
    import torch
    from torch import nn

    def conv(c_in, c_out, kernel_size, *, stride=1, padding=0, bias=False, generator):
        m = torch.nn.utils.skip_init(nn.Conv2d, c_in, c_out, kernel_size, stride=stride, padding=padding, bias=bias)
        _kaiming_(m.weight, generator)
        if m.bias is not None:
            with torch.no_grad():
                m.bias.zero_()
        return m

    return conv


def _linear(n_in, n_out, generator):
    import torch
    from torch import nn

    m = torch.nn.utils.skip_init(nn.Linear, n_in, n_out)
    _kaiming_(m.weight, generator)
    with torch.no_grad():
        m.bias.zero_()
    return m


def _cnn_module(generator):
    from torch import nn

    conv = _conv_factory()
    return nn.Sequential(conv(1, 8, 3, padding=1, bias=True, generator=generator), nn.ReLU(),
                         conv(8, 16, 3, stride=2, padding=1, bias=True, generator=generator), nn.ReLU(),
                         nn.Flatten(), _linear(16 * 4 * 4, 10, generator))


def _resnet_module(generator):
    from torch import nn

    from experiments.models import BasicBlock

    conv = _conv_factory()
    return nn.Sequential(conv(1, 8, 3, padding=1, bias=False, generator=generator), nn.BatchNorm2d(8), nn.ReLU(),
                         BasicBlock(8, 8, 1, batchnorm_affine=True, conv=conv, generator=generator),
                         BasicBlock(8, 16, 2, batchnorm_affine=True, conv=conv, generator=generator),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), _linear(16, 10, generator))


@contextlib.contextmanager
def _one_thread():
    """torch on one intra-op thread inside the block (the caller's setting restored after), so training is
    reproducible whatever the caller's thread count and does not contend on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(module, data: DigitsData, seed: int, epochs: int, batch_size: int, lr: float):
    """Minibatch Adam on the cross-entropy of ``data``'s training split; batch order from a seeded generator."""
    import torch
    from torch.nn import functional as F

    x = torch.from_numpy(np.array(data.x_train, dtype=np.float32))
    y = torch.from_numpy(np.array(data.y_train))
    order = _generator(seed, _ORDER_TAG)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    steps, step = epochs * math.ceil(len(y) / batch_size), 0
    module.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=order)
        for start in range(0, len(y), batch_size):
            idx = perm[start:start + batch_size]
            for group in opt.param_groups:  # cosine decay of the step size to 0
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
            step += 1
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(module(x[idx]), y[idx]).backward()
            opt.step()
    module.eval()
    return module.double()


def _trained(build, seed, data, epochs, batch_size, lr):
    import torch

    seed = check_positive_int(seed, "seed", 0)
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr={lr!r}: allowed a finite number > 0")
    if data is None:
        data = digits_data()
    elif not isinstance(data, DigitsData):
        raise ValueError(f"data is a {type(data).__name__}: allowed a DigitsData (construct.conv_targets.digits_data)")
    with _one_thread(), torch.random.fork_rng(devices=[]):  # nothing here touches the global RNG; fork_rng makes sure
        module = build(_generator(seed, _INIT_TAG))
        return _train(module, data, seed, epochs, batch_size, float(lr))


def digits_cnn(seed: int, data: DigitsData | None = None, *, epochs: int = 15, batch_size: int = 64,
               lr: float = 0.01):
    """The digits CNN (conv3×3 1→8 pad 1, ReLU, conv3×3 8→16 stride 2 pad 1, ReLU, flatten, linear 256→10; a
    docs/math.md §9 conv target) trained on ``data``'s training split (default :func:`digits_data` ``(0)``) from
    ``seed``; returned in eval mode, float64. See the module docstring for the training recipe."""
    return _trained(_cnn_module, seed, data, epochs, batch_size, lr)


def digits_resnet(seed: int, data: DigitsData | None = None, *, epochs: int = 20, batch_size: int = 64,
                  lr: float = 0.01):
    """The digits ResNet (stem conv3×3 1→8 + BatchNorm + ReLU; :class:`experiments.models.BasicBlock` 8→8 stride 1,
    identity shortcut; BasicBlock 8→16 stride 2, 1×1 conv + BatchNorm shortcut; global average pool, flatten,
    linear 16→10; a docs/math.md §9 residual target) trained like :func:`digits_cnn`. BatchNorm is in train mode
    while training, so its running statistics are those of the training data; returned in eval mode, float64."""
    return _trained(_resnet_module, seed, data, epochs, batch_size, lr)


# ------------------------------------------------------------------------------------------------ ResNet-18
BN_MODES = ("calibrated", "default")


def resnet18_target(seed: int, *, width: int = 64, n_classes: int = 10, bn: str = "calibrated",
                    calibration_batches: int = 2, calibration_batch_size: int = 16):
    """The CIFAR ResNet-18 of :mod:`experiments.models` (input 3×32×32) as a target: ``build_model("resnet18",
    scheme="dense", density=1, seed=seed)`` — density-1 masks, Kaiming-normal weights N(0, 2/fan_in), biases 0 —
    in eval mode, float32.

    ``bn="default"`` keeps the fresh BatchNorm (running mean 0, variance 1, γ = 1, β = 0: folding it is nearly
    the identity). ``bn="calibrated"`` resets the running statistics and sets them to the average batch statistics
    of ``calibration_batches`` forward passes in train mode over ``calibration_batch_size`` inputs uniform in
    [0, 1] drawn from the seed (γ, β unchanged), so that the folded conv weights (docs/math.md §9) have realistic
    scales. Nothing is trained."""
    import torch

    from experiments.models import build_model
    from experiments.infra.masked import masked_modules

    seed = check_positive_int(seed, "seed", 0)
    width = check_positive_int(width, "width")
    n_classes = check_positive_int(n_classes, "n_classes", minimum=2)
    bn = check_choice(bn, "bn", BN_MODES)
    calibration_batches = check_positive_int(calibration_batches, "calibration_batches")
    calibration_batch_size = check_positive_int(calibration_batch_size, "calibration_batch_size", minimum=2)
    with torch.random.fork_rng(devices=[]):  # nn.Conv2d.__init__ draws placeholders from the global RNG: restore it
        module = build_model("resnet18", CIFAR_SHAPE, n_classes, density=1.0, scheme="dense", seed=seed,
                             width=width).module
    assert all(bool(m.mask.all()) for m in masked_modules(module))  # density 1: every mask entry kept
    if bn == "calibrated":
        gen = _generator(seed, _CALIB_TAG)
        norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average of the batch statistics
        module.train()
        with torch.no_grad():
            for _ in range(calibration_batches):
                module(torch.rand((calibration_batch_size,) + CIFAR_SHAPE, generator=gen))
        for m, mom in zip(norms, momenta):
            m.momentum = mom
    return module.eval()


# ------------------------------------------------------------------------------------------------ accuracy
def accuracy(logits, labels) -> float:
    """Fraction of rows whose arg-max logit is the label (ties: the first maximal class, as numpy's argmax)."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],) or logits.shape[0] == 0:
        raise ValueError(f"logits of shape {logits.shape} and labels of shape {labels.shape}: allowed (N, classes) "
                         "and (N,) with N ≥ 1")
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def module_logits(module, x: np.ndarray) -> np.ndarray:
    """``module(x)`` in eval mode, no gradients, inputs cast to the module's parameter dtype, as a float64 array."""
    import torch

    dtype = next(module.parameters()).dtype
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.as_tensor(np.array(x), dtype=dtype))
    finally:
        module.train(was_training)
    return out.double().numpy()


def module_test_accuracy(module, data: DigitsData) -> float:
    """The test accuracy of ``module`` on ``data``'s test split (eval mode)."""
    return accuracy(module_logits(module, data.x_test), data.y_test)


# ------------------------------------------------------------------------------------------------ named specs
def _parse_options(spec: str, text: str) -> dict:
    allowed = {"width", "classes", "bn"}
    out = {}
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in allowed or key in out:
            raise ValueError(f"target={spec!r}: option {item!r}: allowed width=W, classes=C, bn=calibrated|default "
                             "(each at most once)")
        out[key] = value
    for key in ("width", "classes"):
        if key in out:
            if not out[key].isdigit():
                raise ValueError(f"target={spec!r}: {key}={out[key]!r}: allowed a positive integer")
            out[key] = int(out[key])
    return out


def conv_module(spec: str, seed: int):
    """``(module, input_shape, description)`` of a named conv target (docs/math.md §9):

    - ``digits-cnn`` / ``digits-resnet``: :func:`digits_cnn` / :func:`digits_resnet` ``(seed)``, trained on the
      training split of :func:`digits_data` ``(0)`` (test on its ``x_test``), input (1, 8, 8), float64;
    - ``resnet18`` or ``resnet18:width=16,classes=10,bn=default``: :func:`resnet18_target`, input (3, 32, 32).

    Anything else: a one-line ValueError listing the allowed specs."""
    if not isinstance(spec, str):
        raise ValueError(f"target={spec!r}: allowed {', '.join(CONV_SPECS)}")
    seed = check_positive_int(seed, "seed", 0)
    name, _, opts = spec.partition(":")
    if name in ("digits-cnn", "digits-resnet") and not opts:
        start = time.perf_counter()
        build = digits_cnn if name == "digits-cnn" else digits_resnet
        module = build(seed)
        data = digits_data()
        acc = module_test_accuracy(module, data)
        what = "CNN conv8-conv16(s2)-linear" if name == "digits-cnn" else "ResNet stem8-block8-block16(s2)-gap-linear"
        return module, DIGITS_SHAPE, (f"{name}: {what} trained from seed {seed} on the {data.describe()}; test "
                                      f"accuracy {acc:.4f}; trained in {time.perf_counter() - start:.1f} s")
    if name == "resnet18":
        from torch import nn

        o = _parse_options(spec, opts)
        width, classes, bn = o.get("width", 64), o.get("classes", 10), o.get("bn", "calibrated")
        module = resnet18_target(seed, width=width, n_classes=classes, bn=bn)
        n_weights = sum(int(m.weight.numel()) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        return module, CIFAR_SHAPE, (f"resnet18 (experiments.models, CIFAR, width {width}, {classes} classes): "
                                     f"{n_weights:,} weights, seeded random (seed {seed}), BatchNorm {bn}")
    raise ValueError(f"target={spec!r}: allowed {', '.join(CONV_SPECS)}")
