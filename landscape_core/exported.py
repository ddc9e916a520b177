"""``torch.export`` programs (``.pt2``) as models with no code: scanned, then evaluated at any theta.

Finding (torch 2.13): ``torch.export.load(f).module()`` gives a ``GraphModule`` whose
parameters and buffers are ordinary named tensors, so ``torch.func.functional_call`` runs
it at perturbed parameters, differentiably and under ``vmap``; on a Conv+BatchNorm+Linear
net its outputs match the original module exactly at random perturbations (see
tests/test_uploads.py). Two things stand in the way and are handled here:

* the module refuses ``.train()``/``.eval()`` (``NotImplementedError``), which ``Problem``
  calls; ``module_from_program`` replaces them on the instance: the program keeps the mode
  it was exported in, so a program exported in training mode (it mutates BatchNorm
  buffers) is refused and eval mode is the only mode.
* ``torch.export.load`` is not a data reader. Its docstring warns it uses pickle; payloads
  flagged ``use_pickle`` and custom objects go through ``torch.load(weights_only=False)`` /
  ``pickle.loads``; sample inputs fall back to ``weights_only=False`` when the safe load
  fails; ``guards_code`` strings are compiled into Python; symbolic-shape strings go through
  ``sympy.sympify`` (which evaluates Python); and node targets resolve any ``torch.*``
  attribute path (``torch.serialization.os.system`` included). So uploaded bytes are
  **scanned first** (``scan_program``) and every part must be on an allowlist: no pickled
  payload, no custom/opaque object, no AOTInductor code, no guard code, no entry that
  ``torch.export.save`` does not write, sample inputs readable with ``weights_only=True``,
  every call target a ``torch.ops.aten``/``prims`` operator (file-touching ones excluded) or a
  plain ``_operator`` function, and every symbolic expression made of symbols, numbers and
  arithmetic. The scan reads the archive the way torch does: ``archives.check_zip`` refuses
  duplicate or overlapping entries (Python's ``zipfile`` keeps the last copy of a name, torch's
  reader may keep the first, so a scanner reading one and a loader reading the other would
  disagree), bounds the unpacked size and verifies every CRC; every part is then read with
  torch's own reader (``torch._C.PyTorchFileReader``), after checking that it sees the same
  entries at the same offsets. Finally ``torch.export.load`` never sees the uploaded bytes:
  it reads an archive written afresh from the checked parts (JSON re-serialized from the
  checked objects, raw tensor payloads, sample inputs re-saved from plain tensors), which has
  nothing any of its pickle paths would read. What then runs is a graph of tensor
  operators, as when evaluating any model.

Limits: parameter kinds come from names only (``ParamSpace`` sees no module types in a
program), so a BatchNorm weight counts as a weight, not a norm parameter, for "ignore
norm" in random directions; the exported batch dimension must be dynamic for batches of
other sizes.
"""

from __future__ import annotations

import io
import json
import re
import types
import zipfile
from dataclasses import dataclass

import torch
from torch import nn

from . import archives, checkpoints

MAX_PROGRAM_BYTES = 200 * 2**20

_OPERATOR_NAMESPACES = ("torch.ops.aten.", "torch.ops.prims.")
_PLAIN_OPERATORS = re.compile(r"^_operator\.(getitem|add|sub|mul|truediv|floordiv|mod|neg|pow|eq|ne|lt|le|gt|ge)$")
_DENIED_OPERATOR = re.compile(r"file|save|load|print|storage|_local_scalar_dense_ext|set_\.|record_stream", re.I)
_SYMBOL_FUNCTIONS = {
    "Symbol",
    "Integer",
    "Rational",
    "Float",
    "Add",
    "Mul",
    "Pow",
    "Max",
    "Min",
    "Mod",
    "FloorDiv",
    "CeilDiv",
    "CleanDiv",
    "ModularIndexing",
    "PythonMod",
    "IntTrueDiv",
    "FloatTrueDiv",
    "TruncToFloat",
    "oo",
    "True",
    "False",
    "positive",
    "integer",
    "nonnegative",
    "real",
    "finite",
}
_EXPR_CHARS = re.compile(r"^[A-Za-z0-9_\s+\-*/%(),.'=<>!]*$")
_TREESPEC_TYPES = {None, "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict"}


