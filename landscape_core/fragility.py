"""Which inputs sit in fragile regions of a text model's embedding space.

``fragility(problem, split="val")`` runs the average- and worst-case perturbation curves of
``embeddings`` over every input of a split and ranks the inputs by their *input-space
sharpness*: the rise of the loss under the worst perturbation of relative radius
``score_radius``,

    score_i = max_{||delta||_F <= r ||E_i||_F} L_i(E_i + delta) - L_i(E_i),

found by projected gradient ascent (a lower bound, tight for losses convex in the
embeddings). The result, a ``Fragility``, also holds the curves for plotting and is cached
by content. ``embedding_map`` projects sentence embeddings to 2-D (PCA, or UMAP).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch

from . import cache as cache_mod
from . import embeddings as emb
from . import input_hessian
from . import inputs as inp
from .identity import raw_bytes
from .provenance import digest
from .results import ResultIO, csv_table
from .threads import single_thread

ALGORITHM_VERSION = 2
DEFAULT_RADII = (0.0, 0.025, 0.05, 0.1, 0.2, 0.3)
SCORES = {
    "rise": "worst-case loss rise max L - L at score_radius (projected gradient ascent)",
    "keskar": "100 (max L - L) / (1 + L) at score_radius (epsilon-sharpness, Keskar et al. 2017)",
}
SINGLE_THREAD_MAX_PARAMS = 2_000_000  # CPU models up to this size run the per-input loops on one thread


@dataclasses.dataclass(frozen=True)
class Fragility(ResultIO):
    """Loss-vs-radius curves and a fragility ranking of the inputs of one split.

    ``radii``: float64 ``(R,)`` (relative: fraction of each input's embedding norm, or an
    absolute Frobenius norm, see ``settings["relative"]``). ``indices``: ``(n,)`` positions of
    the inputs in the split. ``labels``/``predictions``: ``(n,)`` int classes;
    ``confidence``: probability of the predicted class. ``base_loss``: ``(n,)`` loss at the
    unperturbed embeddings. ``average_loss``/``average_stderr``: ``(n, R)`` mean and standard
    error over random per-token-normalized directions. ``worst_loss``: ``(n, R)`` by projected
    gradient ascent. ``score``: ``(n,)`` worst-case rise at ``settings["score_radius"]``.
    ``ranking``: ``(n,)`` row numbers, most fragile first (ties by row). ``lengths``: real
    tokens per input. ``top_eigenvalue``/``eigen_residual``: ``(n,)`` input-Hessian top
    eigenvalue and its relative residual, NaN where not computed. ``error_radius``: ``(n,)``
    smallest radius of the grid whose worst-case perturbation makes the prediction wrong (0 for
    an input already misclassified, ``inf`` if no radius of the grid does).
    """

    radii: np.ndarray
    indices: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    confidence: np.ndarray
    lengths: np.ndarray
    base_loss: np.ndarray
    average_loss: np.ndarray
    average_stderr: np.ndarray
    worst_loss: np.ndarray
    score: np.ndarray
    ranking: np.ndarray
    top_eigenvalue: np.ndarray
    eigen_residual: np.ndarray
    error_radius: np.ndarray
    settings: dict

    @property
    def n(self) -> int:
        return int(self.indices.shape[0])

    def most_fragile(self, k: int = 10) -> np.ndarray:
        """Row numbers of the ``k`` most fragile inputs."""
        return self.ranking[:k]

    def to_csv(self, texts: Sequence[str] | None = None) -> str:
        """One row per input, most fragile first; ``texts`` (in split order) adds a text column."""
        radii = [f"{r:g}" for r in self.radii]
        head = ["rank", "index", "label", "prediction", "confidence", "tokens", "base_loss", "score", "error_radius"]
        head += ["top_eigenvalue"]
        head += [f"worst_loss@{r}" for r in radii] + [f"average_loss@{r}" for r in radii]
        head += [f"average_stderr@{r}" for r in radii]
        if texts is not None:
            head.append("text")
        rows = []
        for rank, row in enumerate(self.ranking):
            cells = [rank + 1, int(self.indices[row]), int(self.labels[row]), int(self.predictions[row])]
            cells += [float(self.confidence[row]), int(self.lengths[row]), float(self.base_loss[row])]
            cells += [float(self.score[row]), float(self.error_radius[row]), float(self.top_eigenvalue[row])]
            for field in (self.worst_loss, self.average_loss, self.average_stderr):
                cells += [float(v) for v in field[row]]
            if texts is not None:
                cells.append(str(texts[int(self.indices[row])]))
            rows.append(cells)
        return csv_table(head, rows)

    def curves(self, rows: Sequence[int]) -> list[dict]:
        """Tidy records ``{row, index, radius, case, loss, stderr}`` for plotting the given rows."""
        records = []
        for row in rows:
            for j, r in enumerate(self.radii):
                common = {"row": int(row), "index": int(self.indices[row]), "radius": float(r)}
                records.append({**common, "case": "worst", "loss": float(self.worst_loss[row, j]), "stderr": 0.0})
                records.append(
                    {
                        **common,
                        "case": "average",
                        "loss": float(self.average_loss[row, j]),
                        "stderr": float(self.average_stderr[row, j]),
                    }
                )
        return records


def _tensor_sha(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(raw_bytes(t))
    return h.hexdigest()


def fragility(
    problem,
    split: str = "val",
    radii: Sequence[float] = DEFAULT_RADII,
    score_radius: float = 0.05,
    score: str = "rise",
    samples: int = 16,
    steps: int = 20,
    seed: int = 0,
    relative: bool = True,
    hessian: bool = False,
    max_inputs: int | None = None,
    theta: torch.Tensor | None = None,
    embedding: str | None = None,
    use_cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> Fragility:
    """Perturbation curves and fragility ranking for the inputs of ``split``.

    ``radii``: perturbation radii (``score_radius`` is added if missing); ``score``: ``"rise"``,
    the worst-case loss rise ``max L - L`` at ``score_radius``, or ``"keskar"``, the same rise
    relative to the loss, ``100 (max L - L) / (1 + L)`` (Keskar et al. 2017's epsilon-sharpness
    in embedding space; it lets confidently right inputs that are fragile rank next to the
    misclassified ones, whose large loss gradient dominates the plain rise); ``samples``:
    random directions per input for the average case; ``steps``: ascent steps per radius;
    ``seed``: fixes every random draw (same seed, same ranking); ``hessian``: also the top
    eigenvalue of each input's embedding Hessian; ``max_inputs``: the first that many inputs
    of the split. Progress is reported as ``(done, total)`` over the work stages.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {list(SCORES)}; got {score!r}.")
    if split not in problem.splits:
        raise ValueError(f"split {split!r} is not available; this problem has {list(problem.splits)}.")
    r = np.unique(np.append(emb.check_radii(radii), float(score_radius)))
    if not np.isfinite(score_radius) or score_radius <= 0:
        raise ValueError(f"score_radius must be a positive number; got {score_radius!r}.")
    data = problem.splits[split]
    n = data.n if max_inputs is None else min(int(max_inputs), data.n)
    if n < 1:
        raise ValueError(f"max_inputs must be >= 1; got {max_inputs!r}.")
    X, y = data.head(n)
    access = emb.EmbeddingAccess(problem, theta, embedding)
    X = access.check_inputs(X)
    y_np = y.cpu().numpy().astype(np.int64)
    settings = {
        "kind": "fragility",
        "split": split,
        "inputs": n,
        "radii": [float(v) for v in r],
        "score_radius": float(score_radius),
        "relative": bool(relative),
        "samples": int(samples),
        "steps": int(steps),
        "seed": int(seed),
        "hessian": bool(hessian),
        "embedding": access.name,
        "pad_id": access.pad_id,
        "model_sha256": problem.model_hash(access.theta),
        "theta_sha256": digest(access.theta),
        "inputs_sha256": _tensor_sha(*(t for _, t in inp.leaves(X)), y),
        "problem": problem.describe(),
        "score": score,
        "score_meaning": SCORES[score],
    }
    key = cache_mod.make_key("fragility", ALGORITHM_VERSION, settings)
    if use_cache and (hit := cache_mod.fetch(key, Fragility.from_bytes)) is not None:
        if progress is not None:
            progress(1, 1)
        return hit

    stages = 3 if hessian else 2
    total = stages * n * r.size  # progress unit: one input at one radius, per stage

    def report(stage, scale):
        if progress is None:
            return None
        return lambda done, _total: progress(stage * n * r.size + done * scale, total)

    common = {"theta": access.theta, "embedding": embedding, "seed": seed, "relative": relative}
    small = problem.device.type == "cpu" and problem.space.size <= SINGLE_THREAD_MAX_PARAMS
    with single_thread(small):
        average, stderr = emb.average_case(
            problem, X, y, r, samples=samples, progress=report(0, r.size), cancel=cancel, **common
        )
        worst, deltas = emb.worst_case(
            problem, X, y, r, steps=steps, return_delta=True, progress=report(1, 1), cancel=cancel, **common
        )
        wrong = np.stack([emb.predictions(problem, X, access.theta, delta=d)[0] for d in deltas], 1) != y_np[:, None]
        with torch.no_grad():
            base = access.losses(X, y.to(problem.device), None).double().cpu().numpy()
        worst = np.maximum(worst, base[:, None])  # delta = 0 is in every ball
        if hessian:
            top, residual = input_hessian.input_hessian_top_eigenvalue(problem, X, y, seed=seed, theta=access.theta)
        else:
            top = residual = np.full(n, np.nan)
        pred, conf = emb.predictions(problem, X, access.theta)
    if progress is not None:
        progress(total, total)
    rise = worst[:, int(np.flatnonzero(r == float(score_radius))[0])] - base
    values = rise if score == "rise" else 100.0 * rise / (1.0 + base)
    ranking = np.lexsort((np.arange(n), -values))
    error_radius = np.where(wrong.any(1), r[np.argmax(wrong, 1)], np.inf)
    error_radius[pred != y_np] = 0.0  # misclassified as it stands
    result = Fragility(
        radii=r,
        indices=np.arange(n),
        labels=y_np,
        predictions=pred.astype(np.int64),
        confidence=conf,
        lengths=access.mask(X).sum((1, 2)).cpu().numpy().astype(np.int64),
        base_loss=base,
        average_loss=average,
        average_stderr=stderr,
        worst_loss=worst,
        score=values,
        ranking=ranking.astype(np.int64),
        top_eigenvalue=np.asarray(top, dtype=np.float64),
        eigen_residual=np.asarray(residual, dtype=np.float64),
        error_radius=error_radius,
        settings=settings,
    )
    if use_cache:
        cache_mod.put(key, result.to_bytes())
    return result


