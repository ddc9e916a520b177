"""What each ``landscape`` subcommand computes: workspace loading and thin adapters over the engines.

Every command takes the parsed arguments, the workspace and a progress callback, calls the
library with the dashboard's default settings (so results land under the same cache keys as
the pages' first screens) and returns ``(result, summary)``: a ``ResultIO`` result and a
JSON-ready dict. An engine that is not installed fails with one sentence (``CommandError``).
Argument parsing and exit codes live in ``cli.py``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time

import numpy as np

from .defaults import SHARPNESS, TRAJECTORY, path_ends


class CommandError(Exception):
    """A user error the CLI reports as one line (exit status 1)."""


# -- progress -------------------------------------------------------------------------------------
class ProgressBar:
    """``progress(done, total)`` callback drawing a plain-text bar on ``stream``.

    On a terminal the bar is redrawn in place (at most 10 times a second); otherwise one line
    is written per quarter, so logs stay short.
    """

    def __init__(self, label: str, stream=None, enabled: bool = True, width: int = 30):
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.width = width
        self.start = time.monotonic()
        self.last_draw = 0.0
        self.last_quarter = -1
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((int(done), int(total)))
        if not self.enabled or total <= 0:
            return
        now = time.monotonic()
        fraction = min(1.0, done / total)
        elapsed = now - self.start
        eta = elapsed * (total - done) / done if done else None
        text = (
            f"{self.label} [{'#' * int(self.width * fraction):<{self.width}}] {done}/{total} "
            f"{100 * fraction:3.0f}% {elapsed:5.1f}s" + (f" eta {eta:.0f}s" if eta is not None and done < total else "")
        )
        if self.tty:
            if done >= total or now - self.last_draw >= 0.1:
                self.stream.write("\r" + text + ("\n" if done >= total else ""))
                self.stream.flush()
                self.last_draw = now
        else:
            quarter = int(4 * fraction)
            if quarter != self.last_quarter:
                self.stream.write(text + "\n")
                self.stream.flush()
                self.last_quarter = quarter

    @property
    def cached(self) -> bool | None:
        """True when the engine reported the whole total at once (served from the cache); ``None``
        when the engine reports no progress (then the CLI cannot tell)."""
        if not self.calls:
            return None
        return self.calls[0][0] >= self.calls[0][1] > 0


# -- workspace --------------------------------------------------------------------------------------
def _engine(name: str, command: str):
    """Import ``landscape_core.<name>`` or fail with one line saying the command is not available."""
    try:
        return importlib.import_module(f"landscape_core.{name}")
    except ImportError as exc:
        raise CommandError(
            f"'{command}' needs landscape_core.{name}, which is not available in this install ({exc})."
        ) from None


def load_workspace(args):
    """The workspace named by ``--spec`` or ``--demo``."""
    if bool(args.spec) == bool(args.demo):
        raise CommandError("give exactly one of --spec PATH.py:build or --demo NAME.")
    if args.spec:
        from .spec import SpecError, load_spec

        try:
            return load_spec(args.spec)
        except SpecError as exc:
            if args.traceback and exc.traceback:
                sys.stderr.write(exc.traceback)
            hint = " (--traceback shows where)" if exc.traceback and not args.traceback else ""
            raise CommandError(str(exc) + hint) from None
    demos = _engine("demos", f"--demo {args.demo}")
    names = demos.list_demos()
    if args.demo not in names:
        raise CommandError(f"unknown demo {args.demo!r}; available: {', '.join(names)}.")
    return demos.load(args.demo)


def problem_of(args, workspace):
    problem = workspace.problem if args.model == "A" else workspace.compare
    if problem is None:
        raise CommandError(f"workspace {workspace.name!r} has no model B (--model B).")
    if args.subset:
        problem = problem.subset(args.subset, seed=0)  # the dashboard's subset draw
    return problem


def _splits(args, problem) -> list[str]:
    if not args.splits:
        return list(problem.splits)
    unknown = [s for s in args.splits if s not in problem.splits]
    if unknown:
        raise CommandError(f"unknown split(s) {unknown}; this problem has {list(problem.splits)}.")
    return list(args.splits)


def _call(fn, **kwargs):
    """Call an engine function with the keyword arguments it accepts (engines differ in options)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return fn(**kwargs)
    return fn(**{k: v for k, v in kwargs.items() if k in params})


