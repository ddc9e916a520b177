"""Evaluating a grid of points in tiles: kept as they finish, shared between processes.

A line or plane of ``N`` points (rows of ``coeffs``, evaluated at ``center + coeffs @ basis``)
is cut into blocks (``landscape_core.blocks``: fixed by the problem and the grid, so a value
never depends on timing or on who computed it) and the blocks into tiles of ``k`` blocks.
``k`` is fixed once per request (the plan, kept in the cache so every process uses the same
tiles): the first process times one block and picks the power of two of blocks that takes
about ``TILE_S`` seconds. Work runs in chunks of whole tiles sized from the measured speed to
take about ``CHUNK_S`` seconds; each finished chunk's tiles are stored at once. So a cancel or
a crash loses at most the chunk in flight (about a second of work, at least one block), and
``Cancelled`` says exactly how many points were kept.

Processes share the work through claims in the cache (``landscape_core.claims``): a chunk's
tiles are claimed in one transaction before they are computed; tiles claimed by a live
holder are skipped and later waited for (their state is polled, the wait ends when they are
stored or their claim is released or abandoned). Every tile is computed once, whoever
computes it. When all tiles are there, the whole result is stored and the tiles removed in
one transaction.

Without a writable cache (``use_cache=False``, a read-only folder, a request that cannot
be identified) chunks are still sized by time, and nothing is kept.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import torch

from . import cache
from .blocks import Layout, evaluate_blocks
from .claims import Claim, Heartbeat, new_token
from .evaluate import Cancelled, Progress

log = logging.getLogger(__name__)

TILE_S = 0.25  # target seconds of work per stored tile
CHUNK_S = 1.0  # target seconds per chunk of tiles (the most a cancel or a crash loses, roughly)
MAX_TILE = 4096  # points per tile, at most
WAIT_FIRST_S, WAIT_MAX_S = 0.05, 0.5  # polling interval while waiting for tiles held by others
_clock = time.perf_counter  # seconds of work (a seam for tests)


class _FinalStored(Exception):
    """Another process stored the whole result meanwhile."""


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(np.floor(np.log2(max(x, 1.0)))))


def _plan_blocks(blob: bytes) -> int:
    """Blocks per tile of a stored plan; ``ValueError`` unless a sensible number."""
    blocks = json.loads(blob.decode())["blocks_per_tile"]
    if type(blocks) is not int or not 1 <= blocks <= MAX_TILE:
        raise ValueError(f"a plan with {blocks!r} blocks per tile")
    return blocks


def encode_tile(values: dict[str, np.ndarray], start: int, stop: int) -> bytes:
    """``len | JSON header | float64 values``: a tile's values for points ``[start, stop)``."""
    header = json.dumps({"quantities": list(values), "start": start, "stop": stop}).encode()
    data = np.stack([np.asarray(v, dtype="<f8") for v in values.values()]).tobytes()
    return struct.pack("<I", len(header)) + header + data


