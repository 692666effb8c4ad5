"""Sufficient source widths of the 2L strong-ticket construction for convolutional and residual targets
(docs/math.md §9 with §5, §6) [ours], following Gadhikar et al. 2023 (2L construction after Pensia et al. 2020 and
da Cunha et al. 2022, with ER thinning).

**The target as a graph.** A target is a list of :class:`GraphNode` in execution order: one "input" node, then
"weighted" (a convolution or a linear layer), "relu", "pass" (max, average or global average pooling), "flatten"
and "add" (a residual addition of two earlier nodes) nodes; the last node is the network output. A weighted node is
a dense layer over virtual inputs (§9): fan_in = c_in·k_h·k_w for a convolution (n_in for a linear layer),
fan_out = c_out. :func:`nodes_from_description` builds the nodes from the JSON description ``construct`` writes.

**Widths of weighted layer ℓ** (exactly the dense 2L layout of :mod:`theory.strong_widths` with n_{t−1} → fan_in,
n_t → fan_out). Source layer A (intermediate) has m_ℓ = fan_in·k_ℓ + g0_ℓ units (for a convolution: channels of a
convolution with the target's kernel), k_ℓ dedicated to each virtual input, then g0_ℓ bias-group units; source
layer B maps them to the fan_out target units (for a convolution: a 1×1 convolution). With densities p_A, p_B, the
per-instance tolerance ε_ℓ, δ' = δ / (total instances) and P = max(1, ⌈w̄⌉) parts (w̄ = ``weight_bound``):

    k_ℓ = P·n(ε_ℓ/P, δ', p_A·p_B/2, product),   g0_ℓ = P·n(ε_ℓ/P, δ', p_B/2, product) (0 without biases),
    instances_ℓ = P·fan_out·fan_in·sides_ℓ + P·fan_out (the last term only with biases),

n the binomial-thinning group size of :mod:`theory.strong_widths` (docs/math.md §5 [ours-1], with the search plan
of the exact solver: cap C_ℓ = block size, ``blocks`` = number of blocks). ``sides_ℓ`` = 2 when the layer's input
can be negative (the sign split of §6: ReLU(x_j) and ReLU(−x_j) each need a subset sum), 1 when it is ≥ 0 on the
whole box (:func:`signed_inputs`: the output of a ReLU, through pooling/flatten, a sum of two non-negative values,
or the input itself when the box is [a, b] with a ≥ 0). δ' and the widths are iterated to a fixed point, and the
source dtype (float32 iff every ε_ℓ/P ≥ FLOAT32_MIN_TOLERANCE) is chosen exactly as :func:`strong_widths` does.

**Forward tolerance split on a graph** (given the network sup-error ε, ``eps``). Errors e(v) are sup-norm bounds of
|x̂ − x| at node v's output, per channel, over the box (docs/math.md §6 certificate, §9: channel bounds hold at every
position). e(input) = 0; a ReLU, pooling and flatten are 1-Lipschitz in the sup norm, so e(v) ≤ e(u) for their
input u; an addition gives e(v) ≤ e(u_1) + e(u_2). For weighted ℓ reading u, the §6 certificate gives

    e(ℓ) ≤ Λ_ℓ·e(u) + ε_ℓ·(‖B_ℓ‖_1 + 1),   Λ_ℓ = sides_ℓ·fan_in_ℓ·C_ℓ·P,

because every instance chooses at most C_ℓ candidates per part (P parts, sides_ℓ instances per virtual input and
output) with |c| = |v·a| ≤ 1, each an intermediate unit whose error is ≤ |a|·e(u), while the chosen sums miss
W·x_j by at most ε_ℓ·B_j (one instance of a sign split is active) and the bias by at most ε_ℓ. (With the sign
split the units of both sides carry the input error, hence the factor sides_ℓ; a chain's only signed layer is its
first, whose input error is 0, so for chains Λ_ℓ is that of :mod:`theory.strong_widths`.)
‖B_ℓ‖_1 is the sum over the fan_in virtual inputs of their channel bounds: ``input_bounds_l1[name]`` (computed
from the actual target) when given, else the worst case over all targets with |W|, |b| ≤ w̄: a scalar channel bound
per node, B(input) = max(|a|, |b|), B(weighted) = fan_in·w̄·B(in) + w̄ (the + w̄ also without biases, as
:func:`theory.strong_widths.input_bounds_l1`), B unchanged through relu/pass/flatten, B(add) = B(u_1) + B(u_2),
and ‖B_ℓ‖_1 = fan_in_ℓ·B(in_ℓ).

These inequalities are linear with non-negative coefficients, so unrolling them from the output gives

    e(output) ≤ Σ_ℓ G_ℓ·ε_ℓ·(‖B_ℓ‖_1 + 1),   G(output) = 1,   G(v) = Σ_{edges v→c} G(c)·(Λ_c if c is weighted else 1),

the sum over the consumers c of v, an addition that reads v twice counted twice. G_ℓ = G(ℓ) is the worst-case gain
from layer ℓ's output to the network output; it depends only on layers after ℓ. Choosing, in reverse execution
order,

    ε_ℓ = ε / (Lw·(‖B_ℓ‖_1 + 1)·G_ℓ)       (Lw = number of weighted layers)

makes every term ε/Lw, so the certificate is ≤ ε whenever every instance succeeds. For a chain
input → linear → relu → … → linear, G_ℓ = Π_{k>ℓ} Λ_k and this is the forward split of
:func:`theory.strong_widths.strong_widths` (construction "2l") term by term. Given ``instance_eps`` instead (one
value or one per weighted layer), the ε_ℓ are used as they are.

**Grouped amplification** (``row_norms``) [ours]. The kept intermediate units of one virtual input all read the
same x̂_v, and ReLU(a·x) = |a|·ReLU(±x), so a built layer is exactly Σ_v P_iv·ReLU(x̂_v) + N_iv·ReLU(−x̂_v) + b̂_i,
and its output error is at most Σ_v max(|P_iv|, |N_iv|)·e(v) + the local term (|P_iv|·e(v) for an input ≥ 0;
docs/math.md §9, "grouped bound"). When every instance succeeds, |P_iv| and |N_iv| are within ε_ℓ of |W_iv|, so
Λ_ℓ = max_i ‖W_i‖_1 + fan_in_ℓ·ε_ℓ bounds the grouped amplification of *this* target (its row norms
max_i Σ_v |W_iv| are given by the caller); the same unrolling then bounds the grouped error bound by ε. This is far
smaller than the worst case over all targets for trained networks, whose row norms are moderate.

**Density schemes** (``scheme``; docs/math.md §7): the global ``density`` is distributed over the 2·Lw source
layers with :func:`theory.densities.layer_densities` applied to the source weight shapes (A as (m, c_in, k_h, k_w)
for a convolution, (m, fan_in) for a linear layer; B as (c_out, m, 1, 1), the 1×1 convolution it is, or
(fan_out, m)). Widths depend on the densities and the densities on the widths: starting from the uniform densities,
the two are alternated until the densities repeat (at most :data:`SCHEME_ITERATIONS` rounds). The widths returned
are always those computed FOR the densities returned; ``scheme_converged`` says whether those densities are also
the scheme applied to the returned widths (then ``global_density`` equals ``density``; otherwise it is reported as
realized).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from theory.strong_widths import (FLOAT32_MIN_TOLERANCE, _blocks, _cap, _thin, backward_layer_tolerance,
                                  weight_parts)
from theory.validation import check_choice, check_density, check_open_unit, check_positive_int, check_positive_real, \
    check_unit_count
from theory.weak_widths import per_layer_densities

__all__ = ["NODE_KINDS", "DESCRIPTION_KINDS", "INPUT", "SCHEMES", "SCHEME_ITERATIONS", "GraphNode", "ConvLayerWidths",
           "ConvStrongWidths", "check_nodes", "signed_inputs", "worst_case_input_bounds_l1", "graph_gains",
           "conv_strong_widths", "nodes_from_description"]

NODE_KINDS = ("input", "weighted", "relu", "pass", "flatten", "add")
#: Record kinds of an architecture description (``construct.architecture.Layer.describe()``).
DESCRIPTION_KINDS = ("conv2d", "linear", "batchnorm2d", "relu", "maxpool2d", "avgpool2d", "global_avgpool", "flatten",
                     "add")
INPUT = "<input>"  # the name by which description records read the network input
SCHEMES = ("uniform", "erk", "balanced", "pyramidal")
#: Rounds of the density/width alternation of a density scheme (module docstring).
SCHEME_ITERATIONS = 8


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class GraphNode:
    """One node of a target graph (module docstring). ``kind`` in :data:`NODE_KINDS`; ``inputs`` the names of earlier
    nodes it reads (none for "input", two for "add", one otherwise). Weighted nodes: ``fan_in`` virtual inputs
    (c_in·k_h·k_w or n_in), ``fan_out`` outputs (c_out or n_out), ``biases``, and ``kernel`` = (k_h, k_w) for a
    convolution (used only to shape source layer A for a density scheme; () for a linear layer)."""

    name: str
    kind: str
    inputs: tuple
    fan_in: int = 0
    fan_out: int = 0
    biases: bool = True
    kernel: tuple = ()

    def to_dict(self) -> dict:
        return _plain(asdict(self))


@dataclass(frozen=True)
class ConvLayerWidths:
    """Widths of the two source layers of weighted target layer ``name`` (module docstring).

    ``k`` units per virtual input and ``g0`` bias-group units (both include the factor P); ``cap``/``blocks``: block
    size C_ℓ and number of blocks of the search plan of a weight part, ``bias_cap``/``bias_blocks`` of a bias part
    (0 without biases); ``instance_eps`` ε_ℓ; ``amplification`` Λ_ℓ = sides·fan_in·cap·P; ``intermediate`` =
    fan_in·k + g0; ``source_shapes`` ((intermediate, fan_in), (fan_out, intermediate)) as dense matrices over
    virtual inputs; ``source_params`` their weight count; ``instances`` the subset-sum instances of the layer."""

    name: str
    fan_in: int
    fan_out: int
    signed: bool
    sides: int
    biases: bool
    k: int
    g0: int
    cap: int
    blocks: int
    bias_cap: int
    bias_blocks: int
    instance_eps: float
    amplification: float
    intermediate: int
    source_shapes: tuple
    source_params: int
    instances: int

    def to_dict(self) -> dict:
        return _plain(asdict(self))


@dataclass(frozen=True)
class ConvStrongWidths:
    """Widths of the 2L strong-ticket construction for a graph target (module docstring).

    ``densities``: (p_A, p_B) of every weighted layer, flattened; ``gains``: G_ℓ per weighted layer (worst case,
    from the Λ of later layers); ``input_bounds_l1``: ‖B_ℓ‖_1 per weighted layer; ``instances``: total, whose
    δ' = ``instance_delta`` = δ / instances (or less); ``source_params``/``expected_er_params``: source weights and
    their expected number kept by the ER masks; ``global_density`` = expected_er_params / source_params; ``scheme``
    (None with explicit densities) and ``scheme_converged``."""

    layers: tuple
    densities: tuple
    delta: float
    eps: float | None
    tolerance_split: str
    instance_delta: float
    instances: int
    weight_bound: float
    parts: int
    box: tuple
    source_dtype: str
    source_params: int
    expected_er_params: float
    global_density: float
    scheme: str | None
    scheme_converged: bool
    gains: tuple
    input_bounds_l1: tuple

    def to_dict(self) -> dict:
        out = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            out[key] = [layer.to_dict() for layer in value] if key == "layers" else _plain(value)
        return out


# ----------------------------------------------------------------------------------------------------------- graph


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_nodes(nodes) -> tuple:
    """``nodes`` as a tuple of :class:`GraphNode` after checking the graph: the first node is the only "input" node,
    names are unique, every node reads earlier nodes (two for "add", one otherwise), weighted nodes have positive
    integer fan_in/fan_out (and a kernel (k_h, k_w) dividing fan_in, if any), at least one node is weighted, and every
    node but the last is read by a later one (so every node leads to the output). One-line ValueError otherwise."""
    if isinstance(nodes, (str, bytes, Mapping)) or not hasattr(nodes, "__iter__"):
        raise ValueError(f"nodes={type(nodes).__name__} is not a list: allowed a list of GraphNode in execution order")
    items = list(nodes)
    if not items:
        raise ValueError("nodes=[] is empty: allowed an input node followed by at least one weighted node")
    seen: dict[str, GraphNode] = {}
    readers: dict[str, int] = {}
    for i, node in enumerate(items):
        if not isinstance(node, GraphNode):
            raise ValueError(f"nodes[{i}] is a {type(node).__name__}: allowed GraphNode")
        if not isinstance(node.name, str) or not node.name:
            raise ValueError(f"nodes[{i}].name={node.name!r} is not a name: allowed a non-empty string")
        if node.name in seen:
            raise ValueError(f"node name {node.name!r} is used twice: allowed unique names")
        check_choice(node.kind, f"node {node.name!r} kind", NODE_KINDS)
        if (i == 0) != (node.kind == "input"):
            raise ValueError(f"node {node.name!r} ({node.kind}) is node {i}: allowed exactly one 'input' node, the first")
        inputs = tuple(node.inputs)
        want = {"input": 0, "add": 2}.get(node.kind, 1)
        if len(inputs) != want or not all(isinstance(s, str) for s in inputs):
            raise ValueError(f"node {node.name!r} ({node.kind}) reads {list(inputs)!r}: allowed {want} input name(s)")
        for src in inputs:
            if src not in seen:
                raise ValueError(f"node {node.name!r} reads {src!r}, which is not an earlier node: allowed names of "
                                 "earlier nodes")
            readers[src] = readers.get(src, 0) + 1
        if node.kind == "weighted":
            check_positive_int(node.fan_in, f"node {node.name!r} fan_in")
            check_positive_int(node.fan_out, f"node {node.name!r} fan_out")
            for value, what in ((node.fan_in, "fan_in"), (node.fan_out, "fan_out")):
                if value >= 2**63:
                    raise ValueError(f"node {node.name!r} {what}={value} is out of range: allowed below 2^63")
            if not isinstance(node.biases, bool):
                raise ValueError(f"node {node.name!r} biases={node.biases!r} is not a bool: allowed True or False")
            kernel = tuple(node.kernel)
            if kernel and not (len(kernel) == 2 and all(_is_int(v) and v >= 1 for v in kernel)
                               and node.fan_in % (kernel[0] * kernel[1]) == 0):
                raise ValueError(f"node {node.name!r} kernel={list(kernel)!r} is not a kernel of fan_in={node.fan_in}: "
                                 "allowed () or two positive integers (k_h, k_w) whose product divides fan_in")
        seen[node.name] = node
    if not any(n.kind == "weighted" for n in items):
        raise ValueError("nodes has no weighted node: allowed at least one convolution or linear layer")
    for node in items[:-1]:
        if readers.get(node.name, 0) == 0:
            raise ValueError(f"node {node.name!r} ({node.kind}) is not read by any later node: allowed graphs whose every "
                             f"node leads to the output (the last node, {items[-1].name!r})")
    return tuple(items)


def _check_box(box) -> tuple:
    try:
        a, b = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"box={box!r} is not an interval: allowed two finite numbers a < b") from None
    if not (math.isfinite(a) and math.isfinite(b) and a < b):
        raise ValueError(f"box={box!r} is out of range: allowed finite a < b")
    return a, b


def _non_negative(nodes, box) -> dict:
    """{node name: whether its output is ≥ 0 on the whole box} (see :func:`signed_inputs`)."""
    a, _ = box
    out: dict[str, bool] = {}
    for node in nodes:
        if node.kind == "input":
            out[node.name] = a >= 0.0
        elif node.kind == "relu":
            out[node.name] = True
        elif node.kind in ("pass", "flatten"):
            out[node.name] = out[node.inputs[0]]
        elif node.kind == "add":
            out[node.name] = out[node.inputs[0]] and out[node.inputs[1]]
        else:  # weighted: an affine map, signed
            out[node.name] = False
    return out


def signed_inputs(nodes, box=(-1.0, 1.0)) -> dict:
    """{weighted node name: True iff its input can be negative on the box [a, b]} (docs/math.md §9, module docstring):
    an input is non-negative iff it is a ReLU output, the network input with a ≥ 0, a sum of two non-negative values,
    or one of these through pooling ("pass") and flatten nodes; everything else (an affine layer's output) is signed."""
    nodes = check_nodes(nodes)
    nonneg = _non_negative(nodes, _check_box(box))
    return {n.name: not nonneg[n.inputs[0]] for n in nodes if n.kind == "weighted"}


def _channel_bounds(nodes, box, weight_bound) -> dict:
    """{node name: worst-case channel bound B} (module docstring: max(|a|, |b|); fan_in·w̄·B + w̄; unchanged; sum)."""
    B: dict[str, float] = {}
    for node in nodes:
        if node.kind == "input":
            B[node.name] = max(abs(box[0]), abs(box[1]))
        elif node.kind == "weighted":
            B[node.name] = node.fan_in * weight_bound * B[node.inputs[0]] + weight_bound
        elif node.kind == "add":
            B[node.name] = B[node.inputs[0]] + B[node.inputs[1]]
        else:
            B[node.name] = B[node.inputs[0]]
    return B


def worst_case_input_bounds_l1(nodes, weight_bound: float = 1.0, box=(-1.0, 1.0)) -> dict:
    """{weighted node name: ‖B_ℓ‖_1 = fan_in_ℓ·B(in_ℓ)}, the worst case over all targets with |W|, |b| ≤ w̄ on the box
    (module docstring; for a chain this is :func:`theory.strong_widths.input_bounds_l1`)."""
    nodes = check_nodes(nodes)
    wb = check_positive_real(weight_bound, "weight_bound")
    B = _channel_bounds(nodes, _check_box(box), wb)
    return {n.name: n.fan_in * B[n.inputs[0]] for n in nodes if n.kind == "weighted"}


# ---------------------------------------------------------------------------------------------------------- widths


def _per_layer_eps(value, names, what) -> tuple:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return (check_open_unit(value, what),) * len(names)
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{what}={value!r} is not a tolerance: allowed one value in (0, 1) or {len(names)} of them")
    items = list(value)
    if len(items) != len(names):
        raise ValueError(f"{what} has {len(items)} entries: allowed one value or exactly {len(names)} (one per weighted "
                         "layer)")
    return tuple(check_open_unit(v, f"{what}[{i}]") for i, v in enumerate(items))


def _given_bounds(value, names, what: str = "input_bounds_l1") -> dict:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what}={type(value).__name__} is not a mapping: allowed a dict weighted layer name "
                         "-> bound")
    unknown = sorted(set(value) - set(names), key=str)
    if unknown:
        raise ValueError(f"{what} names {unknown[0]!r}, which is not a weighted layer: allowed "
                         f"{', '.join(map(repr, names))}")
    missing = [n for n in names if n not in value]
    if missing:
        raise ValueError(f"{what} has no entry for layer {missing[0]!r}: allowed a bound for every weighted "
                         "layer")
    out = {}
    for name in names:
        v = value[name]
        if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v)) and float(v) >= 0):
            raise ValueError(f"{what}[{name!r}]={v!r} is out of range: allowed a finite number >= 0")
        out[name] = float(v)
    return out


