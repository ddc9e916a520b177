"""``Workspace``: what the dashboard and the CLI open, a Problem plus its checkpoints.

A demo, a user's spec file and an upload all produce one. ``problem`` is model A (the
base point of every page); ``compare`` is an optional model B for side-by-side views;
``checkpoints`` are named points of A's space in training order (trajectories,
interpolation), each optionally carrying its own buffers (BatchNorm running statistics).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .problem import Problem


@dataclass
class Checkpoint:
    """One saved model: flat parameters ``theta`` ``(P,)`` of the workspace's space.

    ``buffers``: ``{name: tensor}`` running statistics saved with it, or ``None`` (use the
    problem's). ``step``: epoch or iteration, for colouring trajectories.
    """

    name: str
    theta: torch.Tensor
    buffers: dict[str, torch.Tensor] | None = None
    step: int | None = None


@dataclass
class Workspace:
    """A problem to analyse, as opened by the dashboard (``name`` shows in the sidebar).

    ``problem``: model A with its data. ``compare``: model B (same data; may have another
    architecture). ``checkpoints``/``compare_checkpoints``: training-ordered checkpoints of
    A and B. ``labels``: display names of A and B. ``description``: one paragraph for people.
    """

    name: str
    problem: Problem
    checkpoints: list[Checkpoint] = field(default_factory=list)
    compare: Problem | None = None
    compare_checkpoints: list[Checkpoint] = field(default_factory=list)
    labels: tuple[str, str] = ("A", "B")
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.problem, Problem):
            raise TypeError(f"Workspace.problem must be a landscape_core.Problem; got {type(self.problem).__name__}.")
        if self.compare is not None and not isinstance(self.compare, Problem):
            raise TypeError(f"Workspace.compare must be a Problem or None; got {type(self.compare).__name__}.")
        for ckpt in self.checkpoints:
            self.problem.space.check(ckpt.theta, f"checkpoint {ckpt.name!r}")
        if self.compare is not None:
            for ckpt in self.compare_checkpoints:
                self.compare.space.check(ckpt.theta, f"checkpoint {ckpt.name!r} of {self.labels[1]}")

    def checkpoint(self, name: str) -> Checkpoint:
        for ckpt in (*self.checkpoints, *self.compare_checkpoints):
            if ckpt.name == name:
                return ckpt
        raise KeyError(f"no checkpoint named {name!r}; available: {[c.name for c in self.checkpoints]}")
