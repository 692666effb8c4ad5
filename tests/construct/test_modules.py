"""Modules in: nn.Module / model.py:factory / state_dict + JSON architecture → targets, read in execution order."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from construct import build_weak_ticket, load_target, target_forward
from construct.architecture import architecture_forward
from construct.modules import architecture_from_state_dict, check_state_dict, read_module


class Named(nn.Module):
    """Layers named so that sorting their names gives the wrong order (hidden < input < output)."""

    def __init__(self):
        super().__init__()
        self.input = nn.Linear(5, 7)
        self.hidden = nn.Linear(7, 6)
        self.output = nn.Linear(6, 3)

    def forward(self, x):
        return self.output(F.relu(self.hidden(torch.relu(self.input(x)))))


def _named():
    torch.manual_seed(0)
    return Named().double()


NAMED_ARCH = {"layers": [{"kind": "linear", "name": "input"}, {"kind": "relu"}, {"kind": "linear", "name": "hidden"},
                         {"kind": "relu"}, {"kind": "linear", "name": "output"}]}


def _x(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape)


def test_module_read_in_execution_order_not_by_name():
    net = _named()
    t = load_target(net)
    assert t.widths == (5, 7, 6, 3)
    x = _x((16, 5))
    np.testing.assert_allclose(target_forward(t, x), net(torch.as_tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-12)


def test_sequential_with_flatten_dropout_and_float32():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 2)).eval()
    t = load_target(net)
    assert t.widths == (12, 8, 2)
    x = _x((4, 3, 4), 1)
    want = net(torch.as_tensor(x, dtype=torch.float32)).detach().double().numpy()
    np.testing.assert_allclose(target_forward(t, x.reshape(4, -1)), want, rtol=1e-5, atol=1e-5)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1, stride=2)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut = nn.Conv2d(2, 4, 1, stride=2)
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        h = self.relu(self.bn(self.c1(x)))
        h = self.relu(self.c2(h) + self.shortcut(x))
        h = F.avg_pool2d(F.max_pool2d(h, 2, padding=1), 1)
        return self.fc(h.view(h.size(0), -1))


def test_conv_residual_graph_read_and_evaluated_like_the_module():
    torch.manual_seed(2)
    net = Residual().double().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2.0)
    arch = read_module(net)
    kinds = [r.kind for r in arch.layers]
    assert kinds == ["conv2d", "batchnorm2d", "relu", "conv2d", "conv2d", "add", "relu", "maxpool2d", "avgpool2d",
                     "flatten", "linear"]
    add = arch.layers[kinds.index("add")]
    assert add.inputs == ("c2", "shortcut")
    assert arch.layers[0].attrs == {"stride": (2, 2), "padding": (1, 1)}
    x = _x((3, 2, 8, 8), 3)
    np.testing.assert_allclose(architecture_forward(arch, x), net(torch.as_tensor(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match=r"layer 'c1' \(conv2d\) is not supported by the constructions yet.*Linear\+ReLU"):
        load_target(net)


def test_experiments_resnet18_is_read_with_its_masks():
    from experiments.models import build_model

    built = build_model("resnet18", (3, 8, 8), 10, density=0.5, seed=0, width=2)
    net = built.module.double().eval()
    arch = read_module(net)
    assert sum(r.kind == "add" for r in arch.layers) == 8
    assert sum(r.kind == "conv2d" for r in arch.layers) == 21
    x = _x((2, 3, 8, 8), 4)
    np.testing.assert_allclose(architecture_forward(arch, x), net(torch.as_tensor(x)).detach().numpy(),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("net, match", [
    (nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)), r"layer '1' \(GELU\) is not supported"),
    (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), r"layer '1' \(Tanh\) is not supported"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2)), r"layer '0' \(Conv2d.*dilation"),
    (nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), r"layer '0' \(Conv2d with groups=2"),
    (nn.Sequential(nn.Linear(3, 4), nn.ReLU()), r"layer '1' \(relu\) ends the network"),
    (nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), r"layer '1' \(linear\) right after a Linear"),
    (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2)), r"layer '2' \(flatten\)"),
    (nn.Sequential(nn.Linear(3, 4), nn.MultiheadAttention(4, 1)), r"MultiheadAttention"),
])
def test_unsupported_layers_refused_naming_the_layer(net, match):
    with pytest.raises(ValueError, match=match):
        load_target(net)


def test_functional_activation_refused_naming_it():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    with pytest.raises(ValueError, match=r"layer 'tanh' \(function tanh\) is not supported"):
        load_target(M())

    class Shift(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.a(x).add(1.0).relu())

    with pytest.raises(ValueError, match=r"layer 'add' \(method .add\) is not supported"):
        load_target(Shift())

    class Plus(Shift):
        def forward(self, x):
            return self.b(torch.relu(self.a(x) + 1.0))

    with pytest.raises(ValueError, match=r"layer 'add' \(add of .*\) is not supported: allowed the sum of two"):
        load_target(Plus())


def test_state_dict_needs_an_architecture_and_then_follows_it(tmp_path):
    net = _named()
    sd = net.state_dict()
    with pytest.raises(ValueError, match="state_dict alone"):
        load_target(sd)
    torch.save(sd, tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="state_dict alone.*arch.json --weights"):
        load_target(str(tmp_path / "sd.pt"))
    t = load_target(sd, architecture=NAMED_ARCH)
    x = _x((8, 5), 5)
    np.testing.assert_allclose(target_forward(t, x), net(torch.as_tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-12)
    (tmp_path / "arch.json").write_text(json.dumps(NAMED_ARCH))
    t2 = load_target(str(tmp_path / "arch.json"), weights=str(tmp_path / "sd.pt"))
    assert all(np.array_equal(a, b) for a, b in zip(t.weights, t2.weights))
    # a description that leaves a weight unused, or names a missing key, is refused
    short = {"layers": NAMED_ARCH["layers"][:3]}
    with pytest.raises(ValueError, match=r"key 'output.weight' is not used"):
        load_target(sd, architecture=short)
    with pytest.raises(ValueError, match="missing key 'nope.weight'"):
        load_target(sd, architecture={"layers": [{"kind": "linear", "name": "nope"}]})


def _bad_states():
    w = torch.randn(4, 3)
    b = torch.randn(4)
    base = {"fc.weight": w, "fc.bias": b}
    sparse = w.to_sparse()
    return [
        ({1: w, "fc.bias": b}, r"key 1 is a int: allowed string keys"),
        ({"fc.weight": {"x": w}, "fc.bias": b}, r"state_dict\['fc.weight'\] is a nested dict"),
        ({"fc.weight": w.tolist(), "fc.bias": b}, r"state_dict\['fc.weight'\] is a nested list"),
        ({**base, "fc.bias": "0.1"}, r"state_dict\['fc.bias'\] is a str"),
        ({**base, "fc.weight": sparse}, r"state_dict\['fc.weight'\] has layout torch.sparse_coo"),
        ({**base, "fc.weight": torch.empty(4, 3, device="meta")}, r"state_dict\['fc.weight'\] is a meta tensor"),
        ({**base, "fc.weight": torch.complex(w, w)}, r"state_dict\['fc.weight'\] is complex"),
        ({**base, "fc.bias": torch.tensor([1.0, float("nan"), 0.0, 0.0])}, r"fc.bias contains NaN or inf"),
        ({**base, "fc.weight": torch.randn(4, 3, 1, 1)}, r"fc.weight has shape \(4, 3, 1, 1\): allowed a 2-D"),
        ({**base, "fc.weight": torch.ones(4, 3, dtype=torch.int64)}, r"fc.weight has dtype torch.int64"),
        ({**base, "fc.bias": torch.randn(5)}, r"fc.bias has shape \(5,\): allowed \(4,\)"),
    ]


@pytest.mark.parametrize("state, match", _bad_states())
def test_every_state_dict_entry_validated_naming_the_key(state, match):
    with pytest.raises(ValueError, match=match):
        architecture_from_state_dict(state, {"layers": [{"kind": "linear", "name": "fc"}]})


def test_complex_parameter_of_a_module_refused():
    net = nn.Linear(3, 2)
    net.weight = nn.Parameter(torch.complex(torch.randn(2, 3), torch.randn(2, 3)))
    with pytest.raises(ValueError, match=r"'weight'\] is complex"):
        load_target(net)
    assert list(check_state_dict({"a": torch.zeros(2)})) == ["a"]


def test_entry_points_take_a_module():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    ticket, report = build_weak_ticket(net, 0.5, 0.1, 1, samples=64)
    assert report.success and report.target["widths"] == [3, 4, 2]
    np.testing.assert_array_equal(ticket.target.weights[0], net[0].weight.detach().numpy())


MODEL_PY = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.input = nn.Linear(5, 7)
        self.hidden = nn.Linear(7, 6)
        self.output = nn.Linear(6, 3)

    def forward(self, x):
        return self.output(torch.relu(self.hidden(torch.relu(self.input(x)))))


def make():
    return Net()


def gelu():
    return nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2))
"""


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "construct", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def test_cli_module_file_weights_and_refusals(tmp_path, capsys):
    from construct.__main__ import main
    from theory.cli import run_main

    (tmp_path / "model.py").write_text(MODEL_PY)
    torch.manual_seed(3)
    sd = Named().state_dict()
    torch.save(sd, tmp_path / "sd.pt")
    (tmp_path / "arch.json").write_text(json.dumps(NAMED_ARCH))
    t = load_target(f"{tmp_path}/model.py:make", weights=str(tmp_path / "sd.pt"))
    np.testing.assert_array_equal(t.weights[0], sd["input.weight"].double().numpy())
    r = _cli("weak", "--target", f"{tmp_path}/model.py:make", "--weights", str(tmp_path / "sd.pt"), "--density", "0.5",
             "--samples", "16", "--json")  # one real subprocess: the file is imported by the command line
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["target"]["widths"] == [5, 7, 6, 3]
    capsys.readouterr()
    assert run_main(main, ["weak", "--target", str(tmp_path / "arch.json"), "--weights", str(tmp_path / "sd.pt"),
                           "--density", "0.5", "--samples", "16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target"]["widths"] == [5, 7, 6, 3]
    for args, match in [(("--target", str(tmp_path / "sd.pt")), "state_dict alone"),
                        (("--target", f"{tmp_path}/model.py:gelu"), "GELU"),
                        (("--target", str(tmp_path / "arch.json")), "allowed with weights"),
                        (("--target", "random:3,2", "--weights", str(tmp_path / "sd.pt")), "weights=")]:
        assert run_main(main, ["weak", *args, "--density", "0.5"]) == 2, args
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and match in err, err
