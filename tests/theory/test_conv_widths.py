"""theory.conv_widths (docs/math.md §9 with §6): 2L strong-ticket widths for convolutional and residual targets.

Expected values are computed here by hand from the formulas of docs/math.md (or taken from theory.strong_widths for
chains), never from the function under test."""
import copy
import json
import math
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from theory import strategies
from theory.__main__ import main
from theory.cli import run_main
from theory.conv_widths import (GraphNode, conv_strong_widths, graph_gains, nodes_from_description, signed_inputs,
                                worst_case_input_bounds_l1)
from theory.strong_widths import strong_widths

DIGITS = json.loads(resources.files("theory").joinpath("data/digits_cnn.json").read_text())
DIGITS_PATH = str(resources.files("theory").joinpath("data/digits_cnn.json"))


def chain(widths):
    """input → linear → relu → … → linear, the dense target (n_0, …, n_L) as a graph."""
    nodes, prev = [GraphNode("<input>", "input", ())], "<input>"
    for t in range(1, len(widths)):
        nodes.append(GraphNode(f"l{t}", "weighted", (prev,), widths[t - 1], widths[t]))
        prev = f"l{t}"
        if t < len(widths) - 1:
            nodes.append(GraphNode(f"r{t}", "relu", (prev,)))
            prev = f"r{t}"
    return nodes


def rec(kind, name, inputs, **extra):
    return {"kind": kind, "name": name, "inputs": list(inputs), **extra}


def conv(name, inputs, c_out, c_in, k=3, stride=1, padding=1):
    return rec("conv2d", name, inputs, stride=[stride, stride], padding=[padding, padding],
               shapes={"weight": [c_out, c_in, k, k], "bias": [c_out]})


def bn(name, inputs, c):
    return rec("batchnorm2d", name, inputs, eps=1e-5,
               shapes={k: [c] for k in ("weight", "bias", "running_mean", "running_var")})


def resnet_block_doc():
    """stem conv–BN–ReLU, one residual block with a 1×1 shortcut conv + BN, global pooling, linear classifier."""
    return {"name": "block", "input_shape": [3, 8, 8], "layers": [
        conv("stem", ["<input>"], 4, 3), bn("stem_bn", ["stem"], 4), rec("relu", "stem_relu", ["stem_bn"]),
        conv("a", ["stem_relu"], 6, 4, stride=2), bn("a_bn", ["a"], 6), rec("relu", "a_relu", ["a_bn"]),
        conv("b", ["a_relu"], 6, 6), bn("b_bn", ["b"], 6),
        conv("short", ["stem_relu"], 6, 4, k=1, stride=2, padding=0), bn("short_bn", ["short"], 6),
        rec("add", "sum", ["b_bn", "short_bn"]), rec("relu", "out_relu", ["sum"]),
        rec("global_avgpool", "pool", ["out_relu"]), rec("flatten", "flat", ["pool"]),
        rec("linear", "fc", ["flat"], shapes={"weight": [5, 6], "bias": [5]})]}


# ------------------------------------------------------------------------------------------- chain reduction


@settings(max_examples=20, deadline=None)
@given(widths=strategies.widths(max_width=6, max_layers=3), p=st.floats(0.05, 0.95), delta=st.floats(0.01, 0.5),
       eps=st.sampled_from([0.3, 0.05, 0.01]), forward=st.booleans(), weight_bound=st.sampled_from([1.0, 2.5]),
       per_layer=st.booleans())
