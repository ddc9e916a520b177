"""The cache key holds everything that changes a value: the loss and metrics (code, closures,
partial arguments, module state), dtype, train-mode batch size; ``model_hash`` is memoised and
follows in-place changes."""

import functools
import logging
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, cache, directions, identity, surface

pytestmark = pytest.mark.usefixtures("one_thread")

_SCALE = 1.0  # read by scaled_loss: a global its code loads


def scaled_loss(out, y):
    return _SCALE * F.cross_entropy(out, y)


def data(n=120, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=gen)
    return X, (X[:, 0] > 0).long() + (X[:, 1] > 0.5).long()


def model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def problem(loss=F.cross_entropy, **kwargs):
    return Problem(model(), loss, data(), **kwargs)


def closure(scale):
    return lambda out, y: scale * F.cross_entropy(out, y)


def plane(p, calls=None, **kwargs):
    d1, d2 = directions.random(p, count=2, seed=0)
    report = None if calls is None else (lambda done, total: calls.append((done, total)))
    return surface.plane(p, d1, d2, steps=5, progress=report, **kwargs)


def was_hit(calls) -> bool:
    return calls[0][0] == calls[0][1]  # the whole total at once: served from the cache


def test_label_smoothing_gets_its_own_plane(fresh_cache):
    plain = plane(problem(F.cross_entropy))
    smoothed_problem = problem(nn.CrossEntropyLoss(label_smoothing=0.2))
    calls = []
    smoothed = plane(smoothed_problem, calls)
    assert not was_hit(calls)  # before: served plain's plane
    exact = plane(smoothed_problem, use_cache=False)
    np.testing.assert_array_equal(smoothed.values["train_loss"], exact.values["train_loss"])
    assert not np.allclose(smoothed.values["train_loss"], plain.values["train_loss"])
    assert smoothed.center_value() == pytest.approx(smoothed_problem.base["train_loss"], rel=1e-12)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (closure(1.0), closure(2.0)),
        (
            functools.partial(F.cross_entropy, label_smoothing=0.1),
            functools.partial(F.cross_entropy, label_smoothing=0.2),
        ),
        (
            nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0])),
            nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 4.0])),
        ),
        (nn.CrossEntropyLoss(ignore_index=0), nn.CrossEntropyLoss(ignore_index=1)),
        (nn.CrossEntropyLoss(reduction="mean"), nn.CrossEntropyLoss(reduction="sum")),
        (F.cross_entropy, nn.CrossEntropyLoss()),
    ],
    ids=["closure constants", "partial args", "module weight", "ignore_index", "reduction", "function vs module"],
)
def test_losses_that_differ_get_different_keys(first, second, fresh_cache):
    a, b = identity.describe(first), identity.describe(second)
    assert a["sha256"] != b["sha256"]
    plane(problem(first))
    calls = []
    plane(problem(second), calls)
    assert not was_hit(calls)


@pytest.mark.parametrize(
    "make",
    [
        lambda: closure(1.5),
        lambda: functools.partial(F.cross_entropy, label_smoothing=0.2),
        lambda: nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0]), label_smoothing=0.1),
        lambda: scaled_loss,
    ],
    ids=["closure", "partial", "module", "function"],
)
def test_the_same_loss_made_twice_hits(make, fresh_cache):
    first, second = make(), make()
    assert identity.fingerprint(first) == identity.fingerprint(second)
    plane(problem(first))
    calls = []
    plane(problem(second), calls)
    assert was_hit(calls)


def test_globals_the_code_loads_are_part_of_the_identity(monkeypatch):
    before = identity.fingerprint(scaled_loss)
    monkeypatch.setattr(__import__(__name__), "_SCALE", 2.0)
    assert identity.fingerprint(scaled_loss) != before


def test_code_changes_change_the_identity():
    def loss_a(out, y):
        return F.cross_entropy(out, y)

    def loss_b(out, y):
        return F.cross_entropy(out, y) + 0.0

    assert identity.fingerprint(loss_a) != identity.fingerprint(loss_b)


def test_metrics_are_part_of_the_key(fresh_cache):
    def top(out, y):
        return (out.argmax(-1) == y).float().mean()

    def margin(out, y):
        return out.max(-1).values.mean()

    plane(problem(metrics={"m": top}))
    calls = []
    result = plane(problem(metrics={"m": margin}), calls)
    assert not was_hit(calls)
    exact = plane(problem(metrics={"m": margin}), use_cache=False)
    np.testing.assert_array_equal(result.values["train_m"], exact.values["train_m"])


def test_dtype_and_train_mode_batch_size_are_in_the_key():
    p32 = problem()
    p64 = Problem(model().double(), F.cross_entropy, (data()[0].double(), data()[1]))
    assert p32.describe()["dtype"] == "float32" and p64.describe()["dtype"] == "float64"
    eval_a, eval_b = problem(batch_size=30), problem(batch_size=60)
    assert eval_a.describe() == eval_b.describe()  # eval mode: exact means, batch size changes nothing
    train_a, train_b = problem(batch_size=30, mode="train"), problem(batch_size=60, mode="train")
    assert train_a.describe()["batch_size"] == {"train": 30}
    assert train_a.describe() != train_b.describe()


class Holder:
    __slots__ = ("scale",)

    def __init__(self):
        self.scale = 1.0


