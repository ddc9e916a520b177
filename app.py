"""Streamlit entry point (placeholder until the dashboard lands): a demo surface."""

import streamlit as st

st.set_page_config(page_title="Loss landscape", layout="wide")
st.title("Loss landscape")
st.write("The dashboard is being built; `landscape_core` is usable from Python.")
