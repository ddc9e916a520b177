"""Shared UI of the dashboard: sidebar state, the job widget, downloads, errors.

Pages import from here (``from dashboard_ui import ui``) and keep only their own layout.
Charts live in ``dashboard_ui/charts.py``, the frame (sidebar, workspace loading, errors) in
``dashboard_ui/frame.py``; both are re-exported here, so this docstring is the whole API.
The package sits outside ``pages/``: Streamlit lists every ``pages/*.py`` file as a page on a
fresh server's first run, and these are not pages.

Stable API
----------
Workspace and data (the sidebar, drawn by ``app.py`` through ``sidebar()``, sets them):

- ``require_frame()``: call first on a page that does not call ``workspace()``; reruns
  through ``app.py`` when a first visit went straight to the page file (no sidebar).

- ``workspace() -> Workspace``: the workspace picked in the sidebar (a demo or a spec),
  loaded once per process (``st.cache_resource``). Shows a readable error and stops the
  page if it cannot be loaded.
- ``workspace_id() -> str``: its id (``"digits-mlp"``, ``"spec:path.py:build"`` or
  ``"upload:<12 hex>"`` for an upload registered by ``landscape_core.upload_registry.register``).
- ``available_workspaces() -> list[str]``: the ids the sidebar offers (spec, this session's
  uploads, demos).
- ``owner() -> str``: this browser session's token; uploads registered under it are listed
  and opened for this session only.
- ``plain(text) -> str``: ``text`` escaped for any markdown element, so it shows as typed
  (use it for every name that came from an upload: file names, checkpoint names).
- ``open_workspace(id)``: switch the sidebar to that workspace and rerun (from any page code).
- ``problem_for_page(ws=None, which="A") -> Problem``: model A (``ws.problem``) or B
  (``ws.compare``) with the sidebar's evaluation subset and device applied (cached).
- ``chosen_splits(problem) -> list[str]``: the data splits ticked in the sidebar that
  ``problem`` has (e.g. ``["train", "val"]``); pass as ``splits=`` to ``landscape_core``.
- ``source(which="A") -> dict``: how to rebuild that problem in Python (for snippets):
  ``{"workspace": id, "model": "A"|"B", "subset": int|None, "device": "cpu"}``.

Settings (from ``dashboard_ui/settings.py``):

- ``keep_settings(page, per_workspace=None)``: call after ``workspace()`` and before the page's
  widgets. The widgets keyed ``"<page>_..."`` keep their values across navigation for the
  session; those named in ``per_workspace`` (``{key: default on this workspace}``: choices of
  checkpoints, models, splits, metrics) are remembered per workspace and reset to the new
  workspace's own value on a switch (``WIDGET_DEFAULT``: the widget's own default).
  ``save_settings(page)``: the callback that remembers them; give it to the page's form submit
  button (``on_click=ui.save_settings, args=(page,)``) and to ``on_change`` of settings outside
  forms. ``page_settings(page) -> dict``: the remembered values.

Background work:

- ``run_job(key, fn, label, auto=True, unit="points", starting="starting") -> result | None``: ``fn(progress, cancel)``
  runs in a ``landscape_core.jobs`` worker (shared across sessions by ``key``; build keys with
  ``landscape_core.jobs.job_key(kind, settings)``). While it runs, a polling fragment
  shows a progress bar (points done, time left, smoothed by ``landscape_core.eta``; before the
  job's first count, ``starting``: what it is doing) and a Cancel button, and this returns
  ``None``; when done it returns the result. Errors and cancellations are shown in place
  with a Retry / Run again button. ``auto=False``: wait for the user's Run button. A job that
  no page has polled for ``ORPHAN_SECONDS`` (the user changed settings or left) cancels itself.

- ``partial_result(key) -> picture | None``: while the job of ``key`` runs, the latest picture its
  ``fn`` published with ``landscape_core.jobs.publish`` (a grid filling in coarse to fine); the
  job's panel reruns the page when a newer one arrives.
- ``preview_caption(preview, problem)`` / ``filling_caption(picture)``: the labels of a preview
  on a data subset and of a grid filling in (``landscape_core.preview``).

- ``estimate(problem, splits) -> CostModel | None``: the cost per grid point measured on this
  model and machine (``landscape_core.estimate``), once per model, data and splits; show
  ``describe_seconds(cost.seconds(points))`` before Run. ``None`` if the measurement failed.

Output:

- ``downloads(result, chart=None, name="result", snippet=None)``: download buttons for
  CSV (``result.to_csv()``), NPZ (``result.to_bytes()``), PNG and SVG of an Altair
  ``chart`` (vl-convert, at the sidebar's image width and scale, every part of the view:
  pass an ``alt.hconcat`` to export several maps in one file), settings JSON, and a
  "copy as Python" code block (``snippet``: the code, or a function making it; uploaded
  workspaces get a draft spec instead).
- ``image_size() -> (width, scale)``: the sidebar's choice for image downloads.
- ``error_box(exc, what="")``: a readable one-line error; the traceback only in an expander.
- ``section(what)``: context manager around a secondary part of a page (a readout, downloads,
  a snippet): if it raises, its output is replaced by one sentence naming ``what``, details in
  an expander, the traceback in the log; the page goes on.
- ``copy_as_python(snippet)``: the "copy as Python" expander on its own (``downloads`` calls it).
- ``quantity_label(q) -> str``: ``"train_loss"`` -> ``"train loss"``.
- ``significant_digits(values) -> int``: digits that show distinct values distinctly (tables).
- ``readable(frame)``: a DataFrame styled for ``st.dataframe`` (those digits; "n/a", never "None").

Charts (from ``dashboard_ui/charts.py``):

- ``heatmap(surface, quantity, log=False, shared_domain=None, title=None, levels=10,
  points=None, path=False, side=PLANE_SIDE)`` -> Altair chart: cells, contour lines (contourpy), diverged
  cells in grey, base point marked; ``points={name: (alpha, beta)}`` marks models (``path`` joins
  them). Fixed size, equal scale on both axes: show with ``st.altair_chart(chart, width="content")``
  (``side=PLANE_SIDE_PAIR`` for two maps side by side).
- ``surface_3d(surface, quantity, log=False, title=None, shared_domain=None)`` -> plotly figure
  (``shared_domain``: one colour scale and height axis for several views).
- ``line_chart(data, x, y, color=None, title="", x_title=None, y_title=None, log_y=False,
  band=None, base_x=0.0, detail=None)`` -> Altair chart from a long-form DataFrame (``detail``:
  column separating several lines of one colour; ``band``: (low, high) columns shaded).
- ``value_domain(surfaces, quantity_or_list, log=False) -> (lo, hi)``: one colour scale for several maps.
- ``row_of(*charts, independent_colors=False)`` -> the charts side by side in one view (for image downloads).
"""

