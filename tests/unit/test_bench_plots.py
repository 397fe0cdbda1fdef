"""The benchmark figures: every page in docs/benchmarks shows one, and each script's `Figure`
draws the table its page publishes (``--plot-from``) and a freshly measured one (``--plot``)."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
PAGES = sorted((REPO / "docs" / "benchmarks").glob("*.md"))


@pytest.fixture(scope="module")
def common():
    """benchmarks/_common.py, imported the way the scripts import it (their folder on the path)."""
    pytest.importorskip("matplotlib", reason="the figures need matplotlib: pip install -e '.[bench]'")
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("_common")
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_every_benchmark_page_shows_its_figure(page: Path) -> None:
    shown = re.findall(r"!\[[^\]]*\]\(\.\./img/([^)]+)\)", page.read_text(encoding="utf-8"))
    assert shown == [f"bench-{page.stem}.svg"], f"{page.name} should show ../img/bench-{page.stem}.svg"
    assert (REPO / "docs" / "img" / shown[0]).is_file()


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_each_script_draws_the_table_its_page_publishes(common, page: Path, tmp_path: Path) -> None:
    source = (BENCH / f"{page.stem}.py").read_text(encoding="utf-8")
    figure = _figure_of(common, source)
    out = tmp_path / "figure.svg"
    assert common.plot_page(figure, page, out) == 0
    svg = out.read_text(encoding="utf-8")
    assert figure.title in svg and all(v in svg for v in figure.values)


def test_a_measured_table_draws_bars_and_lines(common, tmp_path: Path) -> None:
    rows = [["parapipe", "1", "1,000", "2.5x"], ["parapipe", "8", "4,000", "-"], ["Pool", "1", "900", "1.0x"]]
    headers = ["system", "clients", "req/s", "speed"]
    bars_figure = common.Figure("bars", ("system", "clients"), ("req/s", "speed"))
    common.plot_table(bars_figure, headers, rows, tmp_path / "b.svg")
    bars = (tmp_path / "b.svg").read_text(encoding="utf-8")
    assert "parapipe · 8" in bars and "4,000" in bars and "2.5" in bars
    common.plot_table(common.Figure("lines", ("system",), ("req/s",), x="clients"), headers, rows, tmp_path / "l.png")
    assert (tmp_path / "l.png").read_bytes()[:4] == b"\x89PNG"


def _figure_of(common, source: str):
    """The script's Figure, read from its source (importing the scripts would import Ray, torch...):
    the one ``Figure(...)`` call, whose arguments are literals."""
    nodes = ast.walk(ast.parse(source))
    calls = [n for n in nodes if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Figure"]
    assert len(calls) == 1, "every benchmark script defines one Figure"
    args = [ast.literal_eval(a) for a in calls[0].args]
    return common.Figure(*args, **{k.arg: ast.literal_eval(k.value) for k in calls[0].keywords if k.arg})