def test_chain_reduces_to_dense_2l(widths, p, delta, eps, forward, weight_bound, per_layer):
    """A chain of linear nodes gives exactly the dense 2L widths of theory.strong_widths (sides 2 on layer 1 only)."""
    L = len(widths) - 1
    density = tuple(p * (0.9 ** i) for i in range(2 * L)) if per_layer else p
    tol = {"eps": eps} if forward else {"instance_eps": eps}
    dense = strong_widths(widths, density, delta, construction="2l", weight_bound=weight_bound, **tol)
    graph = conv_strong_widths(chain(widths), density, delta, weight_bound=weight_bound, **tol)
    assert [layer.k for layer in graph.layers] == list(dense.groups["k"])
    assert [layer.g0 for layer in graph.layers] == list(dense.groups["g0"])
    assert [layer.cap for layer in graph.layers] == [c["weight"] for c in dense.caps]
    assert [layer.blocks for layer in graph.layers] == [b["weight"] for b in dense.blocks]
    assert [layer.sides for layer in graph.layers] == [2] + [1] * (L - 1)
    assert graph.instances == dense.instances and graph.source_params == dense.source_params
    assert graph.instance_delta == dense.instance_delta and graph.source_dtype == dense.source_dtype
    assert [layer.instance_eps for layer in graph.layers] == pytest.approx(dense.instance_eps, rel=1e-12)
    assert graph.input_bounds_l1 == pytest.approx(dense.input_bounds_l1, rel=1e-12)
    assert graph.expected_er_params == pytest.approx(dense.expected_er_params, rel=1e-12)
    assert graph.tolerance_split == dense.tolerance_split


# ------------------------------------------------------------------------------------------------ signedness


def test_signedness_image_box_and_relu():
    nodes = nodes_from_description(DIGITS)
    assert signed_inputs(nodes, (-1.0, 1.0)) == {"conv1": True, "conv2": False, "fc": False}
    assert signed_inputs(nodes, (0.0, 1.0)) == {"conv1": False, "conv2": False, "fc": False}
    unsigned = conv_strong_widths(nodes, 0.5, 0.1, instance_eps=0.01, box=(0.0, 1.0))
    signed = conv_strong_widths(nodes, 0.5, 0.1, instance_eps=0.01, box=(-1.0, 1.0))
    assert unsigned.layers[0].sides == 1 and signed.layers[0].sides == 2
    assert signed.layers[0].instances - unsigned.layers[0].instances == 9 * 8  # the negative side of 9·8 weights


def test_signedness_residual_block_and_shortcut():
    nodes = nodes_from_description(resnet_block_doc())
    # the stem reads the signed image; a, b read ReLUs; the shortcut conv reads the block input (post-ReLU);
    # the classifier reads ReLU(add) through pooling and flatten
    assert signed_inputs(nodes) == {"stem": True, "a": False, "b": False, "short": False, "fc": False}
    g = [GraphNode("<input>", "input", ()), GraphNode("c1", "weighted", ("<input>",), 2, 2),
         GraphNode("r1", "relu", ("c1",)), GraphNode("p1", "pass", ("r1",)),
         GraphNode("c2", "weighted", ("p1",), 2, 2), GraphNode("r2", "relu", ("c2",)),
         GraphNode("pos", "add", ("r1", "r2")),  # non-negative + non-negative
         GraphNode("c3", "weighted", ("pos",), 2, 2),
         GraphNode("mixed", "add", ("c3", "r2")),  # an affine output + non-negative: signed
         GraphNode("c4", "weighted", ("mixed",), 2, 2),
         GraphNode("c5", "weighted", ("c4",), 2, 1)]  # a conv reading a conv directly
    assert signed_inputs(g, (0.0, 2.0)) == {"c1": False, "c2": False, "c3": False, "c4": True, "c5": True}
    assert signed_inputs(g, (-0.5, 2.0))["c1"] is True
    with_pool = [GraphNode("<input>", "input", ()), GraphNode("pool", "pass", ("<input>",)),
                 GraphNode("f", "flatten", ("pool",)), GraphNode("fc", "weighted", ("f",), 3, 1)]
    assert signed_inputs(with_pool, (0.0, 1.0)) == {"fc": False}


# -------------------------------------------------------------------------------------- bounds, split, gains