# -- commands -------------------------------------------------------------------------------------
def cmd_surface(args, workspace, bar):
    from . import directions, guards, surface
    from .results import Surface

    problem = problem_of(args, workspace)
    splits = _splits(args, problem)
    span = (-args.span, args.span)
    if args.dims == 2:
        guards.check_grid(problem, args.steps, args.steps, budget=args.memory_budget)
        d = directions.random(problem, count=2, norm=args.norm, ignore=tuple(args.ignore), seed=args.seed)
        result = surface.plane(
            problem, d[0], d[1], span=span, steps=args.steps, splits=splits, progress=bar, use_cache=not args.no_cache
        )
        return result, _surface_summary(result, splits)
    steps = args.steps
    guards.check_points(problem, steps * args.lines, f"{args.lines} lines of {steps} steps", args.memory_budget)
    d = directions.random(problem, count=args.lines, norm=args.norm, ignore=tuple(args.ignore), seed=args.seed)
    parts = []
    for i in range(args.lines):

        def report(done, total, i=i):
            bar(i * steps + done, args.lines * steps)

        parts.append(
            surface.line(
                problem, d[i], span=span, steps=steps, splits=splits, progress=report, use_cache=not args.no_cache
            )
        )
    values = {f"{q}@line{i + 1}": p.values[q] for i, p in enumerate(parts) for q in p.values}
    result = Surface(
        alphas=parts[0].alphas, values=values, settings={"kind": "lines", "lines": [p.settings for p in parts]}
    )
    return result, _surface_summary(parts[0], splits) | {"lines": args.lines}


def _surface_summary(result, splits) -> dict:
    out = {"shape": list(np.shape(next(iter(result.values.values())))), "nonfinite": result.nonfinite}
    for s in splits:
        q = f"{s}_loss"
        if q in result.values:
            v = result.values[q]
            finite = v[np.isfinite(v)]
            out[q] = {
                "center": result.center_value(q),
                "min": float(finite.min()) if finite.size else None,
                "max": float(finite.max()) if finite.size else None,
            }
    return out


def _checkpoint(workspace, spec: str | None, default_index: int):
    """``(theta, buffers, name)`` for ``A:name``/``B:name``/``name``/``A``/``B`` (model's base point)."""
    if spec is None:
        if len(workspace.checkpoints) >= 2:
            c = workspace.checkpoints[default_index]
            return c.theta, c.buffers, c.name
        if workspace.compare is not None and default_index == -1:
            return workspace.compare.theta0, workspace.compare.buffers, workspace.labels[1]
        if default_index == 0:
            return workspace.problem.theta0, workspace.problem.buffers, workspace.labels[0]
        raise CommandError("this workspace has fewer than two checkpoints and no model B; name --from and --to.")
    side, _, name = spec.rpartition(":")
    if not side and spec in ("A", "B"):
        problem = workspace.problem if spec == "A" else workspace.compare
        if problem is None:
            raise CommandError("this workspace has no model B.")
        return problem.theta0, problem.buffers, spec
    pool = workspace.compare_checkpoints if side == "B" else workspace.checkpoints
    for c in pool:
        if c.name == name:
            return c.theta, c.buffers, c.name
    raise CommandError(f"no checkpoint {spec!r}; available: {', '.join(c.name for c in pool) or '(none)'}.")


def cmd_interpolate(args, workspace, bar):
    interpolation = _engine("interpolation", "interpolate")
    from . import guards

    problem = problem_of(args, workspace)
    if problem is not workspace.problem and args.model == "B":
        raise CommandError("interpolate runs in model A's space; use --model A.")
    start, end = path_ends(workspace)  # the Interpolation page's default ends
    theta_a, buffers_a, name_a = _checkpoint(workspace, args.from_ or start, 0)
    theta_b, buffers_b, name_b = _checkpoint(workspace, args.to or end, -1)
    if args.from_ is None and args.to is None and start == end:
        raise CommandError("this workspace has no checkpoints and no model B; name --from and --to.")
    if theta_a.shape != theta_b.shape:
        raise CommandError(f"{name_a} and {name_b} have different architectures; interpolation needs one space.")
    guards.check_points(problem, args.steps, f"a path of {args.steps} steps", args.memory_budget)
    result = _call(
        interpolation.linear,
        problem=problem,
        theta_a=theta_a,
        theta_b=theta_b,
        steps=args.steps,
        span=tuple(args.path_span),
        bn=args.bn,
        progress=bar,
        buffers_a=buffers_a,
        buffers_b=buffers_b,
        splits=_splits(args, problem),
        use_cache=not args.no_cache,
    )
    summary = {"from": name_a, "to": name_b}
    barrier = getattr(result, "barrier", None)
    if isinstance(barrier, dict):
        summary["barrier"] = barrier
        summary["barrier_definitions"] = result.settings.get("barrier_definitions")
    return result, summary


def cmd_hessian(args, workspace, bar):
    hessian = _engine("hessian", "hessian")
    problem = problem_of(args, workspace)
    if args.what == "eigenvalues":
        result = _call(
            hessian.top_eigenvalues,
            problem=problem,
            k=args.k,
            which=args.which,
            tol=args.tol,
            max_iter=args.max_iter,
            seed=args.seed,
            progress=bar,
            use_cache=not args.no_cache,
        )
        summary = {"eigenvalues": [float(v) for v in np.asarray(result.values)]}
        if hasattr(result, "residuals"):
            summary["residuals"] = [float(r) for r in np.asarray(result.residuals)]
        return result, summary
    fn = getattr(hessian, args.what, None)
    if fn is None:
        fn = getattr(_engine(args.what, f"hessian --what {args.what}"), args.what)
    result = _call(
        fn,
        problem=problem,
        seed=args.seed,
        budget=args.budget,
        iters=args.iters,
        runs=args.runs,
        progress=bar,
        use_cache=not args.no_cache,
    )
    summary = {}
    for name in ("estimate", "stderr", "lambda_max", "lambda_min", "hvp_count"):
        if hasattr(result, name):
            value = getattr(result, name)
            summary[name] = float(value) if isinstance(value, (int, float, np.number)) else value
    return result, summary


