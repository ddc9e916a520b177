"""The perturbation sets of sharpness: scales, the loss as a function of the perturbation, checks.

A perturbation is ``delta = t * u`` on the selected coordinates (``selected``: all, or a mask's).
``scale`` gives ``t``: 1 (plain), or adaptive by ``Convention``: ``"elementwise"``, ``|theta| + eta``
on every parameter (Andriushchenko et al. 2023), or ``"asam"``, Kwon et al. 2021's ``T_w`` (ASAM):
``|w| + eta`` on weight tensors (parameter names containing "weight", normalization scales
included) and 1 on biases, eta = 0.01. ``Objective`` is ``L(theta0 + delta)`` with its gradient, the
exact full-split loss (``hvp.LossFunction``); a perturbation where it is not finite raises
``DivergedPerturbation``, a ``ValueError`` naming the radius.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import torch

from .evaluate import Cancelled
from .hvp import LossFunction


def check_positive(name: str, value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number; got {value!r}.")
    return float(value)


def check_iters(iters) -> None:
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be a positive integer; got {iters!r}.")


def check_eta(eta) -> None:
    if eta < 0:
        raise ValueError(f"eta must be >= 0; got {eta!r}.")


class Convention(str, Enum):
    """How adaptive sharpness scales the perturbation, ``delta = t * u``."""

    ELEMENTWISE = "elementwise"  # t = |theta| + eta on every parameter (Andriushchenko et al. 2023)
    ASAM = "asam"  # Kwon et al. 2021's T_w: |w| + eta on weight tensors, 1 on biases (eta = 0.01)


DEFAULT_ETA = {Convention.ELEMENTWISE: 0.0, Convention.ASAM: 0.01}


def convention_of(value) -> Convention:
    try:
        return Convention(value)
    except ValueError:
        allowed = [c.value for c in Convention]
        raise ValueError(f"convention must be one of {allowed}; got {value!r}.") from None


def scale_definition(adaptive: bool, convention: Convention = Convention.ELEMENTWISE) -> str:
    """How the perturbation scale ``t`` is defined, for ``settings["definition"]``."""
    if not adaptive:
        return "t = 1"
    if convention is Convention.ASAM:
        return "t = |w| + eta on weight tensors, 1 on biases (Kwon et al. 2021, ASAM's T_w)"
    return "t = |theta| + eta on every parameter (elementwise)"


def check_starts(starts) -> int:
    if isinstance(starts, bool) or not isinstance(starts, int) or starts < 1:
        raise ValueError(f"starts must be a positive integer (random starts of the ascent); got {starts!r}.")
    return starts


def lower_bound(starts: int) -> str:
    return (
        f"lower bound: the best of {starts} local maximization(s) from random starts; "
        "the true maximum over the set can be higher"
    )


def train_loss(problem, theta: torch.Tensor) -> float:
    return float(problem.evaluate(theta.to(problem.device, problem.dtype)[None], splits=["train"])["train_loss"][0])


def selected(problem, mask) -> torch.Tensor:
    if mask is None:
        return torch.arange(problem.space.size)
    problem.space.check(mask, "mask")
    return torch.nonzero(mask.cpu().to(torch.bool)).flatten()


def scale(problem, index, adaptive: bool, eta: float, convention: Convention = Convention.ELEMENTWISE) -> torch.Tensor:
    """``t`` on the selected coordinates (see ``Convention``), or ones; float64 on the CPU."""
    theta = problem.theta0.detach().to("cpu", torch.float64)
    if not adaptive:
        return torch.ones(index.numel(), dtype=torch.float64)
    if convention is Convention.ELEMENTWISE:
        return theta[index].abs() + eta
    t = torch.ones_like(theta)
    for p in problem.space.params:
        if "weight" in p.name.rpartition(".")[2]:
            t[p.slice] = theta[p.slice].abs() + eta
    return t[index]


class DivergedPerturbation(ValueError):
    """The loss is not finite at a point of the perturbation set: the radius reaches where the model diverges."""


class Objective:
    """``L(theta0 + embed(delta))`` and its gradient on the selected coordinates (float64 numpy/tensors).

    ``radius``: how the set was given (``"eps=0.001"``), for the message when the loss diverges in it.
    """

    def __init__(self, problem, index, dtype, progress=None, cancel=None, expected: int = 1, radius: str = ""):
        self.progress, self.cancel, self.expected = progress, cancel, expected
        self.function = LossFunction(problem, dtype=dtype, method="double-backward")
        self.theta0 = problem.theta0.detach().to(problem.device, self.function.dtype)
        self.index = index.to(problem.device)
        self.evaluations = 0
        self.radius = radius

    def theta(self, delta: torch.Tensor) -> torch.Tensor:
        theta = self.theta0.clone()
        theta[self.index] += delta.to(theta.device, theta.dtype)
        return theta

    def value_and_grad(self, delta: torch.Tensor) -> tuple[float, torch.Tensor]:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("sharpness computation cancelled")
        theta = self.theta(delta)
        if not torch.isfinite(theta).all():
            raise diverged(self.radius, "the perturbed weights overflow")
        theta.requires_grad_(True)
        with torch.enable_grad():
            value = self.function.loss(theta)
            if not value.requires_grad:
                raise ValueError("the loss does not depend on the parameters (argmax inside?); no ascent possible.")
            (grad,) = torch.autograd.grad(value, theta)
        self.evaluations += 1
        if self.progress is not None:
            self.progress(self.evaluations, max(self.expected, self.evaluations))
        if not (torch.isfinite(value) and torch.isfinite(grad).all()):
            raise diverged(self.radius, "the loss or its gradient is not finite there")
        return float(value.detach()), grad[self.index].detach().to("cpu", torch.float64)


def diverged(radius: str, why: str) -> DivergedPerturbation:
    return DivergedPerturbation(
        f"the perturbation set of {radius} reaches points where the model diverges ({why}); "
        "sharpness is undefined there: use a smaller radius."
    )
