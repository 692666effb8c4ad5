"""The fuzz suite's helper modules (fuzz_harness, fuzz_files, cases) sit next to its tests; the
project runs pytest with --import-mode=importlib, which does not put test directories on sys.path."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