def decode_tile(blob: bytes, quantities: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
    """Inverse of ``encode_tile``; ``ValueError`` unless it holds exactly these quantities and points."""
    (size,) = struct.unpack("<I", blob[:4])
    header = json.loads(blob[4 : 4 + size].decode())
    if header != {"quantities": quantities, "start": start, "stop": stop}:
        raise ValueError("a tile of another request")
    data = np.frombuffer(blob[4 + size :], dtype="<f8")
    if data.size != len(quantities) * (stop - start):
        raise ValueError("a tile of the wrong size")
    return dict(zip(quantities, data.reshape(len(quantities), stop - start).astype(np.float64)))


class TiledRun:
    """One request: ``run()`` returns the result (``build(values)``), from the cache if it can.

    ``coeffs``: ``(N, m)`` points in rows of ``row`` (default: one row). ``key``: the cache key
    of the whole result; ``load(bytes)``/``to_bytes()`` its stored form. ``block_rows``: rows
    per block and one block per tile and chunk, instead of timing (tests, benchmarks).
    """

    def __init__(
        self,
        problem,
        center: torch.Tensor,
        basis: torch.Tensor,
        coeffs: np.ndarray,
        splits: list[str],
        key: str,
        build: Callable[[dict], object],
        load: Callable[[bytes], object],
        use_cache: bool = True,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        row: int | None = None,
        block_rows: int | None = None,
    ):
        self.problem, self.center, self.basis, self.splits = problem, center, basis, splits
        self.coeffs = np.asarray(coeffs, dtype=np.float64)
        self.total = int(self.coeffs.shape[0])
        self.layout = Layout.of(problem, center, basis, self.total, row or self.total, block_rows)
        self.fixed = block_rows is not None
        self.key, self.build, self.load = key, build, load
        self.use_cache, self.cancel = use_cache, cancel
        self._progress = progress
        self.quantities = [f"{s}_{q}" for s in splits for q in ("loss", *problem.metrics)]
        self.values = {q: np.full(self.total, np.nan) for q in self.quantities}
        self.filled = np.zeros(self.total, dtype=bool)
        self.token = new_token()
        self.per_tile = 1  # blocks per tile (the plan)
        self._probe: dict[str, np.ndarray] | None = None  # block 0, evaluated while planning

    # -- entry ------------------------------------------------------------------------------
    def run(self):
        if self.use_cache:
            if (hit := cache.fetch(self.key, self.load)) is not None:
                self.report(self.total)
                return hit
            if cache.has(self.key):  # stored but unreadable: a miss, recomputed and replaced
                cache.delete(self.key)
        self.report(0)
        shared = self.use_cache and cache.writable() and not self.key.startswith(cache.NOCACHE)
        for _attempt in range(3):
            try:
                if shared:
                    self._run_shared()
                else:
                    self._run_alone()
                break
            except _FinalStored:  # another process finished first: its result, if readable
                if (hit := cache.fetch(self.key, self.load)) is not None:
                    self.report(self.total)
                    return hit
                cache.delete(self.key)  # unreadable: a miss like any other, computed again
            except BaseException as exc:
                if not isinstance(exc, Exception):  # Ctrl-C, SIGTERM: say what stays
                    kept = int(self.filled.sum()) if shared else 0
                    exc.add_note(f"kept {kept:,} of {self.total:,} points; a rerun resumes from there")
                raise
        result = self.build(self.values)
        if shared:
            self._store_final(result)
        return result

    def report(self, done: int) -> None:
        if self._progress is not None:
            self._progress(int(done), self.total)

    def _cancelled(self, reason: str | None) -> Cancelled:
        """``Cancelled`` saying what was kept (``.kept``: points in the cache)."""
        kept = int(self.filled.sum()) if reason is None else 0
        tail = "; Run resumes from there" if reason is None else f" ({reason})"
        exc = Cancelled(f"kept {kept:,} of {self.total:,} points{tail}")
        exc.kept = kept
        return exc

    def _check_cancel(self, reason: str | None) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise self._cancelled(reason)

    # -- evaluation -------------------------------------------------------------------------
    def _evaluate(self, block_ids: list[int], reason: str | None) -> dict[str, np.ndarray]:
        """Values of the points of ``block_ids`` (ascending), in order; progress as it goes."""
        base = int(self.filled.sum())
        try:
            return evaluate_blocks(
                self.problem,
                self.center,
                self.basis,
                self.coeffs,
                self.splits,
                self.layout,
                block_ids,
                lambda done: self.report(base + done),
                self.cancel,
            )
        except Cancelled:
            raise self._cancelled(reason) from None

    def _next_count(self, count: int, blocks: int, seconds: float) -> int:
        """Blocks for the next chunk: about ``CHUNK_S`` at the measured rate, at most 4x the last."""
        rate = blocks / max(seconds, 1e-6)
        return max(1, int(min(rate * CHUNK_S, 4 * count)))

    def _run_alone(self) -> None:
        """Compute without storing; tiles a read-only cache already holds are read, not recomputed."""
        reason = "the cache is off for this request" if not self.use_cache else "the cache cannot store results"
        if self.use_cache and self.key.startswith(cache.NOCACHE):
            reason = "this request cannot be identified, so it is not cached"
        elif self.use_cache:
            stored = 1 if self.fixed else cache.fetch(f"{self.key}:plan", _plan_blocks)
            if stored:
                self.per_tile = stored
                for i in range(self._tiles()):
                    self._read_tile(i)
                self.report(self.filled.sum())
        missing = [b for b, (start, _) in enumerate(self.layout.blocks) if not self.filled[start]]
        count = 1
        while missing:
            self._check_cancel(reason)
            ids, missing = missing[:count], missing[count:]
            began = _clock()
            part = self._evaluate(ids, reason)
            index = np.concatenate([np.arange(*self.layout.blocks[b]) for b in ids])
            for q in self.quantities:
                self.values[q][index] = part[q]
            self.filled[index] = True
            if not self.fixed:
                count = self._next_count(count, len(ids), _clock() - began)

    # -- shared through the cache -----------------------------------------------------------
    def _tiles(self) -> int:
        return -(-len(self.layout.blocks) // self.per_tile)

    def _tile_blocks(self, i: int) -> list[int]:
        return list(range(i * self.per_tile, min((i + 1) * self.per_tile, len(self.layout.blocks))))

    def _span(self, i: int) -> tuple[int, int]:
        first, stop = i * self.per_tile, min((i + 1) * self.per_tile, len(self.layout.blocks))
        return self.layout.span(first, stop)

    def _tile_key(self, i: int) -> str:
        return f"{self.key}:tile:{self.layout.name}x{self.per_tile}:{i}"

    def _claim_key(self, i: int) -> str:
        return f"{self.key}:claim:{self.layout.name}x{self.per_tile}:{i}"

    def _plan(self) -> int:
        """Blocks per tile: fixed by the first process that planned this request."""
        if self.fixed:
            return 1
        plan_key = f"{self.key}:plan"
        stored = cache.fetch(plan_key, _plan_blocks)
        if stored is not None:
            return stored
        began = _clock()
        try:  # block 0, timed; its values are kept for its tile
            self._probe = evaluate_blocks(
                self.problem, self.center, self.basis, self.coeffs, self.splits, self.layout, [0], None, self.cancel
            )
        except Cancelled:
            raise self._cancelled(None) from None
        seconds = _clock() - began
        size = self.layout.blocks[0][1] - self.layout.blocks[0][0]
        blocks = max(1, min(MAX_TILE // size, _pow2_floor(TILE_S / max(seconds, 1e-9))))
        with cache.atomic() as txn:
            if txn is not None:
                blob = txn.get(plan_key)
                try:
                    return _plan_blocks(blob)  # another process planned first: its tiles
                except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
                    txn.put(plan_key, json.dumps({"blocks_per_tile": blocks}).encode())
        return blocks

    def _fill(self, i: int, part: dict[str, np.ndarray]) -> None:
        start, stop = self._span(i)
        for q in self.quantities:
            self.values[q][start:stop] = part[q]
        self.filled[start:stop] = True

    def _read_tile(self, i: int) -> bool:
        start, stop = self._span(i)
        part = cache.fetch(self._tile_key(i), lambda b: decode_tile(b, self.quantities, start, stop))
        if part is None:
            return False
        self._fill(i, part)
        return True

    def _run_shared(self) -> None:
        self.per_tile = self._plan()
        count = self._tiles()
        log.debug("plan of %s: %d blocks per tile, %d tiles", self.key, self.per_tile, count)
        queue = deque(i for i in range(count) if not self.filled[self._span(i)[0]] and not self._read_tile(i))
        self.report(self.filled.sum())
        deferred: list[int] = []
        want = 1  # tiles per chunk
        wait = WAIT_FIRST_S
        while queue or deferred:
            self._check_cancel(None)
            if not queue:
                free = set(self._wait_for(deferred, wait))
                queue.extend(sorted(free))
                deferred = [i for i in deferred if i not in free and not self.filled[self._span(i)[0]]]
                wait = min(WAIT_MAX_S, wait * 1.5)
                self.report(self.filled.sum())
                continue
            wait = WAIT_FIRST_S
            run, busy, stored = self._claim(queue, want)
            deferred.extend(busy)
            for i in stored:
                if not self._read_tile(i):
                    cache.delete(self._tile_key(i))  # unreadable: a miss, claimed and computed again
                    queue.append(i)
            if run:
                seconds = self._compute(run)
                if not self.fixed:
                    want = max(
                        1, self._next_count(want * self.per_tile, len(run) * self.per_tile, seconds) // self.per_tile
                    )
            self.report(self.filled.sum())

    def _claim(self, queue: deque, want: int) -> tuple[list[int], list[int], list[int]]:
        """Claim up to ``want`` tiles from the front of ``queue`` in one transaction.

        Returns ``(claimed, busy: held by a live claim, stored: finished meanwhile)``.
        """
        run, busy, stored = [], [], []
        now = time.time()
        with cache.atomic() as txn:
            if txn is None:
                raise RuntimeError("the cache stopped being writable")
            if txn.has(self.key):
                raise _FinalStored
            while queue and len(run) < want:
                i = queue.popleft()
                if txn.has(self._tile_key(i)):
                    stored.append(i)
                    continue
                holder = Claim.from_bytes(txn.get(self._claim_key(i)))
                if holder is not None and holder.token != self.token and holder.live(now):
                    busy.append(i)
                    continue
                if holder is not None and holder.token != self.token:
                    log.info("taking over tile %d of %s from an abandoned claim (pid %d)", i, self.key, holder.pid)
                run.append(i)
            mine = Claim.mine(self.token, now).to_bytes()
            for i in run:
                txn.put(self._claim_key(i), mine)
        return run, busy, stored

    def _refresh(self, run: list[int]) -> None:
        with cache.atomic() as txn:
            if txn is None:
                return
            mine = Claim.mine(self.token, time.time()).to_bytes()
            for i in run:
                holder = Claim.from_bytes(txn.get(self._claim_key(i)))
                if holder is not None and holder.token == self.token:
                    txn.put(self._claim_key(i), mine)

    def _release(self, run: list[int], parts: dict[int, dict] | None) -> None:
        """Store the finished tiles (``parts``) and drop this run's claims, in one transaction."""
        try:
            with cache.atomic() as txn:
                if txn is None:
                    return
                for i, part in (parts or {}).items():
                    txn.put(self._tile_key(i), encode_tile(part, *self._span(i)))
                for i in run:
                    holder = Claim.from_bytes(txn.get(self._claim_key(i)))
                    if holder is not None and holder.token == self.token:
                        txn.delete(self._claim_key(i))
        except Exception as exc:
            if parts is not None:
                raise
            log.info("could not release claims of %s: %s (they expire)", self.key, exc)

    def _compute(self, run: list[int]) -> float:
        """Evaluate the claimed tiles ``run``, store them; returns the seconds it took."""
        spans = [self._span(i) for i in run]
        blocks = [b for i in run for b in self._tile_blocks(i)]
        probe, self._probe = (self._probe, None) if blocks[0] == 0 else (None, self._probe)
        began = _clock()
        try:
            with Heartbeat(lambda: self._refresh(run)):
                flat = self._evaluate(blocks[1:], None) if probe is not None and len(blocks) > 1 else None
                if probe is not None:  # block 0 was evaluated while planning, in its own chunk
                    flat = probe if flat is None else {q: np.concatenate([probe[q], flat[q]]) for q in probe}
                else:
                    flat = self._evaluate(blocks, None)
        except BaseException:
            self._release(run, None)
            raise
        seconds = _clock() - began
        parts, offset = {}, 0
        for i, (a, b) in zip(run, spans):
            parts[i] = {q: flat[q][offset : offset + b - a] for q in self.quantities}
            offset += b - a
        try:
            self._release(run, parts)
        except Exception as exc:  # the cache failed under us: keep the values, say so once
            cache.warn_once(f"tiles:{type(exc).__name__}", f"finished tiles could not be stored ({exc})")
        for i in run:
            self._fill(i, parts[i])
        log.debug("computed tiles %s of %s", run, self.key)
        return seconds

    def _wait_for(self, deferred: list[int], interval: float) -> list[int]:
        """Wait ``interval`` (or a cancel), then read the state of the tiles held by others.

        Fills tiles that were stored; returns those whose claim was released or abandoned.
        """
        if self.cancel is not None:
            self.cancel.wait(interval)
        else:
            time.sleep(interval)
        self._check_cancel(None)
        if cache.has(self.key):
            raise _FinalStored
        free, now = [], time.time()
        for i in deferred:
            if self._read_tile(i):
                continue
            holder = Claim.from_bytes(cache.get(self._claim_key(i)))
            if holder is None or not holder.live(now):
                free.append(i)
        return free

    def _store_final(self, result) -> None:
        """Store the whole result and remove the tiles, claims and plan, in one transaction."""
        count = self._tiles()
        try:
            with cache.atomic() as txn:
                if txn is None:
                    return
                if txn.get(self.key) is None:  # absent or unreadable: replaced
                    txn.put(self.key, result.to_bytes())
                for i in range(count):
                    txn.delete(self._tile_key(i))
                    txn.delete(self._claim_key(i))
                txn.delete(f"{self.key}:plan")
        except Exception as exc:
            cache.warn_once(f"final:{type(exc).__name__}", f"a finished result could not be stored ({exc})")
