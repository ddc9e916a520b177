"""Charts of the Interpolation page: the loss and accuracy along alpha, and the BatchNorm options.

- ``loss_chart(path, splits, log, title)``: loss per split, each split's chord (dashed) and barrier (a bar).
- ``accuracy_chart(path, splits)``: accuracy per split (``None`` when the path has none).
- ``bn_chart(paths, split)``: one split's loss under each BatchNorm option (``{mode: Path}``).
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from dashboard_ui import theme
from dashboard_ui.charts import BASE_COLOR, SPLIT_COLORS

BN_COLORS = {"recompute": "#2b8a3e", "interpolate": "#7048e8", "keep": "#c92a2a"}


def path_frame(path, metric: str, splits: list[str]) -> pd.DataFrame:
    rows = []
    for split in splits:
        q = f"{split}_{metric}"
        if q in path.values:
            rows += [{"alpha": a, "value": v, "split": split} for a, v in zip(path.alphas, path.values[q])]
    return pd.DataFrame(rows)


def split_color(splits: list[str]) -> alt.Color:
    domain = list(splits)
    return alt.Color(
        "split:N",
        title="data split",
        scale=alt.Scale(domain=domain, range=[SPLIT_COLORS.get(s, theme.muted()) for s in domain]),
    )


def endpoint_rules() -> alt.Chart:
    marks = pd.DataFrame({"alpha": [0.0, 1.0], "end": ["A (alpha = 0)", "B (alpha = 1)"]})
    rules = alt.Chart(marks).mark_rule(color=BASE_COLOR, strokeDash=[4, 3]).encode(x="alpha:Q", tooltip=["end:N"])
    text = (
        alt.Chart(marks.assign(label=["A", "B"]))
        .mark_text(color=BASE_COLOR, dy=-6, fontWeight="bold", baseline="bottom")
        .encode(x="alpha:Q", y=alt.value(0), text="label:N")
    )
    return rules + text


def loss_chart(path, splits: list[str], log: bool, title: str) -> alt.LayerChart:
    """Loss along alpha per split, each split's straight chord (dashed) and its barrier (a black bar)."""
    frame = path_frame(path, "loss", splits)
    color = split_color(splits)
    y_scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    x = alt.X("alpha:Q", title="alpha (0 = A, 1 = B; theta = (1 - alpha) theta_A + alpha theta_B)")
    y = alt.Y("value:Q", title="loss (mean over the split)", scale=y_scale)
    layers = [
        alt.Chart(frame)
        .mark_line(point=len(path.alphas) <= 60)
        .encode(
            x=x,
            y=y,
            color=color,
            tooltip=[alt.Tooltip("alpha:Q", format=".3f"), alt.Tooltip("value:Q", title="loss", format=".4g"), "split"],
        )
    ]
    chords, bars = [], []
    for split in splits:
        info = path.barrier.get(f"{split}_loss")
        if not info:
            continue
        chords += [
            {"alpha": 0.0, "value": info["loss_a"], "split": split},
            {"alpha": 1.0, "value": info["loss_b"], "split": split},
        ]
        if info["height"] is not None:
            a = info["alpha"]
            chord = (1 - a) * info["loss_a"] + a * info["loss_b"]
            bars.append(
                {
                    "alpha": a,
                    "value": chord,
                    "top": chord + info["height"],
                    "split": split,
                    "label": f"{split} barrier {info['height']:.3g}",
                }
            )
    if chords:
        layers.append(
            alt.Chart(pd.DataFrame(chords))
            .mark_line(strokeDash=[6, 4], strokeWidth=1.5)
            .encode(x="alpha:Q", y=alt.Y("value:Q", scale=y_scale), color=color, detail="split:N")
        )
    if bars:
        bar_frame = pd.DataFrame(bars)
        layers.append(
            alt.Chart(bar_frame)
            .mark_rule(color=theme.ink(), strokeWidth=2.5)
            .encode(
                x="alpha:Q",
                y=alt.Y("value:Q", scale=y_scale),
                y2="top:Q",
                tooltip=[alt.Tooltip("label:N", title="barrier"), alt.Tooltip("alpha:Q", format=".3f")],
            )
        )
        for i, row in enumerate(bars):  # alternate sides so two splits' labels do not collide
            layers.append(
                alt.Chart(pd.DataFrame([row]))
                .mark_text(
                    align="left" if i % 2 == 0 else "right",
                    dx=6 if i % 2 == 0 else -6,
                    dy=-6,
                    color=theme.ink(),
                    fontWeight="bold",
                )
                .encode(x="alpha:Q", y=alt.Y("top:Q", scale=y_scale), text="label:N")
            )
    layers.append(endpoint_rules())
    return alt.layer(*layers).properties(title=title, width="container", height=340)


def accuracy_chart(path, splits: list[str]) -> alt.LayerChart | None:
    frame = path_frame(path, "accuracy", splits)
    if frame.empty:
        return None
    line = (
        alt.Chart(frame)
        .mark_line(point=len(path.alphas) <= 60)
        .encode(
            x=alt.X("alpha:Q", title="alpha (0 = A, 1 = B)"),
            y=alt.Y(
                "value:Q",
                title="accuracy (% of samples correct)",
                axis=alt.Axis(format="%"),
                scale=alt.Scale(zero=False),
            ),
            color=split_color(splits),
            tooltip=[alt.Tooltip("alpha:Q", format=".3f"), alt.Tooltip("value:Q", format=".1%"), "split"],
        )
    )
    return alt.layer(line, endpoint_rules()).properties(title="Accuracy along the path", width="container", height=300)


def bn_chart(paths: dict, split: str) -> alt.LayerChart:
    q = f"{split}_loss"
    rows = [
        {"alpha": a, "value": v, "BatchNorm statistics": mode}
        for mode, path in paths.items()
        for a, v in zip(path.alphas, path.values[q])
    ]
    modes = list(paths)
    line = (
        alt.Chart(pd.DataFrame(rows))
        .mark_line(point=True)
        .encode(
            x=alt.X("alpha:Q", title="alpha (0 = A, 1 = B)"),
            y=alt.Y("value:Q", title=f"{split} loss (mean over the split)", scale=alt.Scale(zero=False)),
            color=alt.Color(
                "BatchNorm statistics:N",
                scale=alt.Scale(domain=modes, range=[BN_COLORS[m] for m in modes]),
            ),
            tooltip=[
                alt.Tooltip("alpha:Q", format=".3f"),
                alt.Tooltip("value:Q", format=".4g"),
                "BatchNorm statistics",
            ],
        )
    )
    return alt.layer(line, endpoint_rules()).properties(
        title=f"{split} loss along the path under each BatchNorm option", width="container", height=320
    )
