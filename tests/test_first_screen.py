"""After ``landscape demo``, every page of every demo opens without evaluating the model.

Into an empty cache, ``landscape demo logistic-blobs`` runs as a user would run it; for every
other demo, ``first_screen.precompute`` (what ``landscape demo`` runs for each demo) prepares it
on the 256-sample evaluation subset the sidebar offers, which is the same computation on less
data (all demos on full data take the better part of an hour on a loaded two-core machine).
Then each page that computes on load is opened with AppTest on each demo, with its defaults and
that subset, while counting what evaluates the model: chunks of the evaluator
(``Runner.outputs``), batch losses of gradients and Hessian-vector products
(``LossFunction.batch_loss``), and passes in embedding space (per-input losses of the Text
page's gradient column, ``EmbeddingAccess.losses``; encoder passes of its contrastive
section, ``embedding_motion._encode``). Every count must be 0: the page was served from the cache.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from landscape_core import cli, demos, embedding_motion, first_screen, jobs
from landscape_core.embeddings import EmbeddingAccess
from landscape_core.execution import Runner
from landscape_core.hvp import LossFunction
from landscape_core.problem import Problem

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["surface", "interpolation", "sharpness", "trajectory", "compare", "text"]
SUBSET = 256
FULL_DATA_DEMO = "logistic-blobs"  # small enough for `landscape demo` itself in a test

# a hang guard, not a schedule: one demo's first screens take minutes, many more on a loaded machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3 * 3600)]


def subset_of(workspace) -> int:
    """The sidebar's 256-sample subset where it offers one (a split larger than 256), else 0: all data."""
    return SUBSET if max(s.n for s in workspace.problem.splits.values()) > SUBSET else 0


def on_subset(demo: str, subset: int):
    """The demo with models A and B as the pages use them on ``subset`` (the sidebar's cached
    ``Problem.subset(subset, seed=0)``; preparing it evaluates the base point, before any count)."""
    from dashboard_ui.frame import _page_problem

    workspace = demos.load(demo)
    if not subset:
        return workspace
    compare = _page_problem(demo, "B", subset, "cpu") if workspace.compare is not None else None
    return dataclasses.replace(workspace, problem=_page_problem(demo, "A", subset, "cpu"), compare=compare)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """An empty cache for the module, filled by ``landscape demo logistic-blobs`` (as a user runs it)
    and the Text page's first screen (every demo's Text page shows the text demo on all its data)."""
    for name in demos.list_demos():
        demos.load(name)  # trained in this session's cache, kept in memory
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LANDSCAPE_CACHE_DIR", str(tmp_path_factory.mktemp("first-screen-cache")))
        mp.setenv("LANDSCAPE_JOB_WAIT", "inf")  # a page that does compute waits for it: the count then says so
        mp.setattr(jobs, "_REGISTRY", None)  # no finished job of another test may serve a page
        report = cli.run(cli.build_parser().parse_args(["demo", FULL_DATA_DEMO, "--quiet"]))
        first_screen.precompute(demos.load(demos.TEXT_DEMO), pages=["text"])
        yield report
    jobs._REGISTRY = None


@pytest.fixture
def evaluations(monkeypatch):
    """``{"evaluator chunks": n, "gradient / HVP batches": m, "embedding-space passes": k}`` counted
    while the test runs.

    The base values of a Problem (``Problem._check_base``, run when the sidebar prepares a subset
    of the data) are not counted: they are the sidebar's, not a page's first screen.
    """
    counts = {"evaluator chunks": 0, "gradient / HVP batches": 0, "embedding-space passes": 0}
    outputs, batch_loss, check_base = Runner.outputs, LossFunction.batch_loss, Problem._check_base
    preparing = threading.local()

    def counted_outputs(self, *args, **kwargs):
        if not getattr(preparing, "depth", 0):
            counts["evaluator chunks"] += 1
        return outputs(self, *args, **kwargs)

    def counted_batch_loss(self, *args, **kwargs):
        counts["gradient / HVP batches"] += 1
        return batch_loss(self, *args, **kwargs)

    def base_values(self, *args, **kwargs):
        preparing.depth = getattr(preparing, "depth", 0) + 1
        try:
            return check_base(self, *args, **kwargs)
        finally:
            preparing.depth -= 1

    def counted(function):
        def wrapper(*args, **kwargs):
            counts["embedding-space passes"] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(EmbeddingAccess, "losses", counted(EmbeddingAccess.losses))
    monkeypatch.setattr(embedding_motion, "_encode", counted(embedding_motion._encode))
    monkeypatch.setattr(Runner, "outputs", counted_outputs)
    monkeypatch.setattr(LossFunction, "batch_loss", counted_batch_loss)
    monkeypatch.setattr(Problem, "_check_base", base_values)
    return counts


