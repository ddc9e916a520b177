"""Chart specs and image exports: equal-scale planes, every part of the view in the file, one 3D scale.

Planes: alpha and beta are coordinates of one parameter space, so the plot area has the same
units per pixel on both axes (a square plane is square, whatever the page width). Exports:
rendered with vl-convert at the chosen width and scale; the SVG holds every title, axis title
and legend title in full (no ellipsis), and the PNG has the pixel size those imply.
"""

from __future__ import annotations

import json
import re
import struct

import altair as alt
import numpy as np
import pytest

from dashboard_ui import charts
from landscape_core.results import Surface

DIRS = [{"kind": "random", "norm": "filter"}] * 2


def plane(alphas, betas, name="train_loss") -> Surface:
    a, b = np.meshgrid(alphas, betas, indexing="ij")
    return Surface(alphas=alphas, betas=betas, values={name: a**2 + 3 * b**2 + 0.1}, settings={"directions": DIRS})


def plot_size(chart) -> tuple[float, float]:
    spec = chart.to_dict()
    return spec["width"], spec["height"]


def domains(chart) -> tuple[list, list]:
    base = chart.to_dict()["layer"][0]["encoding"]
    return base["x"]["scale"]["domain"], base["y"]["scale"]["domain"]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def svg_texts(svg: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", t).replace("&amp;", "&") for t in re.findall(r"<text[^>]*>(.*?)</text>", svg)]


# -- equal scale -------------------------------------------------------------------------------
@pytest.mark.parametrize("side", [charts.PLANE_SIDE, charts.PLANE_SIDE_PAIR, 555])
def test_a_square_plane_is_square_at_any_size(side):
    grid = np.linspace(-1, 1, 21)
    chart = charts.heatmap(plane(grid, grid), "train_loss", side=side)
    assert plot_size(chart) == (side, side)
    assert chart.to_dict()["autosize"]["type"] == "pad"  # Streamlit's default would shrink the plot to fit


@pytest.mark.parametrize("alphas, betas", [((-3.0, 5.0), (-1.0, 1.0)), ((-0.2, 0.2), (-1.5, 0.5)), ((0, 1), (0, 1))])
def test_equal_units_per_pixel_on_both_axes(alphas, betas):
    surface = plane(np.linspace(*alphas, 17), np.linspace(*betas, 9))
    chart = charts.heatmap(surface, "train_loss", points={"start": (alphas[0], betas[0])}, path=True)
    width, height = plot_size(chart)
    (x0, x1), (y0, y1) = domains(chart)
    assert max(width, height) == charts.PLANE_SIDE
    assert width / (x1 - x0) == pytest.approx(height / (y1 - y0), rel=0.01)  # px per unit, within rounding


def test_the_trajectory_pca_plane_is_drawn_equal_scale():
    """``pca_plane`` spans the same length on both axes, so its picture is square."""
    import torch
    import torch.nn.functional as F

    from landscape_core import Problem, trajectory, trajectory_plane

    gen = torch.Generator().manual_seed(0)
    X = torch.randn(30, 3, generator=gen)
    problem = Problem(torch.nn.Linear(3, 2), F.cross_entropy, (X, X[:, 0].gt(0).long()))
    path = [problem.theta0 + torch.tensor([3.0 * i, 0.3 * i**0.5, 0, 0, 0, 0, 0, 0]) for i in range(6)]
    traj = trajectory.pca(path, space=problem)
    surface = trajectory_plane.pca_plane(problem, traj, steps=7, use_cache=False)
    width, height = plot_size(charts.heatmap(surface, "train_loss"))
    (x0, x1), (y0, y1) = domains(charts.heatmap(surface, "train_loss"))
    assert width == height and (x1 - x0) == pytest.approx(y1 - y0)


def test_labels_of_close_points_do_not_overlap_and_face_the_centre():
    grid = np.linspace(-1, 1, 11)
    points = {"epoch 000 with a long name": (0.5, 0.1), "epoch 010": (0.55, 0.12), "epoch 020": (-0.9, -0.9)}
    chart = charts.heatmap(plane(grid, grid), "train_loss", points=points)
    texts = [layer for layer in chart.to_dict()["layer"] if layer.get("mark", {}).get("type") == "text"]
    marks = [(t["mark"]["dx"], t["mark"]["dy"], t["mark"]["align"]) for t in texts]
    assert marks[0][2] == "right" and marks[2][2] == "left"  # right of centre: label to the left, and vice versa
    assert marks[1][1] != marks[0][1]  # the close pair is split over two lines
    assert marks[2][1] < 0  # a point low in the plot gets its label above it


# -- exports -----------------------------------------------------------------------------------
def test_png_and_svg_at_the_chosen_size_hold_every_title():
    grid = np.linspace(-1, 1, 21)
    surface = plane(grid, grid)
    chart = charts.heatmap(surface, "train_loss", title="train loss on the plane theta0 + alpha d1 + beta d2, seed 0")
    for width, scale in ((480, 1), (960, 2)):
        w, h = png_size(charts.chart_image(chart, "png", width=width, scale=scale))
        assert w >= width * scale and h >= width * scale  # the plot area alone is width x width
        assert w < (width + 260) * scale and h < (width + 160) * scale  # axes, legend and title only around it
    texts = svg_texts(charts.chart_image(chart, "svg", width=480))
    for wanted in (
        "train loss on the plane theta0 + alpha d1 + beta d2, seed 0",
        "alpha (along random direction 1, filter-normalized)",
        "beta (along random direction 2, filter-normalized)",
        "train loss",
    ):
        assert wanted in texts, (wanted, texts)
    assert not any("…" in t for t in texts)  # nothing shortened


def test_a_wide_chart_keeps_its_axis_titles_and_legend_whole():
    import pandas as pd

    data = pd.DataFrame(
        {"alpha": np.tile(np.linspace(0, 1, 11), 2), "loss": np.arange(22.0), "split": ["train"] * 11 + ["val"] * 11}
    )
    chart = charts.line_chart(
        data, "alpha", "loss", color="split", title="a long title " * 6, x_title="alpha (0 = A, 1 = B; theta = ...)"
    )
    w, _ = png_size(charts.chart_image(chart, "png", width=960, scale=1))
    assert w >= 960
    texts = svg_texts(charts.chart_image(chart, "svg", width=960))
    assert ("a long title " * 6).strip() in [t.strip() for t in texts] and "alpha (0 = A, 1 = B; theta = ...)" in texts
    assert {"train", "val", "split"} <= set(texts) and not any("…" in t for t in texts)


def test_compare_exports_all_three_maps_with_their_own_scales():
    grid = np.linspace(-1, 1, 11)
    a, b = plane(grid, grid), plane(grid, grid)
    diff = Surface(alphas=grid, betas=grid, values={"difference_train_loss": b.values["train_loss"] - 1}, settings={})
    three = charts.row_of(
        charts.heatmap(a, "train_loss", title="small batch (A): train loss", side=charts.PLANE_SIDE_PAIR),
        charts.heatmap(b, "train_loss", title="large batch (B): train loss", side=charts.PLANE_SIDE_PAIR),
        charts.heatmap(diff, "difference_train_loss", title="Difference B - A", scheme="redblue-r"),
        independent_colors=True,
    )
    texts = svg_texts(charts.chart_image(three, "svg", width=400))
    assert {"small batch (A): train loss", "large batch (B): train loss", "Difference B - A"} <= set(texts)
    w, h = png_size(charts.chart_image(three, "png", width=400, scale=1))
    assert w >= 3 * 400 and h >= 400  # three 400 px plot areas side by side, each still square
    spec = charts.export_spec(three, 400)
    assert [(p["width"], p["height"]) for p in spec["hconcat"]] == [(400, 400)] * 3


def test_export_spec_keeps_the_page_chart_untouched():
    grid = np.linspace(-1, 1, 5)
    chart = charts.heatmap(plane(grid, grid), "train_loss", side=300)
    before = json.dumps(chart.to_dict(), sort_keys=True)
    charts.export_spec(chart, 900)
    assert json.dumps(chart.to_dict(), sort_keys=True) == before


# -- 3D ----------------------------------------------------------------------------------------
def test_3d_views_share_one_colour_scale_and_height_axis_and_leave_room_for_titles():
    grid = np.linspace(-1, 1, 9)
    train = plane(grid, grid, "train_loss")
    val = Surface(alphas=grid, betas=grid, values={"val_loss": 2 * train.values["train_loss"]}, settings={})
    domain = (0.1, float(val.values["val_loss"].max()))  # as value_domain gives for both splits
    figures = [
        charts.surface_3d(train, "train_loss", shared_domain=domain),
        charts.surface_3d(val, "val_loss", shared_domain=domain),
    ]
    scales = {(f.data[0].cmin, f.data[0].cmax) for f in figures}
    assert scales == {domain}
    assert {tuple(f.layout.scene.zaxis.range) for f in figures} == {tuple(figures[0].layout.scene.zaxis.range)}
    for f in figures:
        margin = f.layout.margin
        assert min(margin.l, margin.r, margin.b) > 0 and margin.t >= 40  # the z title and ticks are not at the edge
        assert f.layout.scene.domain.x[1] < 1  # the colour bar has its own room
        assert f.layout.scene.zaxis.title.text
    logged = charts.surface_3d(val, "val_loss", log=True, shared_domain=domain)
    assert (logged.data[0].cmin, logged.data[0].cmax) == pytest.approx(np.log10(domain))


def test_a_heatmap_with_extra_labels_exports_at_the_chosen_size():
    """The Trajectory page layers labels over the heatmap: the size inside the layer is scaled too."""
    import pandas as pd

    grid = np.linspace(-1, 1, 9)
    heat = charts.heatmap(plane(grid, grid), "train_loss", side=300)
    labels = (
        alt.Chart(pd.DataFrame({"a0": [0.0], "b0": [0.0], "t": ["start"]}))
        .mark_text()
        .encode(x="a0:Q", y="b0:Q", text="t:N")
    )
    w, h = png_size(charts.chart_image(heat + labels, "png", width=500, scale=1))
    assert w >= 500 and h >= 500
