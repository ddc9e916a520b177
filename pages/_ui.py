"""Shared UI of the dashboard: sidebar state, the job widget, downloads, errors.

Pages import from here (``from pages import _ui as ui``) and keep only their own layout.
Charts live in ``pages/_charts.py`` and are re-exported here.

Stable API
----------
Workspace and data (the sidebar, drawn by ``app.py`` through ``sidebar()``, sets them):

- ``require_frame()``: call first on a page that does not call ``workspace()``; reruns
  through ``app.py`` when a first visit went straight to the page file (no sidebar).

- ``workspace() -> Workspace``: the workspace picked in the sidebar (a demo or a spec),
  loaded once per process (``st.cache_resource``). Shows a readable error and stops the
  page if it cannot be loaded.
- ``workspace_id() -> str``: its id (``"digits-mlp"``, ``"spec:path.py:build"`` or
  ``"upload:<name>:<hash>"`` for a workspace registered by ``landscape_core.uploads.register``).
- ``available_workspaces() -> list[str]``: the ids the sidebar offers (spec, uploads, demos).
- ``problem_for_page(ws=None, which="A") -> Problem``: model A (``ws.problem``) or B
  (``ws.compare``) with the sidebar's evaluation subset and device applied (cached).
- ``chosen_splits(problem) -> list[str]``: the data splits ticked in the sidebar that
  ``problem`` has (e.g. ``["train", "val"]``); pass as ``splits=`` to ``landscape_core``.
- ``source(which="A") -> dict``: how to rebuild that problem in Python (for snippets):
  ``{"workspace": id, "model": "A"|"B", "subset": int|None, "device": "cpu"}``.

Background work:

- ``run_job(key, fn, label, auto=True) -> result | None``: ``fn(progress, cancel)`` runs in
  a ``landscape_core.jobs`` worker (shared across sessions by ``key``; build keys with
  ``landscape_core.jobs.job_key(kind, settings)``). While it runs, a polling fragment
  shows a progress bar (points done, time left) and a Cancel button, and this returns
  ``None``; when done it returns the result. Errors and cancellations are shown in place
  with a Retry / Run again button. ``auto=False``: wait for the user's Run button.

Output:

- ``downloads(result, chart=None, name="result", snippet=None)``: download buttons for
  CSV (``result.to_csv()``), NPZ (``result.to_bytes()``), PNG and SVG of an Altair
  ``chart`` (vl-convert), settings JSON, and a "copy as Python" code block (``snippet``).
- ``error_box(exc, what="")``: a readable one-line error; the traceback only in an expander.
- ``quantity_label(q) -> str``: ``"train_loss"`` -> ``"train loss"``.

Charts (from ``pages/_charts.py``):

- ``heatmap(surface, quantity, log=False, shared_domain=None, title=None, levels=10,
  points=None, path=False)`` -> Altair chart: cells, numpy contour lines, diverged cells in
  grey, base point marked; ``points={name: (alpha, beta)}`` marks models (``path`` joins them).
- ``surface_3d(surface, quantity, log=False, title=None)`` -> plotly figure.
- ``line_chart(data, x, y, color=None, title="", x_title=None, y_title=None, log_y=False,
  band=None, base_x=0.0, detail=None)`` -> Altair chart from a long-form DataFrame (``detail``:
  column separating several lines of one colour; ``band``: (low, high) columns shaded).
- ``value_domain(surfaces, quantity_or_list, log=False) -> (lo, hi)``: one colour scale for several maps.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import threading
import traceback

import streamlit as st
import torch

from landscape_core import jobs
from pages._charts import heatmap, line_chart, quantity_label, surface_3d, value_domain  # noqa: F401

SUBSET_CHOICES = (0, 256, 512, 1024)  # 0 = all samples
POLL_SECONDS = 0.5


# -- the frame ----------------------------------------------------------------------------------
def _prefer_navigation() -> None:
    """Make Streamlit route every session through ``app.py``'s ``st.navigation``.

    Until some session has run ``st.navigation`` in this process, Streamlit treats the
    ``pages/`` folder as a legacy multipage app: a first visit straight to ``/compare``
    would run that file alone, without the sidebar. Clearing the legacy flag here (the
    first page import) makes every later run start at ``app.py``.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager

        PagesManager.uses_pages_directory = False
    except Exception:  # a Streamlit without this internal: the legacy fallback stays
        pass


