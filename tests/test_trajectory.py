"""Trajectory views: PCA (exact, Gram-matrix), UMAP, autoencoder, trustworthiness, PCA-plane gap."""

import numpy as np
import pytest
import torch
from torch import nn

from landscape_core import Problem, directions, trajectory, trajectory_plane
from landscape_core.workspace import Checkpoint

# in-plane coordinates with sum(a * b) = 0 and sum(a^2) = 42 != sum(b^2) = 4: PCA axes are u1, u2 exactly
A = np.array([4.0, 2.0, -2.0, -4.0, 1.0, -1.0, 0.0])
B = np.array([1.0, -1.0, -1.0, 1.0, 0.0, 0.0, 0.0])


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def planar_trajectory(P=50, seed=0):
    """Checkpoints theta_i = c + A_i u1 + B_i u2 (final point c), with orthonormal u1, u2."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(P, 2, generator=gen, dtype=torch.float64))
    u1, u2 = q[:, 0], q[:, 1]
    c = torch.randn(P, generator=gen, dtype=torch.float64)
    thetas = c + torch.from_numpy(A)[:, None] * u1 + torch.from_numpy(B)[:, None] * u2
    return thetas, u1, u2, c


def assert_equal_up_to_sign(x, y, atol=1e-10):
    sign = np.sign(np.dot(x, y))
    np.testing.assert_allclose(sign * np.asarray(x), np.asarray(y), atol=atol)


def test_pca_recovers_a_planar_trajectory():
    thetas, u1, u2, c = planar_trajectory()
    traj = trajectory.pca(thetas, ignore=())
    np.testing.assert_allclose(traj.explained_variance_ratio, [42 / 46, 4 / 46], rtol=1e-12)
    assert traj.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-12)
    assert traj.reconstruction_error == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(traj.residual_norms, 0.0, atol=1e-6)
    assert_equal_up_to_sign(traj.coords[:, 0], A)
    assert_equal_up_to_sign(traj.coords[:, 1], B)
    assert_equal_up_to_sign(traj.directions[0].numpy(), u1.numpy())
    assert_equal_up_to_sign(traj.directions[1].numpy(), u2.numpy())
    torch.testing.assert_close(traj.center, c)
    np.testing.assert_allclose(traj.coords[-1], 0.0, atol=1e-12)  # the final point is the origin
    # checkpoint i = center + coords[i] @ directions
    rebuilt = traj.center + torch.from_numpy(traj.coords) @ traj.directions
    torch.testing.assert_close(rebuilt, thetas)
    assert traj.trustworthiness == 1.0  # an exact (isometric) picture
    assert directions.provenance(traj.directions[1])["kind"] == "pca"


def test_pca_matches_dense_svd_and_streams_in_chunks(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    thetas = torch.randn(6, 30, generator=gen, dtype=torch.float64).cumsum(0)
    D = (thetas - thetas[-1]).numpy()
    _, s, vt = np.linalg.svd(D, full_matrices=False)
    dense = trajectory.pca(thetas, variant="uncentred", ignore=())
    np.testing.assert_allclose(dense.explained_variance_ratio, s[:2] ** 2 / (s**2).sum(), rtol=1e-10)
    for j in range(2):
        assert_equal_up_to_sign(dense.directions[j].numpy(), vt[j])
    np.testing.assert_allclose(dense.residual_norms, np.linalg.norm(D - D @ vt[:2].T @ vt[:2], axis=1), atol=1e-10)
    assert dense.reconstruction_error == pytest.approx(1 - (s[:2] ** 2).sum() / (s**2).sum(), rel=1e-10)
    monkeypatch.setattr(trajectory, "CHUNK_BYTES", 8 * 6 * 7)  # 7 columns per chunk
    chunked = trajectory.pca(thetas, variant="uncentred", ignore=())
    np.testing.assert_allclose(chunked.coords, dense.coords, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked.directions, dense.directions)
    mean = trajectory.pca(thetas, reference="mean", ignore=())
    torch.testing.assert_close(mean.center, thetas.mean(0))


def bn_model_trajectory(n=7, seed=3):
    """Checkpoints of a model with biases and BatchNorm parameters, moving in every coordinate."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2)).double()
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(20, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (20,), generator=gen)
    problem = Problem(model, nn.functional.cross_entropy, (X, y))
    steps = torch.randn(n, problem.space.size, generator=gen, dtype=torch.float64)
    steps[:, :3] *= 5.0  # some coordinates move much more: a clear first direction
    return problem, problem.theta0 + steps.cumsum(0) * 0.1


