"""Charts of the Sharpness & Hessian page: the extreme eigenvalues and the eigenvalue density.

- ``spectrum_chart(spectrum)``: bars of a ``hessian.Spectrum``'s eigenvalues by rank, coloured by end.
- ``density_chart(density, log, spectrum=None)``: a ``hessian.Density`` curve with its quadrature
  nodes as ticks, and lambda_max from Lanczos as a dashed rule when given.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from dashboard_ui import theme
from dashboard_ui.charts import BASE_COLOR

END_COLORS = {"largest": "#3b5bdb", "smallest": "#c92a2a"}
DENSITY_COLOR = "#5f3dc4"


def spectrum_chart(spectrum) -> alt.LayerChart:
    frame = pd.DataFrame(
        {
            "rank": np.arange(1, len(spectrum.values) + 1),
            "eigenvalue": spectrum.values,
            "end": spectrum.ends,
            "residual": spectrum.residuals,
            "converged": np.where(spectrum.converged, "yes", "NO"),
        }
    )
    color = alt.Color(
        "end:N",
        title="end of the spectrum",
        scale=alt.Scale(domain=list(END_COLORS), range=list(END_COLORS.values())),
    )
    x = alt.X("rank:O", title="eigenvalue (sorted, largest first)")
    y = alt.Y("eigenvalue:Q", title="Hessian eigenvalue")
    tooltip = [
        alt.Tooltip("eigenvalue:Q", format=".5g"),
        alt.Tooltip("residual:Q", title="residual ||Hv - lambda v||", format=".2e"),
        "converged:N",
        "end:N",
    ]
    bars = alt.Chart(frame).mark_bar(size=14).encode(x=x, y=y, color=color, tooltip=tooltip)
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color=theme.muted()).encode(y="y:Q")
    layers = [bars, zero]
    if not spectrum.converged.all():
        layers.append(
            alt.Chart(frame[frame["converged"] == "NO"])
            .mark_text(text="not converged", dy=-8, color=BASE_COLOR)
            .encode(x=x, y=y)
        )
    return alt.layer(*layers).properties(
        title="Extreme eigenvalues of the Hessian (blue: largest, red: smallest)", width="container", height=300
    )


def density_chart(dens, log: bool, spectrum=None) -> alt.LayerChart:
    frame = pd.DataFrame({"eigenvalue": dens.grid, "density": dens.density})
    if log:
        floor = max(float(frame["density"].max()) * 1e-8, 1e-300)
        frame["density"] = frame["density"].clip(lower=floor)
    y_scale = alt.Scale(type="log") if log else alt.Scale()
    area = (
        alt.Chart(frame)
        .mark_line(color=DENSITY_COLOR)
        .encode(
            x=alt.X("eigenvalue:Q", title="Hessian eigenvalue"),
            y=alt.Y(
                "density:Q",
                title="density of eigenvalues" + (" (log)" if log else ""),
                scale=y_scale,
            ),
            tooltip=[alt.Tooltip("eigenvalue:Q", format=".4g"), alt.Tooltip("density:Q", format=".3g")],
        )
    )
    bottom = float(frame["density"].min()) if log else 0.0
    nodes = pd.DataFrame({"eigenvalue": dens.nodes, "weight": dens.weights, "bottom": bottom})
    rug = (
        alt.Chart(nodes)
        .mark_tick(color="#868e96", thickness=1.5, size=14)
        .encode(
            x="eigenvalue:Q",
            y=alt.Y("bottom:Q", scale=y_scale),
            tooltip=[
                alt.Tooltip("eigenvalue:Q", title="quadrature node", format=".4g"),
                alt.Tooltip("weight:Q", format=".3g"),
            ],
        )
    )
    layers = [area, rug]
    if spectrum is not None and np.isfinite(spectrum.lambda_max):
        marks = pd.DataFrame({"eigenvalue": [spectrum.lambda_max], "what": ["lambda_max from Lanczos"]})
        layers.append(
            alt.Chart(marks)
            .mark_rule(color=END_COLORS["largest"], strokeDash=[4, 3])
            .encode(x="eigenvalue:Q", tooltip=["what:N"])
        )
    return alt.layer(*layers).properties(
        title=f"Eigenvalue density (Gaussian smoothing, sigma = {dens.sigma:.3g}); ticks: quadrature nodes",
        width="container",
        height=300,
    )
