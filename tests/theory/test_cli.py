"""`python -m theory`: every command's output, --json, and bad input (one stderr line, exit 2, no traceback)."""
import json
import os
import subprocess
import sys

import pytest

from theory.__main__ import main
from theory.cli import run_main
from theory.densities import layer_densities
from theory.lower_bound import lower_bound_width, lower_bound_width_closed_form
from theory.weak_widths import weak_widths


def run(argv, capsys):
    try:
        rc = run_main(main, argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_lower_bound_json_and_text(capsys):
    rc, out, err = run(["lower-bound", "--inputs", "100", "--density", "0.01", "--delta", "0.01", "--json"], capsys)
    assert rc == 0 and err == ""
    data = json.loads(out)
    assert data["width"] == lower_bound_width(100, 0.01, 0.01)
    assert data["connection_probability_at_width"] >= 0.99 > data["connection_probability_below_width"]
    assert data["closed_form_width"] == pytest.approx(lower_bound_width_closed_form(100, 0.01, 0.01))
    assert data["er_factor"] == pytest.approx(1 / -__import__("math").log1p(-0.01))
    rc, out, _ = run(["lower-bound", "--inputs", "100", "--density", "0.01", "--delta", "0.01", "--output-density", "0.5"], capsys)
    assert rc == 0 and "width" in out and str(lower_bound_width(100, 0.01, 0.01, 0.5)) in out


def test_densities(tmp_path, capsys):
    shapes = [[300, 784], [100, 300], [10, 100]]
    path = tmp_path / "shapes.json"
    path.write_text(json.dumps(shapes))
    for compat in ([], ["--compat"]):
        rc, out, err = run(["densities", "--shapes", str(path), "--density", "0.1", "--scheme", "balanced", "--json", *compat], capsys)
        assert rc == 0 and err == ""
        data = json.loads(out)
        expected = layer_densities(shapes, 0.1, "balanced", compat=bool(compat))
        assert data["densities"] == pytest.approx(list(expected.densities))
        assert data["global_density"] == pytest.approx(expected.global_density)
    rc, out, _ = run(["densities", "--shapes", str(path), "--density", "0.1", "--scheme", "pyramidal"], capsys)
    assert rc == 0 and "global_density" in out


def test_widths_weak(capsys):
    rc, out, err = run(["widths", "--target", "784,300,100,10", "--density", "0.1", "--delta", "0.05", "--ticket", "weak", "--json"], capsys)
    assert rc == 0 and err == ""
    data = json.loads(out)
    w = weak_widths([784, 300, 100, 10], 0.1, 0.05)
    assert data["source_widths"] == list(w.source_widths)
    assert data["source_params"] == w.source_params and data["overparameterization"] == pytest.approx(w.overparameterization)
    rc, out, _ = run(["widths", "--target", "8,4,2", "--density", "0.5,0.4,0.3", "--delta", "0.05", "--ticket", "weak", "--json"], capsys)
    assert rc == 0 and json.loads(out)["densities"] == [0.5, 0.4, 0.3]


BAD = [
    [],
    ["frobnicate"],
    ["lower-bound", "--inputs", "100", "--density", "0", "--delta", "0.01"],
    ["lower-bound", "--inputs", "100", "--density", "0.1", "--delta", "1"],
    ["lower-bound", "--inputs", "x", "--density", "0.1", "--delta", "0.1"],
    ["lower-bound", "--inputs", "0", "--density", "0.1", "--delta", "0.1"],
    ["lower-bound", "--inputs", "10", "--density", "0.1", "--delta", "0.1", "--output-density", "2"],
    ["densities", "--shapes", "/nonexistent/shapes.json", "--density", "0.1", "--scheme", "erk"],
    ["densities", "--shapes", "{malformed}", "--density", "0.1", "--scheme", "erk"],
    ["densities", "--shapes", "{empty}", "--density", "0.1", "--scheme", "erk"],
    ["densities", "--shapes", "{badshape}", "--density", "0.1", "--scheme", "erk"],
    ["densities", "--shapes", "{empty}", "--density", "0.1", "--scheme", "random"],
    ["densities", "--shapes", "{good}", "--density", "1.5", "--scheme", "erk"],
    ["widths", "--target", "784", "--density", "0.1", "--delta", "0.05", "--ticket", "weak"],
    ["widths", "--target", "784,x", "--density", "0.1", "--delta", "0.05", "--ticket", "weak"],
    ["widths", "--target", "784,10", "--density", "a", "--delta", "0.05", "--ticket", "weak"],
    ["widths", "--target", "784,10", "--density", "0.1,0.2,0.3", "--delta", "0.05", "--ticket", "weak"],
    ["widths", "--target", "784,10", "--density", "0.1", "--delta", "0.05", "--ticket", "medium"],
    ["widths", "--target", "784,10", "--density", "0.1", "--delta", "0.05", "--ticket", "strong"],  # no --eps
    ["check", "--budget", "medium"],
    ["check", "--seed", "-1"],
]


@pytest.fixture
def shape_files(tmp_path):
    files = {"malformed": "[[3, 4],", "empty": "[]", "badshape": "[[3, 4], [0, 2]]", "good": "[[3, 4]]"}
    out = {}
    for name, text in files.items():
        (tmp_path / f"{name}.json").write_text(text)
        out["{" + name + "}"] = str(tmp_path / f"{name}.json")
    return out


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a) or "<none>" for a in BAD])
def test_bad_input_in_process(argv, shape_files, capsys):
    argv = [shape_files.get(a, a) for a in argv]
    rc, out, err = run(argv, capsys)
    assert rc == 2
    assert "Traceback" not in err
    if argv:  # with no command the help text goes to stderr
        assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv", [BAD[2], BAD[8], BAD[13], BAD[18], BAD[19]])
