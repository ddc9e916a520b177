"""End-to-end: the charts that answer the next question, clicked in Chromium.

Each test clicks (or hovers) one chart as a user would, at the pixel of a mark the browser
drew (clickable charts draw as SVG: one element per cell or checkpoint), then checks what
appears against the library's own numbers. Waits are on the app's state, never on time
(``browser.wait_while_working``). Screenshots go to ``test-output/screenshots/``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from browser import CHROMIUM, ROOT, demo_server, wait_for_app_run, wait_while_working

from landscape_core import demos, directions
from landscape_core.defaults import COMPARE, SURFACE

SHOTS = ROOT / "test-output" / "screenshots"
CHART = '[data-testid="stVegaLiteChart"]'
NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def app_url():
    with demo_server(["digits-mlp"], "streamlit-e2e-clicks.log") as url:
        yield url


@pytest.fixture(scope="module")
def workspace():
    return demos.load("digits-mlp")  # the sidebar's first workspace


def open_finished(page, url: str, path: str) -> None:
    """Open a page and wait until its jobs are done: a chart drawn, no progress bar, no run."""
    page.goto(f"{url}/{path}")
    wait_for_app_run(page)
    wait_while_working(page, page.locator(CHART))
    wait_while_working(page, page.locator('[data-testid="stProgress"]'), state="detached")
    wait_for_app_run(page)
    wait_while_working(page, page.locator('[data-testid="stSkeleton"]'), state="detached")
    assert page.locator('[data-testid="stException"]').count() == 0


# the first mark of ``selector`` in the chart, searched from the middle outwards, that is the
# element the browser hits at its centre (not under a contour line or a label): its centre
_MARK_CENTRE = """([chart, selector]) => {
    const marks = [...chart.querySelectorAll(selector)];
    const mid = Math.floor(marks.length / 2);
    for (let k = 0; k < marks.length; k++) {
        const mark = marks[(mid + k) % marks.length];
        const box = mark.getBoundingClientRect();
        const x = box.left + box.width / 2, y = box.top + box.height / 2;
        if (box.width > 0 && document.elementFromPoint(x, y) === mark) return [x, y];
    }
    return null;
}"""


def mark_centre(page, chart, selector: str) -> tuple[float, float]:
    chart.scroll_into_view_if_needed()
    handle = chart.element_handle()
    wait_while_working(page, chart.locator(selector))
    point = page.evaluate(_MARK_CENTRE, [handle, selector])
    assert point is not None, f"no mark {selector!r} can be clicked in the chart"
    return point


def value_at(problem, basis, alpha: float, beta: float) -> dict:
    """The library's values at theta0 + alpha d1 + beta d2 (float64 numbers)."""
    theta = problem.theta0 + alpha * basis[0] + beta * basis[1]
    return {q: float(v[0]) for q, v in problem.evaluate(theta[None]).items()}


