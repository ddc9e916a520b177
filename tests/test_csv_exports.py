"""Every result's CSV reads back with ``csv`` and pandas to exactly the numbers of its NPZ.

The CSV is decoded into arrays by hand (``csv.DictReader`` + ``float``) and by
``pandas.read_csv``; both must equal, bit for bit (NaN where NaN), the arrays the same result
holds after an NPZ round trip. Cases: results computed by the engines on a small model (their
numbers are numpy scalars, which once came out as ``np.float64(-1.0)``) and hand-built
results with awkward values (negative zero, NaN, +/-inf, 1e-300, names with commas, quotes
and line breaks).
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, directions, hessian, interpolation, sharpness, surface, topology, trajectory
from landscape_core.density import Density
from landscape_core.fragility import EmbeddingMap, Fragility
from landscape_core.hessian import SliceCurvature, Spectrum
from landscape_core.interpolation import Path
from landscape_core.results import Surface, csv_cell, csv_table
from landscape_core.sharpness import Sharpness
from landscape_core.trace import TraceEstimate
from landscape_core.trajectory import Trajectory
from landscape_core.trajectory_plane import ProjectionGap, projection_gap

AWKWARD = np.array([-1.0, -0.0, 0.1, 1e-300, -2.5e17, np.nan, np.inf, -np.inf])


def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def frame_of(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text))


def same(got, want) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)  # NaN == NaN here, and exact otherwise
    np.testing.assert_array_equal(np.signbit(got[got == 0]), np.signbit(want[want == 0]))


def check_numbers_only(text: str, text_columns: set[str]) -> None:
    """No cell outside ``text_columns`` holds anything but a plain number (or is empty)."""
    for row in rows_of(text):
        for column, cell in row.items():
            if column in text_columns or cell == "":
                continue
            assert "np." not in cell and "(" not in cell, (column, cell)
            float(cell)


# -- decoders: CSV -> the arrays it claims to hold ---------------------------------------------
def check_surface(text: str, result: Surface) -> None:
    check_numbers_only(text, {"quantity"})
    rows, frame = rows_of(text), frame_of(text)
    for q, values in result.values.items():
        mine = [r for r in rows if r["quantity"] == q]
        theirs = frame[frame["quantity"] == q]
        if result.is_plane:
            shape = (len(result.alphas), len(result.betas))
            same(np.array([float(r["value"]) for r in mine]).reshape(shape), values)
            same(theirs["value"].to_numpy().reshape(shape), values)
            same([float(r["beta"]) for r in mine[: shape[1]]], result.betas)
            same(theirs["alpha"].to_numpy()[:: shape[1]], result.alphas)
        else:
            same([float(r["value"]) for r in mine], values)
            same(theirs["value"].to_numpy(), values)
            same([float(r["alpha"]) for r in mine], result.alphas)


def check_path(text: str, result: Path) -> None:
    check_numbers_only(text, {"quantity"})
    frame = frame_of(text)
    for q, values in result.values.items():
        same([float(r["value"]) for r in rows_of(text) if r["quantity"] == q], values)
        same(frame[frame["quantity"] == q]["value"].to_numpy(), values)
        same(frame[frame["quantity"] == q]["alpha"].to_numpy(), result.alphas)


def check_spectrum(text: str, result: Spectrum) -> None:
    check_numbers_only(text, {"end", "converged"})
    frame = frame_of(text)
    same([float(r["eigenvalue"]) for r in rows_of(text)], result.values)
    same(frame["eigenvalue"].to_numpy(), result.values)
    same(frame["residual"].to_numpy(), result.residuals)
    assert frame["converged"].tolist() == result.converged.tolist()
    assert frame["end"].tolist() == result.ends.tolist()


def check_quantity_value(text: str, expected: dict) -> None:
    check_numbers_only(text, {"quantity", "kind"})
    frame = frame_of(text)
    by_name = {r["quantity"]: float(r["value"]) for r in rows_of(text)}
    assert set(by_name) == set(expected)
    for name, want in expected.items():
        same(by_name[name], want)
        same(frame.set_index("quantity").loc[name, "value"], want)


def check_density(text: str, result: Density) -> None:
    check_numbers_only(text, {"kind"})
    frame = frame_of(text)
    same(frame[frame["kind"] == "density"]["x"].to_numpy(), result.grid)
    same(frame[frame["kind"] == "density"]["value"].to_numpy(), result.density)
    same([float(r["value"]) for r in rows_of(text) if r["kind"] == "node"], result.weights)
    same(frame[frame["kind"] == "node"]["x"].to_numpy(), result.nodes)


def check_trajectory(text: str, result: Trajectory) -> None:
    check_numbers_only(text, {"name"})
    frame = frame_of(text)
    assert [r["name"] for r in rows_of(text)] == [str(n) for n in result.names]
    for j in range(result.coords.shape[1]):
        same(frame[f"c{j + 1}"].to_numpy(), result.coords[:, j])
    if result.residual_norms is not None:
        same([float(r["residual_norm"]) for r in rows_of(text)], result.residual_norms)
    steps = [np.nan if s is None else s for s in result.steps]
    same(frame["step"].to_numpy(dtype=np.float64), steps)


def check_gap(text: str, result: ProjectionGap) -> None:
    check_numbers_only(text, {"name", "quantity"})
    frame = frame_of(text)
    for q in result.true_values:
        part = frame[frame["quantity"] == q]
        assert [str(n) for n in part["name"]] == [str(n) for n in result.names]
        same(part["true"].to_numpy(), result.true_values[q])
        same(part["projected"].to_numpy(), result.projected_values[q])
        same(part["gap"].to_numpy(), result.gap[q])
        same(part[["c1", "c2"]].to_numpy(), result.coords)
        same(part["residual_norm"].to_numpy(), result.residual_norms)


def check_fragility(text: str, result: Fragility, texts=None) -> None:
    check_numbers_only(text, {"text"})
    frame = frame_of(text)
    order = result.ranking
    same(frame["index"].to_numpy(), result.indices[order])
    same(frame["score"].to_numpy(), result.score[order])
    same(frame["error_radius"].to_numpy(), result.error_radius[order])
    same(frame["top_eigenvalue"].to_numpy(), result.top_eigenvalue[order])
    for j, r in enumerate(result.radii):
        same(frame[f"worst_loss@{r:g}"].to_numpy(), result.worst_loss[order, j])
        same(frame[f"average_stderr@{r:g}"].to_numpy(), result.average_stderr[order, j])
    if texts is not None:
        want = [texts[int(result.indices[i])] for i in order]
        assert [r["text"] for r in rows_of(text)] == want
        assert frame["text"].tolist() == want


def check_embedding_map(text: str, result: EmbeddingMap) -> None:
    check_numbers_only(text, set())
    frame = frame_of(text)
    same(frame[["x", "y"]].to_numpy(), result.coords)


def check_persistence(text: str, result) -> None:
    check_numbers_only(text, set())
    rows, frame = rows_of(text), frame_of(text)
    same(frame["basin"].to_numpy(), np.arange(len(result.pairs)))
    same([float(r["birth"]) for r in rows], result.births)
    same(frame["death"].to_numpy(), result.deaths)
    same(frame["persistence"].to_numpy(), result.persistence)
    same(frame["barrier_to_deepest"].to_numpy(), result.barriers)
    same(frame["merges_into"].to_numpy(), result.parents)
    same(frame[["min_row", "min_col"]].to_numpy(), result.minima)
    same(frame[["min_alpha", "min_beta"]].to_numpy(), result.coords(result.minima))
    same(frame[["saddle_row", "saddle_col"]].to_numpy(dtype=np.float64), result.saddles)
    same(frame[["saddle_alpha", "saddle_beta"]].to_numpy(), result.coords(result.saddles))


def check_csv_against_npz(result, text: str | None = None, **extra) -> None:
    """Decode ``text`` (default ``result.to_csv()``) and compare it with ``result``'s NPZ round trip."""
    again = type(result).from_bytes(result.to_bytes())
    text = result.to_csv(**extra) if text is None else text
    kind = type(result).__name__
    if kind == "Surface":
        check_surface(text, again)
    elif kind == "Path":
        check_path(text, again)
    elif kind == "Spectrum":
        check_spectrum(text, again)
    elif kind == "TraceEstimate":
        expected = {"estimate": again.estimate, "stderr": again.stderr, "exact_part": again.exact_part}
        expected |= {"hvp_count": again.hvp_count} | {f"sample_{i}": s for i, s in enumerate(again.samples)}
        check_quantity_value(text, expected)
    elif kind == "Sharpness":
        expected = {"value": again.value, "base_loss": again.base_loss, "perturbed_loss": again.perturbed_loss}
        if again.stderr is not None:
            expected["stderr"] = again.stderr
        if again.samples is not None:
            expected |= {f"sample_{i}": s for i, s in enumerate(again.samples)}
        check_quantity_value(text, expected)
        assert set(frame_of(text)["kind"]) == {again.kind}
    elif kind == "SliceCurvature":
        expected = {f"axis_{i}_curvature": c for i, c in enumerate(again.curvatures)}
        expected |= {n: getattr(again, n) for n in ("lambda_max", "lambda_min", "trace_per_param", "trace_stderr")}
        check_quantity_value(text, expected)
    elif kind == "Density":
        check_density(text, again)
    elif kind == "Trajectory":
        check_trajectory(text, again)
    elif kind == "ProjectionGap":
        check_gap(text, again)
    elif kind == "Fragility":
        check_fragility(text, again, extra.get("texts"))
    elif kind == "EmbeddingMap":
        check_embedding_map(text, again)
    elif kind == "Persistence":
        check_persistence(text, again)
    else:
        raise AssertionError(f"no CSV check for {kind}")


