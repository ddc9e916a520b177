"""Untrusted zip archives (``.pt``, ``.pt2``, ``.npz``): structure, sizes and checksums, checked before reading.

Three readers see these archives and none of them is a guard: Python's ``zipfile`` (numpy's
``.npz``) keeps the last of two entries with one name while torch's reader (miniz, behind
``torch.load`` and ``torch.export.load``) may keep the first; torch's reader does not check
CRCs, so a flipped bit becomes a changed weight; and a deflated entry of a few MiB can
unpack to GiBs. So ``check_zip`` runs first on every archive from outside and refuses:

* duplicate names, entries whose bytes overlap another entry or the central directory,
  local headers that disagree with the central directory, encryption, and compression
  other than stored or deflated;
* uncompressed content over the caller's stated limit. The declared sizes are checked
  before a single byte is inflated: both ``zipfile`` and torch's reader stop at (or
  refuse anything past) the declared size, so it bounds what either can produce;
* any member whose CRC-32 does not match (``zipfile.ZipFile.testzip``: every member is
  inflated once, in 1 MiB chunks, after the size check).

``check_torch_reader`` then opens the archive with torch's own reader and requires that it
sees the same entries at the same byte offsets, so the bytes checked are the bytes torch
reads. ``npy_headers`` reads the shape and dtype of every array of an ``.npz`` from its
``.npy`` header alone (nothing is allocated) and checks them against the entry's size.

Every refusal is an ``ArchiveError`` (a ``ValueError``) naming the file, what is wrong and
what is allowed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ZIP_MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature, versions, flags, method, time, date, crc, sizes, lengths
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}

Source = bytes | str | os.PathLike | io.IOBase


class ArchiveError(ValueError):
    """A zip archive from outside was refused; the message says which file and why."""


@dataclass(frozen=True)
class Entry:
    """One member of a checked archive: where its stored bytes start and how large it is.

    ``data_offset``: byte offset of its (compressed) data in the archive; ``compressed_size``
    and ``size`` (uncompressed, as declared and verified by the CRC pass), in bytes.
    """

    name: str
    data_offset: int
    compressed_size: int
    size: int


def mib(n: int) -> str:
    """``n`` bytes as a short string for messages: ``"1.50 GiB"``, ``"200.0 MiB"``, ``"4,000 bytes"``."""
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n:,} bytes"


@contextlib.contextmanager
def opened(source: Source):
    """A seekable binary file object over ``source`` (bytes, a path, or an open file: rewound, not closed)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            yield f
    else:
        source.seek(0)
        yield source
        source.seek(0)


