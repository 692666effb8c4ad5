"""The memory guard: sizes parse, estimates over the budget are refused in one line naming the flag."""
import math

import pytest

from theory.memory import (MemoryBudgetError, available_memory_bytes, check_memory, default_memory_budget,
                           format_bytes, parse_memory)


@pytest.mark.parametrize("text,expected", [("8G", 8 * 2**30), ("512M", 512 * 2**20), ("2e9", 2_000_000_000),
                                           (1024, 1024), ("1.5GiB", int(1.5 * 2**30)), (" 3 kb ", 3072)])
def test_parse_memory_accepts_sizes(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1G", "0", "inf", "nan", "1e400", "8X", True, float("inf"), "1e19"])
def test_parse_memory_refuses_in_one_line(text):
    with pytest.raises(ValueError) as info:
        parse_memory(text, "max_memory")
    assert "max_memory=" in str(info.value) and "\n" not in str(info.value)


def test_check_memory_refuses_over_budget_and_names_flag():
    assert check_memory(10, "ten bytes", budget=100) == 10
    with pytest.raises(MemoryBudgetError) as info:
        check_memory(3 * 2**30, "a source of 3e9 weights", budget=2**30, flag="--max-memory")
    msg = str(info.value)
    assert "3 GiB" in msg and "1 GiB" in msg and "--max-memory" in msg and "\n" not in msg
    for bad in (math.inf, math.nan, -1.0):
        with pytest.raises(MemoryBudgetError):
            check_memory(bad, "overflowed", budget=2**30)


def test_default_budget_is_a_fraction_of_available():
    avail = available_memory_bytes()
    assert avail > 0
    assert 0 < default_memory_budget() <= avail
    assert format_bytes(math.inf) == "an unbounded amount" and format_bytes(512) == "512 B"
