"""The dashboard's shared UI: ``ui`` (the pages' API), ``frame`` (sidebar, workspace), ``charts``, and the
sections that several pages draw (``topology``: basins and diagrams; ``embedding_sections``).

Kept outside ``pages/`` so that Streamlit, which lists every ``pages/*.py`` file on a fresh
server's first run, never offers these modules as pages (they drew blank pages at /ui, /frame).
"""
