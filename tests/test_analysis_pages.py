"""AppTest runs of the Interpolation, Sharpness & Hessian and Trajectory pages on the demos.

Each page is run on its own (``AppTest.from_file``) with the sidebar's state set in session
state (workspace, a 256-sample evaluation subset), so no other page's default job runs first.
Jobs are waited on synchronously (``LANDSCAPE_JOB_WAIT``): one ``run()`` returns with the
result drawn. The numbers a page shows are checked against the engine called directly, and
on logistic-blobs (6 parameters) the eigenvalues against the exact float64 Hessian.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parents[1] / "pages"
TIMEOUT = 1800  # a hang guard for one script run; jobs are waited on until done (LANDSCAPE_JOB_WAIT)

pytestmark = pytest.mark.slow


def _needs(*modules: str) -> None:
    """Skip (with the reason) when an engine module of the page has not landed."""
    for name in modules:
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not available; its page is hidden by app.py")


@pytest.fixture(autouse=True)
def synchronous_jobs(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "inf")  # until the job is done, however long that takes


def _page(name: str, workspace: str, subset: int | None = 256, **state) -> AppTest:
    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=TIMEOUT)
    at.session_state["ui_workspace"] = workspace
    if subset:
        at.session_state["ui_subset"] = subset
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    _clean(at)
    return at


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _submit(at: AppTest) -> None:
    next(b for b in at.button if b.proto.is_form_submitter).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def _charts(at: AppTest) -> int:
    return len(at.get("vega_lite_chart"))


def _downloads(at: AppTest) -> set[str]:
    return {b.proto.label for b in at.get("download_button")}


# -- Interpolation ------------------------------------------------------------------------------
def test_interpolation_bn_demo_draws_paths_barrier_and_all_bn_options():
    _needs("landscape_core.interpolation", "landscape_core.demos")
    from landscape_core import demos, interpolation

    at = _page("interpolation", "digits-bn-cnn", interp_steps=5)
    assert at.title[0].value.startswith("Interpolation")
    assert _charts(at) == 3  # loss with chord and barrier, accuracy, the three BatchNorm options
    barrier = at.dataframe[0].value.set_index("split")
    options = at.dataframe[1].value
    assert len(options) == 3 and options.iloc[:, 1].notna().all()
    assert {"CSV", "NPZ", "Settings", "PNG", "SVG"} <= _downloads(at)
    assert any("interpolation.linear(problem" in c.value for c in at.code)
    readout = next(m.value for m in at.markdown if m.value.startswith("**train**"))
    assert "above the chord" in readout

    # the page shows what the engine computes for the same settings (A final vs B final, recompute)
    ws = demos.load("digits-bn-cnn")
    problem = ws.problem.subset(256, seed=0)
    path = interpolation.linear(
        problem,
        ws.problem.theta0,
        ws.compare.theta0,
        steps=5,
        bn="recompute",
        buffers_a=ws.problem.buffers,
        buffers_b=ws.compare.buffers,
    )
    expected = path.barrier["train_loss"]
    assert barrier.loc["train", "loss barrier (Entezari et al. 2022)"] == pytest.approx(expected["height"], rel=1e-9)
    assert barrier.loc["train", "at alpha"] == pytest.approx(expected["alpha"])
    error = path.barrier["train_error"]["height"]
    assert barrier.loc["train", "error barrier (Frankle et al. 2020)"] == pytest.approx(error, rel=1e-9)
    assert "Error barrier (Frankle et al. 2020" in readout and "Entezari et al. 2022" in at.caption[0].value

    # another BatchNorm option changes the drawn path and its barrier
    at.radio(key="interp_bn").set_value("keep")
    _submit(at)
    _clean(at)
    kept = at.dataframe[0].value.set_index("split").loc["train", "loss barrier (Entezari et al. 2022)"]
    assert kept != pytest.approx(expected["height"], rel=1e-6)
    assert options.set_index(options.columns[0]).iloc[2, 0] == pytest.approx(kept, rel=1e-9)  # "keep" row


def test_interpolation_rejects_identical_endpoints_readably():
    _needs("landscape_core.interpolation", "landscape_core.demos")
    at = _page("interpolation", "logistic-blobs", interp_steps=5)
    assert _charts(at) == 2  # loss and accuracy; no BatchNorm in logistic regression
    first = at.selectbox(key="interp_a").value
    at.selectbox(key="interp_b").set_value(first)
    _submit(at)
    assert not at.exception
    assert any("same model" in e.value for e in at.error)
    assert _charts(at) == 0


# -- Sharpness & Hessian ------------------------------------------------------------------------
def _exact_eigenvalues(problem) -> np.ndarray:
    """Eigenvalues of the full-split Hessian at ``problem.theta0`` from ``torch.func.hessian`` (dense)."""
    H = torch.func.hessian(problem.full_loss)(problem.theta0.detach())
    return torch.linalg.eigvalsh(H.double()).numpy()


def test_sharpness_page_matches_the_exact_hessian_and_reacts_to_settings():
    _needs("landscape_core.hessian", "landscape_core.sharpness", "landscape_core.demos")
    from landscape_core import demos

    at = _page("sharpness", "logistic-blobs", subset=None, sharp_samples=8, sharp_budget=18, sharp_iters=6)
    assert at.title[0].value.startswith("Sharpness")
    assert _charts(at) == 2  # eigenvalue bars, density
    metrics = {m.label: m.value for m in at.metric}
    spectrum = at.dataframe[0].value
    assert len(spectrum) == 6 and (spectrum["converged"] == "yes").all()
    exact = _exact_eigenvalues(demos.load("logistic-blobs").problem)
    assert float(spectrum["eigenvalue"].max()) == pytest.approx(exact.max(), rel=1e-4)
    assert float(metrics["lambda_max (largest eigenvalue)"]) == pytest.approx(exact.max(), rel=1e-3)
    assert float(spectrum["eigenvalue"].min()) == pytest.approx(exact.min(), abs=1e-6 * exact.max())
    trace_value = float(metrics["Hessian trace"].split(" ")[0])
    assert trace_value == pytest.approx(exact.sum(), rel=1e-3)  # 18 products >= 3 n: Hutch++ is exact
    table = at.dataframe[1].value
    assert len(table) == 3 and table["value"].notna().all()
    assert (table["standard error"] == "n/a").tolist() == [True, True, False]  # only the average has one
    assert "None" not in table.astype(str).to_numpy()
    assert table["measure"].str.contains("lower bound").tolist() == [True, True, False]
    assert "best of 1 start(s)" in table["settings"].iloc[0]
    readouts = " ".join(m.value for m in at.markdown)
    assert "Largest eigenvalue" in readouts and "Smallest eigenvalue" in readouts
    assert "**lower bounds**" in readouts
    assert {"CSV", "NPZ", "Settings", "PNG", "SVG"} <= _downloads(at)

    # only the largest end: no smallest eigenvalue, and fewer pairs
    at.radio(key="sharp_which").set_value("largest")
    at.number_input(key="sharp_k").set_value(2)
    at.radio(key="sharp_convention").set_value("asam")  # and Kwon et al.'s scale with two starts
    at.number_input(key="sharp_starts").set_value(2)
    _submit(at)
    _clean(at)
    spectrum = at.dataframe[0].value
    assert list(spectrum["end"]) == ["largest", "largest"]
    settings_text = at.dataframe[1].value["settings"].tolist()
    assert "ASAM (Kwon et al. 2021)" in settings_text[1] and "best of 2 start(s)" in settings_text[1]
    assert {m.label: m.value for m in at.metric}["lambda_min (smallest eigenvalue)"] == "n/a"


def test_sharpness_page_analyses_the_chosen_checkpoint():
    _needs("landscape_core.hessian", "landscape_core.sharpness", "landscape_core.demos")
    from landscape_core import demos

    at = _page("sharpness", "logistic-blobs", subset=None, sharp_parts=["eigenvalues"])
    final = float(at.dataframe[0].value["eigenvalue"].max())
    at.selectbox(key="sharp_point").set_value("checkpoint: GD step 000")
    _submit(at)
    _clean(at)
    assert _charts(at) == 1  # eigenvalues only
    start = float(at.dataframe[0].value["eigenvalue"].max())
    ws = demos.load("logistic-blobs")
    exact = _exact_eigenvalues(ws.problem.at(ws.checkpoint("GD step 000").theta))
    assert start == pytest.approx(exact.max(), rel=1e-4)
    assert start != pytest.approx(final, rel=1e-3)
    words = " ".join(m.value for m in at.markdown)
    assert "Smallest eigenvalue" in words or "Negative eigenvalue" in words


# -- Trajectory ---------------------------------------------------------------------------------
def test_trajectory_page_views_plane_and_gap():
    _needs("landscape_core.trajectory", "landscape_core.trajectory_plane", "landscape_core.demos")
    from landscape_core import demos, trajectory

    at = _page("trajectory", "logistic-blobs", subset=None, traj_steps=11)
    assert at.title[0].value.startswith("Trajectory")
    assert _charts(at) == 4  # PCA view, UMAP view, PCA plane with the path, projection gap
    summary = at.dataframe[0].value.set_index("view")
    ws = demos.load("logistic-blobs")
    pca = trajectory.pca(ws.checkpoints, reference="final", space=ws.problem)  # Li et al. 2018, the default
    assert pca.settings["variant"] == "li2018" and pca.settings["ignored"] == ["bias", "norm"]
    assert any("Li et al. 2018" in m.value for m in at.markdown if m.value.startswith("**PCA**"))
    assert summary.loc["PCA", "trustworthiness"] == pytest.approx(pca.trustworthiness)
    # a column with a missing value (UMAP has no explained variance) is shown as text, "n/a" where missing
    assert float(summary.loc["PCA", "explained variance (2 components)"]) == pytest.approx(
        float(pca.explained_variance_ratio.sum()), rel=1e-3
    )
    assert summary.loc["UMAP", "explained variance (2 components)"] == "n/a"
    assert 0 <= summary.loc["UMAP", "trustworthiness"] <= 1
    gap = at.dataframe[1].value
    assert len(gap) == len(ws.checkpoints)
    assert np.allclose(gap["distance from the plane"], pca.residual_norms)
    assert any(m.value.startswith("The largest gap is") for m in at.markdown)
    assert {"CSV", "NPZ", "Settings", "PNG", "SVG"} <= _downloads(at)

    # no UMAP, an autoencoder instead: the views change
    at.checkbox(key="traj_umap").set_value(False)
    at.checkbox(key="traj_ae").set_value(True)
    _submit(at)
    _clean(at)
    views = list(at.dataframe[0].value["view"])
    assert views == ["PCA", "Autoencoder"]
    assert float(at.dataframe[0].value.set_index("view").loc["Autoencoder", "reconstruction error"]) >= 0