def test_worst_case_bounds_and_split_by_hand():
    """box [−2, 1], w̄ = 1.5: B_0 = 2, ‖B_1‖_1 = 9·2 = 18, B_1 = 9·1.5·2 + 1.5 = 28.5, ‖B_2‖_1 = 4·28.5 = 114;
    P = 2; ε_2 = ε/(2·115), ε_1 = ε/(2·19·Λ_2) with Λ_2 = 1·4·C_2·P."""
    nodes = [GraphNode("<input>", "input", ()), GraphNode("c", "weighted", ("<input>",), 9, 4, True, (3, 3)),
             GraphNode("r", "relu", ("c",)), GraphNode("p", "pass", ("r",)), GraphNode("f", "flatten", ("p",)),
             GraphNode("fc", "weighted", ("f",), 4, 3)]
    assert worst_case_input_bounds_l1(nodes, 1.5, (-2.0, 1.0)) == {"c": 18.0, "fc": 114.0}
    eps = 0.2
    w = conv_strong_widths(nodes, 0.5, 0.1, eps=eps, weight_bound=1.5, box=(-2.0, 1.0))
    assert w.parts == 2 and w.input_bounds_l1 == (18.0, 114.0)
    c, fc = w.layers
    assert fc.amplification == 1 * 4 * fc.cap * 2 and c.amplification == 2 * 9 * c.cap * 2
    assert w.gains == (fc.amplification, 1.0)
    assert fc.instance_eps == pytest.approx(eps / (2 * 115), rel=1e-12)
    assert c.instance_eps == pytest.approx(eps / (2 * 19 * fc.amplification), rel=1e-12)
    # given bounds replace the worst case
    given = conv_strong_widths(nodes, 0.5, 0.1, eps=eps, weight_bound=1.5, box=(-2.0, 1.0),
                               input_bounds_l1={"c": 3.0, "fc": 7.0})
    assert given.layers[1].instance_eps == pytest.approx(eps / (2 * 8), rel=1e-12)
    assert given.layers[0].instance_eps == pytest.approx(eps / (2 * 4 * given.layers[1].amplification), rel=1e-12)


def residual_graph(double=False):
    """c1 → r1 → c2 → r2 → c3 → add(c3, r1) → r3 → c4 (output); with ``double`` the add reads r1 twice."""
    return [GraphNode("<input>", "input", ()), GraphNode("c1", "weighted", ("<input>",), 3, 2),
            GraphNode("r1", "relu", ("c1",)), GraphNode("c2", "weighted", ("r1",), 2, 2),
            GraphNode("r2", "relu", ("c2",)), GraphNode("c3", "weighted", ("r2",), 2, 2),
            GraphNode("sum", "add", ("r1", "r1") if double else ("c3", "r1")), GraphNode("r3", "relu", ("sum",)),
            GraphNode("c4", "weighted", ("r3",), 2, 1)]


def test_gains_on_a_residual_graph_by_hand():
    eps = 0.3
    w = conv_strong_widths(residual_graph(), 0.6, 0.1, eps=eps)
    L1, L2, L3, L4 = (layer.amplification for layer in w.layers)
    assert [layer.sides for layer in w.layers] == [2, 1, 1, 1]
    assert (L2, L3, L4) == tuple(2 * layer.cap for layer in w.layers[1:])  # fan_in 2, P = 1, one side
    # G(c4) = 1; G(c3) = G(sum) = Λ4; G(c2) = Λ3·Λ4; G(c1) = G(r1) = Λ2·Λ3·Λ4 (through c2) + Λ4 (through the add)
    assert w.gains == (L2 * L3 * L4 + L4, L3 * L4, L4, 1.0)
    # worst-case bounds: B0 = 1; B(c1) = 3+1 = 4; B(c2) = 2·4+1 = 9; B(c3) = 2·9+1 = 19; B(sum) = 19+4 = 23
    assert w.input_bounds_l1 == (3.0, 8.0, 18.0, 46.0)
    for layer, gain, bound in zip(w.layers, w.gains, w.input_bounds_l1):
        assert layer.instance_eps == pytest.approx(eps / (4 * (bound + 1) * gain), rel=1e-12)
    # the unrolled certificate Σ G_ℓ ε_ℓ (‖B_ℓ‖_1 + 1) is ε
    total = sum(g * layer.instance_eps * (b + 1) for g, layer, b in zip(w.gains, w.layers, w.input_bounds_l1))
    assert total == pytest.approx(eps, rel=1e-9) and total <= eps * (1 + 1e-12)
    # a node that leads nowhere has no gain: refused (here c3 is read by nothing once the add reads r1 twice)
    with pytest.raises(ValueError, match="node 'c3' .* is not read by any later node"):
        conv_strong_widths(residual_graph(double=True), 0.6, 0.1, eps=eps)
    # an addition reading r1 twice counts both edges: G(r1) = 2·G(sum) = 2·Λ2
    twice = [GraphNode("<input>", "input", ()), GraphNode("c1", "weighted", ("<input>",), 3, 2),
             GraphNode("r1", "relu", ("c1",)), GraphNode("sum", "add", ("r1", "r1")),
             GraphNode("c2", "weighted", ("sum",), 2, 1)]
    t = conv_strong_widths(twice, 0.6, 0.1, eps=eps)
    assert t.gains == (2 * t.layers[1].amplification, 1.0)
    assert t.input_bounds_l1 == (3.0, 2 * 2 * 4.0)  # B(sum) = 4 + 4, fan_in 2


