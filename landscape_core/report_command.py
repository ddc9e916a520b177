"""``landscape report``: the Compare page as one offline HTML file.

    landscape report --demo digits-mlp --out report.html
    landscape report --spec my_spec.py:build --b other_spec.py:build --out report.html --span 0.5

Model A is the workspace's model A, model B its model B, or with ``--b SPEC`` model A of that
spec's workspace. The numbers come from ``comparison.compare`` (the Compare page's engines and
cache); the page is laid out by ``dashboard_ui.report``, which needs the dashboard extra
(Altair, vl-convert): without it the command fails with one sentence.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .comparison import NORMS, STEPS, CompareSettings
from .defaults import COMPARE


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    """The ``report`` subcommand's options (``common``: --spec/--demo, --subset, --out, ...)."""
    p = sub.add_parser("report", parents=[common], help="the Compare page of A and B as one offline HTML file")
    p.add_argument("--b", help="model B: model A of this spec (path/to/spec.py:build); default: the workspace's B")
    p.add_argument("--split", help="split shown in the maps (default: the first both models have)")
    p.add_argument("--quantity", default="loss", help="loss (default) or a metric, e.g. accuracy")
    p.add_argument("--norm", choices=list(NORMS), default=COMPARE.norm)
    p.add_argument("--seed", type=int, default=COMPARE.seed, help="directions' seed (the 1D lines use seed + 1)")
    p.add_argument("--span", type=float, default=COMPARE.span, help="alpha and beta from -span to +span")
    p.add_argument("--steps", type=int, choices=list(STEPS), default=COMPARE.steps, help="points per axis")
    p.add_argument("--lines", type=int, default=COMPARE.lines, help="random 1D lines per model (2 to 10)")
    p.add_argument("--no-hessian", action="store_true", help="skip lambda_max and the spectra")
    p.add_argument("--log", action="store_true", help="logarithmic colour scale of the maps")


def settings_of(args) -> CompareSettings:
    return CompareSettings(
        splits=tuple(args.splits) if args.splits else None,
        split=args.split,
        quantity=args.quantity,
        norm=args.norm,
        seed=args.seed,
        span=args.span,
        steps=args.steps,
        lines=args.lines,
        hessian=not args.no_hessian,
        log=args.log,
    )


def models(args, workspace):
    """``(problem_a, problem_b, labels)`` named by the arguments."""
    from .commands import CommandError, load_workspace

    problem_a = workspace.problem
    if args.b:
        other = load_workspace(argparse.Namespace(spec=args.b, demo=None, traceback=args.traceback))
        problem_b = other.problem
        labels = (workspace.labels[0], other.labels[0])
        if labels[0] == labels[1]:
            labels = (workspace.name, other.name) if workspace.name != other.name else ("A", "B")
    elif workspace.compare is None:
        raise CommandError(f"workspace {workspace.name!r} has a single model; name model B with --b SPEC.")
    else:
        problem_b, labels = workspace.compare, tuple(workspace.labels)
    if args.subset:
        problem_a, problem_b = problem_a.subset(args.subset, seed=0), problem_b.subset(args.subset, seed=0)
    return problem_a, problem_b, labels


def run(args, workspace, progress) -> dict:
    """Write the report to ``args.out``; returns the JSON-ready summary."""
    from .commands import CommandError
    from .comparison import compare

    try:
        from dashboard_ui import report
    except ImportError:
        raise CommandError(
            "'landscape report' draws its charts with the dashboard's libraries: "
            "pip install 'landscape-dashboard[dashboard]'."
        ) from None
    settings = settings_of(args)
    problem_a, problem_b, labels = models(args, workspace)
    start = time.monotonic()
    comparison = compare(problem_a, problem_b, labels, settings, progress=progress)
    computed = time.monotonic() - start
    text = report.report_html(comparison, workspace.name)
    out = Path(args.out)
    part = out.with_name(out.name + ".part")
    part.write_bytes(text.encode("utf-8"))
    part.replace(out)
    return {
        "verdict": comparison.verdict,
        "bytes": out.stat().st_size,
        "charts": text.count('<div class="chart'),
        "compute_seconds": round(computed, 3),
    }


def check_out(args) -> None:
    from .commands import CommandError

    if not args.out or Path(args.out).suffix.lower() not in (".html", ".htm"):
        raise CommandError(f"--out must name an .html file; got {args.out!r}.")
    if not Path(args.out).resolve().parent.is_dir():
        raise CommandError(f"--out folder {str(Path(args.out).parent)!r} does not exist.")


def progress_printer(enabled: bool):
    """``progress(what, done, total)`` writing one line per finished piece to stderr."""

    def progress(what: str, done: int, total: int) -> None:
        if enabled and total > 0 and done >= total:
            sys.stderr.write(f"report: {what} done\n")
            sys.stderr.flush()

    return progress
