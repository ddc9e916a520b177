"""Uploaded files: state dicts and data tensors, validated, never executed.

What can be uploaded (browser or any caller holding bytes):

* **state dicts** for the architecture of the workspace in use: ``.pt``/``.pth`` (read with
  ``torch.load(weights_only=True)``, which refuses pickles that would build arbitrary objects
  or run code) and ``.safetensors``; layouts and key matching as in ``checkpoints``.
* **data**: ``.pt`` (``weights_only=True``) or ``.npz`` (``allow_pickle=False``) holding inputs
  and labels, as ``{"X": ..., "y": ...}`` (also ``x``/``inputs``/``data``/``features`` and
  ``labels``/``targets``/``target``) or a pair ``(X, y)``; one file per split.
* a ``torch.export`` program (``.pt2``) plus data, with no code: see ``exported.py``.

Size limits (``MAX_STATE_DICT_BYTES``, ``MAX_DATA_BYTES``) are checked on the byte count
before anything is parsed, and again on what a zip archive (``.pt``, ``.npz``) would unpack to:
the declared sizes of its entries, the shapes in its ``.npy`` headers and the storage sizes of
its tensors, before any of it is read (``archives``, ``checkpoints.load_torch``). Every entry's
CRC is verified first. Every failure is an ``UploadError`` (a ``ValueError``) with one sentence
naming the file, what is wrong and what is allowed. Accepted uploads are kept per browser
session by ``upload_registry``.
"""

from __future__ import annotations

import copy
import io
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import archives, checkpoints
from .problem import Problem
from .workspace import Checkpoint, Workspace

MAX_STATE_DICT_BYTES = 200 * 2**20  # one state-dict file
MAX_DATA_BYTES = 200 * 2**20  # one data file
STATE_DICT_SUFFIXES = (".pt", ".pth", ".safetensors")
DATA_SUFFIXES = (".pt", ".npz")
INPUT_KEYS = ("X", "x", "inputs", "input", "data", "features")
LABEL_KEYS = ("y", "labels", "label", "targets", "target")


class UploadError(ValueError):
    """An uploaded file was refused; the message says which file and why."""


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its ``name`` as the user called it and its ``data`` bytes."""

    name: str
    data: bytes

    @classmethod
    def from_path(cls, path: str | Path) -> Upload:
        path = Path(path)
        if not path.is_file():
            raise UploadError(f"file {str(path)!r} does not exist.")
        return cls(path.name, path.read_bytes())


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def check_size(upload: Upload, limit: int, what: str) -> None:
    """Refuse ``upload`` if it is larger than ``limit`` bytes (or empty)."""
    size = len(upload.data)
    if size > limit:
        raise UploadError(f"{what} {upload.name!r} is {_mib(size)}, over the upload limit of {_mib(limit)}.")
    if size == 0:
        raise UploadError(f"{what} {upload.name!r} is empty (0 bytes).")


def _suffix(upload: Upload, allowed: tuple[str, ...], what: str) -> str:
    suffix = Path(upload.name).suffix.lower()
    if suffix not in allowed:
        raise UploadError(
            f"{what} {upload.name!r} has suffix {suffix or '(none)'!r}; allowed are {', '.join(allowed)}."
        )
    return suffix


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name)[:120] or "upload"


# -- state dicts ------------------------------------------------------------------------------
def read_state_dict(upload: Upload) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, metadata)`` from uploaded bytes; same rules as ``checkpoints.read_file``."""
    check_size(upload, MAX_STATE_DICT_BYTES, "state dict")
    _suffix(upload, STATE_DICT_SUFFIXES, "state dict")
    with tempfile.TemporaryDirectory(prefix="landscape-upload-") as folder:
        path = Path(folder) / _safe_name(upload.name)
        path.write_bytes(upload.data)
        try:
            return checkpoints.read_file(path, max_bytes=MAX_STATE_DICT_BYTES)
        except ValueError as exc:  # the message names the upload as the user called it, not the temporary copy
            raise UploadError(str(exc).replace(repr(path.name), repr(upload.name))) from None


