"""The one evaluator: strategies agree, chunks and batches do not change values, progress/cancel."""

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Cancelled, Problem, directions
from landscape_core.evaluate import evaluate_points
from landscape_core.execution import Runner, Strategy


def data(n=33, shape=(6,), classes=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    return X, torch.randint(0, classes, (n,), generator=gen)


def models():
    """Sequentials that exercise every plan step of the affine path, and a non-Sequential."""
    torch.manual_seed(0)

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 6)
            self.b = nn.Linear(6, 4)

        def forward(self, x):
            return self.b(x + torch.tanh(self.a(x)))

    return {
        "mlp": (nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4)), (6,)),
        "bn": (
            nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 4)),
            (6,),
        ),
        "cnn": (
            nn.Sequential(
                nn.Conv2d(1, 3, 3),
                nn.ReLU(),
                nn.Conv2d(3, 2, 3),
                nn.BatchNorm2d(2),
                nn.Flatten(),
                nn.Linear(2 * 2 * 2, 4),
            ),
            (1, 6, 6),
        ),
        "residual": (Residual(), (6,)),
    }


def make_problem(name, batch_size=None, **kwargs):
    model, shape = models()[name]
    model = model.double()
    if name in ("bn", "cnn"):  # non-trivial running statistics
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    X, y = data(shape=shape)
    Xv, yv = data(n=17, shape=shape, seed=1)
    return Problem(model, F.cross_entropy, (X, y), val=(Xv, yv), batch_size=batch_size, **kwargs)


def plane_coeffs(steps=5):
    a, b = np.meshgrid(np.linspace(-1, 1, steps), np.linspace(-0.5, 1.5, steps), indexing="ij")
    return np.stack([a.ravel(), b.ravel()], axis=1)


def reference(problem, center, basis, coeffs):
    """Exact float64 reference: the model called directly at every point."""
    out = {q: [] for q in problem.quantities}
    for c in coeffs:
        theta = center + torch.as_tensor(c, dtype=torch.float64) @ basis
        for q, v in problem.evaluate(theta).items():
            out[q].append(v[0])
    return {q: np.array(v) for q, v in out.items()}


@pytest.mark.parametrize("name", ["mlp", "bn", "cnn", "residual"])
def test_strategies_agree_with_each_other_and_the_direct_call(name, caplog):
    problem = make_problem(name)
    basis = directions.random(problem, count=2, seed=1)
    coeffs = plane_coeffs()
    results = {}
    for strategy in ("affine", "vmap", "loop", "folded"):
        problem.strategy = strategy
        results[strategy] = evaluate_points(problem, problem.theta0, basis, coeffs)
    assert not [r for r in caplog.records if "failed" in r.getMessage()]  # no silent fallback
    problem.strategy = None
    default = Runner(problem, problem.theta0, basis, problem.buffers).strategy
    # convolution nets fold their BatchNorms (landscape_core.folding); other Sequentials reuse
    # the affine first layer
    want = {"cnn": Strategy.FOLDED, "residual": Strategy.LOOP}.get(name, Strategy.AFFINE)
    assert default is want
    # the direct call: a plain model with the point's parameters, in eval mode
    model = problem.model
    direct = {q: [] for q in problem.quantities}
    for c in coeffs:
        theta = problem.theta0 + torch.as_tensor(c) @ basis
        torch.nn.utils.vector_to_parameters(theta, [p for p in model.parameters()])
        with torch.no_grad():
            for split in ("train", "val"):
                s = problem.splits[split]
                logits = model(s.X)
                direct[f"{split}_loss"].append(float(F.cross_entropy(logits, s.y)))
                direct[f"{split}_accuracy"].append(float((logits.argmax(1) == s.y).double().mean()))
    torch.nn.utils.vector_to_parameters(problem.theta0, [p for p in model.parameters()])
    for strategy, values in results.items():
        for q, want in direct.items():
            np.testing.assert_allclose(values[q], want, rtol=1e-12, atol=1e-14, err_msg=f"{strategy} {q}")


