"""Embedding-space landscapes checked against closed forms in float64.

The model: an ``nn.Embedding`` (padding row 0) averaged over the real tokens and a linear
head with two classes, i.e. a logistic model on mean-pooled embeddings with
``w = W[1] - W[0]``, ``b = b[1] - b[0]`` and ``y in {-1, +1}``. For an input with ``T`` real
tokens and perturbation ``delta`` (``||delta||_F <= eps``) the margin moves by
``y w^T (sum_t delta_t) / T``; by Cauchy-Schwarz ``|w^T sum_t delta_t| <= ||w|| sqrt(T) eps``,
with equality at ``delta_t = -y eps w / (||w|| sqrt(T))``, so the worst loss is

    log(1 + exp(-y (w^T e_mean + b) + eps ||w|| / sqrt(T))),

``T`` counting real tokens only. The Hessian of the loss in the embeddings is
``p (1 - p) / T^2 (1 1^T kron w w^T)`` with ``p = sigmoid(y margin)``; its top eigenvalue is
``p (1 - p) ||w||^2 / T``.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, embedding_matrix, input_hessian
from landscape_core import embeddings as emb
from landscape_core import fragility as fr


class MeanPool(nn.Module):
    def __init__(self, vocab=20, dim=5):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.head = nn.Linear(dim, 2)

    def forward(self, X):
        E = self.embedding(X)
        mask = (X != 0)[..., None].to(E.dtype)
        return self.head((E * mask).sum(1) / mask.sum(1).clamp_min(1))


@pytest.fixture(scope="module")
def case():
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = MeanPool().double()
    n, T = 16, 7
    X = torch.randint(1, 20, (n, T), generator=gen)
    lengths = torch.randint(1, T + 1, (n,), generator=gen)
    lengths[0], lengths[1] = T, 1
    for i, length in enumerate(lengths):
        X[i, length:] = 0
    y = torch.randint(0, 2, (n,), generator=gen)
    problem = Problem(model, F.cross_entropy, (X, y), (X, y))
    w = (model.head.weight[1] - model.head.weight[0]).detach()
    b = (model.head.bias[1] - model.head.bias[0]).detach()
    mask = (X != 0)[..., None].double()
    E = model.embedding(X).detach()
    real = mask.sum(1)[:, 0]
    e_mean = (E * mask).sum(1) / real[:, None]
    margin = (2 * y - 1).double() * (e_mean @ w + b)
    return {"problem": problem, "X": X, "y": y, "w": w, "margin": margin, "T": real, "mask": mask, "E": E}


def test_worst_case_matches_closed_form_and_never_touches_padding(case):
    eps = [0.0, 0.1, 0.5, 2.0, 5.0]
    worst, delta = emb.worst_case(case["problem"], case["X"], case["y"], eps, relative=False, return_delta=True)
    for j, e in enumerate(eps):
        exact = F.softplus(-case["margin"] + e * case["w"].norm() / case["T"].sqrt()).numpy()
        assert np.abs(worst[:, j] - exact).max() < 1e-4
    pad = (case["X"] == 0)[None, ..., None].expand_as(delta)
    assert pad.any() and torch.equal(delta[pad], torch.zeros_like(delta[pad]))
    norms = delta.flatten(2).norm(dim=-1)
    assert (norms <= torch.tensor(eps, dtype=torch.float64)[:, None] * (1 + 1e-12)).all()


def test_relative_radius_scales_the_ball_by_the_input_norm(case):
    r = 0.2
    worst = emb.worst_case(case["problem"], case["X"], case["y"], [r])[:, 0]
    eps = r * (case["E"] * case["mask"]).flatten(1).norm(dim=1)
    exact = F.softplus(-case["margin"] + eps * case["w"].norm() / case["T"].sqrt()).numpy()
    assert np.abs(worst - exact).max() < 1e-4


def test_token_directions_are_normalized_per_token_and_zero_at_padding(case):
    E, mask = case["E"], case["X"][..., None] != 0
    U = emb.token_directions(E, mask, samples=3, seed=4)
    assert U.shape == (3, *E.shape)
    real = mask[..., 0].expand(3, -1, -1)
    torch.testing.assert_close(U.norm(dim=-1)[real], E.norm(dim=-1).expand(3, -1, -1)[real], rtol=1e-12, atol=0)
    assert torch.equal(U[~real], torch.zeros_like(U[~real]))
    # each input draws from its own generator: the same directions in any batch
    torch.testing.assert_close(emb.token_directions(E[5:7], mask[5:7], 3, 4, indices=[5, 6]), U[:, 5:7])


def test_average_case_is_the_mean_over_the_same_directions(case):
    problem, X, y = case["problem"], case["X"], case["y"]
    mean, stderr = emb.average_case(problem, X, y, [0.0, 0.3], samples=4, seed=2, batch_size=5)
    U = emb.token_directions(case["E"], X[..., None] != 0, 4, seed=2)
    model = problem.model
    losses = []
    for s in range(4):  # direct evaluation: pool the perturbed embeddings by hand
        pooled = ((case["E"] + 0.3 * U[s]) * case["mask"]).sum(1) / case["T"][:, None]
        losses.append(F.cross_entropy(model.head(pooled), y, reduction="none").detach())
    losses = torch.stack(losses)
    np.testing.assert_allclose(mean[:, 1], losses.mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(stderr[:, 1], (losses.std(0) / 2).numpy(), rtol=1e-10)
    np.testing.assert_allclose(mean[:, 0], F.softplus(-case["margin"]).numpy(), rtol=1e-12)
    assert (stderr[:, 0] == 0).all()


def test_input_hessian_top_eigenvalue_matches_closed_form(case):
    top, residual = input_hessian.input_hessian_top_eigenvalue(case["problem"], case["X"], case["y"], iterations=10)
    p = torch.sigmoid(case["margin"])
    exact = (p * (1 - p) * case["w"].norm() ** 2 / case["T"]).numpy()
    np.testing.assert_allclose(top, exact, rtol=1e-8)
    assert residual.max() < 1e-6


def test_ranking_is_deterministic_and_sorted(case):
    kw = {"radii": (0.0, 0.1), "score_radius": 0.1, "samples": 3, "steps": 5, "use_cache": False}
    a = fr.fragility(case["problem"], seed=3, **kw)
    b = fr.fragility(case["problem"], seed=3, **kw)
    assert np.array_equal(a.ranking, b.ranking) and np.array_equal(a.score, b.score)
    assert np.all(np.diff(a.score[a.ranking]) <= 0)
    p = torch.sigmoid(case["margin"]).numpy()
    np.testing.assert_allclose(a.base_loss, -np.log(p), rtol=1e-12)
    csv = a.to_csv(texts=[f'text "{i}"' for i in range(a.n)])
    assert csv.count("\n") == a.n + 1 and '"text ""' in csv
    again = fr.Fragility.from_bytes(a.to_bytes())
    assert np.array_equal(again.ranking, a.ranking) and again.settings == a.settings


def test_embedding_surface_moves_only_the_embedding_rows(case):
    problem = case["problem"]
    d = embedding_matrix.embedding_directions(problem, count=2, seed=1)
    info = problem.space["embedding.weight"]
    outside = torch.ones(problem.space.size, dtype=torch.bool)
    outside[info.slice] = False
    assert torch.equal(d[:, outside], torch.zeros_like(d[:, outside]))
    rows = d[:, info.slice].reshape(2, *info.shape).norm(dim=-1)
    theta_rows = problem.theta0[info.slice].reshape(info.shape).norm(dim=-1)
    torch.testing.assert_close(rows, theta_rows.expand(2, -1), rtol=1e-6, atol=1e-12)
    assert rows[:, 0].abs().max() == 0  # the padding row stays put
    line = embedding_matrix.embedding_surface(problem, steps=5, span=(-0.5, 0.5), seed=1)
    assert line.center_value("train_loss") == pytest.approx(problem.base["train_loss"], rel=1e-12)
    at = problem.evaluate(problem.theta0 + 0.5 * embedding_matrix.embedding_directions(problem, 1, seed=1)[0])
    assert line.values["train_loss"][-1] == pytest.approx(at["train_loss"][0], rel=1e-12)


def test_embedding_map_pca_matches_svd():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 4)) * np.array([5.0, 2.0, 1.0, 0.5])
    result = fr.embedding_map(vectors, "pca")
    centred = vectors - vectors.mean(0)
    eig = np.linalg.eigvalsh(centred.T @ centred)[::-1]
    np.testing.assert_allclose(result.explained, eig[:2] / eig.sum(), rtol=1e-10)
    np.testing.assert_allclose(result.coords.var(0) * 30, eig[:2], rtol=1e-10)
    with pytest.raises(ValueError, match="method"):
        fr.embedding_map(vectors, "tsne")


def test_bad_inputs_are_refused(case):
    problem, X, y = case["problem"], case["X"], case["y"]
    mlp = Problem(nn.Sequential(nn.Linear(3, 2)), F.cross_entropy, (torch.randn(8, 3), torch.randint(0, 2, (8,))))
    with pytest.raises(ValueError, match="nn.Embedding"):
        emb.worst_case(mlp, torch.zeros(8, 3, dtype=torch.long), torch.zeros(8, dtype=torch.long), [0.1])
    with pytest.raises(ValueError, match="LongTensor"):
        emb.average_case(problem, X.double(), y, [0.1])
    empty = X.clone()
    empty[3] = 0
    with pytest.raises(ValueError, match=r"\[3\] contain only padding"):
        emb.worst_case(problem, empty, y, [0.1])
    with pytest.raises(ValueError, match="radii"):
        emb.worst_case(problem, X, y, [-1.0])
    with pytest.raises(ValueError, match="samples"):
        emb.average_case(problem, X, y, [0.1], samples=1)
    with pytest.raises(ValueError, match="embedding='nope'"):
        emb.embedding_layer(problem.model, "nope")
    with pytest.raises(ValueError, match="split 'test'"):
        fr.fragility(problem, split="test")


def test_progress_is_monotone_and_single_thread_restores(case):
    before = torch.get_num_threads()
    seen = []
    fr.fragility(
        case["problem"],
        radii=(0.0, 0.1),
        samples=2,
        steps=2,
        use_cache=False,
        progress=lambda d, t: seen.append((d, t)),
    )
    done = [d for d, _ in seen]
    assert done == sorted(done) and seen[-1][0] == seen[-1][1] and len({t for _, t in seen}) == 1
    with emb.single_thread():
        with emb.single_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_keskar_score_and_error_radius_follow_the_closed_form(case):
    kw = {"radii": (0.0, 0.5, 1.0, 2.0, 4.0), "score_radius": 1.0, "samples": 2, "steps": 20, "use_cache": False}
    result = fr.fragility(case["problem"], relative=False, score="keskar", **kw)
    margin, w, T = case["margin"].numpy(), case["w"].norm().item(), case["T"].numpy()
    base = np.logaddexp(0, -margin)
    worst = np.logaddexp(0, -margin + 1.0 * w / np.sqrt(T))
    np.testing.assert_allclose(result.score, 100 * (worst - base) / (1 + base), atol=1e-2)
    # the worst case at eps flips a right prediction once eps ||w|| / sqrt(T) exceeds the margin
    flip = margin * np.sqrt(T) / w
    grid = np.array(kw["radii"])
    expected = np.array(
        [0.0 if m < 0 else (grid[grid > f].min() if (grid > f).any() else np.inf) for m, f in zip(margin, flip)]
    )
    np.testing.assert_array_equal(result.error_radius, expected)
    with pytest.raises(ValueError, match="score must be one of"):
        fr.fragility(case["problem"], score="loss")
