"""Loss-landscape dashboard: ``streamlit run app.py`` (add ``-- --spec file.py:build`` for your model).

Builds the navigation over the fixed page files in ``pages/``. A page is listed only if
its file exists and the ``landscape_core`` modules it draws from import, so a page whose
engine has not landed is hidden rather than shown broken. The sidebar (``dashboard_ui/ui.py``)
picks the workspace, data splits, evaluation subset and device for every page.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent

# (file, title, icon, engine modules that must import)
PAGES = [
    ("surface.py", "Surface", ":material/landscape:", ["landscape_core.surface"]),
    ("interpolation.py", "Interpolation", ":material/timeline:", ["landscape_core.interpolation"]),
    ("sharpness.py", "Sharpness & Hessian", ":material/speed:", ["landscape_core.hessian", "landscape_core.sharpness"]),
    ("trajectory.py", "Trajectory", ":material/route:", ["landscape_core.trajectory"]),
    ("compare.py", "Compare", ":material/compare:", ["landscape_core.surface"]),
    ("embedding.py", "Embedding principle", ":material/call_split:", ["landscape_core.embedding_principle"]),
    ("text.py", "Text embeddings", ":material/text_fields:", ["landscape_core.embeddings"]),
    ("your_model.py", "Your model", ":material/upload_file:", ["landscape_core.spec"]),
    ("guide.py", "Guide", ":material/menu_book:", []),
]


def usable_pages() -> tuple[list[tuple[str, str, str]], list[str]]:
    """``(file, title, icon)`` of the pages that can run, and notes on the ones hidden."""
    usable, hidden = [], []
    for filename, title, icon, modules in PAGES:
        if not (ROOT / "pages" / filename).exists():
            continue
        missing = []
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # an engine that fails to import hides its page
                logging.getLogger(__name__).info("hiding %s: %s", title, exc)
                missing.append(name)
        if missing:
            hidden.append(f"{title} (needs {', '.join(missing)})")
        else:
            usable.append((filename, title, icon))
    return usable, hidden


st.set_page_config(page_title="Loss landscapes", page_icon=":material/landscape:", layout="wide")

from dashboard_ui import ui  # noqa: E402  (after set_page_config)

usable, hidden = usable_pages()
navigation = st.navigation(
    [st.Page(f"pages/{f}", title=title, icon=icon, default=f == "surface.py") for f, title, icon in usable]
)
ui.sidebar()
if hidden:
    st.sidebar.caption("Not available in this install: " + "; ".join(hidden))
with ui.frame():  # pages see that the sidebar is drawn (see ui.require_frame)
    navigation.run()