_FORWARD_HINT = (" (the forward split of eps is worst-case; instance_eps, --weight-eps, sets the per-instance "
                 "tolerance directly)")


def _in_layer(name, hint, fn, *args):
    """fn(*args), with a ValueError's message prefixed by the layer it concerns and followed by ``hint``."""
    try:
        return fn(*args)
    except ValueError as exc:
        raise type(exc)(f"layer {name!r}: {str(exc).splitlines()[0]}{hint}") from None


def _reverse_gains(nodes, amplification_of) -> dict:
    """{node name: G(v)} for checked ``nodes`` (module docstring): G(output) = 1, G(v) = Σ_{edges v→c} G(c)·(Λ_c if c is
    weighted else 1), in reverse execution order; ``amplification_of(node, gain)`` is called once per weighted node,
    after its own gain is known (its consumers come later), and returns its Λ."""
    consumers: dict[str, list] = {n.name: [] for n in nodes}
    for node in nodes:
        for src in node.inputs:  # an addition reading v twice appears twice
            consumers[src].append(node)
    G: dict[str, float] = {}
    amps: dict[str, float] = {}
    for node in reversed(nodes):
        if node is nodes[-1]:
            G[node.name] = 1.0
        else:
            G[node.name] = sum(G[c.name] * (amps[c.name] if c.kind == "weighted" else 1.0) for c in consumers[node.name])
        if node.kind == "weighted":
            amps[node.name] = float(amplification_of(node, G[node.name]))
    return G


