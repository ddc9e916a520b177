"""A non-linear 2-D view of a training trajectory: a small autoencoder on the checkpoints.

Reported with the same ``Trajectory`` result and trustworthiness as PCA and UMAP
(``landscape_core.trajectory``), so the three views can be judged side by side.
"""

from __future__ import annotations

import numpy as np
import torch

from .threads import single_thread
from .trajectory_base import (
    Trajectory,
    _block,
    _chunks,
    as_rows,
    default_trust_neighbors,
    distances_from_gram,
    gram,
    trustworthiness,
)


def autoencoder(
    thetas, dim: int = 2, seed: int = 0, hidden: int = 32, epochs: int = 2000, lr: float = 1e-2
) -> Trajectory:
    """A small torch autoencoder (``r -> hidden -> dim -> hidden -> r``, tanh) as a non-linear view.

    The checkpoints are standardized per parameter (mean 0, standard deviation 1 over the n
    checkpoints; constant parameters are left at 0) and written in an orthonormal basis of their
    span (exact, from the Gram matrix; ``r <= n - 1``), so the network is small whatever P is.
    Trained full-batch with Adam for ``epochs`` steps from ``torch.manual_seed(seed)`` on one CPU thread
    (the tensors are tiny; intra-op threads only add synchronization).
    ``reconstruction_error`` = ``|Z - decode(encode(Z))|^2 / |Z|^2`` over the standardized checkpoints.
    """
    rows, names, steps = as_rows(thetas)
    n = len(rows)
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim < n:
        raise ValueError(f"dim must be an integer from 1 to n - 1 = {n - 1}; got {dim!r}.")
    size = rows[0].shape[0]
    mean = torch.zeros(size, dtype=torch.float64)
    std = torch.ones(size, dtype=torch.float64)
    for sl in _chunks(size, n):
        block = _block(rows, sl)
        mean[sl] = block.mean(dim=0)
        s = block.std(dim=0, unbiased=False)
        std[sl] = torch.where(s > 0, s, torch.ones_like(s))
    K = gram(rows, offset=mean, scale=std)
    evals, evecs = np.linalg.eigh(K)
    keep = evals > 1e-10 * max(evals.max(), 1e-300)
    if not keep.any():
        raise ValueError("all checkpoints are identical; there is no trajectory to embed.")
    scores = evecs[:, keep] * np.sqrt(evals[keep])  # rows isometric to the standardized checkpoints
    scale = np.sqrt((scores**2).sum() / n)
    Z = torch.from_numpy(scores / scale)
    r = Z.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        encoder = torch.nn.Sequential(
            torch.nn.Linear(r, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, dim)
        ).double()
        decoder = torch.nn.Sequential(
            torch.nn.Linear(dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, r)
        ).double()
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    with single_thread():  # thousands of tiny steps: worker threads only add waits (36x slower measured)
        for _ in range(int(epochs)):
            optimizer.zero_grad()
            loss = ((decoder(encoder(Z)) - Z) ** 2).sum()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        coords = encoder(Z)
        error = float(((decoder(coords) - Z) ** 2).sum() / (Z**2).sum())
    coords = coords.numpy().astype(np.float64)
    trust_k = default_trust_neighbors(n)
    trust = trustworthiness(distances_from_gram(K), coords, trust_k)
    settings = {
        "kind": "trajectory",
        "method": "autoencoder",
        "dim": dim,
        "hidden": hidden,
        "epochs": int(epochs),
        "lr": float(lr),
        "seed": int(seed),
        "checkpoints": n,
        "parameters": int(size),
        "span_dimensions": int(r),
        "n_neighbors_trust": trust_k,
    }
    return Trajectory(
        method="autoencoder",
        coords=coords,
        names=names,
        steps=steps,
        trustworthiness=trust,
        settings=settings,
        reconstruction_error=error,
    )
