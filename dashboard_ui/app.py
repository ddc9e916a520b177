"""The dashboard's entry script: ``landscape dashboard`` runs it (``streamlit run app.py`` in a checkout).

Builds the navigation over the fixed page files in ``pages/`` (installed as the package
``landscape_pages``, so an installed dashboard needs no checkout). A page is listed only if
its file exists and the ``landscape_core`` modules it draws from import, so a page whose
engine has not landed is hidden rather than shown broken. The sidebar (``dashboard_ui/ui.py``)
picks the workspace, data splits, evaluation subset and device for every page.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path

import streamlit as st


def pages_dir() -> Path:
    """The page files: the installed ``landscape_pages`` package, else ``pages/`` of this checkout."""
    spec = importlib.util.find_spec("landscape_pages")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parents[1] / "pages"


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
        if not (pages_dir() / filename).exists():
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


def main() -> None:
    """Draw the app: page config, sidebar, navigation; Streamlit calls this on every rerun."""
    st.set_page_config(page_title="Loss landscapes", page_icon=":material/landscape:", layout="wide")

    from dashboard_ui import links, ui  # after set_page_config

    usable, hidden = usable_pages()
    folder = pages_dir()
    links.keep_query()  # a page switch emptied the URL: its settings go back before navigation pushes it
    navigation = st.navigation(
        [st.Page(folder / f, title=title, icon=icon, default=f == "surface.py") for f, title, icon in usable]
    )
    ui.sidebar()
    if hidden:
        st.sidebar.caption("Not available in this install: " + "; ".join(hidden))
    with ui.frame():  # pages see that the sidebar is drawn (see ui.require_frame)
        navigation.run()


if __name__ == "__main__":  # streamlit runs this file as __main__
    main()
