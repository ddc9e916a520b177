"""Built-in demos: data splits, trained quality, Keskar sharpness, determinism, cache, BatchNorm
buffers and the logistic-regression optimum against exact float64 computations."""

import math
import time
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape_core import cache as cache_mod
from landscape_core import demo_models as dm
from landscape_core import demos, directions, surface
from landscape_core.problem import Mode
from landscape_core.workspace import Workspace

BUILTIN = ["digits-mlp", "digits-seeds", "digits-bn-cnn", "logistic-blobs"]
# minimum validation accuracy of A and B (measured: 0.978/0.971, 0.978/0.978, 0.987/0.991, 0.855)
VAL_ACCURACY = {"digits-mlp": 0.95, "digits-seeds": 0.95, "digits-bn-cnn": 0.97, "logistic-blobs": 0.80}


@pytest.fixture(scope="module")
def workspaces() -> dict[str, Workspace]:
    return {name: demos.load(name) for name in BUILTIN}


def _direct_accuracy(problem, X, y) -> float:
    """Accuracy from the model object itself (no evaluator), eval mode, float64 count."""
    with torch.no_grad():
        logits = problem.model.eval()(X)
    return float((logits.argmax(1) == y).double().mean())


# -- registry ------------------------------------------------------------------------------
def test_list_demos_names_the_builtins_first():
    names = demos.list_demos()
    assert names[:4] == BUILTIN
    assert set(names[4:]) <= {"text-sentiment", "text-contrastive"}


def test_unknown_name_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="digits-mlp") as err:
        demos.load("mnist")
    assert "'mnist'" in str(err.value)
    with pytest.raises(ValueError, match="logistic-blobs"):
        demos.describe(3)


def test_text_demo_is_listed_and_routed_only_when_available(monkeypatch):
    sentinel = object()
    fake = types.SimpleNamespace(load_workspace=lambda progress=None: sentinel, DESCRIPTION="Fake text demo.")
    monkeypatch.setattr(demos, "_text_demo", lambda: fake)
    demos.clear_memo("text-sentiment")
    try:
        assert demos.list_demos() == [*BUILTIN, "text-sentiment", "text-contrastive"]
        assert demos.load("text-sentiment", use_cache=False) is sentinel
        assert demos.describe("text-sentiment") == "Fake text demo."
        monkeypatch.setattr(demos, "_text_demo", lambda: None)
        assert demos.list_demos() == BUILTIN
        with pytest.raises(ValueError, match="text-sentiment"):
            demos.load("text-sentiment")
    finally:
        demos.clear_memo("text-sentiment")


@pytest.mark.parametrize("name", BUILTIN)
def test_describe_is_a_paragraph(name):
    text = demos.describe(name)
    assert len(text) > 200 and "\n" not in text and "Try" in text


# -- what every demo holds -------------------------------------------------------------------
@pytest.mark.parametrize("name", BUILTIN)
def test_demo_has_splits_good_accuracy_and_ordered_checkpoints(workspaces, name):
    ws = workspaces[name]
    assert ws.name == name and ws.description == demos.describe(name)
    for problem, ckpts in ((ws.problem, ws.checkpoints), (ws.compare, ws.compare_checkpoints)):
        if problem is None:
            assert name == "logistic-blobs" and ckpts == []
            continue
        assert problem.mode is Mode.EVAL
        train, val = problem.splits["train"], problem.splits["val"]
        expected = (1347, 450) if name.startswith("digits") else (400, 200)
        assert (train.n, val.n) == expected
        # the evaluator's accuracy is the model's own accuracy, and above the stated floor
        direct = _direct_accuracy(problem, val.X, val.y)
        assert problem.base["val_accuracy"] == pytest.approx(direct, abs=1e-6)  # float32 mean
        assert direct >= VAL_ACCURACY[name]
        assert problem.base["train_accuracy"] >= VAL_ACCURACY[name]
        # checkpoints: step 0 is the initialization, steps increase, the last one is the trained model
        steps = [c.step for c in ckpts]
        assert steps[0] == 0 and steps == sorted(set(steps))
        assert torch.equal(ckpts[-1].theta, problem.theta0)
        assert len({c.name for c in ckpts}) == len(ckpts)


def test_digits_split_is_a_partition_of_load_digits():
    from sklearn.datasets import load_digits

    (X_train, y_train), (X_val, y_val) = dm.digits(0)
    data = load_digits()
    full = sorted(zip([r.tobytes() for r in (data.data / 16.0).astype(np.float32)], data.target.tolist()))
    ours = sorted(zip([r.tobytes() for r in torch.cat([X_train, X_val]).numpy()], torch.cat([y_train, y_val]).tolist()))
    assert ours == full
    first = torch.from_numpy((data.data[:1347] / 16.0).astype(np.float32))
    assert not torch.equal(X_train, first)  # a seeded permutation, not the file order


