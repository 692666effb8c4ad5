"""The hand-made hostile cases of issues 13 and 15 that this suite runs (:data:`CASES`; :data:`FULL_ONLY` names
those that run only with ``ER_TICKETS_FUZZ=full``).

A case is a command line with placeholders: ``{out}`` (an empty output directory, checked to stay empty after a
refusal), ``{tmp}`` (the case's scratch directory), ``{canary}`` (the pickle canary path), ``{file:NAME}`` (a file
built by :data:`fuzz_files.BUILDERS`; ``fifo*`` names are FIFOs). ``allowed`` are the exit statuses the case may
end with; ``contains`` strings stderr must hold; ``lacks`` strings it must not hold; ``fsize`` a file-size limit
(bytes) for the run; ``classes`` the issue items it covers ("13.1" … "13.8", "15.1" … "15.7", "11.9").
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple
    allowed: tuple = (2,)
    contains: tuple = ()
    lacks: tuple = ()
    classes: tuple = ()
    fsize: int | None = None
    expect_files: tuple = field(default_factory=tuple)  # files that must exist in {out} after status 0


def C(id, argv, allowed=(2,), contains=(), lacks=(), classes=(), fsize=None, expect_files=()):
    return Case(id, tuple(argv.split()) if isinstance(argv, str) else tuple(argv), tuple(allowed), tuple(contains),
                tuple(lacks), tuple(classes), fsize, tuple(expect_files))


SMALL = "--target random:4,3,2"
OUT = "--out {out}/t.npz"

CASES = [
    # ------------------------------------------------------------------ sanity: the commands do work
    C("ok-theory-lower-bound", "theory lower-bound --inputs 10 --density 0.5 --delta 0.1", (0,)),
    C("ok-theory-widths-strong", "theory widths --target 4,3 --density 0.5 --delta 0.1 --eps 0.1 --ticket strong --json", (0,)),
    C("ok-theory-densities", "theory densities --shapes {file:shapes_good.json} --density 0.1 --scheme erk", (0,)),
    C("ok-construct-weak-out", f"construct weak {SMALL} {OUT}", (0,), expect_files=("t.npz",)),
    C("ok-construct-verify", "construct verify {file:ticket.npz}", (0,)),
    C("ok-experiments-list", "experiments list", (0,)),
    # ------------------------------------------------------------------ 13.1 memory: estimate before allocating
    C("13.1-strong-samples-1e12", f"construct strong {SMALL} --eps 0.1 --samples 1000000000000 {OUT}",
      contains=("--max-memory",), classes=("13.1",)),
    C("13.1-weak-samples-1e12", f"construct weak {SMALL} --samples 1000000000000 {OUT}", contains=("--max-memory",),
      classes=("13.1",)),
    C("13.1-verify-samples-1e12-float", "construct verify {file:ticket.npz} --samples 1e12", classes=("13.1",)),
    C("13.1-verify-samples-1e12", "construct verify {file:ticket.npz} --samples 1000000000000",
      contains=("--max-memory",), classes=("13.1",)),
    C("13.1-target-random-huge", f"construct weak --target random:100000,100000 {OUT}", contains=("--max-memory",),
      classes=("13.1",)),
    C("13.1-target-digits-huge", f"construct weak --target digits:1000000000 {OUT}", contains=("--max-memory",),
      classes=("13.1",)),
    C("13.1-target-npz-header-1e10", "construct weak --target {file:target_huge_header.npz} " + OUT,
      contains=("--max-memory", "npz headers"), classes=("13.1",)),
    C("13.1-verify-npz-header-1e10", "construct verify {file:ticket_huge_header.npz}", contains=("--max-memory",),
      classes=("13.1",)),
    C("13.1-densities-max-memory", "theory densities --shapes {file:shapes_good.json} --density 0.1 --scheme erk "
      "--max-memory 1K", contains=("--max-memory",), classes=("13.1",)),
    C("13.1-max-memory-malformed", f"construct weak {SMALL} --max-memory lots", contains=("max_memory",), classes=("13.1",)),
    C("13.1-threads-huge", "experiments bench --threads 100000000", contains=("threads",), classes=("13.1",)),
    # ------------------------------------------------------------------ 13.2 tiny / huge valid numbers
    C("13.2-weak-widths-density-1e-320", "theory widths --target 4,3 --density 1e-320 --delta 0.1 --ticket weak",
      contains=("2^63",), lacks=("density=0.0",), classes=("13.2", "15.5")),
    C("13.2-strong-widths-eps-1e-320", "theory widths --target 4,3 --density 0.5 --delta 0.1 --eps 1e-320 --ticket strong",
      contains=("eps=", "allowed eps >"), classes=("13.2",)),  # below float64 resolution: refused before the widths
    C("13.2-strong-widths-density-1e-320", "theory widths --target 4,3 --density 1e-320 --delta 0.1 --eps 0.1 "
      "--ticket strong", contains=("2^63",), lacks=("density=0.0",), classes=("13.2", "15.5")),
    C("13.2-strong-widths-delta-1e-320", "theory widths --target 4,3 --density 0.5 --delta 1e-320 --eps 0.1 "
      "--ticket strong --construction l+1", contains=("2^63",), classes=("13.2",)),
    C("13.2-weak-widths-delta-1e-320", "theory widths --target 4,3 --density 0.5 --delta 1e-320 --ticket weak", (0,),
      classes=("13.2",)),
    C("13.2-lower-bound-density-1e-320", "theory lower-bound --inputs 10 --density 1e-320 --delta 0.1",
      classes=("13.2",)),
    C("13.2-lower-bound-delta-1e-320", "theory lower-bound --inputs 10 --density 0.5 --delta 1e-320", (0,),
      classes=("13.2",)),
    C("13.2-construct-density-1e-320", f"construct weak {SMALL} --density 1e-320 {OUT}", contains=("2^63",),
      lacks=("density=0.0",), classes=("13.2", "15.5")),
    C("13.2-construct-strong-density-1e-320", f"construct strong {SMALL} --eps 0.1 --density 1e-320 {OUT}",
      contains=("2^63",), lacks=("density=0.0",), classes=("13.2", "15.5")),
    # a tolerance below what float64 source weights resolve is refused before any width is computed
    C("13.2-construct-eps-1e-320", f"construct strong {SMALL} --eps 1e-320 {OUT}", contains=("eps=", "allowed eps >"),
      classes=("13.2",)),
    C("13.2-construct-delta-1e-320", f"construct strong {SMALL} --eps 0.1 --delta 1e-320 {OUT}", contains=("2^63",),
      classes=("13.2",)),
    C("13.2-construct-weight-eps-1e-320", f"construct strong {SMALL} --weight-eps 1e-320 {OUT}",
      contains=("eps=1e-320", "allowed eps >"), classes=("13.2",)),
    C("13.2-box-1e308", ["construct", "weak", "--target", "random:4,3,2", "--box=-1e308,1e308", "--out", "{out}/t.npz"],
      contains=("box",), classes=("13.2",)),
    C("13.2-inputs-huge", "theory lower-bound --inputs 99999999999999999999999999999999 --density 0.5 --delta 0.1",
      (0, 2), classes=("13.2",)),
    # ------------------------------------------------------------------ 15.5 silent acceptance
    C("15.5-weak-target-scale-1e308", f"construct weak {SMALL} --target-scale 1e308 {OUT}", contains=("1e+300",),
      classes=("15.5",)),
    C("15.5-strong-target-scale-1e308", f"construct strong {SMALL} --eps 0.1 --target-scale 1e308 {OUT}",
      classes=("15.5",)),
    C("15.5-target-npz-huge-values", "construct weak --target {file:target_huge_values.npz} " + OUT, classes=("15.5",)),
    C("15.5-target-npz-W3-without-W2", "construct weak --target {file:target_gap.npz} " + OUT,
      contains=("target_W2",), classes=("15.5",)),
    C("15.5-target-npz-no-bias", "construct weak --target {file:target_no_bias.npz} " + OUT, contains=("target_b1",),
      classes=("15.5",)),
    C("target-npz-nan", "construct weak --target {file:target_nan.npz} " + OUT, classes=("15.5",)),
    C("target-npz-3d", "construct weak --target {file:target_bad_shape.npz} " + OUT, classes=("15.5",)),
    C("target-npz-mismatch", "construct weak --target {file:target_mismatch.npz} " + OUT, classes=("15.5",)),
    C("target-npz-strings", "construct weak --target {file:target_strings.npz} " + OUT, classes=("15.5",)),
    C("target-npz-bad-header", "construct weak --target {file:target_bad_header.npz} " + OUT, classes=("13.1",)),
    C("target-npz-not-zip", "construct weak --target {file:target_not_zip.npz} " + OUT),
    C("target-npz-empty", "construct weak --target {file:target_empty.npz} " + OUT),
    C("verify-truncated", "construct verify {file:ticket_truncated.npz}"),
    # ------------------------------------------------------------------ pickle canaries (no payload may run)
    C("canary-target-npz-object", "construct weak --target {file:target_pickle.npz} " + OUT, classes=("canary",)),
    C("canary-verify-meta-object", "construct verify {file:ticket_pickle_meta.npz}", classes=("canary",)),
    C("canary-target-torch-reduce", "construct weak --target {file:target_pickle.pt} " + OUT, classes=("canary",)),
    # ------------------------------------------------------------------ 13.4 shapes JSON
    C("13.4-shapes-deep", "theory densities --shapes {file:shapes_deep.json} --density 0.1 --scheme erk",
      contains=("nested too deeply",), classes=("13.4",)),
    C("13.4-shapes-deep-shape", "theory densities --shapes {file:shapes_deep_shape.json} --density 0.1 --scheme erk",
      classes=("13.4",)),
    C("13.4-shapes-bigint", "theory densities --shapes {file:shapes_bigint.json} --density 0.1 --scheme erk",
      contains=("2^63",), classes=("13.4",)),
    C("13.4-shapes-bigint-digits", "theory densities --shapes {file:shapes_bigint_digits.json} --density 0.1 "
      "--scheme balanced", classes=("13.4",)),
    C("13.4-shapes-product-overflow", "theory densities --shapes {file:shapes_overflow_product.json} --density 0.1 "
      "--scheme pyramidal", contains=("2^63",), classes=("13.4",)),
    C("13.4-shapes-float-1e400", "theory densities --shapes {file:shapes_float.json} --density 0.1 --scheme erk",
      classes=("13.4",)),
    C("13.4-shapes-nan", "theory densities --shapes {file:shapes_nan.json} --density 0.1 --scheme erk", classes=("13.4",)),
    C("13.4-shapes-dict", "theory densities --shapes {file:shapes_dict.json} --density 0.1 --scheme erk", classes=("13.4",)),
    C("13.4-shapes-dict-shape", "theory densities --shapes {file:shapes_dict_shape.json} --density 0.1 --scheme erk",
      classes=("13.4",)),
    C("13.4-shapes-bool", "theory densities --shapes {file:shapes_bool.json} --density 0.1 --scheme erk", classes=("13.4",)),
    C("13.4-shapes-not-utf8", "theory densities --shapes {file:shapes_nonutf8.json} --density 0.1 --scheme erk",
      classes=("13.4",)),
    C("13.4-shapes-empty-file", "theory densities --shapes {file:shapes_empty_file.json} --density 0.1 --scheme erk",
      classes=("13.4",)),
    # ------------------------------------------------------------------ 13.5 output paths and disk
    C("13.5-out-parent-is-file", "construct weak " + SMALL + " --out {file:plain_file}/t.npz", classes=("13.5",)),
    C("13.5-out-name-too-long", f"construct weak {SMALL} --out {{out}}/{'x' * 300}.npz",
      contains=("File name too long",), classes=("13.5",)),
    C("13.5-out-unwritable-dir", f"construct weak {SMALL} --out /proc/er-tickets-fuzz-out.npz", classes=("13.5",)),
    C("13.5-out-is-directory", f"construct weak {SMALL} --out {{out}}", contains=("is a directory",), classes=("13.5",)),
    # the limit hits while the ticket is written, after the build's progress lines: without them, one line
    C("13.5-out-file-size-limit", f"construct weak {SMALL} --progress none {OUT}", contains=("t.npz", "File too large"),
      classes=("13.5",), fsize=16384),
    C("13.5-experiments-out-is-file", "experiments run e1 --out {file:plain_file}", classes=("13.5",)),
    C("13.5-experiments-figures-missing", "experiments figures --results {tmp}/missing --out {out}/figs",
      classes=("13.5",)),
    # ------------------------------------------------------------------ 15.1 special files refused before reading
    C("15.1-shapes-fifo", "theory densities --shapes {file:fifo.json} --density 0.1 --scheme erk", contains=("FIFO",),
      classes=("15.1",)),
    C("15.1-shapes-dev-zero", "theory densities --shapes /dev/zero --density 0.1 --scheme erk",
      contains=("character device",), classes=("15.1",)),
    C("15.1-shapes-directory", "theory densities --shapes {tmp} --density 0.1 --scheme erk", contains=("directory",),
      classes=("15.1",)),
    C("15.1-target-fifo-npz", "construct weak --target {file:fifo.npz} " + OUT, contains=("FIFO",), classes=("15.1",)),
    C("15.1-target-fifo-pt", "construct weak --target {file:fifo.pt} " + OUT, contains=("FIFO",), classes=("15.1",)),
    C("15.1-verify-fifo", "construct verify {file:fifo.npz}", contains=("FIFO",), classes=("15.1",)),
    C("15.1-verify-dev-zero", "construct verify /dev/zero", contains=("character device",), classes=("15.1",)),
    # ------------------------------------------------------------------ 15.7 / 11.9 the command lines themselves
    C("15.7-theory-no-command", "theory", contains=("missing command",), classes=("15.7",)),
    C("15.7-construct-no-command", "construct", contains=("missing command",), classes=("15.7",)),
    C("15.7-experiments-no-command", "experiments", contains=("missing command",), classes=("15.7",)),
    C("15.7-theory-unknown-command", "theory frobnicate", classes=("15.7",)),
    # ------------------------------------------------------------------ 13.1 / 15.6 construct source memory
    C("13.1-weak-source-784-300-100-10", f"construct weak --target random:784,300,100,10 --density 0.1 --seed 2 {OUT}",
      (0, 2), classes=("13.1",)),
    C("13.1-strong-density-0.01", f"construct strong {SMALL} --density 0.01 --eps 0.05 --seed 3 {OUT}", (0, 2),
      classes=("13.1", "15.6")),
    # the guard's estimate (measured bytes per weight) refuses the case above under a budget it does not fit
    C("15.6-strong-density-0.01-max-memory-1G", f"construct strong {SMALL} --density 0.01 --eps 0.05 --seed 3 "
      f"--max-memory 1G {OUT}", contains=("strong 2L", "1.15e+08 weights", "--max-memory"), classes=("15.6",)),
    C("13.1-max-source-params-1e13", f"construct strong {SMALL} --eps 0.1 --density 0.05 --max-source-params 1e13 {OUT}",
      (0, 2), classes=("13.1",)),
    C("13.1-weak-width-multiplier-1e6", f"construct weak {SMALL} --width-multiplier 1e6 {OUT}", contains=("--max-memory",),
      classes=("13.1",)),
    C("13.2-weak-width-multiplier-1e308", f"construct weak {SMALL} --width-multiplier 1e308 {OUT}", contains=("2^63",),
      classes=("13.2",)),
    C("13.2-strong-width-multiplier-1e308", f"construct strong {SMALL} --eps 0.1 --width-multiplier 1e308 {OUT}",
      contains=("2^63",), classes=("13.2",)),
    C("13.2-max-source-params-inf", f"construct strong {SMALL} --eps 0.1 --max-source-params inf {OUT}", (0, 2),
      classes=("13.2",)),  # inf means no cap
    C("13.2-max-source-params-nan", f"construct strong {SMALL} --eps 0.1 --max-source-params nan {OUT}",
      contains=("max_source_params",), classes=("13.2",)),
    # ------------------------------------------------------------------ 13.1 experiments: sweeps and benches
    # refused by a fixed range (one line naming the flag) before the memory guard is consulted
    C("13.1-experiments-seeds-1e9", "experiments run e1 --seeds 1000000000 --out {out}/r",
      contains=("seeds=1000000000", "allowed"), classes=("13.1",)),
    C("13.1-experiments-bench-models-1e9", "experiments bench --models 1000000000",
      contains=("models=1000000000", "allowed"), classes=("13.1",)),
    # ------------------------------------------------------------------ 13.3 / 15.5 state_dict entries
    *[C(f"13.3-{name[:-3]}", "construct weak --target {file:%s} %s" % (name, OUT), classes=("13.3",))
      for name in ("sd_int_keys.pt", "sd_nested.pt", "sd_non_tensor.pt", "sd_list.pt", "sd_string_bias.pt",
                   "sd_sparse.pt", "sd_meta.pt", "sd_nan.pt")],
    C("15.5-sd-complex", "construct weak --target {file:sd_complex.pt} " + OUT, contains=("complex",), classes=("15.5",)),
    # ------------------------------------------------------------------ 15.4 verify: VALID only when true
    # a well-formed file whose claims do not hold: INVALID with the reason on stdout, exit 1 (a certificate of
    # infinity, above eps, missing or null; densities 2; an unknown weight law; a box of three or non-finite numbers)
    *[C(f"15.4-{name[:-4]}", "construct verify {file:%s}" % name, (1,), classes=("15.4",))
      for name in ("t_cert_inf.npz", "t_cert_above_eps.npz", "t_no_cert.npz", "t_null_cert.npz", "t_densities_2.npz",
                   "t_law_cauchy.npz", "t_box_three.npz", "t_box_nan.npz")],
    # a malformed file (meta of the wrong JSON type, a seed beyond 64 bits, JSON nested 10^5 deep): exit 2, one line
    *[C(f"15.4-{name[:-4]}", "construct verify {file:%s}" % name, (2,), classes=("15.4",))
      for name in ("t_cert_inf_string.npz", "t_cert_list.npz", "t_eps_dict.npz", "t_box_5.npz", "t_seed_null.npz",
                   "t_seed_1e400.npz", "t_meta_deep.npz")],
    # ------------------------------------------------------------------ 13.6 damaged results files
    *[C(f"13.6-{name}", "experiments run e1 --resume --out {file:%s}" % name, contains=("line 1",), classes=("13.6",))
      for name in ("res_no_key", "res_list_key", "res_nan_metric", "res_no_metrics")],
    *[C(f"13.6-figures-{name}", "experiments figures --results {file:%s} --out {out}/figs" % name, contains=("line 1",),
        classes=("13.6",)) for name in ("res_no_key", "res_list_key", "res_nan_metric", "res_no_metrics")],
    # ------------------------------------------------------------------ 13.8 / 15.5 CIFAR batches: refused before the sweep
    C("13.8-cifar-labels-99", "experiments run layerwise --scale paper --data-dir {file:cifar_labels_99} --out {out}/r",
      contains=("label 99",), classes=("13.8",)),
    C("13.8-cifar-float-pixels", "experiments run layerwise --scale paper --data-dir {file:cifar_float_pixels} "
      "--out {out}/r", contains=("float64",), classes=("13.8", "15.5")),
    C("13.8-cifar-pickle-payload", "experiments run layerwise --scale paper --data-dir {file:cifar_pickle_payload} "
      "--out {out}/r", classes=("13.8", "canary")),
]
# Not a single command line: 13.7 (two writers on one results directory) needs two processes at once; it is
# covered by tests/experiments/test_hostile_inputs.py::test_second_writer_is_refused_while_a_sweep_holds_the_lock.

assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"

#: Variants run only with ER_TICKETS_FUZZ=full: each subprocess costs ~2 s of CPU (interpreter, numpy, scipy), and
#: CI=true keeps the suite under two minutes on 2 cores with one or more cases of every class.
FULL_ONLY = {
    "ok-theory-densities", "ok-experiments-list",
    "13.1-weak-samples-1e12", "13.1-verify-samples-1e12-float", "13.1-max-memory-malformed", "13.1-threads-huge",
    "13.2-strong-widths-eps-1e-320", "13.2-strong-widths-delta-1e-320", "13.2-lower-bound-delta-1e-320",
    "13.2-construct-strong-density-1e-320", "13.2-construct-delta-1e-320",     "13.2-inputs-huge",
    "15.5-strong-target-scale-1e308", "15.5-target-npz-no-bias", "target-npz-nan", "target-npz-3d",
    "target-npz-mismatch", "target-npz-strings", "target-npz-not-zip", "target-npz-empty", "verify-truncated",
    "13.4-shapes-deep-shape", "13.4-shapes-bigint", "13.4-shapes-float-1e400", "13.4-shapes-nan", "13.4-shapes-dict",
    "13.4-shapes-bool", "13.4-shapes-not-utf8", "13.4-shapes-empty-file",
    "13.5-out-is-directory", "13.5-experiments-figures-missing",
    "15.1-shapes-directory", "15.1-target-fifo-pt", "15.1-verify-dev-zero",
    "15.7-theory-unknown-command",
    "13.1-strong-density-0.01", "13.1-max-source-params-1e13",  # real 2L builds: 30-80 s each
    "13.2-strong-width-multiplier-1e308", "13.2-max-source-params-inf", "13.1-experiments-bench-models-1e9",
    "13.3-sd_int_keys", "13.3-sd_nested", "13.3-sd_list", "13.3-sd_string_bias", "13.3-sd_nan",
    "15.4-t_cert_above_eps", "15.4-t_null_cert", "15.4-t_densities_2", "15.4-t_law_cauchy", "15.4-t_box_three",
    "15.4-t_cert_inf_string", "15.4-t_cert_list", "15.4-t_eps_dict", "15.4-t_box_5", "15.4-t_seed_null",
    "13.6-res_list_key", "13.6-res_nan_metric", "13.6-res_no_metrics", "13.6-figures-res_no_key",
    "13.6-figures-res_list_key", "13.6-figures-res_no_metrics", "13.8-cifar-float-pixels",
    "13.1-weak-source-784-300-100-10", "13.1-experiments-seeds-1e9", "13.2-max-source-params-nan",
    "13.3-sd_non_tensor", "13.3-sd_meta", "15.4-t_box_nan", "15.4-t_no_cert", "15.4-t_meta_deep",
    "13.6-figures-res_nan_metric", "13.8-cifar-labels-99", "13.1-weak-width-multiplier-1e6",
    "13.2-weak-width-multiplier-1e308", "15.4-t_seed_1e400", "15.5-sd-complex",
}
assert FULL_ONLY <= {c.id for c in CASES}