def test_graph_gains_by_hand_and_as_used():
    g = graph_gains(residual_graph(), {"c1": 7.0, "c2": 2.0, "c3": 3.0, "c4": 5.0})
    # G(c4) = 1, G(r3) = G(sum) = G(c3) = Λ4 = 5, G(r2) = G(c2) = Λ3·Λ4 = 15, G(r1) = G(c1) = Λ2·15 + 5 = 35
    assert g == {"c4": 1.0, "r3": 5.0, "sum": 5.0, "c3": 5.0, "r2": 15.0, "c2": 15.0, "r1": 35.0, "c1": 35.0,
                 "<input>": 245.0}
    w = conv_strong_widths(residual_graph(), 0.5, 0.1, instance_eps=0.05)
    again = graph_gains(residual_graph(), {layer.name: layer.amplification for layer in w.layers})
    assert w.gains == tuple(again[layer.name] for layer in w.layers)
    with pytest.raises(ValueError, match="exactly the weighted layers"):
        graph_gains(residual_graph(), {"c1": 1.0})


def _forward(nodes, params, x):
    """The graph's output for a batch x (N, n_0): weighted = x @ W.T + b (a dense layer over its virtual inputs)."""
    values = {"<input>": x}
    for node in nodes[1:]:
        a = values[node.inputs[0]]
        if node.kind == "weighted":
            W, b = params[node.name]
            values[node.name] = a @ W.T + b
        elif node.kind == "relu":
            values[node.name] = np.maximum(a, 0.0)
        elif node.kind == "add":
            values[node.name] = a + values[node.inputs[1]]
        else:
            values[node.name] = a
    return values[nodes[-1].name]


@pytest.mark.parametrize("seed", range(5))
def test_unrolled_graph_bound_holds_for_perturbed_networks(seed):
    """docs/math.md §9: e(output) ≤ Σ_ℓ G_ℓ·(η_ℓ·‖B_ℓ‖_1 + η_ℓ) for any network Ŵ = W + Δ with |Δ|, |b̂ − b| ≤ η_ℓ,
    Λ_ℓ = the largest row sum of |Ŵ_ℓ| and worst-case channel bounds (|W|, |b| ≤ 1 on the box [−1, 1])."""
    rng = np.random.default_rng(seed)
    nodes = residual_graph()
    params, perturbed, eta, amp = {}, {}, {}, {}
    for node in nodes:
        if node.kind == "weighted":
            W = rng.uniform(-1, 1, (node.fan_out, node.fan_in))
            b = rng.uniform(-1, 1, node.fan_out)
            eta[node.name] = float(rng.choice([1e-3, 1e-2, 1e-1]))
            W_hat = W + rng.uniform(-1, 1, W.shape) * eta[node.name]
            b_hat = b + rng.uniform(-1, 1, b.shape) * eta[node.name]
            params[node.name], perturbed[node.name] = (W, b), (W_hat, b_hat)
            amp[node.name] = float(np.abs(W_hat).sum(axis=1).max())
    gains = graph_gains(nodes, amp)
    bounds = worst_case_input_bounds_l1(nodes, 1.0, (-1.0, 1.0))
    certificate = sum(gains[n] * eta[n] * (bounds[n] + 1.0) for n in eta)
    x = np.concatenate([rng.uniform(-1, 1, (2000, 3)), np.array(np.meshgrid(*[[-1.0, 1.0]] * 3)).reshape(3, -1).T])
    error = np.abs(_forward(nodes, perturbed, x) - _forward(nodes, params, x)).max()
    assert 0 < error <= certificate


