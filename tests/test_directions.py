"""Random and axis directions: normalization properties checked exactly in float64."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, directions


def conv_problem() -> Problem:
    """A float64 CNN with BatchNorm, so every kind of tensor is present."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 6),
        nn.ReLU(),
        nn.Linear(6, 3),
    ).double()
    X = torch.randn(20, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    return Problem(model, F.cross_entropy, (X, y))


@pytest.fixture(scope="module")
def problem():
    return conv_problem()


def rows(t: torch.Tensor, shape) -> torch.Tensor:
    return t.reshape(shape[0], -1)


def test_filter_normalization_matches_theta0_per_output_slice(problem):
    d = directions.random(problem, count=3, norm="filter", seed=1)
    assert d.shape == (3, problem.space.size) and d.dtype == torch.float64
    space, theta0 = problem.space, problem.theta0
    for p in space.params:
        part = d[:, p.slice]
        if p.kind.value in ("bias", "norm"):
            assert torch.count_nonzero(part) == 0, p.name  # ignored: exactly zero
            continue
        assert len(p.shape) > 1
        want = rows(theta0[p.slice], p.shape).norm(dim=1)
        for k in range(3):
            got = rows(part[k], p.shape).norm(dim=1)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_layer_normalization_per_tensor(problem):
    d = directions.random(problem, count=2, norm="layer", ignore=("norm",), seed=2)
    for p in problem.space.params:
        part = d[:, p.slice]
        if p.kind.value == "norm":
            assert torch.count_nonzero(part) == 0
            continue
        want = problem.theta0[p.slice].norm()
        for k in range(2):
            torch.testing.assert_close(part[k].norm(), want, rtol=1e-12, atol=0)
    # layer-wise: the row norms are not all equal to theta0's rows (it is not filter-wise)
    w = problem.space["4.weight"]
    ratio = rows(d[0, w.slice], w.shape).norm(dim=1) / rows(problem.theta0[w.slice], w.shape).norm(dim=1)
    assert ratio.std() > 1e-3


def test_none_is_the_raw_gaussian_draw(problem):
    d = directions.random(problem, count=2, norm="none", ignore=(), seed=3)
    gen = torch.Generator().manual_seed(3)
    raw = torch.randn(2, problem.space.size, generator=gen, dtype=torch.float32).double()
    assert torch.equal(d, raw)


def test_ignore_empty_gives_biases_one_whole_tensor_scale(problem):
    d = directions.random(problem, count=1, norm="filter", ignore=(), seed=4)[0]
    gen = torch.Generator().manual_seed(4)
    raw = torch.randn(1, problem.space.size, generator=gen, dtype=torch.float32).double()[0]
    for name in ("0.bias", "4.bias", "1.weight", "1.bias"):
        p = problem.space[name]
        part, draw = d[p.slice], raw[p.slice]
        torch.testing.assert_close(part.norm(), problem.theta0[p.slice].norm(), rtol=1e-12, atol=0)
        # one scale for the whole tensor (never per element): part is a multiple of the draw
        scale = part / draw
        torch.testing.assert_close(scale, scale[0].expand_as(scale), rtol=1e-12, atol=0)


def test_orthogonal_rows_keep_their_norms(problem):
    plain = directions.random(problem, count=3, seed=5)
    ortho = directions.random(problem, count=3, seed=5, orthogonal=True)
    gram = ortho @ ortho.T
    off = gram - torch.diag(torch.diag(gram))
    assert off.abs().max() < 1e-10 * gram.diag().max()
    torch.testing.assert_close(ortho.norm(dim=1), plain.norm(dim=1), rtol=1e-12, atol=0)
    # the first row is unchanged by Gram-Schmidt
    torch.testing.assert_close(ortho[0], plain[0], rtol=1e-12, atol=1e-15)


def test_mask_zeroes_outside(problem):
    mask = problem.space.mask(include="4.*")
    d = directions.random(problem, count=2, mask=mask, seed=6)
    assert torch.count_nonzero(d[:, ~mask]) == 0
    w = problem.space["4.weight"]
    # inside the mask the values are those of the unmasked draw
    full = directions.random(problem, count=2, seed=6)
    assert torch.equal(d[:, w.slice], full[:, w.slice])


def test_same_seed_same_directions_other_seed_different(problem):
    a = directions.random(problem, seed=7)
    b = directions.random(problem, seed=7)
    c = directions.random(problem, seed=8)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_float32_and_float64_models_get_the_same_draw():
    p64 = conv_problem()
    model32 = p64.model.float()
    X = p64.splits["train"].X.float()
    p32 = Problem(model32, F.cross_entropy, (X, p64.splits["train"].y))
    d64 = directions.random(p64, seed=9)
    d32 = directions.random(p32, seed=9)
    assert d32.dtype == torch.float32
    torch.testing.assert_close(d32.double(), d64, rtol=1e-6, atol=1e-7)


def test_provenance_records_settings(problem):
    d = directions.random(problem, count=2, norm="layer", seed=11)
    info = directions.provenance(d[1])
    assert info["kind"] == "random" and info["norm"] == "layer" and info["seed"] == 11 and info["index"] == 1
    assert directions.provenance(torch.ones(problem.space.size, dtype=torch.float64)) == {"kind": "user"}


def test_axis_is_one_unit_entry(problem):
    d = directions.axis(problem, "4.weight", (2, 5))
    w = problem.space["4.weight"]
    assert d.sum() == 1.0 and torch.count_nonzero(d) == 1
    assert d[w.offset + 2 * 64 + 5] == 1.0
    b = directions.axis(problem, "4.bias", 3)
    assert b[problem.space["4.bias"].offset + 3] == 1.0
    assert directions.provenance(d)["kind"] == "axis"


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"norm": "filters"}, r"norm must be one of \['filter', 'layer', 'none'\]; got 'filters'"),
        ({"count": 0}, "count must be a positive integer; got 0"),
        ({"ignore": ("biases",)}, r"ignore may name \['bias', 'norm'\]; got 'biases'"),
        ({"mask": torch.ones(3, dtype=torch.bool)}, r"mask has shape \(3,\)"),
    ],
)
def test_bad_arguments(problem, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        directions.random(problem, **kwargs)


def test_axis_bad_index(problem):
    with pytest.raises(ValueError, match=r"index \(9, 0\) does not name one entry of '4.weight' with shape \(6, 64\)"):
        directions.axis(problem, "4.weight", (9, 0))
    with pytest.raises(KeyError, match="no parameter named"):
        directions.axis(problem, "nope", 0)
