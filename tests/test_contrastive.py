"""Contrastive losses on a fixed pairing, the contrastive demo's pieces, and embedding motion,
against closed forms and float64 numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape_core import Problem, contrastive, contrastive_demo, embedding_motion
from landscape_core.embeddings import token_directions
from landscape_core.text_demo import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _np_loss(anchors, positives, tau, noise=None) -> np.ndarray:
    """Reference in float64 numpy: per group, mean over anchors of -log softmax at the own positive."""
    out = []
    for a, p, g in zip(anchors, positives, noise if noise is not None else [None] * len(anchors)):
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        p = p / np.linalg.norm(p, axis=1, keepdims=True)
        logits = a @ p.T / tau
        if g is not None:
            logits = np.hstack([logits, a @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T / tau])
        m = logits.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
        out.append(np.mean(lse - np.diag(logits[:, : a.shape[0]])))
    return np.array(out)


@pytest.mark.parametrize("K", [2, 5])
@pytest.mark.parametrize("tau", [0.05, 0.5, 1.0])
def test_info_nce_orthonormal_closed_form(K, tau):
    """Anchors = positives = orthonormal: ``log(1 + (K - 1) e^{-1/tau})``; with ``M`` noise vectors
    orthogonal to them: ``log(1 + (K - 1 + M) e^{-1/tau})``."""
    M = 3
    basis = torch.eye(K + M, dtype=torch.float64)
    h = (2.5 * basis[:K])[None]  # scale does not matter: cosines
    got = contrastive.info_nce(h, h, tau)
    np.testing.assert_allclose(got.numpy(), [np.log1p((K - 1) * np.exp(-1 / tau))], rtol=1e-13, atol=1e-14)
    noise = basis[K:][None] * 0.7
    got = contrastive.gaussian_smoothed_info_nce(h, h, noise, tau)
    np.testing.assert_allclose(got.numpy(), [np.log1p((K - 1 + M) * np.exp(-1 / tau))], rtol=1e-13, atol=1e-14)


def test_losses_equal_numpy_reference_on_random_groups():
    gen = torch.Generator().manual_seed(0)
    a, p = (torch.randn(4, 6, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    noise = torch.randn(4, 7, 5, generator=gen, dtype=torch.float64)
    np.testing.assert_allclose(contrastive.info_nce(a, p, 0.2).numpy(), _np_loss(a.numpy(), p.numpy(), 0.2), rtol=1e-12)
    np.testing.assert_allclose(
        contrastive.gaussian_smoothed_info_nce(a, p, noise, 0.2).numpy(),
        _np_loss(a.numpy(), p.numpy(), 0.2, noise.numpy()),
        rtol=1e-12,
    )
    shared = noise[0]
    np.testing.assert_allclose(
        contrastive.gaussian_smoothed_info_nce(a, p, shared, 0.2).numpy(),
        _np_loss(a.numpy(), p.numpy(), 0.2, np.stack([shared.numpy()] * 4)),
        rtol=1e-12,
    )


def test_refusals():
    h = torch.zeros(2, 3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="K >= 2"):
        contrastive.info_nce(h[:, :1], h[:, :1])
    with pytest.raises(ValueError, match="temperature"):
        contrastive.info_nce(h, h, 0.0)
    with pytest.raises(ValueError, match="noise must have shape"):
        contrastive.gaussian_smoothed_info_nce(h, h, torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="kind must be one of"):
        contrastive.ContrastiveLoss("triplet")
    with pytest.raises(ValueError, match=r"\(n_groups, K, 2, D\)"):
        contrastive.ContrastiveLoss()(torch.zeros(2, 3, 4), torch.arange(2))


class Identity(torch.nn.Module):
    """Embeddings are the inputs scaled by one parameter (so the Problem has something to vary)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones((), dtype=torch.float64))

    def forward(self, X):
        return self.scale * X


