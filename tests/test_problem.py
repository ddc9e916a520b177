"""Problem: exact full-split values, data inputs, modes, the user's model untouched, bad input."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from landscape_core import Problem


def classification_data(n=40, d=5, classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    return X, y


def mlp(d=5, h=7, classes=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, classes)).double()


def numpy_ce_and_accuracy(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean()), float((logits.argmax(axis=1) == y).mean())


def test_evaluate_equals_calling_the_model_directly():
    model = mlp()
    X, y = classification_data()
    Xv, yv = classification_data(n=13, seed=1)
    problem = Problem(model, F.cross_entropy, (X, y), val=(Xv, yv))
    gen = torch.Generator().manual_seed(2)
    thetas = problem.theta0 + 0.3 * torch.randn(4, problem.space.size, generator=gen, dtype=torch.float64)
    values = problem.evaluate(thetas)
    assert set(values) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    for i, theta in enumerate(thetas):
        reference = mlp()
        torch.nn.utils.vector_to_parameters(theta, reference.parameters())
        with torch.no_grad():
            for split, (Xs, ys) in (("train", (X, y)), ("val", (Xv, yv))):
                loss, acc = numpy_ce_and_accuracy(reference(Xs).numpy(), ys.numpy())
                assert values[f"{split}_loss"][i] == pytest.approx(loss, rel=1e-12)
                assert values[f"{split}_accuracy"][i] == pytest.approx(acc, abs=1e-15)
                assert values[f"{split}_loss"].dtype == np.float64
    with torch.no_grad():
        assert problem.base["train_loss"] == pytest.approx(float(F.cross_entropy(model(X), y)), rel=1e-12)


def test_logistic_regression_loss_against_numpy():
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(60, 3, generator=gen, dtype=torch.float64)
    y = (X[:, :1] + 0.5 * torch.randn(60, 1, generator=gen, dtype=torch.float64) > 0).double()
    model = nn.Sequential(nn.Linear(3, 1)).double()
    problem = Problem(model, F.binary_cross_entropy_with_logits, (X, y))
    assert set(problem.base) == {"train_loss"}  # float targets: no accuracy
    thetas = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    got = problem.evaluate(thetas)["train_loss"]
    Xn, yn = X.numpy(), y.numpy()[:, 0]
    for i, theta in enumerate(thetas.numpy()):
        z = Xn @ theta[:3] + theta[3]
        want = np.mean(np.logaddexp(0.0, z) - yn * z)
        assert got[i] == pytest.approx(want, rel=1e-12)


def test_batch_size_7_equals_the_whole_split():
    X, y = classification_data(n=45)
    whole = Problem(mlp(), F.cross_entropy, (X, y))
    small = Problem(mlp(), F.cross_entropy, (X, y), batch_size=7)
    assert small.splits["train"].batch_size == 7
    thetas = whole.theta0 + 0.5 * torch.randn(3, whole.space.size, dtype=torch.float64)
    a, b = whole.evaluate(thetas), small.evaluate(thetas)
    for q in a:
        np.testing.assert_allclose(b[q], a[q], rtol=1e-6, atol=1e-12)
    # float32 model too: still within 1e-6
    X32 = X.float()
    w32 = Problem(mlp().float(), F.cross_entropy, (X32, y))
    s32 = Problem(mlp().float(), F.cross_entropy, (X32, y), batch_size=7)
    np.testing.assert_allclose(s32.base["train_loss"], w32.base["train_loss"], rtol=1e-6)


def test_val_none_gives_train_keys_only_and_accuracy_only_for_classification():
    X, y = classification_data()
    problem = Problem(mlp(), F.cross_entropy, (X, y))
    assert problem.quantities == ["train_loss", "train_accuracy"]
    assert set(problem.evaluate(problem.theta0)) == {"train_loss", "train_accuracy"}
    # regression: no accuracy
    reg = Problem(nn.Sequential(nn.Linear(5, 1)).double(), F.mse_loss, (X, X[:, :1]))
    assert reg.quantities == ["train_loss"]
    # explicit metrics={} removes accuracy; a named built-in adds it
    assert Problem(mlp(), F.cross_entropy, (X, y), metrics={}).quantities == ["train_loss"]
    assert Problem(mlp(), F.cross_entropy, (X, y), metrics=["accuracy"]).quantities == ["train_loss", "train_accuracy"]


def test_custom_metric():
    X, y = classification_data()
    problem = Problem(mlp(), F.cross_entropy, (X, y), metrics={"top0": lambda out, t: (t == 0).double().mean()})
    assert problem.base["train_top0"] == pytest.approx(float((y == 0).double().mean()))


def test_user_model_is_never_mutated():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    model.train()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    X, y = classification_data()
    for mode in ("eval", "train"):
        problem = Problem(model, F.cross_entropy, (X, y), mode=mode)
        problem.evaluate(problem.theta0 + torch.randn(3, problem.space.size, dtype=torch.float64))
        problem.full_loss(problem.theta0).item()
    assert model.training  # the flag is unchanged
    assert all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_eval_mode_by_default_dropout_off():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 3)).double().train()
    X, y = classification_data()
    problem = Problem(model, F.cross_entropy, (X, y))
    assert problem.mode.value == "eval"
    a = problem.evaluate(problem.theta0)["train_loss"]
    b = problem.evaluate(problem.theta0)["train_loss"]
    assert a[0] == b[0] == problem.base["train_loss"]
    with torch.no_grad():
        assert a[0] == pytest.approx(float(F.cross_entropy(model.eval()(X), y)), rel=1e-12)


def test_train_mode_is_explicit_and_uses_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)).double()
    with torch.no_grad():
        model[1].running_mean.fill_(3.0)  # far from the batch statistics
    X, y = classification_data()
    evaluated = Problem(model, F.cross_entropy, (X, y))
    trained = Problem(model, F.cross_entropy, (X, y), mode="train")
    assert trained.mode.value == "train"
    with torch.no_grad():
        eval_ref = float(F.cross_entropy(copy.deepcopy(model).eval()(X), y))
        train_ref = float(F.cross_entropy(copy.deepcopy(model).train()(X), y))
    assert evaluated.base["train_loss"] == pytest.approx(eval_ref, rel=1e-12)
    assert trained.base["train_loss"] == pytest.approx(train_ref, rel=1e-12)
    # train-mode BatchNorm must not drift the stored running statistics between evaluations
    buffers = {k: v.clone() for k, v in trained.buffers.items()}
    first = trained.evaluate(trained.theta0)["train_loss"]
    second = trained.evaluate(trained.theta0)["train_loss"]
    assert first[0] == second[0]
    for k, v in trained.buffers.items():
        assert torch.equal(v, buffers[k]), k


def test_dataloader_and_dataset_inputs_match_tensors():
    X, y = classification_data(n=50)
    Xv, yv = classification_data(n=20, seed=4)
    ref = Problem(mlp(), F.cross_entropy, (X, y), val=(Xv, yv))
    from_dataset = Problem(mlp(), F.cross_entropy, TensorDataset(X, y), val=TensorDataset(Xv, yv))
    from_loader = Problem(
        mlp(), F.cross_entropy, DataLoader(TensorDataset(X, y), batch_size=9), val=DataLoader(TensorDataset(Xv, yv))
    )
    from_numpy = Problem(mlp(), F.cross_entropy, (X.numpy(), y.numpy()), val=(Xv.numpy(), yv.numpy()))
    thetas = ref.theta0 + 0.2 * torch.randn(2, ref.space.size, dtype=torch.float64)
    want = ref.evaluate(thetas)
    for other in (from_dataset, from_loader, from_numpy):
        got = other.evaluate(thetas)
        for q in want:
            np.testing.assert_allclose(got[q], want[q], rtol=1e-13)


def test_evaluate_many_points_and_nan_points_stay_isolated():
    X, y = classification_data()
    problem = Problem(mlp(), F.cross_entropy, (X, y), metrics={})
    thetas = problem.theta0 + 0.1 * torch.randn(150, problem.space.size, dtype=torch.float64)
    thetas[70, 3] = float("nan")
    seen = []
    values = problem.evaluate(thetas, progress=lambda d, t: seen.append((d, t)))["train_loss"]
    assert np.isnan(values[70]) and np.isfinite(np.delete(values, 70)).all()
    for i in (0, 69, 71, 149):
        assert values[i] == pytest.approx(problem.full_loss(thetas[i]).item(), rel=1e-12)
    assert seen[-1] == (150, 150)


def test_subset_equals_a_problem_on_those_samples():
    X, y = classification_data(n=60)
    problem = Problem(mlp(), F.cross_entropy, (X, y), batch_size=8)
    small = problem.subset(25, seed=3)
    assert small.splits["train"].n == 25
    idx = torch.randperm(60, generator=torch.Generator().manual_seed(3))[:25]
    direct = Problem(mlp(), F.cross_entropy, (X[idx], y[idx]))
    assert small.base["train_loss"] == pytest.approx(direct.base["train_loss"], rel=1e-12)
    assert problem.splits["train"].n == 60  # the original is untouched


def test_full_and_batch_loss_are_differentiable():
    X, y = classification_data()
    problem = Problem(mlp(), F.cross_entropy, (X, y), batch_size=11)
    theta = problem.theta0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(problem.full_loss(theta), theta)
    model = mlp()
    F.cross_entropy(model(X), y).backward()
    want = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)


def test_at_and_describe():
    X, y = classification_data()
    problem = Problem(mlp(), F.cross_entropy, (X, y))
    theta = problem.theta0 * 0.5
    moved = problem.at(theta)
    assert moved.base["train_loss"] == pytest.approx(problem.full_loss(theta).item(), rel=1e-12)
    assert problem.model_hash() != moved.model_hash()
    info = problem.describe()
    assert info["parameters"] == problem.space.size and info["samples"] == {"train": 40}
    assert len(info["model_sha256"]) == 64 and len(info["data_sha256"]) == 64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_uses_vmap_and_matches_cpu():
    from landscape_core.execution import Runner, Strategy

    X, y = classification_data()
    cpu = Problem(mlp(), F.cross_entropy, (X, y))
    gpu = Problem(mlp(), F.cross_entropy, (X, y), device="cuda")
    basis = torch.randn(2, cpu.space.size, dtype=torch.float64)
    runner = Runner(gpu, gpu.theta0, basis.cuda(), gpu.buffers)
    assert runner.strategy is Strategy.VMAP
    thetas = cpu.theta0 + 0.3 * torch.randn(5, cpu.space.size, dtype=torch.float64)
    a, b = cpu.evaluate(thetas), gpu.evaluate(thetas.cuda())
    for q in a:
        np.testing.assert_allclose(b[q], a[q], rtol=1e-10)


# -- bad input ------------------------------------------------------------------


def test_output_label_shape_mismatch():
    X, y = classification_data()
    with pytest.raises(ValueError, match=r"train: inputs have 40 samples but labels have 39"):
        Problem(mlp(), F.cross_entropy, (X, y[:39]))
    with pytest.raises(ValueError, match=r"train: loss\(output, target\) failed for output shape \(16, 3\)"):
        Problem(mlp(), F.mse_loss, (X, torch.randn(40, 2, dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"train: the model output has 5 rows for 16 labels"):
        Problem(lambda_module(lambda x: x[:5, :3]), F.cross_entropy, (X, y))
    regression = nn.Sequential(nn.Linear(5, 1)).double()
    with pytest.raises(ValueError, match=r"output has shape \(16, 1\) but the labels have shape \(16,\).*\(16, 1\)"):
        Problem(regression, lambda out, t: ((out - t) ** 2).mean(), (X, X[:, 0]))
    with pytest.raises(ValueError, match=r"val: the model failed on a batch of inputs of shape \(16, 4\)"):
        Problem(mlp(), F.cross_entropy, (X, y), val=(X[:, :4], y))


def lambda_module(fn):
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = mlp()

        def forward(self, x):
            return fn(self.inner(x))

    return Wrapped()


def test_empty_data():
    X, y = classification_data()
    with pytest.raises(ValueError, match=r"train is empty \(0 samples\)"):
        Problem(mlp(), F.cross_entropy, (X[:0], y[:0]))
    with pytest.raises(ValueError, match=r"val is empty \(0 samples\)"):
        Problem(mlp(), F.cross_entropy, (X, y), val=TensorDataset(X[:0], y[:0]))


def test_non_finite_base_loss():
    X, y = classification_data()
    model = mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"loss at the trained parameters is not finite.*train_loss.*must be finite"):
        Problem(model, F.cross_entropy, (X, y))


def test_labels_out_of_range():
    X, y = classification_data()
    y = y.clone()
    y[0] = 5
    with pytest.raises(ValueError, match=r"train labels range over \[0, 5\].*outputs 3 classes.*\[0, 2\]"):
        Problem(mlp(), F.cross_entropy, (X, y))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer or None; got 0"),
        ({"mode": "training"}, r"mode must be one of \['eval', 'train'\]; got 'training'"),
        ({"metrics": ["f1"]}, r"unknown metric 'f1'; built-ins are \['accuracy'\]"),
        ({"train": [1, 2, 3]}, r"train must be an \(X, y\) tuple"),
        ({"model": "net"}, "model must be a torch.nn.Module; got str"),
        ({"device": "nodevice"}, "device 'nodevice' is not usable here"),
    ],
)
def test_bad_arguments(kwargs, pattern):
    X, y = classification_data()
    args = {"model": mlp(), "loss": F.cross_entropy, "train": (X, y), **kwargs}
    with pytest.raises(ValueError, match=pattern):
        Problem(**args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused():
    X, y = classification_data()
    with pytest.raises(ValueError, match="device 'cuda' is not usable here"):
        Problem(mlp(), F.cross_entropy, (X, y), device="cuda")


def test_evaluate_rejects_wrong_length():
    X, y = classification_data()
    problem = Problem(mlp(), F.cross_entropy, (X, y))
    with pytest.raises(
        ValueError,
        match=rf"thetas has shape \(2, 5\); this model's parameter space needs \(\.\.\., {problem.space.size}\)",
    ):
        problem.evaluate(torch.zeros(2, 5, dtype=torch.float64))
