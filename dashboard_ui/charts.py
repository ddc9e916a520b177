"""Charts shared by the pages: Altair heatmaps with contour lines, lines, a plotly 3D view.

No numerics beyond reshaping for display: contour lines come from
``landscape_core.contours``. Diverged (NaN/inf) cells are drawn in grey and named, never
clipped away; the base point (alpha = beta = 0) is marked with a cross.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from landscape_core.contours import auto_levels, contour_lines

alt.data_transformers.disable_max_rows()

SCHEME = "viridis"
PLANE_SIDE = 420  # px: the longer side of a plane's plot area, one map per row
PLANE_SIDE_PAIR = 300  # px: the same with two maps side by side
DIVERGED_COLOR = "#9e9e9e"
BASE_COLOR = "#d6336c"
PALE_MIDDLE = ("redblue", "blueorange", "redgrey", "purplegreen")  # diverging schemes, white at 0: outlined dark
SPLIT_COLORS = {"train": "#3b5bdb", "val": "#e8590c"}


def quantity_label(quantity: str) -> str:
    """``"val_accuracy"`` -> ``"val accuracy"``."""
    return quantity.replace("_", " ")


def _positive(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size > 0 and bool(np.all(finite > 0))


def value_domain(surfaces, quantity, log: bool = False) -> tuple[float, float]:
    """``(lo, hi)`` over the finite values of ``quantity`` (a name or a list of names) in every
    surface: one shared colour scale for several maps."""
    names = [quantity] if isinstance(quantity, str) else list(quantity)
    values = np.concatenate([np.ravel(s.values[q]) for s in surfaces for q in names])
    finite = values[np.isfinite(values)]
    if log:
        finite = finite[finite > 0]
    if finite.size == 0:
        return (0.0, 1.0)
    return float(finite.min()), float(finite.max())


def _edges(coords: np.ndarray) -> np.ndarray:
    mid = (coords[1:] + coords[:-1]) / 2
    return np.concatenate([[coords[0] - (mid[0] - coords[0])], mid, [coords[-1] + (coords[-1] - mid[-1])]])


def _axis_titles(surface) -> tuple[str, str]:
    dirs = surface.settings.get("directions", [])

    def name(i: int, letter: str) -> str:
        info = dirs[i] if i < len(dirs) else {}
        kind = f"{info['kind']} " if info.get("kind") else ""
        norm = f", {info['norm']}-normalized" if info.get("norm") else ""
        return f"{letter} (along {kind}direction {i + 1}{norm})"

    return name(0, "alpha"), name(1, "beta")


def plane_size(surface, side: int = PLANE_SIDE) -> tuple[int, int]:
    """``(width, height)`` in px of a plane's plot area: equal units per pixel on both axes.

    alpha and beta are coordinates along directions of one parameter space, so a unit of each
    gets the same length on screen; the longer axis gets ``side`` pixels (a square plane is square).
    """
    x_range = float(np.ptp(_edges(surface.alphas)))
    y_range = float(np.ptp(_edges(surface.betas)))
    if x_range >= y_range:
        return side, max(1, round(side * y_range / x_range))
    return max(1, round(side * x_range / y_range)), side


LABEL_CHAR_PX, LABEL_LINE_PX = 7.0, 15.0  # bold 11 px text: width per character, line height


def _label_offsets(marks: pd.DataFrame, ae: np.ndarray, be: np.ndarray, width: int, height: int) -> list:
    """``(dx, dy, align)`` per marked point: each label on the side facing the plot's centre (so it
    stays inside the plot), moved down a line while it would overlap a label placed before it."""
    placed, out = [], []
    for row in marks.itertuples():
        x = (row.a0 - ae[0]) / (ae[-1] - ae[0]) * width
        y = (be[-1] - row.b0) / (be[-1] - be[0]) * height
        text_w = LABEL_CHAR_PX * len(str(row.model))
        align, dx = ("right", -9) if x > width / 2 else ("left", 9)
        dy = 12 if y < height / 2 else -12
        while True:
            left = x + dx - (text_w if align == "right" else 0)
            box = (left, y + dy - LABEL_LINE_PX / 2, left + text_w, y + dy + LABEL_LINE_PX / 2)
            clash = any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed)
            if not clash:
                break
            dy += LABEL_LINE_PX if dy > 0 else -LABEL_LINE_PX
        placed.append(box)
        out.append((dx, dy, align))
    return out


def heatmap(
    surface,
    quantity: str,
    log: bool = False,
    shared_domain=None,
    title: str | list[str] | None = None,
    levels: int = 10,
    points: dict | None = None,
    path: bool = False,
    scheme: str = SCHEME,
    side: int = PLANE_SIDE,
    extra: dict | None = None,
    hover: str | None = None,
):
    """Heatmap of ``surface.values[quantity]`` (a plane) with contour lines and the base point.

    Drawn at a fixed size with equal scale on both axes (``plane_size``; ``side``: px of the
    longer axis): show it with ``st.altair_chart(chart, width="content")`` so it is not stretched.

    ``log``: logarithmic colour scale (symlog if some values are <= 0). ``shared_domain``:
    ``(lo, hi)`` of the colour scale, to compare several maps on one scale.
    ``points``: ``{name: (alpha, beta)}`` models to mark (checkpoints); ``path``: join them
    in order (a training trajectory). The base point theta0 is marked when the plane is
    centred on it. ``scheme``: Vega colour scheme; a ``-r`` suffix reverses it (``"redblue-r"``:
    red for positive, for a signed difference B - A).
    ``extra``: ``{name: values}`` more grids of the same shape shown in each cell's tooltip (the
    other quantities of the plane, or A and B under their difference). ``hover``: the name of a
    pointer-over point selection on ``alpha``/``beta`` defined by the view that holds this map
    (``selections.linked``): the cell under the pointer is outlined.
    """
    if not surface.is_plane:
        raise ValueError("heatmap needs a 2D surface (a plane); this result is a 1D line.")
    values = np.asarray(surface.values[quantity], dtype=np.float64)
    alphas, betas = surface.alphas, surface.betas
    ae, be = _edges(alphas), _edges(betas)
    ii, jj = np.meshgrid(np.arange(len(alphas)), np.arange(len(betas)), indexing="ij")
    cells = pd.DataFrame(
        {
            "alpha": alphas[ii.ravel()],
            "beta": betas[jj.ravel()],
            "a0": ae[ii.ravel()],
            "a1": ae[ii.ravel() + 1],
            "b0": be[jj.ravel()],
            "b1": be[jj.ravel() + 1],
            "value": values.ravel(),
            **{name: np.asarray(grid, dtype=np.float64).ravel() for name, grid in (extra or {}).items()},
        }
    )
    # cells overlap their neighbours by 3% of a step: no anti-aliasing hairlines between them
    cells["a1_overlap"] = cells["a1"] + 0.03 * (cells["a1"] - cells["a0"])
    cells["b1_overlap"] = cells["b1"] + 0.03 * (cells["b1"] - cells["b0"])
    finite = np.isfinite(cells["value"].to_numpy())
    width, height = plane_size(surface, side)
    label = quantity_label(quantity)
    x_title, y_title = _axis_titles(surface)
    scale_type = ("log" if _positive(values) else "symlog") if log else "linear"
    reverse = scheme.endswith("-r")
    scheme_name = scheme.removesuffix("-r")
    scale = alt.Scale(scheme=scheme_name, type=scale_type, reverse=reverse)
    if shared_domain is not None:
        scale = alt.Scale(scheme=scheme_name, type=scale_type, domain=list(shared_domain), reverse=reverse)
    x = alt.X("a0:Q", title=x_title, scale=alt.Scale(domain=[ae[0], ae[-1]], nice=False))
    y = alt.Y("b0:Q", title=y_title, scale=alt.Scale(domain=[be[0], be[-1]], nice=False))
    tooltip = [
        alt.Tooltip("alpha:Q", format=".3f"),
        alt.Tooltip("beta:Q", format=".3f"),
        alt.Tooltip("value:Q", title=label, format=".4g"),
        *[
            alt.Tooltip(field=name, type="quantitative", title=quantity_label(name), format=".4g")
            for name in extra or {}
            if name != quantity
        ],
    ]
    base = (
        alt.Chart(cells[finite])
        .mark_rect(clip=True)
        .encode(
            x=x,
            x2="a1_overlap",
            y=y,
            y2="b1_overlap",
            color=alt.Color("value:Q", title=label, scale=scale),
            tooltip=tooltip,
        )
    )
    layers = [base]
    if not finite.all():
        diverged = cells[~finite].assign(status="diverged (NaN/inf)")
        layers.append(
            alt.Chart(diverged)
            .mark_rect(color=DIVERGED_COLOR)
            .encode(x=x, x2="a1", y=y, y2="b1", tooltip=["alpha:Q", "beta:Q", "status:N"])
        )
    # log-spaced contours when the values span more than a decade: the basin keeps its detail
    finite_values = values[np.isfinite(values)]
    wide = _positive(values) and finite_values.max() > 10 * finite_values.min()
    level_values = auto_levels(values, levels, log=(log or wide) and _positive(values))
    lines = contour_lines(alphas, betas, values, level_values) if len(level_values) else {}
    rows = [
        (level, f"{level:.6g}/{k}", i, *xy)
        for level, polylines in lines.items()
        for k, line in enumerate(polylines)
        for i, xy in enumerate(line)
    ]
    if rows:
        frame = pd.DataFrame(rows, columns=["level", "line", "vertex", "x", "y"])
        layers.append(
            alt.Chart(frame)
            .mark_line(color="white", strokeWidth=1, opacity=0.75)
            .encode(
                x="x:Q",
                y="y:Q",
                detail="line:N",
                order="vertex:Q",
                tooltip=[alt.Tooltip("level:Q", title=f"contour of {label}", format=".4g")],
            )
        )
    if points:
        marks = pd.DataFrame(
            [
                {"a0": float(xy[0]), "b0": float(xy[1]), "model": name, "order": i}
                for i, (name, xy) in enumerate(points.items())
            ]
        )
        if path:
            layers.append(
                alt.Chart(marks).mark_line(color="white", strokeWidth=2).encode(x="a0:Q", y="b0:Q", order="order:Q")
            )
        layers.append(
            alt.Chart(marks)
            .mark_point(shape="circle", size=70, color=BASE_COLOR, filled=True, stroke="white")
            .encode(
                x="a0:Q",
                y="b0:Q",
                tooltip=["model:N", alt.Tooltip("a0:Q", title="alpha"), alt.Tooltip("b0:Q", title="beta")],
            )
        )
        if len(marks) <= 4:
            for row, (dx, dy, align) in zip(marks.to_dict("records"), _label_offsets(marks, ae, be, width, height)):
                layers.append(
                    alt.Chart(pd.DataFrame([row]))
                    .mark_text(dx=dx, dy=dy, align=align, baseline="middle", color="white", fontWeight="bold")
                    .encode(x="a0:Q", y="b0:Q", text="model:N")
                )
    if hover is not None:  # the cell under the pointer, outlined in every map that shares the hover
        layers.append(
            alt.Chart(cells)
            .mark_rect(fill=None, stroke="#212529" if scheme_name in PALE_MIDDLE else "white", strokeWidth=2, clip=True)
            .encode(x=x, x2="a1", y=y, y2="b1")
            .transform_filter({"param": hover, "empty": False})
        )
    centred = surface.settings.get("center", "theta0") == "theta0"
    if centred and ae[0] <= 0 <= ae[-1] and be[0] <= 0 <= be[-1]:
        marker = pd.DataFrame({"a0": [0.0], "b0": [0.0], "point": ["base point (theta0)"]})
        layers.append(
            alt.Chart(marker)
            .mark_point(shape="cross", size=180, color=BASE_COLOR, filled=True, strokeWidth=1)
            .encode(x="a0:Q", y="b0:Q", tooltip=["point:N"])
        )
    title = title or f"{label} on the plane theta0 + alpha d1 + beta d2"
    chart = alt.layer(*layers).properties(
        title=alt.TitleParams(title, anchor="start", offset=8),
        width=width,
        height=height,
        autosize=alt.AutoSizeParams(type="pad"),  # the plot keeps its size; axes, legend and title go around it
    )
    return chart


def surface_3d(surface, quantity: str, log: bool = False, title: str | None = None, shared_domain=None):
    """Plotly 3D surface of a plane; diverged points are left as gaps.

    ``shared_domain``: ``(lo, hi)`` of the values (``value_domain``) for one colour scale and one
    height axis across several views; log10 of it with ``log``.
    """
    import plotly.graph_objects as go

    values = np.asarray(surface.values[quantity], dtype=np.float64)
    z = np.where(np.isfinite(values), values, np.nan)
    logged = log and _positive(values)
    if logged:
        z = np.log10(z)
    label = quantity_label(quantity) + (" (log10)" if logged else "")
    bounds = {}
    if shared_domain is not None:
        lo, hi = (float(v) for v in shared_domain)
        if logged:
            lo, hi = np.log10(max(lo, np.finfo(float).tiny)), np.log10(max(hi, np.finfo(float).tiny))
        if hi > lo:
            bounds = {"cmin": lo, "cmax": hi}
    fig = go.Figure(
        go.Surface(
            x=surface.alphas,
            y=surface.betas,
            z=z.T,
            colorscale="Viridis",
            colorbar={"title": {"text": label, "side": "right"}, "len": 0.75, "thickness": 14},
            **bounds,
        )
    )
    zaxis = {"title": {"text": label}}
    if bounds:
        pad = 0.02 * (bounds["cmax"] - bounds["cmin"])
        zaxis["range"] = [bounds["cmin"] - pad, bounds["cmax"] + pad]
    fig.update_layout(
        title=title or f"{quantity_label(quantity)}: 3D view",
        scene={
            "xaxis_title": "alpha",
            "yaxis_title": "beta",
            "zaxis": zaxis,
            "domain": {"x": [0.06, 0.82], "y": [0.0, 1.0]},  # room for z ticks on the left, the colour bar right
            "camera": {"eye": {"x": 1.9, "y": -1.9, "z": 1.3}},  # far enough that every axis stays in the scene
        },
        height=500,
        margin={"l": 20, "r": 10, "t": 50, "b": 10},
    )
    return fig


def line_chart(
    data: pd.DataFrame,
    x: str,
    y: str,
    color: str | None = None,
    title: str = "",
    x_title: str | None = None,
    y_title: str | None = None,
    log_y: bool = False,
    band: tuple[str, str] | None = None,
    base_x: float | None = 0.0,
    detail: str | None = None,
):
    """Lines from a long-form DataFrame (one row per point; ``color`` names the series column).

    ``band``: columns ``(low, high)`` drawn as a shaded spread behind the lines.
    ``base_x``: x of the base point, marked with a vertical rule (``None``: no mark).
    ``detail``: column separating several lines of one colour (e.g. several random draws).
    """
    y_scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    enc = {
        "x": alt.X(f"{x}:Q", title=x_title or x),
        "y": alt.Y(f"{y}:Q", title=y_title or quantity_label(y), scale=y_scale),
        "tooltip": [alt.Tooltip(f"{x}:Q", format=".3f"), alt.Tooltip(f"{y}:Q", format=".4g")],
    }
    if color:
        domain = sorted(data[color].unique())
        colors = [SPLIT_COLORS.get(str(v).split(" ")[0]) for v in domain]
        scale = alt.Scale(domain=domain, range=colors) if all(colors) else alt.Scale(scheme="tableau10")
        enc["color"] = alt.Color(f"{color}:N", title=color, scale=scale)
        enc["tooltip"].append(f"{color}:N")
    if detail:
        enc["detail"] = f"{detail}:N"
        enc["tooltip"].append(f"{detail}:N")
    layers = []
    if band is not None:
        band_enc = {"x": f"{x}:Q", "y": f"{band[0]}:Q", "y2": f"{band[1]}"}
        if color:
            band_enc["color"] = enc["color"]
        band_data = data.drop_duplicates(subset=[c for c in (x, color) if c])
        layers.append(alt.Chart(band_data).mark_area(opacity=0.18).encode(**band_enc))
    layers.append(alt.Chart(data).mark_line(point=len(data) <= 60, opacity=0.8 if detail else 1.0).encode(**enc))
    if base_x is not None:
        layers.append(
            alt.Chart(pd.DataFrame({x: [base_x]})).mark_rule(color=BASE_COLOR, strokeDash=[4, 3]).encode(x=f"{x}:Q")
        )
    return alt.layer(*layers).properties(
        title=alt.TitleParams(title, anchor="start", offset=8),
        width="container",
        height=320,
        autosize=alt.AutoSizeParams(type="fit", contains="padding"),
    )


def row_of(*charts, independent_colors: bool = False):
    """Several charts side by side in one view (an image with every map of a page);
    ``independent_colors``: each keeps its own colour scale and legend (A, B and B - A)."""
    panels = []
    for chart in charts:
        panel = chart.copy(deep=False)
        panel.autosize = alt.Undefined  # a concatenated view is laid out by the row
        panels.append(panel)
    row = alt.hconcat(*panels)
    return row.resolve_scale(color="independent") if independent_colors else row


# -- image export ---------------------------------------------------------------------------------
EXPORT_WIDTHS = (480, 640, 960, 1280)  # px of one chart's plot area
EXPORT_SCALES = (1, 2, 3)  # device pixels per px (PNG only)


def _resize(node, width: int) -> None:
    """In place: a container-wide view gets ``width`` px; a fixed-size one is scaled to ``width`` keeping its shape."""
    if isinstance(node, list):
        for item in node:
            _resize(item, width)
        return
    if not isinstance(node, dict):
        return
    w, h = node.get("width"), node.get("height")
    if w == "container":
        node["width"] = width
    elif isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0:
        node["width"], node["height"] = width, max(1, round(h * width / w))
    for key in ("hconcat", "vconcat", "concat"):
        if key in node:
            for part in node[key]:
                part.pop("autosize", None)  # a concatenated view is laid out by its parent
            _resize(node[key], width)
    if "layer" in node and w is None:  # a layer of layers (a heatmap plus labels): its size is inside
        _resize(node["layer"], width)


def export_spec(chart, width: int = 640) -> dict:
    """The Vega-Lite spec of ``chart`` for a file: each view ``width`` px wide (equal-scale planes keep
    their aspect), laid out so that titles, axis titles and legends sit outside the plot, never cut."""
    spec = chart.to_dict()
    _resize(spec, int(width))
    spec["autosize"] = {"type": "pad", "contains": "padding"}
    spec.setdefault("padding", 8)
    return spec


def chart_image(chart, fmt: str = "png", width: int = 640, scale: int = 2) -> bytes | str:
    """PNG bytes (``scale`` device pixels per px) or SVG text of ``chart`` at ``width`` px per view."""
    import vl_convert

    spec = export_spec(chart, width)
    if fmt == "png":
        return vl_convert.vegalite_to_png(spec, scale=scale)
    if fmt == "svg":
        return vl_convert.vegalite_to_svg(spec)
    raise ValueError(f"fmt must be 'png' or 'svg'; got {fmt!r}.")
