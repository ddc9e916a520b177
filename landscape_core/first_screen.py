"""What each dashboard page computes on load, with the defaults: its *first screen*.

``precompute(workspace)`` runs those computations through the same engines with the same
arguments as the pages (``defaults`` holds the settings; every split, no subset), so the
results land under the cache keys the pages look up and a prepared workspace opens instantly.
``landscape demo`` calls it for every built-in demo; ``tests/test_first_screen.py`` checks that
afterwards no page evaluates the model on load.

>>> from landscape_core import demos, first_screen          # doctest: +SKIP
>>> first_screen.precompute(demos.load("logistic-blobs"))   # doctest: +SKIP
{'surface': 1.2, 'interpolation': 0.4, 'sharpness': 3.1, 'trajectory': 2.0, 'compare': 0.0, 'text': 0.0}
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import directions, surface
from .defaults import COMPARE, INTERPOLATION, SURFACE, TEXT, TRAJECTORY, path_ends

Progress = Callable[[str, int, int], None]  # (what, done, total)


def _report(progress: Progress | None, what: str):
    return None if progress is None else (lambda done, total: progress(what, done, total))


def surface_page(workspace, progress: Progress | None = None) -> None:
    """The coarse and the full random plane of model A."""
    problem = workspace.problem
    d = directions.random(problem, count=2, norm=SURFACE.norm, ignore=SURFACE.ignore, seed=SURFACE.seed)
    for steps in dict.fromkeys((SURFACE.coarse_steps, SURFACE.steps)):
        surface.plane(
            problem,
            d[0],
            d[1],
            span=(-SURFACE.span, SURFACE.span),
            steps=steps,
            splits=list(problem.splits),
            progress=_report(progress, f"surface {steps}x{steps}"),
        )


def endpoint(workspace, name: str):
    """``(theta, buffers)`` of an end named as ``defaults.path_ends`` names it (``A``, ``B``, ``A:<checkpoint>``)."""
    if name == "A":
        return workspace.problem.theta0, workspace.problem.buffers
    if name == "B":
        return workspace.compare.theta0, workspace.compare.buffers
    checkpoint = workspace.checkpoint(name.split(":", 1)[1])
    return checkpoint.theta, checkpoint.buffers


def interpolation_page(workspace, progress: Progress | None = None) -> None:
    """The default path (``defaults.path_ends``) under the default BatchNorm option(s)."""
    from . import interpolation
    from .batchnorm import has_batchnorm

    start, end = path_ends(workspace)
    if start == end:
        return
    problem = workspace.problem
    (theta_a, buffers_a), (theta_b, buffers_b) = endpoint(workspace, start), endpoint(workspace, end)
    modes = [INTERPOLATION.bn]
    if INTERPOLATION.all_bn_modes and has_batchnorm(problem):
        modes += [m for m in ("recompute", "interpolate", "keep") if m != INTERPOLATION.bn]
    for mode in modes:
        interpolation.linear(
            problem,
            theta_a,
            theta_b,
            steps=INTERPOLATION.steps,
            span=INTERPOLATION.span,
            bn=mode,
            buffers_a=buffers_a,
            buffers_b=buffers_b,
            splits=list(problem.splits),
            progress=_report(progress, f"interpolation ({mode})"),
        )


def sharpness_page(workspace, progress: Progress | None = None) -> None:
    """Every part of the curvature report at the final model A."""
    from . import curvature_parts

    settings = curvature_parts.default_settings()
    refused = []
    for part in curvature_parts.compute_order(curvature_parts.PARTS):
        try:  # one part the problem cannot take (2k > P) leaves the others to compute, as on the page
            curvature_parts.compute(workspace.problem, part, settings, progress=_report(progress, part))
        except ValueError as exc:
            refused.append(f"{part}: {exc}")
    if refused:
        raise ValueError("; ".join(refused))


def trajectory_run(workspace):
    """``(model, problem, checkpoints)`` of the run the Trajectory page opens with, or ``None``."""
    if len(workspace.checkpoints) >= 3:
        return "A", workspace.problem, workspace.checkpoints
    if workspace.compare is not None and len(workspace.compare_checkpoints) >= 3:
        return "B", workspace.compare, workspace.compare_checkpoints
    return None


def umap_neighbors(checkpoints) -> int:
    """The default UMAP neighbourhood, capped below the number of checkpoints."""
    return min(TRAJECTORY.umap_neighbors, len(checkpoints) - 1)


def trajectory_page(workspace, progress: Progress | None = None) -> None:
    """PCA and UMAP views, the projection gap and the PCA plane of the first run with checkpoints."""
    from . import trajectory, trajectory_plane

    run = trajectory_run(workspace)
    if run is None:
        return
    _, problem, checkpoints = run
    splits = list(problem.splits)
    pca = trajectory.pca(checkpoints, reference=TRAJECTORY.reference, space=problem)  # the page's default variant
    if TRAJECTORY.umap:
        trajectory.umap(checkpoints, n_neighbors=umap_neighbors(checkpoints), seed=TRAJECTORY.seed)
    if TRAJECTORY.autoencoder:
        trajectory.autoencoder(checkpoints, dim=2, seed=TRAJECTORY.seed)
    trajectory_plane.projection_gap(problem, pca, checkpoints, splits=splits, progress=_report(progress, "gap"))
    trajectory_plane.pca_plane(
        problem,
        pca,
        steps=TRAJECTORY.plane_steps,
        margin=TRAJECTORY.margin,
        splits=splits,
        progress=_report(progress, "trajectory plane"),
    )


def compare_splits(problem_a, problem_b) -> list[str]:
    """The splits both models have (the Compare page evaluates only those)."""
    return [s for s in problem_a.splits if s in problem_b.splits] or ["train"]


def compare_page(workspace, progress: Progress | None = None) -> None:
    """Both models' planes and 1D lines on one seed, lambda_max and adaptive average sharpness."""
    from . import hessian, sharpness

    if workspace.compare is None:
        return
    splits = compare_splits(workspace.problem, workspace.compare)
    span = (-COMPARE.span, COMPARE.span)
    for label, problem in (("A", workspace.problem), ("B", workspace.compare)):
        d = directions.random(problem, count=2, norm=COMPARE.norm, ignore=COMPARE.ignore, seed=COMPARE.seed)
        surface.plane(
            problem, d[0], d[1], span=span, steps=COMPARE.steps, splits=splits, progress=_report(progress, label)
        )
        lines = directions.random(
            problem, count=COMPARE.lines, norm=COMPARE.norm, ignore=COMPARE.ignore, seed=COMPARE.seed + 1
        )
        for i in range(COMPARE.lines):
            surface.line(problem, lines[i], span=span, steps=COMPARE.line_steps, splits=splits)
        if COMPARE.hessian:
            hessian.top_eigenvalues(problem, k=1, which="largest", seed=COMPARE.seed)
        sharpness.average(
            problem,
            sigma=COMPARE.average_sigma,
            samples=COMPARE.average_samples,
            adaptive=True,
            seed=COMPARE.seed,
        )


