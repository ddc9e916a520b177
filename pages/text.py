"""Text embeddings page: which inputs sit in fragile regions of a text model's embedding space.

UI only: the curves, scores and ranking come from ``landscape_core.fragility`` (built on
``landscape_core.embeddings``), the 2-D map from ``fragility.embedding_map``, the weight-space
line of the embedding matrix from ``embedding_matrix.embedding_surface``. Runs on the sidebar's
workspace when it is a text model, otherwise on the built-in "text-sentiment" demo.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from dashboard_ui import contrastive_sections, links, ui
from dashboard_ui.links import Choice, Flag, Number
from landscape_core import embedding_matrix, embeddings, fragility, gradient_norm, jobs, token_inputs
from landscape_core.defaults import TEXT
from landscape_core.first_screen import is_text_problem

TEXT_DEMO = "text-sentiment"
RADIUS_CHOICES = {
    "up to 10% of the embedding norm": (0.0, 0.01, 0.025, 0.05, 0.075, 0.1),
    "up to 30% (default)": (0.0, 0.025, 0.05, 0.1, 0.2, 0.3),
    "up to 100%": (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0),
}
SCORE_RADII = (0.025, 0.05, 0.1, 0.2)
MAPS = ("pca", "umap")
CASE_DASH = {"worst": [1, 0], "average": [5, 4]}
FRAGILITY_COLORS = ["#74c0fc", "#fab005", "#c92a2a"]  # robust (blue) to fragile (red), all visible on white


# -- the workspace ---------------------------------------------------------------------------
@st.cache_resource(show_spinner="Training the text demo (a few seconds, once)...")
def _text_demo():
    try:
        from landscape_core import demos

        return demos.load(TEXT_DEMO)
    except (ImportError, ValueError):
        from landscape_core import text_demo

        return text_demo.load_workspace()


def has_embedding(problem) -> bool:
    return is_text_problem(problem)


def text_workspace():
    """``(workspace, workspace id, note)``: the sidebar's workspace if it is a text model, else the demo."""
    ws = ui.workspace()  # draws the sidebar on a first visit, opens the sidebar's workspace
    wid = ui.workspace_id()
    if has_embedding(ws.problem):
        return ws, wid, None
    note = f"The workspace {wid!r} is not a text model (no nn.Embedding layer over integer token ids)"
    with st.spinner("Loading the text demo..."):
        return _text_demo(), TEXT_DEMO, note + f"; this page shows the built-in {TEXT_DEMO!r} demo instead."


def input_texts(ws, split: str, n: int) -> list[str]:
    texts = getattr(ws, "texts", {}).get(split)
    if texts is not None and len(texts) >= n:
        return list(texts[:n])
    tokenizer = getattr(ws, "tokenizer", None)
    X = ws.problem.splits[split].head(n)[0]
    if tokenizer is not None:
        return [" ".join(tokenizer.decode(row)) for row in X]
    ids, real = token_inputs.ids(X), token_inputs.real_tokens(X, 0)[..., 0]
    return [f"input {i}: ids {row[keep].tolist()[:12]}" for i, (row, keep) in enumerate(zip(ids, real))]


# -- tables and charts -----------------------------------------------------------------------------
def ranking_rows(result, top: int, only_correct: bool = False) -> list[int]:
    """The inputs (row numbers) of the ranking table, most fragile first."""
    order = [int(i) for i in result.ranking]
    if only_correct:
        order = [i for i in order if result.labels[i] == result.predictions[i]]
    return order[:top]