def source_size(source: Source) -> int:
    """Size in bytes of ``source`` (bytes, a path, or a seekable file)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    if isinstance(source, (str, os.PathLike)):
        return Path(source).stat().st_size
    position = source.tell()
    size = source.seek(0, io.SEEK_END)
    source.seek(position)
    return size


def is_zip(source: Source) -> bool:
    """Whether ``source`` starts like a zip archive (the test ``torch.load`` and ``numpy.load`` make)."""
    with opened(source) as f:
        return f.read(4) == ZIP_MAGIC


def _local_name(raw: bytes, flags: int) -> str:
    return raw.decode("utf-8" if flags & 0x800 else "cp437")


def check_zip(source: Source, name: str, max_bytes: int, what: str = "file") -> dict[str, Entry]:
    """Check the zip archive ``source`` (see the module docstring); returns ``{entry name: Entry}``.

    ``max_bytes``: the largest total uncompressed content accepted. ``what`` and ``name`` name
    the file in messages ("data file 'train.npz' ..."). Raises ``ArchiveError``.
    """
    label = f"{what} {name!r}"
    with opened(source) as f:
        try:
            archive = zipfile.ZipFile(f)
            infos = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, struct.error) as exc:
            log.info("zip %s: %s: %s", name, type(exc).__name__, exc)
            raise ArchiveError(
                f"{label} is corrupt or truncated (not a readable zip archive): it is cut off or damaged (a file "
                "copied or downloaded only in part?)."
            ) from None
        if not infos:
            raise ArchiveError(f"{label} is an empty zip archive.")
        names = [i.filename for i in infos]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ArchiveError(
                f"{label} holds the entry {duplicates[0]!r} more than once; archives with duplicate entries are "
                "refused (zip readers disagree on which copy counts)."
            )
        for info in infos:
            if info.flag_bits & 0x1:
                raise ArchiveError(f"{label}: entry {info.filename!r} is encrypted; only plain archives are read.")
            if info.compress_type not in _METHODS:
                raise ArchiveError(
                    f"{label}: entry {info.filename!r} uses compression method {info.compress_type}; only stored "
                    "and deflated entries are read."
                )
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            largest = max(infos, key=lambda i: i.file_size)
            raise ArchiveError(
                f"{label} unpacks to {mib(total)} ({largest.filename!r} alone {mib(largest.file_size)}, from "
                f"{mib(source_size(f))} compressed), over the limit of {mib(max_bytes)} of uncompressed content; "
                "refused before unpacking."
            )
        entries = _layout(f, archive, infos, label)
        try:
            bad = archive.testzip()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
            log.info("zip %s: %s: %s", name, type(exc).__name__, exc)
            raise ArchiveError(f"{label} is damaged: the compressed data of an entry cannot be unpacked.") from None
        if bad is not None:
            raise ArchiveError(
                f"{label} is damaged: the checksum (CRC-32) of its entry {bad!r} does not match its bytes; the "
                "file was changed or corrupted after it was saved."
            )
    return entries


def _layout(f, archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], label: str) -> dict[str, Entry]:
    """Each entry's data range from its local header; refuse overlaps and headers that disagree."""
    end_of_file = f.seek(0, io.SEEK_END)
    entries = {}
    for info in infos:
        f.seek(info.header_offset)
        raw = f.read(_LOCAL_HEADER.size)
        if len(raw) != _LOCAL_HEADER.size:
            raise ArchiveError(f"{label} is damaged: entry {info.filename!r} points past the end of the file.")
        signature, _, flags, method, _, _, _, _, _, name_length, extra_length = _LOCAL_HEADER.unpack(raw)
        local_name = f.read(name_length)
        if (
            signature != ZIP_MAGIC
            or _local_name(local_name, flags) != info.orig_filename
            or method != info.compress_type
        ):
            raise ArchiveError(
                f"{label} is damaged: the local header of entry {info.filename!r} disagrees with the central "
                "directory; such archives are refused (zip readers disagree on which one counts)."
            )
        start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        entries[info.filename] = Entry(info.filename, start, info.compress_size, info.file_size)
    spans = sorted(((info.header_offset, entries[info.filename]) for info in infos), key=lambda span: span[0])
    central_directory = getattr(archive, "start_dir", end_of_file)
    for (_, entry), (next_start, following) in zip(spans, [*spans[1:], (central_directory, None)], strict=True):
        end = entry.data_offset + entry.compressed_size
        if end > next_start:
            other = f"entry {following.name!r}" if following is not None else "the central directory"
            raise ArchiveError(
                f"{label}: the bytes of entry {entry.name!r} overlap {other}; archives with overlapping entries "
                "are refused."
            )
    return entries


def check_torch_reader(source: Source, entries: dict[str, Entry], name: str, what: str = "file"):
    """Open ``source`` with torch's own zip reader and require that it sees exactly ``entries``.

    ``entries``: from ``check_zip`` on the same bytes. Every record torch lists must be one of
    them, under one top-level folder, with its data at the same byte offset, so what was
    checked is what torch reads. Returns the reader (``torch._C.PyTorchFileReader``).
    """
    import torch

    label = f"{what} {name!r}"
    roots = {n.split("/", 1)[0] for n in entries}
    if len(roots) != 1 or any("/" not in n for n in entries):
        raise ArchiveError(f"{label} is not a PyTorch archive: its entries are not all in one top-level folder.")
    root = roots.pop()
    expected = {n[len(root) + 1 :]: e for n, e in entries.items()}
    try:
        reader = torch._C.PyTorchFileReader(
            io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else _torch_path_or_file(source)
        )
        records = reader.get_all_records()
        offsets = {r: reader.get_record_offset(r) for r in records}
    except Exception as exc:  # torch's reader raises RuntimeError with miniz's words
        raise ArchiveError(
            f"{label} is damaged: PyTorch cannot read it as an archive ({str(exc).splitlines()[0][:160]})."
        ) from None
    if sorted(records) != sorted(expected) or any(offsets[r] != expected[r].data_offset for r in records):
        raise ArchiveError(
            f"{label}: PyTorch's reader and the checked layout disagree on the entries of this archive; refused."
        )
    return reader


