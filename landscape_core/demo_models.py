"""Data, models and training loops of the built-in demos (see ``demos`` for the registry).

Everything here is deterministic by seed on the CPU: data splits and blobs come from
``torch.Generator().manual_seed``, initial weights from ``torch.manual_seed`` restored
afterwards (``torch.random.fork_rng``), batch orders from their own generator, and training
runs on one intra-op thread (``single_thread``), so a run gives the same bits on any
machine with the same torch build, however many cores it has and whatever else is running.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .threads import single_thread

EpochHook = Callable[[], None]

DIGITS_TRAIN = 1347  # of the 1797 digits; the other 450 are the validation split
BLOBS_TRAIN, BLOBS_VAL = 400, 200
BLOB_MEANS = ((-1.0, 0.0), (1.0, 0.5))  # class 0, class 1; unit isotropic covariance, so the classes overlap


# -- data --------------------------------------------------------------------------------
def digits(seed: int = 0, images: bool = False) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """sklearn's 8x8 digits as ``((X_train, y_train), (X_val, y_val))``: 1347 / 450 samples.

    ``X``: float32 pixel intensities / 16 in [0, 1], shape ``(n, 64)`` or ``(n, 1, 8, 8)`` with
    ``images=True``; ``y``: int64 labels 0..9. The split is a permutation drawn from ``seed``.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    X = torch.from_numpy((data.data / 16.0).astype(np.float32))
    y = torch.from_numpy(data.target.astype(np.int64))
    order = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(seed))
    if images:
        X = X.reshape(-1, 1, 8, 8)
    train, val = order[:DIGITS_TRAIN], order[DIGITS_TRAIN:]
    return (X[train], y[train]), (X[val], y[val])