def ranking_table(
    result, texts, tags, class_names, top: int, only_correct: bool = False, grad_norm=None
) -> pd.DataFrame:
    r = float(result.settings["score_radius"])
    rows = []
    for rank, row in enumerate(ranking_rows(result, top, only_correct)):
        rows.append(
            {
                "rank": rank + 1,
                "input": f"#{row}",
                "text": texts[row],
                "label": class_names[int(result.labels[row])],
                "prediction": class_names[int(result.predictions[row])],
                "fragility score": float(result.score[row]),
                "confidence": float(result.confidence[row]),
                "loss": float(result.base_loss[row]),
                f"worst loss at r={r:g}": float(result.base_loss[row] + result.score[row]),
                **({} if grad_norm is None else {"gradient norm ||dL/dE||": float(grad_norm[row])}),
                "wrong from radius": float(result.error_radius[row]),
                "tokens": int(result.lengths[row]),
                "tag": tags[row] if tags else "",
            }
        )
        if not np.isnan(result.top_eigenvalue[row]):
            rows[-1]["input-Hessian lambda_max"] = float(result.top_eigenvalue[row])
    table = pd.DataFrame(rows)
    if not tags:
        table = table.drop(columns="tag")
    return table


def curves_frame(result, rows, texts, model: str) -> pd.DataFrame:
    frame = pd.DataFrame(result.curves(rows))
    frame["input"] = [f"#{i} {texts[i][:40]}" for i in frame["row"]]
    frame["low"] = frame["loss"] - frame["stderr"]
    frame["high"] = frame["loss"] + frame["stderr"]
    frame["model"] = model
    return frame


def curves_chart(frame: pd.DataFrame, domain: tuple[float, float], title: str, relative: bool):
    x_title = "perturbation radius (fraction of the input's embedding norm)" if relative else "radius ||delta||_F"
    y = alt.Y("loss:Q", title="loss of this input", scale=alt.Scale(domain=list(domain), zero=False))
    color = alt.Color("input:N", title="input", scale=alt.Scale(scheme="tableau10"), legend=alt.Legend(labelLimit=360))
    dash = alt.StrokeDash(
        "case:N", title="case", scale=alt.Scale(domain=list(CASE_DASH), range=list(CASE_DASH.values()))
    )
    tooltip = ["input:N", "case:N", alt.Tooltip("radius:Q", format=".3f"), alt.Tooltip("loss:Q", format=".4g")]
    lines = alt.Chart(frame).mark_line(point=True).encode(x=alt.X("radius:Q", title=x_title), y=y, color=color)
    lines = lines.encode(strokeDash=dash, tooltip=tooltip + [alt.Tooltip("stderr:Q", format=".2g")])
    band = (
        alt.Chart(frame[frame["case"] == "average"])
        .mark_area(opacity=0.2)
        .encode(x="radius:Q", y=alt.Y("low:Q", scale=alt.Scale(domain=list(domain))), y2="high:Q", color=color)
    )
    return alt.layer(band, lines).properties(title=title, width="container", height=340)


def map_chart(coords, result, texts, class_names, title: str, method: str, score_domain):
    frame = pd.DataFrame(
        {
            "x": coords[:, 0],
            "y": coords[:, 1],
            "fragility score": result.score,
            "label": [class_names[int(v)] for v in result.labels],
            "correct": np.where(result.labels == result.predictions, "right", "wrong"),
            "text": texts,
        }
    )
    axis = "PC" if method == "pca" else "UMAP "
    return (
        alt.Chart(frame)
        .mark_point(filled=True, size=70, opacity=0.85)
        .encode(
            x=alt.X("x:Q", title=f"{axis}1"),
            y=alt.Y("y:Q", title=f"{axis}2"),
            color=alt.Color("fragility score:Q", scale=alt.Scale(range=FRAGILITY_COLORS, domain=list(score_domain))),
            shape=alt.Shape("label:N"),
            tooltip=["text:N", "label:N", "correct:N", alt.Tooltip("fragility score:Q", format=".3g")],
        )
        .properties(title=title, width="container", height=360)
    )


def most_fragile_row(result, only_correct: bool) -> int | None:
    """Row of the top-ranked input, among those the model classifies right when ``only_correct``."""
    for row in (int(r) for r in result.ranking):
        if not only_correct or result.labels[row] == result.predictions[row]:
            return row
    return None


