"""Closed and full standard output, SIGTERM and SIGKILL during an atomic write (issue 15 items 2 and 3)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fuzz_harness import FULL, ROOT, TEMP_MARKER, check_contract, env, run, start

WIDTHS_JSON = ["theory", "widths", "--target", "4,3", "--density", "0.5", "--delta", "0.1", "--ticket", "weak", "--json"]


def _closed_pipe_run(argv, cwd):
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: every write to the pipe fails with EPIPE
    try:
        proc = start(argv, cwd, stdout=write_end)
    finally:
        os.close(write_end)
    _, err = proc.communicate(timeout=180)
    return proc.returncode, err.decode()


@pytest.mark.parametrize("argv", [WIDTHS_JSON] + ([["experiments", "list"], ["construct", "weak", "--target",
                                                   "random:3,2", "--json"]] if FULL else []))
def test_closed_stdout_exits_quietly(argv, tmp_path):
    """`... --json | head -c1`: the Unix convention, a quiet exit with 128 + SIGPIPE (no traceback, no message)."""
    rc, err = _closed_pipe_run(argv, tmp_path)
    assert rc == 141, (rc, err)
    assert err == "", err


def test_full_stdout_is_one_line(tmp_path):
    """Writing the output to /dev/full: one line naming standard output and the reason, exit 2."""
    with open("/dev/full", "w") as full:
        r = run(WIDTHS_JSON, tmp_path, stdout=full)
    check_contract(r, (2,), stderr_contains=("standard output", "No space left on device"))


_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from theory.atomic import atomic_path
    from theory.cli import run_main

    def main(argv):
        dest = Path(argv[0])
        with atomic_path(dest, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"partial")
                fh.flush()
                Path(argv[1]).write_text("writing")  # tell the test the temporary file exists
                time.sleep(120)
        return 0

    sys.exit(run_main(main, sys.argv[1:]))
""")


def _start_slow_writer(out: Path, ready: Path):
    return subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(out / "t.npz"), str(ready)], cwd=ROOT,
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(path: Path, proc, seconds=120.0):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the writer never started writing"
        time.sleep(0.05)


def test_sigterm_during_atomic_write_removes_the_temporary_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    ready = tmp_path / "ready"
    proc = _start_slow_writer(out, ready)
    _wait_for(ready, proc)
    temps = [p.name for p in out.iterdir()]
    assert len(temps) == 1 and TEMP_MARKER in temps[0] and temps[0].startswith(".t.npz"), temps
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (proc.returncode, err)
    assert err.decode().strip() == "terminated"
    assert list(out.iterdir()) == []


def test_sigkill_leaves_a_stale_temporary_that_the_next_write_removes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    ready = tmp_path / "ready"
    proc = _start_slow_writer(out, ready)
    _wait_for(ready, proc)
    proc.kill()  # SIGKILL: nothing can clean up
    proc.communicate(timeout=60)
    (stale,) = list(out.iterdir())
    assert TEMP_MARKER in stale.name
    # a temporary file of a live process (this test's own pid) and an unrelated hidden file must survive
    live = out / f".other.npz{TEMP_MARKER}{os.getpid()}-0123456789abcdef.npz"
    live.write_bytes(b"x")
    unrelated = out / ".t.npz.keepme.npz"
    unrelated.write_bytes(b"y")
    r = run(["construct", "weak", "--target", "random:3,2", "--out", str(out / "t.npz")], tmp_path)
    check_contract(r, (0,))
    names = sorted(p.name for p in out.iterdir())
    assert not stale.exists(), names
    assert live.exists() and unrelated.exists() and "t.npz" in names, names


def test_sigterm_at_a_random_moment_leaves_a_valid_file_or_none(tmp_path):
    """A real command: whenever SIGTERM lands, the output is absent or complete, and no temporary file stays."""
    delays = (0.5, 3.0, 6.0, 9.0) if FULL else (4.0,)
    for i, delay in enumerate(delays):
        out = tmp_path / f"out{i}"
        out.mkdir()
        proc = start(["construct", "weak", "--target", "random:20,30,10", "--out", str(out / "t.npz")], tmp_path)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=180)
        text = err.decode()
        # killed before run_main installed its handler (during imports): -15; handled: 143; finished first: 0
        assert proc.returncode in (0, 143, -signal.SIGTERM), (proc.returncode, text)
        assert "Traceback" not in text, text
        names = [p.name for p in out.iterdir()]
        assert not [n for n in names if TEMP_MARKER in n], names
        if names:
            assert names == ["t.npz"]
            from construct.ticket import load_ticket

            load_ticket(out / "t.npz")


def test_temporary_names_and_stale_cleanup_in_process(tmp_path):
    from theory.atomic import atomic_write_text, remove_stale_temporaries, temporary_name

    name = temporary_name("fig.pdf", ".pdf")
    assert name.startswith(".fig.pdf" + TEMP_MARKER + f"{os.getpid()}-") and name.endswith(".pdf")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".fig.pdf{TEMP_MARKER}{dead_pid}-0123456789abcdef.pdf"
    stale.write_text("partial")
    mine = tmp_path / name
    mine.write_text("in progress")
    lookalike = tmp_path / f".fig.pdf{TEMP_MARKER}{dead_pid}-notours.pdf"
    lookalike.write_text("not matching the pattern")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert mine.exists() and lookalike.exists()
    atomic_write_text(tmp_path / "a.txt", "done")
    assert (tmp_path / "a.txt").read_text() == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.txt", mine.name, lookalike.name])
