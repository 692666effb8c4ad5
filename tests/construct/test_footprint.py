"""The construct memory guard (construct.footprint), overflow-safe source sizes, and the CLI refusals of issue 13
class 1 / issue 15 item 6: one line, exit 2, naming the estimate and the flag; nothing drawn, no file written."""
from __future__ import annotations

import subprocess
import sys

import pytest

from construct.footprint import (BASE_BYTES, BLOCK_BYTES, PER_UNIT, PER_WEIGHT, SAVE_SUBMASK, check_build_memory,
                                 estimate_build_bytes, source_size)
from construct.strong import build_strong_ticket, check_max_source_params
from construct.targets import random_target
from construct.weak import build_weak_ticket
from theory.memory import MemoryBudgetError


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "construct", *args], capture_output=True, text=True, timeout=timeout)


def test_source_size_is_exact_and_refuses_overflow():
    assert source_size([3, 5, 2]) == (3 * 5 + 5 * 2, 7)
    big = 2**40
    assert source_size([big, 3]) == (3 * big, 3)  # exact integers, no float rounding
    with pytest.raises(ValueError, match="2\\^63 weights"):
        source_size([big, big])  # 2^80 weights
    with pytest.raises(ValueError, match="2\\^63 units"):
        source_size([3, 2**64, 2])


def test_estimate_follows_the_model_and_the_weight_dtype():
    widths = [10, 1000, 20]
    W, U = source_size(widths)
    for c in ("weak", "l+1", "2l"):
        e4 = estimate_build_bytes(c, widths, weight_bytes=4, threads=1)
        e8 = estimate_build_bytes(c, widths, weight_bytes=8, threads=1)
        materialized = c != "2l"
        assert e8 - e4 == pytest.approx(4 * W if materialized else 0.0)
        assert e4 == pytest.approx(PER_WEIGHT[c] * W + (4 * W if materialized else 0) + PER_UNIT[c] * U
                                   + BLOCK_BYTES[c] + BASE_BYTES[c])
        assert (estimate_build_bytes(c, widths, threads=3) - estimate_build_bytes(c, widths, threads=1)
                == 2 * BLOCK_BYTES[c])
        saved = estimate_build_bytes(c, widths, weight_bytes=8, save=True) - estimate_build_bytes(c, widths, weight_bytes=8)
        # the file's source weights and mask; 2L (sparse in memory) also builds the dense sub-masks, roles, biases
        assert saved == pytest.approx(9 * W + 17 * U if c != "2l" else 10 * W + 26 * U)
        assert SAVE_SUBMASK[c] == (c == "2l")


def test_check_build_memory_names_estimate_and_flag():
    with pytest.raises(MemoryBudgetError) as err:
        check_build_memory("2l", [784, 10**7, 300], budget=10**6)
    msg = str(err.value)
    assert "--max-memory" in msg and "needs about" in msg and "strong 2L" in msg and "\n" not in msg
    assert check_build_memory("2l", [3, 10, 2], budget=2**40) > 0


def test_library_refuses_before_drawing(monkeypatch):
    import construct.strong as strong
    import construct.weak as weak

    def boom(*a, **k):  # the guard must act before anything is drawn
        raise AssertionError("source drawn")

    monkeypatch.setattr(strong, "sample_source", boom)
    monkeypatch.setattr(weak, "sample_source", boom)
    target = random_target((3, 2), 0)
    with pytest.raises(MemoryBudgetError, match="max-memory"):
        build_strong_ticket(target, 0.5, 0.1, 0, eps=0.05, max_memory=10**6)
    with pytest.raises(MemoryBudgetError, match="max-memory"):
        build_weak_ticket(target, 0.5, 0.1, 0, max_memory=10**6)
    with pytest.raises(ValueError, match="max-source-params"):
        build_strong_ticket(target, 0.5, 0.1, 0, eps=0.05, max_source_params=10)


@pytest.mark.parametrize("value, expected", [(None, None), (float("inf"), None), (4e8, 400_000_000), (7, 7)])
def test_max_source_params_values(value, expected):
    assert check_max_source_params(value) == expected


@pytest.mark.parametrize("value", [float("nan"), 0, 0.5, -1, float("-inf"), "4e8", True])
def test_max_source_params_refused(value):
    with pytest.raises(ValueError, match="max_source_params"):
        check_max_source_params(value)


