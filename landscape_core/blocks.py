"""How a grid of points is cut for evaluation: blocks fixed by the problem and the grid.

The evaluator runs points in chunks, and the last bits of a value can depend on which points
share a chunk (batched matmuls, the affine prefix along a grid row). So that a value never
depends on timing, on how work was split between calls, or on which process computed it,
a grid of ``N`` points is cut once into blocks, each exactly one evaluator chunk:

* rows of ``row`` points (a plane's row: one alpha, every beta) no longer than the
  evaluator's chunk ``c`` (set by the memory budget) are packed whole, ``c // row`` rows
  per block;
* longer rows are cut into pieces of ``c`` points, a row's last piece shorter.

``evaluate_blocks`` evaluates any set of blocks with calls in which every block is one chunk,
so each value comes out bit for bit the same however the blocks are grouped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import torch

from .evaluate import evaluate_points
from .execution import DEFAULT_MEMORY_BUDGET, Runner


class Layout:
    """The blocks of a grid: ``blocks[i] = (start, stop)`` (points, row-major), ``chunk`` the
    evaluator chunk each call uses, ``group[i]`` which blocks may share one call."""

    def __init__(self, total: int, row: int, chunk: int):
        if total < 1 or row < 1 or chunk < 1:
            raise ValueError(f"a layout needs positive sizes; got total={total}, row={row}, chunk={chunk}.")
        self.total, self.row = total, row
        if row <= chunk:
            self.chunk = chunk // row * row
            starts = list(range(0, total, self.chunk))
            self.group = [0] * len(starts)
        else:  # pieces of one row per call, so each call's chunks start where its blocks do
            self.chunk = chunk
            starts = [r + j for r in range(0, total, row) for j in range(0, min(row, total - r), chunk)]
            self.group = [s // row for s in starts]
        self.blocks = [(s, e) for s, e in zip(starts, [*starts[1:], total])]

    @classmethod
    def of(cls, problem, center, basis, total: int, row: int, block_rows: int | None = None) -> Layout:
        """The layout of ``total`` points in rows of ``row`` for ``problem``'s evaluator chunk;
        ``block_rows`` fixes that many rows per block instead (tests, benchmarks)."""
        chunk = Runner(problem, center, basis, problem.buffers).chunk_size(DEFAULT_MEMORY_BUDGET)
        if block_rows is not None:
            chunk = max(1, min(block_rows, max(1, chunk // row))) * row if row <= chunk else chunk
        return cls(total, row, chunk)

    @property
    def name(self) -> str:
        """Identifies the cut (part of the keys of stored tiles)."""
        return f"{self.chunk}r{self.row}"

    def span(self, first: int, stop: int) -> tuple[int, int]:
        """Points ``[start, stop)`` covered by blocks ``first .. stop - 1``."""
        return self.blocks[first][0], self.blocks[stop - 1][1]


def evaluate_blocks(
    problem,
    center: torch.Tensor,
    basis: torch.Tensor,
    coeffs: np.ndarray,
    splits: list[str],
    layout: Layout,
    block_ids: list[int],
    progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, np.ndarray]:
    """Values at the points of blocks ``block_ids`` (ascending), concatenated in that order.

    Consecutive blocks of one group run in one evaluator call whose chunk is the layout's, so
    every block is exactly one chunk. ``progress(points done)`` counts within this call;
    ``cancel`` raises ``Cancelled`` between chunks.
    """
    parts: list[dict[str, np.ndarray]] = []
    done = 0
    i = 0
    while i < len(block_ids):
        j = i + 1
        while (
            j < len(block_ids)
            and block_ids[j] == block_ids[j - 1] + 1
            and layout.group[block_ids[j]] == layout.group[block_ids[i]]
        ):
            j += 1
        start, stop = layout.span(block_ids[i], block_ids[j - 1] + 1)
        base = done

        def report(d, _total, base=base):
            if progress is not None:
                progress(base + d)

        parts.append(
            evaluate_points(problem, center, basis, coeffs[start:stop], splits, report, cancel, chunk_size=layout.chunk)
        )
        done += stop - start
        i = j
    return {q: np.concatenate([p[q] for p in parts]) for q in parts[0]}
