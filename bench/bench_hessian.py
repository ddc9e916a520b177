"""Hessian spectrum, trace and density: landscape_core vs PyHessian, side by side, against float64 truth.

Problem: an MLP 64 -> 128 (ReLU) -> 10 (P = 9,610) on all 1,797 sklearn digits (X / 16),
cross-entropy, trained briefly (full-batch Adam, fixed seed) in this script.

Reference ("truth"), computed here independently of both tools, in float64:

* eigenvalues: ARPACK (``scipy.sparse.linalg.eigsh``, tol 1e-14) on float64 Hessian-vector
  products of the full loss written in this file; for a symmetric matrix every Ritz value lies
  within its residual norm of an eigenvalue, so the printed residual bounds the error;
* trace: closed form. With ReLU (zero second derivative a.e.) and a single hidden layer the network
  is linear in each layer's parameters, so the Hessian's diagonal blocks equal the Gauss-Newton
  ones and ``tr H = (1/N) sum_n [tr(S_n)(|h_n|^2 + 1) + (|x_n|^2 + 1) sum_j r_nj (W2^T S_n W2)_jj]``,
  ``S_n = diag(p_n) - p_n p_n^T``, ``r_nj = relu'(a_nj)``; checked against ``torch.func.hessian``
  on a small net at start-up;
* ``--dense``: the full float64 Hessian (9,610 rows by double backward) and ``eigvalsh``; several
  minutes on a busy 2-core CPU (743 s here), hence optional. Measured once: ARPACK's top-5 agree
  with the dense ``eigvalsh`` to 7.6e-16 relative, and the closed-form trace equals the dense trace
  to 10 digits (15.08104746).

Run: ``python bench/bench_hessian.py`` (about a minute; ``--threads`` sets torch's intra-op threads,
default 1: on a small model and a shared 2-core machine more threads only add contention).
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import scipy.sparse.linalg as sla
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from landscape_core import Problem, hessian


def build_problem(steps: int, seed: int = 0):
    digits = load_digits()
    X = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    model.eval()
    return model, X, y


class Float64Loss:
    """Full-batch float64 loss of a copy of the model, as a function of flat parameters (bench-only code)."""

    def __init__(self, model, X, y):
        self.model = copy.deepcopy(model).double()
        self.X, self.y = X.double(), y
        self.names = [n for n, _ in self.model.named_parameters()]
        self.shapes = [p.shape for p in self.model.parameters()]
        self.theta = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])
        self.count = 0
        t = self.theta.clone().requires_grad_(True)
        self.leaf = t
        self.grad = torch.autograd.grad(self.loss(t), t, create_graph=True)[0]

    def unflatten(self, t):
        out, offset = {}, 0
        for name, shape in zip(self.names, self.shapes):
            k = int(np.prod(shape))
            out[name] = t[offset : offset + k].reshape(shape)
            offset += k
        return out

    def loss(self, t):
        return F.cross_entropy(torch.func.functional_call(self.model, self.unflatten(t), (self.X,)), self.y)

    def hvp(self, v):
        self.count += 1
        v = torch.as_tensor(np.asarray(v).reshape(-1), dtype=torch.float64)
        return torch.autograd.grad(self.grad, self.leaf, v, retain_graph=True)[0].numpy()


def closed_form_trace(model, X, y) -> float:
    """Exact ``tr H`` of a Linear-ReLU-Linear classifier with cross-entropy (see module docstring)."""
    W1, b1 = model[0].weight.double(), model[0].bias.double()
    W2, b2 = model[2].weight.double(), model[2].bias.double()
    X = X.double()
    with torch.no_grad():
        a = X @ W1.T + b1
        h = a.clamp_min(0)
        r = (a > 0).double()
        p = torch.softmax(h @ W2.T + b2, dim=1)
        tr_S = (p * (1 - p)).sum(1)  # tr(diag(p) - p p^T)
        # (W2^T S W2)_jj = sum_k p_k W2_kj^2 - (sum_k p_k W2_kj)^2
        diag = p @ (W2**2) - (p @ W2) ** 2
        terms = tr_S * ((h**2).sum(1) + 1) + ((X**2).sum(1) + 1) * (r * diag).sum(1)
    return float(terms.mean())


def check_closed_form() -> float:
    """Relative error of ``closed_form_trace`` against ``torch.func.hessian`` on a small net."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).double()
    X, y = torch.randn(30, 5, dtype=torch.float64), torch.randint(0, 3, (30,))
    f = Float64Loss(model, X, y)
    exact = float(torch.func.hessian(f.loss)(f.theta).trace())
    return abs(closed_form_trace(model, X, y) - exact) / abs(exact)