def checkpoint_from_upload(problem: Problem, upload: Upload) -> Checkpoint:
    """A ``Checkpoint`` of ``problem``'s space from an uploaded state dict (architecture checked)."""
    state, meta = read_state_dict(upload)
    step = None
    for key in checkpoints.STEP_KEYS:
        if isinstance(meta.get(key), (int, str)) and str(meta[key]).isdigit():
            step = int(meta[key])
            break
    if step is None:
        step = checkpoints.step_from_name(upload.name)
    try:
        return checkpoints.checkpoint_from_state_dict(problem, state, Path(upload.name).stem, step)
    except ValueError as exc:
        raise UploadError(str(exc)) from None


# -- data ---------------------------------------------------------------------------------------
def read_data(upload: Upload) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``X`` ``(n, ...)`` and labels ``y`` ``(n, ...)`` from an uploaded ``.pt`` or ``.npz``."""
    check_size(upload, MAX_DATA_BYTES, "data file")
    suffix = _suffix(upload, DATA_SUFFIXES, "data file")
    if suffix == ".npz":
        obj = _read_npz(upload)
    else:
        obj = _read_pt(upload)
    X, y = _pick_pair(obj, upload.name)
    return _check_pair(X, y, upload.name)


def _read_pt(upload: Upload):
    try:
        return checkpoints.load_torch(
            upload.data,
            upload.name,
            MAX_DATA_BYTES,
            what="data file",
            hint="(which could run code while loading). Uploads are data only: save tensors, e.g. "
            "torch.save({'X': X, 'y': y}, f).",
        )
    except ValueError as exc:
        raise UploadError(str(exc)) from None


def _read_npz(upload: Upload) -> dict:
    """The arrays of an ``.npz``, after its entries, CRCs and array headers pass the checks."""
    try:
        entries = archives.check_zip(upload.data, upload.name, MAX_DATA_BYTES, "data file")
        archives.npy_headers(upload.data, entries, upload.name, MAX_DATA_BYTES, "data file")
    except archives.ArchiveError as exc:
        raise UploadError(str(exc)) from None
    try:
        with np.load(io.BytesIO(upload.data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise UploadError(
                f"refused to load {upload.name!r}: it holds pickled object arrays; uploads are numeric arrays only."
            ) from None
        raise UploadError(f"data file {upload.name!r} is corrupt or truncated (not a readable .npz): {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UploadError(f"data file {upload.name!r} is corrupt or truncated (not a readable .npz): {exc}") from None


def _pick_pair(obj, name: str):
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return obj[0], obj[1]
    if isinstance(obj, dict):
        X = next((obj[k] for k in INPUT_KEYS if k in obj), None)
        y = next((obj[k] for k in LABEL_KEYS if k in obj), None)
        if X is None and y is None and set(obj) == {"arr_0", "arr_1"}:
            X, y = obj["arr_0"], obj["arr_1"]
        if X is not None and y is not None:
            return X, y
        raise UploadError(
            f"data file {name!r} must hold inputs under one of {', '.join(INPUT_KEYS)} and labels under one of "
            f"{', '.join(LABEL_KEYS)}; its keys are {', '.join(map(repr, list(obj)[:12])) or '(none)'}."
        )
    raise UploadError(f"data file {name!r} holds a {type(obj).__name__}; expected {{'X': inputs, 'y': labels}}.")


def _check_pair(X, y, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = []
    for what, value in (("inputs", X), ("labels", y)):
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise UploadError(f"data file {name!r}: {what} have dtype {value.dtype}; numbers are required.")
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise UploadError(f"data file {name!r}: {what} are a {type(value).__name__}, not a tensor or array.")
        if value.dim() == 0:
            raise UploadError(f"data file {name!r}: {what} are a scalar; expected one row per sample.")
        tensors.append(value)
    X, y = tensors
    if X.shape[0] == 0 or y.shape[0] == 0:
        raise UploadError(f"data file {name!r} is an empty dataset (0 samples); at least one sample is needed.")
    if X.shape[0] != y.shape[0]:
        raise UploadError(f"data file {name!r}: inputs have {X.shape[0]} samples but labels have {y.shape[0]}.")
    for what, t in (("inputs", X), ("labels", y)):
        if t.is_floating_point() and not torch.isfinite(t).all():
            count = int((~torch.isfinite(t)).sum())
            raise UploadError(f"data file {name!r}: {count} {what} entries are NaN or inf.")
    if y.dtype in (torch.int8, torch.int16, torch.int32, torch.uint8):
        y = y.long()
    return X, y


def _check_labels(problem: Problem, X: torch.Tensor, y: torch.Tensor, name: str) -> None:
    """Integer class labels must index the model's logits; say so naming the uploaded file."""
    if y.dim() != 1 or y.is_floating_point():
        return
    first = X[:1].to(problem.device)
    if first.is_floating_point():  # as Problem does: floats take the model's dtype, token ids stay integers
        first = first.to(problem.dtype)
    try:
        with torch.no_grad():
            out = problem.forward(problem.theta0, first)
    except Exception as exc:
        raise UploadError(
            f"data file {name!r}: the model cannot run on its inputs of shape {tuple(X.shape[1:])} per sample: {exc}"
        ) from None
    labelled = y[y != problem.ignore_index]  # labels the loss ignores (-100 by default) are accepted
    if out.dim() == 2 and out.shape[1] >= 2 and labelled.numel():
        low, high = int(labelled.min()), int(labelled.max())
        if low < 0 or high >= out.shape[1]:
            raise UploadError(
                f"data file {name!r} has labels from {low} to {high} but the model outputs {out.shape[1]} classes; "
                f"labels must lie in [0, {out.shape[1] - 1}] (or equal the ignore_index {problem.ignore_index})."
            )