from __future__ import annotations

import os
import threading
import time
import weakref

import numpy as np
import pandas as pd
import streamlit as st

from dashboard_ui.charts import (  # noqa: F401
    EXPORT_SCALES,
    EXPORT_WIDTHS,
    PLANE_SIDE,
    PLANE_SIDE_PAIR,
    chart_image,
    heatmap,
    line_chart,
    quantity_label,
    row_of,
    surface_3d,
    value_domain,
)
from dashboard_ui.frame import (  # noqa: F401  (the frame API, re-exported)
    SUBSET_CHOICES,
    _load_workspace,
    _open,
    _page_problem,
    available_workspaces,
    chosen_splits,
    error_box,
    frame,
    job_executor,
    open_workspace,
    owner,
    plain,
    problem_for_page,
    require_frame,
    section,
    sidebar,
    source,
    spec_from_argv,
    workspace,
    workspace_id,
)
from dashboard_ui.settings import WIDGET_DEFAULT, keep_settings, page_settings, save_settings  # noqa: F401  (re-exported)
from landscape_core import executors, jobs
from landscape_core.eta import EtaSmoother

POLL_SECONDS = 0.5
ORPHAN_SECONDS = 20.0  # a job no page has polled for this long cancels itself (chunks stay cached)


# -- jobs -------------------------------------------------------------------------------------
def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "estimating time left"
    if seconds < 60:
        return f"about {seconds:.0f} s left"
    return f"about {seconds / 60:.1f} min left"


