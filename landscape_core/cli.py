"""``landscape``: compute landscapes headless, into the dashboard's disk cache.

    landscape surface --demo digits-mlp --out plane.npz          # the Surface page's default plane
    landscape surface --spec examples/custom_loss_spec.py --dims 1 --lines 3 --json
    landscape interpolate --demo digits-mlp --from A:epoch_1 --to A:epoch_10 --out path.npz
    landscape hessian --demo logistic-blobs --what eigenvalues --k 3 --out spectrum.npz
    landscape sharpness --demo digits-mlp --kind epsilon --out sharp.npz
    landscape trajectory --demo digits-mlp --method pca --out traj.npz
    landscape demo            # train every built-in demo and precompute every page's first screen
    landscape report --demo digits-mlp --out report.html   # the Compare page as one offline HTML file

Results go through the same engines and the same cache (``$LANDSCAPE_CACHE_DIR``) as the
dashboard, with the dashboard's default settings (``landscape_core.defaults``), so a
precomputed result opens instantly there. Progress goes to stderr, results to ``--out`` (``.npz``, the result's own format, or ``.csv``),
a summary to stdout (``--json``: one JSON object). Exit status 0 on success; 1 with a
one-line reason on stderr for bad input (``--traceback`` shows the full traceback); 2 for
a usage error; 3 for an internal error; 130 when interrupted (Ctrl-C), 143 when terminated
(SIGTERM): both stop at once, finished tiles of a grid stay cached and a rerun resumes.
Warnings of the library (an unusable cache folder, an unreadable entry, a loss that cannot
be identified) are one ``landscape: warning:`` line each on stderr; the cache never stops
a command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import clusters, executors, report_command
from .commands import COMMANDS, CommandError, ProgressBar, _engine, cmd_demo, load_workspace
from .defaults import HESSIAN, INTERPOLATION, SHARPNESS, SURFACE, TRAJECTORY
from .first_screen import PAGES
from .results import plain_json

USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, LookupError)


# -- argument parsing ----------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text}")
    return value


MAX_RADIUS = 1000.0  # a perturbation radius (eps, rho, sigma) beyond this is not a neighbourhood of the model


def _radius(text: str) -> float:
    value = _positive_float(text)
    if value > MAX_RADIUS:
        raise argparse.ArgumentTypeError(
            f"must be a positive number up to {MAX_RADIUS:g} (a radius this large is not a neighbourhood of the "
            f"model, and its perturbed weights overflow); got {text}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="landscape",
        description="Loss landscapes of PyTorch models, computed into the dashboard's cache.",
        epilog="Specs: a file or module with build() returning a Workspace or Problem (see README).",
    )
    parser.add_argument("--cache-dir", help="cache folder (default: $LANDSCAPE_CACHE_DIR or ~/.cache/...)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    source = common.add_argument_group("what to analyse")
    source.add_argument("--spec", help="spec file or module: path/to/spec.py:build or package.module:build")
    source.add_argument("--demo", help="a built-in demo (landscape demo --list)")
    source.add_argument("--model", choices=["A", "B"], default="A", help="model A (default) or the workspace's B")
    source.add_argument("--subset", type=_positive_int, help="evaluate on a random subset of N samples per split")
    source.add_argument("--splits", nargs="+", help="data splits (default: all)")
    out = common.add_argument_group("output")
    out.add_argument("--out", help="write the result here: .npz (the result itself) or .csv (its tidy table)")
    out.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    out.add_argument("--no-cache", action="store_true", help="recompute and do not store")
    out.add_argument("--traceback", action="store_true", help="show full tracebacks of errors")
    out.add_argument(
        "--memory-budget", type=lambda t: int(_positive_float(t) * 2**20), help="memory budget in MiB (default 2048)"
    )

    where = common.add_argument_group("where to compute (optional extra: pip install -e '.[ray]')")
    where.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="compute on a Ray cluster: 'local' (start Ray here with this machine's cores), 'auto' ($RAY_ADDRESS) "
        "or an address such as head-node:6379",
    )
    where.add_argument("--ray-workers", type=_positive_int, help="Ray actors (default: one per GPU or per CPU)")
    where.add_argument(
        "--ray-gpus-per-worker",
        type=float,
        help="GPUs per Ray actor (default: 1 when the cluster has GPUs, else CPU actors)",
    )

    p = sub.add_parser("surface", parents=[common], help="1D lines or a 2D plane along random directions")
    p.add_argument("--dims", type=int, choices=[1, 2], default=2, help="2: a plane (default); 1: random lines")
    p.add_argument(
        "--steps", type=_positive_int, default=SURFACE.steps, help=f"points per axis (default {SURFACE.steps})"
    )
    p.add_argument("--span", type=_positive_float, default=SURFACE.span, help="alpha (and beta) from -span to +span")
    p.add_argument("--norm", choices=["filter", "layer", "none"], default=SURFACE.norm)
    p.add_argument("--ignore", nargs="*", choices=["bias", "norm"], default=list(SURFACE.ignore))
    p.add_argument("--seed", type=int, default=SURFACE.seed)
    p.add_argument("--lines", type=_positive_int, default=SURFACE.lines, help="number of random lines for --dims 1")

    p = sub.add_parser("interpolate", parents=[common], help="loss along the segment between two checkpoints")
    ends = "default: A to B when they share an architecture, else A's first checkpoint to A"
    p.add_argument("--from", dest="from_", help=f"checkpoint name, A:name, B:name, or A/B ({ends})")
    p.add_argument("--to", help="checkpoint name, A:name, B:name, or A/B")
    p.add_argument("--steps", type=_positive_int, default=INTERPOLATION.steps)
    p.add_argument("--path-span", type=float, nargs=2, default=list(INTERPOLATION.span), metavar=("LOW", "HIGH"))
    p.add_argument("--bn", choices=["recompute", "interpolate", "keep"], default=INTERPOLATION.bn)

    p = sub.add_parser("hessian", parents=[common], help="Hessian eigenvalues, trace or eigenvalue density")
    p.add_argument("--what", choices=["eigenvalues", "trace", "density"], default="eigenvalues")
    p.add_argument("--k", type=_positive_int, default=HESSIAN.k, help="eigenvalues per end")
    p.add_argument("--which", choices=["largest", "smallest", "both"], default=HESSIAN.which)
    p.add_argument("--tol", type=_positive_float, default=HESSIAN.tol, help="relative residual of the eigenpairs")
    p.add_argument("--max-iter", type=_positive_int, default=HESSIAN.max_iter, help="products for the eigenvalues")
    p.add_argument(
        "--budget", type=_positive_int, default=HESSIAN.trace_budget, help="Hessian-vector products for the trace"
    )
    p.add_argument("--iters", type=_positive_int, default=HESSIAN.density_iters, help="Lanczos steps for the density")
    p.add_argument("--runs", type=_positive_int, default=HESSIAN.density_runs, help="Lanczos runs for the density")
    p.add_argument("--seed", type=int, default=HESSIAN.seed)

    p = sub.add_parser("sharpness", parents=[common], help="epsilon, adaptive or average sharpness")
    p.add_argument("--kind", choices=["epsilon", "adaptive", "average"], default="epsilon")
    p.add_argument(
        "--radius",
        type=_radius,
        help=f"eps (epsilon, default {SHARPNESS.eps:g}), rho (adaptive, default {SHARPNESS.rho:g}) or sigma "
        f"(average, default {SHARPNESS.sigma:g}); at most 1000",
    )
    p.add_argument(
        "--starts",
        type=_positive_int,
        default=1,
        help="random starts of the ascent for epsilon and adaptive (the best is kept; the value is a lower bound)",
    )
    p.add_argument(
        "--convention",
        choices=["elementwise", "asam"],
        default="elementwise",
        help="adaptive scale: elementwise |theta| + eta on every parameter (default), or asam: Kwon et al. 2021's "
        "|w| + 0.01 on weights and 1 on biases",
    )
    p.add_argument(
        "--samples",
        type=_positive_int,
        default=SHARPNESS.samples,
        help=f"Monte Carlo samples for --kind average (default {SHARPNESS.samples})",
    )
    p.add_argument("--seed", type=int, default=SHARPNESS.seed)

    p = sub.add_parser("trajectory", parents=[common], help="PCA or UMAP of the checkpoints")
    p.add_argument("--method", choices=["pca", "umap"], default="pca")
    p.add_argument(
        "--pca",
        choices=["li2018", "uncentred"],
        default="li2018",
        help="li2018 (default): Li et al. 2018's centred PCA without biases and normalization parameters; "
        "uncentred: SVD of the differences from the final point over every parameter",
    )
    p.add_argument("--reference", choices=["final", "first", "mean"], default=TRAJECTORY.reference, help="PCA only")
    p.add_argument(
        "--neighbors",
        type=_positive_int,
        help=f"UMAP neighbours (default {TRAJECTORY.umap_neighbors}, at most checkpoints - 1)",
    )
    p.add_argument("--seed", type=int, default=TRAJECTORY.seed)

    report_command.add_parser(sub, common)

    p = sub.add_parser("dashboard", help="start the dashboard in the browser (a Streamlit server)")
    p.add_argument("--spec", help="open this spec's workspace: path/to/spec.py:build or package.module:build")
    p.add_argument("--port", type=_positive_int, help="server port (default: Streamlit's, 8501)")
    p.add_argument("--headless", action="store_true", help="do not open a browser window")

    p = sub.add_parser("demo", help="train the built-in demos and precompute every page's first screen")
    p.add_argument("names", nargs="*", help="demos to prepare (default: all)")
    p.add_argument("--list", action="store_true", help="list the demos and exit")
    p.add_argument("--pages", nargs="+", choices=list(PAGES), help="only these pages' first screens (default: all)")
    p.add_argument("--surface-only", action="store_true", help="only the Surface page (same as --pages surface)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--traceback", action="store_true")
    return parser


def write_result(result, path: Path) -> Path:
    """``result`` as ``.npz`` (``result.save``) or ``.csv`` (``result.to_csv()``), written whole or not at all."""
    if path.suffix.lower() == ".npz":
        return result.save(path)
    part = path.with_name(path.name + ".part")
    part.write_text(result.to_csv())
    part.replace(path)
    return path


def run(args) -> dict:
    """Execute parsed ``args``; returns the JSON-ready summary (raises on errors)."""
    if args.command == "demo":
        if args.list:
            return {"command": "demo", "demos": _engine("demos", "demo --list").list_demos()}
        start = time.monotonic()
        return {"command": "demo", "prepared": cmd_demo(args), "seconds": round(time.monotonic() - start, 2)}
    if args.command == "report":
        return _report(args)
    if args.out and Path(args.out).suffix.lower() not in (".npz", ".csv"):
        raise CommandError(f"--out must name a .npz or .csv file; got {args.out!r}.")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise CommandError(f"--out folder {str(Path(args.out).parent)!r} does not exist.")
    start = time.monotonic()
    executor = _executor(args)
    workspace = load_workspace(args)
    loaded = time.monotonic() - start
    bar = ProgressBar(args.command, enabled=not args.quiet)
    start = time.monotonic()
    try:
        with executors.using(executor):
            result, summary = COMMANDS[args.command](args, workspace, bar)
    finally:
        if executor.remote:
            executor.shutdown()  # the pool's actors; Ray itself and its object store stay as they were
    elapsed = time.monotonic() - start
    if args.out:
        write_result(result, Path(args.out))
    return {
        "command": args.command,
        "workspace": workspace.name,
        "result": type(result).__name__,
        "out": str(Path(args.out).resolve()) if args.out else None,
        "cached": bar.cached,
        "load_seconds": round(loaded, 3),
        "seconds": round(elapsed, 3),
        "summary": summary,
        "executor": executor.describe() if executor.remote else executor.name,
    }


def _report(args) -> dict:
    """``landscape report``: the Compare page as one offline HTML file (see ``report_command``)."""
    report_command.check_out(args)
    start = time.monotonic()
    workspace = load_workspace(args)
    loaded = time.monotonic() - start
    start = time.monotonic()
    summary = report_command.run(args, workspace, report_command.progress_printer(not args.quiet))
    return {
        "command": "report",
        "workspace": workspace.name,
        "result": "HTML report",
        "out": str(Path(args.out).resolve()),
        "cached": None,
        "load_seconds": round(loaded, 3),
        "seconds": round(time.monotonic() - start, 3),
        "summary": summary,
    }


def _executor(args):
    """The executor of ``--ray`` (in-process without it); a ``ValueError`` sentence when unusable."""
    options = {
        name: value
        for name, value in (("workers", args.ray_workers), ("gpus_per_worker", args.ray_gpus_per_worker))
        if value is not None
    }
    if not args.ray:
        if options:
            raise CommandError("--ray-workers and --ray-gpus-per-worker need --ray ADDRESS.")
        return executors.current()
    if options.get("gpus_per_worker", 0) < 0:
        raise CommandError(f"--ray-gpus-per-worker must be >= 0; got {args.ray_gpus_per_worker}.")
    return clusters.for_address(args.ray, **options)


def _print_human(report: dict) -> None:
    if report["command"] == "demo":
        if "demos" in report:
            print("\n".join(report["demos"]))
            return
        for row in report["prepared"]:
            print(
                f"{row['demo']}: ready ({row['parameters']:,} parameters, {row['checkpoints']} checkpoints, "
                f"{row['total_s']} s)"
            )
        return
    cached = " (from the cache)" if report["cached"] else ""
    print(
        f"{report['command']} of {report['workspace']}: {report['result']} in {report['seconds']} s{cached} "
        f"(workspace loaded in {report['load_seconds']} s)"
    )
    for key, value in report["summary"].items():
        print(f"  {key}: {json.dumps(plain_json(value))}")
    if report["out"]:
        print(f"  written to {report['out']}")


def _dashboard(args) -> int:
    """``landscape dashboard``: the Streamlit server in the foreground (its own exit status)."""
    try:
        from dashboard_ui import launch
    except ImportError:
        sys.stderr.write("landscape: error: the dashboard is not installed with this package.\n")
        return 1
    try:
        return launch.serve(spec=args.spec, port=args.port, headless=args.headless)
    except RuntimeError as exc:
        sys.stderr.write(f"landscape: error: {exc}\n")
        return 1


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C (claims released, the interpreter exits normally)."""


