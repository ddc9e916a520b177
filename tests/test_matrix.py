"""Every page on every kind of workspace (AppTest), with its defaults and with one other setting.

Kinds (tests/workspace_kinds.py): each built-in demo (the text demo among them), a spec with a
folder of checkpoints, a spec with a custom loss, uploaded state dicts with data, an uploaded
``.pt2`` program, and a spec of a single model. Each cell opens one page on one workspace and
checks what a user would see: no exception element, no traceback text anywhere, no error box
(unless the cell expects that refusal), every selection among its widget's options, and at
least one chart (or, for a result that is a number, its metric), or a sentence saying why
there is none. Results of uploaded workspaces must
say in their "Copy as Python" section that they have no code, and show a spec instead.

Speed: demos and uploads are built once per module; each cell opens its page directly (the
sidebar set through session state), so no other page's default job runs first; jobs are
waited on synchronously (``LANDSCAPE_JOB_WAIT``). Default cells run each page's default choices
with the table of defaults at small sizes (``SMALL_DEFAULTS``: the full sizes are each demo's
first screen, computed by test_first_screen.py); the other cells use small settings. Workspace switches and navigation (issue 18, items 2 and 4) are at the end.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch
import workspace_kinds as wk
from streamlit.testing.v1 import AppTest

from dashboard_ui import ui  # first: see require_frame (AppTest would rerun a page with stale widget values)
from landscape_core import upload_registry, uploads

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = ("surface", "interpolation", "sharpness", "trajectory", "compare", "text", "your_model", "guide")
TEXT_PAGES = ("your_model", "guide")  # pages of words and forms: no chart expected
TIMEOUT = 900

# one setting other than the default per page (plus small sizes, so that the cell stays quick)
SETTINGS = {
    "surface": {"surface_shape": "1D lines", "surface_steps": 11, "surface_lines": 2},
    "interpolation": {
        "interp_span": "-0.25 to 1.25 (a little beyond each end)",
        "interp_steps": 5,
        "interp_bn_all": False,
    },
    "sharpness": {
        "sharp_which": "largest",
        "sharp_k": 1,
        "sharp_parts": ["eigenvalues", "trace"],
        "sharp_max_iter": 50,
        "sharp_budget": 12,
    },
    "trajectory": {"traj_reference": "first", "traj_umap": False, "traj_steps": 11},
    "compare": {"compare_norm": "layer", "compare_steps": 11, "compare_lines": 2, "compare_hessian": False},
    "text": {"text_score": "keskar", "text_n": 10, "text_samples": 2, "text_steps": 1},
    "your_model": {},  # its setting is an upload of train data (see _upload_train_data)
    "guide": {"ui_splits": ["train"]},  # no settings of its own: the sidebar's split choice
}
TEXT_ELEMENTS = (
    "title",
    "header",
    "subheader",
    "markdown",
    "caption",
    "code",
    "text",
    "info",
    "warning",
    "error",
    "success",
    "exception",
)
INTERNALS = ("Traceback (most recent call last)", 'File "/', "Error: ", "Exception: ")


# The default cells run every page's default choices (the kinds of plane, the parts, the BatchNorm
# modes, the views) at small sizes: the defaults' full sizes are computed on every demo by
# test_first_screen.py, and here they would cost minutes per workspace.
SMALL_DEFAULTS = {
    "SURFACE": {"steps": 11, "coarse_steps": 5, "lines": 2, "min_line_steps": 11},
    "INTERPOLATION": {"steps": 5},
    "HESSIAN": {"max_iter": 50, "trace_budget": 12, "density_iters": 10},
    "SHARPNESS": {"samples": 4},
    "TRAJECTORY": {"plane_steps": 11},
    "COMPARE": {"steps": 11, "lines": 2, "line_steps": 11, "average_samples": 4},
    "TEXT": {"max_inputs": 20, "samples": 2, "steps": 1, "line_steps": 11},
}


SMALL_PROBE = {  # page -> (a widget showing a small default, its value)
    "surface": ("surface_steps", 11),
    "interpolation": ("interp_steps", 5),
    "sharpness": ("sharp_budget", 12),
    "trajectory": ("traj_steps", 11),
    "compare": ("compare_steps", 11),
    "text": ("text_samples", 2),
}


@pytest.fixture(autouse=True)
def synchronous_jobs(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", str(TIMEOUT))


@pytest.fixture
def small_defaults(monkeypatch):
    """The table of defaults at small sizes (same choices), for pages and the Sharpness parts."""
    import dataclasses

    from landscape_core import curvature_parts, defaults

    for name, sizes in SMALL_DEFAULTS.items():
        small = dataclasses.replace(getattr(defaults, name), **sizes)
        monkeypatch.setattr(defaults, name, small)
        if hasattr(curvature_parts, name):
            monkeypatch.setattr(curvature_parts, name, small)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return wk.make_files(tmp_path_factory.mktemp("workspace_kinds"))


@pytest.fixture(scope="module")
def owner() -> str:
    """The browser session that uploaded this module's files (uploads are kept per session)."""
    return upload_registry.new_owner()


