"""Sections of the Sharpness & Hessian page: the form, the parts computed one after another, and
one section per part (eigenvalues, trace, density, sharpness), each with its readout and downloads.

UI only: eigenvalues, trace and density come from ``landscape_core.hessian``; epsilon, adaptive
and average sharpness from ``landscape_core.sharpness`` (through ``curvature_parts``).

- ``point_choices(ws)`` -> ``{label: point}``: the models on offer.
- ``compute(boxes, parts, point_name, point, base_problem, s)`` -> ``{part: result}``: the jobs, in order.
- ``metrics(result, parts, dimension)``: the four numbers on top and the curvature readout.
- ``preview_first(point, base_problem, s)`` -> whether the preview goes before the exact parts.
- ``preview(point_name, point, base_problem, s)``: the average sharpness on a data subset, labelled,
  while the exact measures run.
- ``eigenvalues(...)``, ``trace(...)``, ``density(...)``, ``sharpness(...)``: one section per part.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard_ui import ui
from dashboard_ui.curvature_charts import density_chart, spectrum_chart
from landscape_core import curvature_parts, jobs, sharpness_preview
from landscape_core.snippet import problem_code

PARTS = curvature_parts.PARTS  # reading order on the page
COMPUTE_ORDER = ("trace", "density", "sharpness", "eigenvalues")  # a first number soon; the long Lanczos run last
WHICH = ["both", "largest", "smallest"]
PART_LABELS = {
    "eigenvalues": "Top and bottom eigenvalues (Lanczos)",
    "trace": "Trace (Hutch++)",
    "density": "Eigenvalue density (stochastic Lanczos quadrature)",
    "sharpness": "Epsilon, adaptive and average sharpness",
}
P_CODE = {"2": "2", "inf": "float('inf')"}
CONVENTIONS = {  # sharpness.Convention values: how adaptive sharpness scales the perturbation
    "elementwise": "elementwise |w| + eta",
    "asam": "ASAM (Kwon et al. 2021): |w| + 0.01 on weights, 1 on biases",
}


PART_KEYS = {  # the settings each part depends on (a change elsewhere does not recompute it)
    "eigenvalues": ("k", "which", "tol", "max_iter", "seed"),
    "trace": ("budget", "seed"),
    "density": ("iters", "runs", "sigma", "seed"),
    "sharpness": ("eps", "rho", "p", "convention", "starts", "avg_sigma", "samples", "avg_adaptive", "seed"),
}
PART_UNITS = {
    "eigenvalues": "Hessian-vector products (at most)",
    "trace": "Hessian-vector products",
    "density": "Hessian-vector products",
    "sharpness": "loss evaluations",
}


# -- points to analyse ------------------------------------------------------------------------
def point_choices(ws) -> dict[str, dict]:
    """``{label: {"which": "A"|"B", "theta", "buffers", "code"}}`` for the models on offer."""
    a_name, b_name = ws.labels
    choices = {f"{a_name} (final model A)": {"which": "A", "theta": None, "buffers": None, "code": None}}
    for ckpt in ws.checkpoints:
        choices[f"checkpoint: {ckpt.name}"] = {
            "which": "A",
            "theta": ckpt.theta,
            "buffers": ckpt.buffers,
            "code": f"ws.checkpoint({ckpt.name!r})",
        }
    if ws.compare is not None:
        choices[f"{b_name} (final model B)"] = {"which": "B", "theta": None, "buffers": None, "code": None}
        for ckpt in ws.compare_checkpoints:
            choices[f"checkpoint: {ckpt.name}"] = {
                "which": "B",
                "theta": ckpt.theta,
                "buffers": ckpt.buffers,
                "code": f"ws.checkpoint({ckpt.name!r})",
            }
    return choices


# -- reading results that may come in several shapes -----------------------------------------
def _num(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _fmt(value, spec: str = ".4g") -> str:
    value = _num(value)
    return "n/a" if value is None else format(value, spec)


def sharpness_row(measure: str, result, settings_text: str) -> dict:
    """One table row for a sharpness result (value, its error, the losses behind it)."""
    return {
        "measure": measure,
        "value": _num(getattr(result, "value", None)),
        "standard error": _num(getattr(result, "stderr", None)),
        "loss at the point": _num(getattr(result, "base_loss", None)),
        "perturbed loss": _num(getattr(result, "max_loss", getattr(result, "perturbed_loss", None))),
        "settings": settings_text,
    }


# -- words ------------------------------------------------------------------------------------
def spectrum_readout(spectrum, trace_est, dimension: int) -> list[str]:
    lines = []
    lam_max, lam_min = spectrum.lambda_max, spectrum.lambda_min
    scale = float(spectrum.settings.get("scale", abs(lam_max) if np.isfinite(lam_max) else 1.0)) or 1.0
    if np.isfinite(lam_max):
        text = (
            f"**Largest eigenvalue {lam_max:.4g}**: along its eigenvector the loss curves up like "
            f"0.5 x {lam_max:.3g} x t^2 for a step t."
        )
        if lam_max > 0:
            text += f" Plain gradient descent with a learning rate above 2 / lambda_max = {2 / lam_max:.3g} is unstable along it."
        lines.append(text)
    if np.isfinite(lam_min):
        flat = abs(lam_min) <= 1e-3 * scale
        if lam_min < 0 and not flat:
            relative = abs(lam_min) / lam_max if np.isfinite(lam_max) and lam_max > 0 else float("inf")
            ratio = f" ({relative:.1%} of lambda_max)" if np.isfinite(relative) else ""
            text = (
                f"**Negative eigenvalue {lam_min:.3g}**{ratio}: this point is a **saddle** along that direction: the "
                f"loss goes *down* along its eigenvector, so it is not a minimum, however flat random slices look."
            )
            if relative < 0.05:
                text += (
                    " The downward curvature is weak next to the sharpest direction: trained networks often stop at "
                    "such near-minima, where a few directions still slope gently down."
                )
            lines.append(text)
        elif flat:
            lines.append(
                f"**Smallest eigenvalue {lam_min:.3g}** is about 0 next to lambda_max: the loss is flat (not curved "
                f"down) along that direction, as over-parameterized minima are; no sign of a saddle."
            )
        else:
            lines.append(
                f"**Smallest eigenvalue {lam_min:.3g} > 0**: every computed direction curves up: a local minimum."
            )
    if not spectrum.all_converged:
        bad = int((~spectrum.converged).sum())
        lines.append(
            f"**{bad} eigenpair(s) did not converge** to the tolerance {spectrum.settings.get('tol')}: their residuals "
            f"are in the table; raise the iteration limit for tighter values."
        )
    if trace_est is not None:
        per = trace_est.estimate / dimension
        error = "exact: the sketch spans the whole space" if trace_est.stderr == 0 else "+/- one standard error"
        text = (
            f"**Trace {trace_est.estimate:.4g} +/- {trace_est.stderr:.2g}** ({error}): the mean "
            f"eigenvalue is trace / P = {per:.3g} over P = {dimension:,} parameters."
        )
        if np.isfinite(lam_max) and per > 0:
            text += (
                f" lambda_max is {lam_max / per:,.0f}x the mean: a random direction sees about the mean curvature, "
                "which is why random 2D slices look much flatter than the sharpest direction."
            )
        lines.append(text)
    return lines


def snippet(source: dict, point: dict, parts, s: dict) -> str:
    lines = ["from landscape_core import hessian, sharpness", *problem_code(source)]
    if point["code"]:
        lines += [f"ckpt = {point['code']}", "problem = problem.at(ckpt.theta, ckpt.buffers)"]
    if "eigenvalues" in parts:
        lines.append(
            f"spectrum = hessian.top_eigenvalues(problem, k={s['k']}, which={s['which']!r}, tol={s['tol']}, "
            f"max_iter={s['max_iter']}, seed={s['seed']})"
        )
    if "trace" in parts:
        lines.append(f"trace = hessian.trace(problem, budget={s['budget']}, seed={s['seed']})")
    if "density" in parts:
        lines.append(
            f"density = hessian.density(problem, iters={s['iters']}, runs={s['runs']}, sigma={s['sigma']}, seed={s['seed']})"
        )
    if "sharpness" in parts:
        lines += [
            f"eps_sharp = sharpness.epsilon(problem, eps={s['eps']}, starts={s['starts']}, seed={s['seed']})",
            f"adaptive = sharpness.adaptive(problem, rho={s['rho']}, p={P_CODE[s['p']]}, "
            f"convention={s['convention']!r}, starts={s['starts']}, seed={s['seed']})",
            f"average = sharpness.average(problem, sigma={s['avg_sigma']}, samples={s['samples']}, "
            f"adaptive={s['avg_adaptive']}, convention={s['convention']!r}, seed={s['seed']})",
        ]
    return "\n".join(lines) + "\n"


# -- computing --------------------------------------------------------------------------------
def _part_job(part: str, point: dict, base_problem, s: dict):
    def run(progress, cancel):
        problem = base_problem
        if point["theta"] is not None:
            problem = base_problem.at(point["theta"], point["buffers"])
        return curvature_parts.compute(problem, part, s, progress=progress, cancel=cancel)

    return run


def compute(boxes: dict, parts: list[str], point_name: str, point: dict, base_problem, s: dict) -> dict:
    """Run the asked-for parts one at a time (``COMPUTE_ORDER``), each job's panel in its box.

    Returns ``{part: result}`` of the parts done; the ones after a running part say they wait.
    """
    result: dict = {}
    order = [q for q in COMPUTE_ORDER if q in parts]
    for i, part in enumerate(order):  # one part at a time, each shown as soon as it is done
        with boxes[part]:
            key = jobs.job_key(
                f"sharpness-{part}",
                {"source": ui.source(point["which"]), "point": point_name}
                | {name: s[name] for name in PART_KEYS[part]},
            )
            value = ui.run_job(key, _part_job(part, point, base_problem, s), PART_LABELS[part], unit=PART_UNITS[part])
        if value is None:
            for later in order[i + 1 :]:
                boxes[later].caption(f"{PART_LABELS[later]}: waiting, computed after {PART_LABELS[part].lower()}.")
            break
        result[part] = value
    return result


def preview_first(point: dict, base_problem, s: dict) -> bool:
    """Whether to start the preview before the exact parts: at model A when its average sharpness is not
    cached (told without evaluating). At a checkpoint that cannot be told without evaluating the model
    there, so its preview waits to see whether the sharpness part is still running."""
    if point["theta"] is not None:
        return False
    return not sharpness_preview.average_cached(
        base_problem, s["avg_sigma"], s["samples"], s["avg_adaptive"], s["convention"], s["seed"]
    )


def preview(point_name: str, point: dict, base_problem, s: dict) -> None:
    """The average sharpness from a few noise draws on a data subset (``sharpness_preview.preview_average_sharpness``),
    labelled with its subset, draws and standard error; shown only while the exact measures run."""
    settings = {name: s[name] for name in ("avg_sigma", "avg_adaptive", "convention", "seed")}
    key = jobs.job_key("sharpness-preview", {"source": ui.source(point["which"]), "point": point_name} | settings)
    cost = ui.estimate(base_problem, ["train"])

    def run(progress, cancel):
        return sharpness_preview.preview_average_sharpness(
            base_problem,
            sigma=s["avg_sigma"],
            adaptive=s["avg_adaptive"],
            convention=s["convention"],
            seed=s["seed"],
            cost=cost,
            cancel=cancel,
            theta=point["theta"],
            buffers=point["buffers"],
        )

    result = ui.run_job(key, run, "sharpness preview on a data subset")
    if result is None:
        return
    info = result.settings
    st.markdown("#### Preview: average sharpness on a data subset")
    st.markdown(
        f"Under random Gaussian noise of size sigma = {info['sigma']:g}"
        + (" (scaled by |w|)" if info["adaptive"] else "")
        + f", the loss rises by about **{result.value:.3g} +/- {result.stderr:.2g}** on average."
    )
    st.caption(
        f"Preview: {info['draws']} noise draws on {info['samples']:,} of {info['of_samples']:,} train samples; the "
        "standard error counts both the draws and the subset. The exact measures on all samples follow, the average "
        f"sharpness with {s['samples']} draws."
    )


# -- sections ---------------------------------------------------------------------------------
def metrics(result: dict, parts: list[str], dimension: int) -> None:
    """The four headline numbers (or 'pending' / 'not asked for') and the curvature readout."""
    spectrum = result.get("eigenvalues")
    trace_est = result.get("trace")
    sharp = result.get("sharpness") or {}

    def _metric(col, label: str, part: str, value: str) -> None:
        col.metric(label, value if part in result else "pending" if part in parts else "not asked for")

    metrics = st.columns(4)
    _metric(metrics[0], "lambda_max (largest eigenvalue)", "eigenvalues", _fmt(spectrum and spectrum.lambda_max))
    _metric(metrics[1], "lambda_min (smallest eigenvalue)", "eigenvalues", _fmt(spectrum and spectrum.lambda_min))
    trace_text = f"{trace_est.estimate:.4g} +/- {trace_est.stderr:.2g}" if trace_est is not None else ""
    _metric(metrics[2], "Hessian trace", "trace", trace_text)
    _metric(
        metrics[3], "epsilon-sharpness (Keskar, %)", "sharpness", _fmt(getattr(sharp.get("epsilon"), "value", None))
    )
    with ui.section("The curvature readout"):
        for line in spectrum_readout(spectrum, trace_est, dimension) if spectrum is not None else []:
            st.markdown(line)
        if spectrum is None and trace_est is not None:
            st.markdown(
                f"**Trace {trace_est.estimate:.4g} +/- {trace_est.stderr:.2g}**: mean eigenvalue "
                f"{trace_est.estimate / dimension:.3g} over {dimension:,} parameters."
            )


def eigenvalues(spectrum, source: dict, point: dict, parts: list[str], s: dict) -> None:
    """The extreme eigenvalues: chart, table with residuals, how they were found, downloads."""
    st.markdown("#### Extreme eigenvalues")
    spec_chart = spectrum_chart(spectrum)
    st.altair_chart(spec_chart, width="stretch")
    digits = ui.significant_digits(spectrum.values)
    st.dataframe(
        pd.DataFrame(
            {
                "end": spectrum.ends,
                "eigenvalue": spectrum.values,
                "residual ||Hv - lambda v||": spectrum.residuals,
                "converged": np.where(spectrum.converged, "yes", "NO"),
            }
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "eigenvalue": st.column_config.NumberColumn(format=f"%.{digits}g"),
            "residual ||Hv - lambda v||": st.column_config.NumberColumn(format="%.2e"),
        },
    )
    st.caption(
        f"Thick-restart Lanczos, {spectrum.hvp_count} Hessian-vector products; converged means residual <= "
        f"{spectrum.settings.get('tol')} x the largest |eigenvalue|. Eigenvalues to {digits} significant digits, "
        "enough to tell every pair apart."
    )
    ui.downloads(spectrum, chart=spec_chart, name="eigenvalues", snippet=lambda: snippet(source, point, parts, s))


def trace(trace_est) -> None:
    """The Hutch++ trace with its standard error and downloads."""
    st.markdown("#### Trace")
    st.markdown(
        f"tr(H) = **{trace_est.estimate:.5g}**, standard error {trace_est.stderr:.3g} "
        f"({trace_est.settings.get('method', 'hutch++')}, {trace_est.hvp_count} Hessian-vector products; "
        f"{trace_est.exact_part:.5g} of it computed exactly on the sketched subspace)."
    )
    ui.downloads(trace_est, name="trace")


def density(dens, log_density: bool, spectrum=None) -> None:
    """The eigenvalue density chart (lambda_max marked when known), what it shows, downloads."""
    st.markdown("#### Eigenvalue density")
    dens_chart = density_chart(dens, log_density, spectrum)
    st.altair_chart(dens_chart, width="stretch")
    st.caption(
        f"Stochastic Lanczos quadrature: {dens.settings.get('runs')} run(s) of {dens.settings.get('iters')} "
        f"steps, {dens.hvp_count} products. Most of the mass sits near 0 (flat directions); the few outliers on "
        "the right are the sharp directions. A log axis shows them."
    )
    ui.downloads(dens, chart=dens_chart, name="density")


def sharpness(sharp: dict, s: dict) -> None:
    """The three sharpness measures in one table, read out in words, with downloads per measure."""
    st.markdown("#### Sharpness")
    p_text = "2" if s["p"] == "2" else "inf"
    rows = [
        sharpness_row(
            "epsilon-sharpness (Keskar 2017, % of 1 + L; lower bound)",
            sharp["epsilon"],
            f"eps = {s['eps']:g}, full space, best of {s['starts']} start(s), seed {s['seed']}",
        ),
        sharpness_row(
            "adaptive sharpness (worst case, scale-invariant; lower bound)",
            sharp["adaptive"],
            f"rho = {s['rho']:g}, p = {p_text}, {CONVENTIONS[s['convention']]}, best of {s['starts']} start(s), "
            f"seed {s['seed']}",
        ),
        sharpness_row(
            "average sharpness (expected rise under noise)",
            sharp["average"],
            f"sigma = {s['avg_sigma']:g}, {s['samples']} samples"
            + (f", noise scaled ({CONVENTIONS[s['convention']]})" if s["avg_adaptive"] else "")
            + f", seed {s['seed']}",
        ),
    ]
    st.dataframe(
        ui.readable(pd.DataFrame(rows)),
        hide_index=True,
        width="stretch",
        column_config={"standard error": st.column_config.Column(help="only the average case has one")},
    )
    eps_value = _num(getattr(sharp["epsilon"], "value", None))
    if eps_value is not None:
        adaptive_value = _fmt(getattr(sharp["adaptive"], "value", None), ".3g")
        average_value = _fmt(getattr(sharp["average"], "value", None), ".3g")
        average_err = _fmt(getattr(sharp["average"], "stderr", None), ".2g")
        st.markdown(
            f"Within a box of relative size epsilon = {s['eps']:g} around every weight, the worst perturbation "
            f"found raises the loss by **{eps_value:.3g}% of (1 + loss)** (Keskar's phi). Within a scale-invariant "
            f"ball of relative radius rho = {s['rho']:g} it rises by **{adaptive_value}** (loss units); under "
            f"random Gaussian noise of size sigma = {s['avg_sigma']:g} by **{average_value} +/- {average_err}** "
            f"on average. Worst-case values are **lower bounds**: the best of {s['starts']} local ascent(s) from "
            "random starts (more starts can only find more); compare them between models with the same settings, "
            "not across measures."
        )
    for name in ("epsilon", "adaptive", "average"):
        with st.expander(f"Downloads: {name} sharpness"):
            ui.downloads(sharp[name], name=f"{name}_sharpness")
