"""Checkpoint files: read state dicts safely, turn them into points of a Problem's space, write them back.

Reading is data-only. ``.pt``/``.pth``/``.bin`` files go through ``torch.load(weights_only=True)``,
which refuses any pickle that would construct arbitrary Python objects (and so run code);
``.safetensors`` files hold raw tensors only. Supported layouts of a ``.pt`` file: a bare
``state_dict``, or a dict holding it under ``"state_dict"``, ``"model_state_dict"``, ``"model"``,
``"net"``, ``"module"`` or ``"weights"`` (other entries such as ``"epoch"``/``"step"`` are read as
metadata, an optimizer state is ignored). Keys prefixed by ``module.`` (DataParallel) or
``_orig_mod.`` (``torch.compile``) are matched to the model without them.

Typical use::

    ckpts = load_folder("runs/seed0", problem)          # naturally sorted: epoch_2 before epoch_10
    ckpt = load_checkpoint("final.safetensors", problem)
    save_checkpoint(problem, ckpt, "copy.pt")

Files from outside are read as if an attacker wrote them: a ``.pt`` zip archive first passes
``archives.check_zip`` (no duplicate or overlapping entries, uncompressed content at most
``MAX_CHECKPOINT_BYTES``, every entry's CRC-32 verified, since torch's reader checks none) and
``archives.check_torch_reader`` (torch's reader sees the same entries), then a ``meta`` load
reads the tensors' storage sizes without their bytes and checks them against the same limit;
only then does ``torch.load`` read the weights. See ``load_torch``.

Every failure is a ``ValueError`` that says which file, what is wrong and what is allowed.
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from . import archives
from .workspace import Checkpoint

log = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)
SUFFIXES = TORCH_SUFFIXES + SAFETENSORS_SUFFIXES
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights")
STRIP_PREFIXES = ("module.", "_orig_mod.")
STEP_KEYS = ("step", "epoch", "global_step", "iteration")
_GLOBAL_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST"}  # pickle opcodes that name a class or function
MAX_CHECKPOINT_BYTES = 8 * 2**30  # uncompressed content of one checkpoint file (tensors and pickle)
CHECKPOINT_HINT = (
    "(for example a whole model saved with torch.save(model), or code that would run while loading). For safety "
    "only plain weights are read. Save model.state_dict() with torch.save, or use .safetensors."
)


# -- names and ordering ---------------------------------------------------------------------
def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value: ``epoch_2`` before ``epoch_10``."""
    parts = re.split(r"(\d+)", str(name))
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts if p != "")


def natural_sorted(names) -> list:
    """``names`` (strings or paths) in natural order (see ``natural_key``)."""
    return sorted(names, key=lambda n: natural_key(Path(n).name if isinstance(n, Path) else n))


def step_from_name(name: str) -> int | None:
    """The last integer in a file name (``epoch_12.pt`` -> 12), or ``None``."""
    numbers = re.findall(r"\d+", Path(name).stem)
    return int(numbers[-1]) if numbers else None


def checkpoint_files(folder: str | Path) -> list[Path]:
    """Checkpoint files (``SUFFIXES``) directly inside ``folder``, naturally sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"checkpoint folder {str(folder)!r} does not exist or is not a folder.")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES]
    if not files:
        raise ValueError(f"checkpoint folder {str(folder)!r} holds no checkpoint files ({', '.join(SUFFIXES)}).")
    return natural_sorted(files)


# -- reading files --------------------------------------------------------------------------
def refused_pickle(exc: BaseException, source: archives.Source) -> bool:
    """Whether ``torch.load(weights_only=True)`` of ``source`` (a path or the bytes) failed with
    ``exc`` because the pickle builds Python objects, rather than because the bytes are damaged.

    Torch's weights-only unpickler says "Unsupported global: GLOBAL <name>" (or names a blocked
    GLOBAL, or the ``add_safe_globals`` allowlist) when the file would construct a class or call
    a function: a whole pickled model, or code that would run while loading. Random or damaged
    bytes fail in the same unpickler with other messages ("Unsupported operand 102", ...), and so
    does a plain ``pickle.dump`` (protocol 4+ frames, which that unpickler does not read): for
    those the stream is parsed, never executed (``pickletools.genops``), and it is refused only if
    a complete pickle in it names a global. Shared by checkpoint files and uploaded data files.
    """
    if not isinstance(exc, pickle.UnpicklingError):
        return False
    text = str(exc).lower()
    if "weights only" in text and "global" in text:
        return True
    with archives.opened(source) as stream:
        if stream.read(4) == archives.ZIP_MAGIC:  # a torch zip archive: its pickle was read above and failed
            return False
        stream.seek(0)
        return _names_a_global(stream)


def _names_a_global(stream) -> bool:
    """Whether a complete pickle at the start of ``stream`` (or one after it) refers to a global."""
    while stream.read(1):
        stream.seek(-1, io.SEEK_CUR)
        try:
            names = {op.name for op, _arg, _pos in pickletools.genops(stream)}
        except Exception:  # not (or no longer) a pickle stream: raw storage bytes or damage
            return False
        if names & _GLOBAL_OPCODES:
            return True
    return False


def unpickling_detail(exc: BaseException) -> str:
    """One line saying why the unpickler gave up: the ``WeightsUnpickler error`` itself, else the first sentence."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        lines = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
        if lines and lines[0].strip():
            return lines[0].strip().rstrip(".")
    return text.split(". ")[0].strip() or type(exc).__name__


