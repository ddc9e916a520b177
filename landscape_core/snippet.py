""" "Copy as Python": code that recomputes a dashboard result with ``landscape_core``.

``surface_code(result, source)`` reads how a ``Surface`` was made from its ``settings``
(directions' provenance, span, steps, splits) and where its problem came from
(``source``: ``{"workspace": "digits-mlp" | "spec:file.py:build", "model": "A" | "B",
"subset": int | None}``) and writes a self-contained script that ends with the result in
``result``. A result that cannot be rebuilt from its settings (directions drawn by hand,
masked directions) raises ``NotImplementedError`` with the reason, never a wrong script.
"""

from __future__ import annotations

_IMPORTS = "from landscape_core import directions, surface"


def problem_code(source: dict) -> list[str]:
    """Lines that build ``problem`` as the dashboard did (workspace, model A/B, subset)."""
    wid = source.get("workspace")
    if not isinstance(wid, str) or not wid:
        raise ValueError(f"source['workspace'] must name a demo or 'spec:<target>'; got {wid!r}.")
    if wid.startswith("upload:"):
        raise NotImplementedError("an uploaded workspace has no code to rebuild it from; write a spec for it.")
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
