"""Hostile files for the security tests, built in memory in well under a second each.

* ``differential_pt2(program, marker)``: a ``.pt2`` holding its weights config twice. Python's
  ``zipfile`` reads the benign copy (the last); torch's reader reads the first, which marks the
  weights as pickled and points at a pickle that creates ``marker`` when unpickled.
* ``npz_bomb(mib)`` / ``pt_bomb(mib, storage_bytes=None)``: deflated archives of well under 1 MiB that unpack to
  ``mib`` MiB of zeros (an ``.npz`` with a float32 array, a ``torch.save`` file with one tensor).
  The deflate stream is built from one repeated block, so nothing large is ever allocated.
* ``aliased_entry(data, of, name)``: a zip whose central directory lists a second entry at the
  offset of entry ``of`` (same name: a duplicate; another name: a header that disagrees).
* ``overlapping_zip(outer, members)``: well-formed entries whose bytes overlap (``outer`` holds
  the others' complete records).
* ``flip_bit(data, suffix)``: the zip ``data`` with one bit flipped in the stored bytes of the
  first entry whose name ends with ``suffix`` (its CRC left as it was).
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

_ONE_MIB = bytes(2**20)


class _CreatesFile:
    """Unpickling this opens ``path`` for writing, so the file appearing proves code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _deflate(prefix: bytes, zeros: int) -> tuple[bytes, int, int]:
    """Raw deflate of ``prefix`` + ``zeros`` zero bytes: ``(stream, crc32, size)``, built from one block."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [compressor.compress(prefix), compressor.flush(zlib.Z_FULL_FLUSH)]
    crc = zlib.crc32(prefix)
    whole, rest = divmod(zeros, len(_ONE_MIB))
    if whole:
        block = compressor.compress(_ONE_MIB) + compressor.flush(zlib.Z_FULL_FLUSH)
        parts.append(block * whole)  # after a full flush the next MiB compresses to the same bytes
        for _ in range(whole):
            crc = zlib.crc32(_ONE_MIB, crc)
    parts.append(compressor.compress(bytes(rest)) + compressor.flush(zlib.Z_FINISH))
    crc = zlib.crc32(bytes(rest), crc)
    return b"".join(parts), crc & 0xFFFFFFFF, len(prefix) + zeros


def zip_bytes(members: list[tuple[str, bytes | tuple[bytes, int]]]) -> bytes:
    """A deflated zip of ``members``: ``(name, content)`` with content bytes or ``(prefix, zero_count)``."""
    out, central = io.BytesIO(), []
    for name, content in members:
        prefix, zeros = content if isinstance(content, tuple) else (content, 0)
        stream, crc, size = _deflate(prefix, zeros)
        raw = name.encode()
        offset = out.tell()
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(stream), size, len(raw), 0))
        out.write(raw + stream)
        central.append(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                20,
                20,
                0,
                8,
                0,
                0x21,
                crc,
                len(stream),
                size,
                len(raw),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + raw
        )
    start = out.tell()
    for record in central:
        out.write(record)
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), out.tell() - start, start, 0))
    return out.getvalue()


def npz_bomb(mib: int) -> bytes:
    """An ``.npz`` (``X`` float32 of ``mib`` MiB of zeros, ``y`` int64) that is a few hundred KiB deflated."""
    n = mib * 2**20 // 4
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
    labels = io.BytesIO()
    np.save(labels, np.zeros(n, dtype=np.int8)[:8].astype(np.int64))
    return zip_bytes([("X.npy", (header.getvalue(), n * 4)), ("y.npy", labels.getvalue())])


def pt_bomb(mib: int, storage_bytes: int | None = None) -> bytes:
    """A ``torch.save`` file of ``{"X": float32 zeros of mib MiB, "y": 8 int64}``, deflated to a few hundred KiB.

    ``storage_bytes``: write only this many bytes for ``X``'s storage (its pickle still declares
    ``mib`` MiB), the declared-size case rather than the deflate one.
    """
    n = mib * 2**20 // 4
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bomb.pt"
        with torch.serialization.skip_data():  # the layout without writing (or touching) the storage bytes
            torch.save({"X": torch.empty(n), "y": torch.empty(8, dtype=torch.long)}, path)
        members = []
        with open(path, "rb") as f, zipfile.ZipFile(f) as archive:
            for info in archive.infolist():
                if "/data/" in info.filename and not info.filename.endswith(".pkl"):
                    size = info.file_size
                    if storage_bytes is not None and info.filename.endswith("/data/0"):
                        size = storage_bytes
                    members.append((info.filename, (b"", size)))  # storage bytes: zeros
                    continue
                f.seek(info.header_offset)
                fields = struct.unpack("<4s5H3L2H", f.read(30))
                f.seek(info.header_offset + 30 + fields[-2] + fields[-1])
                members.append((info.filename, f.read(info.file_size)))
    return zip_bytes(members)


def differential_pt2(program: bytes, marker) -> bytes:
    """``program`` (a ``torch.export.save`` archive) with a second weights config torch reads first."""
    source = zipfile.ZipFile(io.BytesIO(program))
    config_name = next(n for n in source.namelist() if n.endswith("_weights_config.json"))
    root = config_name.split("/", 1)[0]
    benign = source.read(config_name)
    config = json.loads(benign)
    for meta in config["config"].values():
        meta["use_pickle"] = True
        meta["path_name"] = "weight_payload"
    others = [(i.filename, source.read(i.filename)) for i in source.infolist() if i.filename != config_name]
    others.append((f"{root}/data/weights/weight_payload", pickle.dumps(_CreatesFile(marker))))
    for position in range(len(others) + 1):  # torch's reader bisects sorted names: some positions win
        entries = [*others[:position], (config_name, json.dumps(config).encode()), *others[position:]]
        entries.append((config_name, benign))  # zipfile takes this (last) copy
        out = io.BytesIO()
        with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as archive:
            warnings.simplefilter("ignore")  # zipfile's "Duplicate name" warning: the duplicate is the point
            for name, content in entries:
                archive.writestr(name, content)
        if torch_reads_first_copy(out.getvalue()):
            return out.getvalue()
    raise AssertionError("no layout makes torch's reader take the first copy")


def torch_reads_first_copy(data: bytes) -> bool:
    """Whether torch's reader returns the pickled (first) weights config of ``differential_pt2``."""
    reader = torch._C.PyTorchFileReader(io.BytesIO(data))
    name = next(r for r in reader.get_all_records() if r.endswith("_weights_config.json"))
    return any(meta["use_pickle"] for meta in json.loads(reader.get_record(name))["config"].values())


