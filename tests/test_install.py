"""The package ships the dashboard: the wheel holds the app and its pages, and an installed copy
(no checkout on the path) serves it with ``landscape dashboard``.

The wheel is built without build isolation (no network); it is installed with ``--target`` into
a temporary folder that comes first on ``PYTHONPATH``, so the app runs from the installed files,
with the test environment's dependencies. The browser check opens it in Debian's Chromium.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from browser import CHROMIUM, OUTPUT, ROOT, _wait_healthy, free_port, launch_chromium, wait_for_app_run

SPEC = """
import torch
import torch.nn.functional as F
from landscape_core import Problem


def build():
    torch.manual_seed(0)
    X = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    return Problem(model, F.cross_entropy, train=(X, (X[:, 0] > 0).long()))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("landscape_dashboard-*.whl")
    return found


def test_wheel_holds_the_app_its_pages_and_the_cli(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    pages = [p.name for p in (ROOT / "pages").glob("*.py")]
    assert {"dashboard_ui/app.py", "dashboard_ui/launch.py", "dashboard_ui/ui.py"} <= names
    assert {f"landscape_pages/{p}" for p in pages} <= names and "landscape_pages/surface.py" in names
    assert "landscape_core/data/text_corpus.tsv" in names
    assert not any(n.startswith(("tests/", "pages/", "bench/")) for n in names)  # pages only under their package
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "landscape = landscape_core.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_dashboard_command_without_streamlit_says_how_to_install(monkeypatch, capsys):
    import importlib.util

    from landscape_core import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "streamlit" else real(name, *a))
    assert cli.main(["dashboard", "--headless"]) == 1
    assert "pip install 'landscape-dashboard[dashboard]'" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")
def test_installed_package_serves_the_dashboard(wheel, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    (tmp_path / "spec.py").write_text(SPEC)
    env = {**os.environ, "PYTHONPATH": str(target), "LANDSCAPE_CACHE_DIR": str(tmp_path / "cache")}
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import dashboard_ui, landscape_core; print(dashboard_ui.__file__, landscape_core.__file__)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(path.startswith(str(target)) for path in probe.stdout.split())  # the installed copy, not the checkout
    port = free_port()
    command = [sys.executable, "-m", "landscape_core.cli", "dashboard", "--headless", "--port", str(port)]
    command += ["--spec", f"{tmp_path / 'spec.py'}:build"]
    OUTPUT.mkdir(exist_ok=True)
    with open(OUTPUT / "installed_dashboard.log", "w") as log:
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, proc)
            with sync_api.sync_playwright() as p:
                browser = launch_chromium(p)
                page = browser.new_page()
                page.goto(f"{url}/guide")
                wait_for_app_run(page)
                nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
                assert "Surface" in nav and "Guide" in nav and "Your model" in nav
                assert page.locator('[data-testid="stException"]').count() == 0
                page.screenshot(path=str(OUTPUT / "installed_dashboard.png"))
                browser.close()
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
