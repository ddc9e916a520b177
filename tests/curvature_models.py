"""Toy problems with closed-form curvature, shared by the Hessian and sharpness tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem

DUMMY = (torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))


def mean_output(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out.mean()


class Quadratic(nn.Module):
    """``0.5 (x - x*)^T H (x - x*)`` with ``H = diag(h)``; ignores its input."""

    def __init__(self, h, x_star, x):
        super().__init__()
        self.register_buffer("h", torch.as_tensor(h, dtype=torch.float64))
        self.register_buffer("x_star", torch.as_tensor(x_star, dtype=torch.float64))
        self.x = nn.Parameter(torch.as_tensor(x, dtype=torch.float64).clone())

    def forward(self, inputs):
        d = self.x - self.x_star
        return (0.5 * (self.h * d * d).sum()).reshape(1)


class ScalarNet(nn.Module):
    """``L = 0.5 (a b - 1)^2``: a saddle at (0, 0), a valley of minima ``a b = 1``."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([a], dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor([b], dtype=torch.float64))

    def forward(self, inputs):
        return 0.5 * (self.a * self.b - 1) ** 2


def quadratic_problem(h=(1.0, 4.0), x_star=(1.0, -2.0), x=None) -> Problem:
    model = Quadratic(h, x_star, x_star if x is None else x)
    return Problem(model, mean_output, DUMMY)


def scalar_problem(a: float, b: float) -> Problem:
    return Problem(ScalarNet(a, b), mean_output, DUMMY)


def mlp_problem(seed: int = 0, n: int = 40, batch_size: int = 16) -> Problem:
    """A float64 tanh MLP (4 -> 6 -> 3, P = 51) with cross-entropy on random data, uneven batches."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    return Problem(model, F.cross_entropy, (X, y), batch_size=batch_size)


def exact_hessian(problem: Problem) -> torch.Tensor:
    """Dense float64 Hessian ``(P, P)`` of the full-split loss by ``torch.func.hessian``."""
    theta = problem.theta0.detach().to(torch.float64)
    return torch.func.hessian(lambda t: problem.full_loss(t))(theta)


def logistic_problem(seed: int = 0, n: int = 50, d: int = 3):
    """``nn.Linear(d, 1)`` + BCE-with-logits; returns the problem and ``H = Xt^T diag(p (1 - p)) Xt / n``."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = (torch.rand(n, 1, generator=gen, dtype=torch.float64) < 0.5).to(torch.float64)
    torch.manual_seed(seed)
    model = nn.Linear(d, 1).double()

    problem = Problem(model, F.binary_cross_entropy_with_logits, (X, y), batch_size=16)
    with torch.no_grad():
        p = torch.sigmoid(model(X)[:, 0])
    Xt = torch.cat([X, torch.ones(n, 1, dtype=torch.float64)], dim=1)  # layout: weight (d), then bias
    H = Xt.T @ torch.diag(p * (1 - p)) @ Xt / n
    return problem, H