class ProgramError(ValueError):
    """A ``.pt2`` file was refused or cannot be used; the message says why."""


def _walk(obj, key=None):
    """Yield ``(key, value)`` for every dict entry of a nested JSON object."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from _walk(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v, key)


def _check_expr(text: str, name: str) -> None:
    if not _EXPR_CHARS.match(text) or "__" in text:
        raise ProgramError(f"{name}: a symbolic shape expression holds characters outside arithmetic: {text[:80]!r}.")
    for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", re.sub(r"'[^']*'", "", text)):
        if not (word in _SYMBOL_FUNCTIONS or re.fullmatch(r"[suqcz]\d+", word)):
            raise ProgramError(f"{name}: a symbolic shape expression uses {word!r}, which is not plain arithmetic.")
    for quoted in re.findall(r"'([^']*)'", text):
        if not re.fullmatch(r"[suqcz]\d+", quoted):
            raise ProgramError(f"{name}: a symbolic shape names the symbol {quoted!r}; expected names like s0.")


_FIXED_RECORDS = ("archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id")
_PAYLOAD_NAMES = {"weights": re.compile(r"^weight_\d+$"), "constants": re.compile(r"^tensor_\d+$")}


@dataclass(frozen=True)
class _Checked:
    """The parts of a scanned archive, as torch's reader gave them, ready to be written afresh."""

    model_name: str
    program: dict
    configs: dict
    payloads: dict
    sample_inputs: object
    fixed: dict
    operators: list


def scan_program(data: bytes, name: str = "program.pt2") -> dict:
    """Check a ``.pt2`` archive against the allowlist (module docstring) without loading it.

    Returns ``{"operators": sorted targets}``. Raises ``ProgramError`` naming the first refused part.
    """
    return {"operators": _check(data, name).operators}


