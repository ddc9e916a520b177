"""Spec: a small CNN on scikit-learn's 8x8 digits, with a folder of per-epoch checkpoints.

    landscape trajectory --spec examples/digits_cnn_spec.py:build --method pca
    streamlit run app.py -- --spec examples/digits_cnn_spec.py:build

It shows the usual way to bring a trained model: an architecture in code, weights in a
folder of state-dict files. On first use it trains the CNN (a few seconds, seeded) and writes
``epoch_1.pt`` ... ``epoch_8.pt`` into the checkpoint folder: ``$LANDSCAPE_EXAMPLES_DIR/
digits_cnn`` if set, else ``digits_cnn_checkpoints`` in the landscape cache folder. Every
later use only reads that folder with ``checkpoints.load_folder`` (``torch.load(...,
weights_only=True)``, natural order: epoch_2 before epoch_10). Point ``CHECKPOINTS`` at your
own folder to analyse your own run. The data ship with scikit-learn (no download).
"""

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, checkpoints
from landscape_core.cache import cache_dir
from landscape_core.threads import single_thread
from landscape_core.workspace import Workspace

EPOCHS = 8
TRAIN = 1347  # of the 1797 digits; the rest is the validation split


def checkpoint_folder() -> Path:
    base = os.environ.get("LANDSCAPE_EXAMPLES_DIR")
    return Path(base) / "digits_cnn" if base else cache_dir() / "digits_cnn_checkpoints"


def make_model() -> nn.Sequential:
    """Conv(1->8, 3x3) - ReLU - Conv(8->16, 3x3) - ReLU - Flatten - Linear(256 -> 10); 3,818 parameters
    (80 + 1,168 + 2,570)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )


def digits() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Images ``(n, 1, 8, 8)`` scaled to [0, 1] and labels ``(n,)``; a fixed shuffled split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    X = torch.tensor(data.images[order] / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(data.target[order], dtype=torch.long)
    return (X[:TRAIN], y[:TRAIN]), (X[TRAIN:], y[TRAIN:])


def train(folder: Path, train_data, seed: int = 0) -> None:
    """SGD with momentum, batch 64; writes one state dict per epoch (atomically)."""
    torch.manual_seed(seed)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    X, y = train_data
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with single_thread():  # a tiny model trains fastest on one thread
        for epoch in range(1, EPOCHS + 1):
            for batch in torch.randperm(len(y), generator=gen).split(64):
                optimizer.zero_grad()
                F.cross_entropy(model(X[batch]), y[batch]).backward()
                optimizer.step()
            part = folder / f"epoch_{epoch}.pt.part"
            torch.save({"model": model.state_dict(), "epoch": epoch}, part)
            part.replace(folder / f"epoch_{epoch}.pt")


def build() -> Workspace:
    train_data, val_data = digits()
    folder = checkpoint_folder()
    if not (folder / f"epoch_{EPOCHS}.pt").exists():
        train(folder, train_data)
    problem = Problem(make_model(), F.cross_entropy, train=train_data, val=val_data)
    ckpts = checkpoints.load_folder(folder, problem)
    final = ckpts[-1]
    return Workspace(
        name="digits CNN (spec)",
        problem=problem.at(final.theta, final.buffers),
        checkpoints=ckpts,
        description=f"A 3.5k-parameter CNN on 8x8 digits; {len(ckpts)} checkpoints read from {folder}.",
    )
