"""BatchNorm folded into convolutions, channels-last (landscape_core.folding): the values equal
the plain per-point loop's (1e-5 relative in float32, 1e-12 in float64) and the centre cell
equals the base loss bit for bit, on several nets, losses and batch sizes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, directions
from landscape_core.evaluate import evaluate_points
from landscape_core.execution import Runner, Strategy
from landscape_core.folding import FoldedForward
from landscape_core.nets import ResNetCifar, synthetic_images

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: one thread is fastest and steadiest


class SharedConv(nn.Module):
    """A convolution feeding its BatchNorm and a skip: it must not be folded."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        h = self.conv(x)
        return self.fc(torch.flatten(self.bn(h) + h, 1))


class ViewAfterConv(nn.Module):
    """``view`` on a conv output: fails on a channels-last tensor, so the plain layout is used."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 6 * 6, 3)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.view(h.shape[0], -1))


class ControlFlow(nn.Module):
    """Data-dependent control flow (no fx trace of it exists); the probe forward finds its pair."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 6 * 6, 3)

    def forward(self, x):
        h = self.bn(self.conv(x))
        if h.sum() > 0:
            h = torch.relu(h)
        return self.fc(torch.flatten(h, 1))


def nets():
    torch.manual_seed(0)
    return {
        "sequential": (
            nn.Sequential(
                nn.Conv2d(2, 4, 3, bias=False),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.Conv2d(4, 3, 3),
                nn.BatchNorm2d(3, affine=False),
                nn.Flatten(),
                nn.Linear(3 * 4 * 4, 3),
            ),
            (2, 8, 8),
            2,
        ),
        "resnet": (ResNetCifar(depth=8, width=4, classes=3), (3, 8, 8), 7),
        "conv1d": (
            nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(24, 3)),
            (2, 8),
            1,
        ),
        "shared": (SharedConv(), (2, 8, 8), 0),
        "view": (ViewAfterConv(), (2, 8, 8), 1),
    }


def make_problem(name, dtype=torch.float32, loss=F.cross_entropy, batch_size=None, n=24, **kwargs):
    model, shape, _ = nets()[name]
    model = model.to(dtype)
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():  # non-trivial running statistics and affine parameters
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5, generator=gen)
            module.running_var.uniform_(0.5, 2.0, generator=gen)
            if module.affine:
                module.weight.data.uniform_(0.5, 1.5, generator=gen)
                module.bias.data.uniform_(-0.3, 0.3, generator=gen)
    if len(shape) == 3 and shape[0] == 3:
        X, y = synthetic_images(n, seed=2, classes=3, size=shape[1])
    else:
        X = torch.randn(n, *shape, generator=gen)
        y = torch.randint(0, 3, (n,), generator=gen)
    return Problem(model, loss, (X.to(dtype), y), batch_size=batch_size, **kwargs)


def plane(problem, seed=1, steps=5):
    basis = directions.random(problem, count=2, norm="filter", seed=seed)
    a, b = np.meshgrid(np.linspace(-1, 1, steps), np.linspace(-1, 1, steps), indexing="ij")
    return basis, np.stack([a.ravel(), b.ravel()], axis=1)


def loop_values(problem, basis, coeffs, **kwargs):
    problem.strategy = "loop"
    try:
        return evaluate_points(problem, problem.theta0, basis, coeffs, **kwargs)
    finally:
        problem.strategy = None


LOSSES = {
    "plain": F.cross_entropy,
    "weighted": nn.CrossEntropyLoss(weight=torch.tensor([0.2, 1.0, 3.0])),
    "ignore_index": nn.CrossEntropyLoss(ignore_index=0),
}