@pytest.mark.parametrize(
    "loss",
    [
        (lambda lock: lambda out, y: F.cross_entropy(out, y) if lock else None)(threading.Lock()),
        functools.partial(lambda out, y, g: F.cross_entropy(out, y), g=torch.Generator()),
        (lambda h: lambda out, y: h.scale * F.cross_entropy(out, y))(Holder()),
    ],
    ids=["closes over a lock", "partial with a generator", "closes over a slotted object"],
)
def test_an_unidentifiable_loss_is_computed_but_not_cached(loss, fresh_cache, caplog):
    p = problem(loss)
    assert identity.UNKNOWN_IDENTITY in p.describe()["loss"]
    with caplog.at_level(logging.WARNING, logger="landscape_core"):
        first = plane(p)
        calls = []
        second = plane(p, calls)
    assert not was_hit(calls)
    exact = plane(problem(F.cross_entropy), use_cache=False)
    np.testing.assert_allclose(first.values["train_loss"], exact.values["train_loss"], rtol=1e-6)
    np.testing.assert_array_equal(first.values["train_loss"], second.values["train_loss"])
    assert cache.get_cache() is not None and list(cache.get_cache().iterkeys()) == []
    warnings = [r for r in caplog.records if "cannot be identified" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]


def test_torch_and_numpy_callables_are_identified_by_name():
    for fn in (F.cross_entropy, torch.add, torch.Tensor.mean, np.mean, np.add):
        described = identity.describe(fn)
        assert "sha256" in described, described


# -- model_hash ---------------------------------------------------------------------------------
def test_model_hash_follows_in_place_changes_and_variants():
    p = Problem(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)), F.cross_entropy, data())
    first = p.model_hash()
    assert p.model_hash() == first
    with torch.no_grad():
        p.theta0[0] += 1.0
    changed = p.model_hash()
    assert changed != first
    with torch.no_grad():
        p.theta0[0] -= 1.0
    assert p.model_hash() == first  # same bytes, same digest (recomputed, not a stale memo)
    name = next(iter(p.buffers))
    p.buffers[name].add_(0.5)
    assert p.model_hash() != first
    p.buffers[name].sub_(0.5)
    moved = p.at(p.theta0 * 1.01)
    assert moved.model_hash() != p.model_hash() and p.model_hash() == first
    assert p.subset(50).model_hash() == first


def test_frozen_parameters_are_hashed():
    def frozen_model(value):
        m = model()
        with torch.no_grad():
            m[0].bias.fill_(value)
        m[0].bias.requires_grad_(False)
        return m

    a = Problem(frozen_model(0.0), F.cross_entropy, data())
    b = Problem(frozen_model(0.5), F.cross_entropy, data())
    assert torch.equal(a.theta0, b.theta0)
    assert a.model_hash() != b.model_hash()


def test_model_hash_is_memoised_at_scale():
    big = nn.Sequential(nn.Linear(2000, 2000), nn.ReLU(), nn.Linear(2000, 3))  # 4M parameters
    p = Problem(big, F.cross_entropy, (torch.randn(8, 2000), torch.randint(0, 3, (8,))))
    started = time.perf_counter()
    first = p.model_hash()
    cold = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(20):
        assert p.model_hash() == first
    warm = (time.perf_counter() - started) / 20
    assert warm < cold / 20, (warm, cold)


class TwoHeads(nn.Module):
    """Returns a dict of two logit tensors: which one is scored is the ``output=`` picker's choice."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(4, 8)
        self.first = nn.Linear(8, 3)
        self.second = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.body(x))
        return {"first": self.first(h), "second": self.second(h)}


def test_the_output_picker_is_part_of_the_key(fresh_cache):
    first = Problem(TwoHeads(), F.cross_entropy, data(), output=lambda out: out["first"])
    second = Problem(TwoHeads(), F.cross_entropy, data(), output=lambda out: out["second"])
    assert first.describe()["output"] != second.describe()["output"]
    plane(first)
    calls = []
    picked = plane(second, calls)
    assert not was_hit(calls)  # before: served the first head's plane
    exact = plane(second, use_cache=False)
    np.testing.assert_array_equal(picked.values["train_loss"], exact.values["train_loss"])
    assert picked.center_value() == pytest.approx(second.base["train_loss"], rel=1e-12)
    assert "output" not in problem().describe()  # no picker: the key is as before


def test_data_placement_moves_data_not_values(fresh_cache):
    on_device = problem(data_placement="device")
    on_host = problem(data_placement="cpu")
    assert on_device.describe() == on_host.describe()  # one key: the values are the same
    np.testing.assert_array_equal(
        plane(on_device, use_cache=False).values["train_loss"], plane(on_host, use_cache=False).values["train_loss"]
    )


class ScaledLoss(nn.Module):
    """A loss holding a 0-dimensional tensor (a temperature), as contrastive losses do."""

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = torch.tensor(temperature)

    def forward(self, logits, target):
        return F.cross_entropy(logits / self.temperature, target)


def test_a_scalar_tensor_in_a_loss_is_hashed_by_its_value():
    """0-dimensional tensors once failed the byte view of the hash (a crash, not a refusal)."""
    same = identity.fingerprint(ScaledLoss(0.07)) == identity.fingerprint(ScaledLoss(0.07))
    assert same
    assert identity.fingerprint(ScaledLoss(0.07)) != identity.fingerprint(ScaledLoss(0.1))


@pytest.mark.parametrize(
    "tensor",
    [
        torch.tensor(2.5),
        torch.arange(6.0).reshape(2, 3).t(),
        torch.ones(3, dtype=torch.bfloat16),
        torch.tensor([True, False]),
    ],
)
def test_raw_bytes_are_the_bytes_of_the_values_without_a_copy(tensor):
    assert bytes(identity.raw_bytes(tensor)) == tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    contiguous = torch.arange(4.0)
    assert identity.raw_bytes(contiguous).obj.__array_interface__["data"][0] == contiguous.data_ptr()  # no copy
    assert identity.raw_bytes(torch.empty(0)) == b""
