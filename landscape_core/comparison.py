"""Everything the Compare page shows for two models, computed in one call (for the offline report).

``compare(problem_a, problem_b, labels, settings)`` runs the Compare page's engines with the
page's arguments (so every piece is served from the same disk cache the page fills): both
random planes on one seed, the random 1D lines, lambda_max, the adaptive average sharpness,
plus the top of each Hessian spectrum and the linear path from A to B with its barrier
(when the two share one architecture). It returns a ``Comparison``: the results, the metric
dicts that ``verdict.metric_table`` and ``verdict.verdict`` read, and the settings.

>>> from landscape_core import comparison, demos                     # doctest: +SKIP
>>> ws = demos.load("digits-mlp")                                    # doctest: +SKIP
>>> c = comparison.compare(ws.problem, ws.compare, ws.labels)        # doctest: +SKIP
>>> c.verdict                                                        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from . import directions, surface, verdict
from .defaults import COMPARE, INTERPOLATION, same_space
from .first_screen import compare_splits
from .results import Surface

Progress = Callable[[str, int, int], None]  # (what, done, total)
NORMS = ("filter", "layer")
STEPS = (11, 21, 31, 41, 51)  # the page's choices of points per axis


@dataclass(frozen=True)
class CompareSettings:
    """The Compare page's form (defaults: ``defaults.COMPARE``).

    ``splits``: the data splits evaluated (``None``: every split both models have).
    ``split``/``quantity``: the maps show ``f"{split}_{quantity}"`` (``split=None``: the first split
    both models have). ``span``: alpha and beta from -span to +span. ``steps``: points per axis of a
    plane. ``lines``: random 1D lines per model (seed + 1). ``hessian``: lambda_max and the top
    ``spectrum_k`` eigenvalues of each model. ``log``: logarithmic colour scale of the maps.
    """

    splits: tuple[str, ...] | None = None
    split: str | None = None
    quantity: str = "loss"
    norm: str = COMPARE.norm
    seed: int = COMPARE.seed
    span: float = COMPARE.span
    steps: int = COMPARE.steps
    lines: int = COMPARE.lines
    hessian: bool = COMPARE.hessian
    log: bool = False
    spectrum_k: int = 5
    ignore: tuple[str, ...] = field(default=tuple(COMPARE.ignore))

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {list(NORMS)}; got {self.norm!r}.")
        if not (isinstance(self.span, (int, float)) and np.isfinite(self.span) and 0 < self.span <= 10):
            raise ValueError(f"span must be a number in (0, 10]; got {self.span!r}.")
        if self.steps not in STEPS:
            raise ValueError(f"steps must be one of {list(STEPS)}; got {self.steps!r}.")
        if not (isinstance(self.lines, int) and 2 <= self.lines <= 10):
            raise ValueError(f"lines must be an integer from 2 to 10; got {self.lines!r}.")
        if not (isinstance(self.spectrum_k, int) and 1 <= self.spectrum_k <= 20):
            raise ValueError(f"spectrum_k must be an integer from 1 to 20; got {self.spectrum_k!r}.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed <= 10_000:
            raise ValueError(f"seed must be an integer from 0 to 10000; got {self.seed!r}.")

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Comparison:
    """Model A and model B on the Compare page's slices.

    ``planes``/``lines``: ``(A, B)`` ``Surface``s (the lines as one Surface of ``"<q>@line<i>"`` curves).
    ``spectra``: ``(A, B)`` ``Spectrum``s of the top ``spectrum_k`` eigenvalues, or ``None``.
    ``path``: the ``interpolation.Path`` from A (alpha 0) to B (alpha 1), or ``None`` with ``path_note``
    saying why. ``metrics``: ``(A, B)`` dicts for ``verdict``. ``notes``: sentences on how the metrics were made.
    """

    labels: tuple[str, str]
    splits: list[str]
    quantity: str
    planes: tuple
    lines: tuple
    spectra: tuple | None
    averages: tuple | None
    path: object | None
    path_note: str
    metrics: tuple[dict, dict]
    notes: list[str]
    settings: dict

    @property
    def verdict(self) -> str:
        return verdict.verdict(*self.metrics, self.labels)

    @property
    def table(self) -> list[dict]:
        return verdict.metric_table(*self.metrics)


def _report(progress: Progress | None, what: str):
    return None if progress is None else (lambda done, total: progress(what, done, total))


def lines_of(problem, settings: CompareSettings, splits, progress=None, cancel=None) -> Surface:
    """The ``settings.lines`` random 1D lines of the page (seed + 1), as one ``Surface``."""
    d = directions.random(
        problem, count=settings.lines, norm=settings.norm, ignore=settings.ignore, seed=settings.seed + 1
    )
    out = []
    for i in range(settings.lines):
        report = (
            None if progress is None else (lambda done, total, i=i: progress(i * total + done, settings.lines * total))
        )
        out.append(
            surface.line(
                problem,
                d[i],
                span=(-settings.span, settings.span),
                steps=COMPARE.line_steps,
                splits=splits,
                progress=report,
                cancel=cancel,
            )
        )
    values = {f"{k}@line{i + 1}": line.values[k] for i, line in enumerate(out) for k in line.values}
    return Surface(alphas=out[0].alphas, values=values, settings={"kind": "lines", "lines": [s.settings for s in out]})


def plane_of(problem, settings: CompareSettings, splits, progress=None, cancel=None) -> Surface:
    """The page's random plane of ``problem`` (seed ``settings.seed``, each model normalized to its own weights)."""
    d = directions.random(problem, count=2, norm=settings.norm, ignore=settings.ignore, seed=settings.seed)
    span = (-settings.span, settings.span)
    return surface.plane(
        problem, d[0], d[1], span=span, steps=settings.steps, splits=splits, progress=progress, cancel=cancel
    )


