"""The offline Compare report: ``landscape report`` and the Compare page's "Download report" button.

Checked: the file names nothing a browser would fetch (no http(s) or protocol-relative src/href,
no CSS url()); it opens in Chromium with every request but the document itself refused and
draws every chart (an svg per chart, no vega error), with a screenshot in test-output/; the CLI
writes it for a spec (``--b``: B from a second spec) and for a demo; the page's button gives the
same bytes as the CLI for the same settings; refusals are one sentence.
"""

from __future__ import annotations

import html
import html.parser
import json
import re
import textwrap
import time
from pathlib import Path

import pytest

from landscape_core import cli
from landscape_core.comparison import CompareSettings

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "test-output"

SPEC = textwrap.dedent(
    '''
    """Two small MLPs on Gaussian blobs, trained from two seeds (weighted loss, a metric)."""
    import torch
    from torch import nn

    from landscape_core import Problem


    def accuracy(logits, y):
        return (logits.argmax(-1) == y).double().mean()


    def _problem(seed, hidden=6):
        gen = torch.Generator().manual_seed(0)
        X = torch.cat([torch.randn(60, 2, generator=gen) + 1.5, torch.randn(60, 2, generator=gen) - 1.5])
        y = torch.cat([torch.zeros(60, dtype=torch.long), torch.ones(60, dtype=torch.long)])
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        loss = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0]))
        opt = torch.optim.SGD(model.parameters(), lr=0.3)
        for _ in range(40):
            opt.zero_grad()
            loss(model(X[::2]), y[::2]).backward()
            opt.step()
        return Problem(model, loss, (X[::2], y[::2]), (X[1::2], y[1::2]), metrics={"accuracy": accuracy}, batch_size=16)


    def build_a():
        return _problem(1)


    def build_b():
        return _problem(2)


    def build_c():
        return _problem(3, hidden=4)
    '''
)


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report-spec") / "blobs_spec.py"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def spec_report(spec_file, tmp_path_factory) -> Path:
    """The report of two specs, written by the CLI."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    args = ["report", "--spec", f"{spec_file}:build_a", "--b", f"{spec_file}:build_b"]
    args += ["--steps", "11", "--lines", "2", "--out", str(out), "--quiet"]
    code = cli.main(args)
    assert code == 0
    return out


# -- static checks ---------------------------------------------------------------------------------
FETCHING_ATTRIBUTES = {"src", "href", "srcset", "data", "poster", "action", "formaction", "background", "xlink:href"}


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in FETCHING_ATTRIBUTES and value is not None:
                self.links.append((tag, name, value))


def external_references(text: str) -> list[str]:
    """Every src/href-like attribute, <link>, and CSS url() that would make a browser fetch from elsewhere."""
    parser = _Links()
    parser.feed(text)
    out = [f"<{t} {n}={v}>" for t, n, v in parser.links if not v.startswith(("#", "data:"))]
    out += [f"<{t}>" for t in parser.tags if t in ("link", "iframe", "img", "object", "embed", "base")]
    out += re.findall(r"url\(\s*['\"]?(?:https?:)?//[^)]*\)", text)
    out += re.findall(r"@import", text)
    return out


def test_detector_finds_what_a_browser_would_fetch():
    """The static check itself: it sees a CDN script, a stylesheet link, an image and a CSS url()."""
    page = (
        '<script src="https://cdn.jsdelivr.net/npm/vega@6"></script><link rel="stylesheet" href="//x.org/a.css">'
        '<img src="http://x.org/a.png"><div style="background:url(https://x.org/b.png)"></div><a href="#top">top</a>'
    )
    found = external_references(page)
    assert len(found) == 6, found  # the <link> and <img> count twice: as tags and by their addresses
    assert external_references('<a href="#x">x</a><script>var s = "https://vega.github.io/schema";</script>') == []


def test_report_is_self_contained(spec_report):
    text = spec_report.read_text(encoding="utf-8")
    assert external_references(text) == []
    assert "window.vegaEmbed=" in text  # the library is inlined, not fetched
    specs = json.loads(re.search(r'id="report-specs">(.*?)</script>', text, re.S).group(1))
    assert len(specs) == text.count('<div class="chart') == 6  # A, B, B - A, slices, path, spectra
    assert all("url" not in json.dumps(spec.get("data", {})) for spec in specs)  # data inline, never loaded
    for section in ("Verdict", "Both planes on one colour scale", "Difference map", "1D slices", "Barrier path"):
        assert f"<h2>{section}</h2>" in text
    for section in ("Hessian spectra", "Sharpness and metrics", "Settings", "Library versions"):
        assert f"<h2>{section}</h2>" in text
    assert "lambda_max (top Hessian eigenvalue)" in text and "adaptive average sharpness" in text
    assert "vega-lite" in text and "torch" in text


def test_same_settings_same_bytes_and_labels_are_escaped(spec_file):
    """Deterministic (no clock, no random ids), and text from a spec cannot open a tag."""
    from dashboard_ui.report import report_html
    from landscape_core.comparison import compare
    from landscape_core.spec import load_spec

    a, b = load_spec(f"{spec_file}:build_a").problem, load_spec(f"{spec_file}:build_b").problem
    settings = CompareSettings(steps=11, lines=2, hessian=False)
    labels = ("<script>alert(1)</script>", "B </script><b>")
    first = report_html(compare(a, b, labels, settings), "ws <i>x</i>")
    second = report_html(compare(a, b, labels, settings), "ws <i>x</i>")
    assert first == second
    assert "<script>alert(1)" not in first and "<b>" not in first and "<i>x" not in first
    assert first.count("<script") == 3  # the bundle, the specs (JSON) and the drawing code
    assert "Not computed: the Hessian was switched off" in first


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"norm": "none"}, "norm must be one of ['filter', 'layer']; got 'none'"),
        ({"span": float("nan")}, "span must be a number in (0, 10]"),
        ({"steps": 12}, "steps must be one of [11, 21, 31, 41, 51]; got 12"),
        ({"lines": 1}, "lines must be an integer from 2 to 10; got 1"),
        ({"seed": -1}, "seed must be an integer from 0 to 10000; got -1"),
    ],
)
def test_settings_refuse_what_the_page_does_not_offer(bad, words):
    with pytest.raises(ValueError) as info:
        CompareSettings(**bad)
    assert words in str(info.value)


def test_split_and_quantity_must_belong_to_both_models(spec_file):
    from landscape_core.comparison import compare
    from landscape_core.spec import load_spec

    a, b = load_spec(f"{spec_file}:build_a").problem, load_spec(f"{spec_file}:build_b").problem
    with pytest.raises(ValueError, match=r"split must be one both models have, \['train'\]; got 'val'"):
        compare(a, b, settings=CompareSettings(splits=("train",), split="val"))
    with pytest.raises(ValueError, match=r"splits must include one that both models have"):
        compare(a, b, settings=CompareSettings(splits=("test",)))


def test_different_architectures_have_no_path_and_say_why(spec_file):
    from dashboard_ui.report import report_html
    from landscape_core.comparison import compare
    from landscape_core.spec import load_spec

    a, c = load_spec(f"{spec_file}:build_a").problem, load_spec(f"{spec_file}:build_c").problem
    comparison = compare(a, c, ("six", "four"), CompareSettings(steps=11, lines=2, hessian=False))
    assert comparison.path is None and comparison.settings["path"] is None
    text = report_html(comparison)
    assert "No barrier path: the two models have different architectures" in text
    assert "compare the size-free metrics (ratios)" in text
    assert text.count('<div class="chart') == 4  # A, B, B - A, slices


# -- in a browser, offline -------------------------------------------------------------------------
@pytest.mark.e2e
def test_report_draws_every_chart_offline_in_chromium(spec_report):
    from playwright.sync_api import sync_playwright

    from tests.browser import launch_chromium

    text = spec_report.read_text(encoding="utf-8")
    address = "http://report.invalid/report.html"
    refused: list[str] = []

    def handle(route):
        if route.request.url == address:
            route.fulfill(status=200, content_type="text/html; charset=utf-8", body=text)
        else:
            refused.append(route.request.url)
            route.abort()

    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.route("**/*", handle)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            start = time.monotonic()
            page.goto(address)
            page.wait_for_function("window.reportCharts && window.reportCharts.done === window.reportCharts.total")
            seconds = time.monotonic() - start
            state = page.evaluate("window.reportCharts")
            drawn = page.locator('.chart[data-rendered="yes"]')
            assert state["errors"] == [] and errors == [], (state, errors)
            assert state["total"] == 6 == drawn.count()
            for i in range(state["total"]):
                chart = page.locator(f"#chart-{i}")
                assert chart.locator("svg").count() >= 1, f"chart {i} has no svg"
                box = chart.locator("svg").first.bounding_box()
                assert box["width"] > 200 and box["height"] > 150, (i, box)
                assert chart.locator("svg path, svg rect").count() > 10, f"chart {i} draws no marks"
            page.screenshot(path=str(OUTPUT / "report.png"), full_page=True)
        finally:
            browser.close()
    assert refused == [], refused  # nothing but the document was asked for
    (OUTPUT / "report_render_seconds.txt").write_text(f"{seconds:.2f}\n")


# -- the command line --------------------------------------------------------------------------------
def test_cli_refuses_in_one_sentence(spec_file, tmp_path, capsys):
    code, _, err = _run_cli(["report", "--spec", f"{spec_file}:build_a", "--out", str(tmp_path / "r.html")], capsys)
    assert code == 1 and err.count("\n") == 1 and "single model" in err and "--b" in err
    code, _, err = _run_cli(["report", "--spec", f"{spec_file}:build_a", "--out", str(tmp_path / "r.npz")], capsys)
    assert code == 1 and ".html" in err
    code, _, err = _run_cli(
        ["report", "--spec", f"{spec_file}:build_a", "--b", f"{spec_file}:build_b", "--quantity", "brier"]
        + ["--steps", "11", "--lines", "2", "--out", str(tmp_path / "r.html")],
        capsys,
    )
    assert code == 1 and err.count("\n") == 1 and "quantity must be one of ['loss', 'accuracy']" in err
    assert not (tmp_path / "r.html").exists()


def test_cli_without_the_dashboard_extra_says_so(spec_file, tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_altair(name, *args, **kwargs):
        if name == "dashboard_ui" or name.startswith(("dashboard_ui.", "altair")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_altair)
    args = ["report", "--spec", f"{spec_file}:build_a", "--b", f"{spec_file}:build_b"]
    code, _, err = _run_cli([*args, "--out", str(tmp_path / "r.html")], capsys)
    assert code == 1 and err.count("\n") == 1 and "pip install 'landscape-dashboard[dashboard]'" in err


@pytest.mark.slow
def test_cli_demo_report_matches_the_compare_page_button(tmp_path, capsys, monkeypatch):
    """The Compare page's button and ``landscape report --demo`` give the same bytes for the same settings."""
    import streamlit as st
    from streamlit.delta_generator import DeltaGenerator
    from streamlit.testing.v1 import AppTest

    files = {}
    original = DeltaGenerator.download_button

    def recording(self, label, data, file_name=None, *args, **kwargs):
        if file_name == "compare_report.html":
            files[file_name] = data() if callable(data) else data
        return original(self, label, data, file_name, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", recording)
    main = st._main  # st.download_button is bound to the main container when Streamlit is imported
    monkeypatch.setattr(st, "download_button", lambda *args, **kwargs: recording(main, *args, **kwargs))
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "inf")
    at = AppTest.from_file(str(ROOT / "pages" / "compare.py"), default_timeout=1800)
    for key, value in {"ui_workspace": "digits-mlp", "ui_subset": 256, "compare_steps": 11, "compare_lines": 2}.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert "compare_report.html" in files, (sorted(files), [w.value for w in at.warning], [i.value for i in at.info])
    page_bytes = files["compare_report.html"]
    assert html.escape(at.success[0].value) in page_bytes.decode("utf-8")  # the page's verdict

    out = tmp_path / "report.html"
    args = ["report", "--demo", "digits-mlp", "--subset", "256", "--steps", "11", "--lines", "2"]
    code, stdout, err = _run_cli([*args, "--out", str(out)], capsys)
    assert code == 0, err
    assert "written to" in stdout and "verdict" in stdout
    cli_bytes = out.read_bytes()
    assert cli_bytes == page_bytes
    assert external_references(cli_bytes.decode("utf-8")) == []
    assert "small batch" in cli_bytes.decode("utf-8") and "large batch" in cli_bytes.decode("utf-8")
