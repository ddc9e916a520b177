"""Charts follow the Streamlit theme: under ``theme.base = "dark"`` no chart names a colour that
vanishes on a dark background (near-black ink), while the light theme keeps its dark ink.

The pages run in ``AppTest`` with the configured base theme; every Vega-Lite spec they send is
walked for the colours it names (marks, strokes, fills, scale ranges).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from dashboard_ui import theme

PAGES = Path(__file__).resolve().parents[1] / "pages"
CASES = {
    "interpolation": {"interp_steps": 7},
    "sharpness": {"sharp_parts": ["eigenvalues"], "sharp_k": 1, "sharp_tol": 1e-2},
}

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def synchronous_jobs(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "inf")


@pytest.fixture
def base_theme():
    before = config.get_option("theme.base")

    def use(base: str | None) -> None:
        config.set_option("theme.base", base)

    yield use
    config.set_option("theme.base", before)


def _colors(node, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("color", "stroke", "fill") and isinstance(value, str):
                found.add(value.lower())
            elif key == "range" and isinstance(value, list):
                found.update(v.lower() for v in value if isinstance(v, str))
            else:
                _colors(value, found)
    elif isinstance(node, list):
        for item in node:
            _colors(item, found)
    return found


def _chart_colors(page: str, state: dict) -> set[str]:
    at = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=1800)
    at.session_state["ui_workspace"] = "logistic-blobs"
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    charts = at.get("vega_lite_chart")
    assert charts, "the page drew no chart"
    found: set[str] = set()
    for chart in charts:
        _colors(json.loads(chart.proto.spec), found)
        assert chart.proto.theme == "streamlit"  # axes, text and background follow the theme
    return found


@pytest.mark.parametrize("page", list(CASES))
def test_dark_theme_charts_name_no_light_only_colour(page, base_theme):
    base_theme("dark")
    assert theme.scheme() == "dark"
    dark = _chart_colors(page, CASES[page])
    assert not dark & theme.LIGHT_ONLY, dark & theme.LIGHT_ONLY
    base_theme("light")
    light = _chart_colors(page, CASES[page])
    assert light & theme.LIGHT_ONLY  # the same charts in the light theme do use dark ink: the check can fail