def is_text_problem(problem) -> bool:
    """Whether ``problem`` looks up integer token ids ``(n, T)`` (a tensor or a tokenizer's dict) in an
    ``nn.Embedding`` (the Text page's models; a contrastive encoder's fixed pairing ``(n, K, 2, T)`` is not one)."""
    from .embeddings import embedding_layer
    from .token_inputs import is_token_inputs

    try:
        embedding_layer(problem.model)
    except ValueError:
        return False
    return is_token_inputs(problem.splits["train"].head(1)[0])


def text_settings(problem) -> dict:
    """The Text page's default ``fragility`` arguments for ``problem``."""
    splits = list(problem.splits)
    split = TEXT.split if TEXT.split in splits else splits[0]
    return {
        "split": split,
        "radii": TEXT.radii,
        "score_radius": TEXT.score_radius,
        "score": TEXT.score,
        "samples": TEXT.samples,
        "steps": TEXT.steps,
        "seed": TEXT.seed,
        "hessian": TEXT.hessian,
        "max_inputs": min(problem.splits[split].n, TEXT.max_inputs),
    }


def text_page(workspace, progress: Progress | None = None) -> None:
    """Fragility of the inputs with their embedding-gradient norms, the embedding-matrix line, and
    the contrastive encoders' embedding motion (a section of every Text page), for a text workspace."""
    from . import embedding_matrix, fragility, gradient_norm
    from .embeddings import EmbeddingAccess

    if not is_text_problem(workspace.problem):
        return
    problems = [workspace.problem]
    if workspace.compare is not None and is_text_problem(workspace.compare):
        problems.append(workspace.compare)
    kwargs = text_settings(workspace.problem)
    for problem in problems:
        fragility.fragility(problem, progress=_report(progress, "fragility"), **kwargs)
        X, y = problem.splits[kwargs["split"]].head(kwargs["max_inputs"])
        gradient_norm.embedding_gradient_norms(problem, X, y)
    contrastive_section(progress)
    for problem in problems:
        try:
            problem.space.mask(include=EmbeddingAccess(problem).weight_name)
        except ValueError:  # a frozen embedding matrix has no weight-space line
            continue
        embedding_matrix.embedding_surface(problem, span=TEXT.line_span, steps=TEXT.line_steps, seed=TEXT.seed)


def contrastive_section(progress: Progress | None = None) -> None:
    """The Text page's contrastive section (``contrastive_demo.embedding_motion`` at the page's seed),
    where the contrastive demo is available."""
    from . import contrastive_demo, demos

    if demos.CONTRASTIVE_DEMO not in demos.list_demos():
        return
    workspace = demos.load(demos.CONTRASTIVE_DEMO)
    contrastive_demo.embedding_motion(workspace, TEXT.seed, progress=_report(progress, "contrastive motion"))


PAGES: dict[str, Callable] = {
    "surface": surface_page,
    "interpolation": interpolation_page,
    "sharpness": sharpness_page,
    "trajectory": trajectory_page,
    "compare": compare_page,
    "text": text_page,
}


def precompute(workspace, pages=None, progress: Progress | None = None) -> dict[str, float | str]:
    """Compute the first screen of ``pages`` (default: every page) for ``workspace``.

    Returns seconds per page, or for a page whose defaults this workspace refuses (as the page
    itself would show, e.g. more eigenvalues than parameters) the reason, in a sentence.
    """
    unknown = [p for p in pages or () if p not in PAGES]
    if unknown:
        raise ValueError(f"pages must be among {list(PAGES)}; got {unknown}.")
    seconds: dict[str, float | str] = {}
    for name in pages or PAGES:
        start = time.monotonic()
        try:
            PAGES[name](workspace, progress)
        except ValueError as exc:
            seconds[name] = f"not precomputed: {exc}"
        else:
            seconds[name] = round(time.monotonic() - start, 2)
    return seconds