def test_landscape_demo_prepares_every_page(cache):
    (row,) = cache["prepared"]
    assert row["demo"] == FULL_DATA_DEMO and list(row["pages_s"]) == PAGES
    assert all(isinstance(seconds, float) for seconds in row["pages_s"].values()), row["pages_s"]


def _open_every_page(demo: str, subset: int, evaluations: dict) -> None:
    for page in PAGES:
        at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=1800)
        at.session_state["ui_workspace"] = demo
        at.session_state["ui_subset"] = subset
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        assert not at.get("progress"), (page, "a job is still running")
        assert not any(evaluations.values()), (demo, page, evaluations)


def test_after_landscape_demo_every_page_opens_from_the_cache(cache, evaluations):
    _open_every_page(FULL_DATA_DEMO, 0, evaluations)


@pytest.mark.parametrize("demo", [d for d in demos.list_demos() if d != FULL_DATA_DEMO])
def test_every_page_of_every_demo_opens_from_the_cache(demo, cache, evaluations):
    subset = subset_of(demos.load(demo))
    pages = [p for p in PAGES if p != "text"]
    first_screen.precompute(on_subset(demo, subset), pages=pages)  # not counted: before any page opens
    evaluations.update({k: 0 for k in evaluations})
    _open_every_page(demo, subset, evaluations)


def test_text_page_opens_from_the_cache_after_its_precompute(fresh_cache, monkeypatch, evaluations):
    """The Text page alone, into an empty cache: after ``precompute(text demo, ["text"])`` it opens
    without a single pass: fragility, the gradient column and the contrastive section's motion
    are all served from the disk cache (before issue 15's caching, the last two were computed on open)."""
    for name in (demos.TEXT_DEMO, demos.CONTRASTIVE_DEMO):
        demos.load(name)  # trained (in this session's cache), kept in memory
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "inf")
    monkeypatch.setattr(jobs, "_REGISTRY", None)
    seconds = first_screen.precompute(demos.load(demos.TEXT_DEMO), pages=["text"])
    assert isinstance(seconds["text"], float), seconds
    assert evaluations["embedding-space passes"] > 0  # the precompute did the work
    evaluations.update({k: 0 for k in evaluations})
    at = AppTest.from_file(str(ROOT / "pages" / "text.py"), default_timeout=1800)
    at.session_state["ui_workspace"] = demos.TEXT_DEMO
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert not at.get("progress")
    assert any("is the flatter encoder" in m.value for m in at.markdown)  # the contrastive section is drawn
    assert "gradient norm ||dL/dE||" in at.dataframe[0].value.columns
    assert not any(evaluations.values()), evaluations


def test_the_defaults_are_one_table():
    """The CLI's argument defaults are the pages' defaults (landscape_core.defaults)."""
    from landscape_core.defaults import HESSIAN, INTERPOLATION, SHARPNESS, SURFACE

    parser = cli.build_parser()
    surface = parser.parse_args(["surface"])
    assert (
        (surface.steps, surface.span, surface.norm, surface.seed)
        == (41, 1.0, "filter", 0)
        == (
            SURFACE.steps,
            SURFACE.span,
            SURFACE.norm,
            SURFACE.seed,
        )
    )
    hessian = parser.parse_args(["hessian"])
    assert (hessian.k, hessian.which, hessian.budget, hessian.iters) == (3, "both", 90, 60)
    assert (hessian.tol, hessian.max_iter) == (HESSIAN.tol, HESSIAN.max_iter)
    path = parser.parse_args(["interpolate"])
    assert (path.steps, tuple(path.path_span), path.bn) == (INTERPOLATION.steps, INTERPOLATION.span, "recompute")
    assert parser.parse_args(["sharpness"]).samples == SHARPNESS.samples
