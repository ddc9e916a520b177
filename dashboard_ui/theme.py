"""Chart colours that follow the Streamlit theme (light or dark).

Altair charts drawn with ``st.altair_chart(theme="streamlit")`` (the default) take their
background, axes, grid and text from the theme; only the colours a chart names itself do not.
Saturated colours (blue, orange, red, green) read on both backgrounds; near-black ink does not,
so marks and labels that must stand out from the page use ``ink()`` or ``muted()`` instead.

- ``scheme() -> "light" | "dark"``: the browser's theme (``st.context.theme.type``), else the
  configured ``theme.base``, else light.
- ``ink()``: the strongest contrast with the page (text-like marks, the barrier bar).
- ``muted()``: a secondary line or rule that should recede but stay visible.
"""

from __future__ import annotations

import streamlit as st

INK = {"light": "#212529", "dark": "#f1f3f5"}
MUTED = {"light": "#495057", "dark": "#ced4da"}
LIGHT_ONLY = frozenset({"#212529", "#495057", "#343a40", "black", "#000", "#000000"})
"""Colours that vanish on a dark background (what a dark-theme chart must not name)."""


def scheme() -> str:
    """``"dark"`` when the page is dark, else ``"light"``."""
    try:
        kind = st.context.theme.type
    except Exception:  # no script run context (a chart built outside the app)
        kind = None
    if kind not in ("light", "dark"):
        kind = st.get_option("theme.base")
    return "dark" if kind == "dark" else "light"


def ink() -> str:
    return INK[scheme()]


def muted() -> str:
    return MUTED[scheme()]
