"""Grids in tiles: a cancel keeps exactly what it says and a resume computes only the rest;
chunks follow the measured speed; tiles held by a live claim are waited for, abandoned ones
taken over; two processes (CLI and library) never compute the same tile twice."""

import os
import re
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Cancelled, Problem, blocks, cache, directions, surface, tiles
from landscape_core.claims import HOST, Claim
from landscape_core.results import Surface

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_problem(model=None, n=40):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(n, 3, generator=gen)
    torch.manual_seed(0)
    model = model or nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))
    return Problem(model, F.cross_entropy, (X, (X[:, 0] > 0).long()))


class Slow(nn.Module):
    """A small net whose forward pass sleeps ``seconds`` (a stand-in for an expensive model)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))

    def forward(self, X):
        time.sleep(self.seconds)
        return self.net(X)


def stored_points(problem) -> int:
    """Points held by the tiles in the cache (each tile decoded: what a resume can use)."""
    quantities = [f"{s}_{q}" for s in problem.splits for q in ("loss", *problem.metrics)]
    total = 0
    for key in cache.get_cache().iterkeys():
        if ":tile:" not in key:
            continue
        blob = cache.get(key)
        header = tiles.json.loads(blob[4 : 4 + tiles.struct.unpack("<I", blob[:4])[0]])
        total += len(tiles.decode_tile(blob, quantities, header["start"], header["stop"])[quantities[0]])
    return total


def test_cancel_keeps_what_it_says_and_resume_computes_only_the_rest(fresh_cache, monkeypatch):
    monkeypatch.setattr(tiles, "TILE_S", 0.001)  # small tiles: the 30% mark falls after some are kept
    problem = tiny_problem()
    d1, d2 = directions.random(problem, count=2, seed=0)
    cancel = threading.Event()

    def progress(done, total):
        if done >= 0.3 * total:
            cancel.set()

    with pytest.raises(Cancelled) as info:
        surface.plane(problem, d1, d2, steps=101, progress=progress, cancel=cancel)
    match = re.fullmatch(r"kept ([\d,]+) of 10,201 points; Run resumes from there", str(info.value))
    assert match, str(info.value)
    kept = int(match.group(1).replace(",", ""))
    assert 0 < kept < 10201
    assert stored_points(problem) == kept

    evaluated = []
    real = blocks.evaluate_points

    def counting(problem, center, basis, coeffs, *args, **kwargs):
        evaluated.append(len(coeffs))
        return real(problem, center, basis, coeffs, *args, **kwargs)

    monkeypatch.setattr(blocks, "evaluate_points", counting)
    calls = []
    resumed = surface.plane(problem, d1, d2, steps=101, progress=lambda d, t: calls.append(d))
    assert sum(evaluated) == 10201 - kept
    assert calls[:2] == [0, kept]
    monkeypatch.setattr(blocks, "evaluate_points", real)
    fresh = surface.plane(problem, d1, d2, steps=101, use_cache=False)
    for q in fresh.values:
        np.testing.assert_array_equal(resumed.values[q], fresh.values[q])
    (final,) = list(cache.get_cache().iterkeys())  # tiles, claims and plan removed
    assert final.count(":") == 1


def test_cancel_without_a_cache_says_nothing_was_kept(fresh_cache):
    problem = tiny_problem()
    d1, d2 = directions.random(problem, count=2, seed=0)
    cancel = threading.Event()
    with pytest.raises(Cancelled, match=r"kept 0 of 441 points \(the cache is off for this request\)"):
        surface.plane(problem, d1, d2, steps=21, use_cache=False, cancel=cancel, progress=lambda d, t: cancel.set())


@pytest.mark.parametrize(("block_seconds", "per_tile"), [(1.0, 1), (0.25 / 8, 8), (1e-6, "cap")])
def test_tiles_follow_the_measured_speed(block_seconds, per_tile, fresh_cache, monkeypatch):
    problem = tiny_problem()
    d1, d2 = directions.random(problem, count=2, seed=0)
    run = tiles.TiledRun(
        problem, problem.theta0, torch.stack([d1, d2]), np.zeros((400, 2)), ["train"], "t", dict, bytes
    )
    ticks = iter([0.0, block_seconds])  # the probe of block 0 takes block_seconds
    monkeypatch.setattr(tiles, "_clock", lambda: next(ticks))
    block = run.layout.blocks[0][1]
    assert run._plan() == (tiles.MAX_TILE // block if per_tile == "cap" else per_tile)


def test_a_slow_model_gets_one_block_per_tile(fresh_cache):
    problem = tiny_problem(Slow(0.02))  # at least 20 ms a point, whatever the machine
    d1, d2 = directions.random(problem, count=2, seed=0)
    run = tiles.TiledRun(problem, problem.theta0, torch.stack([d1, d2]), np.zeros((40, 2)), ["train"], "s", dict, bytes)
    assert run._plan() == 1


def test_values_do_not_depend_on_how_the_work_was_split(fresh_cache, monkeypatch):
    problem = tiny_problem()
    d1, d2 = directions.random(problem, count=2, seed=0)
    first = surface.plane(problem, d1, d2, steps=31, use_cache=False)
    monkeypatch.setattr(tiles, "CHUNK_S", 1e-6)  # one tile per chunk: many more evaluator calls
    monkeypatch.setattr(tiles, "TILE_S", 1e-6)
    second = surface.plane(problem, d1, d2, steps=31)
    for q in first.values:
        np.testing.assert_array_equal(first.values[q], second.values[q])


# -- claims ---------------------------------------------------------------------------------------
def key_of(problem, d1, d2, monkeypatch, **kwargs) -> str:
    """The cache key of a plane request (read off the first cache lookup of a cancelled run)."""
    asked = []
    fetch = cache.fetch
    monkeypatch.setattr(cache, "fetch", lambda key, decode: (asked.append(key), fetch(key, decode))[1])
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        surface.plane(problem, d1, d2, cancel=cancel, **kwargs)
    monkeypatch.setattr(cache, "fetch", fetch)
    return asked[0]


def put_claim(key: str, claim: Claim) -> None:
    with cache.atomic() as txn:
        txn.put(key, claim.to_bytes())


def test_a_tile_held_by_a_live_claim_is_waited_for_not_computed(fresh_cache, monkeypatch):
    problem = tiny_problem()
    d1, d2 = directions.random(problem, count=2, seed=0)
    kwargs = {"steps": 5, "rows_per_chunk": 1}  # tile i = row i (5 points)
    key = key_of(problem, d1, d2, monkeypatch, **kwargs)
    put_claim(f"{key}:claim:5r5x1:0", Claim(os.getpid(), HOST, "another holder", time.time() + 3600))
    rest_done = threading.Event()
    out = {}

    def progress(done, total):
        if done >= total - 5:
            rest_done.set()

    worker = threading.Thread(target=lambda: out.update(r=surface.plane(problem, d1, d2, progress=progress, **kwargs)))
    worker.start()
    assert rest_done.wait(300)
    assert worker.is_alive()  # rows 1-4 done; row 0 is held by the other holder: waiting
    quantities = ["train_loss", "train_accuracy"]
    with cache.atomic() as txn:  # the holder finishes row 0 (with values it alone would give)
        txn.put(f"{key}:tile:5r5x1:0", tiles.encode_tile({q: np.full(5, 42.0) for q in quantities}, 0, 5))
        txn.delete(f"{key}:claim:5r5x1:0")
    worker.join(300)
    result = out["r"]
    assert (result.values["train_loss"][0] == 42.0).all()  # taken from the holder, not recomputed
    exact = surface.plane(problem, d1, d2, use_cache=False, **kwargs)
    np.testing.assert_array_equal(result.values["train_loss"][1:], exact.values["train_loss"][1:])


@pytest.mark.parametrize("who", ["dead process", "silent host"])
def test_an_abandoned_claim_is_taken_over(who, fresh_cache, monkeypatch):
    problem = tiny_problem()
    d1, d2 = directions.random(problem, count=2, seed=0)
    kwargs = {"steps": 5, "rows_per_chunk": 1}
    key = key_of(problem, d1, d2, monkeypatch, **kwargs)
    if who == "dead process":
        child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        claim = Claim(int(child.stdout), HOST, "gone", time.time())
    else:
        claim = Claim(1, "another-host", "silent", time.time() - 120)
    put_claim(f"{key}:claim:5r5x1:0", claim)
    result = surface.plane(problem, d1, d2, **kwargs)
    exact = surface.plane(problem, d1, d2, use_cache=False, **kwargs)
    np.testing.assert_array_equal(result.values["train_loss"], exact.values["train_loss"])


SHARED_SPEC = """
import logging
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem


