"""Shared pytest configuration.

Hypothesis: CI sets CI=true, which selects a derandomized profile (same examples every run, no deadline).
"""
from theory.strategies import register_profiles

register_profiles()