@pytest.fixture(scope="module")
def workspaces(files, owner) -> dict[str, tuple[str, str | None]]:
    """``{kind: (sidebar workspace id, --spec target or None)}``, built once for the module."""
    targets = wk.spec_targets(files)
    out = {name: (name, None) for name in wk.DEMOS}
    for kind in ("spec-checkpoints", "spec-custom-loss", "single-model"):
        out[kind] = (f"spec:{targets[kind]}", targets[kind])
    out.update({kind: (wid, None) for kind, wid in wk.register_uploads(files, owner).items()})
    _OWNER[0] = owner
    return out


_OWNER = [""]  # the module's upload session (set by the workspaces fixture)


def open_page(monkeypatch, workspaces, kind: str, page: str, state: dict | None = None) -> AppTest:
    """Run ``page`` once on workspace ``kind`` with ``state`` preset (widgets' values, sidebar)."""
    wid, target = workspaces[kind]
    monkeypatch.setattr(sys, "argv", ["app.py", *(["--spec", target] if target else [])])
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page(f"pages/{page}.py")  # before the first run: the app's default page does not run first
    at.session_state["ui_workspace"] = wid
    if wid.startswith("upload:"):
        at.session_state["ui_owner"] = _OWNER[0]  # the session that uploaded it
    for key, value in (state or {}).items():
        at.session_state[key] = value
    at.run()
    return at


def texts(at: AppTest) -> list[str]:
    return [str(e.value) for name in TEXT_ELEMENTS for e in at.get(name)] + [e.label for e in at.expander]


def charts(at: AppTest) -> int:
    return len(at.get("vega_lite_chart")) + len(at.get("plotly_chart"))


def check_selections(at: AppTest) -> None:
    """Every selectbox shows one of its options; every multiselect only options (Data splits: not empty)."""
    for box in at.selectbox:
        if box.value is not None:
            assert str(box.format_func(box.value)) in box.options, (box.key, box.value, box.options)
    for box in at.multiselect:
        assert set(box.values) <= set(box.options), (box.key, box.value, box.options)
    splits = [m for m in at.multiselect if m.key == "ui_splits"]
    assert splits and splits[0].value, "the sidebar's Data splits selection is empty"


def check_cell(at: AppTest, page: str, expected_errors: tuple[str, ...] = ()) -> None:
    """What a user must never see, and what every page must show."""
    assert not at.exception, [e.value for e in at.exception]
    shown = texts(at)
    leaked = [t for t in shown if any(marker in t for marker in INTERNALS)]
    assert not leaked, leaked
    errors = [e.value for e in at.error if not any(x in e.value for x in expected_errors)]
    assert not errors, errors
    assert not at.get("progress"), "a job is still running after the synchronous wait"
    check_selections(at)
    assert at.title, "the page drew no title"
    if page in TEXT_PAGES:
        assert at.markdown
    elif not charts(at) and not at.metric:  # no chart and no number (a trace alone): say why
        reasons = [i.value for i in at.info]
        assert reasons, f"{page}: no chart and no sentence saying why"


def check_snippets(at: AppTest, kind: str, page: str) -> None:
    """A "Copy as Python" section: code for code-backed workspaces, a draft spec for uploads.

    (The Text page runs on the text demo when the sidebar's workspace is not a text model.)
    """
    from dashboard_ui.ui import NO_CODE_SENTENCE, SNIPPET_TITLE

    if not any(e.label == SNIPPET_TITLE for e in at.expander):
        return
    code = [c.value for c in at.code if c.language == "python"]
    assert code, "a Copy as Python section without code"
    if kind in ("uploads", "program") and page != "text":
        assert any(m.value == NO_CODE_SENTENCE for m in at.markdown)
        assert all("def build():" in c for c in code)
    else:
        assert all("problem" in c and "def build" not in c for c in code), code


