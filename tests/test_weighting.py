"""Exact losses under batching: every torch loss, with weight, ignore_index, label smoothing and
reduction="sum", at several batch sizes, equals the same loss called once on the whole split in
float64; the Hessian and its top eigenvalue inherit it."""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, hessian
from landscape_core.hvp import HessianOperator
from landscape_core.weighting import Reduction

pytestmark = pytest.mark.usefixtures("one_thread")

N, D, C = 45, 5, 4
BATCHES = (1, 7, 64, None)  # None: the whole split in one batch
CLASS_WEIGHT = torch.tensor([0.2, 1.0, 3.0, 7.5], dtype=torch.float64)


class Root(nn.Module):
    """Parameters on the root module (no submodules): logits ``x W^T + b``."""

    def __init__(self, d=D, c=C):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c, d) * 0.7)
        self.bias = nn.Parameter(torch.randn(c) * 0.3)

    def forward(self, x):
        return x @ self.weight.T + self.bias


def model_of(shape: str, head: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(1)
    if shape == "root":
        model = Root()
    elif shape == "sequential":
        model = nn.Sequential(nn.Linear(D, 6), nn.Tanh(), nn.Linear(6, C))
    else:  # batchnorm, with non-trivial running statistics
        model = nn.Sequential(nn.Linear(D, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, C))
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    if head is not None:
        model = nn.Sequential(model, head)
    return model.double()


def class_by_class_labels(n=N, ignore=None):
    """Labels stored class by class (sorted): batches then hold very different class weights."""
    y = torch.sort(torch.randint(0, C, (n,), generator=torch.Generator().manual_seed(2))).values
    if ignore is not None:
        y[::5] = ignore
        y[-9:] = ignore  # the last batch of 7 (and 1) ignored entirely: weight 0, value 0/0
    return y


def inputs(n=N):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def float_targets(kind: str, n=N):
    gen = torch.Generator().manual_seed(4)
    if kind == "prob":
        return torch.softmax(torch.randn(n, C, generator=gen, dtype=torch.float64), dim=1)
    if kind == "binary":
        return (torch.rand(n, C, generator=gen, dtype=torch.float64) > 0.5).double()
    if kind == "sign":
        return torch.where(torch.rand(n, C, generator=gen) > 0.5, 1.0, -1.0).double()
    if kind == "count":
        return torch.poisson(torch.full((n, C), 2.0, dtype=torch.float64), generator=gen)
    return torch.randn(n, C, generator=gen, dtype=torch.float64)  # regression


class DeclaredWeight:
    """A custom weighted mean that says what it divides by: per-sample squared error weighted by the label's class."""

    def __call__(self, output, target):
        w = CLASS_WEIGHT.to(output.dtype)[target]
        return (w * output.pow(2).sum(dim=1)).sum() / w.sum()

    def batch_weight(self, output, target):
        return CLASS_WEIGHT[target].sum()


def per_sample_ce(output, target):
    return F.cross_entropy(output, target, weight=CLASS_WEIGHT.to(output.dtype), reduction="none")


def multilabel_index_targets(n=N):
    gen = torch.Generator().manual_seed(5)
    y = torch.full((n, C), -1, dtype=torch.long)
    for i in range(n):
        k = int(torch.randint(1, C, (1,), generator=gen))
        y[i, :k] = torch.randperm(C, generator=gen)[:k]
    return y


W = CLASS_WEIGHT
# (id, loss, targets, model head, expected reduction)
CASES = [
    ("ce-weight", nn.CrossEntropyLoss(weight=W), "class", None, Reduction.MEAN),
    ("ce-ignore", nn.CrossEntropyLoss(), "class-ignore", None, Reduction.MEAN),
    ("ce-weight-ignore-smooth", nn.CrossEntropyLoss(weight=W, label_smoothing=0.2), "class-ignore", None, "mean"),
    ("ce-own-ignore-index", nn.CrossEntropyLoss(weight=W, ignore_index=2), "class-ignore-2", None, "mean"),
    ("ce-sum", nn.CrossEntropyLoss(weight=W, reduction="sum", label_smoothing=0.1), "class-ignore", None, "sum"),
    ("ce-none", nn.CrossEntropyLoss(weight=W, reduction="none"), "class", None, "per-sample"),
    ("ce-prob-weight", nn.CrossEntropyLoss(weight=W, label_smoothing=0.1), "prob", None, "mean"),
    ("F.cross_entropy-ignore", F.cross_entropy, "class-ignore", None, "mean"),
    ("partial-ce", functools.partial(F.cross_entropy, weight=W, label_smoothing=0.3), "class-ignore", None, "mean"),
    ("partial-ce-sum", functools.partial(F.cross_entropy, weight=W, reduction="sum"), "class", None, "sum"),
    ("nll-weight-ignore", nn.NLLLoss(weight=W), "class-ignore", nn.LogSoftmax(dim=1), "mean"),
    ("nll-sum", nn.NLLLoss(weight=W, reduction="sum"), "class-ignore", nn.LogSoftmax(dim=1), "sum"),
    ("F.nll_loss", F.nll_loss, "class-ignore", nn.LogSoftmax(dim=1), "mean"),
    ("mse", nn.MSELoss(), "regression", None, "mean"),
    ("mse-sum", nn.MSELoss(reduction="sum"), "regression", None, "sum"),
    ("l1", nn.L1Loss(), "regression", None, "mean"),
    ("smooth-l1", nn.SmoothL1Loss(beta=0.5), "regression", None, "mean"),
    ("huber-sum", nn.HuberLoss(reduction="sum", delta=0.7), "regression", None, "sum"),
    ("bce-logits-weight", nn.BCEWithLogitsLoss(weight=W, pos_weight=W.flip(0)), "binary", None, "mean"),
    ("bce-weight-sum", nn.BCELoss(weight=W, reduction="sum"), "binary", nn.Sigmoid(), "sum"),
    ("kl-batchmean", nn.KLDivLoss(reduction="batchmean"), "prob", nn.LogSoftmax(dim=1), "mean"),
    ("kl-mean", nn.KLDivLoss(reduction="mean"), "prob", nn.LogSoftmax(dim=1), "mean"),
    ("poisson", nn.PoissonNLLLoss(), "count", None, "mean"),
    ("soft-margin", nn.SoftMarginLoss(), "sign", None, "mean"),
    ("hinge-embedding", nn.HingeEmbeddingLoss(margin=0.5), "sign", None, "mean"),
    ("multilabel-soft-margin-weight", nn.MultiLabelSoftMarginLoss(weight=W), "binary", None, "mean"),
    ("multi-margin-weight", nn.MultiMarginLoss(weight=W), "class", None, "mean"),
    ("multi-margin-sum", nn.MultiMarginLoss(weight=W, reduction="sum"), "class", None, "sum"),
    ("multilabel-margin", nn.MultiLabelMarginLoss(), "multilabel-index", None, "mean"),
    ("declared-batch-weight", DeclaredWeight(), "class", None, "mean"),
    ("per-sample-function", per_sample_ce, "class", None, "per-sample"),
]


def targets_of(kind: str):
    if kind == "class":
        return class_by_class_labels()
    if kind == "class-ignore":
        return class_by_class_labels(ignore=-100)
    if kind == "class-ignore-2":
        y = class_by_class_labels()
        y[-9:] = 2
        return y
    if kind == "multilabel-index":
        return multilabel_index_targets()
    return float_targets(kind)


def one_batch_float64(model, loss, X, y, theta=None):
    """The loss called once on the whole split, in float64, by hand (no Problem involved)."""
    model = model.double()
    if theta is not None:
        torch.nn.utils.vector_to_parameters(theta, model.parameters())
    model.eval()
    with torch.no_grad():
        value = loss(model(X), y)
    return float(value.mean()) if value.dim() else float(value)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("batch_size", BATCHES, ids=lambda b: f"batch{b or 'all'}")
def test_every_loss_equals_the_whole_split_in_one_call(case, batch_size):
    _, loss, kind, head, reduction = case
    X, y = inputs(), targets_of(kind)
    problem = Problem(model_of("sequential", head), loss, (X, y), batch_size=batch_size)
    assert problem.weightings["loss"].reduction is Reduction(reduction)
    gen = torch.Generator().manual_seed(6)
    thetas = problem.theta0 + 0.4 * torch.randn(3, problem.space.size, generator=gen, dtype=torch.float64)
    got = problem.evaluate(thetas)["train_loss"]
    for i, theta in enumerate(thetas):
        want = one_batch_float64(model_of("sequential", head), loss, X, y, theta)
        assert got[i] == pytest.approx(want, rel=1e-12, abs=1e-13)
        assert float(problem.full_loss(theta)) == pytest.approx(want, rel=1e-12, abs=1e-13)


@pytest.mark.parametrize("shape", ["root", "sequential", "batchnorm"])
@pytest.mark.parametrize(
    "loss",
    [
        nn.CrossEntropyLoss(weight=W),
        nn.CrossEntropyLoss(weight=W, label_smoothing=0.2),
        nn.CrossEntropyLoss(weight=W, reduction="sum"),
    ],
    ids=["weight", "weight-smoothing", "sum"],
)
@pytest.mark.parametrize("batch_size", BATCHES, ids=lambda b: f"batch{b or 'all'}")
def test_model_shapes_with_ignored_labels(shape, loss, batch_size):
    X, y = inputs(), class_by_class_labels(ignore=-100)
    problem = Problem(model_of(shape), loss, (X, y), batch_size=batch_size)
    want = one_batch_float64(model_of(shape), loss, X, y)
    assert problem.base["train_loss"] == pytest.approx(want, rel=1e-12)
    assert float(problem.full_loss(problem.theta0)) == pytest.approx(want, rel=1e-12)
    # accuracy skips the ignored labels: the mean over the labelled ones
    with torch.no_grad():
        pred = model_of(shape).eval()(X).argmax(dim=1)
    labelled = y != -100
    assert problem.base["train_accuracy"] == pytest.approx(float((pred == y)[labelled].double().mean()), abs=1e-15)


def test_the_issue_example_5000_samples_class_by_class():
    """nn.CrossEntropyLoss(weight=w) on 5,000 samples stored class by class, default batches (4,096):
    the old sample-weighted combination gave 1.3098 here against the exact 1.2561."""
    torch.manual_seed(0)
    n, d, classes = 5000, 8, 4
    y = torch.arange(classes).repeat_interleave(n // classes)
    X = torch.randn(n, d) + 0.5 * y[:, None].float()
    model = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, classes))
    loss = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    problem = Problem(model, loss, (X, y))
    assert problem.splits["train"].batch_size == 4096  # two batches
    with torch.no_grad():
        exact = float(nn.CrossEntropyLoss(weight=loss.weight.double())(model.double()(X.double()), y))
    assert exact == pytest.approx(1.2561, abs=1e-4)
    assert problem.base["train_loss"] == pytest.approx(exact, rel=1e-6)  # float32 model
    assert float(problem.full_loss(problem.theta0)) == pytest.approx(exact, rel=1e-6)


