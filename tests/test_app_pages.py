"""AppTest runs of the dashboard frame and its pages (Surface, Compare, Guide) on the demos.

Jobs are waited on synchronously here (``LANDSCAPE_JOB_WAIT``), so one ``run()`` returns
with the result drawn, as a browser would show it after the progress bar.
"""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 1800  # a hang guard for one script run; jobs are waited on until done (LANDSCAPE_JOB_WAIT)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def synchronous_jobs(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "inf")  # until the job is done, however long that takes


def _app(page: str | None = None, subset: int | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if subset:
        # sidebar settings go in before the first run: AppTest reruns a page file alone
        # (Streamlit's legacy pages/ mode), and the page then draws the sidebar itself
        at.session_state["ui_subset"] = subset
    at.run()
    if page:
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _submit(at: AppTest) -> None:
    next(b for b in at.button if b.proto.is_form_submitter).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def test_surface_defaults_draw_heatmaps_3d_and_downloads():
    at = _app()
    assert at.title[0].value.startswith("Surface")
    assert len(at.get("vega_lite_chart")) >= 2  # train and val heatmaps
    assert len(at.get("plotly_chart")) >= 2  # 3D views
    labels = {b.proto.label for b in at.get("download_button")}
    assert {"CSV", "NPZ", "Settings", "PNG", "SVG"} <= labels
    readout = next(m.value for m in at.markdown if m.value.startswith("**train loss**"))
    assert "at the base point" in readout
    assert any("demos.load('digits-mlp')" in c.value for c in at.code)
    assert not at.error


def test_surface_widget_changes_the_result():
    at = _app(subset=256)
    assert at.selectbox(key="ui_subset").value == 256  # the sidebar is drawn on every run
    first = next(m.value for m in at.markdown if m.value.startswith("**train loss**"))
    at.number_input(key="surface_seed").set_value(3)
    _submit(at)
    second = next(m.value for m in at.markdown if m.value.startswith("**train loss**"))
    assert first != second  # another draw of directions gives another plane
    at.radio(key="surface_shape").set_value("1D lines")
    _submit(at)
    assert len(at.get("vega_lite_chart")) == 1
    spread = [m.value for m in at.markdown if m.value.startswith("**train**")]
    assert spread and "across the 5 lines" in spread[0]


def test_compare_defaults_show_shared_maps_table_and_verdict():
    at = _app("pages/compare.py", subset=256)
    charts = at.get("vega_lite_chart")
    assert len(charts) == 3  # A, B and the difference in one linked view; 1D lines of both; persistence diagrams
    linked = json.loads(charts[0].proto.spec)
    assert len(linked["concat"]) == 3 and linked["resolve"]["scale"]["x"] == "shared"
    views = {p["name"]: p["views"] for p in linked["params"]}  # one hover and one zoom over all three maps
    assert set(views) == {"hover", "zoom"} and all(len(v) == 3 for v in views.values()), views
    for panel in linked["concat"]:
        tips = {t.get("title", t["field"]) for t in panel["layer"][0]["encoding"]["tooltip"]}
        assert {"A", "B", "B - A", "alpha", "beta"} <= tips, tips
    table = at.dataframe[0].value
    assert "ratio B / A" in table.columns and "lambda_max (top Hessian eigenvalue)" in set(table["metric"])
    sentence = at.success[0].value
    assert sentence.startswith("Large batch's minimum is") and "(large batch vs small batch)" in sentence
    before = table.set_index("metric")["ratio B / A"]
    at.slider(key="compare_span").set_value(0.5)
    _submit(at)
    after = at.dataframe[0].value.set_index("metric")["ratio B / A"]
    assert (
        after["1D slice rise (mean loss increase at +/- span)"]
        != before["1D slice rise (mean loss increase at +/- span)"]
    )


def test_compare_needs_two_models():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["ui_workspace"] = "logistic-blobs"
    at.run()
    at.switch_page("pages/compare.py")
    at.run()
    assert not at.exception
    assert "single model" in at.info[0].value


def test_guide_lists_views_and_pitfalls():
    at = _app("pages/guide.py")
    titles = [s.value for s in at.subheader]
    assert titles[:2] == ["Surface: 1D lines and 2D planes", "Interpolation"] and "Compare" in titles
    assert sum("Pitfalls" in m.value for m in at.markdown) == len(titles)


def test_job_errors_are_readable_and_cancel_is_reported(monkeypatch):
    """The jobs reach their states first (waited on as events); the page then draws each state."""
    from landscape_core import Cancelled, jobs

    def bad(progress, cancel):
        raise ValueError("span must satisfy low < high; got (1.0, -1.0).")

    def cancelled(progress, cancel):
        progress(3, 10)
        raise Cancelled("stopped")

    def slow(progress, cancel):
        progress(0, 10)
        cancel.wait()  # runs until the test cancels it
        raise Cancelled("stopped")

    registry = jobs.registry()
    for key in ("test:bad-job", "test:cancelled-job", "test:slow-job"):
        registry.forget(key)
    assert registry.submit("test:bad-job", bad, "bad plane").wait(600)
    assert registry.submit("test:cancelled-job", cancelled, "long plane").wait(600)
    slow_job = registry.submit("test:slow-job", slow, "slow plane")

    def script():
        from dashboard_ui import ui

        ui.run_job("test:bad-job", lambda p, c: None, "bad plane")
        ui.run_job("test:cancelled-job", lambda p, c: None, "long plane")
        ui.run_job("test:slow-job", lambda p, c: None, "slow plane")

    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "0")  # draw what the jobs are doing now
    at = AppTest.from_function(script, default_timeout=TIMEOUT)
    try:
        at.run()
        assert not at.exception
        assert at.error[0].value == "bad plane failed: span must satisfy low < high; got (1.0, -1.0)."
        assert at.expander[0].label == "Technical details (traceback)"
        assert at.warning[0].value.startswith("long plane: cancelled after 3 of 10 points")
        assert {b.label for b in at.button} >= {"Retry", "Run again", "Cancel"}
        assert "slow plane" in at.get("progress")[0].proto.text
    finally:
        slow_job.cancel()