def _torch_path_or_file(source):
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    source.seek(0)
    return source


@dataclass(frozen=True)
class ArrayHeader:
    """The header of one ``.npy`` member: ``shape``, ``dtype``, and ``nbytes`` of array data."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int


def npy_headers(source: Source, entries: dict[str, Entry], name: str, max_bytes: int, what: str = "file"):
    """Headers of the ``.npy`` arrays in a checked ``.npz`` (``entries`` from ``check_zip``), nothing loaded.

    Refuses object (pickled) arrays, header versions other than 1.0/2.0, a header whose array
    would not fit its entry exactly, and arrays larger than ``max_bytes`` in total.
    Returns ``[ArrayHeader, ...]`` in archive order.
    """
    label = f"{what} {name!r}"
    headers = []
    with opened(source) as f, zipfile.ZipFile(f) as archive:
        for entry in entries.values():
            with archive.open(entry.name) as member:
                if member.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                    continue  # numpy returns such a member as raw bytes, bounded by its checked size
                try:
                    version = (member.read(1)[0], member.read(1)[0])
                    if version == (1, 0):
                        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(member)
                    elif version == (2, 0):
                        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise ArchiveError(
                            f"{label}: array {entry.name!r} uses .npy format {version[0]}.{version[1]}; numeric "
                            "arrays are read in formats 1.0 and 2.0 (what numpy.savez writes)."
                        )
                except (ValueError, IndexError, SyntaxError, TypeError) as exc:
                    if isinstance(exc, ArchiveError):
                        raise
                    log.info("npy header %s/%s: %s", name, entry.name, exc)
                    raise ArchiveError(
                        f"{label}: array {entry.name!r} has a damaged header (not the .npy layout numpy.savez writes)."
                    ) from None
                header_length = member.tell()
            if dtype.hasobject:
                raise ArchiveError(
                    f"refused to load {name!r}: it holds pickled object arrays ({entry.name!r}); uploads are "
                    "numeric arrays only."
                )
            nbytes = math.prod(shape) * dtype.itemsize
            if header_length + nbytes != entry.size:
                raise ArchiveError(
                    f"{label} is damaged: the header of array {entry.name!r} declares shape {tuple(shape)} of "
                    f"{dtype} ({mib(nbytes)}) but its entry holds {mib(max(entry.size - header_length, 0))}."
                )
            headers.append(ArrayHeader(entry.name, tuple(shape), dtype, nbytes))
    total = sum(h.nbytes for h in headers)
    if total > max_bytes:
        raise ArchiveError(
            f"{label} declares arrays of {mib(total)}, over the limit of {mib(max_bytes)}; refused before loading."
        )
    return headers


MAX_STORED_NPZ_BYTES = 2**30  # a result or demo run read back from the cache or a saved .npz file


def open_npz(data: bytes, name: str, max_bytes: int | None = None, what: str = "stored result"):
    """``numpy.load(allow_pickle=False)`` of the ``.npz`` bytes ``data``, after ``check_zip`` and ``npy_headers``.

    For npz bytes read back from the cache or a file (which anyone able to write there could
    have planted): a bomb, a damaged entry or an object array is refused (``ArchiveError``)
    before any array is allocated. ``max_bytes`` defaults to ``MAX_STORED_NPZ_BYTES``. Use as a
    context manager, like ``numpy.load``.
    """
    max_bytes = MAX_STORED_NPZ_BYTES if max_bytes is None else max_bytes
    entries = check_zip(data, name, max_bytes, what)
    npy_headers(data, entries, name, max_bytes, what)
    return np.load(io.BytesIO(data), allow_pickle=False)