def graph_gains(nodes, amplification) -> dict:
    """{node name: G(v)}, the gain from node v's output to the network output over the graph ``nodes``, given the
    amplification Λ_ℓ of every weighted layer (a dict name → Λ_ℓ ≥ 0): G(output) = 1 and
    G(v) = Σ over edges v→c of G(c)·(Λ_c if c is weighted else 1), so that e(output) ≤ Σ_ℓ G(ℓ)·s_ℓ for layer-wise
    error terms s_ℓ (docs/math.md §9, module docstring). With the Λ_ℓ of a built ticket this is the a-posteriori
    (backward) version of the split; :func:`conv_strong_widths` uses the worst-case Λ_ℓ."""
    nodes = check_nodes(nodes)
    names = [n.name for n in nodes if n.kind == "weighted"]
    if not isinstance(amplification, Mapping) or set(amplification) != set(names):
        raise ValueError(f"amplification={amplification!r:.80}: allowed a dict with exactly the weighted layers "
                         f"{', '.join(map(repr, names))}")
    for name in names:
        value = amplification[name]
        if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
                and float(value) >= 0):
            raise ValueError(f"amplification[{name!r}]={value!r} is out of range: allowed a finite number >= 0")
    return _reverse_gains(nodes, lambda node, gain: amplification[node.name])


