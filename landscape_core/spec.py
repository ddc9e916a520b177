"""Spec files: bring your own model in one small Python file.

A spec is a Python file (``path/to/spec.py:build``) or an importable module
(``package.module:build``) with a function that takes no arguments and returns a
``Workspace`` (a ``Problem`` plus optional checkpoints and a model B to compare) or just a
``Problem`` (wrapped into a Workspace named after the spec). Without ``:function`` the
function ``build`` is used.

    # my_spec.py
    import torch, torch.nn.functional as F
    from landscape_core import Problem

    def build():
        model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        model.load_state_dict(torch.load("model.pt", weights_only=True))
        X, y = torch.load("data.pt", weights_only=True)
        return Problem(model, F.cross_entropy, train=(X, y))

``load_spec("my_spec.py:build")`` runs it. Code runs only from a spec that the person
starting the server or the CLI named; uploaded files are never executed (``uploads.py``).

Every failure is a ``SpecError`` with a one-sentence message; when the spec's own code
raised, ``SpecError.traceback`` holds the formatted traceback (the dashboard shows it in
an expander and stays up). A missing file or module is also a ``FileNotFoundError``, a
wrong return type also a ``TypeError``, so callers can catch either family.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from .problem import Problem
from .workspace import Workspace

DEFAULT_FUNCTION = "build"

TEMPLATE = '''"""A landscape spec: build() returns a Problem (or a Workspace with checkpoints)."""
import torch
import torch.nn.functional as F
from landscape_core import Problem


def build():
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    model.load_state_dict(torch.load("model.pt", weights_only=True))  # your trained weights
    X, y = torch.load("data.pt", weights_only=True)                      # tensors (n, 4) and (n,)
    return Problem(model, F.cross_entropy, train=(X, y))
'''


class SpecError(RuntimeError):
    """A spec could not be loaded or run.

    ``target``: the spec string as given. ``traceback``: the formatted traceback of the
    spec's own code when it raised (frames of this loader removed), else ``None``.
    """

    def __init__(self, message: str, target: str = "", traceback_text: str | None = None):
        super().__init__(message)
        self.target = target
        self.traceback = traceback_text


class SpecNotFound(SpecError, FileNotFoundError):
    """The spec file, module or function does not exist."""


class SpecReturnError(SpecError, TypeError):
    """The spec function returned something other than a Workspace or a Problem."""


@dataclass(frozen=True)
class SpecTarget:
    """A parsed spec string: ``source`` (file path or module name), ``function``, ``is_file``."""

    source: str
    function: str
    is_file: bool

    def __str__(self) -> str:
        return f"{self.source}:{self.function}"

    @property
    def label(self) -> str:
        """Short name for the sidebar: ``spec.py:build`` or ``package.module:build``."""
        return f"{Path(self.source).name if self.is_file else self.source}:{self.function}"


def parse_target(target: str) -> SpecTarget:
    """Split ``"path/to/spec.py:build"`` or ``"package.module:build"`` (function optional).

    A target naming an existing path or ending in ``.py`` is a file; anything else must be
    a dotted module name.
    """
    if not isinstance(target, str) or not target.strip():
        raise SpecNotFound(
            f"spec must be a string like 'path/to/spec.py:build' or 'package.module:build'; got {target!r}.",
            str(target),
        )
    target = target.strip()
    source, function = target, DEFAULT_FUNCTION
    head, sep, tail = target.rpartition(":")
    # "C:\\spec.py" style drive letters have a path separator right after the colon.
    if sep and tail and not tail.startswith(("\\", "/")):
        source, function = head, tail
    if not function.isidentifier():
        raise SpecNotFound(f"spec function name {function!r} is not a Python identifier (in {target!r}).", target)
    is_file = source.endswith(".py") or "/" in source or "\\" in source or Path(source).exists()
    if not is_file and not all(part.isidentifier() for part in source.split(".")):
        raise SpecNotFound(
            f"spec source {source!r} is neither a .py file nor a dotted module name (in {target!r}).", target
        )
    return SpecTarget(source, function, is_file)


def spec_source_text(target: str) -> str | None:
    """The Python source of the spec's file (or module file), for display; ``None`` if unknown."""
    parsed = parse_target(target)
    try:
        if parsed.is_file:
            return Path(parsed.source).expanduser().read_text()
        found = importlib.util.find_spec(parsed.source)
        if found is not None and found.origin and found.origin.endswith(".py"):
            return Path(found.origin).read_text()
    except (OSError, ImportError, ValueError):
        return None
    return None


