"""Requests that used to give an empty or wrong result, or a raw error, are refused with a sentence:
negative rows per chunk, empty or bare-string splits, directions that cannot fit in memory, a
batch size above the data size (the guard uses the effective batch), models returning a tuple or
a dict; and uploaded labels the loss ignores are accepted."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, directions, guards, interpolation, surface, uploads
from landscape_core.evaluate import evaluate_points
from landscape_core.uploads import Upload
from landscape_core.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_thread")


def problem(n=30, batch_size=None):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(n, 4, generator=gen)
    y = (X[:, 0] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    return Problem(model, F.cross_entropy, (X, y), val=(X[:10], y[:10]), batch_size=batch_size)


@pytest.mark.parametrize("rows", [-1, 0, 1.5, True])
def test_rows_per_chunk_must_be_positive(rows, fresh_cache):
    p = problem()
    d = directions.random(p, count=2, seed=0)
    with pytest.raises(ValueError, match=r"rows_per_chunk must be a positive integer or None \(automatic\); got"):
        surface.plane(p, d[0], d[1], steps=5, rows_per_chunk=rows)


@pytest.mark.parametrize(
    "splits, message",
    [
        ([], r"splits is empty; name at least one of \['train', 'val'\]"),
        ("train", r"splits must be a list of split names such as \['train'\]; got the string 'train'"),
        (["train", "test"], r"split 'test' is not available; this problem has \['train', 'val'\]"),
    ],
)
def test_splits_must_be_a_non_empty_list_of_names(splits, message, fresh_cache):
    p = problem()
    d = directions.random(p, count=2, seed=0)
    with pytest.raises(ValueError, match=message):
        surface.line(p, d[0], steps=5, splits=splits)
    with pytest.raises(ValueError, match=message):
        surface.plane(p, d[0], d[1], steps=5, splits=splits)
    with pytest.raises(ValueError, match=message):
        p.evaluate(p.theta0, splits=splits)
    with pytest.raises(ValueError, match=message):
        evaluate_points(p, p.theta0, None, None, splits=splits)
    with pytest.raises(ValueError, match=message):
        interpolation.linear(p, p.theta0, p.theta0 + 0.1, steps=5, splits=splits, use_cache=False)
    assert list(p.evaluate(p.theta0, splits=["val"])) == ["val_loss", "val_accuracy"]


def test_directions_that_cannot_fit_in_memory_are_refused_before_allocating(monkeypatch):
    p = problem()
    with pytest.raises(guards.LimitError, match=r"10,000,000 random directions of 51 parameters need about 9\.50 GiB"):
        directions.random(p, count=10**7)
    monkeypatch.setenv("LANDSCAPE_MEMORY_BUDGET_MB", "1")
    with pytest.raises(guards.LimitError, match=r"over the memory budget of 0\.00 GiB; ask for fewer directions"):
        directions.random(p, count=2000)
    assert directions.random(p, count=100).shape == (100, 51)


def test_the_memory_guard_uses_the_effective_batch():
    small = problem(n=30)
    huge = problem(n=30, batch_size=10**9)  # more than the data: one batch of 30
    assert huge.splits["train"].batch_size == 30 and huge.batch_size == 10**9
    assert guards.estimate(huge, 101 * 101) == guards.estimate(small, 101 * 101)
    assert guards.check_grid(huge, 101, 101).points == 101 * 101  # was refused as needing hundreds of GiB
    assert huge.base == small.base


class TupleModel(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        logits = self.linear(x)
        return (logits, x) if self.kind == "tuple" else {"logits": logits}


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_a_model_returning_a_tuple_or_dict_is_read_as_its_logits(kind):
    X, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    torch.manual_seed(0)
    wrapped = Problem(TupleModel(kind), F.cross_entropy, (X, y))
    with torch.no_grad():
        logits = wrapped.model.linear(X)
    assert wrapped.base["train_loss"] == pytest.approx(float(F.cross_entropy(logits, y)), abs=1e-6)
    assert "train_accuracy" in wrapped.base


class NoTensorModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        return {"names": ["a"] * x.shape[0], "count": 3}


def test_a_model_returning_no_tensor_gets_one_clear_sentence():
    X, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    with pytest.raises(ValueError) as info:
        Problem(NoTensorModel(), F.cross_entropy, (X, y))
    message = str(info.value)
    assert message.startswith("train: the model returned no tensor to compute the loss on (names: list, count: int)")
    assert "output=" in message and "\n" not in message


def test_uploaded_labels_equal_to_the_ignore_index_are_accepted():
    base = Workspace("base", problem())
    X = torch.randn(40, 4, generator=torch.Generator().manual_seed(1))
    y = (X[:, 0] > 0).long()
    y[::3] = -100
    buffer = io.BytesIO()
    torch.save({"X": X, "y": y}, buffer)
    ws = uploads.open_uploads(base, train=Upload("d.pt", buffer.getvalue()))
    with torch.no_grad():
        pred = base.problem.model(X).argmax(1)
    keep = y != -100
    assert ws.problem.base["train_accuracy"] == pytest.approx(float((pred == y)[keep].float().mean()), abs=1e-7)
    assert np.isfinite(ws.problem.base["train_loss"])
