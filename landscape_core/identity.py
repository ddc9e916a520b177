"""Identity of a loss or metric: one digest over everything that changes what it computes.

A cache key that names the loss only by its type would serve ``nn.CrossEntropyLoss()``'s
plane to ``nn.CrossEntropyLoss(label_smoothing=0.2)``. ``fingerprint(fn)`` walks the
callable and hashes:

* a Python function: its module and qualified name, its code (bytecode, constants, names,
  nested code objects, recursively), its defaults, its closure cells and the globals its
  code loads (constants, tensors, other functions, recursively);
* ``functools.partial``: the function, its arguments and keywords; a bound method: the
  function and the object;
* an object (an ``nn.Module`` loss, a callable instance): its class (methods' code for
  classes outside the trusted packages) and its state: parameters, buffers and every
  attribute (``weight``, ``ignore_index``, ``label_smoothing``, ``reduction``...);
* a function, class or C builtin of a trusted package (torch, numpy, scipy, the standard
  library's math/operator/functools/builtins) that is importable under its own name: that
  name and the package's version.

Whatever cannot be pinned down (a lambda closing over a lock or a generator, a C builtin
that is not importable under its name, an object with no readable state) raises
``Unidentifiable``; ``describe`` then says so with ``UNKNOWN_IDENTITY`` and the cache
computes such requests without storing them.

>>> describe(torch.nn.CrossEntropyLoss(label_smoothing=0.2), "the loss")["sha256"][:8]  # doctest: +SKIP
"""

from __future__ import annotations

import dis
import enum
import functools
import hashlib
import importlib
import sys
import types
from collections.abc import Callable

import numpy as np
import torch


def raw_bytes(t: torch.Tensor) -> memoryview | bytes:
    """The bytes of ``t``'s values in C order, for a hash (``hashlib``'s ``update``), without
    copying a CPU-contiguous tensor: the same bytes as ``t.numpy().tobytes()``. On a
    22.7M-parameter model the ``tobytes`` copies were half of a cold plane's hashing time."""
    data = t.detach().cpu().contiguous()
    if not data.numel():
        return b""
    return memoryview(data.reshape(-1).view(torch.uint8).numpy())


UNKNOWN_IDENTITY = "identity_unknown"
TRUSTED_PACKAGES = frozenset(
    {"torch", "numpy", "scipy", "math", "operator", "_operator", "functools", "_functools", "builtins"}
)
MAX_DEPTH = 60
MAX_OBJECTS = 50_000
_SCALARS = (type(None), bool, int, str, bytes, type(Ellipsis), complex)
_C_CALLABLES = (
    types.BuiltinFunctionType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.ClassMethodDescriptorType,
    np.ufunc,
)


class Unidentifiable(Exception):
    """The callable's identity cannot be established; the message says what stops it."""


def qualified_name(obj) -> str:
    """``module.qualname`` of a function or class, of the class of an object, ``partial(...)``."""
    if isinstance(obj, functools.partial):
        return f"partial({qualified_name(obj.func)})"
    own_name = isinstance(getattr(obj, "__name__", None), str) and isinstance(getattr(obj, "__module__", None), str)
    target = obj if own_name or isinstance(obj, (type, types.FunctionType, *_C_CALLABLES)) else type(obj)
    module = getattr(target, "__module__", None) or getattr(getattr(target, "__objclass__", None), "__module__", "")
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", type(target).__name__)
    return f"{module}.{name}" if module else str(name)


def fingerprint(fn) -> str:
    """sha256 over everything that changes what ``fn`` computes; raises ``Unidentifiable``."""
    walker = _Walker()
    walker.tag("python", *sys.version_info[:2])
    walker.walk(fn, 0)
    return walker.hash.hexdigest()


def describe(fn, what: str = "the loss") -> dict:
    """JSON-ready identity for result settings and cache keys.

    ``{"name": ..., "sha256": ...}``; when the identity cannot be established,
    ``{"name": ..., UNKNOWN_IDENTITY: "<what> (<name>) cannot be identified: <why>"}``.
    """
    name = qualified_name(fn)
    try:
        return {"name": name, "sha256": fingerprint(fn)}
    except Unidentifiable as exc:
        return {"name": name, UNKNOWN_IDENTITY: f"{what} ({name}) cannot be identified: {exc}"}
    except RecursionError:
        return {"name": name, UNKNOWN_IDENTITY: f"{what} ({name}) cannot be identified: it nests too deeply"}