def test_total_instances_is_the_sum_of_the_formula():
    nodes = nodes_from_description(resnet_block_doc())
    for box, wb in (((-1.0, 1.0), 1.0), ((0.0, 1.0), 2.2)):
        w = conv_strong_widths(nodes, 0.4, 0.05, instance_eps=0.02, box=box, weight_bound=wb)
        P = math.ceil(wb)
        sides = {"stem": 1 if box[0] >= 0 else 2, "a": 1, "b": 1, "short": 1, "fc": 1}
        fans = {"stem": (27, 4), "a": (36, 6), "b": (54, 6), "short": (4, 6), "fc": (6, 5)}
        expected = {n: P * fo * fi * sides[n] + P * fo for n, (fi, fo) in fans.items()}
        assert {layer.name: layer.instances for layer in w.layers} == expected
        assert w.instances == sum(expected.values())
        for layer in w.layers:
            fi, fo = fans[layer.name]
            assert (layer.fan_in, layer.fan_out) == (fi, fo)
            assert layer.intermediate == fi * layer.k + layer.g0
            assert layer.source_shapes == ((layer.intermediate, fi), (fo, layer.intermediate))
            assert layer.source_params == layer.intermediate * (fi + fo)
        assert w.source_params == sum(layer.source_params for layer in w.layers)


@settings(max_examples=15, deadline=None)
@given(p=st.floats(0.05, 0.9), factor=st.floats(1.1, 3.0), eps=st.sampled_from([0.2, 0.05, 0.01]),
       forward=st.booleans())
def test_monotone_in_eps_and_density(p, factor, eps, forward):
    nodes = residual_graph()
    key = "eps" if forward else "instance_eps"
    base = conv_strong_widths(nodes, p, 0.1, **{key: eps})
    tighter = conv_strong_widths(nodes, p, 0.1, **{key: eps / factor})
    sparser = conv_strong_widths(nodes, p / factor, 0.1, **{key: eps})
    for other in (tighter, sparser):
        assert all(o.k >= b.k and o.g0 >= b.g0 for o, b in zip(other.layers, base.layers))
        assert other.source_params >= base.source_params


# --------------------------------------------------------------------------------------------- descriptions


def test_description_fans_and_batchnorm_folding():
    nodes = nodes_from_description(DIGITS)
    fans = [(n.name, n.fan_in, n.fan_out, n.kernel) for n in nodes if n.kind == "weighted"]
    assert fans == [("conv1", 9, 8, (3, 3)), ("conv2", 72, 16, (3, 3)), ("fc", 256, 10, ())]
    assert [n.kind for n in nodes] == ["input", "weighted", "relu", "weighted", "relu", "flatten", "weighted"]
    block = nodes_from_description(resnet_block_doc())
    names = [n.name for n in block]
    assert not any(n.endswith("_bn") for n in names)  # folded into their convs
    by_name = {n.name: n for n in block}
    assert by_name["stem_relu"].inputs == ("stem",) and by_name["sum"].inputs == ("b", "short")
    assert all(n.biases for n in block if n.kind == "weighted")


def _refused(doc, match):
    with pytest.raises(ValueError, match=match) as info:
        nodes_from_description(doc)
    assert "\n" not in str(info.value)