# -- computed results ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def problem():
    gen = torch.Generator().manual_seed(0)
    X, Xv = torch.randn(40, 3, generator=gen), torch.randn(20, 3, generator=gen)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3))
    torch.manual_seed(0)
    model.apply(lambda m: m.reset_parameters() if isinstance(m, nn.Linear) else None)
    y, yv = X[:, 0].gt(0).long() + X[:, 1].gt(0).long(), Xv[:, 0].gt(0).long()
    return Problem(model, F.cross_entropy, (X, y), (Xv, yv))


def checkpoints_of(problem, n=5):
    gen = torch.Generator().manual_seed(1)
    return [problem.theta0 + 0.1 * i * torch.randn(problem.space.size, generator=gen) for i in range(n)]


def computed(problem) -> list:
    d = directions.random(problem, count=2, seed=0)
    thetas = checkpoints_of(problem)
    traj = trajectory.pca(thetas, space=problem)
    spectrum = hessian.top_eigenvalues(problem, k=2, which="both", use_cache=False)
    return [
        surface.plane(problem, d[0], d[1], steps=5, use_cache=False),
        surface.line(problem, d[0], steps=7, use_cache=False),
        interpolation.linear(problem, thetas[0], thetas[-1], steps=6, use_cache=False),
        spectrum,
        hessian.trace(problem, budget=12, use_cache=False),
        hessian.density(problem, iters=8, use_cache=False),
        hessian.slice_curvature(problem, d, spectrum=spectrum, trace_budget=12),
        sharpness.epsilon(problem, eps=1e-3),
        sharpness.average(problem, sigma=1e-2, samples=4),
        traj,
        projection_gap(problem, traj, thetas),
        topology.persistence(surface.plane(problem, d[0], d[1], steps=5, use_cache=False)),
        # several basins, saddles and a region cut off by a NaN wall: every column has numbers
        topology.persistence(np.array([[0.0, 2.0, 1.0, np.nan, 3.0], [4.0, 5.0, 0.5, np.nan, 2.5]])),
    ]