def test_blobs_have_the_documented_classes():
    (X_train, y_train), (X_val, y_val) = dm.blobs(0)
    assert (X_train.shape, X_val.shape) == ((400, 2), (200, 2)) and X_train.dtype == torch.float32
    X, y = torch.cat([X_train, X_val]).double(), torch.cat([y_train, y_val])
    for c, mean in enumerate(dm.BLOB_MEANS):
        assert int((y == c).sum()) == 300
        # 300 unit-variance samples: the sample mean is within 4 standard errors (0.23) of the true mean
        assert torch.allclose(X[y == c].mean(0), torch.tensor(mean, dtype=torch.float64), atol=0.23)
    assert torch.equal(dm.blobs(0)[0][0], X_train) and not torch.equal(dm.blobs(1)[0][0], X_train)


def test_initial_checkpoint_is_the_seeded_initialization(workspaces):
    ws = workspaces["digits-seeds"]
    for ckpts, seed in ((ws.checkpoints, 1), (ws.compare_checkpoints, 2)):
        init = dm.digits_mlp(seed)
        assert torch.equal(ckpts[0].theta, ws.problem.space.flatten(dict(init.named_parameters())))
    assert not torch.equal(ws.checkpoints[0].theta, ws.compare_checkpoints[0].theta)
    mlp = workspaces["digits-mlp"]  # Keskar pair: both runs start from the same point
    assert torch.equal(mlp.checkpoints[0].theta, mlp.compare_checkpoints[0].theta)


# -- Keskar: the large-batch minimum is sharper ----------------------------------------------
def _mean_rise(problem, count=4, seed=0) -> np.ndarray:
    """Mean over alpha in [-0.5, 0.5] of L(theta0 + alpha d) - L(theta0), per filter-normalized direction."""
    d = directions.random(problem, count=count, norm="filter", seed=seed)
    rises = []
    for i in range(count):
        line = surface.line(problem, d[i], span=(-0.5, 0.5), steps=11, splits=["train"], use_cache=False)
        rises.append(line.values["train_loss"].mean() - problem.base["train_loss"])
    return np.array(rises)


def test_large_batch_minimum_is_sharper(workspaces):
    ws = workspaces["digits-mlp"]
    small, large = ws.problem, ws.compare
    assert ws.labels == ("small batch", "large batch")
    # a fair comparison: both fit the training set to about the same loss
    assert small.base["train_loss"] < 0.01 and large.base["train_loss"] < 0.01
    rise_small, rise_large = _mean_rise(small), _mean_rise(large)
    assert (rise_small > 0).all() and (rise_large > rise_small).all()
    assert rise_large.mean() > 2.5 * rise_small.mean()  # measured: about 4x
    assert large.base["val_loss"] > small.base["val_loss"]  # and it generalizes worse


# -- determinism and cache -------------------------------------------------------------------
def test_training_is_deterministic_without_cache():
    first = demos.load("logistic-blobs", use_cache=False)
    second = demos.load("logistic-blobs", use_cache=False)
    assert first is not second
    assert torch.equal(first.problem.theta0, second.problem.theta0)
    assert all(torch.equal(a.theta, b.theta) for a, b in zip(first.checkpoints, second.checkpoints, strict=True))
    # and the SGD path (two short MLP runs)
    train, _ = dm.digits(0)
    runs = [dm.train_sgd(dm.digits_mlp(3), train, batch_size=32, lr=0.1, epochs=2, momentum=0.9, seed=3) for _ in "ab"]
    for key, value in runs[0].snapshots.items():
        assert np.array_equal(value, runs[1].snapshots[key])


def test_cache_round_trip_is_bit_identical_and_fast(workspaces, monkeypatch):
    name = "digits-bn-cnn"
    memo = workspaces[name]
    entry = cache_mod.get(demos.cache_key(name))
    assert isinstance(entry, bytes) and entry[:2] == b"PK"  # an npz (zip) archive, not a pickle
    demos.clear_memo(name)

    def no_training(*args, **kwargs):
        raise AssertionError("a cached demo must not be retrained")

    monkeypatch.setattr(demos, "train", no_training)
    started = time.perf_counter()
    again = demos.load(name)
    elapsed = time.perf_counter() - started
    assert again is not memo and demos.load(name) is again  # rebuilt from disk, then memoized
    assert elapsed < 3.0  # measured 0.1-0.3 s on a busy 2-core machine
    for a, b in ((memo.problem, again.problem), (memo.compare, again.compare)):
        assert torch.equal(a.theta0, b.theta0)
        assert all(torch.equal(a.buffers[k], b.buffers[k]) for k in a.buffers)
        assert a.data_fingerprint() == b.data_fingerprint()
    for x, y in zip(memo.checkpoints, again.checkpoints, strict=True):
        assert x.name == y.name and x.step == y.step and torch.equal(x.theta, y.theta)
        assert all(torch.equal(x.buffers[k], y.buffers[k]) for k in x.buffers)


