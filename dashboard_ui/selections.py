"""Clicks on charts: the selection params the pages put on their charts, and reading them back.

UI only, no numerics: a click picks a grid cell or a checkpoint that a result already holds;
what the page shows for it (the 1D slices through a cell, a checkpoint's values) is read
from that result, never computed again.

- ``cell_param(name)``: click selection of one heatmap cell, by its ``alpha``/``beta``.
- ``linked(panels)``: maps as one view sharing hover and zoom.
- ``clicked(event, name)``: the first selected datum of a ``st.altair_chart(..., on_select="rerun")``
  event, or ``None``.
- ``plane_slices(surface, quantities, i, j)``: the row and column of a plane through cell ``(i, j)``.
- ``slice_chart(frame, along, at, title)``: one of those slices as lines, the clicked point marked.
- ``open_page(filename, page, shared, per_workspace, workspace)``: give another page its settings, then switch to it.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from dashboard_ui.charts import line_chart, quantity_label

CELL = "cell"  # the heatmaps' click selection
CHECKPOINT = "checkpoint"  # the trajectory views' click selection
SVG = {"embedOptions": {"renderer": "svg"}}  # ``usermeta`` of a clickable chart: one element per mark


def cell_param(name: str = CELL):
    """Click one cell (by its ``alpha`` and ``beta``); a double click clears it."""
    return alt.selection_point(name=name, fields=["alpha", "beta"], on="click", clear="dblclick", toggle=False)


def linked(panels: list, hover: str = "hover", zoom: str = "zoom", columns: int = 2) -> dict:
    """Maps as one view (``columns`` per row) sharing a hover and a zoom: a pointer-over point
    selection ``hover`` on ``alpha``/``beta`` and an interval ``zoom`` bound to the shared scales
    (drag pans, the wheel zooms, a double click goes back). ``panels``: heatmaps made with
    ``hover=hover``. Returns the Vega-Lite spec (for ``st.vega_lite_chart``): the params are
    declared once, on the whole view, naming the cells' view of every map (Altair would rename
    those views when it lifts one param shared by several maps). The views are named
    ``<hover>_map<i>`` (the cells) and ``<hover>_outline<i>`` (the hovered cell's outline), i
    counting the panels: an SVG rendering carries them as classes ``<name>_marks``."""
    laid_out = []
    for panel in panels:
        panel = panel.copy(deep=False)
        panel.autosize = alt.Undefined  # laid out by the view
        laid_out.append(panel)
    view = alt.concat(*laid_out, columns=columns).resolve_scale(x="shared", y="shared", color="independent")
    spec = view.properties(usermeta=SVG).to_dict()
    names = [f"{hover}_map{i}" for i in range(len(spec["concat"]))]
    for i, (panel, name) in enumerate(zip(spec["concat"], names)):
        panel["layer"][0]["name"] = name  # the cells
        for layer in panel["layer"]:  # the outline of the hovered cell: drawn as SVG class "<hover>_outline<i>_marks"
            if {"filter": {"param": hover, "empty": False}} in layer.get("transform", []):
                layer["name"] = f"{hover}_outline{i}"
    point = {"type": "point", "fields": ["alpha", "beta"], "on": "pointerover", "clear": "pointerout", "toggle": False}
    spec["params"] = [
        {"name": hover, "select": point, "views": names},
        {"name": zoom, "select": {"type": "interval"}, "bind": "scales", "views": names},
    ]
    return spec


def checkpoint_param(name: str = CHECKPOINT):
    """Click one checkpoint (by its name); a double click clears it."""
    return alt.selection_point(name=name, fields=["checkpoint"], on="click", clear="dblclick", toggle=False)


def clicked(event, name: str) -> dict | None:
    """The first datum selected under param ``name`` in a chart's selection ``event``, or ``None``.

    Streamlit gives a point selection as a list of ``{field: value}``; anything else (no click,
    a cleared selection, a malformed value) reads as no click.
    """
    try:
        chosen = event["selection"][name]
    except (KeyError, TypeError, AttributeError):
        return None
    if isinstance(chosen, dict):
        chosen = [chosen]
    if not isinstance(chosen, list) or not chosen or not isinstance(chosen[0], dict):
        return None
    return chosen[0]


def nearest(coords: np.ndarray, value) -> int | None:
    """Index of the grid coordinate closest to ``value`` (a click's number), ``None`` if not a number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(v):
        return None
    return int(np.argmin(np.abs(np.asarray(coords, dtype=np.float64) - v)))


def plane_slices(surface, quantities: list[str], i: int, j: int) -> pd.DataFrame:
    """The 1D slices of a plane through cell ``(i, j)``: long form, one row per point and quantity.

    ``along``: ``"alpha"`` (the row ``values[q][:, j]``, beta fixed at ``betas[j]``) or
    ``"beta"`` (the column ``values[q][i, :]``, alpha fixed at ``alphas[i]``); ``coordinate``:
    alpha or beta of the point; ``quantity``: its readable name; ``value``: from the grid.
    """
    rows = []
    for q in quantities:
        values = np.asarray(surface.values[q], dtype=np.float64)
        label = quantity_label(q)
        rows += [
            {"along": "alpha", "coordinate": float(a), "quantity": label, "value": float(v)}
            for a, v in zip(surface.alphas, values[:, j])
        ]
        rows += [
            {"along": "beta", "coordinate": float(b), "quantity": label, "value": float(v)}
            for b, v in zip(surface.betas, values[i, :])
        ]
    return pd.DataFrame(rows)


def slice_chart(frame: pd.DataFrame, along: str, at: float, title: str, log: bool = False):
    """One slice of ``plane_slices`` (``along`` = "alpha" or "beta") with the clicked point ``at`` marked."""
    part = frame[frame["along"] == along].rename(columns={"coordinate": along})
    if log:
        part = part[part["value"] > 0]
    chart = line_chart(
        part,
        along,
        "value",
        color="quantity",
        title=title,
        x_title=along,
        y_title="value",
        log_y=log,
        base_x=at,
    )
    return chart.properties(height=260)


def open_page(filename: str, page: str, shared: dict, per_workspace: dict, workspace: str) -> None:
    """Give ``page`` its settings (``settings.restore``: ``shared`` ones, and ``per_workspace`` ones
    for ``workspace``), then open the page file ``filename`` of the navigation on them."""
    from dashboard_ui import links
    from dashboard_ui.app import pages_dir
    from dashboard_ui.settings import restore

    restore(page, shared)
    restore(page, per_workspace, workspace=workspace)
    query = links.query_with(workspace, {**shared, **per_workspace})  # the page's URL carries them from the start
    st.switch_page(st.Page(pages_dir() / filename), query_params=query)