def test_app_hides_pages_whose_engine_is_missing(monkeypatch):
    from dashboard_ui import app as module  # importing it draws nothing: main() does

    real = module.importlib.import_module

    def fake_import(name):
        if name == "landscape_core.surface":
            raise ImportError("not built yet")
        return real(name)

    monkeypatch.setattr(module.importlib, "import_module", fake_import)
    usable, hidden = module.usable_pages()
    titles = [title for _, title, _ in usable]
    assert "Surface" not in titles and "Compare" not in titles and "Guide" in titles
    assert "Surface (needs landscape_core.surface)" in hidden


def test_a_spec_that_fails_is_reported_in_the_sidebar(monkeypatch, tmp_path):
    spec = tmp_path / "broken_spec.py"
    spec.write_text("def build():\n    raise RuntimeError('the data folder is missing')\n")
    monkeypatch.setattr("sys.argv", ["app.py", "--spec", f"{spec}:build"])
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert at.selectbox(key="ui_workspace").value == f"spec:{spec}:build"
    messages = [e.value for e in at.error]
    assert messages and all("Traceback" not in m for m in messages)
    assert any("the data folder is missing" in m for m in messages)
    # the demos are still there to pick
    assert "digits-mlp" in at.selectbox(key="ui_workspace").options


def test_spec_argument_parsing():
    from dashboard_ui import ui

    assert ui.spec_from_argv(["app.py", "--spec", "examples/cnn.py:build"]) == "examples/cnn.py:build"
    assert ui.spec_from_argv(["app.py"]) is None


def test_sidebar_labels_the_subset_honestly():
    at = _app()
    subset = at.selectbox(key="ui_subset")
    assert subset.options[0] == "all samples (exact)"
    assert "subset of 256 samples per split (noisier)" in subset.options
    assert at.selectbox(key="ui_device").options[0] == "CPU"


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_problem_moves_to_cuda():
    from dashboard_ui import ui

    problem = ui._page_problem("logistic-blobs", "A", 0, "cuda")
    assert problem.theta0.is_cuda and problem.splits["train"].X.is_cuda
    cpu = ui._page_problem("logistic-blobs", "A", 0, "cpu")
    assert abs(problem.base["train_loss"] - cpu.base["train_loss"]) < 1e-5


def test_surface_hessian_saddle_check_plane():
    at = _app(subset=256)
    at.selectbox(key="surface_kind").set_value("hessian-both")
    at.select_slider(key="surface_steps").set_value(11)
    _submit(at)
    assert len(at.get("vega_lite_chart")) >= 2
    readout = next(m.value for m in at.markdown if m.value.startswith("**train loss**"))
    eigenvalues = [float(v.split(" ")[0]) for v in readout.split("Eigenvalues of the two directions: ")[1].split(", ")]
    assert eigenvalues[0] > 0 and eigenvalues[0] >= eigenvalues[1]
    assert any("which='both'" in c.value for c in at.code)