def readout(res, name: str, split: str, texts, only_correct: bool) -> str:
    """The page's summary of one model: median rises, the most fragile input (as the table counts it), flips."""
    j = int(np.flatnonzero(res.radii == res.settings["score_radius"])[0])
    wrong = float(np.mean(res.labels != res.predictions))
    right = res.labels == res.predictions
    flipped = (res.error_radius > 0) & (res.error_radius <= res.settings["score_radius"])
    flips = float(flipped.sum() / max(right.sum(), 1))
    top = most_fragile_row(res, only_correct)
    which = "Most fragile input it classifies right" if only_correct else "Most fragile input"
    fragile = f'{which}: "{texts[top]}" (score {res.score[top]:.3g}).' if top is not None else f"{which}: none."
    return (
        f"**{name}**: on {res.n} {split} inputs ({wrong:.0%} misclassified), the worst perturbation of "
        f"{res.settings['score_radius']:.0%} of the embedding norm raises the loss by "
        f"**{np.median(res.worst_loss[:, j] - res.base_loss):.3g}** (median; random directions of the same size: "
        f"{np.median(res.average_loss[:, j] - res.base_loss):.2g}). {fragile} A worst-case perturbation of that "
        f"size turns {flips:.0%} of the inputs it classifies right into errors."
    )


class WithTexts:
    """A ``Fragility`` whose CSV download carries the texts (for ``ui.downloads``)."""

    def __init__(self, result, texts):
        self.result, self.texts, self.settings = result, texts, result.settings

    def to_csv(self) -> str:
        return self.result.to_csv(texts=self.texts)

    def to_bytes(self) -> bytes:
        return self.result.to_bytes()

    def settings_json(self) -> str:
        return self.result.settings_json()


def snippet(wid: str, which: str, kwargs: dict) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return "\n".join(
        [
            "from landscape_core import demos, fragility",
            f"ws = demos.load({wid!r})" if not wid.startswith("spec:") else f"# workspace: {wid}",
            f"problem = ws.{'problem' if which == 'A' else 'compare'}",
            f"result = fragility.fragility(problem, {args})",
            "print(result.to_csv(texts=ws.texts[result.settings['split']])[:500])",
        ]
    )


def link(ws, splits: list[str], default_split: str) -> dict:
    """The settings a link carries, with what each widget accepts (``ui.keep_settings(link=)``).

    How many inputs depends on the split, and how many rows on the inputs: both ranges are those of
    the split and number of inputs the link sets (or the defaults)."""
    split = links.peek("text_split", Choice(splits), default_split)
    n_split = ws.problem.splits[split].n
    n = links.peek("text_n", Number(5, n_split), min(n_split, TEXT.max_inputs))
    return {
        "text_split": Choice(splits),
        "text_n": Number(5, n_split),
        "text_radii": Choice(list(RADIUS_CHOICES)),
        "text_score_r": Choice(SCORE_RADII),
        "text_samples": Number(2, 32),
        "text_steps": Number(1, 50),
        "text_seed": Number(0, 10_000),
        "text_map": Choice(MAPS),
        "text_score": Choice(list(fragility.SCORES)),
        "text_hessian": Flag(),
        "text_top": Number(5, max(n, 5)),  # the rows slider is drawn only above 5 inputs
        "text_only_correct": Flag(),
    }


# -- page ------------------------------------------------------------------------------------------
st.title("Text embeddings: where is the model fragile?")
st.caption(
    "Each input's token embeddings E are perturbed, E + delta, with the weights fixed. **Average case**: random "
    "directions scaled per token to that token's embedding norm (the text analogue of filter normalization), "
    "mean +/- standard error over samples. **Worst case**: projected gradient ascent in the ball "
    "||delta||_F <= r ||E||_F (FreeLB-style). Padding is never perturbed. The **fragility score** is the "
    "worst-case rise of the loss at the score radius, max L - L, or relative to the loss, 100 (max L - L) / (1 + L) "
    "(Keskar et al.'s epsilon-sharpness, here in embedding space)."
)

ws, wid, note = text_workspace()
if note:
    st.info(note)
problems = {"A": ws.problem}
if ws.compare is not None and has_embedding(ws.compare):
    problems["B"] = ws.compare
