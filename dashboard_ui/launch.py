"""Start the dashboard as a Streamlit server: what ``landscape dashboard`` runs.

Works from a checkout and from an installed package alike: the entry script is
``dashboard_ui/app.py`` and the pages come from ``landscape_pages``. No Streamlit import
here (the server is a child process), so the CLI stays light.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"


def command(spec: str | None = None, port: int | None = None, headless: bool = False) -> list[str]:
    """The ``streamlit run`` command line (a list of arguments) for these options."""
    args = [sys.executable, "-m", "streamlit", "run", str(APP)]
    if port is not None:
        args += ["--server.port", str(int(port))]
    if headless:
        args += ["--server.headless", "true"]
    args += ["--browser.gatherUsageStats", "false"]
    if spec:
        args += ["--", "--spec", spec]
    return args


def serve(spec: str | None = None, port: int | None = None, headless: bool = False) -> int:
    """Run the server in the foreground until it stops; returns its exit status.

    Raises ``RuntimeError`` (one sentence with the fix) when the dashboard extra is not installed.
    """
    if importlib.util.find_spec("streamlit") is None:
        raise RuntimeError(
            "the dashboard is not installed: pip install 'landscape-dashboard[dashboard]' (or make demo in a checkout)."
        )
    try:
        return subprocess.call(command(spec, port, headless))
    except KeyboardInterrupt:
        return 130
