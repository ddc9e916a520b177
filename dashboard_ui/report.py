"""The offline Compare report: one self-contained HTML file that opens in any browser with no network.

``report_html(comparison, workspace)`` lays out what the Compare page shows, drawn by the page's
own chart functions (``dashboard_ui.charts``): the verdict in words, both planes on one colour
scale, the difference map, the 1D slices, the barrier path, the Hessian spectra, the sharpness
table, the settings and the library versions. Vega, Vega-Lite and vega-embed are inlined from
vl-convert's bundle (``vega_bundle``), so the file makes no request at all; each chart's spec sits
in one JSON block. The same comparison gives the same bytes (no clock, no random ids), so the
``landscape report`` command and the page's "Download report" button agree.

No Streamlit here: the CLI imports this module (lazily) without starting a server.
"""

from __future__ import annotations

import html
import json
import math
import platform
from importlib import metadata

import altair as alt
import numpy as np
import pandas as pd

from dashboard_ui.charts import (
    PLANE_SIDE_PAIR,
    export_spec,
    heatmap,
    line_chart,
    quantity_label,
    value_domain,
)
from landscape_core.results import Surface, plain_json

BUNDLE_VERSION = 1  # bump when the bundle's checks below change
PLANE_WIDTH = 340  # px of one plane's plot area in the report (two side by side)
LINE_WIDTH = 620  # px of a line chart's plot area


# -- the JavaScript ---------------------------------------------------------------------------------
_bundle: dict[tuple, str] = {}


def _vl_version() -> str:
    """The Vega-Lite version Altair writes specs for (``"v5.20"``), as vl-convert names its bundles."""
    major, minor = alt.SCHEMA_VERSION.lstrip("v").split(".")[:2]
    return f"v{major}.{minor}"


def _bundle_ok(text: str) -> bool:
    """A bundle that can sit inside one <script> element and defines what the page calls."""
    return (
        "</script" not in text.lower() and "<!--" not in text and text.rstrip().endswith("window.vegaLite=__default1;")
    )


def vega_bundle() -> str:
    """vega + vega-lite + vega-embed as one script (about 0.9 MB), from vl-convert.

    Bundling takes about half a minute, so it is kept per process and in the disk cache (keyed by the
    vl-convert and Vega-Lite versions); a cached copy that fails the checks is rebuilt, never used.
    """
    import vl_convert

    from landscape_core import cache

    version = _vl_version()
    ident = (metadata.version("vl-convert-python"), version)
    if ident in _bundle:
        return _bundle[ident]
    key = cache.make_key("vega-bundle", BUNDLE_VERSION, {"vl_convert": ident[0], "vega_lite": version})
    blob = cache.get(key)
    text = None
    if blob is not None:
        try:
            text = blob.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and not _bundle_ok(text):
            text = None
    if text is None:
        text = vl_convert.javascript_bundle(vl_version=version)
        if not _bundle_ok(text):
            raise RuntimeError("the Vega bundle from vl-convert cannot be inlined in a <script> element.")
        cache.put(key, text.encode("utf-8"))
    _bundle[ident] = text
    return text


def library_versions() -> dict[str, str]:
    """``{name: version}`` of Python, the libraries that made the numbers and the charts, and Vega."""
    import vl_convert

    out = {"python": platform.python_version()}
    for name in ("landscape-dashboard", "torch", "numpy", "scipy", "altair", "pandas", "vl-convert-python"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["vega"] = vl_convert.get_vega_version()
    out["vega-lite"] = _vl_version()
    embed = getattr(vl_convert, "get_vega_embed_version", None)  # vl-convert 1.3 does not say
    out["vega-embed"] = embed() if embed else "bundled with vl-convert"
    return out


# -- the charts ----------------------------------------------------------------------------------
def spectra_chart(spectra, labels) -> alt.LayerChart:
    """The top Hessian eigenvalues of A and B, rank by rank (bars side by side)."""
    rows = []
    for label, spectrum in zip(labels, spectra):
        for rank, (value, residual, ok) in enumerate(zip(spectrum.values, spectrum.residuals, spectrum.converged)):
            rows.append(
                {
                    "rank": rank + 1,
                    "eigenvalue": float(value),
                    "model": label,
                    "residual": float(residual),
                    "converged": "yes" if ok else "NO",
                }
            )
    frame = pd.DataFrame(rows)
    # the colours line_chart gives the same two names (sorted, tableau10): one colour per model in the whole report
    color = alt.Color("model:N", title="model", scale=alt.Scale(domain=sorted(labels), scheme="tableau10"))
    bars = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("rank:O", title="eigenvalue (sorted, largest first)"),
            xOffset="model:N",
            y=alt.Y("eigenvalue:Q", title="Hessian eigenvalue"),
            color=color,
            tooltip=[
                "model:N",
                "rank:O",
                alt.Tooltip("eigenvalue:Q", format=".5g"),
                alt.Tooltip("residual:Q", title="residual ||Hv - lambda v||", format=".2e"),
                "converged:N",
            ],
        )
    )
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="#495057").encode(y="y:Q")
    return alt.layer(bars, zero).properties(
        title=alt.TitleParams("Top eigenvalues of the Hessian of each model", anchor="start", offset=8),
        width="container",
        height=300,
    )


