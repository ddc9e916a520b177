"""Charts shared by the pages: Altair heatmaps with numpy contours, lines, a plotly 3D view.

No numerics beyond reshaping for display: contour lines come from
``landscape_core.contours``. Diverged (NaN/inf) cells are drawn in grey and named, never
clipped away; the base point (alpha = beta = 0) is marked with a cross.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from landscape_core.contours import auto_levels, contour_segments

alt.data_transformers.disable_max_rows()

SCHEME = "viridis"
DIVERGED_COLOR = "#9e9e9e"
BASE_COLOR = "#d6336c"
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


def heatmap(
    surface,
    quantity: str,
    log: bool = False,
    shared_domain=None,
    title: str | None = None,
    levels: int = 10,
    points: dict | None = None,
    path: bool = False,
    scheme: str = SCHEME,
):
    """Heatmap of ``surface.values[quantity]`` (a plane) with contour lines and the base point.

    ``log``: logarithmic colour scale (symlog if some values are <= 0). ``shared_domain``:
    ``(lo, hi)`` of the colour scale, to compare several maps on one scale.
    ``points``: ``{name: (alpha, beta)}`` models to mark (checkpoints); ``path``: join them
    in order (a training trajectory). The base point theta0 is marked when the plane is
    centred on it. ``scheme``: Vega colour scheme; a ``-r`` suffix reverses it (``"redblue-r"``:
    red for positive, for a signed difference B - A).
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
        }
    )
    # cells overlap their neighbours by 3% of a step: no anti-aliasing hairlines between them
    cells["a1_overlap"] = cells["a1"] + 0.03 * (cells["a1"] - cells["a0"])
    cells["b1_overlap"] = cells["b1"] + 0.03 * (cells["b1"] - cells["b0"])
    finite = np.isfinite(cells["value"].to_numpy())
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
    segments = contour_segments(alphas, betas, values, level_values) if len(level_values) else {}
    rows = [(level, *seg[0], *seg[1]) for level, segs in segments.items() for seg in segs]
    if rows:
        lines = pd.DataFrame(rows, columns=["level", "x1", "y1", "x2", "y2"])
        layers.append(
            alt.Chart(lines)
            .mark_rule(color="white", strokeWidth=1, opacity=0.75)
            .encode(
                x="x1:Q",
                y="y1:Q",
                x2="x2",
                y2="y2",
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
            layers.append(
                alt.Chart(marks)
                .mark_text(dx=8, dy=-8, align="left", color="white", fontWeight="bold")
                .encode(x="a0:Q", y="b0:Q", text="model:N")
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
    return alt.layer(*layers).properties(
        title=alt.TitleParams(title, anchor="start", offset=8),
        width="container",
        height=380,
        autosize=alt.AutoSizeParams(type="fit", contains="padding"),
    )


def surface_3d(surface, quantity: str, log: bool = False, title: str | None = None):
    """Plotly 3D surface of a plane; diverged points are left as gaps."""
    import plotly.graph_objects as go

    values = np.asarray(surface.values[quantity], dtype=np.float64)
    z = np.where(np.isfinite(values), values, np.nan)
    if log and _positive(values):
        z = np.log10(z)
    label = quantity_label(quantity) + (" (log10)" if log and _positive(values) else "")
    fig = go.Figure(
        go.Surface(x=surface.alphas, y=surface.betas, z=z.T, colorscale="Viridis", colorbar={"title": label})
    )
    fig.update_layout(
        title=title or f"{quantity_label(quantity)}: 3D view",
        scene={"xaxis_title": "alpha", "yaxis_title": "beta", "zaxis_title": label},
        height=440,
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
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