def _job_wait() -> float:
    return float(os.environ.get("LANDSCAPE_JOB_WAIT", "1.5"))


_ETAS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # job -> its EtaSmoother, shared by sessions
_ETAS_LOCK = threading.Lock()


def seconds_left(job, snap) -> float | None:
    """The job's time left as shown: ``landscape_core.eta.EtaSmoother`` over its whole run (no jumps)."""
    with _ETAS_LOCK:
        smoother = _ETAS.setdefault(job, EtaSmoother())
        return smoother.update(snap.done, snap.total, snap.elapsed_s)


def progress_text(snap, unit: str = "points", starting: str = "starting", seconds: float | None = None) -> str:
    """The line over a job's progress bar: what it waits for, what it does before it can count
    (``starting``, while ``snap.total`` is 0), or ``done of total unit`` and the time left."""
    if snap.state is jobs.State.QUEUED:
        return f"{snap.label}: waiting for another computation to finish"
    if snap.total <= 0:
        return f"{snap.label}: {starting}"
    return f"{snap.label}: {snap.done:,} of {snap.total:,} {unit}, {_format_seconds(seconds)}"


@st.fragment(run_every=POLL_SECONDS)
def _job_panel(key: str, unit: str = "points", starting: str = "starting", seen: int = 0) -> None:
    job = jobs.registry().get(key)
    if job is None or job.finished or job.partials != seen:  # done, or a new picture to draw
        st.rerun(scope="app")
    job.touch()
    snap = job.snapshot()
    seconds = seconds_left(job, snap) if snap.total > 0 else None
    text = progress_text(snap, unit, starting, seconds)
    left, right = st.columns([6, 1], vertical_alignment="bottom")
    left.progress(snap.fraction, text=text)
    if job.cancel_event.is_set():
        right.caption("cancelling...")
    elif right.button("Cancel", key=f"cancel:{key}", help="Stop after the current chunk of work."):
        job.cancel()
        right.caption("cancelling...")


def _wait_watching(job, seconds: float) -> None:
    """Wait up to ``seconds`` for ``job``, touching it so a long wait does not orphan it."""
    deadline = time.monotonic() + seconds
    while not job.finished and (left := deadline - time.monotonic()) > 0:
        job.touch()
        job.wait(min(left, 1.0))


def _on_chosen_executor(fn):
    """``fn`` run on the sidebar's Device choice of executor (the Ray cluster), chosen now in the
    script thread: the job's own thread does not see this session's state."""
    chosen = job_executor()
    if chosen is None:
        return fn

    def on_cluster(progress, cancel):
        with executors.using(chosen):
            return fn(progress, cancel)

    return on_cluster


def run_job(key: str, fn, label: str, auto: bool = True, unit: str = "points", starting: str = "starting"):
    """Run ``fn(progress, cancel)`` as a shared background job; the result when done, else ``None``.

    ``unit`` names what ``progress(done, total)`` counts ("points", "steps", "products");
    ``starting`` says what the job does before its first count ("measuring the cost per point").
    """
    registry = jobs.registry()
    fn = _on_chosen_executor(fn)
    job = registry.get(key)
    if job is not None:
        job.touch()
        if job.state is jobs.State.CANCELLED and job.orphaned:
            job = None  # stopped only because nobody was watching: resume (finished tiles are cached)
    if job is None:
        if not auto:
            if st.button(f"Run: {label}", key=f"run:{key}", type="primary"):
                job = registry.submit(key, fn, label, orphan_after=ORPHAN_SECONDS)
            else:
                return None
        else:
            job = registry.submit(key, fn, label, orphan_after=ORPHAN_SECONDS)
        _wait_watching(job, _job_wait())
    if job.state is jobs.State.DONE:
        return job.result
    if job.state is jobs.State.ERROR:
        error_box(job.error, f"{label} failed", job.error_traceback)
        if st.button("Retry", key=f"retry:{key}"):
            registry.submit(key, fn, label, orphan_after=ORPHAN_SECONDS)
            st.rerun()
        return None
    if job.state is jobs.State.CANCELLED:
        snap = job.snapshot()
        if snap.note:  # the computation says what it kept ("kept 3,030 of 10,201 points; ...")
            st.warning(f"{label}: cancelled; {snap.note}.")
        else:
            st.warning(
                f"{label}: cancelled after {snap.done:,} of {snap.total:,} {unit}; nothing of it was kept "
                "(this result is cached only once it is complete)."
            )
        if st.button("Run again", key=f"again:{key}"):
            registry.submit(key, fn, label, orphan_after=ORPHAN_SECONDS)
            st.rerun()
        return None
    _job_panel(key, unit, starting, job.partials)
    return None


