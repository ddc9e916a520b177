"""Sections of the Interpolation page: the two ends, the form, the path with its barrier, the
barrier table and the BatchNorm comparison.

UI only: the path and its barrier come from ``landscape_core.interpolation.linear``; charts
from ``dashboard_ui/interpolation_charts.py``.

- ``endpoint_choices(ws)`` -> ``{label: end}``, ``default_pair(labels, ws)`` -> two positions.
- ``link(names)`` -> the specs of the settings a shared link carries.
- ``settings_form(names, first, second, bn_model)`` -> dict of the form's choices.
- ``cached(problem, end_a, end_b, form, splits, modes)`` -> ``{mode: Path}`` if the cache holds them all, else ``None``.
- ``preview(problem, end_a, end_b, form, splits)`` -> ``(Path or None, finished)``: the labelled preview job.
- ``compute(problem, end_a, end_b, form, splits, modes, known)`` -> ``{mode: Path}`` or ``None`` while it runs.
- ``preview_section(preview, problem, form, splits, modes)``: the preview, labelled, until the exact path is done.
- ``path_section(...)``, ``barrier_table_section(...)``, ``batchnorm_section(...)``, ``provenance(...)``.
"""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import streamlit as st

from dashboard_ui import ui
from dashboard_ui.interpolation_charts import accuracy_chart, bn_chart, loss_chart
from dashboard_ui.links import Choice, Flag, Number
from landscape_core import defaults, interpolation, jobs, path_preview
from landscape_core.defaults import path_ends, same_space
from landscape_core.directions import digest
from landscape_core.estimate import describe_seconds
from landscape_core.evaluate import Cancelled
from landscape_core.snippet import problem_code

SPANS = {
    "0 to 1 (A to B)": (0.0, 1.0),
    "-0.25 to 1.25 (a little beyond each end)": (-0.25, 1.25),
    "-0.5 to 1.5 (well beyond each end)": (-0.5, 1.5),
}
BN_MODES = ("recompute", "interpolate", "keep")
BN_LABELS = {
    "recompute": "recompute (fresh statistics at every alpha)",
    "interpolate": "interpolate A's and B's statistics",
    "keep": "keep A's statistics",
}
BN_SHORT = {
    "recompute": "recomputed statistics",
    "interpolate": "interpolated statistics",
    "keep": "A's statistics kept",
}
BN_NOTE = (
    "BatchNorm layers normalize with the running mean and variance stored with each model. Halfway "
    "between A and B the activations have other statistics than either endpoint, so *keeping* A's "
    "statistics (or *interpolating* A's and B's) mis-normalizes every layer and inflates the barrier: "
    "the bump is an artefact of stale statistics, not of the landscape. *Recompute* resets the "
    "statistics at every alpha with one pass over the train split (no augmentation, no randomness), "
    "which is what a model at that point would really use (Frankle et al. 2020; Jordan et al. 2023)."
)


# -- endpoints --------------------------------------------------------------------------------
def _checkpoint_choices(checkpoints) -> dict[str, dict]:
    return {
        f"checkpoint: {ckpt.name}": {
            "theta": ckpt.theta,
            "buffers": ckpt.buffers,
            "code": f"ws.checkpoint({ckpt.name!r}).theta, ws.checkpoint({ckpt.name!r}).buffers",
        }
        for ckpt in checkpoints
    }


def endpoint_choices(ws) -> dict[str, dict]:
    """Every point that can be an end of the path: ``{label: {theta, buffers, code}}``."""
    a_name, b_name = ws.labels
    choices = {
        f"{a_name} (final model A)": {
            "theta": ws.problem.theta0,
            "buffers": ws.problem.buffers,
            "code": "ws.problem.theta0, ws.problem.buffers",
        }
    }
    choices.update(_checkpoint_choices(ws.checkpoints))
    if ws.compare is not None and same_space(ws.problem, ws.compare):
        choices[f"{b_name} (final model B)"] = {
            "theta": ws.compare.theta0,
            "buffers": ws.compare.buffers,
            "code": "ws.compare.theta0, ws.compare.buffers",
        }
        choices.update(_checkpoint_choices(ws.compare_checkpoints))
    return choices


