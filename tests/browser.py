"""Shared pieces of the browser tests: a Streamlit server on a free port and headless Chromium.

``streamlit_server(args, log_name, env)`` starts ``streamlit run app.py --server.headless true``
(plus ``args``) on a free local port, waits for ``/_stcore/health`` and yields the URL;
``demo_server(warm, log_name, args)`` does that on this test session's cache after loading the
demos ``warm`` into it in another process; ``launch_chromium(playwright)`` starts Debian's
Chromium with the flags this machine needs (the ``browser`` and ``page`` fixtures are in conftest);
``wait_for_app_run(page)`` waits until the app is connected and no script run is in progress;
``wait_while_working(page, locator)`` waits for an element as long as the app keeps working.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "test-output"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)  # polling interval of the health endpoint (server start-up, not app state)
    raise TimeoutError(f"streamlit did not answer {url}/_stcore/health within {timeout} s")


@contextlib.contextmanager
def streamlit_server(args: list[str], log_name: str, env: dict | None = None) -> Iterator[str]:
    """Run the dashboard with extra command-line ``args``; yields its base URL; stops it after."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    port = free_port()
    OUTPUT.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true"]
    command += ["--server.port", str(port), *args]
    with open(OUTPUT / log_name, "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, proc)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def demo_server(warm: list[str], log_name: str, args: list[str] | None = None) -> Iterator[str]:
    """``streamlit_server`` on this test session's cache (conftest's ``LANDSCAPE_CACHE_DIR``) after
    the demos ``warm`` were loaded into it by another process, so their training is not part of
    what a test waits for."""
    env = {"LANDSCAPE_CACHE_DIR": os.environ["LANDSCAPE_CACHE_DIR"]}
    code = f"from landscape_core import demos; [demos.load(n) for n in {list(warm)!r}]"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, check=True, timeout=600)
    with streamlit_server(list(args or []), log_name, env) as url:
        yield url


def launch_chromium(playwright):
    """Debian's Chromium, headless, without the background connections this closed network refuses."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def wait_for_app_run(page, stall_s: float = 300.0) -> None:
    """Connected, and the script (not only a fragment) is not running; as long as the app keeps working."""
    wait_while_working(
        page, page.locator('[data-testid="stApp"][data-test-connection-state="CONNECTED"]'), stall_s=stall_s
    )
    wait_while_working(
        page, page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]'), stall_s=stall_s
    )


def work_signs(page) -> tuple:
    """What shows the app is still working: progress bars' texts (their counts move), spinners, run state."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    app = page.locator('[data-testid="stApp"]')
    try:  # the page may be reloading between count() and the read: no state then, not a failure
        state = app.first.get_attribute("data-test-script-state", timeout=1000) if app.count() else None
    except PlaywrightTimeout:
        state = None
    return (
        tuple(page.locator('[data-testid="stProgress"]').all_inner_texts()),
        tuple(page.locator('[data-testid="stSpinner"]').all_inner_texts()),
        state,
        page.locator('[data-testid="stVegaLiteChart"], [data-testid="stPlotlyChart"]').count(),
    )


def wait_while_working(page, locator, state: str = "visible", stall_s: float = 300.0) -> None:
    """Wait until ``locator`` reaches ``state``, for as long as the app keeps working.

    No total time limit: a loaded machine may take many minutes. It fails only when nothing the
    app shows changes for ``stall_s`` seconds (no progress count moves, no run starts or ends),
    which is a hang, not slowness. Polls once a second.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    last, since = None, time.monotonic()
    while True:
        try:
            locator.first.wait_for(state=state, timeout=1000)
            return
        except PlaywrightTimeout:
            signs = work_signs(page)
            if signs != last:
                last, since = signs, time.monotonic()
            elif time.monotonic() - since > stall_s:
                raise TimeoutError(
                    f"nothing changed for {stall_s:.0f} s while waiting for {locator}; last: {signs}"
                ) from None