ZIP_DAMAGE = "its zip archive is cut off or damaged (a file copied or downloaded only in part?)"
NOT_TORCH = "its contents are not a file written by torch.save"


def torch_damage(exc: BaseException, head: bytes = b"") -> str:
    """What is wrong with a file ``torch.load`` could not read, as a person would say it.

    The loader's own words ("Unsupported operand 130", "IndexError: pop from empty list",
    "'utf-8' codec can't decode...") describe its internals, not the file; ``head`` is the
    file's first bytes (a zip signature means a modern torch.save file that was cut off).
    """
    text = str(exc)
    if head.startswith(b"PK") or "zip archive" in text or "central directory" in text:
        return ZIP_DAMAGE
    return NOT_TORCH


def read_file(path: str | Path, max_bytes: int = MAX_CHECKPOINT_BYTES) -> tuple[dict[str, torch.Tensor], dict]:
    """Read one checkpoint file: ``(state_dict, metadata)``, tensors on the CPU.

    ``metadata`` holds plain entries found beside the weights (``epoch``, ``step``...) or the
    safetensors header metadata. ``max_bytes``: the largest content accepted (uncompressed,
    for a zip archive). Raises ``ValueError`` for a missing, corrupt, oversized or unsafe file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        size = path.stat().st_size
        if size > max_bytes:
            raise ValueError(
                f"checkpoint file {path.name!r} is {archives.mib(size)}, over the limit of {archives.mib(max_bytes)}."
            )
        return _read_safetensors(path)
    if suffix not in TORCH_SUFFIXES:
        raise ValueError(f"checkpoint file {path.name!r} has suffix {suffix!r}; allowed are {', '.join(SUFFIXES)}.")
    with open(path, "rb") as f:  # one open file for the checks and the load
        obj = load_torch(f, path.name, max_bytes)
    return _unwrap(obj, path.name)


def load_torch(source: archives.Source, name: str, max_bytes: int, what: str = "checkpoint file", hint: str = ""):
    """``torch.load(weights_only=True)`` of ``source`` (bytes, a path or an open file), after every check.

    A zip archive (``torch.save``'s format) passes ``archives.check_zip`` (uncompressed content at
    most ``max_bytes``, CRC-32 of every entry) and ``archives.check_torch_reader``; a ``meta`` load
    then reads the tensors' storage sizes without their bytes, checked against ``max_bytes``.
    An older non-zip file is stored uncompressed and carries no checksum: its size is checked.
    ``what``/``name`` name the file in messages; ``hint`` ends the refusal of a pickle that builds
    objects (default: the checkpoint advice). Raises ``ValueError``.
    """
    label = f"{what} {name!r}"
    size = archives.source_size(source)
    if size == 0:
        raise ValueError(f"{label} is corrupt or truncated: it is empty (0 bytes).")
    if size > max_bytes:
        raise ValueError(f"{label} is {archives.mib(size)}, over the limit of {archives.mib(max_bytes)}.")
    if archives.is_zip(source):
        entries = archives.check_zip(source, name, max_bytes, what)
        archives.check_torch_reader(source, entries, name, what)
        declared = storage_bytes(_torch_load(source, what, name, hint, map_location="meta"))
        if declared > max_bytes:
            raise ValueError(
                f"{label} declares tensors of {archives.mib(declared)}, over the limit of "
                f"{archives.mib(max_bytes)}; refused before loading."
            )
    return _torch_load(source, what, name, hint, map_location="cpu")


def storage_bytes(obj) -> int:
    """Bytes of the distinct tensor storages inside ``obj`` (nested dicts, lists, tuples)."""
    seen, total, stack = set(), 0, [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            key = getattr(storage, "_checkpoint_offset", None)  # a meta load's record offset
            key = ("record", key) if key is not None else ("object", id(storage), item.data_ptr())
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def _torch_load(source: archives.Source, what: str, name: str, hint: str, map_location: str):
    label = f"{what} {name!r}"
    try:
        with warnings.catch_warnings(), archives.opened(source) as f:
            warnings.simplefilter("ignore")  # protocol notes from the weights-only unpickler
            return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if refused_pickle(exc, source):
            raise ValueError(
                f"refused to load {name!r}: it contains pickled Python objects other than tensors "
                f"{hint or CHECKPOINT_HINT}"
            ) from None
        log.info("torch.load(%s): %s", name, unpickling_detail(exc))
        raise ValueError(
            f"{label} is corrupt or truncated (not a readable PyTorch file): {torch_damage(exc, _zip(source))}."
        ) from None
    except Exception as exc:  # a damaged file can fail anywhere inside the unpickler or the zip reader
        log.info("torch.load(%s): %s: %s", name, type(exc).__name__, exc)
        raise ValueError(
            f"{label} is corrupt or truncated (not a readable PyTorch file): {torch_damage(exc, _zip(source))}."
        ) from None


def _zip(source) -> bytes:
    """The zip signature if ``source`` starts like a zip archive (for ``torch_damage``), else nothing."""
    try:
        return b"PK" if archives.is_zip(source) else b""
    except OSError:
        return b""


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError) as exc:
        log.info("safetensors(%s): %s", path.name, exc)
        raise ValueError(
            f"checkpoint file {path.name!r} is corrupt or truncated (not valid safetensors): its header or tensor "
            "data cannot be read (a damaged file, or not one written by safetensors)."
        ) from None
    if not state:
        raise ValueError(f"checkpoint file {path.name!r} holds no tensors.")
    return state, metadata


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj, filename: str) -> tuple[dict[str, torch.Tensor], dict]:
    if _is_state_dict(obj):
        return dict(obj), {}
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if key in obj and _is_state_dict(obj[key]):
                meta = {k: v for k, v in obj.items() if isinstance(v, (int, float, str, bool)) and k != key}
                return dict(obj[key]), meta
        keys = ", ".join(map(repr, list(obj)[:12]))
        raise ValueError(
            f"checkpoint file {filename!r} is a dict but not a state dict (name -> tensor), and has none under "
            f"{', '.join(WRAPPER_KEYS)}; its keys are: {keys}."
        )
    raise ValueError(f"checkpoint file {filename!r} holds a {type(obj).__name__}, not a state dict (name -> tensor).")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` state dict stored in a ``.pt``/``.pth``/``.bin``/``.safetensors`` file (CPU)."""
    return read_file(path)[0]