@dataclasses.dataclass(frozen=True)
class EmbeddingMap(ResultIO):
    """2-D map of sentence embeddings: ``coords`` float64 ``(n, 2)``; ``explained`` the
    fraction of variance per PCA axis (NaN for UMAP); ``settings`` method and seed."""

    coords: np.ndarray
    explained: np.ndarray
    settings: dict

    def to_csv(self) -> str:
        """One row per input: ``row,x,y``."""
        return csv_table(["row", "x", "y"], ((i, x, y) for i, (x, y) in enumerate(self.coords.tolist())))


def embedding_map(vectors: np.ndarray, method: str = "pca", seed: int = 0, neighbors: int = 15) -> EmbeddingMap:
    """Project ``vectors`` ``(n, D)`` to 2-D by ``"pca"`` (centred SVD; each axis signed so its
    largest loading is positive, hence deterministic) or ``"umap"`` (umap-learn, seeded)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] < 3:
        raise ValueError(f"vectors must have shape (n, D) with n >= 3; got {vectors.shape}.")
    if method == "pca":
        centred = vectors - vectors.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        vt = vt[:2] * np.sign(vt[:2, np.abs(vt[:2]).argmax(1)].diagonal())[:, None]
        coords = centred @ vt.T
        if coords.shape[1] < 2:
            coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
        total = float((s**2).sum())
        explained = (s[:2] ** 2) / total if total > 0 else np.zeros(2)
    elif method == "umap":
        import umap  # optional and slow to import (numba)

        reducer = umap.UMAP(n_components=2, n_neighbors=min(neighbors, vectors.shape[0] - 1), random_state=seed)
        coords = reducer.fit_transform(vectors).astype(np.float64)
        explained = np.full(2, np.nan)
    else:
        raise ValueError(f"method must be 'pca' or 'umap'; got {method!r}.")
    return EmbeddingMap(coords=coords, explained=np.asarray(explained), settings={"method": method, "seed": seed})