_prefer_navigation()


def _legacy_mode() -> bool | None:
    try:
        from streamlit.runtime.pages_manager import PagesManager

        return PagesManager.uses_pages_directory
    except Exception:
        return None


_FRAME = threading.local()  # .ran: app.py is running in this script thread right now


@contextlib.contextmanager
def frame():
    """Used by ``app.py`` around ``navigation.run()``: pages know the sidebar is drawn."""
    _FRAME.ran = True
    try:
        yield
    finally:
        _FRAME.ran = False


def require_frame() -> None:
    """Make sure this run has the app's sidebar, even if Streamlit ran the page file alone.

    That happens on a first visit straight to a page (see ``_prefer_navigation``): the page
    is rerun once through ``app.py``; if Streamlit still runs it alone (``AppTest`` does, on
    every rerun), the sidebar is drawn here instead, so its settings are never lost.
    """
    if getattr(_FRAME, "ran", False):
        st.session_state.pop("ui_frame_rerun", None)
        return
    if _legacy_mode() is False and not st.session_state.get("ui_frame_rerun"):
        st.session_state["ui_frame_rerun"] = True  # the next run goes through app.py
        st.rerun()
    st.set_page_config(page_title="Loss landscapes", layout="wide")
    sidebar()


# -- workspace ------------------------------------------------------------------------------
def spec_from_argv(argv: list[str] | None = None) -> str | None:
    """The ``--spec path.py:build`` given after ``--`` on the ``streamlit run`` line, if any."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--spec", default=None)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args.spec


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def available_workspaces() -> list[str]:
    """Workspace ids for the sidebar: the spec named on the command line first, then the demos."""
    ids = []
    spec = spec_from_argv()
    if spec:
        ids.append(f"spec:{spec}")
    uploads = _module("landscape_core.uploads")
    if uploads is not None and hasattr(uploads, "registered_ids"):
        ids.extend(reversed(uploads.registered_ids()))  # newest upload first
    demos = _module("landscape_core.demos")
    if demos is not None:
        ids.extend(demos.list_demos())
    return ids


@st.cache_resource(show_spinner="Loading the workspace (a demo trains once, then it is cached)...", max_entries=6)
def _load_workspace(workspace_id: str):
    if workspace_id.startswith("spec:"):
        spec = _module("landscape_core.spec")
        if spec is None:
            raise ValueError("specs need landscape_core.spec, which is not installed in this version.")
        return spec.load_spec(workspace_id[len("spec:") :])
    if workspace_id.startswith("upload:"):
        uploads = _module("landscape_core.uploads")
        if uploads is None:
            raise ValueError("uploaded workspaces need landscape_core.uploads, which is not installed.")
        return uploads.registered(workspace_id)
    demos = _module("landscape_core.demos")
    if demos is None:
        raise ValueError("no workspace: landscape_core.demos is not available and no --spec was given.")
    return demos.load(workspace_id)


def workspace_id() -> str:
    ids = available_workspaces()
    chosen = st.session_state.get("ui_workspace")
    if chosen not in ids:
        if not ids:
            st.error("No workspace available: give a spec (`streamlit run app.py -- --spec file.py:build`).")
            st.stop()
        chosen = ids[0]
    return chosen


def workspace():
    """The sidebar's workspace; on a load error, say so readably and stop the page."""
    require_frame()
    wid = workspace_id()
    try:
        return _load_workspace(wid)
    except Exception as exc:
        error_box(exc, f"Could not open workspace {wid!r}")
        st.stop()


def _device() -> str:
    return st.session_state.get("ui_device", "cpu")


def _subset() -> int:
    return int(st.session_state.get("ui_subset", 0) or 0)