def _solve(nodes, dens, delta, eps, eps_fixed, bounds, sides, P, dtype, row_norms=None):
    """The fixed point δ' ↔ instance count for one dtype: (ε_ℓ, G_ℓ, δ', per-layer widths) (module docstring)."""
    weighted = [n for n in nodes if n.kind == "weighted"]
    Lw = len(weighted)
    index = {n.name: i for i, n in enumerate(weighted)}
    hint = _FORWARD_HINT if eps_fixed is None else ""
    delta_i = delta / (4.0 * sum(n.fan_in * n.fan_out for n in weighted))
    for _ in range(50):
        eps_l = [0.0] * Lw
        gains = [0.0] * Lw
        amps = [0.0] * Lw

        def amplification_of(node, gain):
            """ε_ℓ from the gain (forward split) or as given, then the worst-case Λ_ℓ = sides·fan_in·C_ℓ·P, or with
            ``row_norms`` the grouped bound Λ_ℓ = max_i ‖W_i‖_1 + fan_in·ε_ℓ (module docstring)."""
            i = index[node.name]
            gains[i] = gain
            if eps_fixed is not None:
                eps_l[i] = eps_fixed[i]
            else:
                if not math.isfinite(gain):
                    raise ValueError(f"eps={eps!r}: the worst-case gain from layer {node.name!r} to the output overflows "
                                     "the float range: allowed a per-instance tolerance (instance_eps, --weight-eps) "
                                     "for this target")
                eps_l[i] = backward_layer_tolerance(eps, Lw, bounds[i], gain)
            cap = _in_layer(node.name, hint, _cap, eps_l[i] / P, delta_i, "product", dtype)
            if row_norms is None:
                amps[i] = float(sides[i] * node.fan_in * cap * P)
            else:
                amps[i] = float(row_norms[i] + node.fan_in * eps_l[i])
            return amps[i]

        _reverse_gains(nodes, amplification_of)
        layers = []
        for i, node in enumerate(weighted):
            layers.append(_in_layer(node.name, hint, _layer_widths, node, dens[2 * i], dens[2 * i + 1], eps_l[i], delta_i, P,
                                    sides[i], amps[i], dtype))
        count = sum(layer.instances for layer in layers)
        new_delta = delta / count
        if new_delta >= delta_i * (1 - 1e-12):
            return tuple(eps_l), tuple(gains), delta_i, tuple(layers)
        delta_i = new_delta
    raise ValueError("conv_strong_widths did not converge: allowed smaller targets")  # pragma: no cover