names = {"A": ws.labels[0], "B": ws.labels[1]}
splits = list(ws.problem.splits)
default_split = TEXT.split if TEXT.split in splits else splits[0]
ui.keep_settings(
    "text",
    per_workspace={"text_split": default_split, "text_n": ui.WIDGET_DEFAULT, "text_chosen": ui.WIDGET_DEFAULT},
    workspace=wid,
    link=link(ws, splits, default_split),
)
links.show_notices()  # the page names its workspace (the text demo stands in), so it shows them itself

with st.form("text_form"):
    c1, c2, c3, c4 = st.columns(4)
    split = c1.selectbox(
        "Inputs from", splits, index=splits.index(TEXT.split) if TEXT.split in splits else 0, key="text_split"
    )
    n_split = ws.problem.splits[split].n
    max_inputs = c2.number_input("Inputs (first n)", 5, n_split, min(n_split, TEXT.max_inputs), step=5, key="text_n")
    radius_label = c3.selectbox(
        "Radii", list(RADIUS_CHOICES), index=list(RADIUS_CHOICES.values()).index(TEXT.radii), key="text_radii"
    )
    score_radius = c4.selectbox(
        "Score radius", SCORE_RADII, index=SCORE_RADII.index(TEXT.score_radius), key="text_score_r"
    )
    c5, c6, c7, c8 = st.columns(4)
    samples = c5.slider("Random directions per input", 2, 32, TEXT.samples, key="text_samples")
    steps = c6.slider("Ascent steps per radius", 1, 50, TEXT.steps, key="text_steps")
    seed = c7.number_input("Seed", 0, 10_000, TEXT.seed, key="text_seed")
    method = c8.radio("Map", MAPS, index=MAPS.index(TEXT.map), format_func=str.upper, horizontal=True, key="text_map")
    c9, c10 = st.columns([1, 3])
    score_kind = c9.radio(
        "Fragility score",
        list(fragility.SCORES),
        index=list(fragility.SCORES).index(TEXT.score),
        format_func={"rise": "loss rise", "keskar": "relative (Keskar)"}.get,
        horizontal=True,
        key="text_score",
        help="Loss rise: max L - L at the score radius; misclassified inputs, whose loss gradient is large, "
        "dominate it. Relative: 100 (max L - L) / (1 + L), which also ranks fragile inputs the model gets right.",
    )
    hessian = c10.checkbox(
        "Also the top eigenvalue of each input's embedding Hessian", TEXT.hessian, key="text_hessian"
    )
    st.form_submit_button(
        "Run", type="primary", icon=":material/play_arrow:", on_click=ui.save_settings, args=("text",)
    )

kwargs = {
    "split": split,
    "radii": RADIUS_CHOICES[radius_label],
    "score_radius": float(score_radius),
    "score": score_kind,
    "samples": int(samples),
    "steps": int(steps),
    "seed": int(seed),
    "hessian": bool(hessian),
    "max_inputs": int(max_inputs),
}
settings = {"workspace": wid, "models": {k: p.model_hash() for k, p in problems.items()}, **kwargs, "map": method}


def compute(progress, cancel) -> dict:
    out = {}
    for i, (which, problem) in enumerate(problems.items()):
        report = lambda d, t, i=i: progress(i * t + d, len(problems) * t)  # noqa: E731
        result = fragility.fragility(problem, progress=report, cancel=cancel, **kwargs)
        X = problem.splits[split].head(int(max_inputs))[0]
        vectors = embeddings.sentence_embeddings(problem, X)
        out[which] = {"result": result, "map": fragility.embedding_map(vectors, method, seed=int(seed))}
        y = problem.splits[split].head(int(max_inputs))[1]
        out[which]["grad_norm"] = gradient_norm.embedding_gradient_norms(problem, X, y, cancel=cancel)
    return out


results = ui.run_job(jobs.job_key("text-fragility", settings), compute, "Embedding perturbations")
if results is None:
    st.stop()