@st.cache_resource(show_spinner="Preparing the data subset...", max_entries=16)
def _page_problem(wid: str, which: str, subset: int, device: str):
    from landscape_core.problem import Problem

    ws = _load_workspace(wid)
    problem = ws.problem if which == "A" else ws.compare
    if problem is None:
        raise ValueError(f"workspace {wid!r} has no model B to compare with.")
    if torch.device(device) != problem.device:
        data = {name: (s.X.to(device), s.y.to(device)) for name, s in problem.splits.items()}
        problem = Problem(
            problem.model,
            problem.loss,
            data["train"],
            data.get("val"),
            metrics=problem.metrics,
            batch_size=problem.batch_size,
            device=device,
            mode=problem.mode,
        )
    if subset:
        problem = problem.subset(subset, seed=0)
    return problem


def problem_for_page(ws=None, which: str = "A"):
    """Model ``which`` ("A" or "B") of the sidebar's workspace, with its subset and device."""
    if which not in ("A", "B"):
        raise ValueError(f"which must be 'A' or 'B'; got {which!r}.")
    try:
        return _page_problem(workspace_id(), which, _subset(), _device())
    except Exception as exc:
        error_box(exc, f"Could not prepare model {which}")
        st.stop()


def chosen_splits(problem) -> list[str]:
    """Splits ticked in the sidebar that ``problem`` has (at least one)."""
    wanted = st.session_state.get("ui_splits") or list(problem.splits)
    splits = [s for s in problem.splits if s in wanted]
    return splits or list(problem.splits)[:1]


def source(which: str = "A") -> dict:
    """How the current problem is built, for "copy as Python" snippets."""
    return {"workspace": workspace_id(), "model": which, "subset": _subset() or None, "device": _device()}


def _workspace_label(wid: str) -> str:
    if wid.startswith("spec:"):
        return f"your spec: {wid[5:]}"
    if wid.startswith("upload:"):
        return f"upload: {wid.split(':')[1]}"
    return wid


def sidebar() -> None:
    """Draw the sidebar controls (called by ``app.py`` on every run, before the page)."""
    ids = available_workspaces()
    with st.sidebar:
        st.markdown("### Workspace")
        if not ids:
            st.error("No demos available and no `--spec` given.")
            return
        if st.session_state.get("ui_workspace") not in ids:
            st.session_state["ui_workspace"] = ids[0]
        st.selectbox(
            "Problem",
            ids,
            key="ui_workspace",
            format_func=_workspace_label,
            help="A built-in demo (trained once, then cached), the spec named on the command line, or an upload "
            "from the Your model page.",
        )
        try:
            ws = _load_workspace(st.session_state["ui_workspace"])
        except Exception as exc:
            error_box(exc, "Could not open this workspace")
            return
        if ws.description:
            with st.expander("About this workspace"):
                st.caption(ws.description)
        problem = ws.problem
        sizes = {name: s.n for name, s in problem.splits.items()}
        st.multiselect(
            "Data splits",
            list(sizes),
            default=list(sizes),
            key="ui_splits",
            format_func=lambda s: f"{s} ({sizes[s]} samples)",
            help="Which splits every page evaluates.",
        )
        largest = max(sizes.values())
        choices = [c for c in SUBSET_CHOICES if c == 0 or c < largest]
        st.selectbox(
            "Evaluate on",
            choices,
            key="ui_subset",
            format_func=lambda c: "all samples (exact)" if c == 0 else f"subset of {c} samples per split (noisier)",
            help="A random subset (seed 0) is faster; its values are an estimate of the full-data values.",
        )
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        st.selectbox("Device", devices, key="ui_device", format_func=str.upper)
        st.caption(f"Model A: {ws.labels[0]} - {problem.space.size:,} parameters")
        if ws.compare is not None:
            st.caption(f"Model B: {ws.labels[1]} - {ws.compare.space.size:,} parameters")


# -- jobs -------------------------------------------------------------------------------------
def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "estimating time left"
    if seconds < 60:
        return f"about {seconds:.0f} s left"
    return f"about {seconds / 60:.1f} min left"


def _job_wait() -> float:
    return float(os.environ.get("LANDSCAPE_JOB_WAIT", "1.5"))