@pytest.mark.parametrize("name", ["sequential", "resnet", "conv1d", "shared", "view"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_folded_values_equal_the_plain_loop_and_the_centre_is_the_base(name, dtype, caplog):
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    for loss_name, batch_size in (("plain", None), ("weighted", 7), ("ignore_index", None)):
        loss = LOSSES[loss_name]
        if dtype == torch.float64 and loss_name == "weighted":
            loss = nn.CrossEntropyLoss(weight=loss.weight.double())
        problem = make_problem(name, dtype=dtype, loss=loss, batch_size=batch_size)
        basis, coeffs = plane(problem, steps=3)
        runner = Runner(problem, problem.theta0, basis, problem.buffers)
        assert runner.strategy is Strategy.FOLDED, (name, loss_name)
        got = evaluate_points(problem, problem.theta0, basis, coeffs)
        want = loop_values(problem, basis, coeffs)
        centre = len(coeffs) // 2
        assert not coeffs[centre].any()
        for q in want:
            np.testing.assert_allclose(got[q], want[q], rtol=rtol, atol=1e-7, err_msg=f"{name} {loss_name} {q}")
            assert got[q][centre] == problem.base[q], (name, loss_name, q)  # bit for bit
    assert not [r for r in caplog.records if "failed" in r.getMessage()]  # no silent fallback


def test_what_is_folded_and_the_layout():
    expected = {name: pairs for name, (_, _, pairs) in nets().items()}
    for name, pairs in expected.items():
        folded = FoldedForward.build(make_problem(name))
        assert folded is not None, name
        assert len(folded.pairs) == pairs, name
        # channels-last for 2-D convolution nets, except where the model views a conv output
        assert folded.channels_last is (name not in ("conv1d", "view")), name


def test_points_batched_per_forward_equal_the_loop():
    """The vmapped (GPU default) path, run here on the CPU."""
    for name in ("sequential", "resnet"):
        problem = make_problem(name, batch_size=11)
        basis, coeffs = plane(problem, seed=3, steps=3)
        c = torch.as_tensor(coeffs)
        for b, (X, _, _) in enumerate(problem.splits["train"].batches()):
            batched = Runner(problem, problem.theta0, basis, problem.buffers, batched=True)
            assert batched.strategy is Strategy.FOLDED
            problem.strategy = "loop"
            loop = Runner(problem, problem.theta0, basis, problem.buffers)
            problem.strategy = None
            got = torch.cat(batched.outputs(c, X, ("train", b)))
            want = torch.cat(loop.outputs(c, X, ("train", b)))
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_given_running_statistics_are_the_ones_folded():
    problem = make_problem("sequential", dtype=torch.float64)
    basis, coeffs = plane(problem, seed=4, steps=3)
    other = {k: (v * 1.7 + 0.1 if v.is_floating_point() else v) for k, v in problem.buffers.items()}
    got = evaluate_points(problem, problem.theta0, basis, coeffs, buffers=other)
    want = loop_values(problem, basis, coeffs, buffers=other)
    plain = evaluate_points(problem, problem.theta0, basis, coeffs)
    np.testing.assert_allclose(got["train_loss"], want["train_loss"], rtol=1e-12)
    assert np.abs(got["train_loss"] - plain["train_loss"]).max() > 1e-3  # the statistics do matter here


class DictInputs(nn.Module):
    """Called as ``model(**X)`` with ``X = {"image": ..., "scale": ...}``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 6 * 6, 3)

    def forward(self, image, scale):
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(image))), 1)) * scale


def test_dict_inputs_fold_and_equal_the_loop():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(5)
    model = DictInputs()
    model.bn.running_mean.uniform_(-0.5, 0.5, generator=gen)
    model.bn.running_var.uniform_(0.5, 2.0, generator=gen)
    X = {"image": torch.randn(20, 2, 8, 8, generator=gen), "scale": torch.rand(20, 1, generator=gen) + 0.5}
    problem = Problem(model, F.cross_entropy, (X, torch.randint(0, 3, (20,), generator=gen)), batch_size=8)
    folded = FoldedForward.build(problem)
    assert folded is not None and len(folded.pairs) == 1 and folded.channels_last
    basis, coeffs = plane(problem, steps=3)
    assert Runner(problem, problem.theta0, basis, problem.buffers).strategy is Strategy.FOLDED
    got = evaluate_points(problem, problem.theta0, basis, coeffs)
    want = loop_values(problem, basis, coeffs)
    np.testing.assert_allclose(got["train_loss"], want["train_loss"], rtol=1e-5)
    assert got["train_loss"][4] == problem.base["train_loss"]


def test_control_flow_folds_and_models_without_conv_or_train_mode_use_the_plain_loop():
    gen = torch.Generator().manual_seed(6)
    model = ControlFlow()
    model.bn.running_var.uniform_(0.5, 2.0, generator=gen)
    X, y = torch.randn(12, 2, 8, 8, generator=gen), torch.randint(0, 3, (12,), generator=gen)
    problem = Problem(model, F.cross_entropy, (X, y))
    folded = FoldedForward.build(problem)
    assert folded is not None and len(folded.pairs) == 1
    basis, coeffs = plane(problem, steps=3)
    got = evaluate_points(problem, problem.theta0, basis, coeffs)
    np.testing.assert_allclose(got["train_loss"], loop_values(problem, basis, coeffs)["train_loss"], rtol=1e-5)
    mlp = Problem(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)), F.cross_entropy, (X[:, 0, 0, :4], y))
    assert FoldedForward.build(mlp) is None
    mlp.strategy = "folded"  # forced, but nothing to fold and no convolution: the loop
    mlp_basis, _ = plane(mlp)
    assert Runner(mlp, mlp.theta0, mlp_basis, mlp.buffers).strategy is Strategy.LOOP
    train = make_problem("sequential", mode="train")
    assert FoldedForward.build(train) is None
    train_basis, _ = plane(train)
    assert Runner(train, train.theta0, train_basis, train.buffers).strategy is Strategy.LOOP


def test_a_conv_output_used_twice_is_not_folded_even_with_an_identity_batchnorm():
    """At theta0 a fresh BatchNorm is (nearly) the identity, so only the nearby probe point shows
    that folding ``bn(h) + h`` would be wrong."""
    torch.manual_seed(0)
    X, y = torch.randn(10, 2, 8, 8), torch.randint(0, 3, (10,))
    problem = Problem(SharedConv(), F.cross_entropy, (X, y))  # running statistics 0 / 1, gamma 1, beta 0
    folded = FoldedForward.build(problem)
    assert folded is not None and folded.pairs == [] and folded.channels_last


def test_a_wrong_fold_is_refused_by_the_probe(monkeypatch):
    """The probe at theta0 is what stands between a mis-folded graph and a wrong picture."""
    import landscape_core.folding as folding

    real_state = folding.FoldedForward.state

    def off_by_eps(self, params, buffers=None, channels_last=None):
        state = real_state(self, params, buffers, channels_last)
        return {n: (v * 1.01 if n.endswith("bias") else v) for n, v in state.items()}

    monkeypatch.setattr(folding.FoldedForward, "state", off_by_eps)
    assert FoldedForward.build(make_problem("sequential")) is None


class MixesSamples(nn.Module):
    """Eval mode, yet each output depends on the other samples of the batch (``h - h.mean(0)``):
    cutting its batch into slices would change the values."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 6 * 6, 3)

    def forward(self, x):
        h = self.bn(self.conv(x))
        return self.fc(torch.flatten(h - h.mean(0, keepdim=True), 1))


@pytest.mark.parametrize("name", ["sequential", "resnet"])
@pytest.mark.parametrize("batch_size", [None, 11])
def test_batches_run_in_slices_and_equal_the_loop(name, batch_size, monkeypatch):
    """On the CPU each batch runs in slices whose largest activation stays within ``SLICE_BYTES``
    (large batches ran 2-2.7x slower per point); the values do not change."""
    import landscape_core.folding as folding

    probe = make_problem(name, dtype=torch.float64)
    largest = folding._largest_output_bytes(probe, probe.splits["train"].head(4)[0])
    assert largest > 0
    monkeypatch.setattr(folding, "SLICE_BYTES", 5 * largest)  # 5 samples per slice
    problem = make_problem(name, dtype=torch.float64, batch_size=batch_size)
    folded = FoldedForward.build(problem)
    assert folded.slice_samples == 5
    X = problem.splits["train"].batches().__iter__().__next__()[0]
    assert [int(s.shape[0]) for s in folded.slices(X)] == [5] * (len(X) // 5) + ([len(X) % 5] if len(X) % 5 else [])
    basis, coeffs = plane(problem, seed=7, steps=3)
    got = evaluate_points(problem, problem.theta0, basis, coeffs)
    want = loop_values(problem, basis, coeffs)
    for q in want:
        np.testing.assert_allclose(got[q], want[q], rtol=1e-12, err_msg=q)


def test_a_model_that_mixes_the_samples_of_a_batch_is_not_sliced():
    gen = torch.Generator().manual_seed(8)
    torch.manual_seed(0)
    model = MixesSamples()
    model.bn.running_var.uniform_(0.5, 2.0, generator=gen)
    X, y = torch.randn(16, 2, 8, 8, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    problem = Problem(model, F.cross_entropy, (X, y))
    assert FoldedForward.build(problem) is None  # every layout fails the two-slice probe
    basis, coeffs = plane(problem, steps=3)
    got = evaluate_points(problem, problem.theta0, basis, coeffs)
    np.testing.assert_allclose(got["train_loss"], loop_values(problem, basis, coeffs)["train_loss"], rtol=1e-6)