def test_chunks_and_batches_do_not_change_values():
    problem = make_problem("mlp")
    small = make_problem("mlp", batch_size=7)
    basis = directions.random(problem, count=2, seed=2)
    coeffs = plane_coeffs(7)
    base = evaluate_points(problem, problem.theta0, basis, coeffs)
    for kwargs in ({"chunk_size": 1}, {"chunk_size": 5}, {"memory_budget": 1}):
        other = evaluate_points(problem, problem.theta0, basis, coeffs, **kwargs)
        for q in base:
            np.testing.assert_allclose(other[q], base[q], rtol=1e-13)
    batched = evaluate_points(small, small.theta0, basis, coeffs)
    for q in base:
        np.testing.assert_allclose(batched[q], base[q], rtol=1e-6, atol=1e-12)


def test_float32_plane_matches_float64_to_float32_rounding():
    p64 = make_problem("mlp")
    X, y = p64.splits["train"].X.float(), p64.splits["train"].y
    p32 = Problem(p64.model.float(), F.cross_entropy, (X, y), metrics={})
    basis = directions.random(p32, count=2, seed=3)
    coeffs = plane_coeffs(9)
    got = evaluate_points(p32, p32.theta0, basis, coeffs)["train_loss"]
    p64_train = Problem(p32.model.double(), F.cross_entropy, (X.double(), y), metrics={})
    want = reference(p64_train, p64_train.theta0, basis.double(), coeffs)["train_loss"]
    np.testing.assert_allclose(got, want, rtol=2e-5)


def test_frozen_parameters_stay_at_their_values():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)).double()
    model[2].bias.requires_grad_(False)
    with torch.no_grad():
        model[2].bias.fill_(0.7)
    X, y = data()
    problem = Problem(model, F.cross_entropy, (X, y), metrics={})
    assert "2.bias" not in problem.space.names
    basis = directions.random(problem, count=2, seed=4)
    coeffs = plane_coeffs()
    got = evaluate_points(problem, problem.theta0, basis, coeffs)["train_loss"]
    want = []
    for c in coeffs:
        w = problem.space.unflatten(problem.theta0 + torch.as_tensor(c) @ basis)
        h = torch.relu(F.linear(X, w["0.weight"], w["0.bias"]))
        want.append(float(F.cross_entropy(F.linear(h, w["2.weight"], torch.full((4,), 0.7).double()), y)))
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_buffers_override_is_used():
    problem = make_problem("bn")
    other = {k: v.clone() for k, v in problem.buffers.items()}
    other["1.running_mean"] += 1.0
    basis = directions.random(problem, count=1, seed=5)
    coeffs = np.array([[0.0], [0.5]])
    got = evaluate_points(problem, problem.theta0, basis, coeffs, buffers=other)
    want = evaluate_points(problem.at(problem.theta0, buffers=other), problem.theta0, basis, coeffs)
    default = evaluate_points(problem, problem.theta0, basis, coeffs)
    np.testing.assert_array_equal(got["train_loss"], want["train_loss"])
    assert not np.allclose(got["train_loss"], default["train_loss"])


def test_progress_and_cancel_between_chunks():
    problem = make_problem("mlp")
    basis = directions.random(problem, count=2, seed=6)
    coeffs = plane_coeffs(6)
    seen = []
    evaluate_points(problem, problem.theta0, basis, coeffs, progress=lambda d, t: seen.append((d, t)), chunk_size=10)
    assert seen[0] == (0, 36) and seen[-1] == (36, 36)
    assert [d for d, _ in seen] == [0, 10, 20, 30, 36]
    cancel = threading.Event()
    done = []

    def progress(d, t):
        done.append(d)
        if d >= 10:
            cancel.set()

    with pytest.raises(Cancelled, match="cancelled after 10 of 36 points"):
        evaluate_points(problem, problem.theta0, basis, coeffs, progress=progress, cancel=cancel, chunk_size=10)
    assert done == [0, 10]


