"""The app frame: sidebar (workspace, splits, subset, device), workspace loading, errors.

Re-exported by ``dashboard_ui/ui.py``; pages import ``dashboard_ui.ui``, not this module. See its
docstring for the API.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import sys
import threading
import traceback

import streamlit as st
import torch

from dashboard_ui import links
from dashboard_ui.settings import drawn_pages, keep_settings, linked_settings, save_settings, start_run
from landscape_core import cache, clusters, executors

SUBSET_CHOICES = (0, 256, 512, 1024)  # 0 = all samples

log = logging.getLogger("landscape_dashboard.pages")


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
    """Used by ``app.py`` around ``navigation.run()``: pages know the sidebar is drawn.

    An error that escapes a page is shown as one readable sentence with the traceback folded
    away (and logged), never as Streamlit's raw exception box.
    """
    _FRAME.ran = True
    finished = True  # the run ended (also by st.stop): its view goes into the URL
    try:
        yield
    except Exception as exc:  # a bug in a page: readable, and the sidebar stays usable
        log.exception("a page failed")
        error_box(exc, "This page stopped on an unexpected error")
    except BaseException as exc:  # st.stop ends a run; a rerun starts another one
        finished = type(exc).__name__ == "StopException"
        raise
    finally:
        _FRAME.ran = False
        if finished:
            links.mirror(st.session_state.get("ui_workspace"), linked_settings(), drawn_pages())


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


UPLOAD_PREFIX = "upload:"
_OWNER = "ui_owner"


def owner() -> str:
    """This browser session's token (made once, kept in its session state): it owns the session's
    uploads, which no other session can list or open (``landscape_core.upload_registry``)."""
    token = st.session_state.get(_OWNER)
    if not isinstance(token, str) or len(token) < 8:
        from landscape_core.upload_registry import new_owner

        token = st.session_state[_OWNER] = new_owner()
    return token


def plain(text) -> str:
    """``text`` for a markdown element, shown as typed: every markdown, LaTeX and Streamlit-directive
    character is backslash-escaped (uploaded file names are never rendered as links or images)."""
    return re.sub(r"([\\`*_{}\[\]()<>#+\-.!|~:$&=\"'])", r"\\\1", str(text)).replace("\n", " ")


def available_workspaces() -> list[str]:
    """Workspace ids for the sidebar: the spec named on the command line first, this session's
    uploads (newest first), then the demos."""
    ids = []
    spec = spec_from_argv()
    if spec:
        ids.append(f"spec:{spec}")
    registry = _module("landscape_core.upload_registry")
    if registry is not None:
        ids.extend(reversed(registry.registered_ids(owner())))
    demos = _module("landscape_core.demos")
    if demos is not None:
        ids.extend(demos.list_demos())
    return ids


def _open(workspace_id: str, session_owner: str | None = None):
    """The workspace ``workspace_id``: an upload of ``session_owner`` (default: this session), never
    cached across sessions, or a spec/demo (loaded once per process)."""
    if workspace_id.startswith(UPLOAD_PREFIX):
        from landscape_core import upload_registry

        return upload_registry.registered(workspace_id, session_owner or owner())
    return _load_workspace(workspace_id)


_SPEC_NAMES: dict[str, str] = {}  # spec workspace id -> the name its Workspace gave, once loaded in this process


@st.cache_resource(show_spinner="Loading the workspace (a demo trains once, then it is cached)...", max_entries=6)
def _load_workspace(workspace_id: str):
    if workspace_id.startswith("spec:"):
        spec = _module("landscape_core.spec")
        if spec is None:
            raise ValueError("specs need landscape_core.spec, which is not installed in this version.")
        ws = spec.load_spec(workspace_id[len("spec:") :])
        _SPEC_NAMES[workspace_id] = ws.name
        return ws
    if workspace_id.startswith(UPLOAD_PREFIX):
        raise ValueError(f"{workspace_id!r} is an upload; uploads are opened per session, not from this cache.")
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
        return _open(wid)
    except Exception as exc:
        error_box(exc, f"Could not open workspace {wid!r}")
        st.stop()


RAY_CHOICE = "ray"  # the Device choice that runs jobs on the configured Ray cluster


def _device() -> str:
    """The torch device of the page's problem; with the cluster chosen the problem stays on this
    machine's CPU (the driver) and the cluster's workers place their copies themselves."""
    chosen = st.session_state.get("ui_device", "cpu")
    return "cpu" if chosen == RAY_CHOICE else chosen


def ray_address() -> str:
    """The Ray address of the sidebar's field, else ``$RAY_ADDRESS``; ``""`` when none."""
    return str(st.session_state.get("ui_ray_address") or os.environ.get("RAY_ADDRESS") or "").strip()


def cluster_executor():
    """The Ray executor of ``ray_address()`` (one per process and address), ``None`` without an
    address, or the ``ValueError`` saying why it cannot be used (Ray missing, cluster unreachable)."""
    address = ray_address()
    if not address:
        return None
    try:
        return clusters.for_address(address)
    except ValueError as exc:
        return exc


