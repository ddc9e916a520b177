""" "Copy as Python": code that recomputes a dashboard result with ``landscape_core``.

``surface_code(result, source)`` reads how a ``Surface`` was made from its ``settings``
(directions' provenance, span, steps, splits) and where its problem came from
(``source``: ``{"workspace": "digits-mlp" | "spec:file.py:build", "model": "A" | "B",
"subset": int | None}``) and writes a self-contained script that ends with the result in
``result``. A result that cannot be rebuilt from its settings (directions drawn by hand,
masked directions) raises ``NotImplementedError`` with the reason, never a wrong script;
a result of an uploaded workspace (files, no code) raises ``NoCodeError``, and
``spec_for(problem)`` drafts the spec that would give it code.
"""

from __future__ import annotations

_IMPORTS = "from landscape_core import directions, surface"
_MAX_ARCHITECTURE_LINES = 14


class NoCodeError(NotImplementedError):
    """The result's workspace was uploaded (weights, data, a ``.pt2`` program): no code rebuilds it."""


def problem_code(source: dict) -> list[str]:
    """Lines that build ``problem`` as the dashboard did (workspace, model A/B, subset)."""
    wid = source.get("workspace")
    if not isinstance(wid, str) or not wid:
        raise ValueError(f"source['workspace'] must name a demo or 'spec:<target>'; got {wid!r}.")
    if wid.startswith("upload:"):
        raise NoCodeError("an uploaded workspace has no code to rebuild it from; write a spec for it.")
    if wid.startswith("spec:"):
        lines = ["from landscape_core import spec", f"ws = spec.load_spec({wid[5:]!r})"]
    else:
        lines = ["from landscape_core import demos", f"ws = demos.load({wid!r})"]
    model = source.get("model", "A")
    if model not in ("A", "B"):
        raise ValueError(f"source['model'] must be 'A' or 'B'; got {model!r}.")
    lines.append("problem = ws.problem" if model == "A" else "problem = ws.compare  # model B")
    if source.get("subset"):
        lines.append(f"problem = problem.subset({int(source['subset'])}, seed=0)  # the dashboard's evaluation subset")
    return lines


def directions_code(provenances: list[dict], names: list[str]) -> list[str]:
    """Lines that rebuild directions ``names`` (e.g. ``["d1", "d2"]``) from their provenance."""
    if len(provenances) != len(names):
        raise ValueError(f"{len(provenances)} provenances for {len(names)} names.")
    kinds = {p.get("kind") for p in provenances}
    if len(kinds) != 1:
        raise NotImplementedError(f"directions of mixed kinds {sorted(map(str, kinds))} cannot be rebuilt together.")
    kind = kinds.pop()
    first = provenances[0]
    if kind == "random":
        if any(p.get("masked") for p in provenances):
            raise NotImplementedError("masked random directions: the mask is not recorded in the settings.")
        keys = ("count", "norm", "ignore", "orthogonal", "seed")
        if any(tuple(p.get(k) for k in keys) != tuple(first.get(k) for k in keys) for p in provenances):
            raise NotImplementedError("random directions from different draws cannot be rebuilt by one call.")
        lines = [
            f"basis = directions.random(problem, count={first['count']}, norm={first['norm']!r}, "
            f"ignore={tuple(first['ignore'])!r}, orthogonal={first['orthogonal']}, seed={first['seed']})"
        ]
    elif kind == "hessian":
        lines = [
            "from landscape_core import hessian",
            f"spectrum = hessian.top_eigenvalues(problem, k={first['k']}, which={first['which']!r}, seed={first['seed']})",
            "basis = spectrum.vectors.to(problem.device, problem.dtype)",
        ]
    else:
        raise NotImplementedError(f"directions of kind {kind!r} have no recipe in their settings.")
    lines += [f"{name} = basis[{p['index']}]" for name, p in zip(names, provenances)]
    return lines


