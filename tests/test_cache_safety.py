"""The cache is read as bytes written by anyone: a pickled row, bytes of another request, a
damaged entry or database, an unusable folder are misses (recomputed, replaced where possible,
said once), never code run, a wrong answer or a stopped command (library and CLI)."""

import contextlib
import json
import logging
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import threading

import diskcache
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Cancelled, Problem, cache, demos, directions, surface

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = """
import torch
import torch.nn.functional as F
from landscape_core import Problem


def build():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(40, 3, generator=gen)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    return Problem(model, F.cross_entropy, train=(X, (X[:, 0] > 0).long()))
"""


def tiny_problem():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(40, 3, generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))
    return Problem(model, F.cross_entropy, (X, (X[:, 0] > 0).long()))


def plane(p, steps=5, calls=None, **kwargs):
    d1, d2 = directions.random(p, count=2, seed=0)
    report = None if calls is None else (lambda done, total: calls.append((done, total)))
    return surface.plane(p, d1, d2, steps=steps, progress=report, **kwargs)


def was_hit(calls) -> bool:
    return calls[0][0] == calls[0][1]


def only_key() -> str:
    (key,) = list(cache.get_cache().iterkeys())
    return key


def warnings_about(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


class Marker:
    """Unpickling this creates the file ``path`` (what an attacker's row would do)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


# -- 10.2: bytes only ----------------------------------------------------------------------------
def test_a_pickled_row_is_a_miss_and_never_unpickled(fresh_cache, tmp_path, caplog):
    p = tiny_problem()
    first = plane(p)
    key = only_key()
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(Marker(str(marker)))
    with contextlib.closing(sqlite3.connect(fresh_cache / "cache.db")) as con, con:
        con.execute("UPDATE Cache SET mode = 4, filename = NULL, value = ? WHERE key = ?", (payload, key))
    armed = tmp_path / "armed"  # the row is live: diskcache's default reader would run it
    shutil.copytree(fresh_cache, armed)
    with contextlib.closing(sqlite3.connect(armed / "cache.db")) as con, con:
        con.execute("UPDATE Cache SET value = ? WHERE key = ?", (pickle.dumps(Marker(str(tmp_path / "m2"))), key))
    diskcache.Cache(str(armed)).get(key)
    assert (tmp_path / "m2").exists()

    with caplog.at_level(logging.WARNING, logger="landscape_core"):
        calls = []
        again = plane(p, calls=calls)
        assert not marker.exists()
        assert not was_hit(calls)  # recomputed
        assert cache.get(key) is not None  # and replaced by raw bytes
        hit_calls = []
        plane(p, calls=hit_calls)
        assert was_hit(hit_calls)
    np.testing.assert_array_equal(again.values["train_loss"], first.values["train_loss"])
    with contextlib.closing(sqlite3.connect(fresh_cache / "cache.db")) as con:
        ((mode,),) = con.execute("SELECT mode FROM Cache WHERE key = ?", (key,)).fetchall()
    assert mode in (1, 2)  # raw bytes, inline or in a value file
    assert len(warnings_about(caplog, "refused")) == 1


def test_keys_are_plain_strings_and_rows_with_other_keys_are_refused(fresh_cache):
    with pytest.raises(TypeError, match="plain strings"):
        cache.put(("a", 1), b"x")
    with pytest.raises(TypeError, match="plain strings"):
        cache.get(b"a")
    cache.put("a", b"x")
    store = cache.get_cache()
    with pytest.raises(TypeError):
        store.set(("tuple", "key"), b"x")  # BytesDisk refuses to pickle a key
    with pytest.raises(TypeError):
        store.set("k", {"a": 1})  # and a value that is not bytes


def test_a_value_file_outside_the_cache_is_never_read_or_deleted(fresh_cache, tmp_path):
    cache.put("big", b"x" * 100_000)  # a value file
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    with contextlib.closing(sqlite3.connect(fresh_cache / "cache.db")) as con, con:
        con.execute("UPDATE Cache SET filename = ? WHERE key = 'big'", (str(outside),))
    assert cache.get("big") is None
    cache.delete("big")
    assert outside.read_text() == "keep me"


# -- 11.5: a value answers its own request -----------------------------------------------------
def test_bytes_of_another_request_are_a_miss(fresh_cache, monkeypatch):
    p = tiny_problem()
    small = plane(p, steps=21)
    key21 = only_key()
    asked = []
    fetch = cache.fetch
    monkeypatch.setattr(cache, "fetch", lambda key, decode: (asked.append(key), fetch(key, decode))[1])
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        plane(p, steps=101, cancel=cancel)
    key101 = asked[0]
    assert key101 != key21
    store = cache.get_cache()
    store.set(key101, store.get(key21))  # the 21 x 21 entry's bytes under the 101 x 101 key
    calls = []
    big = plane(p, steps=101, calls=calls)
    assert not was_hit(calls)
    assert big.values["train_loss"].shape == (101, 101)
    assert small.values["train_loss"].shape == (21, 21)
    np.testing.assert_allclose(big.values["train_loss"][::5, ::5], small.values["train_loss"], rtol=1e-6)
    assert cache.get(key101) is not None and cache.fetch(key101, surface.Surface.from_bytes).alphas.size == 101


def test_payloads_are_bound_to_their_key(fresh_cache):
    cache.put("a", b"alpha")
    store = cache.get_cache()
    store.set("b", store.get("a"))
    assert cache.get("a") == b"alpha" and cache.get("b") is None


# -- 11.8: unreadable entries are misses ---------------------------------------------------------
def _value_file(folder) -> str:
    with contextlib.closing(sqlite3.connect(folder / "cache.db")) as con:
        ((name,),) = con.execute("SELECT filename FROM Cache WHERE filename IS NOT NULL").fetchall()
    return str(folder / name)


def _damage_inline(folder, key, how):
    with contextlib.closing(sqlite3.connect(folder / "cache.db")) as con, con:
        ((value,),) = con.execute("SELECT value FROM Cache WHERE key = ?", (key,)).fetchall()
        value = bytearray(value)
        if how == "flip":
            value[len(value) // 2] ^= 0x10
        else:
            value = value[: len(value) // 2]
        con.execute("UPDATE Cache SET value = ? WHERE key = ?", (bytes(value), key))


def _damage_file(folder, how):
    path = _value_file(folder)
    data = bytearray(open(path, "rb").read())
    if how == "flip":
        data[len(data) // 2] ^= 0x10
    else:
        data = data[: len(data) // 2]
    with open(path, "wb") as handle:
        handle.write(data)


@pytest.mark.parametrize(
    ("where", "how"), [("inline", "flip"), ("inline", "truncate"), ("file", "flip"), ("file", "truncate")]
)
def test_a_damaged_entry_is_recomputed_replaced_and_warned_once(where, how, fresh_cache, caplog):
    p = tiny_problem()
    steps = 5 if where == "inline" else 51  # 51 x 51 values are past diskcache's 32 KiB inline limit
    first = plane(p, steps=steps)
    key = only_key()
    if where == "inline":
        _damage_inline(fresh_cache, key, how)
    else:
        _damage_file(fresh_cache, how)
    with caplog.at_level(logging.WARNING, logger="landscape_core"):
        calls = []
        again = plane(p, steps=steps, calls=calls)
        assert not was_hit(calls)
        hit_calls = []
        plane(p, steps=steps, calls=hit_calls)
        assert was_hit(hit_calls)  # replaced
    np.testing.assert_array_equal(again.values["train_loss"], first.values["train_loss"])
    assert len(warnings_about(caplog, "recomputed")) == 1


def test_a_damaged_database_header_is_moved_aside(fresh_cache, caplog):
    p = tiny_problem()
    first = plane(p)
    cache.reset()
    with open(fresh_cache / "cache.db", "r+b") as handle:
        handle.write(b"\xff" * 100)
    with caplog.at_level(logging.WARNING, logger="landscape_core"):
        calls = []
        again = plane(p, calls=calls)
    assert not was_hit(calls)
    np.testing.assert_array_equal(again.values["train_loss"], first.values["train_loss"])
    assert list(fresh_cache.glob("cache.db.damaged-*"))
    assert len(warnings_about(caplog, "damaged")) == 1
    hit_calls = []
    plane(p, calls=hit_calls)
    assert was_hit(hit_calls)  # the fresh database stores and serves


def test_an_entry_that_does_not_decode_is_a_miss(fresh_cache, caplog):
    cache.put("surface:x", b"not an npz archive")
    with caplog.at_level(logging.WARNING, logger="landscape_core"):
        assert cache.fetch("surface:x", surface.Surface.from_bytes) is None
        assert cache.fetch("surface:x", surface.Surface.from_bytes) is None
    assert len(warnings_about(caplog, "could not be read")) == 1


@pytest.mark.slow
def test_the_default_demo_loads_with_a_garbled_entry(caplog):
    name = demos.list_demos()[0]
    demos.load(name)  # trained once in the session cache
    key = demos.cache_key(name)
    store = cache.get_cache()
    blob = bytearray(store.get(key))
    for i in range(200, len(blob), 997):
        blob[i] ^= 0xFF
    store.set(key, bytes(blob))
    demos.clear_memo(name)
    cache.reset()  # forget warnings given earlier in the session
    with caplog.at_level(logging.WARNING, logger="landscape_core"):
        workspace = demos.load(name)
    assert np.isfinite(workspace.problem.base["train_loss"])
    assert len(warnings_about(caplog, "recomputed")) == 1
    assert cache.fetch(key, demos.runs_from_bytes) is not None  # replaced


# -- 11.9: an unusable folder never stops work ----------------------------------------------------
@contextlib.contextmanager
def read_only(path):
    """Make the folder ``path`` unwritable for this process (chmod, or chattr +i for root)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
        pytest.skip("running as root without chattr: no way to make a folder read-only here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextlib.contextmanager
def unusable(case, tmp_path):
    """The cache folder path for ``case``, unusable while the block runs."""
    if case == "a file":
        path = tmp_path / "file"
        path.write_text("not a folder")
        yield path
    elif case == "/dev/null":
        yield "/dev/null"
    elif case == "unwritable parent":
        parent = tmp_path / "parent"
        parent.mkdir()
        with read_only(parent):
            yield parent / "cache"
    else:
        raise AssertionError(case)


@pytest.mark.parametrize("case", ["a file", "/dev/null", "unwritable parent"])
def test_an_unusable_folder_computes_and_says_so_once(case, tmp_path, monkeypatch, caplog):
    p = tiny_problem()
    exact = plane(p, use_cache=False)
    with unusable(case, tmp_path) as path:
        monkeypatch.setenv("LANDSCAPE_CACHE_DIR", str(path))
        cache.reset()
        with caplog.at_level(logging.WARNING, logger="landscape_core"):
            first, second = plane(p), plane(p)
        assert not cache.writable() and "not stored" in cache.status()
        assert cache.put("k", b"v") is False and cache.get("k") is None
    cache.reset()
    for result in (first, second):
        np.testing.assert_array_equal(result.values["train_loss"], exact.values["train_loss"])
    assert len(warnings_about(caplog, "cache folder")) == 1


def test_a_read_only_folder_serves_its_hits_and_stores_nothing(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "shared"
    monkeypatch.setenv("LANDSCAPE_CACHE_DIR", str(folder))
    cache.reset()
    p = tiny_problem()
    stored = plane(p)
    cache.reset()
    before = sorted(folder.rglob("*"))
    with read_only(folder):
        with caplog.at_level(logging.WARNING, logger="landscape_core"):
            calls = []
            hit = plane(p, calls=calls)
            assert was_hit(calls)
            other = plane(p, steps=7)
        assert "read from it but new ones are not stored" in cache.status()
        cache.reset()
    assert sorted(folder.rglob("*")) == before
    np.testing.assert_array_equal(hit.values["train_loss"], stored.values["train_loss"])
    assert other.values["train_loss"].shape == (7, 7)
    assert len(warnings_about(caplog, "cache folder")) == 1


def _cli(cache_dir, spec, *extra):
    argv = [sys.executable, "-m", "landscape_core.cli", "--cache-dir", str(cache_dir), "surface"]
    argv += ["--spec", f"{spec}:build", "--steps", "5", "--json", "--quiet", *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "tiny_spec.py"
    path.write_text(SPEC)
    return path


@pytest.mark.parametrize("case", ["a file", "/dev/null", "unwritable parent"])
def test_cli_exits_0_with_one_warning_line_on_an_unusable_folder(case, tmp_path, spec_file):
    with unusable(case, tmp_path) as path:
        proc = _cli(path, spec_file)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("landscape: warning: the cache folder"), proc.stderr
    assert json.loads(proc.stdout)["summary"]["shape"] == [5, 5]


def test_cli_reads_a_hit_from_a_read_only_folder(tmp_path, spec_file):
    folder = tmp_path / "shared"
    assert _cli(folder, spec_file).returncode == 0
    with read_only(folder):
        proc = _cli(folder, spec_file)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cached"] is True
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be written" in lines[0], proc.stderr


@pytest.mark.slow
def test_the_dashboard_says_once_that_the_cache_folder_is_unusable(monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LANDSCAPE_CACHE_DIR", "/dev/null")
    cache.reset()
    page = Path(__file__).resolve().parents[1] / "pages" / "guide.py"
    at = AppTest.from_file(str(page), default_timeout=300)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    notes = [c.value for c in at.sidebar.caption if "Cache:" in c.value]
    assert len(notes) == 1 and "/dev/null cannot be used" in notes[0], notes
    cache.reset()


def test_a_database_found_damaged_while_open_is_moved_aside_and_reopened(fresh_cache, monkeypatch, caplog):
    cache.put("a", b"alpha")
    store = cache.get_cache()

    def malformed(*args, **kwargs):
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(store, "get", malformed)
    with caplog.at_level(logging.WARNING, logger="landscape_core"):
        assert cache.get("a") is None  # a miss, never an exception
    assert list(fresh_cache.glob("cache.db.damaged-*"))
    assert cache.get_cache() is not store  # a fresh database, opened on the next use
    assert cache.put("a", b"again") and cache.get("a") == b"again"
    assert len(warnings_about(caplog, "damaged")) == 1