class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        # wide: its activations make the evaluator's blocks one grid row each (21 blocks to share)
        self.net = nn.Sequential(nn.Linear(3, 20000), nn.Tanh(), nn.Linear(20000, 2))

    def forward(self, X):
        time.sleep(0.01)  # an expensive model, in miniature
        return self.net(X)


def build():
    folder = Path(os.environ["TILES_TEST_DIR"])
    handler = logging.FileHandler(folder / f"tiles-{os.getpid()}.log")
    logger = logging.getLogger("landscape_core.tiles")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(32, 3, generator=gen)
    torch.manual_seed(0)
    problem = Problem(Slow(), F.cross_entropy, (X, (X[:, 0] > 0).long()))
    (folder / f"ready-{os.getpid()}").touch()
    while not (folder / "go").exists():  # both processes start the plane together
        time.sleep(0.01)
    return problem
"""

LIBRARY = """
import sys
from landscape_core import directions, surface
from landscape_core.spec import load_spec

problem = load_spec(sys.argv[1]).problem
d = directions.random(problem, count=2, norm="filter", ignore=("bias", "norm"), seed=0)
surface.plane(problem, d[0], d[1], span=(-1.0, 1.0), steps=21, splits=list(problem.splits)).save(sys.argv[2])
"""


def test_two_processes_never_compute_the_same_tile(tmp_path):
    spec = tmp_path / "slow_spec.py"
    spec.write_text(SHARED_SPEC)
    env = {**os.environ, "LANDSCAPE_CACHE_DIR": str(tmp_path / "cache"), "TILES_TEST_DIR": str(tmp_path)}
    cli = [sys.executable, "-m", "landscape_core.cli", "surface", "--spec", f"{spec}:build", "--steps", "21"]
    procs = [
        subprocess.Popen([*cli, "--out", str(tmp_path / "cli.npz"), "--quiet"], env=env, stderr=subprocess.PIPE),
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(LIBRARY), f"{spec}:build", str(tmp_path / "lib.npz")],
            env=env,
            stderr=subprocess.PIPE,
        ),
    ]
    deadline = time.monotonic() + 600
    while len(list(tmp_path.glob("ready-*"))) < 2:  # wait on state: both loaded and waiting
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.poll() for p in procs]
        time.sleep(0.05)
    (tmp_path / "go").touch()
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()
    computed, counts = [], set()
    for log in tmp_path.glob("tiles-*.log"):
        text = log.read_text()
        for match in re.finditer(r"computed tiles \[([\d, ]+)\]", text):
            computed.extend(int(i) for i in match.group(1).split(","))
        counts.update(int(c) for c in re.findall(r"(\d+) tiles\b", text))
    (count,) = counts
    assert sorted(computed) == list(range(count))  # every tile once, by one process or the other
    cli_result, lib_result = Surface.load(tmp_path / "cli.npz"), Surface.load(tmp_path / "lib.npz")
    for q in cli_result.values:
        np.testing.assert_array_equal(cli_result.values[q], lib_result.values[q])