def test_default_pca_is_li_2018_centred_without_biases_and_norm_parameters():
    """Li et al. 2018 (their released code): scikit-learn's PCA of theta_i - theta_final with 1-D parameter
    tensors (biases, BatchNorm) zeroed; checkpoints at the dot products with the components."""
    from sklearn.decomposition import PCA

    problem, thetas = bn_model_trajectory()
    kept = torch.ones(problem.space.size, dtype=torch.float64)
    for p in problem.space.params:
        if p.kind.value in ("bias", "norm"):
            kept[p.slice] = 0.0
    assert 0 < kept.sum() < problem.space.size
    D = (thetas - thetas[-1]).numpy()
    reference = PCA(n_components=2, svd_solver="full").fit(D * kept.numpy())
    traj = trajectory.pca(thetas, space=problem)
    assert traj.settings["variant"] == "li2018" and traj.settings["ignored"] == ["bias", "norm"]
    assert traj.settings["definition"].startswith("Li et al. 2018")
    np.testing.assert_allclose(traj.explained_variance_ratio, reference.explained_variance_ratio_, rtol=1e-10)
    for j in range(2):
        assert_equal_up_to_sign(traj.directions[j].numpy(), reference.components_[j])
    assert (traj.directions[:, kept == 0] == 0).all()  # biases and BatchNorm parameters stay put
    np.testing.assert_allclose(np.abs(traj.coords), np.abs(D @ reference.components_.T), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(traj.center, thetas[-1])
    full = np.linalg.norm(D, axis=1) ** 2  # residuals count every parameter, the removed ones included
    np.testing.assert_allclose(traj.residual_norms**2, full - (traj.coords**2).sum(axis=1), rtol=1e-9, atol=1e-12)
    # the uncentred PCA stays available, named, and differs here
    plain = trajectory.pca(thetas, variant="uncentred", ignore=())
    assert plain.settings["variant"] == "uncentred" and plain.settings["ignored"] == []
    assert not np.allclose(np.abs(plain.directions.numpy()), np.abs(traj.directions.numpy()), atol=1e-6)
    assert directions.provenance(traj.directions[0])["variant"] == "li2018"
    torch.testing.assert_close(directions.pca(thetas, space=problem.space), traj.directions)


def test_removing_parameter_kinds_needs_the_space():
    problem, thetas = bn_model_trajectory()
    with pytest.raises(ValueError, match=r"removing \['bias', 'norm'\] needs the parameter space"):
        trajectory.pca(thetas)
    with pytest.raises(ValueError, match=r"variant must be one of \['li2018', 'uncentred'\]"):
        trajectory.pca(thetas, variant="centred", space=problem)
    with pytest.raises(ValueError, match=r"ignore may name"):
        trajectory.pca(thetas, ignore=("weight",), space=problem)


def test_trustworthiness_is_one_for_isometries_and_drops_for_scrambles():
    gen = np.random.default_rng(0)
    X2 = gen.normal(size=(12, 2))
    rotation = np.linalg.qr(gen.normal(size=(40, 40)))[0][:, :2]
    high = X2 @ rotation.T + 3.0  # an isometric copy of X2 in 40 dimensions
    D = np.linalg.norm(high[:, None] - high[None], axis=-1)
    assert trajectory.trustworthiness(D, X2) == 1.0
    scrambled = X2[gen.permutation(12)]
    assert trajectory.trustworthiness(D, scrambled) < 0.9
    with pytest.raises(ValueError, match="n_neighbors"):
        trajectory.trustworthiness(D, X2, n_neighbors=6)


def test_checkpoint_lists_keep_names_and_steps():
    thetas, *_ = planar_trajectory()
    ckpts = [Checkpoint(f"epoch_{i}", t, step=i * 10) for i, t in enumerate(thetas)]
    traj = trajectory.pca(ckpts, ignore=())
    assert traj.names == [f"epoch_{i}" for i in range(7)] and traj.steps == [i * 10 for i in range(7)]
    np.testing.assert_allclose(np.abs(traj.coords), np.abs(trajectory.pca(thetas, ignore=()).coords))
    loaded = trajectory.Trajectory.from_bytes(traj.to_bytes())
    torch.testing.assert_close(loaded.directions, traj.directions)
    assert loaded.names == traj.names and loaded.trustworthiness == traj.trustworthiness
    lines = traj.to_csv().splitlines()
    assert lines[0] == "name,step,c1,c2,residual_norm" and lines[1].startswith("epoch_0,0,")


def test_bad_inputs():
    thetas, *_ = planar_trajectory()
    with pytest.raises(ValueError, match="at least 3 checkpoints; got 2"):
        trajectory.pca(thetas[:2], ignore=())
    bad = thetas.clone()
    bad[3, 5] = float("nan")
    with pytest.raises(ValueError, match="'#3' has NaN"):
        trajectory.pca(bad, ignore=())
    with pytest.raises(ValueError, match="shape"):
        trajectory.pca([thetas[0], thetas[1], thetas[2, :10]], ignore=())
    with pytest.raises(ValueError, match="n_components"):
        trajectory.pca(thetas, n_components=7, ignore=())
    with pytest.raises(ValueError, match="identical"):
        trajectory.pca(thetas[:1].repeat(4, 1), ignore=())
    line = thetas[0] + torch.arange(4, dtype=torch.float64)[:, None] * thetas[1]
    with pytest.raises(ValueError, match="span only 1 dimension"):
        trajectory.pca(line, ignore=())
    with pytest.raises(ValueError, match="reference"):
        trajectory.pca(thetas, reference="middle", ignore=())
    with pytest.raises(ValueError, match="2 <= n_neighbors < n"):
        trajectory.umap(thetas[:3], n_neighbors=3)
    with pytest.raises(ValueError, match="at least 3"):
        trajectory.umap(thetas[:2])
    with pytest.raises(ValueError, match="dim"):
        trajectory.autoencoder(thetas[:3], dim=3)


def test_umap_runs_on_few_checkpoints_and_is_seeded():
    gen = torch.Generator().manual_seed(2)
    thetas = torch.randn(12, 40, generator=gen, dtype=torch.float64).cumsum(0)
    first = trajectory.umap(thetas, seed=0)
    assert first.coords.shape == (12, 2) and np.isfinite(first.coords).all()
    assert 0.0 <= first.trustworthiness <= 1.0
    assert first.settings["n_neighbors"] == 11 and first.reconstruction_error is None
    tiny = trajectory.umap(thetas[:3])  # n_neighbors defaults to n - 1 = 2
    assert tiny.coords.shape == (3, 2) and tiny.settings["n_neighbors"] == 2
    np.testing.assert_array_equal(trajectory.umap(thetas[:3], seed=0).coords, tiny.coords)


def test_autoencoder_reconstructs_a_planar_trajectory():
    thetas, *_ = planar_trajectory(P=200)
    view = trajectory.autoencoder(thetas, dim=2, seed=0, epochs=1500)
    assert view.settings["span_dimensions"] == 2  # standardizing is per-coordinate scaling: still a plane
    assert view.reconstruction_error < 0.02
    assert view.coords.shape == (7, 2) and 0.0 <= view.trustworthiness <= 1.0
    again = trajectory.autoencoder(thetas, dim=2, seed=0, epochs=1500)
    np.testing.assert_array_equal(again.coords, view.coords)
    squeezed = trajectory.autoencoder(thetas, dim=1, seed=0, epochs=1500)
    assert squeezed.reconstruction_error > view.reconstruction_error


# -- the PCA plane under the path ---------------------------------------------------------------
@pytest.fixture(scope="module")
def regression():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(40, 4, generator=gen, dtype=torch.float64)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]], dtype=torch.float64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    problem = Problem(model, nn.functional.mse_loss, (X, y))
    thetas = [problem.theta0.clone()]
    theta = problem.theta0.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([theta], lr=0.05)
    for _ in range(5):
        for _ in range(4):
            optimizer.zero_grad()
            problem.full_loss(theta).backward()
            optimizer.step()
        thetas.append(theta.detach().clone())
    return problem, torch.stack(thetas)


