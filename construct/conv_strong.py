"""Strong 2L tickets of convolutional and residual targets end to end (docs/math.md §9, §6): theory's widths
(:func:`theory.conv_widths.conv_strong_widths`), a seeded source drawn only where it is read
(:mod:`construct.conv_source`), the construction (:mod:`construct.conv_2l`), the certificate and the sampled error
(:mod:`construct.conv_ticket`), and a report.

Tolerances as for MLPs (:mod:`construct.strong`): ``eps`` (network sup-error) → widths from theory's a-priori
forward split on the graph with the target's own input bounds and row norms (the grouped amplification of
:mod:`theory.conv_widths`), layers solved in reverse order with the backward split on the measured grouped
amplifications: the **grouped bound** (:mod:`construct.conv_ticket`) is ≤ ε when every instance succeeds; the §6
certificate (which pays Σ|v·a| for the cancellations inside every subset sum) is reported next to it.
``weight_eps`` → every instance solved to that tolerance, both bounds reported a posteriori.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from construct.conv_2l import build_conv_2l, layer_input_norm
from construct.conv_source import sample_conv_source
from construct.conv_target import ConvTarget, conv_target
from construct.conv_ticket import ConvTicket, channel_bounds, conv_certificate, conv_sampled_error
from construct.strong_common import scaled_group
from theory.validation import check_open_unit, check_positive_int, check_positive_real

__all__ = ["CONV_MODEL_NAMES", "load_conv_target", "conv_graph_nodes", "plan_conv_strong", "build_conv_strong_ticket", "ConvTicketReport",
           "conv_build_bytes"]

#: the named convolutional targets of ``--target`` (:func:`construct.conv_targets.conv_module`)
CONV_MODEL_NAMES = ("digits-cnn", "digits-resnet", "resnet18")
#: their input shapes (c, H, W)
CONV_MODEL_SHAPES = {"digits-cnn": (1, 8, 8), "digits-resnet": (1, 8, 8), "resnet18": (3, 32, 32)}
#: the named targets with residual additions (no weak tickets)
RESIDUAL_MODEL_NAMES = ("digits-resnet", "resnet18")

_NODE_KIND = {"relu": "relu", "maxpool2d": "pass", "avgpool2d": "pass", "global_avgpool": "pass",
              "flatten": "flatten", "add": "add", "conv2d": "weighted", "linear": "weighted"}


def conv_graph_nodes(target: ConvTarget):
    """The target as :class:`theory.conv_widths.GraphNode` records (what theory's widths read)."""
    from theory.conv_widths import INPUT, GraphNode

    nodes = [GraphNode(INPUT, "input", ())]
    by_name = {w.name: w for w in target.weighted}
    for rec in target.architecture.layers:
        kind = _NODE_KIND[rec.kind]
        if kind == "weighted":
            wl = by_name[rec.name]
            kernel = tuple(wl.weight.shape[2:]) if wl.kind == "conv2d" else ()
            nodes.append(GraphNode(rec.name, kind, tuple(rec.inputs), wl.fan_in, wl.fan_out, wl.has_bias, kernel))
        else:
            nodes.append(GraphNode(rec.name, kind, tuple(rec.inputs)))
    return nodes


def plan_conv_strong(target: ConvTarget, density, delta: float, *, eps=None, weight_eps=None,
                     width_multiplier: float = 1.0, scheme=None):
    """(ConvStrongWidths, per-layer plan for :func:`construct.conv_2l.build_conv_2l`, source layer tuples
    (fan_in, fan_out, k, g0)) at theory's widths times ``width_multiplier`` (group sizes rounded up to multiples of P),
    with the target's own input bounds ‖B_ℓ‖_1 in theory's forward split."""
    from theory.conv_widths import conv_strong_widths

    if (eps is None) == (weight_eps is None):
        raise ValueError("eps and weight_eps: allowed exactly one (certified network error or per-instance tolerance)")
    mult = check_positive_real(width_multiplier, "width_multiplier")
    bounds = channel_bounds(target)
    norms = {wl.name: layer_input_norm(target, bounds, wl) for wl in target.weighted}
    row_norms = {wl.name: float(np.abs(wl.dense).sum(axis=1).max(initial=0.0)) for wl in target.weighted}
    sw = conv_strong_widths(conv_graph_nodes(target), density, delta, eps=eps, instance_eps=weight_eps,
                            weight_bound=max(1.0, target.weight_bound), box=target.box, input_bounds_l1=norms,
                            source_dtype=None, scheme=scheme, row_norms=row_norms)
    P = sw.parts
    plan, layers = [], []
    for wl, lw in zip(target.weighted, sw.layers):
        k = scaled_group(lw.k, mult, P)
        g0 = scaled_group(lw.g0, mult, P)
        plan.append({"parts": P, "instance_eps": lw.instance_eps, "cap": (lw.cap, lw.blocks),
                     "bias_cap": (lw.bias_cap, lw.bias_blocks) if lw.bias_cap else (lw.cap, lw.blocks)})
        layers.append((wl.fan_in, wl.fan_out, k, g0))
    return sw, plan, layers


def conv_build_bytes(layers, sw, dtype_bytes: int) -> float:
    """Estimated peak bytes of the build: the largest layer's working set (A_ℓ's dedicated entries, a float64 scale
    per A_ℓ channel, the candidate index arrays, the packed candidates of one step and the solver's copies of them)
    plus what every layer keeps: 24 bytes per kept B_ℓ entry (row, column, weight) at :data:`KEPT_PER_INSTANCE`
    entries per instance, 8 bytes per instance error and 16 bytes per target weight for the effective weights P, N."""
    from construct.conv_2l import _GATHER_ENTRIES

    worst, kept = 0.0, 0.0
    for (fan_in, fan_out, k, g0), lw in zip(layers, sw.layers):
        m = fan_in * k + g0
        working = (dtype_bytes + 1 + 8) * fan_in * k + 8 * m + 64 * _GATHER_ENTRIES
        worst = max(worst, working + 8.0 * fan_in * k)
        kept += (24.0 * KEPT_PER_INSTANCE + 8.0) * lw.instances + 16.0 * fan_in * fan_out
    return worst + kept


#: kept B entries per subset-sum instance assumed by :func:`conv_build_bytes`; measured: 3.6 on the ResNet-18
#: (``python -m construct bench --target resnet18``), at most the search plan's block size k ≤ 40 in the worst case
KEPT_PER_INSTANCE = 8


@dataclass(frozen=True)
class ConvTicketReport:
    """Summary of one 2L ticket of a convolutional or residual target (``--json`` of ``construct strong``)."""

    construction: str
    target: dict
    densities: tuple
    delta: float
    eps: float | None
    weight_eps: float | None
    tolerance_split: str
    success: bool
    failures: int
    instances: int
    certificate: float
    sampled_error: float
    samples: int
    source_params: int
    er_kept_params: float
    ticket_params: int
    target_params: int
    source_dtype: str
    width_multiplier: float
    layers: tuple
    seed: int
    seconds: float
    attacked_error: float | None = None
    extra: dict | None = None
    grouped_certificate: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["densities"] = list(self.densities)
        d["layers"] = list(self.layers)
        return d

    def __str__(self) -> str:
        t = self.target
        folds = t.get("batchnorm_folded", [])
        lines = [f"2L strong ticket of {t.get('name', '?')} (input {t.get('input_shape')}, {self.target_params:,} "
                 f"target weights, {len(self.layers)} conv/linear layers), delta {self.delta}, seed {self.seed}",
                 f"  BatchNorm folded (eval mode): {', '.join(f['batchnorm'] + ' -> ' + f['into'] for f in folds)}"
                 if folds else "  no BatchNorm to fold",
                 "  source densities (A, B per layer): "
                 + (f"{self.densities[0]:g}" if len(set(self.densities)) == 1
                    else ", ".join(f"{d:.3g}" for d in self.densities)),
                 f"  source: {self.source_params:,} weights ({self.source_dtype}; about {self.er_kept_params:.4g} kept "
                 f"by the ER masks, drawn only where read), width multiplier {self.width_multiplier:g}; ticket keeps "
                 f"{self.ticket_params:,}",
                 f"  {'layer':>18} {'fan_in':>7} {'fan_out':>7} {'sides':>5} {'k':>6} {'instances':>10} "
                 f"{'failures':>8} {'max inst err':>12} {'inst eps':>10} {'amplif':>8}"]
        for r in self.layers:
            lines.append(f"  {r['layer'][-18:]:>18} {r['fan_in']:>7} {r['fan_out']:>7} {2 if r['signed'] else 1:>5} "
                         f"{r['k']:>6} {r['instances']:>10,} {r['failures']:>8} {r['max_instance_error']:>12.3e} "
                         f"{r['instance_eps']:>10.3e} {r['amplification']:>8.3g}")
        tol = f"eps {self.eps} (split: {self.tolerance_split})" if self.eps is not None else f"weight-eps {self.weight_eps}"
        attacked = "" if self.attacked_error is None else f", attacked error {self.attacked_error:.3e}"
        lines.append(f"  {tol}: success {self.success} ({self.failures} of {self.instances:,} instances failed); "
                     f"certificate {self.certificate:.3e}"
                     + ("" if self.grouped_certificate is None else f" (grouped bound {self.grouped_certificate:.3e})")
                     + f"; sampled error {self.sampled_error:.3e} over "
                     f"{self.samples} inputs{attacked}; {self.seconds:.1f} s")
        for key, value in (self.extra or {}).items():
            lines.append(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
        return "\n".join(lines)


def build_conv_strong_ticket(model, input_shape, density, delta: float, seed: int, *, eps=None, weight_eps=None,
                             box=(-1.0, 1.0), width_multiplier: float = 1.0, samples: int = 256, scheme=None,
                             max_source_params=None, max_memory=None, progress=None, name=None):
    """Build the 2L strong ticket of a convolutional or residual ``model`` (an ``nn.Module``, an Architecture or a
    :class:`ConvTarget`) with inputs of ``input_shape`` in ``box``; returns (ConvTicket, ConvTicketReport).

    Refuses in one line, before anything is drawn: a source of more than ``max_source_params`` weights (None: no
    cap) and a build whose estimate (:func:`conv_build_bytes`) exceeds ``max_memory`` (None: the default fraction of
    the available memory)."""
    from theory.memory import check_memory

    t0 = time.perf_counter()
    target = conv_target(model, input_shape, box=box, name=name)
    delta = check_open_unit(delta, "delta")
    seed = check_positive_int(seed, "seed", 0)
    samples = check_positive_int(samples, "samples")
    sw, plan, layers = plan_conv_strong(target, density, delta, eps=eps, weight_eps=weight_eps,
                                        width_multiplier=width_multiplier, scheme=scheme)
    params = sum(fi * (fi * k + g0) + fo * (fi * k + g0) for fi, fo, k, g0 in layers)
    if max_source_params is not None and params > max_source_params:
        raise ValueError(f"source would have {params:.3g} weights: allowed at most {max_source_params:.3g} "
                         "(--max-source-params); use --width-multiplier < 1, a higher density or a smaller target")
    dtype_bytes = 8 if sw.source_dtype == "float64" else 4
    check_memory(conv_build_bytes(layers, sw, dtype_bytes),
                 f"the 2L ticket of {target.name} (a {params:.3g}-weight source)", max_memory)
    if progress is not None:
        progress.start(len(target.weighted) + 2)
    source = sample_conv_source(layers, sw.densities, seed, dtype=sw.source_dtype)
    effective = []
    ticket, reports = build_conv_2l(target, source, plan, eps=eps, progress=progress, effective_out=effective)
    cert = conv_certificate(ticket, effective)
    if progress is not None:
        progress.step(f"certificate {cert.certificate:.3e}")
    err = conv_sampled_error(ticket, samples=samples, seed=seed, effective=effective)
    if progress is not None:
        progress.step(f"sampled error {err.sampled_error:.3e} over {samples:,} inputs")
    for r, (_, _, k, g0) in zip(reports, layers):
        r["k"], r["g0"] = k, g0
        r["certificate_error"] = cert.layer_error[r["layer"]]
    failures = sum(r["failures"] for r in reports)
    meta = {"construction": "2l-conv", "target": target.name, "densities": list(sw.densities), "delta": delta,
            "eps": eps, "weight_eps": weight_eps, "seed": seed, "box": list(target.box),
            "input_shape": list(target.input_shape), "certificate": cert.certificate,
            "grouped_certificate": cert.grouped_certificate,
            "sampled_error": err.sampled_error, "source_dtype": sw.source_dtype,
            "width_multiplier": width_multiplier, "tolerance_split": "backward (a-priori forward widths)"
            if eps is not None else "instance", "batchnorm_folded": [list(f) for f in target.folded]}
    ticket = ConvTicket(ticket.target, ticket.source, ticket.layers, meta)
    report = ConvTicketReport(
        construction="2l", target=target.to_dict(), densities=tuple(sw.densities), delta=delta, eps=eps,
        weight_eps=weight_eps, tolerance_split=meta["tolerance_split"], success=failures == 0, failures=failures,
        instances=int(sum(r["instances"] for r in reports)), certificate=cert.certificate,
        sampled_error=err.sampled_error, samples=samples, source_params=int(params),
        er_kept_params=source.expected_kept(), ticket_params=ticket.kept_params, target_params=target.params,
        source_dtype=sw.source_dtype, width_multiplier=float(width_multiplier), layers=tuple(reports), seed=seed,
        seconds=time.perf_counter() - t0, grouped_certificate=cert.grouped_certificate)
    if not math.isfinite(report.certificate):
        raise ValueError(f"the certificate of this ticket is {report.certificate} (a float overflow): refused; scale "
                         "the target or the box down")
    return ticket, report


def load_conv_target(spec, *, weights=None, input_shape=None, seed: int = 0, box=(-1.0, 1.0)):
    """The :class:`ConvTarget` a ``--target`` spec names, or None when the spec is an MLP (the MLP constructions take
    it): the named models of :func:`construct.conv_targets.conv_module` ("digits-cnn", "digits-resnet", "resnet18"),
    a conv target (or ticket) ``.npz`` (:mod:`construct.conv_io`), or a ``model.py:factory`` / architecture ``.json``
    (with ``weights``) whose layers are not a ReLU MLP — then ``input_shape`` (c, H, W) is required."""
    text = str(spec)
    if isinstance(spec, str) and text.split(":", 1)[0] in CONV_MODEL_NAMES:
        from construct.conv_targets import conv_module

        shape = CONV_MODEL_SHAPES[text.split(":", 1)[0]]
        if input_shape is not None and tuple(input_shape) != tuple(shape):  # refused before any training
            raise ValueError(f"input_shape={list(input_shape)} does not match target {text!r}, whose inputs are "
                             f"{list(shape)}: allowed no --input-shape or {','.join(map(str, shape))}")
        module, shape, _ = conv_module(text, seed)
        return conv_target(module, shape, box=box, name=text)
    if isinstance(spec, str) and text.endswith(".npz"):
        from construct.conv_io import is_conv_target_file, load_conv_target_file
        from theory.input_files import check_input_file

        check_input_file(text, "target")
        if not is_conv_target_file(text):
            return None  # an MLP target file
        if input_shape is not None:
            raise ValueError(f"input-shape: target={text!r} is a convolutional target file, which stores its input "
                             "shape: allowed no --input-shape")
        return load_conv_target_file(text, box=box)
    if not isinstance(spec, str) or not (".py:" in text or text.endswith(".json")):
        return None
    if ".py:" in text:
        from construct.modules import load_module_factory, read_module

        arch = read_module(load_module_factory(text, weights), name=text.rpartition(":")[2])
    else:
        if weights is None:
            return None  # the MLP loader gives the one-line error
        from construct.modules import architecture_from_json

        arch = architecture_from_json(text, weights)
    try:
        arch.to_target()
        return None
    except ValueError:
        pass
    if input_shape is None:
        raise ValueError(f"target={text!r} is a convolutional or residual network: allowed with --input-shape "
                         "C,H,W (the shape of one input image)")
    return conv_target(arch, input_shape, box=box, name=text)


def digits_accuracies(ticket: ConvTicket, seed: int = 0) -> dict:
    """Test accuracy of the target and of the ticket on the held-out digits images
    (:func:`construct.conv_targets.digits_data`), and how many test predictions differ."""
    import numpy as np

    from construct.conv_targets import digits_data
    from construct.conv_ticket import conv_ticket_forward

    data = digits_data(seed)
    target_pred = ticket.target.forward(data.x_test).argmax(axis=1)
    ticket_pred = conv_ticket_forward(ticket, data.x_test).argmax(axis=1)
    return {"digits test accuracy (target)": float(np.mean(target_pred == data.y_test)),
            "digits test accuracy (ticket)": float(np.mean(ticket_pred == data.y_test)),
            "test predictions that differ": int(np.sum(target_pred != ticket_pred))}