@pytest.mark.parametrize("kind", ["info_nce", "gs_info_nce"])
def test_full_split_value_is_the_mean_over_fixed_groups_for_any_batch_size(kind):
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(7, 4, 2, 6, generator=gen, dtype=torch.float64)
    groups = torch.arange(7)
    loss = contrastive.ContrastiveLoss(kind, temperature=0.3, noise=5, noise_std=0.5, seed=2)
    noise = contrastive.group_noise(groups, 5, 6, 0.5, 2) if kind == "gs_info_nce" else None
    want = _np_loss(X[:, :, 0].numpy(), X[:, :, 1].numpy(), 0.3, None if noise is None else noise.numpy()).mean()
    metrics = {"accuracy": contrastive.retrieval_accuracy}
    values = [Problem(Identity(), loss, (X, groups), batch_size=b, metrics=metrics).base for b in (1, 3, None)]
    for base in values:
        assert base["train_loss"] == pytest.approx(want, rel=1e-12)
        assert base["train_accuracy"] == values[0]["train_accuracy"]
    # a group's noise is its own: drawing it alone or among others gives the same vectors
    np.testing.assert_array_equal(
        contrastive.group_noise(torch.tensor([4]), 5, 6, 0.5, 2)[0], contrastive.group_noise(groups, 5, 6, 0.5, 2)[4]
    )


def test_retrieval_accuracy_closed_form():
    h = torch.eye(3, dtype=torch.float64)
    out = torch.stack([h, h], dim=1)[None]  # every anchor finds its own positive
    assert contrastive.retrieval_accuracy(out, torch.arange(1)).tolist() == [1.0]
    shuffled = torch.stack([h, h[[1, 2, 0]]], dim=1)[None]  # every anchor finds another's
    assert contrastive.retrieval_accuracy(shuffled, torch.arange(1)).tolist() == [0.0]


# -- the demo's pieces -----------------------------------------------------------------------
TEXTS = [f"the film number {i} was good and long and fine" for i in range(20)] + ["short"] * 4


def test_augment_keeps_a_word_and_views_are_deterministic():
    rng = np.random.default_rng(0)
    for _ in range(200):
        view = contrastive_demo.augment(["a", "b", "c"], rng, dropout=0.9)
        assert 1 <= len(view) <= 3 and set(view) <= {"a", "b", "c"}
    tok = Tokenizer.fit(TEXTS, max_length=8)
    X1, g1 = contrastive_demo.fixed_groups(tok, TEXTS, seed=3, group=5)
    X2, _ = contrastive_demo.fixed_groups(tok, TEXTS, seed=3, group=5)
    assert X1.shape == (4, 5, 2, 8) and g1.tolist() == [0, 1, 2, 3]
    assert torch.equal(X1, X2)
    assert ((X1 != 0).sum(-1) >= 1).all()  # no empty view


def test_encoder_shapes_and_both_kinds_start_alike():
    tok = Tokenizer.fit(TEXTS, max_length=8)
    settings = contrastive_demo.TrainSettings(epochs=1, dim=6, out_dim=4, checkpoints=1)
    a, snaps_a = contrastive_demo.train(tok, TEXTS[:16], contrastive.Kind.INFO_NCE, settings)
    a2, _ = contrastive_demo.train(tok, TEXTS[:16], contrastive.Kind.INFO_NCE, settings)
    b, _ = contrastive_demo.train(tok, TEXTS[:16], contrastive.Kind.GS_INFO_NCE, settings)
    for name, value in a.state_dict().items():
        assert torch.equal(value, a2.state_dict()[name])  # deterministic for a seed
    assert not torch.equal(a.projection.weight, b.projection.weight)  # the loss made a difference
    X, _ = contrastive_demo.fixed_groups(tok, TEXTS, seed=0, group=4)
    assert a(X).shape == (6, 4, 2, 4) and a(X[:, 0, 0]).shape == (6, 4)
    torch.testing.assert_close(a(X)[:, 1, 0], a(X[:, 1, 0]), rtol=1e-6, atol=1e-7)  # float32
    assert len(snaps_a) == 1


# -- embedding motion ------------------------------------------------------------------------
def _linear_encoder(seed=0):
    tok = Tokenizer.fit(TEXTS, max_length=8)
    torch.manual_seed(seed)
    model = contrastive_demo.MeanPoolEncoder(len(tok), dim=5, out_dim=3).double().eval()
    X = tok.encode(TEXTS[:7] + TEXTS[-2:]).ids
    problem = Problem(model, lambda out, y: out.pow(2).mean(), (X, torch.zeros(len(X))))
    return problem, X


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_motion_of_a_linear_encoder_closed_form(batch_size):
    """``f(E) = W mean_t(e_t) + b``: ``f(E + r u) - f(E) = r W mean_t(u_t)`` and
    ``sigma_max(J) = sigma_max(W) / sqrt(L)`` (``L`` real tokens)."""
    problem, X = _linear_encoder()
    result = embedding_motion.motion(problem, X, radius=0.1, samples=3, seed=4, batch_size=batch_size)
    W = problem.model.projection.weight.detach()
    E = problem.model.embedding(X).detach()
    mask = (X != 0)[..., None]
    L = mask.sum((1, 2)).double()
    U = token_directions(E, mask, 3, 4, range(X.shape[0]))
    moved = torch.stack([(0.1 * (U[s] * mask).sum(1) / L[:, None]) @ W.T for s in range(3)]).norm(dim=-1)
    np.testing.assert_allclose(result.average, moved.mean(0).numpy(), rtol=1e-12)
    sigma = torch.linalg.matrix_norm(W, ord=2) / L.sqrt()
    np.testing.assert_allclose(result.sigma_max, sigma.numpy(), rtol=1e-12)
    norms = (E * mask).flatten(1).norm(dim=1)
    np.testing.assert_allclose(result.first_order, (0.1 * norms * sigma).numpy(), rtol=1e-12)
    assert result.ranking()[0] == int(np.argmax(result.average))


