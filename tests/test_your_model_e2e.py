"""Uploads in a real browser: the Your model page accepts a state dict and refuses a corrupt one readably.

Starts ``streamlit run app.py -- --spec <tiny spec>`` (no demo training), opens the page in
Debian's Chromium via Playwright, uploads files through the real file-uploader widgets and waits
on the app's run state (no sleeps). Screenshots go to ``test-output/screenshots/``.
"""

from __future__ import annotations

import io
from pathlib import Path

import crafted
import pytest
import torch
from browser import CHROMIUM, ROOT, launch_chromium, streamlit_server, wait_for_app_run, wait_while_working

SHOTS = ROOT / "test-output" / "screenshots"
MARKDOWN_NAME = "[click](https:example.invalid) *x*.pt"  # a file name that markdown would turn into a link

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
]
sync_api = pytest.importorskip("playwright.sync_api")

SPEC = """
import torch
import torch.nn.functional as F
from landscape_core import Problem


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def build():
    X = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    return Problem(make_model(), F.cross_entropy, train=(X, (X[:, 0] > 0).long()))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("your_model_e2e")
    (folder / "upload_spec.py").write_text(SPEC)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    for epoch in (2, 10):
        torch.save({"model": model.state_dict(), "epoch": epoch}, folder / f"epoch_{epoch}.pt")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    (folder / "truncated.pt").write_bytes(buffer.getvalue()[:200])
    batch = torch.export.Dim("batch")
    program = torch.export.export(model.eval(), (torch.randn(5, 3),), dynamic_shapes=({0: batch},))
    torch.export.save(program, folder / "net.pt2")
    evil = crafted.differential_pt2((folder / "net.pt2").read_bytes(), folder / "code_ran")
    (folder / "evil.pt2").write_bytes(evil)
    (folder / MARKDOWN_NAME).write_bytes(buffer.getvalue())
    X = torch.randn(32, 3, generator=torch.Generator().manual_seed(2))
    torch.save({"X": X, "y": (X[:, 1] > 0).long()}, folder / "data.pt")
    return folder


@pytest.fixture(scope="module")
def app_url(files):
    with streamlit_server(["--", "--spec", f"{files / 'upload_spec.py'}:build"], "streamlit-your-model-e2e.log") as url:
        yield url


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        context = browser.new_context(viewport={"width": 1400, "height": 2400})
        yield context.new_page()
        browser.close()


def _no_exception(page) -> None:
    """Fail with the exception's own text if the page shows one."""
    shown = page.locator('[data-testid="stException"]')
    assert shown.count() == 0, shown.first.inner_text()


def _upload_and_check(page, paths, form_index=0, button="Check and open") -> None:
    """Put ``paths`` (a list per file uploader of the form) into the form's uploaders and submit."""
    form = page.locator('[data-testid="stForm"]').nth(form_index)
    groups = paths if isinstance(paths[0], list) else [paths]
    for i, group in enumerate(groups):
        form.locator('input[type="file"]').nth(i).set_input_files([str(p) for p in group])
        for p in group:
            wait_while_working(page, form.get_by_text(p.name))
    form.get_by_role("button", name=button, exact=True).click()
    wait_for_app_run(page)


def test_upload_state_dicts_then_a_corrupt_one(page, app_url, files):
    # The first request of a fresh server must be the entry page: until app.py has called
    # st.navigation once, Streamlit serves files under pages/ as stand-alone pages.
    page.goto(app_url)
    wait_for_app_run(page)
    page.goto(f"{app_url}/your_model")
    wait_for_app_run(page)
    assert "Your model" in page.locator('[data-testid="stSidebarNav"]').inner_text()
    wait_while_working(page, page.get_by_text("Workspace"))  # the frame's sidebar is drawn
    wait_while_working(page, page.get_by_text("The spec in use"))
    _no_exception(page)

    _upload_and_check(page, [files / "epoch_10.pt", files / "epoch_2.pt"])
    wait_while_working(page, page.get_by_text("Accepted:"))
    table = page.locator('[data-testid="stDataFrame"]').last.inner_text()
    _no_exception(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "your_model_accepted.png"), full_page=True)
    assert table is not None

    page.goto(f"{app_url}/your_model")
    wait_for_app_run(page)
    _upload_and_check(page, [files / "truncated.pt"])
    error = page.locator('[data-testid="stAlert"]').filter(has_text="Upload refused")
    wait_while_working(page, error)
    assert "'truncated.pt' is corrupt or truncated" in error.first.inner_text()
    _no_exception(page)
    page.screenshot(path=str(SHOTS / "your_model_refused.png"), full_page=True)


def test_upload_a_program_with_data_and_no_code(page, app_url, files):
    page.goto(app_url)
    wait_for_app_run(page)
    page.goto(f"{app_url}/your_model")
    wait_for_app_run(page)
    _upload_and_check(
        page, [[files / "net.pt2"], [files / "data.pt"]], form_index=1, button="Check and open the program"
    )
    wait_while_working(page, page.get_by_text("Accepted:"))
    assert "program net.pt2" in page.locator('[data-testid="stAlert"]').filter(has_text="Accepted").first.inner_text()
    _no_exception(page)
    page.screenshot(path=str(SHOTS / "your_model_program.png"), full_page=True)


def test_a_program_that_would_run_code_is_refused_before_it_runs(page, app_url, files):
    assert crafted.torch_reads_first_copy((files / "evil.pt2").read_bytes())
    page.goto(app_url)
    wait_for_app_run(page)
    page.goto(f"{app_url}/your_model")
    wait_for_app_run(page)
    _upload_and_check(
        page, [[files / "evil.pt2"], [files / "data.pt"]], form_index=1, button="Check and open the program"
    )
    error = page.locator('[data-testid="stAlert"]').filter(has_text="Program refused")
    error.first.wait_for()
    assert "'evil.pt2' holds the entry" in error.first.inner_text() and "more than once" in error.first.inner_text()
    assert not (files / "code_ran").exists()  # the payload would have created it on the server
    _no_exception(page)
    page.screenshot(path=str(SHOTS / "your_model_pt2_refused.png"), full_page=True)


def test_uploaded_names_are_shown_as_typed(page, app_url, files):
    page.goto(app_url)
    wait_for_app_run(page)
    page.goto(f"{app_url}/your_model")
    wait_for_app_run(page)
    form = page.locator('[data-testid="stForm"]').first
    form.locator('input[type="file"]').first.set_input_files([str(files / MARKDOWN_NAME)])
    form.get_by_text("*x*.pt").first.wait_for()  # the uploader shortens long names in the middle
    form.get_by_role("button", name="Check and open", exact=True).click()
    wait_for_app_run(page)
    accepted = page.locator('[data-testid="stAlert"]').filter(has_text="Accepted:").first
    accepted.wait_for()
    assert MARKDOWN_NAME in accepted.inner_text()  # the literal name, brackets and stars included
    assert page.locator('a[href*="example.invalid"]').count() == 0  # and no link was made of it
    _no_exception(page)