def partial_result(key: str):
    """The latest picture a running or cancelled job published (``landscape_core.jobs.publish``),
    else ``None``. Call after ``run_job`` returned ``None``: the page draws it while the job goes
    on (the job's panel reruns the page when a newer one arrives)."""
    job = jobs.registry().get(key)
    if job is None or job.state in (jobs.State.DONE, jobs.State.ERROR):
        return None
    return job.partial  # a cancelled job's last picture stays on screen


def preview_caption(preview, problem) -> str:
    """The label of a preview (``landscape_core.preview.preview_plane``): its grid, the samples it
    used of each split and the standard error of its loss."""
    used, noise = preview.settings["samples"], preview.settings["noise"]
    return (
        f"Preview: a {len(preview.alphas)}x{len(preview.betas)} grid on "
        + ", ".join(f"{used[s]:,} of {problem.splits[s].n:,} {s} samples" for s in used)
        + " (standard error of the loss about "
        + ", ".join(f"{noise[f'{s}_loss']:.2g}" for s in used)
        + "). The exact grid on all samples follows."
    )


def filling_caption(picture) -> str:
    """The label of a grid filling in (``landscape_core.preview.refine_plane``'s ``on_level``)."""
    level, levels = picture.settings["level"], picture.settings["levels"]
    steps = f"{len(picture.alphas)}x{len(picture.betas)}"
    cells = len(picture.alphas) * len(picture.betas)
    return (
        f"Exact {steps} grid on all samples, filling in coarse to fine: pass {level + 1} of {levels}, "
        f"{picture.settings['computed']:,} of {cells:,} points computed; each point not yet computed shows "
        "its nearest computed neighbour until its turn."
    )


@st.cache_resource(
    show_spinner="Measuring the cost per point on this model (once per model and data)...", max_entries=32
)
def _estimate(key: str, _problem, splits: tuple[str, ...]):
    from landscape_core.estimate import measure_cost

    return measure_cost(_problem, list(splits))


def estimate(problem, splits):
    """The measured ``CostModel`` of ``problem`` on ``splits`` (cached), or ``None`` if it failed."""
    data = "-".join(problem.splits[s].fingerprint[:12] for s in splits)
    try:
        return _estimate(f"{problem.model_hash()}:{data}:{problem.device}", problem, tuple(splits))
    except Exception:  # an estimate is a courtesy: never stop the page for it
        return None


# -- output -----------------------------------------------------------------------------------
def readable(table, formats: dict | None = None):
    """``table`` (a DataFrame) styled for ``st.dataframe``: every float column to ``significant_digits``
    of its own values. A column with missing values is shown as text, "n/a" where a value is missing
    (Streamlit prints ``None`` for a missing number whatever the styling); the others stay numbers.
    ``formats``: ``{column: format string or function}`` for columns that need their own."""
    formats_given, table, formats = formats or {}, table.copy(), {}
    for column in table.columns:
        values = pd.to_numeric(table[column], errors="coerce")
        numeric = table[column].map(
            lambda v: v is None or isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
        )
        if not (numeric.all() and values.notna().any()) or pd.api.types.is_integer_dtype(table[column]):
            continue
        digits = significant_digits(values.to_numpy())
        given = formats_given.get(column)

        def show(v, d=digits, given=given):
            return given.format(v) if isinstance(given, str) else given(v) if given else f"{v:.{d}g}"

        if values.isna().any():
            table[column] = [("n/a" if pd.isna(v) else show(float(v))) for v in values]
        else:
            table[column] = values.astype(float)
            formats[column] = show
    return table.style.format(formats)