@contextlib.contextmanager
def _signals_and_warnings():
    """SIGTERM raises ``Terminated`` in the main thread; library warnings become one stderr line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("landscape: warning: %(message)s"))
    library = logging.getLogger("landscape_core")
    library.addHandler(handler)
    previous = None
    if threading.current_thread() is threading.main_thread():

        def terminate(signum, frame):
            raise Terminated

        previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        library.removeHandler(handler)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stopped(exc: BaseException, what: str) -> str:
    notes = "; ".join(getattr(exc, "__notes__", []))
    return f"landscape: {what}" + (f": {notes}" if notes else "") + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``landscape`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2 with argparse's one-line message
    if args.cache_dir:
        import os

        os.environ["LANDSCAPE_CACHE_DIR"] = args.cache_dir
    if args.command == "dashboard":
        return _dashboard(args)
    with _signals_and_warnings():
        return _main(args)


def _main(args) -> int:
    try:
        report = run(args)
    except KeyboardInterrupt as exc:
        sys.stderr.write(_stopped(exc, "interrupted"))
        return 130
    except Terminated as exc:
        sys.stderr.write(_stopped(exc, "terminated"))
        return 143
    except (CommandError, *USER_ERRORS) as exc:
        if args.traceback and not isinstance(exc, CommandError):
            import traceback

            traceback.print_exc()
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, KeyError):
            message = str(exc.args[0]) if exc.args else "missing key"
        sys.stderr.write(f"landscape: error: {message}\n")
        return 1
    except Exception as exc:  # a bug: still one line unless asked for the traceback
        if args.traceback:
            import traceback

            traceback.print_exc()
        sys.stderr.write(
            f"landscape: internal error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            " (rerun with --traceback)\n"
        )
        return 3
    if args.json:
        print(json.dumps(plain_json(report), indent=None))
    else:
        _print_human(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
