"""Settings in the URL: links that reopen a view, and values from a URL treated as hostile.

The codec (``dashboard_ui.links``) is checked on its own; the app (``AppTest`` of ``app.py``
with ``at.query_params``) opens a link in a fresh session, mirrors changed settings back into
the URL, and shows a one-line notice for every value that does not fit its widget.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard_ui.links import Choice, Flag, Many, Number, decode, encode
from landscape_core.defaults import HESSIAN

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 1800

LINK = {
    "p_count": Number(1, 20),
    "p_span": Number(0.1, 3.0, integer=False),
    "p_tol": Choice([1e-2, 1e-3, 1e-4]),
    "p_steps": Choice([11, 21, 31]),
    "p_parts": Many(["trace", "density"]),
    "p_log": Flag(),
}


def test_every_setting_survives_the_round_trip():
    values = {"p_count": 7, "p_span": 1.3, "p_tol": 1e-4, "p_steps": 21, "p_parts": ["density"], "p_log": True}
    params = encode("digits-mlp", values)
    assert params["workspace"] == "digits-mlp" and all(isinstance(v, str) for v in params.values())
    decoded, notices = decode(params, LINK)
    assert decoded == values and notices == []
    assert type(decoded["p_count"]) is int and type(decoded["p_span"]) is float and type(decoded["p_steps"]) is int


@pytest.mark.parametrize(
    "key, text",
    [
        ("p_count", "abc"),
        ("p_count", "21"),  # above the widget's maximum
        ("p_count", "0"),
        ("p_count", "3.5"),  # a whole number is asked for
        ("p_count", "9" * 40),
        ("p_span", "nan"),
        ("p_span", "inf"),
        ("p_span", "5"),
        ("p_tol", "0.5"),  # not one of the slider's stops
        ("p_steps", "11.0"),
        ("p_parts", "trace"),  # not a JSON list
        ("p_parts", '["trace","hack"]'),
        ("p_parts", '["trace","trace"]'),
        ("p_parts", "[1, 2]"),
        ("p_parts", "[" * 5000),
        ("p_log", "yes"),
    ],
)
def test_a_value_that_does_not_fit_its_widget_is_dropped_with_one_notice(key, text):
    decoded, notices = decode({key: text, "p_count": "3"} if key != "p_count" else {key: text}, LINK)
    assert key not in decoded
    assert len(notices) == 1 and notices[0].startswith(f"The link's setting {key} = ") and "\n" not in notices[0]
    assert len(notices[0]) < 200  # a long value is cut, not echoed whole


# -- the app ------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def synchronous_jobs(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "inf")


def _open(params: dict) -> AppTest:
    """A fresh session opening the app at a URL with these query params."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(params)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.slow
def test_a_link_opens_the_same_view_and_changes_go_back_into_the_url():
    link = {
        "workspace": "logistic-blobs",
        "surface_steps": "11",
        "surface_seed": "7",
        "surface_span": "0.5",
        "surface_ignore": '["bias"]',
        "surface_log": "true",
    }
    at = _open(link)
    assert at.selectbox(key="ui_workspace").value == "logistic-blobs"
    assert at.select_slider(key="surface_steps").value == 11
    assert at.number_input(key="surface_seed").value == 7
    assert at.slider(key="surface_span").value == 0.5
    assert at.multiselect(key="surface_ignore").value == ["bias"]
    assert at.checkbox(key="surface_log").value is True
    assert not at.warning
    assert {
        k: at.query_params[k][0] if isinstance(at.query_params[k], list) else at.query_params[k] for k in link
    } == link
    # a colleague's session with the same link computes the same view: same job, same numbers
    first = next(m.value for m in at.markdown if m.value.startswith("**train loss**"))
    again = _open(link)
    assert next(m.value for m in again.markdown if m.value.startswith("**train loss**")) == first
    assert _param(at, "surface_shape") == "2D plane"  # the settings the link left out are written too


def _param(at: AppTest, key: str) -> str:
    value = at.query_params[key]
    return value[0] if isinstance(value, list) else value


@pytest.mark.slow
def test_a_hostile_link_falls_back_to_defaults_with_a_notice_per_value():
    at = _open(
        {
            "workspace": "../../etc/passwd",
            "surface_steps": "1000000",
            "surface_seed": "-1",
            "surface_span": "nan",
            "surface_kind": "<script>",
            "surface_ignore": "{not json",
            "surface_log": "1",
            "ui_subset": "7",
        }
    )
    assert at.selectbox(key="ui_workspace").value == "digits-mlp"  # the first offered, as with no link
    assert at.select_slider(key="surface_steps").value == 41
    assert at.number_input(key="surface_seed").value == 0
    assert at.selectbox(key="surface_kind").value == "random"
    assert at.checkbox(key="surface_log").value is False
    notices = [w.value for w in at.warning]
    assert len(notices) == 8, notices
    assert all("\n" not in n and n.startswith("The link's") for n in notices)
    assert not at.error


@pytest.mark.slow
@pytest.mark.parametrize(
    "page, link, shown, notices",
    [
        (
            "sharpness",
            {"sharp_parts": '["trace"]', "sharp_budget": "18", "sharp_tol": "0.0001", "sharp_k": "99"},
            {
                "multiselect": ("sharp_parts", ["trace"]),
                "number_input": ("sharp_budget", 18),
                "select_slider": ("sharp_tol", 1e-4),
            },
            1,  # k = 99 is above the widget's 20
        ),
        (
            "interpolation",
            {"interp_steps": "7", "interp_log": "true", "interp_span": "-0.5 to 1.5 (well beyond each end)"},
            {
                "slider": ("interp_steps", 7),
                "checkbox": ("interp_log", True),
                "selectbox": ("interp_span", "-0.5 to 1.5 (well beyond each end)"),
            },
            0,
        ),
    ],
)
def test_a_link_straight_to_a_page_sets_its_form(page, link, shown, notices):
    at = AppTest.from_file(str(Path(APP).parent / "pages" / f"{page}.py"), default_timeout=TIMEOUT)
    at.query_params.update({"workspace": "logistic-blobs", **link})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    for kind, (key, value) in shown.items():
        assert getattr(at, kind)(key=key).value == value, key
    assert len(at.warning) == notices, [w.value for w in at.warning]
    if notices:
        assert at.number_input(key="sharp_k").value == HESSIAN.k