def test_surface_click_draws_slices_then_recentres_there(app_url, page, workspace):
    open_finished(page, app_url, "")
    charts_before = page.locator(CHART).count()
    x, y = mark_centre(page, page.locator(CHART).first, "g.mark-rect path")
    page.mouse.click(x, y)
    header = page.get_by_text(re.compile(rf"Slices through \(alpha, beta\) = \({NUMBER}, {NUMBER}\)"))
    wait_while_working(page, header)
    wait_for_app_run(page)
    alpha, beta = (float(v) for v in re.findall(NUMBER, header.inner_text().split("=")[1]))
    readout = page.get_by_text(re.compile(r"^At this point: ")).inner_text()
    shown = {q.replace(" ", "_"): float(v) for q, v in re.findall(rf"(\w+ \w+) ({NUMBER})", readout)}
    problem = workspace.problem
    basis = directions.random(problem, count=2, norm=SURFACE.norm, ignore=SURFACE.ignore, seed=SURFACE.seed)
    exact = value_at(problem, basis, alpha, beta)
    assert set(shown) == set(exact), (shown, exact)
    for q, v in exact.items():
        assert shown[q] == pytest.approx(v, rel=2e-4, abs=1e-6), q
    assert page.locator(CHART).count() == charts_before + 2  # the alpha-slice and the beta-slice
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "surface-clicked-slices.png"), full_page=True)

    page.get_by_role("button", name="Re-centre the plane here").click()
    centre = page.get_by_text(re.compile(rf"at the centre \(alpha0, beta0\) = \({NUMBER}, {NUMBER}\): {NUMBER}"))
    wait_while_working(page, centre)
    wait_while_working(page, page.locator('[data-testid="stProgress"]'), state="detached")
    wait_for_app_run(page)
    numbers = [float(v) for v in re.findall(NUMBER, centre.inner_text().split("(alpha0, beta0) =")[1])]
    assert numbers[:2] == pytest.approx([alpha, beta], abs=5e-4)
    # the new plane's centre is the clicked point: its value is the one the click showed
    assert numbers[2] == pytest.approx(exact["train_loss"], rel=1e-3)
    # the click was on the old plane: the new one starts unclicked, its maps' titles say the centre
    wait_while_working(page, page.get_by_text(re.compile(r"^Click a cell of the map to draw the 1D slices")))
    assert page.get_by_text(re.compile(r"^Slices through")).count() == 0
    assert page.locator(CHART).count() == charts_before
    titles = page.locator(CHART).first.locator("g.role-title-text tspan").all_text_contents()  # one per line
    centre_title = f"(alpha0, beta0) = ({numbers[0]:.4g}, {numbers[1]:.4g})"
    assert centre_title in [t.strip() for t in titles], titles
    page.screenshot(path=str(SHOTS / "surface-recentred.png"), full_page=True)


def chosen(page, label: str, value: str):
    """The selectbox ``label`` showing ``value``: Streamlit draws it as a combobox whose choice is
    the value of its text input (not text of the page, so ``has_text`` does not see it)."""
    return page.get_by_role("combobox", name=label, exact=True).and_(page.locator(f"[value={json.dumps(value)}]"))


def test_trajectory_click_shows_checkpoint_and_opens_it_elsewhere(app_url, page, workspace):
    open_finished(page, app_url, "trajectory")
    pca_view = page.locator(CHART).first
    page.mouse.click(*mark_centre(page, pca_view, "g.mark-symbol path"))
    title = page.get_by_text(re.compile(r"^Checkpoint .+ \(epoch / step"))
    wait_while_working(page, title)
    wait_for_app_run(page)
    name = re.match(r"^Checkpoint (.+?) \(epoch / step", title.inner_text()).group(1)  # names hold spaces
    checkpoint = next(c for c in workspace.checkpoints if c.name == name)
    exact = workspace.problem.evaluate(checkpoint.theta[None])
    rows = page.get_by_test_id("stTable").locator("tbody tr")
    wait_while_working(page, rows.first)  # the readout's table is drawn after its title (a loaded run saw none yet)
    shown = {}
    for i in range(rows.count()):
        cells = [c.strip() for c in rows.nth(i).locator("th, td").all_inner_texts()]
        shown[cells[0].replace(" ", "_")] = float(cells[1])
    assert set(shown) == set(exact)
    for q, v in exact.items():
        assert shown[q] == pytest.approx(float(v[0]), rel=2e-4, abs=1e-6), q
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "trajectory-clicked.png"), full_page=True)

    page.get_by_role("button", name="Open on Sharpness").click()
    wait_while_working(page, chosen(page, "Model to analyse", f"checkpoint: {name}"))
    assert urlparse(page.url).path.rstrip("/").endswith("/sharpness")
    linked = parse_qs(urlparse(page.url).query)  # the URL carries the opened view from the switch on
    assert linked["sharp_point"] == [f"checkpoint: {name}"], linked
    page.screenshot(path=str(SHOTS / "trajectory-opened-on-sharpness.png"), full_page=True)

    open_finished(page, app_url, "trajectory")
    page.mouse.click(*mark_centre(page, page.locator(CHART).first, "g.mark-symbol path"))
    wait_while_working(page, page.get_by_text(re.compile(rf"^Checkpoint {re.escape(name)} ")))
    wait_for_app_run(page)
    page.get_by_role("button", name="Open on Surface").click()
    wait_while_working(page, chosen(page, "Directions", "Plane through three checkpoints (2D)"))
    picks = [page.get_by_role("combobox", name=f"Checkpoint {k} (three-checkpoint plane)").input_value() for k in "ABC"]
    assert name in picks, picks
    wait_while_working(page, page.locator(CHART))
    page.screenshot(path=str(SHOTS / "trajectory-opened-on-surface.png"), full_page=True)