def test_description_refusals():
    bad = copy.deepcopy(DIGITS)
    bad["layers"][1]["kind"] = "gelu"
    _refused(bad, "layer 'relu1' has kind 'gelu': allowed conv2d, linear")
    bad = copy.deepcopy(DIGITS)
    bad["layers"][2]["shapes"]["weight"] = [16, 7, 3, 3]  # c_in 7 after a conv with 8 outputs
    _refused(bad, "c_in=7 but 'relu1' gives 8 channels")
    bad = copy.deepcopy(DIGITS)
    bad["layers"][5]["shapes"]["weight"] = [10, 255]  # flatten gives 16·4·4 = 256
    _refused(bad, "n_in=255 but 'flatten' gives 256 features")
    bad = copy.deepcopy(DIGITS)
    bad["layers"].insert(2, bn("bn", ["relu1"], 8))  # a batchnorm after a ReLU cannot be folded
    _refused(bad, "batchnorm2d only directly after a conv2d")
    bad = copy.deepcopy(DIGITS)
    del bad["layers"][4]  # linear reading the image directly
    bad["layers"][4]["inputs"] = ["relu2"]
    _refused(bad, "allowed flat features")
    doc = resnet_block_doc()
    doc["layers"][2]["inputs"] = ["stem"]  # stem is read by its batchnorm and by the relu
    _refused(doc, "batchnorm2d only directly after a conv2d that nothing else reads")
    doc = resnet_block_doc()
    doc["layers"][8] = conv("short", ["stem_relu"], 6, 4, k=1, stride=1, padding=0)  # 8x8 + 4x4
    _refused(doc, "spatial size")
    _refused({"layers": []}, "non-empty list")
    _refused([1, 2], "allowed a JSON object")
    no_shape = copy.deepcopy(DIGITS)
    no_shape["input_shape"] = None  # channel checks still work, feature counts are unknown
    assert len(nodes_from_description(no_shape)) == 7


# ------------------------------------------------------------------------------------------------- schemes


def test_scheme_densities_and_widths_belong_together():
    nodes = nodes_from_description(DIGITS)
    uniform = conv_strong_widths(nodes, 0.3, 0.1, instance_eps=0.05, scheme="uniform")
    plain = conv_strong_widths(nodes, 0.3, 0.1, instance_eps=0.05)
    assert uniform.to_dict()["layers"] == plain.to_dict()["layers"] and uniform.scheme_converged
    for scheme in ("erk", "balanced"):
        w = conv_strong_widths(nodes, 0.3, 0.1, instance_eps=0.05, scheme=scheme)
        again = conv_strong_widths(nodes, w.densities, 0.1, instance_eps=0.05)
        assert again.to_dict()["layers"] == w.to_dict()["layers"]  # the widths are those of the densities returned
        kept = sum(w.densities[2 * i] * layer.intermediate * layer.fan_in
                   + w.densities[2 * i + 1] * layer.fan_out * layer.intermediate for i, layer in enumerate(w.layers))
        assert w.global_density == pytest.approx(kept / w.source_params, rel=1e-12)
        if w.scheme_converged:
            assert w.global_density == pytest.approx(0.3, rel=1e-9)
        assert all(0 < d <= 1 for d in w.densities)


