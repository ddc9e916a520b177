"""Page settings that outlive navigation and follow the workspace.

Streamlit forgets a widget's value at the end of any run that does not draw it, so leaving a
page for another and coming back shows its defaults again (or, for a key once written through
``st.session_state``, that old write); and a widget whose options come from the workspace
(checkpoints, models, data splits, metrics) keeps whatever the previous workspace left, or
drops it, when the workspace changes. ``keep_settings`` fixes both with one store in
``st.session_state`` (``STORE``), plain values only::

    {page: {"shared": {key: value},                        # kept across navigation
            "by_workspace": {workspace_id: {key: value}},  # also across workspace switches
            "workspace": workspace_id of the page's last run}}

A page calls it once per run after ``ui.workspace()`` and before drawing its widgets:

    ui.keep_settings("surface", per_workspace={"surface_kind": "random", "surface_quantity": "loss"})

Every session key starting with ``"<page>_"`` is a setting of that page (so a page gives no
other widget such a key: buttons and file uploaders cannot be restored). Keys named in
``per_workspace`` (with the value the widget shows by default on the current workspace) are
remembered per workspace: a switch gives the new workspace the user's last choice for it, or
that default, never a value the new workspace may not have.

The values are read from the widgets by ``save_settings(page)``, the callback of the page's
form submit button and of its settings outside forms (a callback runs before the next run,
even when that run is cut short), and at the top of a run that follows one where the page drew
them (the frame calls ``start_run`` first on every run, so the store knows). Otherwise the
store's values are written back, explicitly: a browser keeps showing a widget's old value (and
sends it back) unless the server sets a new one.

The store is what a shareable link needs: ``keep_settings(..., link={key: spec})`` names the
settings that travel in the URL and what each may hold (``dashboard_ui/links.py``); the frame
mirrors them into ``st.query_params`` after every run (``linked_settings``), and the URL a
session opens with (a shared link) sets them on its first run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import streamlit as st

STORE = "ui_settings"
DRAWN = "ui_settings_drawn"  # {"before": pages that kept settings on the previous run, "now": this run}
WIDGET_DEFAULT = object()
"""A ``per_workspace`` default meaning "the widget's own default" (its options are not known yet)."""
_PLAIN = (bool, int, float, str)


def _plain(value) -> bool:
    """Values a store can hold and give back (and a URL could carry): numbers, strings, lists of them."""
    if value is None or isinstance(value, _PLAIN):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, _PLAIN) for v in value)


def _entry(page: str) -> dict:
    store = st.session_state.setdefault(STORE, {})
    return store.setdefault(page, {"shared": {}, "by_workspace": {}, "workspace": None})


def start_run() -> None:
    """Called by the frame once at the start of every run, before any page keeps its settings."""
    drawn = st.session_state.setdefault(DRAWN, {"before": [], "now": []})
    drawn["before"], drawn["now"] = drawn["now"], []


def keep_settings(
    page: str,
    per_workspace: Mapping[str, Any] | None = None,
    keys: Iterable[str] | None = None,
    workspace: str | None = None,
    link: Mapping[str, Any] | None = None,
) -> None:
    """Remember the settings of ``page`` and put back the ones Streamlit dropped (module docstring).

    ``per_workspace``: ``{key: default on this workspace}`` for settings whose choices come from
    the workspace (``WIDGET_DEFAULT``: the widget's own default). ``keys``: the setting keys
    (default: every session key starting with ``page + "_"``). ``workspace``: the id the
    settings belong to (default: the sidebar's). ``link``: ``{key: links.Choice | Many | Number |
    Flag}``, the settings mirrored into the URL and restored from it, checked against the spec.
    """
    page_call = workspace is None
    if workspace is None:
        from dashboard_ui.frame import workspace_id

        workspace = workspace_id()
    state = st.session_state
    entry = _entry(page)
    drawn = state.setdefault(DRAWN, {"before": [], "now": []})
    scoped = dict(per_workspace or {})
    entry["scoped"], entry["keys"] = sorted(scoped), None if keys is None else list(keys)
    last = entry["workspace"]
    fresh = page in drawn["before"]  # the widgets were drawn on the previous run: their values are the user's
    if fresh:
        save_settings(page)
    mine = entry["by_workspace"].get(workspace, {})
    if last is not None and workspace != last:  # another workspace: its own choices, else its defaults
        for key, default in scoped.items():
            if key in mine or default is not WIDGET_DEFAULT:
                state[key] = mine.get(key, default)
            elif key in state:
                del state[key]  # Streamlit resets it to the default if the browser sends a stale value
    # put back what a run without these widgets dropped (or left stale)
    for key, value in {**entry["shared"], **mine}.items():
        if key not in state or (not fresh and state[key] != value):
            state[key] = value
    entry["workspace"] = workspace
    drawn["now"].append(page)
    if link:
        from dashboard_ui import links

        entry["link"] = list(link)
        for key, value in links.take(page, link).items():  # the link this session opened with
            if key in scoped:
                entry["by_workspace"].setdefault(workspace, {})[key] = value
            else:
                entry["shared"][key] = value
            state[key] = value
        if page_call:
            links.show_notices()


def drawn_pages() -> list[str]:
    """The pages that kept their settings in this run."""
    return list(st.session_state.get(DRAWN, {}).get("now", []))


def linked_settings() -> dict:
    """``{key: value}`` of the linked settings of every page drawn in this run (for the URL)."""
    state = st.session_state
    values = {}
    for page in state.get(DRAWN, {}).get("now", []):
        for key in _entry(page).get("link") or []:
            if key in state and _plain(state[key]):
                values[key] = list(state[key]) if isinstance(state[key], tuple) else state[key]
    return values


def save_settings(page: str) -> None:
    """Remember what the page's widgets hold now (under the workspace they were drawn for).

    Give it to the page's form submit button (``on_click=ui.save_settings, args=(page,)``) and to
    ``on_change`` of a setting outside a form: a callback runs before the next run, so the
    choice is kept even when that run is cut short (the user clicks again while it runs).
    """
    state = st.session_state
    entry = _entry(page)
    scoped = set(entry.get("scoped", ()))
    keys = entry.get("keys")
    names = keys if keys is not None else [k for k in state if isinstance(k, str) and k.startswith(f"{page}_")]
    for key in names:
        if key not in state or not _plain(state[key]):
            continue
        value = list(state[key]) if isinstance(state[key], tuple) else state[key]
        if key not in scoped:
            entry["shared"][key] = value
        elif entry["workspace"] is not None:
            entry["by_workspace"].setdefault(entry["workspace"], {})[key] = value


def page_settings(page: str) -> dict:
    """The remembered settings of ``page`` for the current workspace: ``{key: value}``."""
    entry = _entry(page)
    return {**entry["shared"], **entry["by_workspace"].get(entry["workspace"], {})}


def restore(page: str, values: dict, workspace: str | None = None) -> None:
    """Make ``values`` (``{key: value}``, e.g. read from a link) the page's remembered settings.

    They take effect on the page's next ``keep_settings`` when its widgets were not drawn on
    the run before (a fresh visit, as when a link is opened).
    """
    entry = _entry(page)
    for key, value in values.items():
        if not (isinstance(key, str) and key.startswith(f"{page}_") and _plain(value)):
            raise ValueError(f"setting {key!r} = {value!r} is not a plain setting of page {page!r}.")
        if workspace is None:
            entry["shared"][key] = value
        else:
            entry["by_workspace"].setdefault(workspace, {})[key] = value