def job_executor():
    """The executor for jobs started by this run: the cluster when it is the chosen Device, else ``None``."""
    if st.session_state.get("ui_device") != RAY_CHOICE:
        return None
    chosen = cluster_executor()
    return chosen if isinstance(chosen, executors.Executor) else None


def _cluster_label(executor) -> str:
    try:
        c = executor.cluster()
    except Exception as exc:  # the cluster went away after connecting
        return f"Ray cluster (unreachable: {exc})"
    return f"Ray cluster: {c['nodes']} node(s), {c['gpus']:g} GPU(s), {c['cpus']:g} CPUs"


def device_selector() -> None:
    """The sidebar's Device choice: this machine's CPU (and GPU), and the Ray cluster when an
    address is configured (the field below, or ``$RAY_ADDRESS``)."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    cluster = None
    if clusters.ray_available() or ray_address():
        with st.expander("Ray cluster", expanded=bool(ray_address())):
            st.text_input(
                "Ray address",
                key="ui_ray_address",
                placeholder=os.environ.get("RAY_ADDRESS") or "local, auto or head-node:6379",
                help="Jobs can run on a Ray cluster (README: When one machine is not enough). "
                "'local' starts Ray on this machine; 'auto' uses $RAY_ADDRESS.",
            )
            cluster = cluster_executor()
            if isinstance(cluster, ValueError):
                st.caption(f"Not available: {cluster}")
                cluster = None
    if cluster is not None:
        devices.append(RAY_CHOICE)
    elif st.session_state.get("ui_device") == RAY_CHOICE:
        st.session_state["ui_device"] = "cpu"  # the cluster went away: back to this machine
    st.selectbox(
        "Device",
        devices,
        key="ui_device",
        format_func=lambda d: _cluster_label(cluster) if d == RAY_CHOICE else d.upper(),
        help="Where jobs compute. The cluster gives the same values (to float rounding) with the same progress "
        "and Cancel.",
    )


def _subset() -> int:
    return int(st.session_state.get("ui_subset", 0) or 0)


@st.cache_resource(show_spinner="Preparing the data subset...", max_entries=16)
def _page_problem(wid: str, which: str, subset: int, device: str, session_owner: str | None = None):

    ws = _open(wid, session_owner)
    problem = ws.problem if which == "A" else ws.compare
    if problem is None:
        raise ValueError(f"workspace {wid!r} has no model B to compare with.")
    problem = problem.on_device(device)
    if subset:
        problem = problem.subset(subset, seed=0)
    return problem


def problem_for_page(ws=None, which: str = "A"):
    """Model ``which`` ("A" or "B") of the sidebar's workspace, with its subset and device."""
    if which not in ("A", "B"):
        raise ValueError(f"which must be 'A' or 'B'; got {which!r}.")
    try:
        wid = workspace_id()
        session_owner = owner() if wid.startswith(UPLOAD_PREFIX) else None  # part of the cache key
        return _page_problem(wid, which, _subset(), _device(), session_owner)
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


def spec_label(target: str, name: str | None = None) -> str:
    """A spec as the sidebar lists it: the name its Workspace gives (``name``, once loaded), else its
    file (``minilm_sentiment_spec.py``, the function added unless ``build``); never the whole path,
    which a sidebar box would cut short."""
    head, sep, function = target.rpartition(":")
    if not (sep and function.isidentifier()):  # no function given (or a drive letter's colon)
        head, function = target, "build"
    short = re.split(r"[\\/]", head)[-1] + ("" if function == "build" else f":{function}")
    if name and not name.startswith("spec "):  # a Problem-only spec is named "spec <file>:<function>"
        return f"{name} (your spec)"  # the file and path: under "About this workspace"
    return f"your spec: {short}"


def _workspace_label(wid: str) -> str:
    if wid.startswith("spec:"):
        return spec_label(wid[5:], _SPEC_NAMES.get(wid))
    if wid.startswith(UPLOAD_PREFIX):
        from landscape_core import upload_registry

        try:
            return f"upload {upload_registry.label(wid, owner())}"
        except KeyError:
            return "upload (no longer kept)"
    return wid


_PENDING = "ui_workspace_pending"


def open_workspace(workspace_id: str) -> None:
    """Switch the sidebar to ``workspace_id`` and rerun (safe after the sidebar was drawn).

    A widget's key cannot be set once the widget exists in this run, so the choice waits
    under a pending key that ``sidebar()`` applies before it draws the selectbox.
    """
    st.session_state[_PENDING] = workspace_id
    st.rerun()


