"""Stopping a process while a job runs ends cleanly: the job stops at its next chunk, its
thread is joined, claims are released; no 'terminate called without an active exception'."""

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from landscape_core import cache

JOB_SCRIPT = """
import signal
import sys

import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, directions, jobs, surface

if sys.argv[1] == "server":  # like a server: SIGTERM ends the main thread normally
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
gen = torch.Generator().manual_seed(0)
X = torch.randn(4000, 20, generator=gen)
problem = Problem(model, F.cross_entropy, (X, torch.randint(0, 10, (4000,), generator=gen)))
d1, d2 = directions.random(problem, count=2, seed=0)
job = jobs.registry().submit(
    "plane", lambda progress, cancel: surface.plane(problem, d1, d2, steps=151, progress=progress, cancel=cancel)
)
while job.snapshot().done == 0:
    job.wait(0.05)
print("progress", flush=True)
while not job.wait(0.2):
    pass
"""


def _wait_for_line(proc, text: str) -> None:
    """Read ``proc``'s stdout until a line holding ``text`` (a state, not a time)."""
    for line in proc.stdout:
        if text in line:
            return
    raise AssertionError(f"the process ended before saying {text!r}: {proc.wait()} {proc.stderr.read()}")


@pytest.mark.parametrize(
    ("mode", "sig", "codes"),
    [("script", signal.SIGINT, (130, -signal.SIGINT)), ("server", signal.SIGTERM, (143,))],
)
def test_a_job_stops_cleanly_when_the_process_is_stopped(mode, sig, codes, tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    env = {**os.environ, "LANDSCAPE_CACHE_DIR": str(folder)}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(JOB_SCRIPT), mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_line(proc, "progress")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "terminate called" not in err, err
    assert proc.returncode in codes, (proc.returncode, err)
    monkeypatch.setenv("LANDSCAPE_CACHE_DIR", str(folder))
    cache.reset()
    keys = list(cache.get_cache().iterkeys())
    cache.reset()
    assert not [k for k in keys if ":claim:" in k]  # the job released its claims on the way out
    assert [k for k in keys if ":tile:" in k]  # and kept the tiles it finished


def _stored_tiles(folder) -> int:
    """Tiles the running process has stored so far (read straight from its cache database)."""
    if not (folder / "cache.db").exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(folder / "cache.db", timeout=30)) as con:
            return con.execute("SELECT count(*) FROM Cache WHERE key LIKE '%:tile:%'").fetchone()[0]
    except sqlite3.OperationalError:  # created but not initialised yet
        return 0


@pytest.mark.parametrize(
    ("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_the_cli_stops_cleanly_and_says_what_it_kept(sig, code, word, tmp_path):
    spec = tmp_path / "spec.py"
    spec.write_text(
        textwrap.dedent(
            """
            import torch
            import torch.nn.functional as F
            from torch import nn
            from landscape_core import Problem

            def build():
                torch.manual_seed(0)
                gen = torch.Generator().manual_seed(0)
                X = torch.randn(1000, 20, generator=gen)
                model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
                return Problem(model, F.cross_entropy, (X, torch.randint(0, 10, (1000,), generator=gen)))
            """
        )
    )
    folder = tmp_path / "cache"
    env = {**os.environ, "LANDSCAPE_CACHE_DIR": str(folder)}
    argv = [sys.executable, "-m", "landscape_core.cli", "surface", "--spec", f"{spec}:build", "--steps", "151"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while _stored_tiles(folder) == 0:  # wait on state: the first tile is kept
            assert proc.poll() is None and time.monotonic() < deadline, proc.poll()
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "terminate called" not in err, err
    assert proc.returncode == code, (proc.returncode, err)
    kept = re.search(rf"landscape: {word}: kept ([\d,]+) of 22,801 points; a rerun resumes from there", err)
    assert kept and int(kept.group(1).replace(",", "")) > 0, err
