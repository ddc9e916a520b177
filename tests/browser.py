"""Shared pieces of the browser tests: a Streamlit server on a free port and headless Chromium.

``streamlit_server(args, log_name, env)`` starts ``streamlit run app.py --server.headless true``
(plus ``args``) on a free local port, waits for ``/_stcore/health`` and yields the URL;
``launch_chromium(playwright)`` starts Debian's Chromium with the flags this machine needs;
``wait_for_app_run(page)`` waits until the app is connected and no script run is in progress.
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


def launch_chromium(playwright):
    """Debian's Chromium, headless, without the background connections this closed network refuses."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def wait_for_app_run(page, timeout: float = 120_000) -> None:
    """Connected, and the script (not only a fragment) is not running."""
    page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]', timeout=timeout)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)