def test_single_point_and_bad_arguments():
    problem = make_problem("mlp")
    values = evaluate_points(problem, problem.theta0, None, None)
    assert {q: v[0] for q, v in values.items()} == problem.base
    basis = directions.random(problem, count=2, seed=7)
    with pytest.raises(ValueError, match=r"coeffs must have shape \(k, 2\); got \(3, 3\)"):
        evaluate_points(problem, problem.theta0, basis, np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"split 'test' is not available; this problem has \['train', 'val'\]"):
        evaluate_points(problem, problem.theta0, basis, np.zeros((3, 2)), splits=["test"])
    with pytest.raises(ValueError, match=r"basis has shape \(2, 5\)"):
        evaluate_points(problem, problem.theta0, torch.zeros(2, 5), np.zeros((3, 2)))


def test_affine_prefix_respects_the_memory_budget():
    problem = make_problem("mlp")
    basis = directions.random(problem, count=2, seed=9)
    assert Runner(problem, problem.theta0, basis, problem.buffers).strategy is Strategy.AFFINE
    # centre, two basis vectors and a partial sum of 8 float64 features for 33 + 17 samples
    need = 4 * 50 * 8 * 8
    assert Runner(problem, problem.theta0, basis, problem.buffers, memory_budget=need).strategy is Strategy.AFFINE
    small = Runner(problem, problem.theta0, basis, problem.buffers, memory_budget=need - 1)
    assert small.strategy is Strategy.LOOP
    coeffs = plane_coeffs()
    a = evaluate_points(problem, problem.theta0, basis, coeffs)
    b = evaluate_points(problem, problem.theta0, basis, coeffs, memory_budget=need - 1)
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-13)


@pytest.mark.parametrize("layout", ["row-major", "class-major"])
def test_fast_accuracy_and_cross_entropy_equal_the_plain_functions(layout):
    from landscape_core.evaluate import _per_point
    from landscape_core.problem import accuracy

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 40, 4, generator=gen, dtype=torch.float64)
    logits[1, 3] = 0.5  # a four-way tie: arg-max takes class 0
    logits[2, 7, 1:] = logits[2, 7, 0]  # tie again
    logits[3, 9, 2] = float("nan")
    y = torch.randint(0, 4, (40,), generator=gen)
    y[3] = 0
    if layout == "class-major":
        logits = logits.transpose(1, 2).contiguous().transpose(1, 2)
    want_acc = [float(accuracy(o, y)) for o in logits]
    want_ce = [float(F.cross_entropy(o, y)) for o in logits]
    np.testing.assert_array_equal(_per_point(accuracy, logits, y).numpy(), want_acc)
    np.testing.assert_allclose(_per_point(F.cross_entropy, logits, y).numpy(), want_ce, rtol=1e-14)
    np.testing.assert_allclose(_per_point(nn.CrossEntropyLoss(), logits, y).numpy(), want_ce, rtol=1e-14)
    # a cross-entropy with options goes the generic (vmap) way and keeps its meaning
    smooth = nn.CrossEntropyLoss(label_smoothing=0.1)
    np.testing.assert_allclose(_per_point(smooth, logits, y).numpy(), [float(smooth(o, y)) for o in logits], rtol=1e-14)


def test_unknown_strategy_is_refused():
    problem = make_problem("mlp")
    problem.strategy = "fast"
    with pytest.raises(
        ValueError, match=r"problem.strategy must be one of \['affine', 'vmap', 'loop', 'folded'\] or None; got 'fast'"
    ):
        problem.evaluate(problem.theta0)


def test_train_mode_bn_is_per_batch_and_loops():
    problem = make_problem("bn", mode="train", metrics={})
    problem.model.eval()  # only the problem's mode counts
    basis = directions.random(problem, count=2, seed=8)
    assert Runner(problem, problem.theta0, basis, problem.buffers).strategy is Strategy.LOOP
