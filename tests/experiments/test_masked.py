"""Mask invariants of experiments.infra.masked (docs/math.md §1: ER masks are i.i.d. Bernoulli(density))."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import stats

from experiments.infra.masked import (MaskedConv2d, MaskedLinear, as_mask, attach_mask_enforcement, enforce_masks_,
                                er_mask, init_std)
from theory.testing import assert_binomial


def test_er_mask_is_seeded_bool_and_bernoulli():
    a = er_mask((300, 200), 0.05, torch.Generator().manual_seed(7))
    b = er_mask((300, 200), 0.05, torch.Generator().manual_seed(7))
    c = er_mask((300, 200), 0.05, torch.Generator().manual_seed(8))
    assert a.dtype == torch.bool and a.shape == (300, 200)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # i.i.d. Bernoulli(0.05): the count of ones is Bin(60000, 0.05); also rows independent of columns
    assert_binomial(int(a.sum()), a.numel(), 0.05, alpha=1e-3)
    assert_binomial(int(a[:, :100].sum()), 30000, 0.05, alpha=1e-3)


@given(density=st.floats(1e-3, 1.0), rows=st.integers(1, 20), cols=st.integers(1, 20))
@settings(max_examples=30)
def test_er_mask_extremes(density, rows, cols):
    m = er_mask((rows, cols), density, torch.Generator().manual_seed(0))
    assert m.shape == (rows, cols)
    if density == 1.0:
        assert bool(m.all())


def test_er_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="density"):
        er_mask((3, 3), 0.0, torch.Generator())
    with pytest.raises(ValueError, match="density"):
        er_mask((3, 3), 1.5, torch.Generator())
    with pytest.raises(ValueError, match="generator"):
        er_mask((3, 3), 0.5, 0)


def test_as_mask_refuses_non_binary():
    assert as_mask(torch.tensor([0.0, 1.0])).dtype == torch.bool
    with pytest.raises(ValueError, match="0.5"):
        as_mask(torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="only 0/1"):
        as_mask(torch.tensor([2, 1]))


def _outside(module):
    return module.weight.detach()[~module.mask]


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-3),
    lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, weight_decay=1e-3),
    lambda ps: torch.optim.AdamW(ps, lr=1e-2),
])
def test_weights_outside_mask_stay_zero_through_training(make_opt):
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(MaskedLinear(20, 30, 0.2, generator=g), torch.nn.ReLU(),
                                MaskedLinear(30, 3, 0.5, generator=g))
    opt = make_opt(model.parameters())
    attach_mask_enforcement(model, opt)
    x = torch.randn(64, 20, generator=g)
    y = torch.randn(64, 3, generator=g)
    start = [m.weight.detach().clone() for m in (model[0], model[2])]
    for _ in range(200):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    for m, w0 in zip((model[0], model[2]), start):
        assert torch.count_nonzero(_outside(m)) == 0
        assert not torch.equal(m.weight.detach()[m.mask], w0[m.mask])  # it did train
        for value in opt.state[m.weight].values():
            if isinstance(value, torch.Tensor) and value.shape == m.weight.shape:
                assert torch.count_nonzero(value[~m.mask]) == 0


def test_enforce_masks_clears_tampered_weights_and_state():
    g = torch.Generator().manual_seed(1)
    layer = MaskedLinear(10, 10, 0.3, generator=g)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    layer(torch.ones(2, 10)).sum().backward()
    opt.step()
    with torch.no_grad():
        layer.weight.fill_(1.0)
    opt.state[layer.weight]["momentum_buffer"].fill_(1.0)
    enforce_masks_(layer, opt)
    assert torch.count_nonzero(_outside(layer)) == 0
    assert torch.count_nonzero(opt.state[layer.weight]["momentum_buffer"][~layer.mask]) == 0


def test_state_dict_round_trip_keeps_mask_and_zeros(tmp_path):
    g = torch.Generator().manual_seed(2)
    layer = MaskedLinear(12, 7, 0.25, generator=g)
    state = layer.state_dict()
    assert "mask" in state and state["mask"].dtype == torch.bool
    path = tmp_path / "ckpt.pt"
    torch.save(state, path)
    loaded = torch.load(path, weights_only=True)
    loaded["weight"] = torch.ones_like(loaded["weight"])  # tampered checkpoint: nonzero outside the mask
    fresh = MaskedLinear(12, 7, 0.9, generator=torch.Generator().manual_seed(99))
    fresh.load_state_dict(loaded)
    assert torch.equal(fresh.mask, layer.mask)
    assert torch.count_nonzero(_outside(fresh)) == 0
    assert torch.equal(fresh.weight.detach()[fresh.mask], torch.ones(int(fresh.mask.sum())))


def test_load_refuses_non_binary_mask():
    layer = MaskedLinear(4, 3, 0.5, generator=torch.Generator().manual_seed(0))
    state = layer.state_dict()
    state["mask"] = torch.full((3, 4), 0.5)
    with pytest.raises(ValueError, match="mask"):
        layer.load_state_dict(state)


def test_conv_mask_and_forward():
    g = torch.Generator().manual_seed(3)
    conv = MaskedConv2d(3, 8, 3, 0.3, generator=g, padding=1)
    assert conv.mask.shape == conv.weight.shape and torch.count_nonzero(_outside(conv)) == 0
    x = torch.randn(2, 3, 5, 5, generator=g)
    expected = torch.nn.functional.conv2d(x, conv.weight * conv.mask, conv.bias, padding=1)
    assert torch.allclose(conv(x), expected)
    opt = torch.optim.Adam(conv.parameters(), lr=0.1)
    attach_mask_enforcement(conv, opt)
    for _ in range(20):
        opt.zero_grad()
        conv(x).pow(2).mean().backward()
        opt.step()
    assert torch.count_nonzero(_outside(conv)) == 0


def test_density_aware_init_std():
    # nonzero weights of a big ER(0.05) layer: sample std vs 1/sqrt(p·fan_in); chi-square band at alpha 1e-3
    layer = MaskedLinear(2000, 400, 0.05, generator=torch.Generator().manual_seed(4))
    kept = layer.weight.detach()[layer.mask].double()
    k = kept.numel()
    target = 1.0 / math.sqrt(0.05 * 2000)
    statistic = float((kept ** 2).sum()) / target ** 2
    lo, hi = stats.chi2.ppf([5e-4, 1 - 5e-4], k)
    assert lo < statistic < hi
    assert init_std(2000, 0.05, density_aware=False) == pytest.approx(1 / math.sqrt(2000))
    assert init_std(10, 0.01) == 1.0  # effective fan-in floored at 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mask_on_cuda_equals_cpu_mask():
    cpu = er_mask((50, 40), 0.1, torch.Generator().manual_seed(5))
    gpu = er_mask((50, 40), 0.1, torch.Generator().manual_seed(5), device="cuda")
    assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)
    layer = MaskedLinear(40, 50, 0.1, generator=torch.Generator().manual_seed(5), device="cuda")
    assert layer.mask.is_cuda and torch.equal(layer.mask.cpu(), cpu)
