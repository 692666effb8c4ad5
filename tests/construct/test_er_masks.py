"""construct.er_masks: ER masks with the §7 schemes on any model, persistent through training and checkpoints."""
import copy
import io

import pytest
import torch
from scipy.stats import binomtest
from torch import nn
from torch.nn import functional as F

import construct
from construct.masking import ERMask, er_masks, mask_table


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PlainResNet18(nn.Module):
    """A plain CIFAR ResNet-18 laid out like the released code (docs/math.md §7): 21 weight layers, a 1×1-conv classifier."""

    def __init__(self, width=64, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        blocks, cin = [], width
        for i, w in enumerate((width, 2 * width, 4 * width, 8 * width)):
            for stride in ((1, 1) if i == 0 else (2, 1)):
                blocks.append(Block(cin, w, stride))
                cin = w
        self.layers = nn.Sequential(*blocks)
        self.classifier = nn.Conv2d(cin, classes, 1)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.classifier(F.adaptive_avg_pool2d(out, 1)).flatten(1)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))


def _masks(model):
    return [m.parametrizations.weight[0].mask.clone() for m in model.modules()
            if hasattr(m, "parametrizations") and "weight" in m.parametrizations]


@pytest.mark.parametrize("scheme", ["uniform", "erk", "balanced", "pyramidal"])
def test_densities_exact_budget_and_bernoulli_per_layer(scheme):
    model = _mlp()
    table = er_masks(model, density=0.1, scheme=scheme, seed=3)
    assert len(table.rows) == 3 and table.total == 64 * 300 + 300 * 100 + 100 * 10
    assert table.planned_global_density == pytest.approx(0.1, rel=1e-12)
    for row, mask in zip(table.rows, _masks(model)):
        assert row.kept == int(mask.sum()) and row.realized_density == row.kept / row.numel
        if row.planned_density < 1:
            assert binomtest(row.kept, row.numel, row.planned_density).pvalue > 1e-3, row
    assert binomtest(table.kept, table.total, 0.1).pvalue > 1e-3 or scheme != "uniform"
    assert "global (label 0.1)" in str(table)


def test_resnet18_compat_reproduces_the_released_undershoot():
    """docs/math.md §7: N = 11,164,352 over 21 layers; released balanced/ERK at label 0.5 realize 0.266 / 0.389."""
    base = PlainResNet18()
    for scheme, want in (("balanced", 0.266), ("erk", 0.389)):
        table = er_masks(copy.deepcopy(base), 0.5, scheme, seed=0, compat="pruning")
        assert table.total == 11_164_352 and len(table.rows) == 21
        assert round(table.planned_global_density, 3) == want
        assert abs(table.realized_global_density - table.planned_global_density) < 1e-3
    exact = er_masks(copy.deepcopy(base), 0.5, "balanced", seed=0)
    assert exact.planned_global_density == pytest.approx(0.5, rel=1e-9)
    dst = er_masks(base, 0.5, "erk", seed=0, compat="dst")
    assert dst.planned_global_density == pytest.approx(0.5, rel=1e-9)


def test_same_seed_same_masks_other_seed_other_masks():
    a, b, c = _mlp(), _mlp(), _mlp()
    er_masks(a, 0.2, "erk", seed=5)
    er_masks(b, 0.2, "erk", seed=5)
    er_masks(c, 0.2, "erk", seed=6)
    assert all(torch.equal(x, y) for x, y in zip(_masks(a), _masks(b)))
    assert not all(torch.equal(x, y) for x, y in zip(_masks(a), _masks(c)))


@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
                                      lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3)])
def test_masks_persist_through_training_and_checkpoints(make_opt):
    model = _mlp()
    er_masks(model, 0.1, "balanced", seed=1)
    masks = _masks(model)
    opt = make_opt(model.parameters())
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 1, 8, 8, generator=gen), torch.randint(0, 10, (32,), generator=gen)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for lin, mask in zip(linears, masks):
        assert bool((lin.weight[~mask] == 0).all())
        assert bool((lin.weight[mask] != 0).any())
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    fresh = _mlp()
    er_masks(fresh, 0.1, "balanced", seed=99)  # other masks, overwritten by the checkpoint's
    fresh.load_state_dict(ckpt["model"])
    assert all(torch.equal(a, b) for a, b in zip(_masks(fresh), masks))
    assert torch.equal(fresh(x), model(x))
    opt2 = make_opt(fresh.parameters())
    opt2.load_state_dict(ckpt["opt"])
    for _ in range(3):
        opt2.zero_grad()
        F.cross_entropy(fresh(x), y).backward()
        opt2.step()
    for lin, mask in zip([m for m in fresh.modules() if isinstance(m, nn.Linear)], masks):
        assert bool((lin.weight[~mask] == 0).all())
    table = mask_table(fresh)
    assert table.kept == sum(int(m.sum()) for m in masks)


def test_exclude_and_refusals():
    model = nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(8 * 4, 16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.raises(ValueError, match=r"layer '0' \(Embedding\) has weights er_masks does not know.*exclude=\('0',\)"):
        er_masks(model, 0.5, "uniform")
    table = er_masks(model, 0.5, "uniform", exclude=("0",))
    assert [r.name for r in table.rows] == ["2", "4"]
    with pytest.raises(ValueError, match="already has a parametrization"):
        er_masks(model, 0.5, "uniform", exclude=(nn.Embedding,))
    with pytest.raises(ValueError, match="exclude entry 'nope' matches no module"):
        er_masks(_mlp(), 0.5, "uniform", exclude=("nope",))
    blocks = PlainResNet18(width=2)
    table = er_masks(blocks, 0.5, "erk", exclude=("layers.3", "classifier"))
    assert not any(r.name.startswith("layers.3") or r.name == "classifier" for r in table.rows)
    assert len(table.rows) == 21 - 2 - 1  # block layers.3: conv1, conv2 (identity shortcut)
    with pytest.raises(ValueError, match="ConvTranspose2d"):
        er_masks(nn.Sequential(nn.ConvTranspose2d(2, 2, 3)), 0.5, "uniform")
    for kwargs, match in [({"density": 0.0}, "density=0.0"), ({"scheme": "snip"}, "scheme='snip'"),
                          ({"compat": True}, "compat=True"), ({"compat": "dst", "scheme": "balanced"}, "compat='dst'"),
                          ({"seed": -1}, "seed=-1"), ({"exclude": (3,)}, "exclude entry 3")]:
        with pytest.raises(ValueError, match=match):
            er_masks(_mlp(), **{"density": 0.5, "scheme": "uniform", **kwargs})
    with pytest.raises(ValueError, match="no Linear or Conv"):
        er_masks(nn.Sequential(nn.ReLU()), 0.5, "uniform")


def test_namespace_and_masked_model_reads_as_target():
    assert construct.er_masks is er_masks
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).double()
    er_masks(model, 0.5, "uniform", seed=2)
    target = construct.load_target(model)
    assert isinstance(model[0].parametrizations.weight[0], ERMask)
    assert torch.equal(torch.as_tensor(target.weights[0]) != 0, model[0].weight != 0)


def test_experiments_density_table_on_a_plain_model_is_a_one_line_refusal():
    from experiments.models import density_table

    with pytest.raises(ValueError, match="no masked layers.*construct.er_masks"):
        density_table(_mlp(), "balanced")
