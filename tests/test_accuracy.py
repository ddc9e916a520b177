"""Accuracy: labels the loss ignores are accepted and skipped, sequence logits in either layout,
and a diverged point has NaN accuracy (counted as non-finite), never a made-up share."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, directions, surface
from landscape_core.evaluate import _per_point
from landscape_core.metrics import Accuracy

pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(n=60, d=4, classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=gen)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64) + y[:, None].double()
    return X, y


def mlp(d=4, classes=3, activation=nn.Tanh):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 8), activation(), nn.Linear(8, classes)).double()


@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("batch_size", [1, 7, None])
def test_ignored_labels_are_accepted_and_skipped_by_accuracy(ignore_index, batch_size):
    X, y = blobs()
    y = y.clone()
    y[::4] = ignore_index
    loss = nn.CrossEntropyLoss(ignore_index=ignore_index)
    problem = Problem(mlp(), loss, (X, y), val=(X[:13], y[:13]), batch_size=batch_size)
    with torch.no_grad():
        logits = mlp()(X)
    keep = y != ignore_index
    want_acc = float((logits.argmax(1) == y)[keep].double().mean())
    assert problem.base["train_accuracy"] == pytest.approx(want_acc, abs=1e-15)
    assert problem.base["train_loss"] == pytest.approx(float(loss(logits, y)), rel=1e-12)
    keep_val = y[:13] != ignore_index
    assert problem.base["val_accuracy"] == pytest.approx(
        float((logits[:13].argmax(1) == y[:13])[keep_val].double().mean()), abs=1e-15
    )


def test_labels_out_of_range_other_than_the_ignore_index_are_still_refused():
    X, y = blobs()
    y = y.clone()
    y[0], y[1] = -100, 7
    with pytest.raises(ValueError, match=r"labels range over \[0, 7\] .*\(or equal the ignore_index -100\)"):
        Problem(mlp(), F.cross_entropy, (X, y))
    y[1] = -5
    with pytest.raises(ValueError, match=r"labels range over \[-5, 2\]"):
        Problem(mlp(), F.cross_entropy, (X, y))


class Tagger(nn.Module):
    """Token ids ``(n, T)`` -> logits ``(n, T, C)`` (``layout="last"``) or ``(n, C, T)`` (``"torch"``)."""

    def __init__(self, layout: str, vocab=11, dim=5, classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.layout = layout
        self.embedding = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids):
        logits = self.head(torch.tanh(self.embedding(ids)))
        return logits if self.layout == "last" else logits.transpose(1, 2)


class TokenCrossEntropy:
    """Cross-entropy over tokens for logits ``(n, T, C)``; declares its batch weight (labelled tokens)."""

    def __call__(self, output, target):
        return F.cross_entropy(output.flatten(0, 1), target.flatten())

    def batch_weight(self, output, target):
        return (target != -100).sum()


def sequences(n=30, T=6, vocab=11, classes=3):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (n, T), generator=gen)
    tags = torch.randint(0, classes, (n, T), generator=gen)
    lengths = torch.randint(1, T + 1, (n,), generator=gen)
    tags[torch.arange(T)[None, :] >= lengths[:, None]] = -100  # padding positions
    return ids, tags


@pytest.mark.parametrize("layout", ["last", "torch"])
@pytest.mark.parametrize("batch_size", [1, 7, None])
def test_sequence_logits_in_either_layout(layout, batch_size):
    ids, tags = sequences()
    loss = TokenCrossEntropy() if layout == "last" else nn.CrossEntropyLoss()
    problem = Problem(Tagger(layout), loss, (ids, tags), batch_size=batch_size)
    assert "train_accuracy" in problem.base
    with torch.no_grad():
        logits = Tagger("last")(ids).double()
    keep = tags != -100
    want_acc = float((logits.argmax(-1) == tags)[keep].double().mean())
    want_loss = float(F.cross_entropy(logits.flatten(0, 1), tags.flatten()))
    assert problem.base["train_accuracy"] == pytest.approx(want_acc, abs=1e-7)
    assert problem.base["train_loss"] == pytest.approx(want_loss, rel=1e-6)


def test_accuracy_at_a_diverged_point_is_nan_in_every_path():
    X, y = blobs()
    problem = Problem(mlp(activation=nn.ReLU), F.cross_entropy, (X, y), val=(X[:10], y[:10]))
    diverged = problem.theta0 * 1e200  # finite weights whose logits overflow (1e400) to inf
    values = problem.evaluate(torch.stack([problem.theta0, diverged]))
    assert np.isfinite(values["train_accuracy"][0])
    assert np.isnan(values["train_accuracy"][1]) and np.isnan(values["val_accuracy"][1])
    # the fast path (logits (k, n, C)) and the plain function agree: NaN, not the share of class 0
    logits = torch.randn(3, 20, 3, dtype=torch.float64)
    logits[1, 4, 0] = float("nan")
    logits[2, 7, 2] = float("inf")
    labels = torch.zeros(20, dtype=torch.long)
    fast = _per_point(Accuracy(), logits, labels).numpy()
    assert np.isfinite(fast[0]) and np.isnan(fast[1]) and np.isnan(fast[2])
    assert np.isnan(float(Accuracy()(logits[1], labels)))


def test_a_diverged_region_of_a_plane_counts_accuracy_as_non_finite():
    X, y = blobs()
    problem = Problem(mlp(activation=nn.ReLU), F.cross_entropy, (X, y))
    d = directions.random(problem, count=2, norm="none", seed=0)
    plane = surface.plane(problem, d[0] * 1e200, d[1] * 1e200, steps=5, use_cache=False)
    loss_bad = ~np.isfinite(plane.values["train_loss"])
    assert loss_bad.sum() > 0
    acc_bad = ~np.isfinite(plane.values["train_accuracy"])
    np.testing.assert_array_equal(acc_bad, loss_bad)
    assert plane.nonfinite["train_accuracy"] == plane.nonfinite["train_loss"]