def load_spec(target: str, **kwargs) -> Workspace:
    """Run the spec ``target`` and return its ``Workspace``.

    ``target``: ``"path/to/spec.py:build"`` or ``"package.module:build"`` (``:build`` is the
    default). ``kwargs`` are passed to the function. A returned ``Problem`` is wrapped in a
    Workspace named after the spec. Raises ``SpecError`` (see module docstring).
    """
    parsed = parse_target(target)
    module = _import_file(parsed, target) if parsed.is_file else _import_module(parsed, target)
    function = getattr(module, parsed.function, None)
    if function is None:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise SpecNotFound(
            f"spec {parsed.source!r} has no function {parsed.function!r}; its callables are {public}.", target
        )
    if not callable(function):
        raise SpecReturnError(
            f"{parsed.label} is a {type(function).__name__}, not a function; it must be a function returning "
            "a Workspace or a Problem.",
            target,
        )
    try:
        result = function(**kwargs)
    except (Exception, SystemExit) as exc:  # a spec that calls sys.exit() must not end the app
        raise SpecError(
            f"the spec {parsed.label} raised {type(exc).__name__}: {_first_line(exc)}", target, _user_traceback(exc)
        ) from exc
    return as_workspace(result, parsed, target)


def as_workspace(result, parsed: SpecTarget, target: str = "") -> Workspace:
    """Accept a Workspace, wrap a Problem, refuse anything else with the type named."""
    if isinstance(result, Workspace):
        return result
    if isinstance(result, Problem):
        return Workspace(name=f"spec {parsed.label}", problem=result, description=f"From the spec {parsed}.")
    shown = type(result).__name__
    hint = ""
    if isinstance(result, tuple) and any(isinstance(r, Problem) for r in result):
        hint = " (to add checkpoints, return Workspace(name, problem, checkpoints=[...]))"
    raise SpecReturnError(
        f"the spec {parsed.label} returned a {shown}; it must return a landscape_core Workspace or Problem{hint}.",
        target or str(parsed),
    )


# -- importing ----------------------------------------------------------------------------
def _import_file(parsed: SpecTarget, target: str):
    path = Path(parsed.source).expanduser().resolve()
    if not path.is_file():
        raise SpecNotFound(f"spec file {parsed.source!r} does not exist (resolved to {path}).", target)
    name = "landscape_spec_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise SpecNotFound(f"spec file {str(path)!r} cannot be imported as Python.", target)
    module = importlib.util.module_from_spec(module_spec)
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # sibling imports of the spec (helpers next to it) work
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise SpecError(
            f"importing the spec file {path.name} raised {type(exc).__name__}: {_first_line(exc)}",
            target,
            _user_traceback(exc),
        ) from exc
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    return module


def _import_module(parsed: SpecTarget, target: str):
    try:
        return importlib.import_module(parsed.source)
    except ModuleNotFoundError as exc:
        if exc.name and parsed.source.startswith(exc.name):
            raise SpecNotFound(f"spec module {parsed.source!r} cannot be found ({exc}).", target) from exc
        raise SpecError(
            f"importing the spec module {parsed.source} raised {type(exc).__name__}: {_first_line(exc)}",
            target,
            _user_traceback(exc),
        ) from exc
    except Exception as exc:
        raise SpecError(
            f"importing the spec module {parsed.source} raised {type(exc).__name__}: {_first_line(exc)}",
            target,
            _user_traceback(exc),
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def _user_traceback(exc: BaseException) -> str:
    """Formatted traceback without the frames of this loader and importlib's machinery."""
    tb = exc.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename == __file__ or "importlib._bootstrap" in tb.tb_frame.f_code.co_filename
    ):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))