def test_heatmap_draws_diverged_cells_and_contours():
    import numpy as np

    from dashboard_ui import charts as _charts
    from landscape_core.results import Surface

    alphas = np.linspace(-1, 1, 9)
    values = alphas[:, None] ** 2 + alphas[None, :] ** 2 + 0.1
    values[0, 0] = np.nan
    surface = Surface(alphas=alphas, betas=alphas, values={"train_loss": values}, settings={"center": "theta0"})
    spec = _charts.heatmap(surface, "train_loss", log=True).to_dict()
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]
    assert marks[:3] == ["rect", "rect", "line"] and marks[-1] == "point"  # cells, diverged, contours, base
    contours = [d for d in spec["datasets"].values() if d and "vertex" in d[0]]
    assert len(contours) == 1
    # one line mark per polyline, its vertices in order: each line's rows are the polyline's points
    from landscape_core.contours import auto_levels, contour_lines

    expected = contour_lines(alphas, alphas, values, auto_levels(values, 10, log=True))
    assert len({row["line"] for row in contours[0]}) == sum(len(lines) for lines in expected.values())
    assert len(contours[0]) == sum(len(line) for lines in expected.values() for line in lines)
    datasets = spec["datasets"]
    diverged = [d for d in datasets.values() if d and "status" in d[0]]
    assert len(diverged) == 1 and len(diverged[0]) == 1 and diverged[0][0]["alpha"] == -1.0


def test_uploaded_workspace_is_listed_and_opens():
    from landscape_core import demos, upload_registry
    from landscape_core.workspace import Workspace

    owner = upload_registry.new_owner()
    wid = upload_registry.register(Workspace("my-upload", demos.load("logistic-blobs").problem), owner)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["ui_owner"] = owner  # the session that uploaded it
    at.session_state["ui_workspace"] = wid
    at.run()
    assert not at.exception
    picker = at.selectbox(key="ui_workspace")
    assert picker.value == wid and "digits-mlp" in picker.options
    assert len(at.get("vega_lite_chart")) >= 2
    from dashboard_ui.ui import NO_CODE_SENTENCE

    assert any(m.value == NO_CODE_SENTENCE for m in at.markdown)  # no script for files: a spec to write instead
    assert any("def build():" in c.value for c in at.code)


def test_surface_shows_direction_lengths_and_compares_hessian_planes_at_equal_length():
    """Guide's tip: a Hessian plane is compared with a random one at equal direction lengths."""
    import re

    def lengths(at) -> list[float]:
        text = next(c.value for c in at.caption if c.value.startswith("Direction lengths"))
        return [float(v) for v in re.findall(r"\|\|d\d\|\| = ([\d.e+-]+)", text)]

    at = AppTest.from_file(str(Path(APP).parent / "pages" / "surface.py"), default_timeout=TIMEOUT)
    at.session_state["ui_workspace"] = "logistic-blobs"
    at.session_state["surface_steps"] = 11
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    random = lengths(at)
    assert len(random) == 2 and min(random) > 1.2  # filter-normalized: as long as the weights, not 1
    at.selectbox(key="surface_kind").set_value("hessian")
    at.selectbox(key="surface_hessian_length").set_value("random")
    _submit(at)
    assert lengths(at) == pytest.approx(random, rel=1e-3)
    at.selectbox(key="surface_hessian_length").set_value("unit")
    _submit(at)
    assert lengths(at) == pytest.approx([1.0, 1.0], rel=1e-3)
    guide = AppTest.from_file(str(Path(APP).parent / "pages" / "guide.py"), default_timeout=TIMEOUT)
    guide.run()
    tips = " ".join(m.value for m in guide.markdown if m.value.startswith("**Try it on:** digits-mlp: draw"))
    assert "as long as the random directions" in tips and "same span" in tips


def _titles(at) -> list[str]:
    """The title lines of every Vega-Lite chart of a run, layered or not."""
    lines = []
    for chart in at.get("vega_lite_chart"):
        title = json.loads(chart.proto.spec).get("title", {})
        text = title.get("text", "") if isinstance(title, dict) else title
        lines += text if isinstance(text, list) else [text]
    return lines