# -- state dict <-> Checkpoint ----------------------------------------------------------------
def _strip_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    for prefix in STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def check_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise ``ValueError`` naming every tensor of ``tensors`` that holds NaN or inf."""
    bad = []
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            count = int((~torch.isfinite(t)).sum())
            bad.append(f"{name} ({count} of {t.numel()} entries)")
    if bad:
        raise ValueError(f"{what} has NaN or inf weights in: {', '.join(bad)}; a diverged model cannot be analysed.")


def checkpoint_from_state_dict(
    problem, state_dict: Mapping[str, torch.Tensor], name: str, step: int | None = None
) -> Checkpoint:
    """A ``Checkpoint`` of ``problem``'s space from a state dict of the same architecture.

    Trainable parameters become ``theta`` ``(P,)`` (problem dtype and device); buffers (BatchNorm
    running statistics) become ``buffers`` (buffers absent from the file keep the problem's).
    Frozen parameters must equal the problem's (a point holds only trainable ones).
    Raises ``ValueError`` listing missing, unexpected and mis-shaped keys, or NaN/inf weights.
    """
    if not _is_state_dict(state_dict):
        raise ValueError(f"state_dict for {name!r} must be a non-empty mapping name -> tensor.")
    reference = problem.model.state_dict()
    state = _strip_prefixes(dict(state_dict), set(reference))
    missing = [k for k in reference if k not in state]
    unexpected = [k for k in state if k not in reference]
    misshaped = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(reference[k].shape)}"
        for k in reference
        if k in state and tuple(state[k].shape) != tuple(reference[k].shape)
    ]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected)}")
        if misshaped:
            parts.append(f"mis-shaped: {'; '.join(misshaped)}")
        raise ValueError(f"checkpoint {name!r} does not match the model's architecture ({' | '.join(parts)}).")
    check_finite(state, f"checkpoint {name!r}")
    space = problem.space
    for frozen_name, value in space.frozen.items():
        if not torch.equal(state[frozen_name].to(value.device, value.dtype), value):
            raise ValueError(
                f"checkpoint {name!r} changes the frozen parameter {frozen_name!r}; a checkpoint of this problem may "
                "only differ in trainable parameters (requires_grad=True)."
            )
    theta = space.flatten({p.name: state[p.name] for p in space.params}).to(problem.device, problem.dtype).clone()
    buffers = {k: v.detach().clone() for k, v in problem.buffers.items()}
    for key in space.buffer_names:
        if key in state:
            like = buffers.get(key)
            tensor = state[key].detach()
            buffers[key] = tensor.to(like.device, like.dtype).clone() if like is not None else tensor.clone()
    return Checkpoint(name=name, theta=theta, buffers=buffers or None, step=step)


def state_dict_from_checkpoint(problem, checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The full state dict (trainable + frozen parameters + buffers) of ``checkpoint``, CPU tensors."""
    problem.space.check(checkpoint.theta, f"checkpoint {checkpoint.name!r}")
    params = problem.space.unflatten(checkpoint.theta.detach())
    buffers = problem.buffers if checkpoint.buffers is None else {**problem.buffers, **checkpoint.buffers}
    out = {}
    for key, value in problem.model.state_dict().items():
        tensor = params.get(key, problem.space.frozen.get(key, buffers.get(key, value)))
        out[key] = tensor.detach().to("cpu").contiguous().clone()
    return out


def load_checkpoint(path: str | Path, problem, name: str | None = None, step: int | None = None) -> Checkpoint:
    """Read one file and convert it for ``problem``. ``name`` defaults to the file stem; ``step`` to the
    file's ``step``/``epoch`` entry, else the last number in the file name."""
    path = Path(path)
    state, meta = read_file(path)
    if step is None:
        for key in STEP_KEYS:
            if key in meta:
                try:
                    step = int(meta[key])
                    break
                except (TypeError, ValueError):
                    pass
        else:
            step = step_from_name(path.name)
    return checkpoint_from_state_dict(problem, state, name or path.stem, step)


def load_folder(folder: str | Path, problem) -> list[Checkpoint]:
    """All checkpoint files directly in ``folder`` as ``Checkpoint``s, in natural order of file names.

    Files with the same stem (``e1.pt`` and ``e1.safetensors``) would be ambiguous and are refused.
    """
    files = checkpoint_files(folder)
    stems = [f.stem for f in files]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise ValueError(f"checkpoint folder {str(folder)!r} has several files per name: {', '.join(dupes)}.")
    return [load_checkpoint(f, problem) for f in files]


def save_checkpoint(problem, checkpoint: Checkpoint, path: str | Path) -> Path:
    """Write ``checkpoint`` as a full state dict to ``.pt``/``.pth`` (``torch.save``) or ``.safetensors``.

    The file loads back with ``load_checkpoint`` (and into the model with ``load_state_dict``).
    Written atomically (a ``.part`` file renamed into place).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".pt", ".pth", ".safetensors"):
        raise ValueError(f"path must end in .pt, .pth or .safetensors; got {path.name!r}.")
    state = state_dict_from_checkpoint(problem, checkpoint)
    tmp = path.with_name(path.name + ".part")
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        meta = {"name": checkpoint.name}
        if checkpoint.step is not None:
            meta["step"] = str(int(checkpoint.step))
        save_file(state, str(tmp), metadata=meta)
    else:
        payload: dict = {"state_dict": state, "name": checkpoint.name}
        if checkpoint.step is not None:
            payload["step"] = int(checkpoint.step)
        torch.save(payload, tmp)
    tmp.replace(path)
    return path