def test_bad_input_subprocess(argv, shape_files):
    argv = [shape_files.get(a, a) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "theory", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_check_command_exit_zero_and_json():
    proc = subprocess.run([sys.executable, "-m", "theory", "check", "--json", "--seed", "3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["all_hold"] is True and data["seed"] == 3 and data["budget"] == "fast"
    assert all(set(r) >= {"claim", "parameters", "trials", "observed", "ci_low", "ci_high", "bound", "holds"} for r in data["rows"])


def test_help_explains_every_option():
    import argparse

    from theory.__main__ import _build_parser

    parser = _build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == {"lower-bound", "densities", "widths", "check"}
    for name, command in sub.choices.items():
        options = [a for a in command._actions if not isinstance(a, argparse._HelpAction)]
        assert any("--json" in a.option_strings for a in options), name
        for action in options:
            assert action.help and len(action.help) > 15, (name, action.option_strings)
    proc = subprocess.run([sys.executable, "-m", "theory", "widths", "--help"], capture_output=True, text=True, timeout=60)
    text = " ".join(proc.stdout.split())  # undo argparse's line wrapping
    assert proc.returncode == 0 and "--construction" in text and "fraction of weights kept" in text


def test_importing_theory_never_imports_torch():
    code = (
        "import importlib, pkgutil, sys, theory\n"
        "for m in pkgutil.iter_modules(theory.__path__):\n"
        "    importlib.import_module('theory.' + m.name)\n"
        "bad = sorted(k for k in sys.modules if k == 'torch' or k.startswith('torch.'))\n"
        "print(len(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_command_is_one_line_listing_the_commands(capsys):
    rc, out, err = run([], capsys)
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == [
        "python -m theory: error: missing command: allowed lower-bound, densities, widths, check (see --help)"]


def test_os_errors_are_one_line_naming_the_path(capsys):
    def main(argv):
        raise PermissionError(13, "Permission denied", "/nowhere/t.npz")

    assert run_main(main, []) == 2
    assert capsys.readouterr().err == "error: '/nowhere/t.npz': Permission denied\n"

    def full(argv):
        raise OSError(28, "No space left on device")  # a write without a file name: standard output

    assert run_main(full, []) == 2
    assert capsys.readouterr().err == "error: standard output: No space left on device\n"


def test_width_overflow_is_a_refusal_not_a_crash(capsys):
    from theory.validation import WidthOverflowError, check_unit_count

    assert check_unit_count(3.2, "w") == 4 and check_unit_count(2**63 - 1, "w") == 2**63 - 1
    for value in (float("inf"), float("nan"), 2.0**63, 2**63, 10**400):
        with pytest.raises(WidthOverflowError):
            check_unit_count(value, "w")
    with pytest.raises(WidthOverflowError, match="2\\^63"):
        weak_widths([4, 3], 1e-320, 0.1)
    rc, _, err = run(["widths", "--target", "4,3", "--density", "1e-320", "--delta", "0.1", "--ticket", "weak"], capsys)
    assert rc == 2 and "2^63" in err and "density=0.0" not in err


def test_theory_and_construct_default_to_the_same_strong_construction():
    from construct.__main__ import build_parser
    from theory.__main__ import _build_parser

    t = _build_parser().parse_args(["widths", "--target", "4,3", "--density", "0.5", "--delta", "0.1", "--ticket",
                                    "strong", "--eps", "0.1"])
    c = build_parser().parse_args(["strong", "--target", "random:4,3", "--eps", "0.1"])
    assert t.construction == c.construction == "2l"


def test_no_help_text_describes_code_that_does_not_exist():
    """Issue 11 §9: help texts describe the code as it is ("if theory/subset_sum.py exists" is gone)."""
    import argparse

    from construct.__main__ import build_parser
    from experiments.__main__ import _parser
    from theory.__main__ import _build_parser

    texts = []
    for parser in (_build_parser(), build_parser(), _parser()):
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        texts.append(parser.description or "")
        for command in sub.choices.values():
            texts.append(command.description or "")
            texts.extend(a.help or "" for a in command._actions)
    text = " ".join(texts)
    for stale in ("exists", "not available", "if theory/", "not yet", "unavailable"):
        assert stale not in text, stale
