"""One page of the dashboard run in Streamlit's AppTest with a workspace and settings."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parents[1] / "pages"


def open_page(name: str, workspace: str, subset: int, timeout: float, **state) -> AppTest:
    """``pages/NAME.py`` after one run with the sidebar's ``workspace`` and data ``subset`` (its
    index in the sidebar's choices) and the session state ``state``; asserts the run raised no
    exception and drew no error box. ``timeout``: seconds one script run may take."""
    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=timeout)
    at.session_state["ui_workspace"] = workspace
    at.session_state["ui_subset"] = subset
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at