def _check(data: bytes, name: str) -> _Checked:
    """Every check of ``scan_program``; the parts are read with torch's own reader, so they are
    exactly the bytes ``torch.export.load`` would read from this archive."""
    if len(data) > MAX_PROGRAM_BYTES:
        raise ProgramError(f"{name!r} is {len(data) / 2**20:.1f} MiB, over the limit of {MAX_PROGRAM_BYTES >> 20} MiB.")
    if not archives.is_zip(data):
        raise ProgramError(f"{name!r} is not a torch.export archive (not a zip file); save with torch.export.save.")
    try:
        entries = archives.check_zip(data, name, MAX_PROGRAM_BYTES, "program")
        reader = archives.check_torch_reader(data, entries, name, "program")
    except archives.ArchiveError as exc:
        raise ProgramError(str(exc)) from None
    records = set(reader.get_all_records())
    models = sorted(r for r in records if r.startswith("models/") and r.endswith(".json"))
    if len(models) != 1:
        raise ProgramError(f"{name!r} must hold exactly one exported program; found {len(models)}.")
    model_name = models[0][len("models/") : -len(".json")]
    if not re.fullmatch(r"[A-Za-z0-9_]+", model_name):
        raise ProgramError(f"{name!r}: its program is named {model_name!r}; expected a plain name such as 'model'.")

    def read(record: str) -> bytes:
        if record not in records:
            raise ProgramError(f"{name!r} is incomplete or corrupt: it has no {record}.")
        return reader.get_record(record)

    def read_json(record: str):
        try:
            return json.loads(read(record))
        except ValueError:
            raise ProgramError(f"{name!r} is incomplete or corrupt: cannot read {record}.") from None

    configs, payloads = {}, {}
    for kind in ("weights", "constants"):
        record = f"data/{kind}/{model_name}_{kind}_config.json"
        config = read_json(record)
        entries_of_kind = config.get("config") if isinstance(config, dict) else None
        if not isinstance(entries_of_kind, dict):
            raise ProgramError(f"{name!r} is incomplete or corrupt: {record} holds no config.")
        for fqn, meta in entries_of_kind.items():
            path_name = meta.get("path_name") if isinstance(meta, dict) else None
            if (
                not isinstance(meta, dict)
                or meta.get("use_pickle") is not False
                or not isinstance(path_name, str)
                or not _PAYLOAD_NAMES[kind].match(path_name)
                or not isinstance(meta.get("tensor_meta"), dict)
            ):
                raise ProgramError(f"{name!r}: {kind[:-1]} {fqn!r} is stored as a pickle or custom object; refused.")
            payloads[f"data/{kind}/{path_name}"] = read(f"data/{kind}/{path_name}")
        configs[record] = config
    sample = f"data/sample_inputs/{model_name}.pt"
    try:
        sample_inputs = checkpoints.load_torch(read(sample), f"{name}: {sample}", MAX_PROGRAM_BYTES, what="program")
    except ValueError as exc:
        if isinstance(exc, ProgramError):
            raise
        raise ProgramError(
            f"{name!r}: its sample inputs are not plain tensors (they would need pickle): {exc}"
        ) from None
    fixed = {r: read(r) for r in _FIXED_RECORDS if r in records}
    if fixed.get("archive_format") != b"pt2":
        raise ProgramError(f"{name!r} is not a torch.export archive (no archive_format 'pt2').")
    expected = {*fixed, *configs, *payloads, sample, models[0]}
    for record in sorted(records - expected):
        if record.startswith(("data/aotinductor", "data/mtia", "data/executorch", "extra/")) or record.endswith(".so"):
            raise ProgramError(
                f"{name!r} holds compiled or extra code ({record}); only plain exported programs are read."
            )
        if record in (f"data/weights/{model_name}.pt", f"data/constants/{model_name}.pt"):
            raise ProgramError(f"{name!r} uses the legacy pickled weight format; re-save it with torch.export.save.")
        raise ProgramError(
            f"{name!r} holds the entry {record!r}, which torch.export.save does not write for a plain program; refused."
        )
    program = read_json(models[0])
    operators = _scan_graph(program, name)
    return _Checked(model_name, program, configs, payloads, sample_inputs, fixed, operators)


def _scan_graph(program, name: str) -> list[str]:
    """Call targets of the program's graph, after the allowlist checks of every part of its JSON."""
    if not isinstance(program, dict):
        raise ProgramError(f"{name!r} is incomplete or corrupt: its program is not a JSON object.")
    if program.get("guards_code"):
        raise ProgramError(f"{name!r} carries Python guard code; refused (export without guards code).")
    operators = set()
    for key, value in _walk(program):
        if key == "target" and isinstance(value, str):
            ok = value.startswith(_OPERATOR_NAMESPACES) or _PLAIN_OPERATORS.match(value)
            if not ok or _DENIED_OPERATOR.search(value):
                raise ProgramError(f"{name!r} calls {value!r}, which is not an allowed tensor operator.")
            operators.add(value)
        elif key == "expr_str" and isinstance(value, str):
            _check_expr(value, repr(name))
        elif key in ("in_spec", "out_spec") and isinstance(value, str):
            for type_name in re.findall(r'"type":\s*("[^"]*"|null)', value):
                if json.loads(type_name) not in _TREESPEC_TYPES:
                    raise ProgramError(f"{name!r}: inputs/outputs use the container type {type_name}; refused.")
    if not operators:
        raise ProgramError(f"{name!r} holds an empty graph.")
    return sorted(operators)