def sidebar() -> None:
    """Draw the sidebar controls (called by ``app.py`` on every run, before the page)."""
    start_run()  # the settings store learns which pages drew their widgets on the run before
    ids = available_workspaces()
    links.start_run(ids)  # a URL this session did not write: its workspace and settings apply
    with st.sidebar:
        st.markdown("### Workspace")
        if note := cache.status():  # an unusable cache folder: work goes on, said once here
            st.caption(f":material/warning: Cache: {note}.")
        if not ids:
            st.error("No demos available and no `--spec` given.")
            return
        pending = st.session_state.pop(_PENDING, None)
        if pending in ids:
            st.session_state["ui_workspace"] = pending
        if st.session_state.get("ui_workspace") not in ids:
            st.session_state["ui_workspace"] = ids[0]
        chosen = st.session_state["ui_workspace"]
        try:  # opened before it is listed, so that a spec is listed by the name it gives
            ws, failed = _open(chosen), None
        except Exception as exc:
            ws, failed = None, exc
        labels = {wid: _workspace_label(wid) for wid in ids}  # looked up now, in this session's run
        st.selectbox(
            "Problem",
            ids,
            key="ui_workspace",
            format_func=lambda wid: labels.get(wid, wid),
            help="A built-in demo (trained once, then cached), the spec named on the command line, or one of "
            "your uploads from the Your model page (kept for this browser tab only, see that page).",
        )
        if failed is not None:
            error_box(failed, "Could not open this workspace")
            return
        if ws.description or chosen.startswith("spec:"):
            with st.expander("About this workspace"):
                if chosen.startswith("spec:"):
                    st.caption(f"From the spec `{chosen[len('spec:') :]}` named on the command line.")
                if ws.description:
                    st.caption(plain(ws.description) if chosen.startswith(UPLOAD_PREFIX) else ws.description)
        problem = ws.problem
        sizes = {name: s.n for name, s in problem.splits.items()}
        largest = max(sizes.values())
        choices = [c for c in SUBSET_CHOICES if c == 0 or c < largest]
        # each workspace keeps its own splits and subset (the labels carry sizes, so the browser's
        # old selection would not match the new workspace's options)
        keep_settings(
            "ui",
            per_workspace={"ui_splits": list(sizes), "ui_subset": 0},
            keys=("ui_splits", "ui_subset"),
            workspace=st.session_state["ui_workspace"],
            link={"ui_splits": links.Many(list(sizes)), "ui_subset": links.Choice(choices)},
        )
        st.multiselect(
            "Data splits",
            list(sizes),
            default=list(sizes),
            key="ui_splits",
            on_change=save_settings,
            args=("ui",),
            format_func=lambda s: f"{s} ({sizes[s]} samples)",
            help="Which splits every page evaluates.",
        )
        st.selectbox(
            "Evaluate on",
            choices,
            key="ui_subset",
            on_change=save_settings,
            args=("ui",),
            format_func=lambda c: "all samples (exact)" if c == 0 else f"subset of {c} samples per split (noisier)",
            help="A random subset (seed 0) is faster; its values are an estimate of the full-data values.",
        )
        device_selector()
        st.caption(_model_caption("Model A", ws.labels[0], problem.space.size))
        if ws.compare is not None:
            st.caption(_model_caption("Model B", ws.labels[1], ws.compare.space.size))
        _image_settings()


def _model_caption(which: str, label: str, parameters: int) -> str:
    """``"Model A: small batch - 9,610 parameters"``; a label that already names the model is not repeated."""
    name = label.strip()
    for prefix in (f"{which}:", f"{which[-1]}:", f"{which} -", f"{which[-1]} -"):
        if name.startswith(prefix):
            name = name[len(prefix) :].strip()
    if name in ("", which, which[-1]):  # the default labels ("A", "B") add nothing
        return f"{which} - {parameters:,} parameters"
    return f"{which}: {name} - {parameters:,} parameters"


def _image_settings() -> None:
    """Size of the PNG/SVG downloads on every page (read by ``ui.image_size``)."""
    from dashboard_ui.charts import EXPORT_SCALES, EXPORT_WIDTHS

    with st.expander("Image downloads"):
        st.selectbox(
            "Width of each chart (px)",
            EXPORT_WIDTHS,
            index=1,
            key="ui_image_width",
            help="The plot area of each chart; titles, axis titles and legends are added around it, never cut.",
        )
        st.selectbox(
            "PNG scale",
            EXPORT_SCALES,
            index=1,
            key="ui_image_scale",
            format_func=lambda s: f"{s}x (pixels per px)",
            help="2x or 3x for sharp images in slides and papers; SVG is vector and needs none.",
        )


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


@contextlib.contextmanager
def section(what: str):
    """Draw a secondary part of a page (downloads, a code snippet, a readout) behind a guard.

    If the block raises, whatever it drew is replaced by one sentence naming ``what`` (e.g.
    "The barrier readout"), with the error and its traceback folded in an expander, and the
    traceback goes to the log; the rest of the page is drawn as usual. ``st.stop()`` and
    ``st.rerun()`` pass through (they are not errors).

        with ui.section("The barrier readout"):
            st.markdown(readout(path))
    """
    slot = st.empty()
    try:
        with slot.container():
            yield
    except Exception as exc:  # a secondary part must not take the page down
        log.exception("%s failed", what)
        with slot.container():
            st.error(f"{what} could not be shown; the rest of the page is not affected.")
            with st.expander("Technical details"):
                st.code("".join(traceback.format_exception(exc)), language="text")