def dense_spectrum(f: Float64Loss) -> np.ndarray:
    """All eigenvalues of the dense float64 Hessian, built row by row (double backward through the
    kept gradient graph, exact to rounding), then ``eigvalsh``."""
    P = f.theta.numel()
    H = torch.empty(P, P, dtype=torch.float64)
    e = torch.zeros(P, dtype=torch.float64)
    for i in range(P):
        e[i] = 1.0
        H[i] = torch.autograd.grad(f.grad, f.leaf, e, retain_graph=True)[0]
        e[i] = 0.0
    return torch.linalg.eigvalsh(0.5 * (H + H.T)).numpy()[::-1]


def best_time(fn, repeats: int):
    """(minimum wall time over ``repeats`` calls, last result)."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="full-batch Adam steps of the brief training")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of this many runs")
    parser.add_argument("--trace-budget", type=int, default=300)
    parser.add_argument("--density-iters", type=int, default=60)
    parser.add_argument("--dense", action="store_true", help="also compute the dense float64 Hessian + eigvalsh")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    model, X, y = build_problem(args.steps)
    problem = Problem(model, F.cross_entropy, (X, y))
    P = problem.space.size
    print(
        f"digits MLP 64-128-10, P = {P}, N = {len(X)}, train loss {problem.base['train_loss']:.4f}, "
        f"accuracy {problem.base['train_accuracy']:.3f}, torch threads {args.threads}"
    )

    # -- truth -----------------------------------------------------------------------------------------
    print(f"closed-form trace vs torch.func.hessian on a small ReLU net: rel. error {check_closed_form():.1e}")
    f64 = Float64Loss(model, X, y)
    start = time.perf_counter()
    op = sla.LinearOperator((P, P), matvec=f64.hvp, dtype=np.float64)
    ref_vals, ref_vecs = sla.eigsh(op, k=5, which="LA", tol=1e-14, ncv=40)
    order = np.argsort(ref_vals)[::-1]
    ref_vals, ref_vecs = ref_vals[order], ref_vecs[:, order]
    ref_res = np.array([np.linalg.norm(f64.hvp(v) - lam * v) for lam, v in zip(ref_vals, ref_vecs.T)])
    bottom_vals = np.sort(sla.eigsh(op, k=3, which="SA", tol=1e-14, ncv=60)[0])[::-1]
    exact_trace = closed_form_trace(model, X, y)
    print(
        f"reference: ARPACK on float64 HVPs ({f64.count} products, {time.perf_counter() - start:.1f} s), "
        f"max residual / lambda_max = {ref_res.max() / ref_vals[0]:.1e} (bounds the eigenvalue error)"
    )
    if args.dense:
        start = time.perf_counter()
        dense = dense_spectrum(f64)
        print(
            f"dense float64 Hessian + eigvalsh ({time.perf_counter() - start:.0f} s): top-5 {dense[:5]}, "
            f"max rel. diff to ARPACK {np.max(np.abs(dense[:5] - ref_vals) / ref_vals[0]):.1e}, "
            f"trace {dense.sum():.10g} vs closed form {exact_trace:.10g}"
        )
    print(f"top-5 eigenvalues: {np.array2string(ref_vals, precision=8)}; trace {exact_trace:.8g}")
    print(f"3 most negative eigenvalues: {np.array2string(bottom_vals, precision=8)}")

    def rel(est, ref):
        return np.max(np.abs(np.asarray(est) - ref) / np.abs(ref))

    rows = []

    # -- PyHessian -----------------------------------------------------------------------------------------
    import importlib

    ph_module = importlib.import_module("pyhessian.hessian")  # the module (the package exports the class)
    PyHessian = ph_module.hessian

    counter = {"hvp": 0}
    original_hvp = ph_module.hessian_vector_product

    def counted_hvp(*a, **k):
        counter["hvp"] += 1
        return original_hvp(*a, **k)

    ph_module.hessian_vector_product = counted_hvp

    def ph_run(what, fn):
        counter["hvp"] = 0

        def once():
            counter["hvp"] = 0
            return fn(PyHessian(copy.deepcopy(model), F.cross_entropy, data=(X, y), cuda=False))

        seconds, out = best_time(once, args.repeats)
        return seconds, out, counter["hvp"]

    for k in (1, 5):
        s, (vals, _), n = ph_run(f"top-{k}", lambda h, k=k: h.eigenvalues(top_n=k))
        rows.append(("pyhessian", f"top-{k}", s, rel(vals, ref_vals[:k]), n))
    s, tr, n = ph_run("trace", lambda h: h.trace())
    rows.append(("pyhessian", "trace", s, abs(np.mean(tr) - exact_trace) / exact_trace, n))
    ph_trace = (float(np.mean(tr)), len(tr))
    try:
        s, (eigs, weights), n = ph_run("density", lambda h: h.density(iter=args.density_iters, n_v=1))
        top_node = max(max(e) for e in eigs)
        rows.append(("pyhessian", "density top node", s, abs(top_node - ref_vals[0]) / ref_vals[0], n))
    except Exception as exc:  # torch.eig was removed from PyTorch
        rows.append(
            (
                "pyhessian",
                "density",
                float("nan"),
                f"raises: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                counter["hvp"],
            )
        )
    ph_module.hessian_vector_product = original_hvp

    # -- landscape_core ----------------------------------------------------------------------------------
    ours = {}
    for k in (1, 5):
        s, spec = best_time(lambda k=k: hessian.top_eigenvalues(problem, k=k, use_cache=False), args.repeats)
        ours[k] = spec
        rows.append(("landscape_core", f"top-{k}", s, rel(spec.values, ref_vals[:k]), spec.hvp_count))
    s, spec = best_time(lambda: hessian.top_eigenvalues(problem, k=3, which="smallest", use_cache=False), args.repeats)
    ours["bottom"] = spec
    bottom_err = np.max(np.abs(spec.values - bottom_vals)) / ref_vals[0]  # relative to ||H||: these are ~0
    rows.append(("landscape_core", "bottom-3 (/||H||)", s, bottom_err, spec.hvp_count))
    rows.append(("pyhessian", "bottom-3", float("nan"), "not available (power iteration: largest |lambda| only)", 0))
    s, est = best_time(lambda: hessian.trace(problem, budget=args.trace_budget, use_cache=False), args.repeats)
    rows.append(("landscape_core", "trace", s, abs(est.estimate - exact_trace) / exact_trace, est.hvp_count))
    s, dens = best_time(lambda: hessian.density(problem, iters=args.density_iters, use_cache=False), args.repeats)
    rows.append(
        ("landscape_core", "density top node", s, abs(dens.lambda_max - ref_vals[0]) / ref_vals[0], dens.hvp_count)
    )

    # -- report --------------------------------------------------------------------------------------------
    print(f"\n{'tool':<15} {'task':<18} {'seconds':>8} {'rel. error':>11} {'HVPs':>5}")
    for tool, task, seconds, err, n in sorted(rows, key=lambda r: (r[1].split()[0], r[0])):
        err_text = f"{err:11.2e}" if isinstance(err, float) else f" {err}"
        print(f"{tool:<15} {task:<18} {seconds:8.3f} {err_text} {n:>5}")
    print(f"\npyhessian trace {ph_trace[0]:.6g} from {ph_trace[1]} Hutchinson samples (no error bar)")
    covered = abs(est.estimate - exact_trace) <= 2 * est.stderr
    print(
        f"landscape_core trace {est.estimate:.6g} +- {est.stderr:.2g} (Hutch++, {est.hvp_count} HVPs); "
        f"truth {exact_trace:.6g}: within {abs(est.estimate - exact_trace) / est.stderr:.2f} stderr"
        f"{'' if covered else ' (NOT covered by 2 stderr)'}"
    )
    spec = ours[5]
    print(
        f"landscape_core top-5 residuals / lambda_max: {np.array2string(spec.residuals / ref_vals[0], precision=1)}, "
        f"converged {spec.converged.tolist()}, HVP method {spec.settings['hvp_method_used']}"
    )
    print(f"total bench time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
