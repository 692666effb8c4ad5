"""The ResNet-18 per-layer density figure (docs/math.md §7): exact budgets, the released code's numbers, byte-identical."""
import math

import pytest

from experiments.density_figure import DENSITIES, density_rows, make_density_figures, resnet18_layers


def test_resnet18_layers_and_budgets():
    names, shapes = resnet18_layers()
    numels = [math.prod(s) for s in shapes]
    assert len(shapes) == 21 and sum(numels) == 11_164_352  # docs/math.md §7 (counted by hand in test_densities)
    assert names[0] == "conv1" and sum("shortcut" in n for n in names) == 3
    rows = density_rows(shapes)
    assert {r["density"] for r in rows} == set(DENSITIES)
    for r in rows:
        kept = sum(p * n for p, n in zip(r["exact"], numels))
        assert kept == pytest.approx(r["density"] * sum(numels), rel=1e-9)
        assert all(0 < p <= 1 for p in r["exact"] + r["compat"])
    compat = {(r["density"], r["scheme"]): r["compat_global"] for r in rows}
    assert compat[(0.5, "balanced")] == pytest.approx(0.266, abs=5e-4)
    assert compat[(0.5, "erk")] == pytest.approx(0.389, abs=5e-4)
    assert compat[(0.1, "balanced")] == pytest.approx(0.079, abs=5e-4)


def test_density_figure_is_byte_identical(tmp_path):
    first = make_density_figures(tmp_path / "a")
    second = make_density_figures(tmp_path / "b")
    assert [p.name for p in first] == ["resnet18_layer_densities.pdf", "resnet18_layer_densities.png",
                                       "resnet18_layer_densities.md"]
    for p, q in zip(first, second):
        assert p.read_bytes() == q.read_bytes(), p.name