def test_projection_gap_is_zero_in_plane_and_exact_off_plane(regression):
    problem, thetas = regression
    traj = trajectory.pca(thetas, ignore=())
    gap = trajectory_plane.projection_gap(problem, traj, thetas)
    expected_true = problem.evaluate(thetas)["train_loss"]
    np.testing.assert_allclose(gap.true_values["train_loss"], expected_true, rtol=1e-12)
    projections = traj.center + torch.from_numpy(traj.coords) @ traj.directions
    expected_proj = problem.evaluate(projections)["train_loss"]
    np.testing.assert_allclose(gap.projected_values["train_loss"], expected_proj, rtol=1e-12)
    np.testing.assert_allclose(gap.gap["train_loss"], expected_proj - expected_true, atol=1e-12)
    assert gap.gap["train_loss"][-1] == pytest.approx(0.0, abs=1e-12)  # the final point is the centre
    assert np.abs(gap.gap["train_loss"]).max() > 0  # a 6-step trajectory in 37 dimensions is not planar
    # checkpoints made inside the plane have no gap
    planar = traj.center + torch.from_numpy(traj.coords) @ traj.directions
    flat = trajectory.pca(planar, ignore=())
    np.testing.assert_allclose(trajectory_plane.projection_gap(problem, flat, planar).gap["train_loss"], 0, atol=1e-10)
    assert gap.to_csv().count("\n") == 1 + 6 * len(gap.true_values)