@st.fragment(run_every=POLL_SECONDS)
def _job_panel(key: str) -> None:
    job = jobs.registry().get(key)
    if job is None or job.finished:
        st.rerun(scope="app")
    snap = job.snapshot()
    if snap.state is jobs.State.QUEUED:
        text = f"{snap.label}: waiting for another computation to finish"
    else:
        text = f"{snap.label}: {snap.done:,} of {snap.total:,} points, {_format_seconds(snap.eta_s)}"
    left, right = st.columns([6, 1], vertical_alignment="bottom")
    left.progress(snap.fraction, text=text)
    if job.cancel_event.is_set():
        right.caption("cancelling...")
    elif right.button("Cancel", key=f"cancel:{key}", help="Stop after the current chunk of points."):
        job.cancel()
        right.caption("cancelling...")


def run_job(key: str, fn, label: str, auto: bool = True):
    """Run ``fn(progress, cancel)`` as a shared background job; the result when done, else ``None``."""
    registry = jobs.registry()
    job = registry.get(key)
    if job is None:
        if not auto:
            if st.button(f"Run: {label}", key=f"run:{key}", type="primary"):
                job = registry.submit(key, fn, label)
            else:
                return None
        else:
            job = registry.submit(key, fn, label)
        job.wait(_job_wait())
    if job.state is jobs.State.DONE:
        return job.result
    if job.state is jobs.State.ERROR:
        error_box(job.error, f"{label} failed", job.error_traceback)
        if st.button("Retry", key=f"retry:{key}"):
            registry.submit(key, fn, label)
            st.rerun()
        return None
    if job.state is jobs.State.CANCELLED:
        snap = job.snapshot()
        st.warning(f"{label}: cancelled after {snap.done:,} of {snap.total:,} points. Finished chunks are cached.")
        if st.button("Run again", key=f"again:{key}"):
            registry.submit(key, fn, label)
            st.rerun()
        return None
    _job_panel(key)
    return None


# -- output -----------------------------------------------------------------------------------
def error_box(exc: BaseException | str, what: str = "", tb: str | None = None) -> None:
    """A readable error next to the control that caused it; the traceback folded away."""
    if isinstance(exc, BaseException):
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, (ValueError, KeyError, TypeError)):
            message = f"{type(exc).__name__}: {message}"
        tb = tb or "".join(traceback.format_exception(exc))
    else:
        message = str(exc)
    st.error(f"{what}: {message}" if what else message)
    if tb:
        with st.expander("Technical details (traceback)"):
            st.code(tb, language="text")


def _chart_bytes(chart, fmt: str) -> bytes | str:
    import vl_convert

    spec = chart.to_json()
    if fmt == "png":
        return vl_convert.vegalite_to_png(spec, scale=2)
    return vl_convert.vegalite_to_svg(spec)


def downloads(result, chart=None, name: str = "result", snippet: str | None = None) -> None:
    """Download buttons for a result (CSV, NPZ, settings JSON), its chart (PNG, SVG), and code."""
    cols = st.columns(5)
    base = name.replace(" ", "_")
    cols[0].download_button(
        "CSV",
        result.to_csv,
        f"{base}.csv",
        "text/csv",
        key=f"dl:{name}:csv",
        on_click="ignore",
        icon=":material/table:",
    )
    cols[1].download_button(
        "NPZ",
        result.to_bytes,
        f"{base}.npz",
        "application/octet-stream",
        key=f"dl:{name}:npz",
        on_click="ignore",
        icon=":material/data_array:",
    )
    cols[2].download_button(
        "Settings",
        result.settings_json,
        f"{base}.settings.json",
        "application/json",
        key=f"dl:{name}:json",
        on_click="ignore",
        icon=":material/tune:",
    )
    if chart is not None:
        cols[3].download_button(
            "PNG",
            lambda: _chart_bytes(chart, "png"),
            f"{base}.png",
            "image/png",
            key=f"dl:{name}:png",
            on_click="ignore",
            icon=":material/image:",
        )
        cols[4].download_button(
            "SVG",
            lambda: _chart_bytes(chart, "svg"),
            f"{base}.svg",
            "image/svg+xml",
            key=f"dl:{name}:svg",
            on_click="ignore",
            icon=":material/draw:",
        )
    if snippet:
        with st.expander("Copy as Python: recompute this result with landscape_core"):
            st.code(snippet, language="python")