def surface_code(result, source: dict) -> str:
    """Python source that recomputes ``result`` (a ``Surface`` of kind line, plane or lines)."""
    settings = result.settings
    kind = settings.get("kind")
    if kind == "lines":
        lines_settings = settings["lines"]
        body = directions_code(
            [s["directions"][0] for s in lines_settings], [f"d{i + 1}" for i in range(len(lines_settings))]
        )
        s0 = lines_settings[0]
        body += [
            f"result = [surface.line(problem, d, span={tuple(s0['span'])}, steps={s0['steps']}, splits={s0['splits']})",
            f"          for d in ({', '.join(f'd{i + 1}' for i in range(len(lines_settings)))},)]",
        ]
    elif kind == "line":
        body = directions_code(settings["directions"], ["d1"])
        body.append(
            f"result = surface.line(problem, d1, span={tuple(settings['span'])}, steps={settings['steps']}, "
            f"splits={settings['splits']})"
        )
    elif kind == "plane":
        body = directions_code(settings["directions"], ["d1", "d2"])
        body.append(
            f"result = surface.plane(problem, d1, d2, span={tuple(settings['span'])}, steps={settings['steps']},\n"
            f"                       span_y={tuple(settings['span_y'])}, steps_y={settings['steps_y']}, "
            f"splits={settings['splits']})"
        )
    else:
        raise NotImplementedError(f"no snippet recipe for a surface of kind {kind!r}.")
    footer = (
        "print({q: v.shape for q, v in result.values.items()})" if kind != "lines" else "print(len(result), 'lines')"
    )
    return "\n".join([_IMPORTS, *problem_code(source), *body, footer]) + "\n"


def compare_code(result_a, result_b, source_a: dict, source_b: dict) -> str:
    """Python source that recomputes both sides of a comparison (``result_a``, ``result_b``)."""
    parts = []
    for label, result, source in (("a", result_a, source_a), ("b", result_b, source_b)):
        code = surface_code(result, source).rstrip("\n").splitlines()
        body = [line for line in code if not line.startswith("print(")]
        parts.append(f"# model {label.upper()}")
        parts += body
        parts.append(f"result_{label} = result")
    parts.append("print({q: (result_b.values[q] - result_a.values[q]).max() for q in result_a.values})")
    return "\n".join(parts) + "\n"


def spec_for(problem, name: str = "the uploaded model") -> str:
    """A spec file to start from for ``problem``'s model, for results that have no code (uploads).

    It names the architecture (``print(model)``, shortened), the loss and the shapes of the data,
    and loads weights and data from files as the upload did; the model's code is the user's part.
    """
    import torch.nn.functional as F

    # one line; no quote can end the docstring and no backslash can start an escape in it
    name = " ".join(str(name).split()).replace('"', "'").replace("\\", "/")
    model = problem.model
    layers = repr(model).splitlines()
    if len(layers) > _MAX_ARCHITECTURE_LINES:
        layers = [*layers[: _MAX_ARCHITECTURE_LINES - 1], "..."]
    loss = getattr(problem.loss, "__name__", "")
    builtin = bool(loss) and getattr(F, loss, None) is problem.loss
    loss_code, loss_note = (f"F.{loss}", "") if builtin else ("my_loss", "  # the loss you used")
    train = problem.splits["train"]
    x_shape = ", ".join(["n", *map(str, train.X.shape[1:])])
    y_shape = ", ".join(["n", *map(str, train.y.shape[1:])])
    lines = [
        f'"""A spec for {name}: the architecture in code, the weights and data as files."""',
        "import torch",
        "import torch.nn.functional as F",
        "from landscape_core import Problem",
        "",
        f"# The weights fit this architecture ({type(model).__name__}, {problem.space.size:,} parameters):",
        *(f"#   {line}" for line in layers),
        "",
        "",
        "def build():",
        "    model = make_model()  # your code for the architecture above",
        '    model.load_state_dict(torch.load("weights.pt", weights_only=True))  # the state dict you uploaded',
        f'    data = torch.load("train.pt", weights_only=True)  # X ({x_shape}), y ({y_shape})',
        f'    return Problem(model, {loss_code}, train=(data["X"], data["y"])){loss_note}',
    ]
    return "\n".join(lines) + "\n"