def path_chart(path, quantity: str, labels) -> alt.LayerChart:
    """``quantity`` along the straight line from A (alpha 0) to B (alpha 1), with the chord between its ends."""
    values = path.values[quantity]
    rows = [{"alpha": a, "value": v, "series": "along the path"} for a, v in zip(path.alphas, values)]
    try:
        chord = path.linear_reference(quantity)
        rows += [
            {"alpha": a, "value": v, "series": "straight line between the ends"} for a, v in zip(path.alphas, chord)
        ]
    except ValueError:  # a span without both ends: no chord
        pass
    return line_chart(
        pd.DataFrame(rows),
        "alpha",
        "value",
        color="series",
        title=f"{quantity_label(quantity)} on the path from {labels[0]} (alpha 0) to {labels[1]} (alpha 1)",
        x_title="alpha",
        y_title=quantity_label(quantity),
        base_x=None,
    )


def lines_chart(lines, quantity: str, labels, span: float, count: int, log: bool) -> alt.LayerChart:
    """The random 1D lines of both models, with the spread of each model shaded (as on the page)."""
    rows = []
    for label, result in zip(labels, lines):
        for k, v in result.values.items():
            if k.startswith(f"{quantity}@"):
                rows += [{"alpha": a, "value": x, "model": label, "line": k} for a, x in zip(result.alphas, v)]
    data = pd.DataFrame(rows)
    spread = data.groupby(["model", "alpha"])["value"].agg(["min", "max"]).reset_index()
    return line_chart(
        data.merge(spread, on=["model", "alpha"]),
        "alpha",
        "value",
        color="model",
        detail="line",
        band=("min", "max"),
        title=f"{quantity_label(quantity)} along {count} random 1D lines per model (alpha from -{span:g} to +{span:g})",
        x_title="alpha (along a normalized random direction)",
        y_title=quantity_label(quantity),
        log_y=log,
    )


def charts(comparison) -> list[tuple[str, alt.TopLevelMixin, int]]:
    """``(section, chart, width px)`` for every chart of the report, in order."""
    q = comparison.quantity
    log = bool(comparison.settings.get("log"))
    label_a, label_b = comparison.labels
    plane_a, plane_b = comparison.planes
    domain = value_domain([plane_a, plane_b], q, log)
    side = PLANE_SIDE_PAIR
    out = [
        (
            "planes",
            heatmap(plane_a, q, log=log, shared_domain=domain, title=f"{label_a} (A): {quantity_label(q)}", side=side),
            PLANE_WIDTH,
        ),
        (
            "planes",
            heatmap(plane_b, q, log=log, shared_domain=domain, title=f"{label_b} (B): {quantity_label(q)}", side=side),
            PLANE_WIDTH,
        ),
    ]
    diff = plane_b.values[q] - plane_a.values[q]
    finite = np.isfinite(diff)
    bound = float(np.max(np.abs(diff[finite]))) if finite.any() else 1.0
    bound = bound if bound > 0 else 1.0
    diff_surface = Surface(
        alphas=plane_a.alphas,
        betas=plane_a.betas,
        values={"B - A": diff},
        settings={"kind": "difference", "directions": plane_a.settings.get("directions", [])},
    )
    title = f"Difference B - A of {quantity_label(q)} (red: B higher)"
    out.append(
        (
            "difference",
            heatmap(diff_surface, "B - A", shared_domain=(-bound, bound), scheme="redblue-r", title=title, side=side),
            PLANE_WIDTH,
        )
    )
    out.append(
        (
            "slices",
            lines_chart(
                comparison.lines, q, comparison.labels, comparison.settings["span"], comparison.settings["lines"], log
            ),
            LINE_WIDTH,
        )
    )
    if comparison.path is not None:
        path_q = q if q in comparison.path.values else next(iter(comparison.path.values))
        out.append(("path", path_chart(comparison.path, path_q, comparison.labels), LINE_WIDTH))
    if comparison.spectra is not None:
        out.append(("spectra", spectra_chart(comparison.spectra, comparison.labels), LINE_WIDTH))
    return out


