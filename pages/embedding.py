"""Embedding principle page: model A inside a wider network (sections in ``dashboard_ui/embedding_sections.py``)."""

from __future__ import annotations

import streamlit as st

from dashboard_ui import embedding_sections as sections
from dashboard_ui import ui
from landscape_core import wide_demo

st.title("Embedding principle: model A inside a wider network")
st.caption(
    "Split hidden units of model A (copy a unit, divide its outgoing weights between the copies): the wider network "
    "computes the same function, so its loss is the same, and a critical point stays critical, but the Hessian gains "
    "flat directions and can turn a minimum into a saddle (Zhang et al. 2021, Fukumizu & Amari 2000)."
)

ws = ui.workspace()
narrow = ui.problem_for_page(ws, "A")
on_demo = ui.workspace_id() in wide_demo.MLP_DEMOS
s = sections.settings(narrow, on_demo)
if s is None:
    st.stop()
wide = sections.widened(narrow, s)
if wide is None:
    st.stop()
demo = ui.workspace_id() if on_demo and s["layer"] == "0" else None
scratch = sections.scratch(s, demo)
sections.loss_unchanged(narrow, wide, scratch)
if demo is not None and scratch is None:
    st.stop()  # the wide net is still training; the page reruns when it is done

models = {"model A": narrow, "widened A": wide}
if scratch is not None:
    models["wide, trained from scratch"] = scratch
key = {**s, "source": ui.source("A"), "model": narrow.model_hash(), "scratch": scratch is not None}
spectra = sections.spectra(models, wide, s, key)
planes = sections.planes(wide, scratch, s, key)
sections.verdict(narrow, wide, scratch, spectra, planes)
