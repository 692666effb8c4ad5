"""docs/tutorial.md runs: its ```python blocks, in order, in one namespace, in a fresh interpreter."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"

RUNNER = """
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
blocks = re.findall(r"^```python\\n(.*?)^```", text, flags=re.M | re.S)
namespace = {"__name__": "__tutorial__"}
for i, code in enumerate(blocks, start=1):
    print(f"--- block {i}", flush=True)
    exec(compile(code, f"tutorial.md block {i}", "exec"), namespace)
print(f"ran {len(blocks)} blocks")
"""


def test_tutorial_blocks_extracted_in_order():
    blocks = re.findall(r"^```python\n(.*?)^```", TUTORIAL.read_text(encoding="utf-8"), flags=re.M | re.S)
    assert len(blocks) == 7
    assert "load_digits" in blocks[0] and "er_masks" in blocks[-1]


def test_tutorial_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", RUNNER, str(TUTORIAL)], capture_output=True, text=True, timeout=600,
                       cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "ran 7 blocks" in r.stdout
    assert "success True" in r.stdout and "valid True" in r.stdout