def test_surface_recentred_plane_says_its_centre_in_the_heatmap_title():
    at = AppTest.from_file(str(Path(APP).parent / "pages" / "surface.py"), default_timeout=TIMEOUT)
    at.session_state["ui_workspace"] = "logistic-blobs"
    at.session_state["surface_steps"] = 11
    at.session_state["surface_offset_alpha"] = 0.25
    at.session_state["surface_offset_beta"] = -0.5
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    titles = _titles(at)
    assert titles.count("(alpha0, beta0) = (0.25, -0.5)") == 2, titles  # the train and val maps
    assert not any("theta0 + alpha d1 + beta d2" in t for t in titles), titles  # not the plane through theta0
    # the plane through theta0 keeps its own title
    at.number_input(key="surface_offset_alpha").set_value(0.0)
    at.number_input(key="surface_offset_beta").set_value(0.0)
    _submit(at)
    titles = _titles(at)
    assert titles.count("train loss on the plane theta0 + alpha d1 + beta d2") == 1, titles
    assert not any("alpha0" in t for t in titles), titles


def test_surface_preview_says_what_it_does_before_it_counts_points(monkeypatch, fresh_cache):
    """While the preview job has nothing to count yet (here: it measures the cost per point, the
    page's own estimate having failed), its bar says so, never "0 of 0 points"."""
    import threading

    from dashboard_ui import ui
    from landscape_core import preview

    entered, gate = threading.Event(), threading.Event()
    measure = preview.measure_cost

    def measured_when_let(problem, splits=None, **kwargs):
        entered.set()
        gate.wait(600)
        return measure(problem, splits, **kwargs)

    monkeypatch.setattr(preview, "measure_cost", measured_when_let)
    monkeypatch.setattr(ui, "estimate", lambda problem, splits: None)
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "0")  # draw what the job is doing now
    at = AppTest.from_file(str(Path(APP).parent / "pages" / "surface.py"), default_timeout=TIMEOUT)
    at.session_state["ui_workspace"] = "logistic-blobs"
    at.session_state["surface_seed"] = 4321  # a plane no other test computes
    at.session_state["surface_steps"] = 11
    try:
        at.run()
        assert entered.wait(600)  # the job is running and measuring
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        texts = [p.text for p in at.get("progress")]
        assert texts == ["preview on a data subset: measuring the cost per point"], texts
    finally:
        gate.set()
    from landscape_core import jobs

    preview_job = next(j for j in jobs.registry().jobs() if j.label == "preview on a data subset" and not j.finished)
    assert preview_job.wait(600)  # a running job is drawn as it is; the next run takes its result
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "inf")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [p.text for p in at.get("progress")] and len(at.get("vega_lite_chart")) >= 2


def test_a_spec_workspace_is_listed_by_its_name_not_its_path(monkeypatch, tmp_path):
    """A --spec workspace in the sidebar: the name its Workspace gives, else its file name; the
    whole path (which the box would cut short) only under "About this workspace"."""
    from dashboard_ui.frame import spec_label

    folder = tmp_path / "a" / "long" / "folder" / "of" / "the" / "team's" / "experiments"
    folder.mkdir(parents=True)
    spec = folder / "regression_spec.py"
    spec.write_text(
        "import torch\n"
        "from landscape_core import Problem\n"
        "from landscape_core.workspace import Workspace\n\n"
        "def problem():\n"
        "    torch.manual_seed(0)\n"
        "    X = torch.randn(32, 3)\n"
        "    return Problem(torch.nn.Linear(3, 1), torch.nn.MSELoss(), (X, X.sum(1, keepdim=True)))\n\n"
        "def build():\n"
        "    return Workspace(name='Tiny regression', problem=problem())\n\n"
        "def bare():\n"
        "    return problem()\n"
    )
    for function, label in (("build", "Tiny regression (your spec)"), ("bare", "your spec: regression_spec.py:bare")):
        monkeypatch.setattr("sys.argv", ["app.py", "--spec", f"{spec}:{function}"])
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        picker = at.selectbox(key="ui_workspace")
        assert picker.value == f"spec:{spec}:{function}"
        assert picker.options[0] == label, picker.options  # shown from the first run on
        assert str(folder) not in " ".join(picker.options)
        assert any(str(spec) in c.value for c in at.sidebar.caption)  # the path, in the workspace's notes
    assert spec_label("examples/minilm_sentiment_spec.py:build") == "your spec: minilm_sentiment_spec.py"