def aliased_entry(data: bytes, of: str, name: str) -> bytes:
    """``data`` plus a central-directory entry ``name`` (same length as ``of``) pointing at ``of``'s bytes."""
    if len(name) != len(of):
        raise ValueError("the alias must have as many characters as the entry it copies.")
    end = data.rindex(b"PK\x05\x06")
    fields = list(struct.unpack("<4s4H2LH", data[end : end + 22]))
    start, size = fields[6], fields[5]
    directory = data[start : start + size]
    found = directory.index(b"PK\x01\x02", max(0, directory.index(of.encode()) - 46))
    length = 46 + len(of)
    alias = directory[found : found + length].replace(of.encode(), name.encode())
    fields[3] += 1
    fields[4] += 1
    fields[5] += len(alias)
    return data[:start] + directory + alias + struct.pack("<4s4H2LH", *fields) + data[end + 22 :]


def _local_record(name: str, content: bytes) -> bytes:
    raw = name.encode()
    crc = zlib.crc32(content) & 0xFFFFFFFF
    size = len(content)
    return struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0x21, crc, size, size, len(raw), 0) + raw + content


def overlapping_zip(outer: str, members: list[tuple[str, bytes]]) -> bytes:
    """A stored zip whose entry ``outer`` holds, as its own bytes, the complete records of ``members``,
    which the central directory lists as entries too: every entry is well formed, but they overlap."""
    inner = [_local_record(name, content) for name, content in members]
    body = b"".join(inner)
    records, offsets = [_local_record(outer, body)], [0]
    position = 30 + len(outer.encode())
    for record in inner:
        offsets.append(position)
        position += len(record)
    out = io.BytesIO()
    start = out.write(records[0])
    for (name, content), offset in zip([(outer, body), *members], offsets, strict=True):
        raw = name.encode()
        crc = zlib.crc32(content) & 0xFFFFFFFF
        out.write(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                20,
                20,
                0,
                0,
                0,
                0x21,
                crc,
                len(content),
                len(content),
                len(raw),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + raw
        )
    count = len(members) + 1
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, out.tell() - start, start, 0))
    return out.getvalue()


def flip_bit(data: bytes, suffix: str) -> bytes:
    """``data`` with the lowest bit of the middle stored byte of the entry ending with ``suffix`` flipped."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    fields = struct.unpack("<4s5H3L2H", data[info.header_offset : info.header_offset + 30])
    position = info.header_offset + 30 + fields[-2] + fields[-1] + info.compress_size // 2
    return data[:position] + bytes([data[position] ^ 1]) + data[position + 1 :]