# -- a workspace from uploads ----------------------------------------------------------------
def open_uploads(
    base: Workspace,
    state_dicts: list[Upload] = (),
    train: Upload | None = None,
    val: Upload | None = None,
    name: str | None = None,
) -> Workspace:
    """The workspace ``base`` with uploaded weights and/or data, named ``"<base> + <file names>"``.

    ``state_dicts``: files for ``base``'s architecture, naturally sorted by name; they become
    the checkpoints, and the last one is the base point (model A). ``train``/``val``: data
    files replacing ``base``'s splits (``val`` defaults to ``base``'s when only ``train`` is
    given and shapes match, else none). Loss, metrics, batch size and mode come from ``base``.
    Raises ``UploadError`` (or ``ValueError`` from ``Problem`` for data the model cannot use).
    """
    problem = base.problem
    uploads = sorted(state_dicts, key=lambda u: checkpoints.natural_key(u.name))
    names = [Path(u.name).stem for u in uploads]
    if len(set(names)) != len(names):
        raise UploadError(f"two uploaded state dicts share a name: {sorted({n for n in names if names.count(n) > 1})}.")
    if not uploads and train is None and val is None:
        raise UploadError("nothing uploaded: give at least one state dict or a data file.")
    ckpts = [checkpoint_from_upload(problem, u) for u in uploads]

    splits = {k: (s.X.cpu(), s.y.cpu()) for k, s in problem.splits.items()}
    if train is not None:
        splits["train"] = read_data(train)
        if "val" in splits and splits["val"][0].shape[1:] != splits["train"][0].shape[1:]:
            del splits["val"]
    if val is not None:
        splits["val"] = read_data(val)

    for split, upload in (("train", train), ("val", val)):
        if upload is not None:
            _check_labels(problem, *splits[split], upload.name)
    model = copy.deepcopy(problem.model)
    if ckpts:
        state = checkpoints.state_dict_from_checkpoint(problem, ckpts[-1])
        model.load_state_dict(state, strict=True)
    new = Problem(
        model,
        problem.loss,
        train=splits["train"],
        val=splits.get("val"),
        metrics=problem.metrics,
        batch_size=problem.batch_size,
        mode=problem.mode,
    )
    if not ckpts:
        ckpts = list(base.checkpoints)
    parts = []
    if uploads:
        parts.append(f"{len(uploads)} uploaded state dict(s) ({', '.join(u.name for u in uploads)})")
    if train is not None or val is not None:
        parts.append("uploaded data (" + ", ".join(u.name for u in (train, val) if u is not None) + ")")
    files = [u.name for u in (*uploads, train, val) if u is not None]
    return Workspace(
        name=name or f"{base.name} + {', '.join(files)}",
        problem=new,
        checkpoints=ckpts,
        description=f"{base.name} with {' and '.join(parts)}.",
    )
