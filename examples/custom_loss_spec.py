"""Spec: a small MLP on two interleaved spirals with a custom loss and a custom metric.

    landscape surface --spec examples/custom_loss_spec.py:build --json
    streamlit run app.py -- --spec examples/custom_loss_spec.py:build

The loss is cross-entropy with label smoothing (``smoothed_cross_entropy``); the extra metric
is the Brier score (mean squared error of the predicted probabilities against one-hot labels).
Both are batch means of ``(output, target)``, which is what ``Problem`` needs for exact
full-split values. Training takes about a second and is seeded, so every run builds the same
model; four checkpoints along training feed the trajectory and interpolation pages.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem
from landscape_core.threads import single_thread
from landscape_core.workspace import Checkpoint, Workspace

SMOOTHING = 0.1


def smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against labels smoothed by ``SMOOTHING`` (mean over the batch)."""
    return F.cross_entropy(logits, target, label_smoothing=SMOOTHING)


def brier(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Brier score: mean over samples of sum_c (p_c - onehot_c)^2; 0 is perfect, 2 the worst."""
    probs = logits.softmax(dim=-1)
    onehot = F.one_hot(target, probs.shape[-1]).to(probs.dtype)
    return ((probs - onehot) ** 2).sum(dim=-1).mean()


def spirals(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points of two interleaved spirals with noise: X ``(n, 2)``, y ``(n,)`` in {0, 1}."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    t = torch.rand(n, generator=gen) * 3 * math.pi + 0.5
    X = torch.stack([t * torch.cos(t + math.pi * y), t * torch.sin(t + math.pi * y)], dim=1) / 5
    return X + 0.05 * torch.randn(n, 2, generator=gen), y


def build(steps: int = 300, seed: int = 0) -> Workspace:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    train, val = spirals(512, seed), spirals(256, seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    snapshots = []
    with single_thread():  # a tiny model trains fastest on one thread
        for step in range(1, steps + 1):
            optimizer.zero_grad()
            smoothed_cross_entropy(model(train[0]), train[1]).backward()
            optimizer.step()
            if step % (steps // 4) == 0:
                snapshots.append((step, torch.cat([p.detach().flatten() for p in model.parameters()]).clone()))
    problem = Problem(
        model, smoothed_cross_entropy, train=train, val=val, metrics={"accuracy": _accuracy, "brier": brier}
    )
    checkpoints = [Checkpoint(f"step_{s}", theta, step=s) for s, theta in snapshots]
    return Workspace(
        name="spirals (custom loss)",
        problem=problem,
        checkpoints=checkpoints,
        description="An MLP on two spirals; loss: label-smoothed cross-entropy; metrics: accuracy and Brier score.",
    )


def _accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=-1) == target).to(logits.dtype).mean()