def default_pair(labels: list[str], ws) -> tuple[int, int]:
    """Positions in ``labels`` of the default ends, ``defaults.path_ends`` (as ``landscape interpolate``)."""

    def position(end: str) -> int:
        if end in ("A", "B"):
            marker = f"(final model {end})"
            return next((i for i, name in enumerate(labels) if name.endswith(marker)), 0)
        wanted = f"checkpoint: {end.split(':', 1)[1]}"
        return labels.index(wanted) if wanted in labels else 0

    start, end = path_ends(ws)
    return position(start), position(end)


# -- words ------------------------------------------------------------------------------------
def verdict(height: float, loss_a: float, loss_b: float) -> str:
    """Words for a barrier: judged against the endpoint losses, with an absolute floor for tiny losses."""
    scale = 0.5 * (abs(loss_a) + abs(loss_b))
    if height <= max(0.05 * scale, 0.005):
        return "essentially no barrier: the two models are **linearly mode connected** on this data"
    if height <= max(0.5 * scale, 0.05):
        return "a **small barrier**: the straight line stays low, with a mild bump"
    return (
        "a **clear barrier**: the straight line climbs out of the low-loss region, so the two models sit in "
        "different basins as seen along this line (permuted hidden units are a common cause)"
    )


def readout(path, splits: list[str], name_a: str, name_b: str) -> list[str]:
    lines = []
    for split in splits:
        info = path.barrier.get(f"{split}_loss")
        if not info:
            continue
        if info["height"] is None:
            lines.append(
                f"**{split}**: the loss is not finite somewhere on the path (diverged), so no barrier is given."
            )
            continue
        peak = info["height"] + (1 - info["alpha"]) * info["loss_a"] + info["alpha"] * info["loss_b"]
        text = (
            f"**{split}**: loss {info['loss_a']:.4g} at A and {info['loss_b']:.4g} at B; along the straight line it "
            f"rises to {peak:.4g} at alpha = {info['alpha']:.2f}, **{info['height']:.4g} above the chord** "
            f"between the endpoint losses: {verdict(info['height'], info['loss_a'], info['loss_b'])}."
        )
        acc = path.values.get(f"{split}_accuracy")
        if acc is not None and np.isfinite(acc).any():
            inside = (path.alphas >= 0) & (path.alphas <= 1)
            k = int(np.nanargmin(np.where(inside, acc, np.nan)))
            ends = [acc[i] for i in (np.flatnonzero(path.alphas == 0.0), np.flatnonzero(path.alphas == 1.0)) if len(i)]
            ends = [float(e[0]) for e in ends]
            drop = f" ({100 * (min(ends) - acc[k]):.1f} points below the weaker end)" if ends else ""
            text += f" Accuracy is lowest at alpha = {path.alphas[k]:.2f}: {acc[k]:.1%}{drop}."
        error = path.barrier.get(f"{split}_error")
        if error and error["height"] is not None:
            text += (
                f" Error barrier (Frankle et al. 2020, the highest error on the path minus the mean end error): "
                f"**{100 * error['height']:.1f} points** at alpha = {error['alpha']:.2f}."
            )
        lines.append(text)
    if not lines:
        lines.append("The span does not contain both endpoints (alpha = 0 and 1), so no barrier is defined.")
    return lines


def bn_readout(paths: dict, split: str) -> str:
    """How far each BatchNorm option moves the barrier and the ends from the recomputed path."""
    q = f"{split}_loss"
    if "recompute" not in paths:
        return ""
    ref = paths["recompute"].barrier.get(q) or {}
    if ref.get("height") is None:
        return "The recomputed path is not finite everywhere, so the options cannot be compared."
    parts = [f"With recomputed statistics the {split} barrier is **{ref['height']:.4g}**."]
    for mode in ("interpolate", "keep"):
        if mode not in paths:
            continue
        info = paths[mode].barrier.get(q) or {}
        if info.get("height") is None:
            parts.append(f"With {BN_SHORT[mode]} the path diverges somewhere (no finite barrier).")
            continue
        change = (info["height"] - ref["height"]) / max(abs(ref["height"]), 1e-12)
        text = f"With {BN_SHORT[mode]} it is **{info['height']:.4g}** ({change:+.0%})"
        stored = paths[mode].endpoint_values.get(q)
        if (
            stored is not None
            and np.isfinite(stored[1])
            and abs(info["loss_b"] - stored[1]) > 0.05 * abs(stored[1]) + 1e-3
        ):
            text += (
                f", and B itself scores {info['loss_b']:.4g} instead of its own {stored[1]:.4g}: the chord is drawn "
                "to a wrong end, so even the barrier's baseline is off"
            )
        parts.append(text + ".")
    parts.append("Only the recomputed path shows the landscape itself rather than stale statistics.")
    return " ".join(parts)


