"""Edge-popup inside an ER source (docs/math.md §8): the forward mask is binary, zero outside the ER mask and has
exactly k ones per layer, after every training step; straight-through gradient; frozen weights."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from experiments.e4_edgepopup import final_layer_densities
from experiments.edge_popup import (POPUP_LAYERS, check_final_density, popup_layers, popup_mask, popup_masks,
                                    prepare_edge_popup_, score_parameters)
from experiments.infra.masked import masked_modules
from experiments.models import build_model, weight_shapes
from experiments.sparse_training import TrainSettings, make_optimizer


def _check_mask(mask, er, k):
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}  # binary
    assert torch.count_nonzero(mask[~er]) == 0  # zero outside the ER mask
    assert int(mask.sum()) == k  # exactly k ones


@settings(max_examples=60)
@given(rows=st.integers(1, 12), cols=st.integers(1, 12), density=st.floats(0.05, 1.0), seed=st.integers(0, 10**6),
       levels=st.integers(1, 5), data=st.data())
def test_popup_mask_is_binary_inside_er_with_exactly_k_ones(rows, cols, density, seed, levels, data):
    g = torch.Generator().manual_seed(seed)
    er = torch.rand(rows, cols, generator=g) < density
    available = int(er.sum())
    if available == 0:
        er[0, 0] = True
        available = 1
    k = data.draw(st.integers(1, available))
    # few distinct score values, both signs, so ties and |score| collisions happen; large scores outside ER
    scores = torch.randint(-levels, levels + 1, (rows, cols), generator=g).float()
    scores[~er] = 100.0
    mask = popup_mask(scores, er, k)
    _check_mask(mask, er, k)
    # every selected entry's |score| is ≥ every unselected ER-kept entry's |score| (it is a top-k)
    chosen = scores.abs()[(mask == 1)]
    rest = scores.abs()[er & (mask == 0)]
    if len(rest):
        assert chosen.min() >= rest.max()


def test_popup_mask_refuses_k_above_the_er_kept_entries():
    er = torch.tensor([[True, False], [False, False]])
    with pytest.raises(ValueError, match="k=2"):
        popup_mask(torch.ones(2, 2), er, 2)


def test_straight_through_gradient():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 5, generator=g)
    er = torch.rand(4, 5, generator=g) < 0.6
    scores = torch.randn(4, 5, generator=g).requires_grad_(True)
    x = torch.randn(7, 5, generator=g)
    upstream = torch.randn(7, 4, generator=g)
    k = int(er.sum()) // 2
    out = F.linear(x, weight * popup_mask(scores, er, k))
    (out * upstream).sum().backward()
    # ∂L/∂W_eff = upstreamᵀ x; ∂L/∂P = that ⊙ W; ∂L/∂S = sign(S) ⊙ M_ER ⊙ ∂L/∂P (top-k skipped)
    expected = (upstream.T @ x) * weight * torch.sign(scores.detach()) * er.float()
    assert torch.allclose(scores.grad, expected, atol=1e-5)
    assert torch.count_nonzero(scores.grad[~er]) == 0


def test_final_density_above_the_source_is_refused():
    with pytest.raises(ValueError, match="final_density=0.6"):
        check_final_density(0.6, 0.5)
    assert check_final_density(0.5, 0.5) == 0.5
    built = build_model("mlp", (1, 6, 6), 3, density=0.3, scheme="uniform", seed=0, hidden=(10,),
                        layer_classes=POPUP_LAYERS)
    with pytest.raises(ValueError, match="ER mask keeps"):
        prepare_edge_popup_(built.module, [0.9, 0.9], torch.Generator().manual_seed(0))
    plain = build_model("mlp", (1, 6, 6), 3, density=0.3, scheme="uniform", seed=0, hidden=(10,))
    with pytest.raises(ValueError, match="not edge-popup layers"):
        prepare_edge_popup_(plain.module, [0.1, 0.1], torch.Generator().manual_seed(0))


@pytest.mark.parametrize("model, source", [("mlp", 0.5), ("mlp", 1.0), ("cnn", 0.3)])
def test_masks_stay_valid_after_every_step_and_weights_stay_frozen(model, source):
    arch = dict(hidden=(16,), channels=(4, 4))
    built = build_model(model, (1, 8, 8), 3, density=source, scheme="dense" if source == 1.0 else "balanced", seed=1,
                        batchnorm_affine=False, layer_classes=POPUP_LAYERS, **arch)
    net = built.module
    finals = final_layer_densities(weight_shapes(net), 0.1, "balanced" if source < 1.0 else "uniform")
    ks = prepare_edge_popup_(net, finals, torch.Generator().manual_seed(2))
    layers = popup_layers(net)
    assert len(layers) == len(masked_modules(net))
    assert ks == [max(1, round(p * m.weight.numel())) for p, m in zip(finals, layers)]
    er = [m.mask.clone() for m in layers]
    if source == 1.0:
        assert all(bool(e.all()) for e in er)  # dense source: a mask of ones
    frozen = {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("running_mean")
              and not k.endswith("running_var") and not k.endswith("num_batches_tracked")}
    g = torch.Generator().manual_seed(3)
    x = torch.randn(32, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (32,), generator=g)
    optimizer = make_optimizer(score_parameters(net), TrainSettings(lr=0.5, momentum=0.9, weight_decay=5e-4))
    history = [popup_masks(net)]
    for step in range(6):
        loss = F.cross_entropy(net(x[step * 5:step * 5 + 5]), y[step * 5:step * 5 + 5])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        masks = popup_masks(net)
        for mask, e, k in zip(masks, er, ks):
            _check_mask(mask, e, k)
        history.append(masks)
    assert any(not torch.equal(a, b) for a, b in zip(history[0], history[-1]))  # scores did move the masks
    for key, value in frozen.items():
        if not key.endswith("scores"):
            assert torch.equal(net.state_dict()[key], value), key
    assert all(not p.requires_grad for n, p in net.named_parameters() if not n.endswith("scores"))
