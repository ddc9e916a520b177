"""Settings in the URL: a link opens the same view, and the browser's back button works.

After every run the frame mirrors the workspace and the linked settings of the pages drawn in
that run into ``st.query_params`` (``?workspace=digits-mlp&surface_seed=3&...``); Streamlit
pushes each change onto the browser's history, so back and forward move between pages and
their URLs. On a session's first run (a link opened, a page reloaded) the URL's values are
restored: the workspace by the sidebar, a page's settings by its ``keep_settings(..., link=...)``;
so are they on a run that the back or forward button started (the entry's URL is the view to
show). Other runs only write the URL: a run that a widget or a polling fragment started may
carry a query string older than the last one written, and reading it back would undo the
user's latest choice. A page switch in the navigation empties the query string; ``keep_query``
(before ``st.navigation``) puts the last one back, so the new page's history entry carries the
settings and one back leaves it.

A page says which settings travel and what each may hold, with the widget's own options::

    ui.keep_settings("sharp", per_workspace=..., link={"sharp_k": Number(1, 20), "sharp_which": Choice(WHICH)})

Values from a URL are written by whoever made the link: each is parsed and checked against
its ``Choice``/``Number``/``Flag``/``Many``; one that does not fit is dropped (the widget shows
its default) with a one-line notice, never an exception.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

WORKSPACE_PARAM = "workspace"
LAST = "ui_link_last"  # the query params this session last wrote (or read on its first run)
PENDING = "ui_link_pending"  # the URL's values waiting for their page's keep_settings in this run
NOTICES = "ui_link_notices"
MAX_TEXT = 2000  # no widget's value is longer in a URL
_INT = re.compile(r"[+-]?\d{1,18}")


@dataclass(frozen=True)
class Choice:
    """One of ``options`` (a selectbox, radio or select_slider); matched by its text."""

    options: Sequence[Any]

    def parse(self, text: str):
        for option in self.options:
            if encode_value(option) == text:
                return option
        raise ValueError(f"not one of the {len(self.options)} choices")


@dataclass(frozen=True)
class Many:
    """A list of distinct ``options`` (a multiselect), written as a JSON list of their texts."""

    options: Sequence[Any]

    def parse(self, text: str):
        try:
            items = json.loads(text)
        except ValueError:
            raise ValueError("not a list") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError("not a list of choices")
        single = Choice(self.options)
        values = [single.parse(i) for i in items]
        if len(set(items)) != len(items):
            raise ValueError("a choice is repeated")
        return values


@dataclass(frozen=True)
class Number:
    """A finite number in ``[low, high]`` (a number_input or slider); ``integer``: a whole number."""

    low: float
    high: float
    integer: bool = True

    def parse(self, text: str):
        if self.integer:
            if not _INT.fullmatch(text):
                raise ValueError("not a whole number")
            value = int(text)
        else:
            try:
                value = float(text)
            except ValueError:
                raise ValueError("not a number") from None
            if not math.isfinite(value):
                raise ValueError("not a finite number")
        if not self.low <= value <= self.high:
            raise ValueError(f"outside {self.low:g} to {self.high:g}")
        return value


@dataclass(frozen=True)
class Flag:
    """A checkbox: ``true`` or ``false``."""

    def parse(self, text: str):
        if text not in ("true", "false"):
            raise ValueError("not true or false")
        return text == "true"


Spec = Choice | Many | Number | Flag


def encode_value(value) -> str:
    """The URL text of a setting: ``true``/``false``, numbers as Python writes them, lists as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return json.dumps([encode_value(v) for v in value], separators=(",", ":"))
    return str(value)


def encode(workspace: str | None, settings: Mapping[str, Any]) -> dict[str, str]:
    """The query params of a view: ``{"workspace": id, key: text, ...}``."""
    params = {} if workspace is None else {WORKSPACE_PARAM: workspace}
    params.update({key: encode_value(value) for key, value in settings.items() if value is not None})
    return params


def decode(params: Mapping[str, str], link: Mapping[str, Spec]) -> tuple[dict[str, Any], list[str]]:
    """The values of ``params`` that ``link`` names and that fit their spec, and a notice per misfit."""
    values, notices = {}, []
    for key, spec in link.items():
        if key not in params:
            continue
        text = params[key]
        try:
            if not isinstance(text, str) or len(text) > MAX_TEXT:
                raise ValueError(f"longer than {MAX_TEXT} characters")
            values[key] = spec.parse(text)
        except ValueError as exc:
            shown = text if len(text) <= 40 else text[:37] + "..."
            notices.append(f"The link's setting {key} = {shown!r} was ignored ({exc}); the default is shown.")
    return values, notices