def _package_version(module: str) -> str:
    top = module.split(".", 1)[0]
    return str(getattr(sys.modules.get(top), "__version__", None) or sys.version.split()[0])


def _importable_as_itself(obj, module: str | None, qualname: str | None) -> bool:
    """Whether ``import module; module.<qualname>`` gives ``obj`` back (a stable name)."""
    if not module or not qualname or "<" in qualname:
        return False
    try:
        target = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except Exception:
        return False
    return target is obj or (isinstance(obj, _C_CALLABLES) and target == obj)


class _Walker:
    def __init__(self):
        self.hash = hashlib.sha256()
        self.seen: dict[int, int] = {}
        self.keep: list = []  # keeps walked objects alive so their ids stay unique

    def tag(self, *parts) -> None:
        for part in parts:
            self.hash.update(str(part).encode())
            self.hash.update(b"\x1f")
        self.hash.update(b"\x1e")

    def _first_visit(self, obj) -> bool:
        index = self.seen.get(id(obj))
        if index is not None:
            self.tag("ref", index)
            return False
        if len(self.seen) >= MAX_OBJECTS:
            raise Unidentifiable(f"it reaches more than {MAX_OBJECTS} objects")
        self.seen[id(obj)] = len(self.seen)
        self.keep.append(obj)
        return True

    def walk(self, obj, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise Unidentifiable("it nests too deeply")
        depth += 1
        if type(obj) in _SCALARS:
            self.tag(type(obj).__name__, repr(obj))
        elif type(obj) is float:
            self.tag("float", obj.hex())
        elif isinstance(obj, enum.Enum):
            self.tag("enum", qualified_name(type(obj)), obj.name)
        elif isinstance(obj, (torch.dtype, torch.device, torch.Size, torch.layout)):
            self.tag(type(obj).__name__, str(obj))
        elif isinstance(obj, torch.Tensor):
            self._tensor(obj)
        elif isinstance(obj, (np.ndarray, np.generic)):
            self._array(obj)
        elif isinstance(obj, types.ModuleType):
            self.tag("module", obj.__name__, _package_version(obj.__name__))
        elif not self._first_visit(obj):
            return
        elif isinstance(obj, (tuple, list)):
            self.tag(type(obj).__name__, len(obj))
            for item in obj:
                self.walk(item, depth)
        elif isinstance(obj, dict):
            self._mapping(obj, depth)
        elif isinstance(obj, (set, frozenset)):
            self._set(obj)
        elif isinstance(obj, functools.partial):
            self.tag("partial")
            for part in (obj.func, obj.args, obj.keywords):
                self.walk(part, depth)
        elif isinstance(obj, types.MethodType):
            self.tag("method")
            self.walk(obj.__func__, depth)
            self.walk(obj.__self__, depth)
        elif isinstance(obj, types.FunctionType):
            self._function(obj, depth)
        elif isinstance(obj, type):
            self._class(obj, depth)
        elif isinstance(obj, _C_CALLABLES):
            self._c_callable(obj)
        elif isinstance(obj, (staticmethod, classmethod)):
            self.tag(type(obj).__name__)
            self.walk(obj.__func__, depth)
        elif isinstance(obj, property):
            self.tag("property")
            for part in (obj.fget, obj.fset):
                self.walk(part, depth)
        elif callable(obj) and getattr(obj, "__name__", None) and self._named(obj):
            pass  # e.g. numpy's dispatchers: a trusted package's function object
        elif hasattr(obj, "__dict__") and not hasattr(type(obj), "__slots__"):
            self.tag("object")
            self._class(type(obj), depth)
            self._mapping(vars(obj), depth)
        else:
            raise Unidentifiable(f"it holds a {qualified_name(type(obj))} object whose state cannot be read")

    def _tensor(self, t: torch.Tensor) -> None:
        if t.is_meta or t.layout is not torch.strided:
            raise Unidentifiable(f"it holds a {t.layout} tensor on {t.device}")
        data = t.detach().cpu().contiguous()
        self.tag("tensor", data.dtype, tuple(data.shape))
        self.hash.update(raw_bytes(data))

    def _array(self, a) -> None:
        a = np.asarray(a)
        if a.dtype.hasobject:
            raise Unidentifiable("it holds a numpy array of Python objects")
        self.tag("array", a.dtype.str, a.shape)
        self.hash.update(np.ascontiguousarray(a).tobytes())

    def _mapping(self, mapping: dict, depth: int) -> None:
        items = list(mapping.items())
        if all(type(k) is str for k, _ in items):
            items.sort(key=lambda kv: kv[0])
        self.tag("dict", len(items))
        for key, value in items:
            self.walk(key, depth)
            self.walk(value, depth)

    def _set(self, values) -> None:
        if not all(type(v) in (*_SCALARS, float) for v in values):
            raise Unidentifiable("it holds a set of objects that have no stable order")
        self.tag(type(values).__name__, *sorted(repr(v) for v in values))

    def _named(self, obj) -> bool:
        """Tag a function, class or builtin of a trusted package by its importable name."""
        module = getattr(obj, "__module__", None) or getattr(getattr(obj, "__objclass__", None), "__module__", None)
        qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if not module or module.split(".", 1)[0] not in TRUSTED_PACKAGES:
            return False
        if isinstance(obj, _C_CALLABLES) and getattr(obj, "__objclass__", None) is not None:
            qualname = f"{obj.__objclass__.__qualname__}.{obj.__name__}"
            module = obj.__objclass__.__module__
            stable = _importable_as_itself(obj.__objclass__, module, obj.__objclass__.__qualname__)
        else:
            stable = _importable_as_itself(obj, module, qualname)
            if not stable and isinstance(getattr(obj, "__name__", None), str):  # torch.add: qualname of a C class
                qualname = obj.__name__
                stable = _importable_as_itself(obj, module, qualname)
        if not stable:
            return False
        self.tag("named", module, qualname, _package_version(module))
        return True

    def _c_callable(self, obj) -> None:
        if self._named(obj):
            return
        module = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if isinstance(obj, _C_CALLABLES) and _importable_as_itself(obj, module, qualname):
            self.tag("builtin", module, qualname, _package_version(module))
            return
        raise Unidentifiable(f"it calls {qualified_name(obj)}, a compiled callable that is not importable by its name")

    def _function(self, fn: types.FunctionType, depth: int) -> None:
        if self._named(fn):
            return
        self.tag("function", fn.__module__, fn.__qualname__)
        self._code(fn.__code__)
        self.walk(fn.__defaults__, depth)
        self.walk(fn.__kwdefaults__, depth)
        for cell in fn.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:
                self.tag("empty cell")
                continue
            self.walk(value, depth)
        scope = fn.__globals__
        builtins = scope.get("__builtins__", {})
        builtins = vars(builtins) if isinstance(builtins, types.ModuleType) else builtins
        for name in sorted(_global_names(fn.__code__)):
            if name in scope:
                self.tag("global", name)
                self.walk(scope[name], depth)
            elif name in builtins:
                self.tag("builtin name", name)
            else:
                self.tag("unbound", name)

    def _code(self, code: types.CodeType) -> None:
        self.tag("code", code.co_argcount, code.co_kwonlyargcount, code.co_flags, code.co_names, code.co_varnames)
        self.hash.update(code.co_code)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self._code(const)
            elif type(const) in (*_SCALARS, float):
                self.walk(const, 0)
            else:  # tuples and frozensets of constants
                self.tag("const", type(const).__name__, repr(const))

    def _class(self, cls: type, depth: int) -> None:
        if self._named(cls):
            return
        self.tag("class", cls.__module__, cls.__qualname__)
        for base in cls.__bases__:
            if base is not object:
                self.walk(base, depth)
        for name, value in sorted(vars(cls).items()):
            if name in ("__dict__", "__weakref__", "__doc__", "__module__", "__qualname__", "__annotations__"):
                continue
            if isinstance(value, (types.FunctionType, staticmethod, classmethod, property, functools.partial)):
                self.tag("attribute", name)
                self.walk(value, depth)
            elif _plain(value):
                self.tag("attribute", name, repr(value))


def _plain(value) -> bool:
    """A scalar or a tuple/frozenset of scalars (its ``repr`` is stable across processes)."""
    if type(value) in (*_SCALARS, float):
        return True
    return isinstance(value, (tuple, frozenset)) and all(_plain(v) for v in value)


def _global_names(code: types.CodeType) -> set[str]:
    """Names a code object (and the code nested in it) loads from the module's globals."""
    names = set()
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(instruction.argval, str):
            names.add(instruction.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def describe_all(functions: dict[str, Callable], what: str = "the metric") -> dict:
    """``describe`` of each named callable (metrics), keyed by name."""
    return {name: describe(fn, f"{what} {name!r}") for name, fn in sorted(functions.items())}