def barrier_table(path, splits: list[str]) -> pd.DataFrame:
    rows = []
    for split in splits:
        info = path.barrier.get(f"{split}_loss")
        if not info:
            continue
        error = path.barrier.get(f"{split}_error") or {}
        rows.append(
            {
                "split": split,
                "loss at A": info["loss_a"],
                "loss at B": info["loss_b"],
                "loss barrier (Entezari et al. 2022)": info["height"],
                "at alpha": info["alpha"],
                "error barrier (Frankle et al. 2020)": error.get("height"),
                "A's stored statistics": path.endpoint_values.get(f"{split}_loss", [np.nan, np.nan])[0],
                "B's stored statistics": path.endpoint_values.get(f"{split}_loss", [np.nan, np.nan])[1],
            }
        )
    return pd.DataFrame(rows)


def snippet(source: dict, end_a: dict, end_b: dict, steps: int, span, bn: str, splits) -> str:
    lines = ["from landscape_core import interpolation", *problem_code(source)]
    lines += [
        f"theta_a, buffers_a = {end_a['code']}",
        f"theta_b, buffers_b = {end_b['code']}",
        f"path = interpolation.linear(problem, theta_a, theta_b, steps={steps}, span={tuple(span)}, bn={bn!r},",
        f"                            buffers_a=buffers_a, buffers_b=buffers_b, splits={list(splits)})",
        "print(path.barrier)",
    ]
    return "\n".join(lines) + "\n"


def link(names: list[str]) -> dict:
    """The form's settings a link carries, with what each widget accepts (``ui.keep_settings(link=)``)."""
    return {
        "interp_a": Choice(names),
        "interp_b": Choice(names),
        "interp_steps": Number(5, 101),
        "interp_span": Choice(list(SPANS)),
        "interp_bn": Choice(BN_MODES),
        "interp_bn_all": Flag(),
        "interp_log": Flag(),
    }


# -- the form ----------------------------------------------------------------------------------
def settings_form(names: list[str], first: int, second: int, bn_model: bool) -> dict:
    """The settings form (keys ``interp_*``): ``{name_a, name_b, steps, span, bn, compare_bn, log_y}``."""
    with st.form("interp_form"):
        left, right = st.columns(2)
        name_a = left.selectbox("Start (alpha = 0)", names, index=first, key="interp_a")
        name_b = right.selectbox("End (alpha = 1)", names, index=second, key="interp_b")
        c1, c2, c3 = st.columns([2, 2, 3])
        steps = c1.slider("Points along the path", 5, 101, defaults.INTERPOLATION.steps, step=2, key="interp_steps")
        span_label = c2.selectbox(
            "alpha range", list(SPANS), index=list(SPANS.values()).index(defaults.INTERPOLATION.span), key="interp_span"
        )
        if bn_model:
            bn = c3.radio(
                "BatchNorm statistics along the path",
                BN_MODES,
                index=BN_MODES.index(defaults.INTERPOLATION.bn),
                format_func=lambda m: BN_LABELS[m],
                key="interp_bn",
                help=BN_NOTE,
            )
            compare_bn = c3.checkbox(
                "Also draw the other two BatchNorm options",
                value=defaults.INTERPOLATION.all_bn_modes,
                key="interp_bn_all",
            )
        else:
            bn, compare_bn = defaults.INTERPOLATION.bn, False
            c3.caption("This model has no BatchNorm layers, so there are no running statistics to set along the path.")
        log_y = st.checkbox("Logarithmic loss axis", value=False, key="interp_log")
        st.form_submit_button(
            "Run", type="primary", icon=":material/play_arrow:", on_click=ui.save_settings, args=("interp",)
        )
    return {
        "name_a": name_a,
        "name_b": name_b,
        "steps": steps,
        "span": SPANS[span_label],
        "bn": bn,
        "compare_bn": compare_bn,
        "log_y": log_y,
    }