def blobs(seed: int = 0) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Two overlapping Gaussian blobs in 2-D: ``((X_train, y_train), (X_val, y_val))``, 400 / 200 samples.

    Class ``c`` is drawn from N(``BLOB_MEANS[c]``, I), half the samples each, in shuffled order.
    Overlap keeps the logistic-regression optimum finite (separable data has none).
    """
    gen = torch.Generator().manual_seed(seed)
    n = BLOBS_TRAIN + BLOBS_VAL
    y = torch.arange(n) % 2
    means = torch.tensor(BLOB_MEANS, dtype=torch.float64)
    X = means[y] + torch.randn(n, 2, generator=gen, dtype=torch.float64)
    order = torch.randperm(n, generator=gen)
    X, y = X[order].float(), y[order]
    return (X[:BLOBS_TRAIN], y[:BLOBS_TRAIN]), (X[BLOBS_TRAIN:], y[BLOBS_TRAIN:])


# -- models ------------------------------------------------------------------------------
def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def digits_mlp(seed: int) -> nn.Sequential:
    """64 -> 128 (ReLU) -> 10 logits; 9,610 parameters."""
    return _seeded(lambda: nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)), seed)


def digits_bn_cnn(seed: int) -> nn.Sequential:
    """Conv(1->8, 3x3)-BN-ReLU-MaxPool(2)-Conv(8->16, 3x3)-BN-ReLU-Flatten-Linear(256->10) on ``(N, 1, 8, 8)``.

    3,866 parameters; BatchNorm running statistics are buffers (``running_mean``,
    ``running_var``, ``num_batches_tracked``).
    """

    def build() -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 10),
        )

    return _seeded(build, seed)


def logistic(seed: int) -> nn.Linear:
    """Two-class logistic regression as ``nn.Linear(2, 2)`` logits with softmax cross-entropy."""
    return _seeded(lambda: nn.Linear(2, 2), seed)


# -- training ----------------------------------------------------------------------------
@dataclass
class Run:
    """A trained model and its snapshots.

    ``state``: final ``{name: array}`` (parameters and buffers, as ``state_dict`` names).
    ``snapshots``: ``{name: array (k, *shape)}`` of the same names at each saved step;
    ``steps``: int64 ``(k,)`` epochs (or iterations) of the snapshots, 0 = initialization.
    """

    state: dict[str, np.ndarray]
    snapshots: dict[str, np.ndarray] = field(default_factory=dict)
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


class _Recorder:
    def __init__(self, model: nn.Module):
        self.model = model
        self.frames: list[dict[str, np.ndarray]] = []
        self.steps: list[int] = []

    def __call__(self, step: int) -> None:
        self.frames.append({k: v.detach().numpy().copy() for k, v in self.model.state_dict().items()})
        self.steps.append(step)

    def run(self) -> Run:
        state = {k: v.detach().numpy().copy() for k, v in self.model.state_dict().items()}
        snapshots = {k: np.stack([f[k] for f in self.frames]) for k in state}
        return Run(state, snapshots, np.asarray(self.steps, dtype=np.int64))


@single_thread()
def train_sgd(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    *,
    batch_size: int,
    lr: float,
    epochs: int,
    momentum: float = 0.0,
    seed: int = 0,
    every: int = 1,
    on_epoch: EpochHook | None = None,
) -> Run:
    """Minibatch SGD on cross-entropy, reshuffling each epoch from ``seed``; modifies ``model``.

    Runs on one thread (``single_thread``) so the result does not depend on the core count.

    A snapshot is taken at epoch 0 (initialization), every ``every`` epochs and at the end.
    BatchNorm runs in train mode (batch statistics, running averages updated).
    """
    X, y = train
    order_gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    record = _Recorder(model)
    record(0)
    model.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(X.shape[0], generator=order_gen)
        for start in range(0, X.shape[0], batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch % every == 0 or epoch == epochs:
            record(epoch)
        if on_epoch is not None:
            on_epoch()
    model.eval()
    return record.run()


@single_thread()
def train_logistic(
    model: nn.Linear,
    train: tuple[torch.Tensor, torch.Tensor],
    *,
    lr: float,
    steps: int,
    every: int,
    on_epoch: EpochHook | None = None,
) -> Run:
    """Full-batch gradient descent for ``steps`` steps, then L-BFGS to the optimum, in float64.

    Snapshots every ``every`` GD steps; the last snapshot is the optimum (its step is
    ``steps + 1``). The final float32 parameters are the float64 optimum rounded once.
    Each GD step counts as one epoch for ``on_epoch``.
    """
    X, y = train[0].double(), train[1]
    work = nn.Linear(2, 2).double()
    work.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    record_frames, record_steps = [], []

    def snap(step: int) -> None:
        record_frames.append({k: v.detach().float().numpy().copy() for k, v in work.state_dict().items()})
        record_steps.append(step)

    def loss_fn() -> torch.Tensor:
        return F.cross_entropy(work(X), y)

    snap(0)
    opt = torch.optim.SGD(work.parameters(), lr=lr)
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()
        if step % every == 0:
            snap(step)
        if on_epoch is not None:
            on_epoch()
    lbfgs = torch.optim.LBFGS(
        work.parameters(),
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        lbfgs.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        return loss

    lbfgs.step(closure)
    snap(steps + 1)
    model.load_state_dict({k: v.float() for k, v in work.state_dict().items()})
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    snapshots = {k: np.stack([f[k] for f in record_frames]) for k in state}
    return Run(state, snapshots, np.asarray(record_steps, dtype=np.int64))


def logistic_hessian(X: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Exact float64 Hessian ``(6, 6)`` of the mean softmax cross-entropy of ``nn.Linear(2, 2)``.

    Parameter order is the ``ParamSpace`` order: ``weight`` row-major (w00, w01, w10, w11),
    then ``bias`` (b0, b1). With ``x~ = (x, 1)`` and ``p_i`` the class-1 probability,
    ``H = (1/n) sum_i p_i (1 - p_i) (e_0 - e_1)(e_0 - e_1)^T (x) x~_i x~_i^T`` rearranged to that
    order. The loss depends on ``(w1 - w0, b1 - b0)`` only, so ``H`` has a 3-dimensional null
    space (adding the same vector to both rows changes nothing) and its nonzero eigenvalues
    are twice those of the 3x3 binary logistic Hessian ``(1/n) sum_i p_i (1 - p_i) x~_i x~_i^T``.
    """
    X = np.asarray(X, dtype=np.float64)
    logits = X @ np.asarray(weight, np.float64).T + np.asarray(bias, np.float64)
    z = logits[:, 1] - logits[:, 0]
    p = 1.0 / (1.0 + np.exp(-z))
    xt = np.concatenate([X, np.ones((X.shape[0], 1))], axis=1)  # (n, 3)
    h3 = (xt * (p * (1 - p))[:, None]).T @ xt / X.shape[0]  # (3, 3)
    # parameters per class c: (w_c0, w_c1, b_c); class-0 block enters with sign -1
    sign = np.array([-1.0, 1.0])
    h = np.zeros((6, 6))
    index = [[0, 1, 4], [2, 3, 5]]  # flat positions of (w_c0, w_c1, b_c) for c = 0, 1
    for a in range(2):
        for b in range(2):
            h[np.ix_(index[a], index[b])] = sign[a] * sign[b] * h3
    return h