def _layer_widths(node, pa, pb, e, delta_i, P, sides, amp, dtype) -> ConvLayerWidths:
    k = P * _thin(e / P, delta_i, pa * pb / 2, "product", dtype)
    g0 = P * _thin(e / P, delta_i, pb / 2, "product", dtype) if node.biases else 0
    cap = _cap(e / P, delta_i, "product", dtype)
    blocks = _blocks(e / P, delta_i, "product", dtype)
    m = check_unit_count(node.fan_in * k + g0, "intermediate width fan_in*k + g0")
    instances = check_unit_count(P * node.fan_out * node.fan_in * sides + (P * node.fan_out if node.biases else 0),
                                 "instance count")
    return ConvLayerWidths(
        name=node.name, fan_in=node.fan_in, fan_out=node.fan_out, signed=sides == 2, sides=sides, biases=node.biases,
        k=k, g0=g0, cap=cap, blocks=blocks, bias_cap=cap if node.biases else 0,
        bias_blocks=blocks if node.biases else 0, instance_eps=float(e), amplification=amp, intermediate=m,
        source_shapes=((m, node.fan_in), (node.fan_out, m)), source_params=m * node.fan_in + node.fan_out * m,
        instances=instances)


def _widths_for(nodes, dens, delta, eps, eps_fixed, bounds, sides, P, source_dtype, row_norms=None):
    """Choose the dtype exactly as :func:`theory.strong_widths.strong_widths`: float32 iff every ε_ℓ/P is at least
    FLOAT32_MIN_TOLERANCE (for the float32 fixed point too), else float64; a given dtype is used as it is."""
    if source_dtype is None:
        result = _solve(nodes, dens, delta, eps, eps_fixed, bounds, sides, P, "float64", row_norms)
        dtype = "float64"
        if min(result[0]) / P >= FLOAT32_MIN_TOLERANCE:
            try:
                result32 = _solve(nodes, dens, delta, eps, eps_fixed, bounds, sides, P, "float32", row_norms)
            except ValueError:
                result32 = None
            if result32 is not None and min(result32[0]) / P >= FLOAT32_MIN_TOLERANCE:
                result, dtype = result32, "float32"
        return result, dtype
    dtype = check_choice(source_dtype, "source_dtype", ("float32", "float64"))
    return _solve(nodes, dens, delta, eps, eps_fixed, bounds, sides, P, dtype, row_norms), dtype