# per map i of the linked view: its hovered-cell outline (SVG class ``hover_outline<i>_marks``, named
# by ``selections.linked``): how many cells are outlined, the first one's box relative to the map's
# cells (``hover_map<i>_marks``) in px, and whether the pointer (x, y) is inside it
_OUTLINES = """([chart, x, y]) => [0, 1, 2].map((i) => {
    const plot = chart.querySelector(`g.hover_map${i}_marks`).getBoundingClientRect();
    const paths = [...chart.querySelectorAll(`g.hover_outline${i}_marks path`)];
    const b = paths.length ? paths[0].getBoundingClientRect() : null;
    return {
        count: paths.length,
        box: b ? [b.left - plot.left, b.top - plot.top, b.width, b.height] : null,
        under_pointer: b !== null && b.left <= x && x <= b.right && b.top <= y && y <= b.bottom,
    };
})"""


def test_compare_hover_reads_a_b_and_difference_at_the_cell(app_url, page, workspace):
    open_finished(page, app_url, "compare")
    linked = page.locator(CHART).first
    x, y = mark_centre(page, linked, "g.hover_map0_marks path")  # a cell of map A
    page.mouse.move(x, y)
    tooltip = page.locator("#vg-tooltip-element")
    wait_while_working(page, tooltip)
    text = tooltip.inner_text()
    value = {
        k: float(re.search(rf"(?m)^{re.escape(k)}\s+({NUMBER})\s*$", text).group(1))
        for k in ("alpha", "beta", "A", "B", "B - A")
    }
    for problem, key in ((workspace.problem, "A"), (workspace.compare, "B")):
        basis = directions.random(problem, count=2, norm=COMPARE.norm, ignore=COMPARE.ignore, seed=COMPARE.seed)
        exact = value_at(problem, basis, value["alpha"], value["beta"])["train_loss"]
        assert value[key] == pytest.approx(exact, rel=1e-3), (key, text)
    assert value["B - A"] == pytest.approx(value["B"] - value["A"], abs=2e-3 * max(1.0, abs(value["B"])))
    # one shared hover: the same cell is outlined in all three maps, at the pointer in the one under it
    outlines = page.evaluate(_OUTLINES, [linked.element_handle(), x, y])
    assert [o["count"] for o in outlines] == [1, 1, 1], outlines
    assert outlines[0]["under_pointer"], outlines
    first = outlines[0]["box"]
    for other in outlines[1:]:  # the same place in each map's plot (the maps share their axes)
        assert other["box"] == pytest.approx(first, abs=1.0), outlines
    assert 5 < first[2] < 100 and first[2] == pytest.approx(first[3], rel=0.1), first  # one cell, not the map
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "compare-hover.png"), full_page=True)


def test_text_ranking_rows_pick_the_curves(app_url, page):
    open_finished(page, app_url, "text")
    table = page.get_by_test_id("stDataFrame").first
    table.scroll_into_view_if_needed()
    grid = table.locator('[data-testid="data-grid-canvas"]')
    wait_while_working(page, grid)
    box = grid.bounding_box()
    row_height = 35  # Streamlit's default row height, header included
    page.mouse.click(box["x"] + 16, box["y"] + row_height * 2 + row_height / 2)  # the second row's checkbox
    caption = page.get_by_text(re.compile(r"^The selected rows: #\d+\.$"))
    wait_while_working(page, caption)
    wait_for_app_run(page)
    chosen = caption.inner_text().removeprefix("The selected rows: ").rstrip(".")
    second_row = [c.strip() for c in grid.locator("tr").nth(2).locator("td").all_inner_texts()]
    assert chosen in second_row, (chosen, second_row)  # the table's "input" column of that row
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "text-row-selected.png"), full_page=True)