n = int(max_inputs)
texts = input_texts(ws, split, n)
tags = list(getattr(ws, "tags", {}).get(split, [])[:n])
class_names = ["negative", "positive"] if getattr(ws, "tokenizer", None) is not None else ["class 0", "class 1"]
first = results["A"]["result"]
if int(first.labels.max()) > 1 or int(first.predictions.max()) > 1:
    class_names = [f"class {c}" for c in range(int(max(first.labels.max(), first.predictions.max())) + 1)]

# readout (written once the ranking's toggle below is known: it names what the table shows)
readout_box = st.container()

# ranking tables
st.subheader("Most fragile inputs")
c_rows, c_only = st.columns([3, 2], vertical_alignment="bottom")
if n > 5:
    top_k = c_rows.slider("Rows", 5, n, min(15, n), key="text_top", on_change=ui.save_settings, args=("text",))
else:  # the fewest inputs the form allows: every row shown (a slider from 5 to 5 is refused by Streamlit)
    top_k = n
only_correct = c_only.toggle(
    "Only inputs the model gets right",
    value=True,
    key="text_only_correct",
    on_change=ui.save_settings,
    args=("text",),
    help="A misclassified input already sits where the loss is high and steep, so it tops any loss-rise "
    "ranking; among the inputs the model gets right, the top rows are the ones closest to flipping.",
)
with readout_box, ui.section("The readout"):
    for which, item in results.items():
        st.markdown(readout(item["result"], names[which], split, texts, only_correct))
st.caption("Select rows (the boxes at their left) to draw those inputs' loss curves below.")
columns = st.columns(len(results))
chosen = []
for col, (which, item) in zip(columns, results.items()):
    col.markdown(f"**{names[which]}**")
    shown_rows = ranking_rows(item["result"], top_k, only_correct)
    event = col.dataframe(
        ranking_table(item["result"], texts, tags, class_names, top_k, only_correct, item.get("grad_norm")),
        hide_index=True,
        width="stretch",
        column_config={
            "text": st.column_config.TextColumn(width="medium"),
            "fragility score": st.column_config.NumberColumn(format="%.3g"),
            "confidence": st.column_config.NumberColumn(format="%.2f"),
        },
        on_select="rerun",
        selection_mode="multi-row",
        key=f"rank:{which}:{top_k}:{only_correct}",  # new rows, new selection
    )
    picked = [shown_rows[p] for p in event.selection.rows if 0 <= p < len(shown_rows)]
    chosen += [i for i in picked if i not in chosen]

# loss vs radius
st.subheader("Loss vs perturbation radius")
if not chosen:
    chosen = list(dict.fromkeys([int(r) for r in first.ranking[:3]] + [int(r) for r in first.ranking[-1:]]))
    st.caption(f"No rows selected: {names['A']}'s three most fragile inputs and its least fragile one.")
else:
    st.caption("The selected rows: " + ", ".join(f"#{i}" for i in chosen) + ".")
if chosen:
    frames = {w: curves_frame(item["result"], chosen, texts, w) for w, item in results.items()}
    low = min(float(f["low"].min()) for f in frames.values())
    high = max(float(f["high"].max()) for f in frames.values())
    pad = 0.03 * (high - low or 1.0)
    charts = {}
    for which, frame in frames.items():  # one above the other, on one y scale
        charts[which] = curves_chart(
            frame, (low - pad, high + pad), names[which], bool(results[which]["result"].settings["relative"])
        )
        st.altair_chart(charts[which], width="stretch")
    st.caption("Solid: worst case (gradient ascent). Dashed with band: average over random directions +/- 1 s.e.")
else:
    charts = {}
    st.caption("Pick inputs to draw their curves.")

# map
st.subheader("Sentence embeddings, coloured by fragility")
scores = np.concatenate([item["result"].score for item in results.values()])
score_domain = (float(scores.min()), float(scores.max()))
columns = st.columns(len(results))
for col, (which, item) in zip(columns, results.items()):
    emap = item["map"]
    title = f"{names[which]}: mean token embedding, {method.upper()}"
    if method == "pca":
        title += f" ({emap.explained.sum():.0%} of the variance)"
    col.altair_chart(
        map_chart(emap.coords, item["result"], texts, class_names, title, method, score_domain), width="stretch"
    )

