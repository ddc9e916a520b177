"""all-MiniLM-L6-v2 end to end, offline, at a scale that fits CI (runs when the extra "text" is installed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape_core import minilm

pytestmark = pytest.mark.skipif(not minilm.minilm_available()[0], reason=minilm.minilm_available()[1])


@pytest.fixture(scope="module")
def workspace():
    return minilm.minilm_workspace(epochs=1, max_train=16, max_val=8)


def test_real_minilm_problem_takes_the_tokenizer_dict_and_reads_model_output(workspace):
    problem = workspace.problem
    X = problem.splits["train"].X
    assert set(X) == {"input_ids", "attention_mask"} and X["input_ids"].dtype == torch.int64
    # the landscape spans the last block and the head; the rest are constants
    assert problem.space.size == 1_775_234
    assert all(name.startswith(minilm.TRAINED) for name in problem.space.names)
    assert sum(p.numel() for p in problem.model.parameters()) == 22_713_216 + 770  # MiniLM-L6 and the head
    # base values equal a direct float64-accumulated call of the model on the whole split
    with torch.no_grad():
        logits = problem.model(**X).logits
    y = problem.splits["train"].y
    loss = torch.nn.functional.cross_entropy(logits.double(), y)
    assert problem.base["train_loss"] == pytest.approx(float(loss), rel=1e-5)
    assert problem.base["train_accuracy"] == pytest.approx(float((logits.argmax(1) == y).double().mean()), abs=1e-12)


def test_real_minilm_plane_interpolation_and_head_eigenvalue(workspace):
    from landscape_core import directions, hessian, interpolation, surface

    problem, other = workspace.problem, workspace.compare
    d = directions.random(problem, 2, seed=0)
    plane = surface.plane(problem, d[0], d[1], span=(-0.5, 0.5), steps=3, splits=["train"], use_cache=False)
    values = plane.values["train_loss"]
    assert values.shape == (3, 3) and np.isfinite(values).all()
    assert values[1, 1] == problem.base["train_loss"]  # the centre cell is the base point, bit for bit
    path = interpolation.linear(problem, problem.theta0, other.theta0, steps=3, splits=["train"], use_cache=False)
    assert path.values["train_loss"][0] == pytest.approx(problem.base["train_loss"], rel=1e-6)
    assert path.values["train_loss"][-1] == pytest.approx(other.at(other.theta0).base["train_loss"], rel=1e-4)
    mask = problem.space.mask(include="head.*")
    spectrum = hessian.top_eigenvalues(problem, k=1, mask=mask, use_cache=False)
    # the head's block of the Hessian, exactly: features fixed, so it is a logistic-regression Hessian
    with torch.no_grad():
        X = problem.splits["train"].X
        captured = {}
        handle = problem.model.head.register_forward_hook(lambda m, i, o: captured.setdefault("f", i[0]))
        problem.model(**X)
        handle.remove()
    feats = torch.cat([captured["f"].double(), torch.ones(len(captured["f"]), 1, dtype=torch.float64)], 1)
    W = torch.cat([problem.model.head.weight.double(), problem.model.head.bias.double()[:, None]], 1)
    p = torch.softmax(feats @ W.T, dim=1)
    n, C, D = feats.shape[0], p.shape[1], feats.shape[1]
    H = torch.zeros(C * D + 0, C * D, dtype=torch.float64)
    for i in range(n):
        A = torch.diag(p[i]) - torch.outer(p[i], p[i])
        H += torch.kron(A, torch.outer(feats[i], feats[i])) / n
    # parameter order of the space: head.weight (C, D-1) row-major, then head.bias (C,)
    order = [c * D + j for c in range(C) for j in range(D - 1)] + [c * D + D - 1 for c in range(C)]
    exact = torch.linalg.eigvalsh(H[order][:, order])[-1]
    assert spectrum.values[0] == pytest.approx(float(exact), rel=1e-4)