def test_motion_refusals():
    problem, X = _linear_encoder()
    with pytest.raises(ValueError, match="radius"):
        embedding_motion.motion(problem, X, radius=0)
    with pytest.raises(ValueError, match="samples"):
        embedding_motion.motion(problem, X, samples=0)
    token_level = Problem(problem.model.embedding, lambda out, y: out.pow(2).mean(), (X, torch.zeros(len(X))))
    with pytest.raises(ValueError, match="sentence embeddings"):
        embedding_motion.motion(token_level, X)


def test_motion_first_order_matches_autograd_jacobian_of_a_normalized_encoder():
    problem, X = _linear_encoder(seed=2)
    model = problem.model

    class Normalized(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, X):  # f(E) = normalize(W mean(E) + b): a curved encoder
            return F.normalize(self.inner(X), dim=-1)

    p = Problem(Normalized(), lambda out, y: out.pow(2).mean(), (X, torch.zeros(len(X))))
    result = embedding_motion.motion(p, X, radius=0.05, samples=2)
    for i in range(X.shape[0]):
        mask = X[i] != 0
        E = model.embedding(X[i : i + 1]).detach()

        def f(e, i=i, mask=mask):
            pooled = e[0][mask].mean(0)
            return F.normalize(model.projection(pooled), dim=-1)

        J = torch.autograd.functional.jacobian(f, E)[:, 0][:, mask].reshape(3, -1)
        assert result.sigma_max[i] == pytest.approx(float(torch.linalg.matrix_norm(J, ord=2)), rel=1e-10)


def test_motion_is_disk_cached_under_every_setting(fresh_cache, monkeypatch):
    """A second call with the same model, point, inputs and arguments runs no encoder pass; any change
    of them computes afresh; an entry of another shape under the key is recomputed, never served."""
    from landscape_core import cache

    calls = []
    encode = embedding_motion._encode
    monkeypatch.setattr(embedding_motion, "_encode", lambda *a: calls.append(1) or encode(*a))
    problem, X = _linear_encoder()
    first = embedding_motion.motion(problem, X, radius=0.1, samples=3, seed=4)
    assert calls and first.settings["radius"] == 0.1
    calls.clear()
    again = embedding_motion.motion(problem, X, radius=0.1, samples=3, seed=4)
    assert not calls
    for name in embedding_motion.Motion.ARRAYS:
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    other_model, _ = _linear_encoder(seed=1)
    changed = [
        dict(problem=problem, X=X, radius=0.2, samples=3, seed=4),
        dict(problem=problem, X=X, radius=0.1, samples=2, seed=4),
        dict(problem=problem, X=X, radius=0.1, samples=3, seed=5),
        dict(problem=problem, X=X[:-1], radius=0.1, samples=3, seed=4),
        dict(problem=other_model, X=X, radius=0.1, samples=3, seed=4),
        dict(problem=problem, X=X, radius=0.1, samples=3, seed=4, theta=problem.theta0 * 1.01),
        dict(problem=problem, X=X, radius=0.1, samples=3, seed=4, batch_size=2),
    ]
    for kwargs in changed:
        calls.clear()
        embedding_motion.motion(**kwargs)
        assert calls, kwargs
    key = cache.make_key("embedding-motion", embedding_motion.ALGORITHM_VERSION, first.settings)
    wrong = embedding_motion.Motion(0.1, *(np.ones(2) for _ in range(4)), settings=first.settings)
    assert cache.put(key, wrong.to_bytes())
    calls.clear()
    served = embedding_motion.motion(problem, X, radius=0.1, samples=3, seed=4)
    assert calls
    np.testing.assert_array_equal(served.average, first.average)
