"""Every committed figure is legible when printed (issue 11, item 8), checked on the figures regenerated from the
committed results (``python -m experiments figures``), artist by artist:

- printed width ≤ 7.0 in (a two-column paper's text width; single-panel figures are 3.4 in, one column), so the
  figure is printed at its own size and every font size below is the printed size;
- every visible, non-empty text (titles, labels, tick labels, legends, colorbars, annotations) ≥ 8 pt;
- no legend entry says "nan"; no visible axes without data (unused subplot slots removed);
- no legend inside an axes covers data: no plotted point or line segment (sampled along the segment) of that axes
  falls inside the legend's box, and no legend sits on an image / heatmap.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import matplotlib
import matplotlib.pyplot
import numpy as np
import pytest
from matplotlib.collections import PathCollection, QuadMesh
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.text import Text

from experiments.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
MAX_WIDTH_IN = 7.0
MIN_FONT_PT = 8.0


def _points_inside(points: np.ndarray, box) -> int:
    points = points[np.all(np.isfinite(points), axis=1)]
    if points.size == 0:
        return 0
    inside = (points[:, 0] > box.x0) & (points[:, 0] < box.x1) & (points[:, 1] > box.y0) & (points[:, 1] < box.y1)
    return int(inside.sum())


def _dense_line(xy: np.ndarray, per_segment: int = 25) -> np.ndarray:
    if len(xy) < 2:
        return xy
    t = np.linspace(0.0, 1.0, per_segment)[:, None]
    return np.concatenate([a + t * (b - a) for a, b in zip(xy[:-1], xy[1:])])


def figure_problems(fig: Figure) -> list[str]:
    """Every legibility problem of one figure, as readable strings (empty list: legible)."""
    problems = []
    width, _ = fig.get_size_inches()
    if width > MAX_WIDTH_IN + 1e-9:
        problems.append(f"width {width:.2f} in > {MAX_WIDTH_IN} in")
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    for text in fig.findobj(Text):
        if text.get_visible() and text.get_text().strip() and text.get_fontsize() < MIN_FONT_PT - 1e-9:
            problems.append(f"text {text.get_text()[:40]!r} at {text.get_fontsize():.1f} pt")
    legends = list(fig.legends)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        if not (ax.lines or ax.collections or ax.images or ax.patches or ax.texts):
            problems.append(f"empty axes {ax.get_title()!r}")
        legend = ax.get_legend()
        if legend is None:
            continue
        legends.append(legend)
        box, axes_box = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        if box.x1 <= axes_box.x0 or box.x0 >= axes_box.x1 or box.y1 <= axes_box.y0 or box.y0 >= axes_box.y1:
            continue  # outside the axes
        if ax.images or any(isinstance(c, QuadMesh) for c in ax.collections):
            problems.append(f"legend on the heatmap of {ax.get_title()!r}")
        covered = 0
        for line in ax.lines:
            if line.get_visible() and line.get_label() != "_nolegend_":
                xy = line.get_transform().transform(np.asarray(line.get_xydata(), float))
                xy = xy[np.all(np.isfinite(xy), axis=1)]
                covered += _points_inside(_dense_line(xy) if line.get_linestyle() not in ("None", "") else xy, box)
        for coll in ax.collections:
            if isinstance(coll, PathCollection) and coll.get_visible() and len(coll.get_offsets()):
                covered += _points_inside(coll.get_offset_transform().transform(np.asarray(coll.get_offsets())), box)
        if covered:
            problems.append(f"legend covers {covered} data point(s) of {ax.get_title()!r}")
    for legend in legends:
        for text in legend.get_texts():
            if "nan" in text.get_text().lower().split("(")[-1] or " nan" in text.get_text().lower():
                problems.append(f"legend entry {text.get_text()!r}")
    return problems


@pytest.fixture(scope="module")
def drawn_figures(tmp_path_factory):
    """The figures made by ``python -m experiments figures`` from the committed results, keyed by file stem."""
    results = tmp_path_factory.mktemp("results")
    for jsonl in (ROOT / "figures").glob("*/*.jsonl"):
        (results / jsonl.parent.name).mkdir(exist_ok=True)
        shutil.copy(jsonl, results / jsonl.parent.name / jsonl.name)
    captured: dict[str, Figure] = {}
    original = Figure.savefig

    def capture(self, fname, *args, **kwargs):
        captured[Path(str(fname)).name.lstrip(".").split(".")[0]] = self  # atomic writes: ".stem.pdf.XXXX.pdf"
        return original(self, fname, *args, **kwargs)

    Figure.savefig = capture
    close = matplotlib.pyplot.close
    matplotlib.pyplot.close = lambda *a, **k: None  # keep the figures alive for inspection
    try:
        assert main(["figures", "--results", str(results), "--out", str(tmp_path_factory.mktemp("out"))]) == 0
    finally:
        Figure.savefig = original
        matplotlib.pyplot.close = close
    yield captured
    for fig in captured.values():
        close(fig)


def test_every_committed_figure_is_regenerated_and_legible(drawn_figures):
    committed = sorted(p.stem for p in (ROOT / "figures").glob("*/*.png"))
    assert committed, "no committed figures"
    report = {}
    for stem in committed:
        fig = drawn_figures.get(stem)
        assert fig is not None, f"{stem} is committed but not made by `python -m experiments figures`"
        problems = figure_problems(fig)
        if problems:
            report[stem] = problems
    assert not report, "\n".join(f"{k}: {'; '.join(v)}" for k, v in report.items())


def test_the_checker_catches_small_fonts_covering_legends_and_nan():
    from experiments.infra.figures import new_figure

    fig, axes = new_figure(ncols=3, width=3.0)
    ax = axes[0, 0]
    ax.plot([0.0, 0.1, 1.0], [1.0, 0.9, 0.0], label="slope nan")  # through the upper-left corner
    ax.legend(loc="upper left", fontsize=6)
    axes[0, 1].plot([0, 1], [0, 1])
    problems = "\n".join(figure_problems(fig))
    assert "width 9.00 in" in problems and "6.0 pt" in problems and "covers" in problems
    assert "'slope nan'" in problems and "empty axes" in problems
    matplotlib.pyplot.close(fig)
    assert math.isfinite(MIN_FONT_PT)