def exact_hessian(shape, loss, X, y) -> torch.Tensor:
    model = model_of(shape).eval()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])
    buffers = dict(model.named_buffers())

    def f(t):
        params, offset = {}, 0
        for name, s in zip(names, shapes):
            k = int(np.prod(s))
            params[name] = t[offset : offset + k].reshape(s)
            offset += k
        return loss(torch.func.functional_call(model, {**buffers, **params}, (X,)), y)

    return torch.func.hessian(f)(theta)


@pytest.mark.parametrize("shape", ["root", "batchnorm"])
@pytest.mark.parametrize(
    "loss",
    [nn.CrossEntropyLoss(weight=W, label_smoothing=0.1), nn.CrossEntropyLoss(weight=W, reduction="sum")],
    ids=["weight-smoothing", "sum"],
)
def test_hessian_products_and_top_eigenvalue_under_batching_equal_one_batch(shape, loss):
    X, y = inputs(), class_by_class_labels(ignore=-100)
    H = exact_hessian(shape, loss, X, y)
    top = float(torch.linalg.eigvalsh(H)[-1])
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for batch_size in (1, 7, None):
        problem = Problem(model_of(shape), loss, (X, y), batch_size=batch_size)
        op = HessianOperator(problem)
        np.testing.assert_allclose(op.matvec(v).numpy(), (H @ v).numpy(), rtol=1e-10, atol=1e-11)
        spectrum = hessian.top_eigenvalues(problem, k=1, tol=1e-10, use_cache=False)
        assert float(spectrum.values[0]) == pytest.approx(top, rel=1e-8)


def test_a_split_whose_labels_are_all_ignored_is_refused():
    X, y = inputs(), torch.full((N,), -100)
    with pytest.raises(ValueError, match=r"every train label equals the ignore_index -100"):
        Problem(model_of("sequential"), F.cross_entropy, (X, y))


def test_zero_class_weights_everywhere_are_refused_with_a_sentence():
    X, y = inputs(), class_by_class_labels()
    loss = nn.CrossEntropyLoss(weight=torch.zeros(C, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"every sample has weight 0"):
        Problem(model_of("sequential"), loss, (X, y), batch_size=7)


def test_a_loss_of_the_wrong_shape_is_refused():
    X, y = inputs(), class_by_class_labels()
    with pytest.raises(ValueError, match=r"must return a scalar .* or one value per sample"):
        Problem(model_of("sequential"), lambda out, t: out[:2, 0], (X, y))