# -- computing --------------------------------------------------------------------------------
def job_settings(end_a: dict, end_b: dict, form: dict, splits: list[str], modes: list[str]) -> dict:
    """What the path job depends on (its key): source, both ends' digests, steps, span, modes, splits."""
    return {
        "source": ui.source("A"),
        "a": digest(end_a["theta"]),
        "b": digest(end_b["theta"]),
        "names": [form["name_a"], form["name_b"]],
        "steps": form["steps"],
        "span": form["span"],
        "modes": modes,
        "splits": splits,
    }


def _path_args(end_a: dict, end_b: dict, form: dict, splits: list[str]) -> dict:
    return {
        "theta_a": end_a["theta"],
        "theta_b": end_b["theta"],
        "steps": form["steps"],
        "span": form["span"],
        "buffers_a": end_a["buffers"],
        "buffers_b": end_b["buffers"],
        "splits": splits,
    }


def cached(problem, end_a: dict, end_b: dict, form: dict, splits: list[str], modes: list[str]) -> dict | None:
    """``{mode: Path}`` when the cache holds the path of every mode, else ``None``; nothing is
    evaluated (each look-up is cancelled before its first evaluation)."""
    stop = threading.Event()
    stop.set()
    args = _path_args(end_a, end_b, form, splits)
    try:
        return {mode: interpolation.linear(problem, bn=mode, cancel=stop, **args) for mode in modes}
    except (Cancelled, ValueError):  # not cached, or not a valid path: the job says why, readably
        return None


def preview(problem, end_a: dict, end_b: dict, form: dict, splits: list[str]):
    """The labelled preview of the chosen BatchNorm mode's path (``path_preview.preview_path``) as a
    job: ``(preview or None, finished)``; ``finished`` also when it failed (the exact path then follows)."""
    cost = ui.estimate(problem, splits)
    key = jobs.job_key("interpolation-preview", job_settings(end_a, end_b, form, splits, [form["bn"]]))

    def run(progress, cancel):
        return path_preview.preview_path(
            problem, bn=form["bn"], cost=cost, cancel=cancel, **_path_args(end_a, end_b, form, splits)
        )

    result = ui.run_job(key, run, "preview on a data subset")
    job = jobs.registry().get(key)
    return result, result is not None or (job is not None and job.finished)


def compute(
    problem, end_a: dict, end_b: dict, form: dict, splits: list[str], modes: list[str], known=None
) -> dict | None:
    """The path under each BatchNorm mode in ``modes`` as one job: ``{mode: Path}``, ``None`` while it runs.

    Computed coarse to fine (``path_preview.refine_path``, equal to ``interpolation.linear``); ``known``
    (a finished preview of the chosen mode) gives its points when it was computed on all the data."""
    settings = job_settings(end_a, end_b, form, splits, modes)
    args = _path_args(end_a, end_b, form, splits)

    def run(progress, cancel) -> dict:
        reuse = known if known is not None and path_preview.same_data(known, problem) else None
        paths = {}
        for i, mode in enumerate(modes):
            paths[mode] = path_preview.refine_path(
                problem,
                bn=mode,
                known=reuse if mode == form["bn"] else None,
                cancel=cancel,
                progress=lambda done, total, i=i: progress(i * total + done, len(modes) * total),
                **args,
            )
        return paths

    return ui.run_job(jobs.job_key("interpolation", settings), run, "Interpolation")


# -- sections ---------------------------------------------------------------------------------
def path_section(path, splits: list[str], name_a: str, name_b: str, log_y: bool):
    """The loss along the path with its barrier, the readout and the accuracy; returns the loss chart."""
    st.subheader(f"{ui.plain(name_a)}  to  {ui.plain(name_b)}")
    chart = loss_chart(
        path, splits, log_y, "Loss along the path; dashed: straight chord between the ends; bar: barrier"
    )
    st.altair_chart(chart, width="stretch")
    with ui.section("The barrier readout"):
        for line in readout(path, splits, name_a, name_b):
            st.markdown(line)
    acc = accuracy_chart(path, splits)
    if acc is not None:
        st.altair_chart(acc, width="stretch")
    return chart


