"""Shared pytest configuration.

Hypothesis: CI sets CI=true, which selects a derandomized profile (same examples every run, no deadline).
"""
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI", "").lower() in {"1", "true", "yes"} else "dev")