@pytest.mark.parametrize("args, fragments", [
    # issue 13 class 1: the weak source of 784-300-100-10 at density 0.1 (1.8e11 weights)
    (["weak", "--target", "random:784,300,100,10", "--density", "0.1", "--seed", "2"], ["needs about", "--max-memory"]),
    # 5.1e8 weights, about 8 GB: refused under an explicit budget whatever the machine has available
    (["weak", "--target", "random:3,2", "--width-multiplier", "1e6", "--max-memory", "2G"],
     ["needs about", "over the budget of 2 GiB", "--max-memory"]),
    # the 1.1e8-weight 2L source of issue 15 item 6, under an explicit budget
    (["strong", "--target", "random:4,3,2", "--density", "0.01", "--eps", "0.05", "--seed", "3", "--max-memory", "600M"],
     ["needs about", "--max-memory", "1.15e+08 weights"]),
    (["strong", "--target", "random:4,3,2", "--density", "0.01", "--eps", "0.05", "--construction", "l+1",
      "--max-source-params", "1e13"], ["needs about", "--max-memory"]),
    (["strong", "--target", "random:3,2", "--eps", "0.05", "--width-multiplier", "1e308"], ["2^63 units"]),
    (["weak", "--target", "random:3,2", "--width-multiplier", "1e308"], ["2^63 units"]),
    (["strong", "--target", "random:3,2", "--eps", "0.05", "--max-source-params", "nan"], ["max_source_params"]),
    (["strong", "--target", "random:3,2", "--eps", "0.05", "--max-source-params", "10"], ["--max-source-params"]),
    (["strong", "--target", "random:3,2", "--eps", "0.05", "--max-memory", "0"], ["max_memory"]),
    (["weak", "--target", "random:3,2", "--max-memory", "lots"], ["max_memory"]),
    (["bench", "--skip-solver", "--max-memory", "100M"], ["needs about", "--max-memory"]),
    (["bench", "--memory", "--max-memory", "100M"], ["needs about", "--max-memory"]),
])
def test_cli_refuses_in_one_line(tmp_path, capsys, args, fragments):
    from construct.__main__ import main
    from theory.cli import run_main

    out = [] if args[0] == "bench" else ["--out", str(tmp_path / "t.npz")]
    try:
        rc = run_main(main, [*args, *out])
    except SystemExit as exc:  # argparse
        rc = exc.code
    err = capsys.readouterr()
    assert rc == 2, err.err
    assert len(err.err.strip().splitlines()) == 1, err.err
    for fragment in fragments:
        assert fragment in err.err, err.err
    assert err.out == ""
    assert list(tmp_path.iterdir()) == []


def test_cli_subprocess_refusal_of_issue_13(tmp_path):
    """End to end: the case that died with numpy's _ArrayMemoryError is one line, exit 2."""
    r = _cli("weak", "--target", "random:784,300,100,10", "--density", "0.1", "--seed", "2",
             "--out", str(tmp_path / "w.npz"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "needs about" in r.stderr and "--max-memory" in r.stderr and r.stdout == ""
    assert list(tmp_path.iterdir()) == []


def _run(argv, capsys):
    from construct.__main__ import main
    from theory.cli import run_main

    rc = run_main(main, argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_max_source_params_inf_means_no_cap(capsys):
    rc, out, err = _run(["strong", "--target", "random:3,2", "--density", "0.5", "--eps", "0.05",
                         "--max-source-params", "inf", "--progress", "none", "--samples", "64"], capsys)
    assert rc == 0 and "success True" in out and err == ""


@pytest.mark.parametrize("command", [["strong", "--eps", "0.05"], ["strong", "--eps", "0.05", "--construction", "l+1"],
                                     ["weak"]])
def test_progress_on_stderr_only(capsys, command):
    base = [command[0], "--target", "random:3,4,2", "--density", "0.5", "--seed", "1", "--samples", "64",
            *command[1:]]
    rc, out_none, err_none = _run([*base, "--progress", "none"], capsys)
    assert rc == 0 and err_none == ""
    rc, out_lines, err_lines = _run([*base, "--progress", "lines"], capsys)
    assert rc == 0
    lines = err_lines.strip().splitlines()
    assert len(lines) == 2 + 2  # target layers 2 and 1, certificate, sampled error
    assert lines[0].startswith(f"construct {command[0]}: [1/4] target layer ")
    assert lines[1].startswith(f"construct {command[0]}: [2/4] target layer ")
    assert "certificate" in lines[2] and "sampled error" in lines[3]
    rc, out_auto, err_auto = _run([*base, "--progress", "auto"], capsys)  # stderr is not a terminal here: lines
    assert rc == 0 and len(err_auto.strip().splitlines()) == 4
    rc, out_bar, err_bar = _run([*base, "--progress", "bar"], capsys)
    assert rc == 0 and f"construct {command[0]}" in err_bar and "0/4" in err_bar  # a tqdm bar
    strip = lambda text: "\n".join(l for l in text.splitlines() if "s\n" not in l and not l.strip().startswith("success"))
    assert strip(out_none) == strip(out_lines) == strip(out_auto) == strip(out_bar)  # the timing line differs


def test_progress_choice_validated(capsys):
    with pytest.raises(SystemExit) as exc:
        _run(["weak", "--target", "random:3,2", "--progress", "loud"], capsys)
    assert exc.value.code == 2


def test_out_directory_checked_before_building(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (tmp_path / "missing" / "t.npz", blocker / "t.npz"):
        rc, stdout, err = _run(["weak", "--target", "random:3,2", "--out", str(out), "--progress", "lines"], capsys)
        assert rc == 2 and stdout == "" and len(err.strip().splitlines()) == 1 and "out=" in err