def preview_text(path, problem, splits: list[str], seconds_left: float | None) -> list[str]:
    """The preview's label (what it is computed on, its noise, where its barrier comes from) and its barrier per split."""
    s = path.settings
    used, noise = s["samples"], s["noise"]
    lines = [
        f"Preview: {len(path.alphas)} points of the path on "
        + ", ".join(f"{used[sp]:,} of {problem.splits[sp].n:,} {sp} samples" for sp in used)
        + " (standard error of the loss about "
        + ", ".join(f"{noise[f'{sp}_loss']:.2g}" for sp in used)
        + ")"
        + (f"; BatchNorm statistics {s['bn_statistics']}" if s.get("bn_statistics") else "")
        + ". The exact path on all samples follows"
        + (f" ({describe_seconds(seconds_left)} on this machine)." if seconds_left is not None else ".")
    ]
    for split in splits:
        info = path.barrier.get(f"{split}_loss") or {}
        if info.get("height") is not None:
            lines.append(
                f"Preview barrier ({split}): about {info['height']:.3g} at alpha = {info['alpha']:.2f}, from "
                f"{s['barrier_of']}; the barrier table waits for the exact path."
            )
    return lines


def preview_section(path, problem, form: dict, splits: list[str], modes: list[str]) -> None:
    """The labelled preview of the path, shown until the exact path is done (no table, no downloads)."""
    st.subheader(f"{ui.plain(form['name_a'])}  to  {ui.plain(form['name_b'])}")
    # every mode's path with its own recompute rule, timed by the preview itself
    seconds = sum(path_preview.exact_seconds(path, problem, form["steps"], form["span"], m) for m in modes)
    label, *barrier_lines = preview_text(path, problem, splits, seconds)
    st.caption(label)
    title = "Preview on a data subset: loss along the path; dashed: chord between the ends; bar: preview barrier"
    st.altair_chart(loss_chart(path, splits, form["log_y"], title), width="stretch")
    for line in barrier_lines:
        st.caption(line)


def barrier_table_section(path, splits: list[str]) -> None:
    """The barriers per split, with each end evaluated under its own stored statistics."""
    with ui.section("The barrier table"):
        table = barrier_table(path, splits)
        if not table.empty:
            st.markdown(
                "**Barriers per split** (loss barrier in loss units, error barrier as a fraction of samples; the last "
                "two columns: each end evaluated with its own stored statistics)"
            )
            st.dataframe(ui.readable(table), hide_index=True, width="stretch")


def batchnorm_section(paths: dict, splits: list[str]) -> None:
    """Why BatchNorm statistics matter along the path, and the options side by side when computed."""
    st.subheader("BatchNorm along the path")
    st.markdown(BN_NOTE)
    if len(paths) > 1:
        split = "train" if "train" in splits else splits[0]
        st.altair_chart(bn_chart(paths, split), width="stretch")
        rows = []
        for mode, p in paths.items():
            info = p.barrier.get(f"{split}_loss") or {}
            rows.append({"BatchNorm statistics": BN_LABELS[mode], f"{split} barrier": info.get("height")})
        st.dataframe(ui.readable(pd.DataFrame(rows)), hide_index=True, width="stretch")
        with ui.section("The BatchNorm readout"):
            st.markdown(bn_readout(paths, split))
    else:
        st.caption("Tick 'Also draw the other two BatchNorm options' to see how much the choice changes the path.")


def provenance(path, chart, end_a: dict, end_b: dict, form: dict, splits: list[str]) -> None:
    """How the path was computed (its settings) and the downloads with the Python snippet."""
    with st.expander("How this was computed"):
        st.json(path.settings, expanded=False)
    source = ui.source("A")
    bn = form["bn"]
    ui.downloads(
        path,
        chart=chart,
        name=f"interpolation_{bn}",
        snippet=lambda: snippet(source, end_a, end_b, form["steps"], form["span"], bn, splits),
    )
