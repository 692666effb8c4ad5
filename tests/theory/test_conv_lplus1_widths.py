"""Widths of the strong L+1 ticket of a plain CNN (docs/math.md §9, §6): an MLP gets exactly the numbers of
strong_widths(construction="l+1"); the CNN layout counts virtual inputs, blocks and the sign split; refusals are one
line."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory import conv_lplus1_widths, strong_widths
from theory.strong_widths import _thin


def _same(s, c):
    assert s.groups == c.groups
    assert s.instance_eps == c.instance_eps and s.instance_delta == c.instance_delta
    assert s.instances == c.instances and s.caps == c.caps and s.blocks == c.blocks and s.candidates == c.candidates
    assert s.source_dtype == c.source_dtype and c.parts == (s.parts,) * (len(c.layers))
    assert tuple(s.source_widths[1:]) == c.source_channels and s.source_params == c.source_params
    assert s.expected_ticket_params == c.expected_ticket_params and s.expected_er_params == c.expected_er_params
    assert s.amplification_bounds == c.amplification_bounds and s.input_bounds_l1 == c.input_bounds_l1


@settings(max_examples=12, deadline=None)
@given(widths=st.lists(st.integers(1, 5), min_size=2, max_size=4),
       density=st.sampled_from([1.0, 0.5, 0.3]),
       tol=st.sampled_from([("eps", 0.1), ("instance_eps", 0.01), ("instance_eps", 0.003)]),
       weight_bound=st.sampled_from([1.0, 1.7]), biases=st.booleans())
def test_an_mlp_gets_the_numbers_of_the_mlp_l_plus_1_widths(widths, density, tol, weight_bound, biases):
    kw = {tol[0]: tol[1], "weight_bound": weight_bound, "biases": biases}
    layers = [(widths[i], widths[i + 1]) for i in range(len(widths) - 1)]
    try:
        s = strong_widths(widths, density, 0.1, construction="l+1", **kw)
    except ValueError as exc:  # both refuse the same configurations
        with pytest.raises(ValueError, match="exact solver"):
            conv_lplus1_widths(layers, density, 0.1, **kw)
        assert "exact solver" in str(exc)
        return
    _same(s, conv_lplus1_widths(layers, density, 0.1, **kw))


def test_a_cnn_counts_virtual_inputs_blocks_and_one_side_for_a_nonnegative_input():
    """digits-CNN shapes: conv 1->8 (V = 9), conv 8->16 (V = 72, block 9), linear 256->10 (block 16)."""
    layers = [(9, 8), (72, 16, 9), (256, 10, 16)]
    w = conv_lplus1_widths(layers, 0.5, 0.1, instance_eps=0.01, signed_input=False, box=(0.0, 1.0))
    g, g0, r, c, P = w.groups["g"], w.groups["g0"], w.groups["r"], w.groups["c"], w.parts
    assert P == (1, 1, 1) and w.source_channels == (g * 9 + g0, r[0] * 8 + c[0], r[1] * 16 + c[1], 10)
    R = [r[0] * 8, r[1] * 16, 10]
    expected = (1 * R[0] * 9 + R[0] + c[0]) + (R[1] * 72 + R[1] + c[1]) + (R[2] * 256 + R[2])
    assert w.instances == expected
    ch = w.source_channels
    assert w.source_params == ch[0] * 9 + ch[1] * ch[0] + ch[2] * ch[1] * 9 + ch[3] * ch[2] * 16
    # the thinning groups of docs/math.md §5 at theory's instance failure δ' = δ / instances
    d = w.instance_delta
    assert g == _thin(0.01, d, 0.5 * 0.5 / 2, "product", w.source_dtype)
    assert r[0] == _thin(0.01, d, 0.5, "uniform", w.source_dtype)
    assert d <= 0.1 / w.instances * (1 + 1e-12)  # the union bound over every instance
    signed = conv_lplus1_widths(layers, 0.5, 0.1, instance_eps=0.01, signed_input=True, box=(0.0, 1.0))
    assert signed.instances > w.instances
    # worst-case bounds: ‖B_0‖_1 = V_1·max|box|, B_1 = V_1·w̄·B_0 + w̄ per channel, ‖B_1‖_1 = V_2·B_1
    assert w.input_bounds_l1[:2] == (9.0, 72.0 * (9.0 + 1.0))


def test_per_layer_weight_bounds_split_only_their_own_layer():
    """w̄ = (1.4, 0.8): P = (2, 1): the lifting group doubles, the copies serving layer 2 do not."""
    layers = [(4, 2), (8, 2, 4)]
    one = conv_lplus1_widths(layers, 0.5, 0.1, instance_eps=0.01, weight_bound=[0.9, 0.8])
    two = conv_lplus1_widths(layers, 0.5, 0.1, instance_eps=0.01, weight_bound=[1.4, 0.8])
    both = conv_lplus1_widths(layers, 0.5, 0.1, instance_eps=0.01, weight_bound=1.4)
    assert one.parts == (1, 1) and two.parts == (2, 1) and both.parts == (2, 2)
    d = two.instance_delta
    assert two.groups["g"] == 2 * _thin(0.005, d, 0.125, "product", two.source_dtype)
    assert two.groups["r"] == (_thin(0.01, d, 0.5, "uniform", two.source_dtype),)
    assert both.groups["r"][0] > two.groups["r"][0] and both.instances > two.instances > one.instances


def test_given_input_bounds_are_used_by_the_forward_split():
    layers = [(4, 2), (8, 2, 4)]
    a = conv_lplus1_widths(layers, 1.0, 0.1, eps=0.1, input_bounds_l1=[4.0, 3.0])
    b = conv_lplus1_widths(layers, 1.0, 0.1, eps=0.1)
    assert a.input_bounds_l1 == (4.0, 3.0) and a.instance_eps[1] > b.instance_eps[1]
    assert math.isclose(a.instance_eps[1], 0.1 / (2 * (3.0 + 1.0)), rel_tol=1e-12)  # ε/(L·(‖B_1‖_1 + 1)), last layer


@pytest.mark.parametrize("layers,kwargs,needle", [
    ([], {}, "layers is empty"),
    ([(9, 8), (70, 16, 9)], {}, "shapes must chain"),
    ([(9, 8, 1, 2)], {}, "malformed"),
    ([(0, 8)], {}, "layers[0].fan_in"),
    ([(9, 8)], {"instance_eps": [0.1, 0.1]}, "instance_eps has 2 entries"),
    ([(9, 8)], {"instance_eps": 0.1, "eps": 0.1}, "exactly one"),
    ([(9, 8)], {"instance_eps": 0.1, "input_bounds_l1": [1.0, 2.0]}, "input_bounds_l1"),
    ([(9, 8)], {"weight_bound": [1.0, 2.0]}, "weight_bound has 2 entries"),
    ([(9, 8), (72, 16, 9), (256, 10, 16)], {"eps": 0.05, "signed_input": False, "box": (0.0, 1.0),
                                            "input_bounds_l1": [9, 326, 4929], "weight_bound": 1.36},
     "the exact solver searches at most 40"),
])
def test_refusals_are_one_line(layers, kwargs, needle):
    args = {"instance_eps": 0.01, **kwargs}
    if "eps" in kwargs and "instance_eps" not in kwargs:
        args.pop("instance_eps")
    with pytest.raises(ValueError) as info:
        conv_lplus1_widths(layers, 0.5, 0.1, **args)
    assert "\n" not in str(info.value) and needle in str(info.value), str(info.value)