def _rewrite(checked: _Checked) -> bytes:
    """A new archive holding only the checked parts: the JSON written from the parsed (checked)
    objects, the raw tensor payloads, and sample inputs saved afresh from plain tensors. It has no
    entry that any pickle path of ``torch.export.load`` reads (no ``use_pickle`` payload, custom
    object, legacy weights file, top-level ``version`` for the old-format fallback)."""
    sample = io.BytesIO()
    torch.save(checked.sample_inputs, sample)
    parts = {
        **checked.fixed,
        f"models/{checked.model_name}.json": json.dumps(checked.program).encode(),
        **{record: json.dumps(config).encode() for record, config in checked.configs.items()},
        **checked.payloads,
        f"data/sample_inputs/{checked.model_name}.pt": sample.getvalue(),
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for record, content in parts.items():
            archive.writestr(f"archive/{record}", content)
    return out.getvalue()


_TRAINING_FLAG = {"batch_norm": 5, "dropout": 2, "feature_dropout": 2, "alpha_dropout": 2}


def _training_ops(program) -> list[str]:
    """Operators of ``program`` that only make sense in training mode (batch statistics, dropout,
    in-place updates of buffers)."""
    found = []
    if program.graph_signature.buffers_to_mutate:
        found.extend(f"updates {b}" for b in program.graph_signature.buffers_to_mutate.values())
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        op = getattr(node.target, "_opname", "") or str(node.target)
        index = _TRAINING_FLAG.get(op)
        if index is not None and len(node.args) > index and node.args[index] is True:
            found.append(f"{op} in training mode")
        elif op.endswith("_") and not op.startswith("_"):
            found.append(f"in-place {op}")
    return sorted(set(found))


def _no_mode_change(self, mode: bool = True):
    if mode:
        raise ValueError(
            "an exported program runs in the mode it was exported in (eval); training mode is not available."
        )
    return self


def module_from_program(data: bytes, name: str = "program.pt2") -> nn.Module:
    """Scan, load and return the program's module, ready for ``Problem`` (eval mode only).

    ``torch.export.load`` never sees the uploaded bytes: it reads an archive written afresh from
    the checked parts (``_rewrite``), so what it reads is exactly what was checked.
    """
    clean = _rewrite(_check(data, name))
    try:
        program = torch.export.load(io.BytesIO(clean))
    except Exception as exc:
        raise ProgramError(f"{name!r} could not be loaded by torch.export.load: {type(exc).__name__}: {exc}") from None
    training = _training_ops(program)
    if training:
        raise ProgramError(
            f"{name!r} was exported in training mode ({', '.join(training)}); its values would depend on the batch "
            "and change its buffers. Call model.eval() before torch.export.export."
        )
    module = program.module()
    module.train = types.MethodType(_no_mode_change, module)
    module.eval = types.MethodType(lambda self: self, module)
    return module


LOSSES = {"cross_entropy": torch.nn.functional.cross_entropy, "mse": torch.nn.functional.mse_loss}


def program_workspace(program, train, val=None, loss: str = "cross_entropy", name: str | None = None):
    """A ``Workspace`` from an uploaded ``.pt2`` and data uploads (``uploads.Upload``), with no code.

    ``loss``: ``"cross_entropy"`` (integer class labels; accuracy is added) or ``"mse"``.
    """
    from .problem import Problem
    from .uploads import check_size, read_data
    from .workspace import Workspace

    if loss not in LOSSES:
        raise ProgramError(f"loss must be one of {sorted(LOSSES)}; got {loss!r}.")
    check_size(program, MAX_PROGRAM_BYTES, "program")
    module = module_from_program(program.data, program.name)
    splits = {"train": read_data(train)}
    if val is not None:
        splits["val"] = read_data(val)
    problem = Problem(module, LOSSES[loss], train=splits["train"], val=splits.get("val"))
    return Workspace(
        name=name or f"program {program.name}",
        problem=problem,
        description=f"The exported program {program.name} ({loss} loss) on uploaded data.",
    )