def metrics(problem, splits, lines, spectrum, average) -> dict:
    """``{name: float}`` of one model: base values, slice rise per split, lambda_max, adaptive average sharpness."""
    out = {k: v for k, v in problem.base.items() if k.split("_", 1)[0] in splits}
    if lines is not None:
        for s in splits:
            curves = np.stack([v for k, v in lines.values.items() if k.startswith(f"{s}_loss@")])
            out[f"{s}_slice_rise" if s != "train" else "slice_rise"] = verdict.slice_rise(lines.alphas, curves)
    if spectrum is not None:
        out["lambda_max"] = spectrum.lambda_max
    if average is not None:
        out["adaptive_average_sharpness"] = average.value
    return out


def compare(
    problem_a,
    problem_b,
    labels: tuple[str, str] = ("A", "B"),
    settings: CompareSettings | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Both models on the Compare page's slices with ``settings`` (see the module docstring).

    ``progress(what, done, total)`` reports each piece. Raises ``ValueError`` for a split or
    quantity the two models do not both have.
    """
    from . import hessian, interpolation, sharpness
    from .perturbation import DivergedPerturbation

    settings = settings or CompareSettings()
    both = compare_splits(problem_a, problem_b)
    splits = both if settings.splits is None else [s for s in both if s in settings.splits]
    if not splits:
        raise ValueError(f"splits must include one that both models have, {both}; got {list(settings.splits)}.")
    split = settings.split or splits[0]
    if split not in splits:
        raise ValueError(f"split must be one both models have, {splits}; got {split!r}.")
    quantities = ["loss", *problem_a.metrics]
    if settings.quantity not in quantities:
        raise ValueError(f"quantity must be one of {quantities}; got {settings.quantity!r}.")
    planes, lines, spectra, tops, averages, diverged = [], [], [], [], [], []
    for which, problem in zip("AB", (problem_a, problem_b)):
        planes.append(plane_of(problem, settings, splits, _report(progress, f"{which}: plane")))
        lines.append(lines_of(problem, settings, splits, _report(progress, f"{which}: 1D lines")))
        if settings.hessian:
            top = hessian.top_eigenvalues(problem, k=1, which="largest", seed=settings.seed)  # the page's lambda_max
            tops.append(top)
            k = min(settings.spectrum_k, problem.space.size)
            spectra.append(
                hessian.top_eigenvalues(
                    problem, k=k, which="largest", seed=settings.seed, progress=_report(progress, f"{which}: spectrum")
                )
            )
        try:
            averages.append(
                sharpness.average(
                    problem,
                    sigma=COMPARE.average_sigma,
                    samples=COMPARE.average_samples,
                    adaptive=True,
                    seed=settings.seed,
                    progress=_report(progress, f"{which}: average sharpness"),
                )
            )
        except DivergedPerturbation as exc:  # the page shows this piece failed and the rest; so does the report
            averages.append(None)
            diverged.append(f"Adaptive average sharpness of {labels['AB'.index(which)]}: not available ({exc}).")
    path, path_note = None, ""
    if same_space(problem_a, problem_b) and bool((problem_a.theta0 == problem_b.theta0).all()):
        path_note = "No barrier path: A and B have identical weights."
    elif same_space(problem_a, problem_b):
        path = interpolation.linear(
            problem_a,
            problem_a.theta0,
            problem_b.theta0,
            steps=INTERPOLATION.steps,
            span=INTERPOLATION.span,
            bn=INTERPOLATION.bn,
            buffers_a=problem_a.buffers,
            buffers_b=problem_b.buffers,
            splits=splits,
            progress=_report(progress, "path A to B"),
        )
    else:
        path_note = "No barrier path: the two models have different architectures, so no straight line joins them."
    metric_dicts = tuple(
        metrics(problem, splits, lines[i], tops[i] if tops else None, averages[i])
        for i, problem in enumerate((problem_a, problem_b))
    )
    notes = [
        f"Slice rise: mean increase of the train loss from the base point to alpha = +/-{settings.span:g}, averaged "
        f"over {settings.lines} random {settings.norm}-normalized lines (seed {settings.seed + 1})."
    ]
    for label, top in zip(labels, tops):
        state = "converged" if top.all_converged else "NOT converged"
        notes.append(f"lambda_max of {label}: residual {top.residuals[0]:.2g} ({state}).")
    notes += diverged
    for label, average in zip(labels, averages):
        if average is None:
            continue
        notes.append(
            f"Adaptive average sharpness of {label}: {average.value:.3g} +/- {average.stderr:.2g} (standard error; "
            f"{COMPARE.average_samples} samples of Gaussian noise with sigma = {COMPARE.average_sigma:g} x |theta| "
            "per weight)."
        )
    if not same_space(problem_a, problem_b):
        notes.append(
            "The two models have different architectures: compare the size-free metrics (ratios), not raw maps."
        )
    return Comparison(
        labels=tuple(labels),
        splits=splits,
        quantity=f"{split}_{settings.quantity}",
        planes=tuple(planes),
        lines=tuple(lines),
        spectra=tuple(spectra) if spectra else None,
        averages=tuple(averages),
        path=path,
        path_note=path_note,
        metrics=metric_dicts,
        notes=notes,
        settings={
            **settings.as_dict(),
            "splits": splits,
            "split": split,
            "line_steps": COMPARE.line_steps,
            "average_sigma": COMPARE.average_sigma,
            "average_samples": COMPARE.average_samples,
            "path": {"steps": INTERPOLATION.steps, "span": list(INTERPOLATION.span), "bn": INTERPOLATION.bn}
            if path is not None
            else None,
            "models": {
                labels[0]: {"model_sha256": problem_a.model_hash(), "parameters": problem_a.space.size},
                labels[1]: {"model_sha256": problem_b.model_hash(), "parameters": problem_b.space.size},
            },
        },
    )