def test_progress_reports_every_epoch_then_done():
    calls = []
    demos.load("logistic-blobs", progress=lambda done, total: calls.append((done, total)), use_cache=False)
    total = demos.RECIPES["logistic-blobs"]["A"]["steps"]
    assert calls == [(i, total) for i in range(1, total + 1)]
    cached = []
    demos.load("logistic-blobs", progress=lambda done, total: cached.append((done, total)))
    assert cached[-1] == (total, total)


# -- BatchNorm checkpoints ---------------------------------------------------------------------
def test_bn_checkpoints_carry_their_own_running_statistics(workspaces):
    ws = workspaces["digits-bn-cnn"]
    batches_per_epoch = math.ceil(1347 / demos.RECIPES["digits-bn-cnn"]["A"]["batch_size"])
    for problem, ckpts in ((ws.problem, ws.checkpoints), (ws.compare, ws.compare_checkpoints)):
        names = set(problem.buffers)
        assert {"1.running_mean", "1.running_var", "1.num_batches_tracked", "5.running_mean"} <= names
        for c in ckpts:
            assert set(c.buffers) == names
            assert int(c.buffers["1.num_batches_tracked"]) == c.step * batches_per_epoch
        assert torch.equal(ckpts[0].buffers["1.running_mean"], torch.zeros(8))
        assert torch.equal(ckpts[0].buffers["5.running_var"], torch.ones(16))
        assert not torch.equal(ckpts[1].buffers["1.running_mean"], ckpts[2].buffers["1.running_mean"])
        assert not torch.equal(ckpts[1].buffers["5.running_var"], ckpts[2].buffers["5.running_var"])
        assert all(torch.equal(ckpts[-1].buffers[k], problem.buffers[k]) for k in names)
    # an epoch-5 checkpoint evaluated with its own statistics equals the model rebuilt at epoch 5
    ckpt = ws.checkpoints[5]
    model = dm.digits_bn_cnn(0)
    state = {**ws.problem.space.unflatten(ckpt.theta), **ckpt.buffers}
    model.load_state_dict({k: v.clone() for k, v in state.items()})
    val = ws.problem.splits["val"]
    values = ws.problem.at(ckpt.theta, ckpt.buffers).base
    assert values["val_accuracy"] == pytest.approx(_direct_accuracy(types.SimpleNamespace(model=model), val.X, val.y))


# -- logistic regression: the optimum, the loss and the Hessian in float64 ----------------------
def test_logistic_loss_matches_numpy_float64_and_gradient_vanishes(workspaces):
    problem = workspaces["logistic-blobs"].problem
    params = problem.space.unflatten(problem.theta0)
    W, b = params["weight"].double().numpy(), params["bias"].double().numpy()
    for split in ("train", "val"):
        X = problem.splits[split].X.double().numpy()
        y = problem.splits[split].y.numpy()
        logits = X @ W.T + b
        log_norm = np.logaddexp(logits[:, 0], logits[:, 1])
        loss = np.mean(log_norm - logits[np.arange(len(y)), y])
        assert problem.base[f"{split}_loss"] == pytest.approx(loss, rel=1e-6)
        assert problem.base[f"{split}_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y), abs=1e-6)
    grad = torch.func.grad(problem.full_loss)(problem.theta0)
    assert grad.norm() < 1e-3
    # in float64 at the same point the gradient is at rounding level: this is the optimum
    X = problem.splits["train"].X.double()
    y = problem.splits["train"].y
    theta = problem.theta0.double().requires_grad_(True)
    loss = F.cross_entropy(X @ theta[:4].reshape(2, 2).T + theta[4:], y)
    (grad64,) = torch.autograd.grad(loss, theta)
    assert grad64.norm() < 1e-5


def test_logistic_hessian_closed_form(workspaces):
    problem = workspaces["logistic-blobs"].problem
    X = problem.splits["train"].X.double()
    y = problem.splits["train"].y

    def loss(theta):
        return F.cross_entropy(X @ theta[:4].reshape(2, 2).T + theta[4:], y)

    theta = problem.theta0.double()
    exact = torch.autograd.functional.hessian(loss, theta).numpy()
    closed = dm.logistic_hessian(X.numpy(), theta[:4].reshape(2, 2).numpy(), theta[4:].numpy())
    np.testing.assert_allclose(closed, exact, atol=1e-12)
    eig = np.linalg.eigvalsh(closed)
    assert np.all(np.abs(eig[:3]) < 1e-12) and np.all(eig[3:] > 1e-3)  # three flat directions, convex
    xt = np.concatenate([X.numpy(), np.ones((len(X), 1))], axis=1)
    z = xt @ np.array([*(theta[2:4] - theta[0:2]).numpy(), float(theta[5] - theta[4])])
    p = 1 / (1 + np.exp(-z))
    h3 = (xt * (p * (1 - p))[:, None]).T @ xt / len(X)
    np.testing.assert_allclose(eig[3:], 2 * np.linalg.eigvalsh(h3), rtol=1e-10)
