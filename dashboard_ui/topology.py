"""Page sections for the landscape's topology: basins and barriers on a map, two diagrams compared.

UI only: the numbers come from ``landscape_core.topology`` (0-dimensional persistence) and
``landscape_core.bottleneck``.

- ``basins(surface, quantity, log, domain, key)``: a threshold, the number of basins above it,
  the heatmap with each basin's floor and the saddle to the deepest one marked, a table, downloads.
- ``diagrams(surface_a, surface_b, quantity, labels, key)``: both persistence diagrams on one chart
  and the bottleneck distance between them.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from dashboard_ui import ui
from landscape_core import bottleneck, topology

MODEL_COLORS = ("#3b5bdb", "#e8590c")
SADDLE_COLOR = "#f08c00"


def _value_range(surface, quantity: str) -> float:
    """max - min over the finite values of the map (the scale of the persistence threshold)."""
    values = np.asarray(surface.values[quantity], dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.max() - finite.min()) if finite.size else 0.0


def _threshold(key: str, what: str) -> float:
    return st.slider(
        f"Persistence threshold ({what}), % of the value range",
        0.0,
        20.0,
        1.0,
        0.5,
        key=key,
        help="A basin counts when its floor lies more than this far below the lowest barrier out of it.",
    )


def _marks(result: topology.Persistence, kept: np.ndarray) -> list:
    """Altair layers: basin floors (numbered) and the saddles to the deepest basin, in heatmap fields."""
    floors = result.coords(result.minima[kept])
    saddles = result.coords(result.barrier_saddles[kept])
    rows = pd.DataFrame(
        {
            "a0": floors[:, 0],
            "b0": floors[:, 1],
            "basin": [str(i + 1) for i in range(len(kept))],
            "floor": result.births[kept],
            "persistence": result.persistence[kept],
            "barrier": result.barriers[kept],
            "sa": saddles[:, 0],
            "sb": saddles[:, 1],
        }
    )
    tooltip = ["basin:N", alt.Tooltip("floor:Q", format=".4g"), alt.Tooltip("persistence:Q", format=".3g")]
    layers = [
        alt.Chart(rows)
        .mark_point(shape="circle", size=90, filled=True, color="white", stroke="black", strokeWidth=1)
        .encode(x="a0:Q", y="b0:Q", tooltip=tooltip),
        alt.Chart(rows).mark_text(dy=-11, color="white", fontWeight="bold").encode(x="a0:Q", y="b0:Q", text="basin:N"),
    ]
    linked = rows[np.isfinite(rows["sa"])].drop(columns=["a0", "b0"]).rename(columns={"sa": "a0", "sb": "b0"})
    if len(linked):  # same field names as the heatmap's axes: one shared scale and title
        layers.append(
            alt.Chart(linked)
            .mark_point(shape="triangle-up", size=110, filled=True, color=SADDLE_COLOR, stroke="black", strokeWidth=0.5)
            .encode(
                x="a0:Q",
                y="b0:Q",
                tooltip=["basin:N", alt.Tooltip("barrier:Q", title="barrier to the deepest basin", format=".4g")],
            )
        )
    return layers


def basins(surface, quantity: str, log: bool = False, domain=None, key: str = "topology") -> topology.Persistence:
    """The basins section of a plane; returns the ``Persistence`` it drew."""
    st.markdown("#### Basins and barriers (0-dimensional persistence)")
    result = topology.persistence(surface, quantity)
    if not len(result.pairs):
        st.info("Every point of this map diverged: there is no basin to count.")
        return result
    spread = _value_range(surface, quantity)
    percent = _threshold(f"{key}_threshold", ui.quantity_label(quantity))
    threshold = percent / 100 * spread
    kept = result.basins(threshold)
    chart = ui.heatmap(
        surface,
        quantity,
        log=log,
        shared_domain=domain,
        title=f"{ui.quantity_label(quantity)}: basins (white, numbered) and saddles to the deepest (orange)",
    )
    chart.layer.extend(_marks(result, kept))
    st.altair_chart(chart, width="stretch")
    at = result.coords(result.minima[kept])
    via = result.coords(result.barrier_saddles[kept])
    table = pd.DataFrame(
        {
            "basin": np.arange(1, len(kept) + 1),
            "floor": result.births[kept],
            "alpha": at[:, 0],
            "beta": at[:, 1],
            "persistence": result.persistence[kept],
            "barrier to the deepest": np.where(kept == 0, np.nan, result.barriers[kept]),  # row 0 is the deepest
            "barrier height": np.where(kept == 0, np.nan, result.barrier_heights[kept]),
            "saddle alpha": via[:, 0],
            "saddle beta": via[:, 1],
        }
    )
    st.dataframe(ui.readable(table), hide_index=True, width="stretch")  # "n/a", not "None", for the deepest
    st.markdown(_basins_readout(result, kept, threshold, percent, quantity))
    ui.downloads(result, chart=chart, name=f"basins_{quantity}")
    return result


def _basins_readout(result, kept, threshold: float, percent: float, quantity: str) -> str:
    label = ui.quantity_label(quantity)
    total = len(result.pairs)
    text = (
        f"**{len(kept)} basin(s)** of {label} persist above {threshold:.3g} ({percent:g}% of the range); "
        f"{total} local minima in all on this {len(result.alphas)}x{len(result.betas)} grid."
    )
    if len(kept) == 1:
        text += " One basin: on this slice every way down leads to the same floor, whatever the small bumps."
    elif len(kept) > 1:
        second = kept[1]
        height = result.barrier_heights[second]
        if np.isfinite(height):
            text += (
                f" The next deepest (basin 2, floor {result.births[second]:.4g}) is cut off from the deepest by a barrier "
                f"of {height:.3g} above its floor (at level {result.barriers[second]:.4g}): on this slice, leaving it "
                "costs that much loss."
            )
            if result.coords(result.barrier_saddles[second : second + 1])[0].tolist() == [0.0, 0.0]:
                text += " The way between them crosses the base point itself: on this slice it is a saddle."
        else:
            text += " Basin 2 is cut off from the deepest by diverged points (no finite path joins them)."
    left_out = result.settings.get("left_out_cells", 0)
    if left_out:
        text += f" {left_out} diverged cells are left out of the count, not filled in."
    return text + " Cells touching at an edge or a corner are neighbours (gudhi's cubical convention)."


def _diagram_frame(results, labels) -> tuple[pd.DataFrame, float]:
    frames = []
    finite_deaths = np.concatenate([r.deaths[np.isfinite(r.deaths)] for r in results] + [np.zeros(0)])
    births = np.concatenate([r.births for r in results])
    top = float(max(finite_deaths.max() if finite_deaths.size else births.max(), births.max()))
    ceiling = top + 0.1 * (top - float(births.min()) or 1.0)
    for result, label in zip(results, labels):
        deaths = np.where(np.isfinite(result.deaths), result.deaths, ceiling)
        frames.append(
            pd.DataFrame(
                {
                    "birth": result.births,
                    "death": deaths,
                    "persistence": result.persistence,
                    "model": label,
                    "never merges": ~np.isfinite(result.deaths),
                }
            )
        )
    return pd.concat(frames, ignore_index=True), ceiling


def diagrams(surface_a, surface_b, quantity: str, labels: tuple[str, str], key: str = "compare_topology") -> float:
    """Both persistence diagrams and their bottleneck distance; returns the distance."""
    st.markdown("#### Topology of the two maps: persistence diagrams")
    results = [topology.persistence(s, quantity) for s in (surface_a, surface_b)]
    if not all(len(r.pairs) for r in results):
        st.info("One of the maps diverged everywhere: no diagram to compare.")
        return float("nan")
    method = "gudhi" if bottleneck.gudhi_available() else "exact"
    distance = bottleneck.bottleneck_distance(*results, method=method)
    frame, ceiling = _diagram_frame(results, labels)
    lo = float(frame["birth"].min())
    scale = alt.Scale(domain=list(labels), range=list(MODEL_COLORS))
    points = (
        alt.Chart(frame)
        .mark_point(filled=True, size=60, opacity=0.75)
        .encode(
            x=alt.X("birth:Q", title="birth: a basin's floor", scale=alt.Scale(zero=False)),
            y=alt.Y("death:Q", title="death: the barrier where it merges", scale=alt.Scale(zero=False)),
            color=alt.Color("model:N", scale=scale),
            shape=alt.Shape("never merges:N", title="never merges"),
            tooltip=[
                "model:N",
                alt.Tooltip("birth:Q", format=".4g"),
                alt.Tooltip("persistence:Q", format=".3g"),
                "never merges:N",
            ],
        )
    )
    diagonal = (
        alt.Chart(pd.DataFrame({"x": [lo, ceiling], "y": [lo, ceiling]}))
        .mark_line(color="#868e96")
        .encode(x="x:Q", y="y:Q")
    )
    roof = alt.Chart(pd.DataFrame({"y": [ceiling]})).mark_rule(color="#868e96", strokeDash=[4, 3]).encode(y="y:Q")
    chart = alt.layer(diagonal, roof, points).properties(
        title="Persistence diagrams (dashed line: basins that never merge)", width="container", height=340
    )
    left, right = st.columns([3, 2])
    left.altair_chart(chart, width="stretch")
    spread = max(_value_range(s, quantity) for s in (surface_a, surface_b))
    percent = right.slider("Count basins above, % of the value range", 0.0, 20.0, 1.0, 0.5, key=f"{key}_threshold")
    counts = [r.count(percent / 100 * spread) for r in results]
    right.dataframe(
        pd.DataFrame({"model": list(labels), "local minima": [len(r.pairs) for r in results], "basins above": counts}),
        hide_index=True,
        width="stretch",
    )
    right.metric("Bottleneck distance", f"{distance:.4g}")
    if all(len(r.pairs) == 1 for r in results):
        right.markdown(
            "Each map has a single basin: the distance is the difference of their floors, "
            f"{abs(results[0].births[0] - results[1].births[0]):.3g}."
        )
    how = "gudhi's Hera, exact" if method == "gudhi" else "exact matching (landscape_core.bottleneck)"
    right.caption(
        f"In units of {ui.quantity_label(quantity)} ({how}): the smallest d such that every basin of one map can be "
        "paired with a basin of the other, or flattened away, moving its floor and barrier by at most d. A small "
        "distance means the two maps have the same basins and barriers up to that much loss."
    )
    with st.expander("Downloads: the two diagrams"):
        for result, label in zip(results, labels):
            ui.downloads(result, name=f"diagram_{label}_{quantity}")
    return distance