def significant_digits(values, minimum: int = 4, maximum: int = 12) -> int:
    """Fewest significant digits (at least ``minimum``) that print distinct finite values distinctly.

    A table's default of 4 decimals shows -0.003612, -0.003641 and -0.003597 all as -0.0036;
    4 significant digits tell them apart, -0.0036123 and -0.0036119 need 5.
    """
    finite = np.unique(np.asarray(values, dtype=np.float64)[np.isfinite(values)])
    for digits in range(minimum, maximum + 1):
        if len({f"{v:.{digits}g}" for v in finite}) == len(finite):
            return digits
    return maximum


def image_size() -> tuple[int, int]:
    """``(width px per chart, scale)`` of PNG/SVG downloads, as chosen in the sidebar."""
    width = int(st.session_state.get("ui_image_width", EXPORT_WIDTHS[1]))
    scale = int(st.session_state.get("ui_image_scale", EXPORT_SCALES[1]))
    return width, scale


def _chart_bytes(chart, fmt: str) -> bytes | str:
    width, scale = image_size()
    return chart_image(chart, fmt, width=width, scale=scale)


def downloads(result, chart=None, name: str = "result", snippet=None) -> None:
    """Download buttons for a result (CSV, NPZ, settings JSON), its chart (PNG, SVG), and code.

    ``snippet``: the "copy as Python" code, or a function making it (called inside the section's
    guard, so a result that cannot be written as code says so instead of failing the page).
    Each part is a ``section``: an error in one shows one sentence there, never a page error.
    """
    base = name.replace(" ", "_")
    # (label, bytes or a function making them, file suffix, MIME type, icon); chart images only with a chart
    buttons = [
        ("CSV", result.to_csv, "csv", "text/csv", "table"),
        ("NPZ", result.to_bytes, "npz", "application/octet-stream", "data_array"),
        ("Settings", result.settings_json, "settings.json", "application/json", "tune"),
    ]
    if chart is not None:
        buttons += [
            ("PNG", lambda: _chart_bytes(chart, "png"), "png", "image/png", "image"),
            ("SVG", lambda: _chart_bytes(chart, "svg"), "svg", "image/svg+xml", "draw"),
        ]
    key_suffix = {"settings.json": "json"}
    with section(f"The downloads of {base}"):
        for col, (label, data, suffix, mime, icon) in zip(st.columns(5), buttons):
            col.download_button(
                label,
                data,
                f"{base}.{suffix}",
                mime,
                key=f"dl:{name}:{key_suffix.get(suffix, suffix)}",
                on_click="ignore",
                icon=f":material/{icon}:",
            )
    if snippet is not None:
        copy_as_python(snippet)


SNIPPET_TITLE = "Copy as Python: recompute this result with landscape_core"
NO_CODE_SENTENCE = (
    "This result comes from uploaded files, which hold weights and data but no code, so it cannot be written "
    "as a Python script; to recompute it in Python, write a spec for this model like the one below and open it "
    "with `landscape ... --spec my_spec.py:build` or `streamlit run app.py -- --spec my_spec.py:build`."
)


def copy_as_python(snippet) -> None:
    """The "copy as Python" expander: ``snippet`` is code or a function making it.

    Results of uploaded workspaces (``snippet.NoCodeError``) get one sentence and a draft spec for
    their model instead; results whose settings hold no recipe get one sentence with the reason.
    """
    from landscape_core import snippet as snippets

    with section("The Python snippet"):
        try:
            code = snippet() if callable(snippet) else snippet
        except snippets.NoCodeError:
            ws = _open(workspace_id())
            with st.expander(SNIPPET_TITLE):
                st.markdown(NO_CODE_SENTENCE)
                st.code(snippets.spec_for(ws.problem, ws.name), language="python")
            return
        except NotImplementedError as exc:
            with st.expander(SNIPPET_TITLE):
                st.markdown(f"This result cannot be written as a script from its settings alone: {exc}")
            return
        if code:
            with st.expander(SNIPPET_TITLE):
                st.code(code, language="python")