def test_argument_refusals():
    nodes = nodes_from_description(DIGITS)
    cases = [
        (dict(density=0.5, delta=0.1), "exactly one of them"),
        (dict(density=0.5, delta=0.1, eps=0.1, instance_eps=0.1), "exactly one of them"),
        (dict(density=(0.5, 0.5), delta=0.1, eps=0.1), "allowed one density or exactly 6"),
        (dict(density=0.5, delta=0.1, instance_eps=(0.1, 0.1)), "allowed one value or exactly 3"),
        (dict(density=0.5, delta=1.5, eps=0.1), "delta=1.5"),
        (dict(density=0.5, delta=0.1, eps=0.1, box=(1.0, -1.0)), "box"),
        (dict(density=0.5, delta=0.1, eps=0.1, input_bounds_l1={"conv1": 1.0}), "no entry for layer 'conv2'"),
        (dict(density=0.5, delta=0.1, eps=0.1, scheme="random"), "scheme='random' is unknown"),
        (dict(density=0.5, delta=0.1, eps=1e-3), "layer 'conv1'.*--weight-eps"),  # forward split too tight
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            conv_strong_widths(nodes, **kwargs)
        assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------------- CLI


def run(argv, capsys):
    try:
        rc = run_main(main, argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


BASE = ["widths", "--target", DIGITS_PATH, "--ticket", "strong", "--construction", "2l", "--density", "0.5",
        "--delta", "0.1"]


def test_cli_table_and_json_round_trip(capsys):
    rc, out, err = run(BASE + ["--weight-eps", "0.01"], capsys)
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["layer", "fan_in", "fan_out", "sides"]
    expected = conv_strong_widths(nodes_from_description(DIGITS), 0.5, 0.1, instance_eps=0.01)
    rows = {line.split()[0]: line.split() for line in lines[2:5]}
    for layer in expected.layers:
        row = rows[layer.name]
        assert row[1:4] == [str(layer.fan_in), str(layer.fan_out), str(layer.sides)]
        assert row[6:8] == [str(layer.k), str(layer.g0)] and str(layer.source_params) in row
    assert lines[5].startswith(f"total: 3 weighted layers, {expected.source_params} source weights")
    rc, out, err = run(BASE + ["--eps", "0.1", "--box", "0,1", "--json"], capsys)
    assert rc == 0 and err == ""
    data = json.loads(out)
    assert data == conv_strong_widths(nodes_from_description(DIGITS), 0.5, 0.1, eps=0.1, box=(0.0, 1.0)).to_dict()
    assert data["tolerance_split"] == "forward" and data["layers"][0]["sides"] == 1
    rc, out, _ = run(BASE[:-4] + ["--density", "0.3", "--delta", "0.1", "--weight-eps", "0.05", "--scheme", "erk",
                                  "--json"], capsys)
    assert rc == 0 and json.loads(out)["scheme"] == "erk"


def test_cli_weight_eps_for_mlp_targets(capsys):
    rc, out, err = run(["widths", "--target", "6,5,3", "--ticket", "strong", "--density", "0.4", "--delta", "0.1",
                        "--weight-eps", "0.02,0.05", "--json"], capsys)
    assert rc == 0 and err == ""
    expected = strong_widths((6, 5, 3), 0.4, 0.1, instance_eps=(0.02, 0.05), construction="2l")
    assert json.loads(out)["groups"] == {k: list(v) for k, v in expected.groups.items()}
    rc, out, _ = run(["widths", "--target", "6,5,3", "--ticket", "strong", "--density", "0.4", "--delta", "0.1",
                      "--eps", "0.1", "--box", "0,1", "--json"], capsys)
    assert rc == 0
    assert json.loads(out)["input_bounds_l1"] == list(strong_widths((6, 5, 3), 0.4, 0.1, eps=0.1, construction="2l",
                                                                    box=(0.0, 1.0)).input_bounds_l1)


@pytest.fixture
def bad_files(tmp_path):
    doc = copy.deepcopy(DIGITS)
    doc["layers"][1]["kind"] = "softmax"
    files = {"kind.json": json.dumps(doc), "broken.json": "{\"layers\": [", "list.json": "[1, 2]"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "dir.json").mkdir()
    return tmp_path


BAD = [
    (["--weight-eps", "0.01", "--construction", "l+1"], "construction='l+1' is not implemented for convolutional targets"),
    (["--weight-eps", "0.01", "--ticket", "weak"], "ticket='weak' is not implemented"),
    ([], "exactly one of --eps"),
    (["--eps", "0.1", "--weight-eps", "0.1"], "exactly one of --eps"),
    (["--weight-eps", "x"], "weight_eps='x' is malformed"),
    (["--weight-eps", "0.01", "--box", "1"], "box='1' is malformed"),
    (["--weight-eps", "0.01", "--target", "{kind.json}"], "kind 'softmax'"),
    (["--weight-eps", "0.01", "--target", "{broken.json}"], "not valid JSON"),
    (["--weight-eps", "0.01", "--target", "{list.json}"], "allowed a JSON object"),
    (["--weight-eps", "0.01", "--target", "{dir.json}"], "is a directory"),
    (["--weight-eps", "0.01", "--target", "{missing.json}"], "no such file"),
    (["--eps", "0.001"], "--weight-eps"),
    (["--weight-eps", "0.01", "--max-memory", "10"], "over the budget of 10 B"),
    (["--weight-eps", "0.01", "--density", "1e-300"], "more than 2^63 units"),
    (["--weight-eps", "0.01", "--target", "4,3", "--scheme", "erk"], "implemented for .json targets only"),
    (["--target", "4,3", "--ticket", "weak", "--scheme", "erk"], "implemented for .json targets only"),
]


@pytest.mark.parametrize("extra,match", BAD, ids=[m for _, m in BAD])
def test_cli_refusals_are_one_line_exit_2(extra, match, bad_files, capsys):
    argv = BASE + [str(bad_files / a[1:-1]) if a.startswith("{") else a for a in extra]
    rc, out, err = run(argv, capsys)
    assert rc == 2 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and match in err, err


def test_cli_subprocess_exit_codes(bad_files):
    ok = subprocess.run([sys.executable, "-m", "theory", *BASE, "--weight-eps", "0.01"], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0 and ok.stderr == "" and "conv2" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "theory", *BASE[:3], str(bad_files / "kind.json"), *BASE[4:],
                          "--weight-eps", "0.01"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1


def test_reads_what_construct_architecture_describes():
    """The records of construct.architecture.Layer.describe() (a residual block with BN and a 1×1 shortcut)."""
    import numpy as np

    from construct.architecture import Architecture, Layer

    def conv_layer(name, inputs, c_out, c_in, k, stride, padding):
        return Layer("conv2d", name, inputs, {"weight": np.zeros((c_out, c_in, k, k)), "bias": np.zeros(c_out)},
                     {"stride": (stride, stride), "padding": (padding, padding)})

    def bn_layer(name, inputs, c):
        return Layer("batchnorm2d", name, inputs, {k: np.ones(c) for k in ("weight", "bias", "running_mean",
                                                                            "running_var")}, {"eps": 1e-5})

    arch = Architecture((
        conv_layer("c1", ("<input>",), 4, 2, 3, 1, 1), bn_layer("c1.bn", ("c1",), 4), Layer("relu", "r1", ("c1.bn",)),
        conv_layer("c2", ("r1",), 4, 4, 3, 1, 1), Layer("relu", "r2", ("c2",)),
        Layer("add", "sum", ("r2", "r1")), Layer("maxpool2d", "pool", ("sum",), attrs={
            "kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)}),
        Layer("flatten", "flat", ("pool",)),
        Layer("linear", "fc", ("flat",), {"weight": np.zeros((3, 16)), "bias": np.zeros(3)})))
    doc = json.loads(json.dumps({"name": "block", "input_shape": [2, 4, 4], "layers": arch.describe()}))
    nodes = nodes_from_description(doc)
    assert [(n.name, n.kind, n.inputs) for n in nodes] == [
        ("<input>", "input", ()), ("c1", "weighted", ("<input>",)), ("r1", "relu", ("c1",)),
        ("c2", "weighted", ("r1",)), ("r2", "relu", ("c2",)), ("sum", "add", ("r2", "r1")), ("pool", "pass", ("sum",)),
        ("flat", "flatten", ("pool",)), ("fc", "weighted", ("flat",))]
    assert [(n.fan_in, n.fan_out) for n in nodes if n.kind == "weighted"] == [(18, 4), (36, 4), (16, 3)]
    doc["layers"][-1]["shapes"]["weight"] = [3, 17]  # 4 channels × 2 × 2 after pooling is 16
    _refused(doc, "n_in=17 but 'flat' gives 16 features")