def test_computed_results_write_plain_numbers(problem):
    results = computed(problem)
    assert {type(r).__name__ for r in results} >= {
        "Surface",
        "Path",
        "Spectrum",
        "TraceEstimate",
        "Density",
        "SliceCurvature",
        "Sharpness",
        "Trajectory",
        "ProjectionGap",
        "Persistence",
    }
    for result in results:
        check_csv_against_npz(result)


# -- hand-built results with awkward values ---------------------------------------------------
def awkward_results() -> list:
    values = AWKWARD
    n = len(values)
    plane = Surface(
        alphas=np.linspace(-1, 1, n),
        betas=np.array([-1.0, 0.0, 1.0 / 3.0]),
        values={"train_loss": np.outer(values, [1.0, -1.0, 3.0]), "val_accuracy": np.full((n, 3), 0.1)},
        settings={},
    )
    line = Surface(alphas=values[np.isfinite(values)], values={"train_loss@line1": values[:5]}, settings={})
    path = Path(
        alphas=np.linspace(-0.5, 1.5, n), values={"val_loss": values}, barrier={}, endpoint_values={}, settings={}
    )
    spectrum = Spectrum(
        values=values,
        vectors=torch.zeros(n, 2, dtype=torch.float64),
        residuals=np.abs(values),
        converged=np.array([True, False] * (n // 2)),
        ends=np.array(["largest"] * (n // 2) + ["smallest"] * (n // 2)),
        hvp_count=7,
        settings={},
    )
    trace_est = TraceEstimate(
        estimate=np.float64(-1.0), stderr=np.nan, exact_part=0.0, samples=values, hvp_count=3, settings={}
    )
    sharp = Sharpness(
        kind="average",
        value=np.float64(-0.0),
        base_loss=1e-300,
        perturbed_loss=np.inf,
        settings={},
        stderr=0.5,
        samples=values,
    )
    dens = Density(
        grid=values,
        density=values[::-1].copy(),
        nodes=values,
        weights=values,
        run=np.zeros(n, dtype=int),
        sigma=0.1,
        hvp_count=4,
        settings={},
    )
    slc = SliceCurvature(
        curvatures=values,
        lambda_max=np.nan,
        lambda_min=-np.inf,
        trace_per_param=1e-300,
        trace_stderr=0.0,
        hvp_count=2,
        settings={},
    )
    names = ['epoch, "1"', "two\nlines", "plain", "x"]
    traj = Trajectory(
        method="pca",
        coords=np.array([[-1.0, np.nan], [0.1, -0.0], [np.inf, 2.0], [1e-300, -1e17]]),
        names=names,
        steps=[None, 1, 2, 3],
        trustworthiness=1.0,
        settings={},
        residual_norms=np.array([0.0, 1.0, np.nan, 2.0]),
    )
    gap = ProjectionGap(
        names=names,
        coords=traj.coords,
        true_values={"train_loss": values[:4]},
        projected_values={"train_loss": values[4:]},
        gap={"train_loss": values[4:] - values[:4]},
        residual_norms=np.array([0.0, 1.0, 2.0, 3.0]),
        settings={},
    )
    m, radii = 4, np.array([0.0, 0.05])
    frag = Fragility(
        radii=radii,
        indices=np.array([3, 1, 0, 2]),
        labels=np.array([0, 1, 1, 0]),
        predictions=np.array([0, 0, 1, 0]),
        confidence=np.array([0.5, 0.9, 1.0, 0.75]),
        lengths=np.array([3, 4, 5, 6]),
        base_loss=values[:4],
        average_loss=np.stack([values[:4], values[4:]], axis=1),
        average_stderr=np.full((m, 2), np.nan),
        worst_loss=np.stack([values[4:], values[:4]], axis=1),
        score=values[4:],
        ranking=np.array([2, 0, 3, 1]),
        top_eigenvalue=np.full(m, np.nan),
        eigen_residual=np.full(m, np.nan),
        error_radius=np.array([0.0, np.inf, 0.05, np.inf]),
        settings={},
    )
    emap = EmbeddingMap(
        coords=np.stack([values, values[::-1]], axis=1), explained=np.array([np.nan, np.nan]), settings={}
    )
    return [plane, line, path, spectrum, trace_est, sharp, dens, slc, traj, gap, frag, emap]


@pytest.mark.parametrize("index", range(12))
def test_awkward_values_read_back_exactly(index):
    result = awkward_results()[index]
    check_csv_against_npz(result)
    assert "np.float64" not in result.to_csv()


def test_fragility_texts_with_commas_quotes_and_line_breaks():
    frag = awkward_results()[10]
    texts = ['good, "really"', "bad\nfilm", "'single'", "plain"]
    check_csv_against_npz(frag, texts=texts)


def test_cells_and_tables():
    assert [csv_cell(v) for v in (np.float64(-1.0), np.int64(3), np.nan, None, True, "a,b")] == [
        "-1.0",
        3,
        "nan",
        "",
        "True",
        "a,b",
    ]
    assert csv_table(["a", "b"], [(np.float32(0.5), 'x "y"')]) == 'a,b\n0.5,"x ""y"""\n'


# -- the CLI --------------------------------------------------------------------------------------
CLI_RUNS = [
    ("Surface", ["surface", "--steps", "5"]),
    ("Surface", ["surface", "--dims", "1", "--lines", "2", "--steps", "5"]),
    ("Path", ["interpolate", "--steps", "5"]),
    ("Spectrum", ["hessian", "--k", "2", "--which", "both"]),
    ("TraceEstimate", ["hessian", "--what", "trace", "--budget", "12"]),
    ("Density", ["hessian", "--what", "density", "--iters", "3"]),
    ("Sharpness", ["sharpness", "--kind", "epsilon"]),
    ("Sharpness", ["sharpness", "--kind", "average", "--samples", "4"]),
    ("Trajectory", ["trajectory"]),
]


@pytest.mark.parametrize("kind, argv", CLI_RUNS, ids=[" ".join(a[:3]) for _, a in CLI_RUNS])
def test_cli_csv_equals_its_npz(kind, argv, tmp_path, fresh_cache, capsys):
    from test_cli import SPEC

    from landscape_core import cli, results

    spec = tmp_path / "linreg_spec.py"
    spec.write_text(SPEC)
    for suffix in ("npz", "csv"):
        code = cli.main([*argv, "--spec", str(spec), "--quiet", "--out", str(tmp_path / f"result.{suffix}")])
        assert code == 0, capsys.readouterr().err
    modules = {"Path": interpolation, "Spectrum": hessian, "Sharpness": sharpness, "Trajectory": trajectory}
    classes = {"Surface": results.Surface, "TraceEstimate": TraceEstimate, "Density": Density}
    cls = classes.get(kind) or getattr(modules[kind], kind)
    check_csv_against_npz(cls.load(tmp_path / "result.npz"), (tmp_path / "result.csv").read_text())
