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


# -- the other pages: a link sets the form; a hostile one gives the defaults with a notice each --------
@pytest.fixture
def through_the_frame(monkeypatch):
    """Every run goes through ``app.py`` and its ``st.navigation``, as in a browser session.

    ``AppTest`` resets Streamlit's legacy ``pages/`` flag before each run and would then run a
    page file alone, without the frame that reads and writes the URL around the page.
    """
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import app_test

    class NavigationOnly(PagesManager):
        def __init__(self, *args, **kwargs):
            PagesManager.uses_pages_directory = False  # what the app's first import sets (ui.frame)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(app_test, "PagesManager", NavigationOnly)


def _page(page: str, params: dict) -> AppTest:
    """A fresh session opening ``page`` at a URL with these query params (through the app's frame:
    use the ``through_the_frame`` fixture)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page(f"pages/{page}.py")  # before the first run: the default page does not run first
    at.query_params.update(params)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _shown(at: AppTest, widgets: dict) -> dict:
    """``{key: value}`` of the widgets ``{key: kind}`` ("slider", "selectbox", ...)."""
    return {key: getattr(at, kind)(key=key).value for key, kind in widgets.items()}


def _notices(at: AppTest) -> list[str]:
    notices = [w.value for w in at.warning if w.value.startswith("The link's")]
    assert all("\n" not in n for n in notices), notices
    return notices


TRAJ_WIDGETS = {
    "traj_run": "selectbox",
    "traj_reference": "selectbox",
    "traj_pca": "selectbox",
    "traj_umap": "checkbox",
    "traj_neighbors": "slider",
    "traj_ae": "checkbox",
    "traj_seed": "number_input",
    "traj_steps": "select_slider",
    "traj_margin": "slider",
    "traj_log": "checkbox",
    "traj_quantity": "selectbox",
}


@pytest.mark.slow
@pytest.mark.usefixtures("through_the_frame")
def test_a_trajectory_link_sets_every_setting_and_goes_back_into_the_url():
    from landscape_core import demos

    ws = demos.load("logistic-blobs")
    run = f"{ws.labels[0]} (model A, {len(ws.checkpoints)} checkpoints)"
    uncentred = "uncentred, every parameter"
    link = {
        "traj_run": run,
        "traj_reference": "first",
        "traj_pca": uncentred,
        "traj_umap": "false",
        "traj_neighbors": "4",
        "traj_ae": "false",
        "traj_seed": "3",
        "traj_steps": "11",
        "traj_margin": "0.5",
        "traj_log": "false",
        "traj_quantity": "val_accuracy",
    }
    at = _page("trajectory", {"workspace": "logistic-blobs", **link})
    assert _shown(at, TRAJ_WIDGETS) == {
        "traj_run": run,
        "traj_reference": "first",
        "traj_pca": uncentred,
        "traj_umap": False,
        "traj_neighbors": 4,
        "traj_ae": False,
        "traj_seed": 3,
        "traj_steps": 11,
        "traj_margin": 0.5,
        "traj_log": False,
        "traj_quantity": "val_accuracy",
    }
    assert not _notices(at) and not at.error
    assert {k: _param(at, k) for k in link} == link  # the URL holds the view, written back as read
    assert _param(at, "ui_splits") == '["train","val"]'  # with the settings the link left out
    assert "true val accuracy" in at.dataframe[-1].value.columns  # the gap table shows the linked quantity


@pytest.mark.slow
@pytest.mark.usefixtures("through_the_frame")
def test_a_hostile_trajectory_link_gives_the_defaults_with_a_notice_each():
    at = _page(
        "trajectory",
        {
            "workspace": "logistic-blobs",
            "traj_umap": "false",
            "traj_steps": "11",
            "traj_run": "model C",
            "traj_reference": "last",
            "traj_neighbors": "16",  # above the slider's 15
            "traj_margin": "nan",
            "traj_seed": "1.5",
            "traj_log": "maybe",
            "traj_quantity": "test_loss",  # no such split
            "ui_splits": '["train"',  # not JSON
        },
    )
    shown = _shown(at, TRAJ_WIDGETS)
    assert shown["traj_run"].startswith("logistic regression (model A")
    assert (shown["traj_reference"], shown["traj_neighbors"], shown["traj_margin"]) == ("final", 5, 0.2)
    assert (shown["traj_seed"], shown["traj_log"], shown["traj_quantity"]) == (0, True, "train_loss")
    assert (shown["traj_umap"], shown["traj_steps"]) == (False, 11)  # the two that fit
    assert at.multiselect(key="ui_splits").value == ["train", "val"]
    assert len(_notices(at)) == 8, _notices(at)
    assert not at.error


@pytest.mark.slow
@pytest.mark.usefixtures("through_the_frame")
def test_a_compare_link_sets_the_form_and_a_hostile_one_gives_the_defaults():
    widgets = {
        "compare_split": "selectbox",
        "compare_quantity": "selectbox",
        "compare_norm": "selectbox",
        "compare_seed": "number_input",
        "compare_span": "slider",
        "compare_steps": "select_slider",
        "compare_lines": "slider",
        "compare_hessian": "checkbox",
        "compare_log": "checkbox",
    }
    small = {"workspace": "digits-mlp", "ui_subset": "256", "compare_steps": "11", "compare_hessian": "false"}
    link = {
        "compare_split": "val",
        "compare_quantity": "accuracy",
        "compare_norm": "layer",
        "compare_seed": "4",
        "compare_span": "0.5",
        "compare_lines": "2",
        "compare_log": "true",
    }
    at = _page("compare", {**small, **link})
    assert _shown(at, widgets) == {
        "compare_split": "val",
        "compare_quantity": "accuracy",
        "compare_norm": "layer",
        "compare_seed": 4,
        "compare_span": 0.5,
        "compare_steps": 11,
        "compare_lines": 2,
        "compare_hessian": False,
        "compare_log": True,
    }
    assert not _notices(at) and not at.error
    assert {k: _param(at, k) for k in link} == link and "ui_splits" in at.query_params  # written back, whole

    hostile = {
        "compare_split": "test",
        "compare_quantity": "<b>loss</b>",
        "compare_norm": "none",  # Surface offers it, Compare does not
        "compare_seed": "1e3",
        "compare_span": "inf",
        "compare_lines": "1",  # below the slider's 2
        "compare_topology_threshold": "25",
    }
    at = _page("compare", {**small, **hostile})
    shown = _shown(at, widgets)
    assert (shown["compare_split"], shown["compare_quantity"], shown["compare_norm"]) == ("train", "loss", "filter")
    assert (shown["compare_seed"], shown["compare_span"], shown["compare_lines"]) == (0, 1.0, 4)
    assert (shown["compare_steps"], shown["compare_hessian"]) == (11, False)
    assert at.slider(key="compare_topology_threshold").value == 1.0
    assert len(_notices(at)) == len(hostile), _notices(at)
    assert not at.error


TEXT_WIDGETS = {
    "text_split": "selectbox",
    "text_n": "number_input",
    "text_radii": "selectbox",
    "text_score_r": "selectbox",
    "text_samples": "slider",
    "text_steps": "slider",
    "text_seed": "number_input",
    "text_map": "radio",
    "text_score": "radio",
    "text_hessian": "checkbox",
    "text_top": "slider",
    "text_only_correct": "toggle",
}


@pytest.mark.slow
@pytest.mark.usefixtures("through_the_frame")
def test_a_text_link_sets_the_form_and_a_hostile_one_gives_the_defaults():
    small = {"workspace": "text-sentiment", "text_n": "10", "text_samples": "2", "text_steps": "1"}
    link = {
        "text_split": "train",
        "text_radii": "up to 10% of the embedding norm",
        "text_score_r": "0.1",
        "text_seed": "2",
        "text_score": "keskar",
        "text_top": "7",
        "text_only_correct": "false",
    }
    at = _page("text", {**small, **link})
    shown = _shown(at, TEXT_WIDGETS)
    assert shown == {
        "text_split": "train",
        "text_n": 10,
        "text_radii": "up to 10% of the embedding norm",
        "text_score_r": 0.1,
        "text_samples": 2,
        "text_steps": 1,
        "text_seed": 2,
        "text_map": "pca",
        "text_score": "keskar",
        "text_hessian": False,
        "text_top": 7,
        "text_only_correct": False,
    }
    assert not _notices(at) and not at.error
    assert len(at.dataframe[0].value) == 7  # the ranking shows the linked number of rows
    assert {k: _param(at, k) for k in link} == link and "ui_splits" in at.query_params  # written back, whole

    hostile = {
        "text_split": "../val",
        "text_radii": "up to 1000%",
        "text_score_r": "0.3",  # a radius of the curves, not one of the score's
        "text_seed": "NaN",
        "text_map": "tsne",
        "text_hessian": "1",
        "text_top": "11",  # above the 10 inputs the link asks for
    }
    at = _page("text", {**small, **hostile})
    shown = _shown(at, TEXT_WIDGETS)
    assert (shown["text_split"], shown["text_radii"], shown["text_score_r"]) == ("val", "up to 30% (default)", 0.05)
    assert (shown["text_seed"], shown["text_map"], shown["text_hessian"], shown["text_top"]) == (0, "pca", False, 10)
    assert (shown["text_n"], shown["text_samples"], shown["text_steps"]) == (10, 2, 1)
    assert len(_notices(at)) == len(hostile), _notices(at)
    assert not at.error


@pytest.mark.slow
@pytest.mark.usefixtures("through_the_frame")
def test_an_embedding_link_sets_the_form_and_a_hostile_one_gives_the_defaults():
    widgets = {
        "embedding_layer": "selectbox",
        "embedding_width": "number_input",
        "embedding_split": "radio",
        "embedding_seed": "number_input",
        "embedding_k": "number_input",
        "embedding_kind": "radio",
        "embedding_span": "slider",
        "embedding_steps": "select_slider",
    }
    small = {"workspace": "digits-mlp", "ui_subset": "256", "embedding_steps": "11", "embedding_width": "136"}
    link = {"embedding_split": "half", "embedding_k": "2", "embedding_kind": "incoming", "embedding_span": "0.5"}
    at = _page("embedding", {**small, **link})
    assert _shown(at, widgets) == {
        "embedding_layer": "0",
        "embedding_width": 136,
        "embedding_split": "half",
        "embedding_seed": 0,
        "embedding_k": 2,
        "embedding_kind": "incoming",
        "embedding_span": 0.5,
        "embedding_steps": 11,
    }
    assert not _notices(at) and not at.error
    assert {k: _param(at, k) for k in {**small, **link}} == {**small, **link}
    assert _param(at, "embedding_seed") == "0"  # the settings the link left out are written too

    hostile = {
        "embedding_layer": "2",  # not a hidden layer of this model
        "embedding_width": "128",  # the layer's own width: widening needs at least one more unit
        "embedding_split": "thirds",
        "embedding_k": "0",
        "embedding_span": "-inf",
    }
    at = _page("embedding", {**small, **hostile})
    shown = _shown(at, widgets)
    assert (shown["embedding_layer"], shown["embedding_width"], shown["embedding_split"]) == ("0", 160, "random")
    assert (shown["embedding_k"], shown["embedding_span"], shown["embedding_steps"]) == (3, 1.0, 11)
    assert len(_notices(at)) == len(hostile), _notices(at)
    assert not at.error


# -- back after a page switch -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("through_the_frame")
def test_a_page_switch_keeps_the_url_so_back_leaves_the_page_in_one_step():
    """Streamlit empties the query string when the navigation opens another page; the app writes the
    session's last URL back before ``st.navigation`` pushes the new page's history entry, so that one
    entry carries the settings (no bare entry for back to land on, no late write over the previous URL)."""
    at = _open({"workspace": "logistic-blobs", "surface_steps": "11", "surface_seed": "2"})
    before = {k: _param(at, k) for k in at.query_params}
    assert before["surface_seed"] == "2" and "ui_subset" in before
    at.query_params.clear()  # what the browser sends on a page switch
    at.switch_page("pages/guide.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert {k: _param(at, k) for k in at.query_params} == before
