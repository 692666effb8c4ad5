"""``python -m construct`` with convolutional and residual targets (docs/math.md §9): the named digits targets, a
user's model.py:factory with --input-shape, the ResNet-18 benchmark at a small width, and one-line refusals."""
import json
import subprocess
import sys

import pytest

FACTORY = '''
import torch
from torch import nn

def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(2 * 3 * 3, 3)).eval()
'''


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "construct", *args], capture_output=True, text=True, timeout=timeout)


def test_strong_digits_cnn_keeps_the_eps_promise_and_the_test_accuracy():
    proc = _run("strong", "--target", "digits-cnn", "--eps", "0.05", "--density", "0.5", "--box", "0,1",
                "--no-bounds", "--progress", "none", "--samples", "64", "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["success"] and rep["failures"] == 0
    assert rep["sampled_error"] <= rep["grouped_certificate"] <= 0.05 <= rep["certificate"] or \
        rep["grouped_certificate"] <= rep["certificate"] <= 0.05
    extra = rep["extra"]
    assert extra["digits test accuracy (ticket)"] == extra["digits test accuracy (target)"]


def test_model_factory_with_input_shape(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(FACTORY)
    spec = f"{path}:make"
    missing = _run("strong", "--target", spec, "--weight-eps", "0.05", "--no-bounds")
    assert missing.returncode == 2 and "--input-shape" in missing.stderr and len(missing.stderr.splitlines()) == 1
    proc = _run("strong", "--target", spec, "--input-shape", "1,6,6", "--weight-eps", "0.05", "--density", "0.5",
                "--no-bounds", "--progress", "none", "--samples", "32")
    assert proc.returncode == 0, proc.stderr
    assert "BatchNorm folded (eval mode): 1 -> 0" in proc.stdout and "success True" in proc.stdout


@pytest.mark.parametrize("args,needle", [
    (("strong", "--target", "digits-resnet", "--weight-eps", "0.01", "--construction", "l+1"), "--construction 2l"),
    (("strong", "--target", "random:3,3,2", "--eps", "0.1", "--input-shape", "1,2,2"), "input-shape"),
    (("strong", "--target", "digits-cnn", "--weight-eps", "0.01", "--input-shape", "3,32,32"), "input_shape"),
    (("strong", "--target", "resnet17", "--weight-eps", "0.01"), "resnet17"),
])
def test_refusals_are_one_line_exit_2(args, needle):
    proc = _run(*args, "--progress", "none")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_strong_l_plus_1_of_a_model_factory_and_its_refusals(tmp_path):
    """``--construction l+1`` builds a plain CNN's L+1 ticket (docs/math.md §9); ``--out`` is refused in one line."""
    path = tmp_path / "model.py"
    path.write_text(FACTORY)
    spec = f"{path}:make"
    base = ("strong", "--construction", "l+1", "--target", spec, "--input-shape", "1,6,6", "--density", "0.5",
            "--progress", "none", "--samples", "16", "--no-bounds")
    proc = _run(*base, "--weight-eps", "0.05", "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["construction"] == "l+1" and rep["success"] and rep["attacked_error"] is None
    assert rep["sampled_error"] <= rep["certificate"]
    assert rep["target"]["batchnorm_folded"] == [{"batchnorm": "1", "into": "0"}]
    for extra, needle in ((("--weight-eps", "0.05", "--out", str(tmp_path / "t.npz")), "cannot be saved yet"),
                          (("--weight-eps", "0.05", "--density-scheme", "erk"), "density-scheme"),
                          (("--eps", "1e-8"), "the exact solver searches at most 40")):
        bad = _run(*base, *extra)
        assert bad.returncode == 2 and needle in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_bench_resnet18_at_a_small_width():
    proc = _run("bench", "--target", "resnet18:width=4", "--samples", "4", "--progress", "none", "--json")
    assert proc.returncode == 0, proc.stderr
    b = json.loads(proc.stdout)
    assert b["failures"] == 0 and b["weighted_layers"] == 21 and b["batchnorm_folded"] == 20
    assert b["sampled_error"] <= b["certificate"] and b["attacked_error"] <= b["certificate"]


def test_architecture_json_with_weights_is_a_conv_target(tmp_path):
    """A state_dict with an explicit JSON description (construct.modules) of a conv net becomes a ConvTarget (with
    --input-shape), equal to the module in eval mode."""
    import numpy as np
    import torch
    from torch import nn

    from construct.conv_strong import load_conv_target

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(18, 3)).eval()
    names = {"0": "c", "1": "bn", "5": "fc"}
    torch.save({names[k.split(".")[0]] + "." + k.split(".", 1)[1]: v for k, v in m.state_dict().items()},
               tmp_path / "sd.pt")
    (tmp_path / "arch.json").write_text(json.dumps({"layers": [
        {"kind": "conv2d", "name": "c", "stride": 1, "padding": 1}, {"kind": "batchnorm2d", "name": "bn", "eps": 1e-5},
        {"kind": "relu"}, {"kind": "maxpool2d", "kernel_size": 2, "stride": 2, "padding": 0}, {"kind": "flatten"},
        {"kind": "linear", "name": "fc"}]}))
    with pytest.raises(ValueError, match="--input-shape"):
        load_conv_target(str(tmp_path / "arch.json"), weights=str(tmp_path / "sd.pt"))
    t = load_conv_target(str(tmp_path / "arch.json"), weights=str(tmp_path / "sd.pt"), input_shape=(1, 6, 6))
    x = np.random.default_rng(1).uniform(-1, 1, size=(5, 1, 6, 6))
    with torch.no_grad():
        ref = m.double()(torch.tensor(x)).numpy()
    assert t.folded == (("bn", "c"),) and np.allclose(t.forward(x), ref, rtol=1e-10, atol=1e-12)


def test_weak_digits_resnet_is_exact_and_keeps_every_prediction():
    proc = _run("weak", "--target", "digits-resnet", "--density", "0.5", "--box", "0,1", "--seed", "1",
                "--progress", "none", "--samples", "32")
    assert proc.returncode == 0, proc.stderr
    assert "success True (0 of" in proc.stdout and "certificate 0.000e+00" in proc.stdout
    lines = dict(line.strip().split(": ", 1) for line in proc.stdout.splitlines() if "digits test accuracy" in line
                 or "predictions that differ" in line)
    assert lines["digits test accuracy (ticket)"] == lines["digits test accuracy (target)"]
    assert lines["test predictions that differ"] == "0"


def test_the_digits_targets_default_to_their_pixel_box():
    proc = _run("weak", "--target", "digits-cnn", "--density", "0.5", "--seed", "1", "--samples", "4", "--progress",
                "none", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["target"]["box"] == [0.0, 1.0]
    given = _run("weak", "--target", "digits-cnn", "--density", "0.5", "--seed", "1", "--samples", "4", "--progress",
                 "none", "--json", "--box=-1,1")
    assert json.loads(given.stdout)["target"]["box"] == [-1.0, 1.0]