def _scheme_shapes(nodes, layers) -> list:
    """Source weight shapes for a density scheme: A (m, c_in, k_h, k_w) or (m, fan_in); B (c_out, m, 1, 1) or (fan_out, m)."""
    weighted = [n for n in nodes if n.kind == "weighted"]
    shapes = []
    for node, layer in zip(weighted, layers):
        m = layer.intermediate
        if node.kernel:
            kh, kw = node.kernel
            shapes += [(m, node.fan_in // (kh * kw), kh, kw), (node.fan_out, m, 1, 1)]
        else:
            shapes += [(m, node.fan_in), (node.fan_out, m)]
    return shapes


def conv_strong_widths(nodes, density, delta, *, eps=None, instance_eps=None, weight_bound=1.0, box=(-1.0, 1.0),
                       input_bounds_l1=None, source_dtype=None, scheme=None, row_norms=None) -> ConvStrongWidths:
    """Sufficient widths of a 2L ER source containing a strong ticket, with sup-error ≤ ε w.p. ≥ 1 − δ, of any target
    with the graph ``nodes`` and |weights|, |biases| ≤ ``weight_bound`` on the input box ``box`` (docs/math.md §9, §6;
    every formula in the module docstring).

    Exactly one of ``eps`` (network sup-error; forward split on the graph) and ``instance_eps`` (per-instance
    tolerance ε_ℓ: one value or one per weighted layer). ``density``: one value or (p_A, p_B) of every weighted layer
    flattened (2·Lw values); with ``scheme`` in :data:`SCHEMES`, one global density distributed over the source
    layers (module docstring: the returned widths are computed for the returned densities). ``input_bounds_l1``:
    {weighted layer name: ‖B_ℓ‖_1} of the actual target (else the worst case). ``source_dtype``: "float32",
    "float64" or None (chosen as :func:`theory.strong_widths.strong_widths` does). ``row_norms``: {weighted layer
    name: max_i Σ_v |W_iv|} of the actual target; with it the forward split uses the grouped amplification
    Λ_ℓ = max_i ‖W_i‖_1 + fan_in·ε_ℓ (module docstring), and the promise is about the grouped bound. Widths of 2^63
    units or more, tolerances below the weights' resolution or needing more candidates than the exact solver searches
    are refused with a one-line ValueError."""
    nodes = check_nodes(nodes)
    weighted = [n for n in nodes if n.kind == "weighted"]
    names = [n.name for n in weighted]
    Lw = len(weighted)
    delta = check_open_unit(delta, "delta")
    wb = check_positive_real(weight_bound, "weight_bound")
    P = weight_parts(wb)
    box = _check_box(box)
    if (eps is None) == (instance_eps is None):
        raise ValueError("eps and instance_eps: allowed exactly one of them (network sup-error or per-instance tolerance)")
    if instance_eps is not None:
        eps_fixed, split = _per_layer_eps(instance_eps, names, "instance_eps"), "instance"
    else:
        eps, eps_fixed, split = check_open_unit(eps, "eps"), None, "forward"
    if input_bounds_l1 is None:
        given = worst_case_input_bounds_l1(nodes, wb, box)
    else:
        given = _given_bounds(input_bounds_l1, names)
    bounds = tuple(given[n] for n in names)
    norms = None if row_norms is None else tuple(float(v) for v in (_given_bounds(row_norms, names, "row_norms")[n] for n in names))
    signed = signed_inputs(nodes, box)
    sides = tuple(2 if signed[n] else 1 for n in names)
    if scheme is None:
        dens = per_layer_densities(density, 2 * Lw)
        (eps_l, gains, delta_i, layers), dtype = _widths_for(nodes, dens, delta, eps, eps_fixed, bounds, sides, P,
                                                             source_dtype, norms)
        converged = True
    else:
        from theory.densities import layer_densities

        scheme = check_choice(scheme, "scheme", SCHEMES)
        label = check_density(density, "density")
        dens = (label,) * (2 * Lw)
        converged = False
        for _ in range(SCHEME_ITERATIONS):
            (eps_l, gains, delta_i, layers), dtype = _widths_for(nodes, dens, delta, eps, eps_fixed, bounds, sides, P,
                                                                 source_dtype, norms)
            new = layer_densities(_scheme_shapes(nodes, layers), label, scheme).densities
            if new == dens:
                converged = True
                break
            dens = new
        if not converged:  # the widths returned must be those computed for the densities returned
            (eps_l, gains, delta_i, layers), dtype = _widths_for(nodes, dens, delta, eps, eps_fixed, bounds, sides, P,
                                                                 source_dtype, norms)
    source_params = check_unit_count(sum(layer.source_params for layer in layers), "source weight count")
    expected = float(sum(dens[2 * i] * layer.intermediate * layer.fan_in
                         + dens[2 * i + 1] * layer.fan_out * layer.intermediate for i, layer in enumerate(layers)))
    return ConvStrongWidths(
        layers=layers, densities=tuple(dens), delta=delta, eps=eps if split == "forward" else None,
        tolerance_split=split, instance_delta=delta_i, instances=int(sum(layer.instances for layer in layers)),
        weight_bound=wb, parts=P, box=box, source_dtype=dtype, source_params=source_params,
        expected_er_params=expected, global_density=expected / source_params, scheme=scheme,
        scheme_converged=converged, gains=gains, input_bounds_l1=bounds)


# ----------------------------------------------------------------------------------------------------- description

_PASS = ("maxpool2d", "avgpool2d", "global_avgpool")


def _shape(record, key, length, where):
    shapes = record.get("shapes")
    value = shapes.get(key) if isinstance(shapes, Mapping) else None
    if not (isinstance(value, list) and len(value) == length and all(_is_int(v) and 1 <= v < 2**63 for v in value)):
        raise ValueError(f"{where} has shapes.{key}={value!r}: allowed a list of {length} positive integers")
    return tuple(int(v) for v in value)


def _pair(record, key, default, where, minimum):
    value = record.get(key, default)
    if _is_int(value):
        value = [value, value]
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) and v >= minimum for v in value)):
        raise ValueError(f"{where} has {key}={value!r}: allowed an integer >= {minimum} or a pair of them")
    return int(value[0]), int(value[1])


