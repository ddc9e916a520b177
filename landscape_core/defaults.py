"""The default settings of every view: one table that the dashboard's pages and the ``landscape`` CLI read.

A page's *first screen* is what it computes on load before anyone touches a widget: these
settings on the workspace's full data (every split, no subset, the CPU). ``landscape demo``
precomputes exactly that (``landscape_core.first_screen``), so opening any page of a prepared
demo is served from the cache. Change a default here and both follow.

>>> from landscape_core.defaults import SURFACE, HESSIAN
>>> SURFACE.steps, HESSIAN.k, HESSIAN.which
(41, 3, 'both')
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SurfaceDefaults:
    """Surface page and ``landscape surface``: a filter-normalized random plane, drawn coarse first."""

    kind: str = "random"
    norm: str = "filter"
    ignore: tuple[str, ...] = ("bias", "norm")
    seed: int = 0
    span: float = 1.0  # alpha and beta from -span to +span
    steps: int = 41  # points per axis of the plane
    coarse_steps: int = 11  # the quick first pass shown while the full plane computes
    lines: int = 5  # random 1D lines in the "1D lines" view
    min_line_steps: int = 21  # a 1D line has at least this many points


@dataclass(frozen=True)
class InterpolationDefaults:
    """Interpolation page and ``landscape interpolate``: A to B (see ``path_ends``), 25 points."""

    steps: int = 25
    span: tuple[float, float] = (0.0, 1.0)
    bn: str = "recompute"
    all_bn_modes: bool = True  # models with BatchNorm: also draw the other two options


@dataclass(frozen=True)
class HessianDefaults:
    """Sharpness & Hessian page and ``landscape hessian``: eigenvalues, trace and density."""

    k: int = 3  # eigenvalues per end
    which: str = "both"  # the most negative ones tell a saddle from a minimum
    tol: float = 1e-4  # relative residual
    max_iter: int = 400  # Hessian-vector products for the eigenvalues
    trace_budget: int = 90  # Hessian-vector products for Hutch++
    density_iters: int = 60  # Lanczos steps per density run
    density_runs: int = 1
    density_sigma: float | None = None  # None: 1% of the spectrum's range
    seed: int = 0


@dataclass(frozen=True)
class SharpnessDefaults:
    """Sharpness & Hessian page and ``landscape sharpness``: epsilon, adaptive and average sharpness."""

    eps: float = 1e-3  # Keskar box, relative
    rho: float = 0.05  # adaptive radius
    p: float = 2  # adaptive norm
    sigma: float = 1e-2  # average-case Gaussian noise
    samples: int = 16
    adaptive_noise: bool = False  # average case: scale the noise by |w|
    seed: int = 0


@dataclass(frozen=True)
class TrajectoryDefaults:
    """Trajectory page and ``landscape trajectory``: PCA and UMAP views, the PCA plane under the path."""

    reference: str = "final"
    umap: bool = True
    umap_neighbors: int = 5  # at most (checkpoints - 1)
    autoencoder: bool = False
    seed: int = 0
    plane_steps: int = 21
    margin: float = 0.2


@dataclass(frozen=True)
class CompareDefaults:
    """Compare page: both models' planes and lines on one seed, lambda_max and average sharpness."""

    norm: str = "filter"
    ignore: tuple[str, ...] = ("bias", "norm")
    seed: int = 0  # the 1D lines use seed + 1
    span: float = 1.0
    steps: int = 21
    lines: int = 4
    line_steps: int = 21
    hessian: bool = True  # lambda_max of both models
    average_sigma: float = 0.05  # adaptive average sharpness: noise 5% of each |weight|
    average_samples: int = 32


@dataclass(frozen=True)
class TextDefaults:
    """Text embeddings page: fragility of the first inputs of a split, the embedding-matrix line, and the
    contrastive encoders' embedding motion."""

    split: str = "val"
    max_inputs: int = 200
    radii: tuple[float, ...] = (0.0, 0.025, 0.05, 0.1, 0.2, 0.3)
    score_radius: float = 0.05
    score: str = "rise"
    samples: int = 8
    steps: int = 10  # ascent steps per radius
    seed: int = 0
    map: str = "pca"
    hessian: bool = False
    line_span: tuple[float, float] = (-1.0, 1.0)
    line_steps: int = 31
    # the contrastive encoders' section: movement of the first val sentences' embeddings
    motion_inputs: int = 150
    motion_radius: float = 0.05  # fraction of each input's embedding norm
    motion_samples: int = 8


SURFACE = SurfaceDefaults()
INTERPOLATION = InterpolationDefaults()
HESSIAN = HessianDefaults()
SHARPNESS = SharpnessDefaults()
TRAJECTORY = TrajectoryDefaults()
COMPARE = CompareDefaults()
TEXT = TextDefaults()


def same_space(p, q) -> bool:
    """True when two problems have the same architecture (one straight path can join them)."""
    return p.space.signature() == q.space.signature() and sorted(p.buffers) == sorted(q.buffers)


def path_ends(workspace) -> tuple[str, str]:
    """The default ends of the interpolation path, as ``landscape interpolate --from/--to`` names them.

    ``("A", "B")`` (the two final models) when B shares A's architecture, else the first
    checkpoint of A to the final model A (``("A:<name>", "A")``), else ``("A", "A")`` (nothing
    to interpolate).
    """
    if workspace.compare is not None and same_space(workspace.problem, workspace.compare):
        return "A", "B"
    if workspace.checkpoints:
        return f"A:{workspace.checkpoints[0].name}", "A"
    return "A", "A"