def test_pca_plane_surface_holds_the_path(regression):
    problem, thetas = regression
    traj = trajectory.pca(thetas, ignore=())
    surf = trajectory_plane.pca_plane(problem, traj, steps=5, use_cache=False)
    assert surf.values["train_loss"].shape == (5, 5)
    assert surf.alphas.min() < traj.coords[:, 0].min() and surf.alphas.max() > traj.coords[:, 0].max()
    assert surf.betas.min() < traj.coords[:, 1].min() and surf.betas.max() > traj.coords[:, 1].max()
    assert surf.alphas[-1] - surf.alphas[0] == pytest.approx(surf.betas[-1] - surf.betas[0])
    assert surf.settings["trajectory"]["coords"] == traj.coords.tolist()
    i, j = 2, 4
    point = traj.center + surf.alphas[i] * traj.directions[0] + surf.betas[j] * traj.directions[1]
    assert surf.values["train_loss"][i, j] == pytest.approx(problem.evaluate(point)["train_loss"][0], rel=1e-10)
    with pytest.raises(ValueError, match="trajectory.pca"):
        trajectory_plane.pca_plane(problem, trajectory.autoencoder(thetas, epochs=10))


def test_pca_plane_coarse_to_fine_equals_the_direct_plane_and_shares_its_cache_entry(regression, fresh_cache):
    problem, thetas = regression
    traj = trajectory.pca(thetas, ignore=())
    direct = trajectory_plane.pca_plane(problem, traj, steps=9, use_cache=False)
    assert trajectory_plane.cached_pca_plane(problem, traj, steps=9) is None
    preview = trajectory_plane.pca_preview(problem, traj)  # 40 samples: the whole split, no noise
    assert preview.settings["preview"] is True and preview.settings["noise"] == {"train_loss": 0.0}
    assert preview.settings["trajectory"]["coords"] == traj.coords.tolist()
    passes = []
    refined = trajectory_plane.pca_plane(problem, traj, steps=9, on_level=passes.append, known=preview)
    assert len(passes) > 1 and passes[0].settings["level"] == 0
    assert refined.settings["reused_cells"] > 0  # the preview's cells on the 9-step grid, same data
    for q, v in direct.values.items():
        np.testing.assert_allclose(refined.values[q], v, rtol=1e-12, err_msg=q)
    np.testing.assert_array_equal(refined.alphas, direct.alphas)
    np.testing.assert_array_equal(refined.betas, direct.betas)
    hit = trajectory_plane.cached_pca_plane(problem, traj, steps=9)
    assert hit is not None and hit.settings["trajectory"] == direct.settings["trajectory"]
    np.testing.assert_array_equal(hit.values["train_loss"], refined.values["train_loss"])
