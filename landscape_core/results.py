"""Result dataclasses and their ``.npz`` / CSV forms.

Every result is a frozen dataclass of numpy arrays (or dicts of them) plus a ``settings``
dict that says exactly how it was made. ``ResultIO`` gives each one ``save``/``load``,
``to_bytes``/``from_bytes`` (the cache's storage form: plain npz, never a pickle) and
``settings_json``. Subclasses add ``to_csv`` for a tidy table.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from . import archives

FORMAT_VERSION = 1


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)
    return value


def plain_json(value):
    """``value`` with numpy scalars as Python numbers, tuples as lists, keys as strings and every
    non-finite float as ``None``: what ``json.dumps(..., allow_nan=False)`` accepts (CLI and report)."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def csv_cell(value) -> str | int:
    """One CSV cell: a number as the shortest decimal text that reads back to the same float64
    (``-1.0``, ``0.1``, ``nan``, ``inf``, ``-inf``), an integer as itself, ``None`` as empty."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A CSV table (``csv`` module quoting, ``\\n`` line ends) with cells written by ``csv_cell``.

    Every number reads back with ``float()`` or ``pandas.read_csv`` to the exact float64 held
    by the result (never ``np.float64(...)`` reprs).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([csv_cell(v) for v in row] for row in rows)
    return buffer.getvalue()


class ResultIO:
    """Mixin: npz round trip for dataclasses holding arrays, tensors, dicts of arrays and JSON."""

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {}
        plain: dict = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                arrays[f"t:{f.name}"] = value.detach().cpu().numpy()
            elif isinstance(value, np.ndarray):
                arrays[f"a:{f.name}"] = value
            elif isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
                for key, array in value.items():
                    arrays[f"d:{f.name}:{key}"] = array
                plain.setdefault("__dict_fields__", []).append(f.name)
            else:
                plain[f.name] = _jsonable(value)
        plain["__type__"] = type(self).__name__
        plain["__format__"] = FORMAT_VERSION
        arrays["__json__"] = np.frombuffer(json.dumps(plain).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes):
        with archives.open_npz(data, cls.__name__) as npz:
            plain = json.loads(npz["__json__"].tobytes().decode())
            if plain.get("__type__") != cls.__name__:
                raise ValueError(f"this file holds a {plain.get('__type__')}, not a {cls.__name__}.")
            kwargs = {}
            dict_fields = set(plain.pop("__dict_fields__", []))
            for name in dict_fields:
                kwargs[name] = {}
            for key in npz.files:
                if key == "__json__":
                    continue
                tag, _, rest = key.partition(":")
                if tag == "a":
                    kwargs[rest] = npz[key]
                elif tag == "t":
                    kwargs[rest] = torch.from_numpy(npz[key].copy())
                elif tag == "d":
                    field, _, sub = rest.partition(":")
                    kwargs.setdefault(field, {})[sub] = npz[key]
        for f in dataclasses.fields(cls):
            if f.name in plain and f.name not in kwargs:
                kwargs[f.name] = plain[f.name]
        return cls(**kwargs)

    def save(self, path: str | Path) -> Path:
        """Write the result as ``.npz`` (arrays plus JSON settings; no pickles)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path):
        """Read a result written by ``save``."""
        return cls.from_bytes(Path(path).read_bytes())

    def settings_json(self) -> str:
        return json.dumps(_jsonable(self.settings), indent=2, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class Surface(ResultIO):
    """Values of the loss (and metrics) on a 1D line or a 2D plane.

    ``alphas``: float64 ``(steps_x,)`` coordinates along the first direction.
    ``betas``: float64 ``(steps_y,)`` along the second, or ``None`` for a line.
    ``values``: ``{quantity: float64 array}``, shape ``(steps_x,)`` for a line and
    ``(steps_x, steps_y)`` for a plane, ``values[q][i, j]`` at
    ``center + alphas[i] d1 + betas[j] d2``. Diverged points are NaN (never repaired).
    ``settings``: how it was made (directions, span, steps, data, model hash...).
    """

    alphas: np.ndarray
    values: dict
    settings: dict
    betas: np.ndarray | None = None

    @property
    def is_plane(self) -> bool:
        return self.betas is not None

    @property
    def quantities(self) -> list[str]:
        return list(self.values)

    @property
    def nonfinite(self) -> dict[str, int]:
        """Number of NaN/inf points per quantity (diverged or not computed)."""
        return {q: int((~np.isfinite(v)).sum()) for q, v in self.values.items()}

    def center_value(self, quantity: str = "train_loss") -> float:
        """Value at alpha = beta = 0 if the grid contains it, else NaN."""
        i = np.flatnonzero(self.alphas == 0.0)
        if not len(i):
            return float("nan")
        if not self.is_plane:
            return float(self.values[quantity][i[0]])
        j = np.flatnonzero(self.betas == 0.0)
        return float(self.values[quantity][i[0], j[0]]) if len(j) else float("nan")

    def to_csv(self) -> str:
        """Tidy CSV: one row per point and quantity (``alpha,beta,quantity,value``; a line: ``alpha,quantity,value``)."""
        if not self.is_plane:
            rows = ((a, q, v[i]) for q, v in self.values.items() for i, a in enumerate(self.alphas))
            return csv_table(["alpha", "quantity", "value"], rows)
        rows = (
            (a, b, q, v[i, j])
            for q, v in self.values.items()
            for i, a in enumerate(self.alphas)
            for j, b in enumerate(self.betas)
        )
        return csv_table(["alpha", "beta", "quantity", "value"], rows)