def nodes_from_description(doc) -> tuple:
    """The target graph (:class:`GraphNode` tuple) of an architecture description, the JSON ``construct`` writes:
    ``{"name": ..., "input_shape": [c, H, W] (or [n], or null), "layers": [record, ...]}``, one record per
    ``construct.architecture.Layer.describe()`` in execution order, reading earlier records or "<input>"
    (docs/math.md §9); a record without "inputs" reads the record before it (as in construct's state_dict
    descriptions).

    conv2d (shapes.weight (c_out, c_in, k_h, k_w)) → weighted, fan_in = c_in·k_h·k_w, fan_out = c_out, kernel (k_h, k_w);
    linear (shapes.weight (n_out, n_in)) → weighted, fan_in = n_in; relu → relu; maxpool2d, avgpool2d,
    global_avgpool → pass; flatten → flatten; add → add. A batchnorm2d whose input is a conv2d read by nothing else is
    folded into it (eval mode, §9): later records that read the batchnorm read the conv. A description holds no
    values, so every weighted layer gets biases=True (conservative: a folded batchnorm gives a conv a bias anyway).
    Refused in one line: unknown kinds, a batchnorm2d anywhere else, shapes that disagree where they can be checked
    (channels always; spatial sizes and flattened feature counts when ``input_shape`` is given), a linear layer
    reading an unflattened image, a convolution reading flat features."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"description is a {type(doc).__name__}: allowed a JSON object with a 'layers' list")
    records = doc.get("layers")
    if not isinstance(records, list) or not records:
        raise ValueError(f"description has layers={records!r:.80}: allowed a non-empty list of layer records")
    input_shape = doc.get("input_shape")
    # per produced name: (channels or features or None, spatial (H, W) or None, rank "image"/"flat"/None)
    if input_shape is None:
        info = {INPUT: (None, None, None)}
    elif (isinstance(input_shape, list) and len(input_shape) in (1, 3)
          and all(_is_int(v) and 1 <= v < 2**63 for v in input_shape)):
        info = {INPUT: (input_shape[0], tuple(input_shape[1:]), "image") if len(input_shape) == 3
                else (input_shape[0], None, "flat")}
    else:
        raise ValueError(f"description has input_shape={input_shape!r}: allowed [c, H, W], [n] or null")
    readers: dict[str, int] = {}
    previous = INPUT
    for record in records:
        if isinstance(record, Mapping):
            inputs = record.get("inputs", [previous])
            for src in inputs if isinstance(inputs, list) else ():
                if isinstance(src, str):
                    readers[src] = readers.get(src, 0) + 1
            previous = record.get("name")
    alias = {INPUT: INPUT}  # description name -> node name (a folded batchnorm stands for its conv)
    kinds = {INPUT: "input"}
    nodes = [GraphNode(INPUT, "input", ())]
    previous = INPUT
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"layers[{i}] is a {type(record).__name__}: allowed a layer record (a JSON object)")
        name, kind = record.get("name"), record.get("kind")
        where = f"layer {name!r} ({kind})"
        if not isinstance(name, str) or not name or name in alias:
            raise ValueError(f"layers[{i}] has name={name!r}: allowed a unique non-empty string other than '<input>'")
        if kind not in DESCRIPTION_KINDS:
            raise ValueError(f"layer {name!r} has kind {kind!r}: allowed {', '.join(DESCRIPTION_KINDS)}")
        inputs = record.get("inputs", [previous])  # as construct's state_dict descriptions: default the record before
        want = 2 if kind == "add" else 1
        if not (isinstance(inputs, list) and len(inputs) == want and all(isinstance(s, str) for s in inputs)):
            raise ValueError(f"{where} has inputs={inputs!r}: allowed a list of {want} earlier layer name(s) or '<input>'")
        for src in inputs:
            if src not in alias:
                raise ValueError(f"{where} reads {src!r}, which is not an earlier layer: allowed names of earlier "
                                 "layers or '<input>'")
        srcs = tuple(alias[s] for s in inputs)
        channels, spatial, rank = info[srcs[0]]
        if kind == "batchnorm2d":
            (c,) = _shape(record, "weight", 1, where)
            if kinds[srcs[0]] != "conv2d" or srcs[0] != inputs[0] or readers.get(inputs[0], 0) != 1:
                raise ValueError(f"{where} reads {inputs[0]!r}: allowed a batchnorm2d only directly after a conv2d "
                                 "that nothing else reads (it is folded into the conv)")
            if c != channels:
                raise ValueError(f"{where} has {c} channels but {inputs[0]!r} has {channels} outputs: allowed equal")
            alias[name] = srcs[0]
            previous = name
            continue
        if kind == "conv2d":
            c_out, c_in, kh, kw = _shape(record, "weight", 4, where)
            if rank == "flat":
                raise ValueError(f"{where} reads flat features from {inputs[0]!r}: allowed an image (channels, H, W)")
            if channels is not None and channels != c_in:
                raise ValueError(f"{where} has c_in={c_in} but {inputs[0]!r} gives {channels} channels: allowed equal")
            stride = _pair(record, "stride", 1, where, 1)
            padding = _pair(record, "padding", 0, where, 0)
            if spatial is not None:
                spatial = tuple((size + 2 * p - k) // s + 1 for size, p, k, s in zip(spatial, padding, (kh, kw), stride))
                if min(spatial) < 1:
                    raise ValueError(f"{where}: kernel {(kh, kw)} does not fit its padded input: allowed inputs at "
                                     "least as large as the kernel")
            info[name] = (c_out, spatial, "image")
            node = GraphNode(name, "weighted", srcs, c_in * kh * kw, c_out, True, (kh, kw))
        elif kind == "linear":
            n_out, n_in = _shape(record, "weight", 2, where)
            if rank == "image":
                raise ValueError(f"{where} reads an image from {inputs[0]!r}: allowed flat features (add a flatten)")
            if channels is not None and channels != n_in:
                raise ValueError(f"{where} has n_in={n_in} but {inputs[0]!r} gives {channels} features: allowed equal")
            info[name] = (n_out, None, "flat")
            node = GraphNode(name, "weighted", srcs, n_in, n_out, True, ())
        elif kind == "flatten":
            if rank == "image":
                features = None if (channels is None or spatial is None) else channels * spatial[0] * spatial[1]
            else:
                features = channels
            info[name] = (features, None, "flat")
            node = GraphNode(name, "flatten", srcs)
        elif kind in _PASS:
            if rank == "flat":
                raise ValueError(f"{where} reads flat features from {inputs[0]!r}: allowed an image (channels, H, W)")
            if kind == "global_avgpool":
                spatial = (1, 1)
            else:
                ks = _pair(record, "kernel_size", None, where, 1)
                stride = _pair(record, "stride", list(ks), where, 1)  # torch's default stride is the window
                padding = _pair(record, "padding", 0, where, 0)
                if spatial is not None:
                    spatial = tuple((size + 2 * p - k) // s + 1 for size, p, k, s in zip(spatial, padding, ks, stride))
                    if min(spatial) < 1:
                        raise ValueError(f"{where}: window {ks} does not fit its padded input: allowed inputs at least "
                                         "as large as the window")
            info[name] = (channels, spatial, "image")
            node = GraphNode(name, "pass", srcs)
        elif kind == "relu":
            info[name] = info[srcs[0]]
            node = GraphNode(name, "relu", srcs)
        else:  # add
            other = info[srcs[1]]
            for label, x, y in (("channels", channels, other[0]), ("spatial size", spatial, other[1]),
                                ("rank", rank, other[2])):
                if x is not None and y is not None and x != y:
                    raise ValueError(f"{where} adds {inputs[0]!r} and {inputs[1]!r} with {label} {x} and {y}: "
                                     "allowed equal shapes")
            info[name] = tuple(x if x is not None else y for x, y in zip(info[srcs[0]], other))
            node = GraphNode(name, "add", srcs)
        alias[name] = name
        kinds[name] = kind
        previous = name
        nodes.append(node)
    return check_nodes(nodes)
