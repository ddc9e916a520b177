"""After ``landscape demo``, every page of every demo opens without evaluating the model.

The module runs ``landscape demo`` (all demos, every page's first screen) into an empty cache,
then opens each page that computes on load with AppTest, on each demo, with its defaults,
while counting what evaluates the model: chunks of the evaluator (``Runner.outputs``) and
batch losses of gradients and Hessian-vector products (``LossFunction.batch_loss``). Every
count must be 0: the page was served from the cache that ``landscape demo`` filled.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from landscape_core import cli, demos, jobs
from landscape_core.execution import Runner
from landscape_core.hvp import LossFunction

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["surface", "interpolation", "sharpness", "trajectory", "compare", "text"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Every demo trained (in this session's cache), then ``landscape demo`` into an empty cache."""
    for name in demos.list_demos():
        demos.load(name)  # kept in memory: the empty cache below holds only the first screens
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LANDSCAPE_CACHE_DIR", str(tmp_path_factory.mktemp("first-screen-cache")))
        mp.setenv("LANDSCAPE_JOB_WAIT", "inf")  # a page that did compute waits for it: the count then says so
        mp.setattr(jobs, "_REGISTRY", None)  # no finished job of another test may serve a page
        report = cli.run(cli.build_parser().parse_args(["demo", "--quiet"]))  # what `landscape demo` does
        yield report
    jobs._REGISTRY = None


@pytest.fixture
def evaluations(monkeypatch):
    """``{"evaluator chunks": n, "gradient / HVP batches": m}`` counted while the test runs."""
    counts = {"evaluator chunks": 0, "gradient / HVP batches": 0}
    outputs, batch_loss = Runner.outputs, LossFunction.batch_loss

    def counted_outputs(self, *args, **kwargs):
        counts["evaluator chunks"] += 1
        return outputs(self, *args, **kwargs)

    def counted_batch_loss(self, *args, **kwargs):
        counts["gradient / HVP batches"] += 1
        return batch_loss(self, *args, **kwargs)

    monkeypatch.setattr(Runner, "outputs", counted_outputs)
    monkeypatch.setattr(LossFunction, "batch_loss", counted_batch_loss)
    return counts


def test_landscape_demo_prepares_every_page_of_every_demo(prepared):
    assert [row["demo"] for row in prepared["prepared"]] == demos.list_demos()
    for row in prepared["prepared"]:
        assert list(row["pages_s"]) == PAGES
        refused = {page: s for page, s in row["pages_s"].items() if isinstance(s, str)}
        assert not refused, (row["demo"], refused)


@pytest.mark.parametrize("demo", demos.list_demos())
def test_every_page_opens_from_the_cache(demo, prepared, evaluations):
    for page in PAGES:
        at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=1800)
        at.session_state["ui_workspace"] = demo
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        assert not at.get("progress"), (page, "a job is still running")
        assert evaluations == {"evaluator chunks": 0, "gradient / HVP batches": 0}, (demo, page, evaluations)


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