def _upload_train_data(at: AppTest, kind: str) -> tuple[str, ...]:
    """The Your model page's setting: upload the workspace's own first 32 train samples as train data."""
    ws = ui._open(at.session_state["ui_workspace"], at.session_state["ui_owner"])
    split = ws.problem.splits["train"]
    buffer = io.BytesIO()
    torch.save({"X": split.X[:32].cpu(), "y": split.y[:32].cpu()}, buffer)
    uploader = next(u for u in at.get("file_uploader") if u.proto.label.startswith("Train data (optional)"))
    uploader.set_value(("train_head.pt", buffer.getvalue(), "application/octet-stream"))
    next(b for b in at.button if b.proto.is_form_submitter and b.proto.label == "Check and open").click()
    at.run()
    return ()


def _cells():
    for kind in wk.KINDS:
        for page in PAGES:
            yield pytest.param(kind, page, "default", id=f"{kind}-{page}-default")
            yield pytest.param(kind, page, "setting", id=f"{kind}-{page}-setting")


@pytest.mark.parametrize(("kind", "page", "variant"), list(_cells()))
def test_page_on_workspace(request, monkeypatch, workspaces, kind, page, variant):
    if variant == "default":
        request.getfixturevalue("small_defaults")
    at = open_page(monkeypatch, workspaces, kind, page, SETTINGS[page] if variant == "setting" else None)
    if variant == "default" and page in SMALL_PROBE:  # the small table reached the page (unless it says why not)
        key, value = SMALL_PROBE[page]
        found = [w.value for name in WIDGETS for w in at.get(name) if w.key == key]
        assert found == [value] or (not found and at.info), (key, found)
    if page == "your_model" and variant == "setting":
        check_cell(at, page)
        _upload_train_data(at, kind)
        assert any(m.value.startswith("Accepted") for m in at.success), [e.value for e in at.error]
        wid = at.session_state["ui_workspace"]
        assert wid.startswith("upload:") and wid != workspaces[kind][0]  # the upload opened in the sidebar
    check_cell(at, page)
    check_snippets(at, kind, page)


# -- what pages that need more than one model say ---------------------------------------------------
@pytest.mark.parametrize(
    ("page", "reason"),
    [
        ("interpolation", "single model and no checkpoints"),
        ("trajectory", "at least 3 checkpoints"),
        ("compare", "single model"),
    ],
)
def test_pages_that_need_two_models_say_so(monkeypatch, workspaces, page, reason):
    at = open_page(monkeypatch, workspaces, "single-model", page)
    check_cell(at, page)
    assert charts(at) == 0 and any(reason in i.value for i in at.info), [i.value for i in at.info]


# -- the snippet of an uploaded workspace (issue 17's first report) --------------------------------------
@pytest.mark.parametrize("page", ["interpolation", "trajectory", "surface", "sharpness"])
def test_uploaded_workspace_snippet_says_write_a_spec(monkeypatch, workspaces, page):
    at = open_page(monkeypatch, workspaces, "uploads", page, SETTINGS[page])
    check_cell(at, page)
    assert any(e.label == "Copy as Python: recompute this result with landscape_core" for e in at.expander)
    check_snippets(at, "uploads", page)
    spec = next(c.value for c in at.code if "def build():" in c.value)
    assert "9,610 parameters" in spec and "Linear(in_features=64, out_features=128" in spec


# -- workspace switches keep each workspace's own selections (issue 18, item 2) --------------------------
def switch(at: AppTest, wid: str) -> None:
    at.selectbox(key="ui_workspace").set_value(wid)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    check_selections(at)


def splits_of(at: AppTest) -> list[str]:
    return at.multiselect(key="ui_splits").value


def test_each_workspace_keeps_its_own_data_splits_and_subset(monkeypatch, workspaces):
    at = open_page(monkeypatch, workspaces, "digits-mlp", "guide")
    assert splits_of(at) == ["train", "val"]
    at.multiselect(key="ui_splits").set_value(["val"])
    at.selectbox(key="ui_subset").set_value(1024)
    at.run()
    switch(at, "logistic-blobs")  # 400 + 200 samples: 1024 is not offered
    assert splits_of(at) == ["train", "val"] and at.selectbox(key="ui_subset").value == 0
    at.multiselect(key="ui_splits").set_value(["train"])
    at.run()
    switch(at, "digits-mlp")  # the user's last choice for it
    assert splits_of(at) == ["val"] and at.selectbox(key="ui_subset").value == 1024
    switch(at, "digits-bn-cnn")
    assert splits_of(at) == ["train", "val"]
    switch(at, "logistic-blobs")
    assert splits_of(at) == ["train"]
    # uploading train data opens a new workspace: both of its splits, not the previous selection
    switch(at, "digits-mlp")
    at.switch_page("pages/your_model.py")
    at.run()
    _upload_train_data(at, "digits-mlp")
    assert at.session_state["ui_workspace"].startswith("upload:")
    assert splits_of(at) == ["train", "val"]


