"""Every ```console block of README.md and of docs/*.md is executed, and its printed output compared with the block.

How a block is read (the conventions authors of README.md and docs/*.md follow):

- A line starting with ``$ `` is a command; the lines after it, up to the next command or the end of the block, are
  its expected standard output (standard error is not compared, so progress lines never matter; the command must
  exit with status 0). Trailing blank lines and trailing spaces are ignored; everything else — numbers included —
  must match exactly.
- The commands of one block run one after another, with ``bash``, in one fresh temporary directory (so files one
  command writes, such as ``t.npz``, are there for the next; nothing is written into the repository), with the
  repository on ``PYTHONPATH`` and ``python`` meaning the interpreter running the tests.
- Markers, the only ways a line may differ:
  - an output line consisting of ``...`` matches any number of output lines (zero or more);
  - an output line ending in ``  # varies`` may differ in its durations only: every number written directly
    before ``s`` or `` s`` (``1.6s``, ``5.92 s``) matches any number; the rest of the line must match exactly
    (the marker itself is not part of the output);
  - a command line ending in ``# not tested: <reason>`` is not run, and its output (if shown) is not compared;
  - a block whose first line is ``# not tested: <reason>`` is not run at all.
  Every skipped command must give its reason in the block, where readers see it.
"""
from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VARIES = "  # varies"
NOT_TESTED = re.compile(r"#\s*not tested:\s*\S")
_DURATION = re.compile(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?=\s?s\b)")
_NUMBER_PATTERN = r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"


def console_blocks(path: Path) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every ```console block of a Markdown file."""
    blocks, current, start = [], None, 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if current is None and stripped == "```console":
            current, start = [], number + 1
        elif current is not None and stripped == "```":
            blocks.append((start, current))
            current = None
        elif current is not None:
            current.append(line)
    assert current is None, f"{path.name}: unterminated ```console block from line {start}"
    return blocks


def commands(lines: list[str]) -> list[tuple[str, list[str]]]:
    """Split a block into (command, expected output lines)."""
    out: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("$ "):
            out.append((line[2:], []))
        else:
            assert out, f"output line {line!r} before the first command"
            out[-1][1].append(line)
    return out


def expected_pattern(expected: list[str]) -> re.Pattern:
    """A regex for the whole output of one command, from its expected lines and their markers."""
    lines = [line.rstrip() for line in expected]
    while lines and not lines[-1]:
        lines.pop()
    parts = []
    for line in lines:
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        elif line.endswith(VARIES.strip()) and line.rstrip().endswith("# varies"):
            text = line[: line.rindex("# varies")].rstrip()
            pieces, last = [], 0
            for m in _DURATION.finditer(text):
                pieces.append(re.escape(text[last:m.start()]))
                pieces.append(_NUMBER_PATTERN)
                last = m.end()
            pieces.append(re.escape(text[last:]))
            parts.append("".join(pieces) + r"\n")
        else:
            parts.append(re.escape(line) + r"\n")
    return re.compile("".join(parts))


def normalized_output(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "".join(line + "\n" for line in lines)


def _documents() -> list[Path]:
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def _cases():
    cases = []
    for doc in _documents():
        if not doc.exists():
            continue
        for start, lines in console_blocks(doc):
            cases.append(pytest.param(doc, start, lines, id=f"{doc.relative_to(ROOT)}:{start}"))
    return cases


@pytest.fixture(scope="module")
def shell_env(tmp_path_factory):
    """PATH with ``python`` → this interpreter; PYTHONPATH → this repository; no colour, no GPU surprises."""
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "python").symlink_to(sys.executable)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("NO_COLOR", "1")
    return env


@pytest.mark.parametrize("doc, start, lines", _cases())
def test_console_block(doc, start, lines, tmp_path, shell_env):
    if lines and NOT_TESTED.match(lines[0].strip()):
        pytest.skip(f"{doc.name}:{start}: {lines[0].strip()}")
    for command, expected in commands(lines):
        if NOT_TESTED.search(command):
            continue
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=shell_env, capture_output=True,
                              text=True, timeout=300)
        where = f"{doc.relative_to(ROOT)}, block at line {start}: $ {command}"
        assert done.returncode == 0, f"{where}\nexit status {done.returncode}\n{done.stderr[-2000:]}"
        actual = normalized_output(done.stdout)
        if not expected_pattern(expected).fullmatch(actual):
            diff = "\n".join(difflib.unified_diff([e.rstrip() for e in expected], actual.splitlines(),
                                                  "documented", "printed", lineterm=""))
            pytest.fail(f"{where}\noutput differs from the block (markers: '...', '{VARIES.strip()}'):\n{diff}")


# ------------------------------------------------------------------------- the conventions themselves

def test_markers():
    pattern = expected_pattern(["a 1", "...", "time=1.6s; 5.92 s, certificate 2.366e-03  # varies", ""])
    assert pattern.fullmatch("a 1\nx\ny\ntime=12.0s; 0.4 s, certificate 2.366e-03\n")
    assert pattern.fullmatch("a 1\ntime=1.6s; 5.92 s, certificate 2.366e-03\n")
    assert not pattern.fullmatch("a 1\ntime=1.6s; 5.92 s, certificate 2.367e-03\n")  # not a duration
    assert not pattern.fullmatch("a 2\ntime=1.6s; 5.92 s, certificate 2.366e-03\n")
    assert not expected_pattern(["a 1"]).fullmatch("a 1\nextra\n")
    assert commands(["$ echo 1", "1", "$ true"]) == [("echo 1", ["1"]), ("true", [])]
    assert NOT_TESTED.search("python -m x  # not tested: slow")