# -- the page ------------------------------------------------------------------------------------
def _number(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _script_json(value) -> str:
    """JSON that cannot end the <script> element it sits in (every ``<`` written as ``\\u003c``)."""
    return json.dumps(value, allow_nan=False, sort_keys=False).replace("<", "\\u003c").replace("&", "\\u0026")


def _barrier_sentence(comparison) -> str:
    path = comparison.path
    if path is None:
        return comparison.path_note
    parts = []
    for name, info in path.barrier.items():
        height = info.get("height")
        kind = name.replace("_", " ")
        if height is None:
            parts.append(f"{kind} barrier: not defined (a value on the path is not finite)")
        else:
            parts.append(f"{kind} barrier {height:.4g} at alpha = {info.get('alpha', float('nan')):.2f}")
    bn = path.settings.get("bn", "")
    return "; ".join(parts) + (f" (BatchNorm statistics: {bn})." if bn else ".")


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#212529;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.2em;margin-top:32px;border-bottom:1px solid #dee2e6;padding-bottom:4px}
.verdict{background:#ebfbee;border-left:4px solid #2f9e44;padding:10px 14px;font-size:1.05em}
.row{display:flex;flex-wrap:wrap;gap:16px}.chart{min-height:60px}.chart.wide{width:100%}
.chart-error{color:#c92a2a;font-weight:bold}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #dee2e6;padding:4px 10px;text-align:left}
th{background:#f1f3f5}td:not(:first-child){font-variant-numeric:tabular-nums}
pre{background:#f8f9fa;padding:10px;overflow:auto;font-size:0.85em}.note{color:#495057;font-size:0.92em}
"""

RENDER = """
(function () {
  var specs = JSON.parse(document.getElementById("report-specs").textContent);
  var state = {total: specs.length, done: 0, errors: []};
  window.reportCharts = state;
  specs.forEach(function (spec, i) {
    var el = document.getElementById("chart-" + i);
    vegaEmbed(el, spec, {actions: false, renderer: "svg", mode: "vega-lite"}).then(function () {
      el.setAttribute("data-rendered", "yes");
      state.done += 1;
    }).catch(function (err) {
      el.setAttribute("data-rendered", "error");
      el.innerHTML = "";
      var p = document.createElement("p");
      p.className = "chart-error";
      p.textContent = "This chart could not be drawn: " + err;
      el.appendChild(p);
      state.errors.push(String(err));
      state.done += 1;
    });
  });
})();
"""


def report_html(comparison, workspace: str = "") -> str:
    """The whole report as one HTML document (UTF-8 text), self-contained and deterministic."""
    label_a, label_b = comparison.labels
    specs, blocks = [], {}
    for section, chart, width in charts(comparison):
        spec = export_spec(chart, width)
        wide = " wide" if width == LINE_WIDTH else ""
        blocks.setdefault(section, []).append(f'<div class="chart{wide}" id="chart-{len(specs)}"></div>')
        specs.append(spec)
    q = quantity_label(comparison.quantity)
    esc = html.escape
    rows = [
        [r["title"], _number(r["A"]), _number(r["B"]), "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x"]
        for r in comparison.table
    ]
    table = _table(["metric", f"A: {label_a}", f"B: {label_b}", "ratio B / A"], rows)
    versions = library_versions()
    settings_text = json.dumps(plain_json(comparison.settings), indent=2, sort_keys=True)
    title = f"Compare report: {label_a} (A) vs {label_b} (B)" + (f" on {workspace}" if workspace else "")
    sections = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="note">Loss-landscape comparison written by landscape-dashboard; it opens offline, every chart is drawn in the browser. Maps show {esc(q)} on the splits {esc(", ".join(comparison.splits))}.</p>',
        "<h2>Verdict</h2>",
        f'<p class="verdict">{esc(comparison.verdict)}</p>',
        "<h2>Both planes on one colour scale</h2>",
        '<p class="note">Directions drawn from the same seed, each normalized to its own model\'s weights, over the same span and data. Each map is one 2D cut through a very high-dimensional space.</p>',
        f'<div class="row">{"".join(blocks["planes"])}</div>',
        "<h2>Difference map</h2>",
        f'<div class="row">{"".join(blocks["difference"])}</div>',
        "<h2>1D slices</h2>",
        "".join(blocks["slices"]),
        "<h2>Barrier path</h2>",
        f'<p class="note">{esc(_barrier_sentence(comparison))}</p>',
        "".join(blocks.get("path", [])),
        "<h2>Hessian spectra</h2>",
        "".join(blocks.get("spectra", []))
        or '<p class="note">Not computed: the Hessian was switched off in the settings.</p>',
        "<h2>Sharpness and metrics</h2>",
        table,
        "".join(f'<p class="note">{esc(n)}</p>' for n in comparison.notes),
        "<h2>Settings</h2>",
        f"<pre>{esc(settings_text)}</pre>",
        "<h2>Library versions</h2>",
        _table(["library", "version"], [[k, v] for k, v in versions.items()]),
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title>",
            f"<style>{STYLE}</style>",
            f"<script>{vega_bundle()}</script>",
            "</head><body>",
            *sections,
            f'<script type="application/json" id="report-specs">{_script_json(plain_json(specs))}</script>',
            f"<script>{RENDER}</script>",
            "</body></html>",
            "",
        ]
    )