def _submit(at: AppTest) -> None:
    next(b for b in at.button if b.proto.is_form_submitter).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def test_settings_naming_checkpoints_follow_the_workspace(monkeypatch, workspaces):
    at = open_page(monkeypatch, workspaces, "digits-mlp", "interpolation", SETTINGS["interpolation"])
    assert at.selectbox(key="interp_a").value == "small batch (final model A)"
    at.selectbox(key="interp_a").set_value("checkpoint: small batch epoch 003")
    _submit(at)
    switch(at, "digits-seeds")  # other checkpoints: its own default pair
    assert at.selectbox(key="interp_a").value == "seed 1 (final model A)"
    check_cell(at, "interpolation")
    switch(at, "digits-mlp")  # the user's choice for it comes back
    assert at.selectbox(key="interp_a").value == "checkpoint: small batch epoch 003"
    assert at.slider(key="interp_steps").value == 5  # a setting of the page, not of the workspace
    # an upload of data for digits-mlp has the same checkpoint names, but its own default
    upload = _data_upload_of_digits_mlp(at.session_state["ui_owner"])
    at.run()  # the sidebar lists it
    switch(at, upload)
    picker = at.selectbox(key="interp_a")
    assert picker.options[0] == "A (final model A)" and picker.value == "checkpoint: small batch epoch 000"
    check_cell(at, "interpolation")


def _data_upload_of_digits_mlp(owner: str) -> str:
    """digits-mlp with uploaded train data (its checkpoints, their names), registered as the page does."""
    from landscape_core import demos
    from landscape_core.uploads import Upload

    base = demos.load("digits-mlp")
    split = base.problem.splits["train"]
    buffer = io.BytesIO()
    torch.save({"X": split.X[:32], "y": split.y[:32]}, buffer)
    return upload_registry.register(uploads.open_uploads(base, train=Upload("train_head.pt", buffer.getvalue())), owner)


# -- page settings survive navigation (issue 18, item 4) ---------------------------------------------
NAVIGATION = {  # page -> settings other than its defaults (small, so that the page stays quick)
    "surface": {"surface_seed": 7, "surface_steps": 101},  # as in the report (on 1D lines: quick)
    "interpolation": {"interp_steps": 7, "interp_span": "-0.5 to 1.5 (well beyond each end)"},
    "sharpness": {"sharp_parts": ["trace"], "sharp_budget": 18, "sharp_seed": 3},
    "trajectory": {"traj_reference": "mean", "traj_margin": 0.4},
    "compare": {"compare_seed": 2, "compare_span": 0.5},
    "text": {"text_seed": 4, "text_map": "umap"},
}
NAVIGATION_WORKSPACE = {"compare": "digits-seeds", "text": "text-sentiment"}
WIDGETS = ("selectbox", "multiselect", "slider", "select_slider", "number_input", "radio", "checkbox", "toggle")


def widget(at: AppTest, key: str):
    """The widget with ``key``, whatever its type."""
    for name in WIDGETS:
        found = [w for w in at.get(name) if w.key == key]
        if found:
            return found[0]
    raise KeyError(f"no widget with key {key!r}")


@pytest.mark.parametrize("page", list(NAVIGATION))
def test_page_settings_survive_navigation(monkeypatch, workspaces, page):
    kind = NAVIGATION_WORKSPACE.get(page, "logistic-blobs")
    settings = NAVIGATION[page]
    at = open_page(monkeypatch, workspaces, kind, page, SETTINGS[page])
    for key, value in settings.items():  # set as a user would, then Run
        widget(at, key).set_value(value)
    _submit(at)
    check_cell(at, page)
    at.switch_page("pages/guide.py")
    at.run()
    assert not at.exception
    at.switch_page(f"pages/{page}.py")
    at.run()
    check_cell(at, page)
    assert {key: widget(at, key).value for key in settings} == settings
    earlier = {k: v for k, v in SETTINGS[page].items() if k not in settings}
    drawn = {k for k in earlier if any(getattr(w, "key", None) == k for name in WIDGETS for w in at.get(name))}
    assert {key: widget(at, key).value for key in drawn} == {k: earlier[k] for k in drawn}  # the presets too


def test_navigation_really_changes_the_page(monkeypatch, workspaces):
    """The navigation tests above mean something only if a switch runs the other page."""
    at = open_page(monkeypatch, workspaces, "logistic-blobs", "guide")
    assert at.title[0].value.startswith("Guide")
    at.switch_page("pages/your_model.py")
    at.run()
    assert at.title[0].value == "Your model"