# -- the session's side ---------------------------------------------------------------------------
def _url() -> dict[str, str]:
    return {key: st.query_params[key] for key in st.query_params}


def start_run(workspaces: Iterable[str]) -> None:
    """Called by the sidebar at the start of every run, before it draws the workspace picker.

    On the session's first run, and on a run that the browser's back or forward button started,
    the URL's values become pending for this run, and its workspace, if offered here, the
    sidebar's choice.
    """
    state = st.session_state
    url = _url()
    state.pop(PENDING, None)
    state[NOTICES] = []
    if LAST in state and not history_navigation():  # a later run: the URL may be older than the view
        return
    state[LAST] = url
    state[PENDING] = url
    wid = url.get(WORKSPACE_PARAM)
    if wid is not None:
        if wid in list(workspaces):
            state["ui_workspace"] = wid
        else:
            shown = wid if len(wid) <= 40 else wid[:37] + "..."
            state[NOTICES].append(
                f"The link's workspace {shown!r} is not available here; the current workspace is shown."
            )


def history_navigation() -> bool:
    """Whether the browser's back or forward button started this run (Streamlit flags such a run;
    ``False`` where it does not say)."""
    try:
        from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx
    except ImportError:
        return False
    return bool(getattr(get_script_run_ctx(), "is_history_navigation", False))


def take(page: str, link: Mapping[str, Spec]) -> dict[str, Any]:
    """The pending URL values of ``page`` that fit ``link`` (notices for the rest); once per run."""
    pending = st.session_state.get(PENDING)
    if not pending:
        return {}
    values, notices = decode({k: v for k, v in pending.items() if k.startswith(f"{page}_")}, link)
    for key in list(pending):
        if key.startswith(f"{page}_"):
            del pending[key]
    st.session_state.setdefault(NOTICES, []).extend(notices)
    return values


def peek(key: str, spec: Spec, default):
    """The value the link opened in this run gives ``key`` if it fits ``spec``, else ``default``;
    taken by nobody. For a widget whose range depends on another setting (the inputs of a split,
    the width of a layer): the page builds that widget's spec from the value the link will set."""
    pending = st.session_state.get(PENDING) or {}
    if key in pending:
        values, _ = decode({key: pending[key]}, {key: spec})
        return values.get(key, default)
    return default


def show_notices() -> None:
    """One line per value of the link that was ignored (drawn by the page above its form)."""
    for notice in st.session_state.get(NOTICES) or []:
        st.warning(notice, icon=":material/link_off:")
    st.session_state[NOTICES] = []


def keep_query() -> None:
    """Put the URL this session last wrote back when a page switch emptied it; before ``st.navigation``.

    Opening a page from the navigation makes Streamlit send the run an empty query string, and
    ``st.navigation`` pushes the new page's URL with it: written at the end of the run, the settings
    made a second history entry, so the first back landed on the bare one of the same page (and
    the late write of the run that this back started could replace the previous page's URL
    under a second quick back). Written here, before ``st.navigation`` and unchanged, it leaves the
    browser's URL as it is and the new page's entry carries it: one entry per page switch.
    """
    last = st.session_state.get(LAST)
    if last and not _url():
        st.query_params.from_dict(last)


def query_with(workspace: str | None, settings: Mapping[str, Any]) -> dict[str, str]:
    """The URL's params with the workspace and ``settings`` set (``st.switch_page(..., query_params=)``
    empties the URL otherwise, pushing a bare entry of the page it leaves)."""
    params = _url()
    params.update(encode(workspace, settings))
    return params


def mirror(workspace: str | None, settings: Mapping[str, Any], pages: Iterable[str] = ()) -> None:
    """Write the view into ``st.query_params`` when it changed (one history entry per change).

    ``pages``: the pages drawn in this run; their keys are replaced by ``settings``. Other pages'
    settings stay, so opening another page changes the URL's path only, and the back button
    returns to the previous page's own URL.
    """
    prefixes = tuple(f"{page}_" for page in pages)
    url = _url()
    params = {k: v for k, v in url.items() if k != WORKSPACE_PARAM and not k.startswith(prefixes)}
    params.update(encode(workspace, settings))
    if params != url:
        st.query_params.from_dict(params)
    st.session_state[LAST] = params if params != url else url  # in the URL's own order (``keep_query``)