if len(results) == 2:
    st.subheader("A vs B, input by input")
    both = pd.DataFrame(
        {
            "score A": results["A"]["result"].score,
            "score B": results["B"]["result"].score,
            "text": texts,
            "tag": tags or [""] * n,
        }
    )
    scatter = (
        alt.Chart(both)
        .mark_circle(size=60, opacity=0.7)
        .encode(
            x=alt.X("score A:Q", title=f"fragility score, {names['A']}"),
            y=alt.Y("score B:Q", title=f"fragility score, {names['B']}"),
            color=alt.Color("tag:N", title="tag"),
            tooltip=["text:N", "tag:N", alt.Tooltip("score A:Q", format=".3g"), alt.Tooltip("score B:Q", format=".3g")],
        )
        .properties(width="container", height=320)
    )
    st.altair_chart(scatter, width="stretch")
    corr = float(np.corrcoef(both["score A"], both["score B"])[0, 1])
    st.markdown(f"The two models agree on which inputs are fragile with correlation **{corr:.2f}** (Pearson).")

# the embedding matrix in weight space
st.subheader("The embedding matrix in weight space")
st.caption(
    "The loss when only the embedding matrix moves, theta0 + alpha d, with d a random direction whose every row "
    "(one token's vector) has the norm of that row of theta0 (filter normalization restricted by a parameter mask)."
)
line_for_download = {}
trainable = dict(problems)
try:
    for p in trainable.values():
        p.space.mask(include=embeddings.EmbeddingAccess(p).weight_name)
except ValueError as exc:
    st.info(f"The embedding matrix is frozen, so it has no weight-space landscape here ({exc}).")
    trainable = {}
if trainable:
    line_settings = {"models": {k: p.model_hash() for k, p in trainable.items()}, "seed": int(seed)}

    def line_job(progress, cancel):
        return {
            w: embedding_matrix.embedding_surface(
                p, span=TEXT.line_span, steps=TEXT.line_steps, seed=int(seed), cancel=cancel
            )
            for w, p in trainable.items()
        }

    lines = ui.run_job(jobs.job_key("text-embedding-line", line_settings), line_job, "Embedding-matrix line")
    if lines is not None:
        rows = []
        for which, surf in lines.items():
            for q, values in surf.values.items():
                if q.endswith("loss"):
                    rows += [{"alpha": a, "loss": v, "series": f"{which} {q}"} for a, v in zip(surf.alphas, values)]
        line = ui.line_chart(pd.DataFrame(rows), "alpha", "loss", color="series", x_title="alpha (filter-normalized)")
        st.altair_chart(line, width="stretch")
        with ui.section("The embedding-line readout"):
            for which, surf in lines.items():
                train = surf.values["train_loss"]
                rise = 0.5 * (train[0] + train[-1]) - surf.center_value("train_loss")
                st.markdown(
                    f"**{names[which]}**: moving only the embedding matrix by one filter norm (alpha = +/-1) raises "
                    f"the train loss by **{rise:.3g}** on average over the two ends "
                    f"(from {surf.center_value('train_loss'):.3g})."
                )
        line_for_download = lines

contrastive_sections.section(int(seed))

st.subheader("Downloads")
for which, item in results.items():
    st.markdown(f"**{names[which]}**: ranking and curves (CSV, one row per input, with the text), NPZ, settings")
    ui.downloads(
        WithTexts(item["result"], texts),
        chart=charts.get(which),
        name=f"text_fragility_{which}",
        snippet=lambda which=which: snippet(wid, which, kwargs),
    )
for which, surf in line_for_download.items():
    st.markdown(f"**{names[which]}**: the embedding-matrix line (CSV, NPZ, settings)")
    ui.downloads(surf, chart=None, name=f"text_embedding_line_{which}")
with st.expander("How this was computed"):
    st.json(first.settings, expanded=False)
