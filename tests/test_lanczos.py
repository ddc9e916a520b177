"""Thick-restart Lanczos and the Lanczos tridiagonal on explicit float64 matrices."""

import pytest
import torch

from landscape_core.lanczos import eigsh, tridiagonal

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _matrix(eigenvalues, seed=0):
    n = len(eigenvalues)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return Q @ torch.diag(torch.as_tensor(eigenvalues, dtype=torch.float64)) @ Q.T


@pytest.mark.parametrize("which", ["largest", "smallest", "both"])
def test_extremal_eigenpairs_with_restarts(which):
    ev = torch.linspace(-1, 1, 300, dtype=torch.float64)
    ev[-3:] = torch.tensor([3.0, 3.1, 3.2], dtype=torch.float64)
    ev[:2] = torch.tensor([-2.0, -1.9], dtype=torch.float64)
    A = _matrix(ev)
    out = eigsh(lambda v: A @ v, 300, k=2, which=which, tol=1e-10, basis_size=12)
    exact = torch.linalg.eigvalsh(A)
    want = {"largest": exact[-2:].flip(0), "smallest": exact[:2].flip(0)}
    want["both"] = torch.cat([want["largest"], want["smallest"]])
    torch.testing.assert_close(out.values, want[which], rtol=1e-9, atol=1e-9)
    assert out.restarts > 0 and bool(out.converged.all())
    residuals = (out.vectors @ A - out.values[:, None] * out.vectors).norm(dim=1)
    torch.testing.assert_close(out.residuals, residuals, atol=1e-12, rtol=0)


def test_repeated_top_eigenvalue_is_found_twice():
    ev = torch.linspace(-1, 1, 200, dtype=torch.float64)
    ev[-2:] = 5.0
    A = _matrix(ev, seed=1)
    out = eigsh(lambda v: A @ v, 200, k=3, tol=1e-10)
    torch.testing.assert_close(out.values[:2], torch.tensor([5.0, 5.0], dtype=torch.float64))
    assert abs(float(out.vectors[0] @ out.vectors[1])) < 1e-8


def test_low_rank_operator_restarts_from_fresh_directions():
    Q, _ = torch.linalg.qr(torch.randn(50, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    B = Q @ torch.diag(torch.tensor([3.0, 2.0], dtype=torch.float64)) @ Q.T
    out = eigsh(lambda v: B @ v, 50, k=2, which="both", tol=1e-10)
    torch.testing.assert_close(out.values, torch.tensor([3.0, 2.0, 0.0, 0.0], dtype=torch.float64), atol=1e-12, rtol=0)


def test_tridiagonal_with_full_steps_has_the_eigenvalues_as_nodes():
    ev = torch.arange(1.0, 21.0, dtype=torch.float64)
    A = _matrix(ev, seed=3)
    T, steps = tridiagonal(lambda v: A @ v, torch.ones(20, dtype=torch.float64), 20)
    assert steps == 20
    torch.testing.assert_close(torch.linalg.eigvalsh(T), ev, rtol=1e-10, atol=1e-10)


def test_bad_arguments():
    A = torch.eye(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="k = 5"):
        eigsh(lambda v: A @ v, 4, k=5)
    with pytest.raises(ValueError, match="tol"):
        eigsh(lambda v: A @ v, 4, k=1, tol=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        eigsh(lambda v: A @ v, 4, k=1, max_iter=0)
