"""Concurrent jobs on one Problem: each thread evaluates on its own copy of the model's structure,
so values equal the single-threaded ones for every model shape, and the problem's model (and
every deep copy of it) keeps its parameters while others evaluate."""

import copy
import sys
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, demos
from landscape_core.hvp import HessianOperator
from landscape_core.space import ParamSpace
from landscape_core.threads import single_thread

pytestmark = pytest.mark.usefixtures("one_thread")

WORKERS = 4
ROUNDS = 25


class Root(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 4))
        self.bias = nn.Parameter(torch.randn(3))

    def forward(self, x):
        return x @ self.weight.T + self.bias


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.body = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh())
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.body(x * self.scale))


def problem_of(shape: str) -> Problem:
    if shape == "logistic-blobs":
        return demos.load("logistic-blobs").problem
    torch.manual_seed(0)
    model = {
        "root": Root,
        "sequential": lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)),
        "batchnorm": lambda: nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)),
        "nested": Nested,
    }[shape]()
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(50, 4, generator=gen)
    y = torch.randint(0, 3, (50,), generator=gen)
    return Problem(model, F.cross_entropy, (X, y), batch_size=16)


def trainable(module: nn.Module) -> int:
    return sum(1 for p in module.parameters() if isinstance(p, nn.Parameter) and p.requires_grad)


@pytest.mark.parametrize("shape", ["logistic-blobs", "root", "sequential", "batchnorm", "nested"])
def test_threads_hammering_one_problem_get_the_single_threaded_values(shape):
    problem = problem_of(shape)
    params = trainable(problem.model)
    gen = torch.Generator().manual_seed(2)
    thetas = problem.theta0 + 0.5 * torch.randn(6, problem.space.size, generator=gen, dtype=problem.dtype)
    v = torch.randn(problem.space.size, generator=gen, dtype=torch.float64)
    want = problem.evaluate(thetas)
    want_full = [float(problem.full_loss(t)) for t in thetas]
    want_hv = HessianOperator(problem).matvec(v)

    wrong, failures, bad_copies, copies = [], [], [], [0]
    done = threading.Event()

    def hammer(i: int) -> None:
        try:
            with single_thread():
                operator = HessianOperator(problem)
                for r in range(ROUNDS):
                    got = problem.evaluate(thetas)
                    wrong.extend((q, r) for q in want if not (got[q] == want[q]).all())
                    j = (i + r) % len(thetas)
                    if float(problem.full_loss(thetas[j])) != want_full[j]:
                        wrong.append(("full_loss", r))
                    if r % 10 == 0 and not torch.equal(operator.matvec(v), want_hv):
                        wrong.append(("hvp", r))
        except Exception as exc:  # reported below; a thread's exception would otherwise vanish
            failures.append(repr(exc))

    def copier() -> None:
        # what an upload or a Recomputer does while jobs run: deep-copy the problem's model
        try:
            while not done.is_set():
                clone = copy.deepcopy(problem.model)
                copies[0] += 1
                if trainable(clone) != params:
                    bad_copies.append(trainable(clone))
                ParamSpace(clone)  # "model has no trainable parameters" when a copy lost them
        except Exception as exc:
            failures.append(repr(exc))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so that overlaps happen
    try:
        workers = [threading.Thread(target=hammer, args=(i,)) for i in range(WORKERS)]
        watcher = threading.Thread(target=copier)
        for t in (*workers, watcher):
            t.start()
        for t in workers:
            t.join()
        done.set()
        watcher.join()
    finally:
        sys.setswitchinterval(old)
    assert not failures
    assert not wrong, f"{len(wrong)} wrong values, e.g. {wrong[:3]}"
    assert copies[0] > 0 and not bad_copies, f"{len(bad_copies)} of {copies[0]} deep copies lost parameters"
    assert trainable(problem.model) == params


def test_a_deep_copy_of_a_problem_keeps_its_parameters_and_evaluates_alike():
    problem = problem_of("root")
    problem.evaluate(problem.theta0)  # the calling thread has made its private copy
    clone = copy.deepcopy(problem)
    assert trainable(clone.model) == trainable(problem.model)
    assert clone.local_model() is not problem.local_model()
    assert clone.evaluate(problem.theta0)["train_loss"][0] == problem.base["train_loss"]


def test_each_thread_has_its_own_structure_sharing_the_tensors():
    problem = problem_of("nested")
    seen = []
    worker = threading.Thread(target=lambda: seen.append(problem.local_model()))
    worker.start()
    worker.join()
    mine = problem.local_model()
    assert mine is problem.local_model()  # made once per thread
    assert seen[0] is not mine and seen[0] is not problem.model and mine is not problem.model
    for a, b in zip(mine.parameters(), problem.model.parameters()):
        assert a is b  # no big tensor copied
    for a, b in zip(seen[0].buffers(), problem.model.buffers()):
        assert a is b