SHARPNESS_RADIUS = {
    "epsilon": ("eps", SHARPNESS.eps),
    "adaptive": ("rho", SHARPNESS.rho),
    "average": ("sigma", SHARPNESS.sigma),
}


def cmd_sharpness(args, workspace, bar):
    sharpness = _engine("sharpness", "sharpness")
    problem = problem_of(args, workspace)
    fn = getattr(sharpness, args.kind, None)
    if fn is None:
        raise CommandError(f"landscape_core.sharpness has no {args.kind!r} measure in this install.")
    name, default = SHARPNESS_RADIUS[args.kind]
    radius = default if args.radius is None else args.radius
    kwargs = {"problem": problem, "seed": args.seed, name: radius, "progress": bar, "use_cache": not args.no_cache}
    if args.kind == "average":
        kwargs |= {"samples": args.samples, "adaptive": SHARPNESS.adaptive_noise}
    else:
        kwargs["starts"] = getattr(args, "starts", 1)
    if args.kind == "adaptive":
        kwargs["p"] = SHARPNESS.p
        kwargs["convention"] = getattr(args, "convention", "elementwise")
    result = _call(fn, **kwargs)
    summary = {"kind": result.kind, name: radius}
    for key in ("estimate", "convention", "starts"):
        if result.settings.get(key) is not None:
            summary[key] = result.settings[key]
    for key in ("value", "stderr", "base_loss", "perturbed_loss"):
        value = getattr(result, key, None)
        if isinstance(value, (int, float, np.number)):
            summary[key] = float(value)
    return result, summary


PCA_VARIANTS = {"li2018": ("li2018", ("bias", "norm")), "uncentred": ("uncentred", ())}  # as the Trajectory page


def cmd_trajectory(args, workspace, bar):
    trajectory = _engine("trajectory", "trajectory")
    pool = workspace.compare_checkpoints if args.model == "B" else workspace.checkpoints
    if len(pool) < 3:
        raise CommandError(f"a trajectory needs at least 3 checkpoints; model {args.model} has {len(pool)}.")
    problem = workspace.compare if args.model == "B" else workspace.problem
    if args.method == "pca":
        variant, ignore = PCA_VARIANTS[args.pca]
        result = _call(
            trajectory.pca, thetas=pool, reference=args.reference, variant=variant, ignore=ignore, space=problem
        )
    else:
        neighbors = min(TRAJECTORY.umap_neighbors, len(pool) - 1) if args.neighbors is None else args.neighbors
        result = _call(trajectory.umap, thetas=pool, n_neighbors=neighbors, seed=args.seed, use_cache=not args.no_cache)
    summary = {"checkpoints": len(pool)}
    if args.method == "pca":
        summary["pca"] = result.settings.get("definition")
        summary["ignored"] = result.settings.get("ignored")
    for name in ("explained_variance_ratio", "trustworthiness"):
        if hasattr(result, name):
            value = getattr(result, name)
            summary[name] = np.asarray(value).tolist() if value is not None else None
    return result, summary


def cmd_demo(args):
    """Train (or load) each demo and precompute every page's first screen (``first_screen.precompute``)."""
    demos = _engine("demos", "demo")
    from . import first_screen

    names = args.names or demos.list_demos()
    unknown = [n for n in names if n not in demos.list_demos()]
    if unknown:
        raise CommandError(f"unknown demo(s) {unknown}; available: {', '.join(demos.list_demos())}.")
    pages = ["surface"] if args.surface_only else args.pages
    report = []
    for name in names:
        start = time.monotonic()
        workspace = _call(demos.load, name=name, progress=ProgressBar(f"{name} training", enabled=not args.quiet))
        loaded = time.monotonic() - start
        bars: dict[str, ProgressBar] = {}

        def progress(what, done, total, name=name, bars=bars):
            if what not in bars:
                bars[what] = ProgressBar(f"{name} {what}", enabled=not args.quiet)
            bars[what](done, total)

        seconds = first_screen.precompute(workspace, pages=pages, progress=progress)
        report.append(
            {"demo": name, "load_s": round(loaded, 2), "total_s": round(time.monotonic() - start, 2)}
            | {
                "pages_s": seconds,
                "parameters": workspace.problem.space.size,
                "checkpoints": len(workspace.checkpoints),
            }
        )
    return report


COMMANDS = {
    "surface": cmd_surface,
    "interpolate": cmd_interpolate,
    "hessian": cmd_hessian,
    "sharpness": cmd_sharpness,
    "trajectory": cmd_trajectory,
}
