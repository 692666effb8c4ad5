"""The table of hand-made hostile cases (cases.py), each run as a subprocess under a memory limit and judged by
the contract of fuzz_harness: allowed exit status, no traceback, one stderr line for status 2, nothing left in the
output directory after a refusal, no pickle executed. The whole table runs as one concurrent batch."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cases import CASES, FULL_ONLY
from fuzz_files import build
from fuzz_harness import FULL, check_contract, run_many

SELECTED = [c for c in CASES if FULL or c.id not in FULL_ONLY]

_PLACEHOLDER = re.compile(r"\{(file:[^}]+|out|tmp|canary)\}")


def expand(argv, case_dir: Path, files_dir: Path, canary: Path, builders=None):
    """Replace the placeholders of a case's argv (see cases.py)."""
    def sub(match):
        key = match.group(1)
        if key == "out":
            return str(case_dir / "out")
        if key == "tmp":
            return str(case_dir)
        if key == "canary":
            return str(canary)
        return str(build(files_dir, key[len("file:"):], canary, builders))

    return [_PLACEHOLDER.sub(sub, str(a)) for a in argv]


def run_table(cases, base: Path, builders=None):
    """Run every case (concurrently); returns {case id: Run}."""
    files_dir = base / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    canary = base / "CANARY-a-pickle-was-executed"
    jobs = []
    for case in cases:
        case_dir = base / case.id
        (case_dir / "out").mkdir(parents=True)
        argv = expand(case.argv, case_dir, files_dir, canary, builders)
        jobs.append((argv, case_dir, {"out_dir": case_dir / "out", "canary": canary, "fsize": case.fsize}))
    return dict(zip((c.id for c in cases), run_many(jobs))), canary


@pytest.fixture(scope="module")
def table_runs(tmp_path_factory):
    return run_table(SELECTED, tmp_path_factory.mktemp("fuzz-cases"))


@pytest.mark.parametrize("case", SELECTED, ids=[c.id for c in SELECTED])
def test_case(case, table_runs):
    runs, canary = table_runs
    r = runs[case.id]
    check_contract(r, case.allowed, stderr_contains=case.contains)
    for text in case.lacks:
        assert text not in r.stderr, f"stderr holds {text!r}: {r.stderr}"
    if r.returncode == 0:
        for name in case.expect_files:
            assert name in r.out_files, (name, r.out_files)
    assert not canary.exists()


def test_table_covers_the_issue_classes():
    """The table names the classes of issues 13/15 it covers (the report counts them); 13.7 (two writers at once)
    is tests/experiments/test_hostile_inputs.py's, 15.2/15.3 (pipes, signals) test_fuzz_special's."""
    classes = {k for c in CASES for k in c.classes}
    assert {"13.1", "13.2", "13.3", "13.4", "13.5", "13.6", "13.8", "15.1", "15.4", "15.5", "15.6", "15.7",
            "canary"} <= classes
    ci = {k for c in CASES if c.id not in FULL_ONLY for k in c.classes}
    assert ci == classes, f"classes run only in full mode: {classes - ci}"


def test_every_file_of_the_table_has_a_builder():
    """Unique ids, and a builder (fuzz_files.BUILDERS) for every {file:NAME} the table names."""
    from fuzz_files import BUILDERS

    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids)
    names = {m.group(1)[len("file:"):] for c in CASES for a in c.argv for m in _PLACEHOLDER.finditer(a)
             if m.group(1).startswith("file:")}
    names = {n for n in names if not n.startswith("fifo")}
    assert names <= set(BUILDERS), names - set(BUILDERS)
