"""Hypothesis-generated command lines and files for every sub-command of the three CLIs, judged by the contract of
fuzz_harness (exit 0/2, or 1 where documented; no traceback; one stderr line for 2; nothing left after a refusal;
no pickle executed).

Each example is a *batch* of command lines run concurrently (a subprocess costs ~2 s of CPU), so CI=true runs one
derandomized batch per test (fixed seed and budget); ER_TICKETS_FUZZ=full runs many batches.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fuzz_harness import FULL, check_contract, run_many

#: Command lines per batch: each costs ~2 s of CPU, so CI=true (one batch per test) stays within its share of the
#: suite's two minutes on 2 cores.
SIZE = 8 if FULL else 6
BATCHES = int(os.environ.get("ER_TICKETS_FUZZ_BATCHES", "25" if FULL else "1"))
SETTINGS = settings(max_examples=BATCHES, deadline=None, derandomize=not FULL,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], database=None)

HOSTILE_NUMBERS = ["0", "-1", "-0", "1e-320", "5e-324", "1e308", "1e400", "inf", "-inf", "nan", "", " ", "abc", "0x10",
                   "1_000", "99999999999999999999999", "2", "1e-300", "\u0661", "1,2", "--", "-1e308"]
_ARG_TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=6)  # argv-safe
hostile = st.sampled_from(HOSTILE_NUMBERS) | st.floats().map(repr) | st.integers().map(str) | _ARG_TEXT


def option(name, safe, hostile_values=True):
    """[] (option left out), [name, safe value] or, with ``hostile_values``, [name, hostile value]."""
    choices = [st.just([]), st.tuples(st.just(name), st.sampled_from(safe)).map(list)]
    if hostile_values:
        choices.append(st.tuples(st.just(name), hostile).map(list))
    return st.one_of(*choices)


def command(head, *options):
    return st.tuples(*options).map(lambda parts: list(head) + [a for part in parts for a in part])


def _eq(parts):
    """argparse reads "--box -1,1" as two options; pass values as --name=value."""
    return [f"{parts[0]}={parts[1]}"] if len(parts) == 2 else parts


theory_cmd = st.one_of(
    command(["theory", "lower-bound"], option("--inputs", ["1", "10", "784"]), option("--density", ["0.5", "0.01", "1"]),
            option("--delta", ["0.1", "0.01"]), option("--output-density", ["1", "0.5"]), st.sampled_from([[], ["--json"]])),
    command(["theory", "widths"], option("--target", ["4,3", "784,300,10", "3,2,2"]),
            option("--density", ["0.5", "0.1", "0.5,0.4,0.3"]), option("--delta", ["0.1", "0.05"]),
            option("--eps", ["0.1", "0.05"]), option("--ticket", ["weak", "strong"]),
            option("--construction", ["l+1", "2l"]), st.sampled_from([[], ["--json"]])),
    command(["theory", "densities"], option("--shapes", ["/dev/null", "{missing}"]), option("--density", ["0.1"]),
            option("--scheme", ["erk", "balanced"]), option("--max-memory", ["1G", "10K"])),
    command(["theory", "check"], st.tuples(st.just("--budget"), st.sampled_from(["slow", "", "FAST"])).map(list),
            option("--seed", ["0"])),
)

construct_common = (
    option("--target", ["random:3,2", "random:4,3,2"]), option("--density", ["0.5", "0.8", "1"]),
    option("--delta", ["0.1"]), option("--seed", ["0", "3"]), option("--box", ["-1,1", "0,1"]).map(_eq),
    option("--width-multiplier", ["0.5", "1"]), option("--target-scale", ["1", "2"]),
    option("--target-density", ["1", "0.5"]), option("--samples", ["16", "64"]), option("--max-memory", ["2G"]),
    st.sampled_from([[], ["--json"], ["--no-target-biases"]]), st.just(["--out", "{out}/t.npz"]),
)
construct_cmd = st.one_of(
    command(["construct", "weak"], *construct_common, option("--weight-law", ["uniform", "normal"])),
    command(["construct", "strong"], *construct_common,
            st.tuples(st.just("--eps"), st.sampled_from(["0", "-1", "1", "nan", "inf", "1e-320", "abc", ""])).map(list),
            option("--construction", ["2l", "l+1"]), option("--max-source-params", ["1e5"])),
    command(["construct", "verify"], st.sampled_from([["{missing}"], ["/dev/null"], ["{out}"]]),
            option("--samples", ["16"])),
    command(["construct", "check"], st.tuples(st.just("--budget"), st.sampled_from(["slow", "", "FULL"])).map(list)),
    command(["construct", "bench"], st.tuples(st.just("--width-multiplier"), hostile).map(list), st.just(["--skip-solver"])),
)
experiments_cmd = st.one_of(
    command(["experiments", "run"], st.sampled_from([["e1"], ["nope"], [""], ["layerwise"]]),
            st.tuples(st.just("--seeds"), st.sampled_from(["0", "-1", "abc", "1e3", ""])).map(list),
            option("--scale", ["smoke"]), option("--threads", ["1"]), st.just(["--out", "{out}/res"])),
    command(["experiments", "figures"], st.sampled_from([["--results", "{missing}"], ["--results", "/dev/null"]]),
            st.just(["--out", "{out}/figs"])),
    command(["experiments", "bench"], option("--models", ["1"]), option("--steps", ["1"]),
            st.tuples(st.just("--threads"), st.sampled_from(["0", "-3", "x", "100000000"])).map(list)),
)


def _run_batch(commands, files=None, allowed=(0, 2)):
    """Run the command lines (placeholders {out}, {missing}, {file:NAME}) concurrently; check each."""
    base = Path(tempfile.mkdtemp(prefix="er-fuzz-"))
    try:
        canary = base / "CANARY"
        for name, writer in (files or {}).items():
            writer(base / name, canary)
        jobs = []
        for i, argv in enumerate(commands):
            case = base / f"case{i}"
            (case / "out").mkdir(parents=True)
            text = [a.replace("{out}", str(case / "out")).replace("{missing}", str(base / "missing.x"))
                    .replace("{file:", str(base) + "/").replace("}", "") if isinstance(a, str) else a for a in argv]
            jobs.append((text, case, {"out_dir": case / "out", "canary": canary}))
        for (argv, _, _), r in zip(jobs, run_many(jobs)):
            ok = allowed(argv) if callable(allowed) else allowed
            check_contract(r, ok)
        assert not canary.exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _allowed(argv):
    if argv[:2] in (["construct", "verify"], ["construct", "check"], ["theory", "check"]):
        return (0, 1, 2)  # verify: 1 = INVALID; check: 1 = a claim fails
    return (0, 2)


@SETTINGS
@given(st.lists(theory_cmd, min_size=SIZE, max_size=SIZE))
def test_theory_command_lines(commands):
    _run_batch(commands, allowed=_allowed)


@SETTINGS
@given(st.lists(construct_cmd, min_size=SIZE, max_size=SIZE))
def test_construct_command_lines(commands):
    _run_batch(commands, allowed=_allowed)


@SETTINGS
@given(st.lists(experiments_cmd, min_size=3, max_size=3))
def test_experiments_command_lines(commands):
    _run_batch(commands, allowed=_allowed)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=24)
shape_like = st.lists(st.lists(st.integers(-2, 2**70) | st.floats() | st.booleans(), max_size=6), max_size=5)


@SETTINGS
@given(st.lists(st.tuples(json_values | shape_like, st.sampled_from(["uniform", "erk", "balanced", "pyramidal"]),
                          st.sampled_from(["0.1", "1", "1e-320", "0.999"])), min_size=SIZE - 2,
                max_size=SIZE - 2))
def test_generated_shapes_files(items):
    files, commands = {}, []
    for i, (value, scheme, density) in enumerate(items):
        text = json.dumps(value, allow_nan=True)
        files[f"shapes{i}.json"] = (lambda t: lambda p, c: p.write_text(t))(text)
        commands.append(["theory", "densities", "--shapes", f"{{file:shapes{i}.json}}", "--density", density,
                         "--scheme", scheme, "--json"])
    _run_batch(commands, files)


_DTYPES = st.sampled_from([np.float64, np.float32, np.float16, np.int8, np.int64, np.bool_, np.complex128, np.uint8])
_ARRAYS = _DTYPES.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
_KEYS = st.sampled_from(["target_W1", "target_b1", "target_W2", "target_b2", "target_W3", "target_b3", "meta", "junk",
                         "source_W1", "ticket_S1"])


def _npz_writer(arrays, truncate):
    def write(path, canary):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        path.write_bytes(data[: len(data) * truncate // 4] if truncate < 4 else data)
    return write


@SETTINGS
@given(st.lists(st.tuples(st.dictionaries(_KEYS, _ARRAYS, max_size=6), st.integers(1, 4)), min_size=SIZE // 2,
                max_size=SIZE // 2))
def test_generated_npz_files(items):
    files, commands = {}, []
    for i, (arrays, truncate) in enumerate(items):
        files[f"t{i}.npz"] = _npz_writer(arrays, truncate)
        commands.append(["construct", "weak", "--target", f"{{file:t{i}.npz}}", "--samples", "16", "--out", "{out}/t.npz"])
        commands.append(["construct", "verify", f"{{file:t{i}.npz}}", "--samples", "16"])
    _run_batch(commands, files, allowed=_allowed)


def test_zip_member_that_is_not_npy(tmp_path):
    """An npz whose member is not a .npy file (np.load would ignore or misread it) is refused in one line."""
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("target_W1.txt", "hello")
    _run_batch([["construct", "weak", "--target", str(path), "--out", "{out}/t.npz"]])
