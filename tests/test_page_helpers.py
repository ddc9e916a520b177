"""The page helpers on their own (AppTest scripts): the section guard and the settings store."""

from __future__ import annotations

import logging

from streamlit.testing.v1 import AppTest

TIMEOUT = 60


# -- ui.section: a secondary part fails alone ------------------------------------------------------
def _guarded_script():
    import streamlit as st

    from dashboard_ui import ui

    st.markdown("the chart")
    with ui.section("The barrier readout"):
        st.markdown("half of the readout")
        raise NotImplementedError("an uploaded workspace has no code")
    with ui.section("The downloads"):
        st.markdown("downloads drawn")
    with ui.section("A part that stops the page"):
        st.markdown("before stop")
        if st.session_state.get("stop"):
            st.stop()
    st.markdown("after the sections")


def test_a_failing_section_shows_one_sentence_and_the_page_goes_on(caplog):
    at = AppTest.from_function(_guarded_script, default_timeout=TIMEOUT)
    with caplog.at_level(logging.ERROR, logger="landscape_dashboard.pages"):
        at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "The barrier readout could not be shown; the rest of the page is not affected."
    ]
    shown = [m.value for m in at.markdown]
    assert shown == ["the chart", "downloads drawn", "before stop", "after the sections"]  # its half is replaced
    assert [e.label for e in at.expander] == ["Technical details"]
    assert "NotImplementedError: an uploaded workspace has no code" in at.code[0].value
    assert "Traceback" in caplog.text and "The barrier readout failed" in caplog.text


def test_st_stop_inside_a_section_is_not_an_error():
    at = AppTest.from_function(_guarded_script, default_timeout=TIMEOUT)
    at.session_state["stop"] = True
    at.run()
    assert not at.exception and len(at.error) == 1  # only the failing readout
    assert [m.value for m in at.markdown][-1] == "before stop"


def _frame_script():
    import streamlit as st

    from dashboard_ui import ui

    with ui.frame():
        st.markdown("page start")
        raise RuntimeError("a bug in a page")


def test_the_frame_shows_an_escaped_error_readably():
    at = AppTest.from_function(_frame_script, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert at.error[0].value == "This page stopped on an unexpected error: RuntimeError: a bug in a page"
    assert at.expander[0].label == "Technical details (traceback)"


# -- ui.keep_settings: per page across navigation, per workspace across switches -------------------------
def _settings_script():
    import streamlit as st

    from dashboard_ui import ui
    from dashboard_ui.settings import start_run

    start_run()  # the frame's part (the sidebar calls it on every run)
    if st.session_state.pop("test_cut", False):
        start_run()  # as if a run had started and been cut short (the user clicked again while it ran)
    wid = st.session_state.get("test_workspace", "w1")
    choices = {"w1": ["a", "b", "c"], "w2": ["x", "y"]}[wid]
    if st.session_state.get("test_page", "one") != "one":
        st.markdown("another page")  # the page's widgets are not drawn: Streamlit drops their state
        return
    ui.keep_settings("one", per_workspace={"one_pick": choices[0]}, workspace=wid)
    with st.form("one_form"):
        st.number_input("Seed", 0, 100, 0, key="one_seed")
        st.form_submit_button("Run", on_click=ui.save_settings, args=("one",))
    st.selectbox("Pick", choices, key="one_pick", on_change=ui.save_settings, args=("one",))
    st.slider("Rows", 1, 10, 5, key="one_rows")  # no callback: kept when the page drew it the run before


def _visit(at: AppTest, page: str, workspace: str | None = None) -> None:
    at.session_state["test_page"] = page
    if workspace:
        at.session_state["test_workspace"] = workspace
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def _submit(at: AppTest, cut: bool = False) -> None:
    if cut:
        at.session_state["test_cut"] = True
    next(b for b in at.button if b.proto.is_form_submitter).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def test_settings_survive_another_page_and_follow_the_workspace():
    at = AppTest.from_function(_settings_script, default_timeout=TIMEOUT)
    _visit(at, "one")
    at.number_input(key="one_seed").set_value(7)
    _submit(at)
    at.selectbox(key="one_pick").set_value("c")
    at.slider(key="one_rows").set_value(8)
    at.run()
    at.run()  # the slider has no callback: the run after the one that drew it keeps its value
    _visit(at, "two")
    assert "one_seed" not in at.session_state  # Streamlit dropped the widget's state: the store has it
    _visit(at, "one")
    assert at.number_input(key="one_seed").value == 7 and at.selectbox(key="one_pick").value == "c"
    assert at.slider(key="one_rows").value == 8
    at.number_input(key="one_seed").set_value(9)  # a change after a restore: the restored 7 must not come back
    _submit(at, cut=True)  # ... even when the run before was cut short
    assert at.number_input(key="one_seed").value == 9
    _visit(at, "two")
    _visit(at, "one")
    assert at.number_input(key="one_seed").value == 9
    at.number_input(key="one_seed").set_value(7)
    _submit(at)
    _visit(at, "one", "w2")  # a switch: the page setting stays, the workspace's choice is its default
    assert at.number_input(key="one_seed").value == 7 and at.selectbox(key="one_pick").value == "x"
    at.selectbox(key="one_pick").set_value("y")
    at.run()
    _visit(at, "two", "w1")  # switch while on another page
    _visit(at, "one")
    assert at.selectbox(key="one_pick").value == "c"
    _visit(at, "one", "w2")
    assert at.selectbox(key="one_pick").value == "y"
    from dashboard_ui.settings import STORE

    assert at.session_state[STORE]["one"]["by_workspace"] == {"w1": {"one_pick": "c"}, "w2": {"one_pick": "y"}}
    assert at.session_state[STORE]["one"]["shared"] == {"one_seed": 7, "one_rows": 8}


def _restore_script():
    import streamlit as st

    from dashboard_ui import ui
    from dashboard_ui.settings import restore, start_run

    start_run()
    if st.session_state.get("link") and "restored" not in st.session_state:
        restore("one", {"one_seed": 42})  # what a shareable link would do before the page draws
        st.session_state["restored"] = True
        try:
            restore("one", {"other_seed": 1})
        except ValueError as exc:
            st.caption(str(exc))
    ui.keep_settings("one", workspace="w1")
    st.number_input("Seed", 0, 100, 0, key="one_seed")
    st.markdown(f"remembered: {ui.page_settings('one')}")


def test_restore_and_page_settings_are_the_link_hooks():
    at = AppTest.from_function(_restore_script, default_timeout=TIMEOUT)
    at.session_state["link"] = True
    at.run()
    assert at.number_input(key="one_seed").value == 42
    assert at.caption[0].value == "setting 'other_seed' = 1 is not a plain setting of page 'one'."
    at.number_input(key="one_seed").set_value(5)
    at.run()
    assert at.markdown[0].value == "remembered: {'one_seed': 5}"
