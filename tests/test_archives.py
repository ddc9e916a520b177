"""Archives from outside: the .pt2 reader differential, zip bombs, overlapping entries, CRCs (issue 10)."""

import io
import pickle
import time
import tracemalloc
import zipfile

import crafted
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import archives, checkpoints, exported, uploads
from landscape_core.problem import Problem
from landscape_core.uploads import Upload, UploadError


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()


@pytest.fixture(scope="module")
def program():
    program = torch.export.export(small_net(), (torch.randn(5, 3),), dynamic_shapes=({0: torch.export.Dim("b")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def pt_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def data_upload(name="d.pt"):
    X = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    return Upload(name, pt_bytes({"X": X, "y": (X[:, 0] > 0).long()}))


# -- .pt2: the scanner and torch read the same bytes, and no pickle path sees them ------------------
def test_pt2_with_a_second_weights_config_is_refused_before_any_code_runs(program, tmp_path):
    marker = tmp_path / "code_ran"
    evil = crafted.differential_pt2(program, marker)
    assert crafted.torch_reads_first_copy(evil)  # the differential is real: torch would read the pickled copy
    assert b'"use_pickle": false' in zipfile.ZipFile(io.BytesIO(evil)).read(
        "archive/data/weights/model_weights_config.json"
    )
    with pytest.raises(
        exported.ProgramError, match="'evil.pt2' holds the entry .*model_weights_config.json.* more than once"
    ):
        exported.program_workspace(Upload("evil.pt2", evil), data_upload())
    with pytest.raises(exported.ProgramError, match="more than once"):
        exported.scan_program(evil, "evil.pt2")
    assert not marker.exists()


def test_a_good_program_loads_through_no_pickle_path(program, monkeypatch):
    real_load = torch.load

    def weights_only_load(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "torch.load without weights_only=True"
        return real_load(*args, **kwargs)

    def never(*args, **kwargs):
        raise AssertionError("a pickle path of torch.export.load was taken")

    monkeypatch.setattr(torch, "load", weights_only_load)
    monkeypatch.setattr(pickle, "loads", never)
    monkeypatch.setattr(pickle, "Unpickler", never)
    monkeypatch.setattr(torch._C, "_pickle_load_obj", never)
    module = exported.module_from_program(program, "net.pt2")
    X = torch.randn(7, 3)
    torch.testing.assert_close(module(X), small_net()(X))


def test_pt2_entries_torch_does_not_write_are_refused(program):
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(program)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info.filename))
        target.writestr("archive/data/weights/weight_payload", pickle.dumps({"anything": 1}))
    with pytest.raises(exported.ProgramError, match="holds the entry 'data/weights/weight_payload', which torch"):
        exported.scan_program(out.getvalue(), "extra.pt2")


def test_pt2_with_a_second_name_for_one_entry_is_refused(program):
    config = "archive/data/weights/model_weights_config.json"
    aliased = crafted.aliased_entry(program, config, config[:-1] + "x")
    with pytest.raises(exported.ProgramError, match="local header of entry .*config.jsox' disagrees"):
        exported.scan_program(aliased, "alias.pt2")
    source = zipfile.ZipFile(io.BytesIO(program))
    members = [(i.filename, source.read(i.filename)) for i in source.infolist()]
    overlapping = crafted.overlapping_zip("archive/pad", members)
    with pytest.raises(exported.ProgramError, match="overlap"):
        exported.scan_program(overlapping, "overlap.pt2")


def test_pt2_bit_flip_is_refused_as_damaged(program):
    with pytest.raises(exported.ProgramError, match=r"damaged: the checksum \(CRC-32\) of its entry .*weight_0"):
        exported.scan_program(crafted.flip_bit(program, "weights/weight_0"), "flipped.pt2")


# -- zip bombs ----------------------------------------------------------------------------------------
def _refused_fast(read, upload, monkeypatch, loaders):
    """``read(upload)`` raises UploadError naming the limit, without calling ``loaders`` or allocating much."""

    def never(*args, **kwargs):
        raise AssertionError("the archive was loaded before its sizes were checked")

    for owner, name in loaders:
        monkeypatch.setattr(owner, name, never)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(UploadError, match=r"unpacks to 256\.0 MiB .* over the limit of 200\.0 MiB"):
            read(upload)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated while refusing"
    return seconds


def test_deflated_npz_bomb_is_refused_before_loading(monkeypatch):
    bomb = crafted.npz_bomb(256)
    assert len(bomb) < 2**20  # a few hundred KiB that would become 256 MiB
    seconds = _refused_fast(uploads.read_data, Upload("bomb.npz", bomb), monkeypatch, [(np, "load")])
    assert seconds < 30  # no inflating happened (the old code spent minutes on a 2 GiB bomb)


@pytest.mark.parametrize("read", [uploads.read_data, uploads.read_state_dict], ids=["data", "state dict"])
def test_deflated_pt_bomb_is_refused_before_loading(monkeypatch, read):
    bomb = crafted.pt_bomb(256)
    assert len(bomb) < 2**20
    assert archives.check_zip(bomb, "b", 2**30)  # a valid archive (CRCs right) under a larger limit
    _refused_fast(read, Upload("bomb.pt", bomb), monkeypatch, [(torch, "load")])


def test_storage_sizes_are_checked_without_reading_them(tmp_path):
    lying = crafted.pt_bomb(256, storage_bytes=64)  # the pickle declares 256 MiB, the record holds 64 bytes
    with pytest.raises(ValueError, match=r"'lie.pt' declares tensors of 256\.0 MiB, over the limit of 200\.0 MiB"):
        checkpoints.load_torch(lying, "lie.pt", 200 * 2**20)
    fine = pt_bytes({"w": torch.arange(1000.0)})
    assert checkpoints.storage_bytes(checkpoints.load_torch(fine, "fine.pt", 2**20)) == 4000
    with pytest.raises(ValueError, match=r"'fine.pt' is .* bytes, over the limit of 1,000 bytes"):
        checkpoints.load_torch(fine, "fine.pt", 1000)


def test_checkpoint_files_have_a_stated_limit(tmp_path):
    (tmp_path / "bomb.pt").write_bytes(crafted.pt_bomb(256))
    with pytest.raises(ValueError, match=r"checkpoint file 'bomb.pt' unpacks to 256\.0 MiB .*limit of 64\.0 MiB"):
        checkpoints.read_file(tmp_path / "bomb.pt", max_bytes=64 * 2**20)
    assert checkpoints.MAX_CHECKPOINT_BYTES == 8 * 2**30


def test_npy_header_that_does_not_fit_its_entry_is_refused():
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**6,)})
    labels = io.BytesIO()
    np.save(labels, np.zeros(4, dtype=np.int64))
    lying = crafted.zip_bytes([("X.npy", header.getvalue() + bytes(32)), ("y.npy", labels.getvalue())])
    with pytest.raises(
        UploadError, match=r"'lie.npz' is damaged: the header of array 'X.npy' declares shape \(1000000,\)"
    ):
        uploads.read_data(Upload("lie.npz", lying))


# -- duplicate and overlapping entries, CRCs ----------------------------------------------------------
def test_duplicate_and_overlapping_entries_are_refused_in_every_archive():
    X, y = torch.randn(8, 3), torch.zeros(8, dtype=torch.long)
    buffer = io.BytesIO()
    np.savez(buffer, X=X.numpy(), y=y.numpy())
    npz = buffer.getvalue()
    npz_members = [(n, zipfile.ZipFile(io.BytesIO(npz)).read(n)) for n in ("X.npy", "y.npy")]
    with pytest.raises(UploadError, match="'overlap.npz': the bytes of entry 'pad' overlap entry 'X.npy'"):
        uploads.read_data(Upload("overlap.npz", crafted.overlapping_zip("pad", npz_members)))
    with pytest.raises(UploadError, match="holds the entry 'X.npy' more than once"):
        uploads.read_data(Upload("twice.npz", crafted.aliased_entry(npz, "X.npy", "X.npy")))
    with pytest.raises(UploadError, match="local header of entry 'Z.npy' disagrees"):
        uploads.read_data(Upload("alias.npz", crafted.aliased_entry(npz, "X.npy", "Z.npy")))
    pt = pt_bytes({"X": X, "y": y})
    source = zipfile.ZipFile(io.BytesIO(pt))
    root = source.namelist()[0].split("/")[0]
    pt_members = [(i.filename, source.read(i.filename)) for i in source.infolist()]
    with pytest.raises(UploadError, match="overlap"):
        uploads.read_data(Upload("overlap.pt", crafted.overlapping_zip(f"{root}/pad", pt_members)))
    with pytest.raises(UploadError, match="more than once"):
        uploads.read_data(Upload("twice.pt", crafted.aliased_entry(pt, f"{root}/data/0", f"{root}/data/0")))


def test_bit_flipped_checkpoint_is_refused_as_damaged(tmp_path):
    state = small_net().state_dict()
    good = pt_bytes(state)
    flipped = crafted.flip_bit(good, "/data/0")
    changed = torch.load(io.BytesIO(flipped), weights_only=True)  # torch alone loads it, with a changed weight
    assert not torch.equal(changed["0.weight"], state["0.weight"])
    (tmp_path / "flipped.pt").write_bytes(flipped)
    with pytest.raises(ValueError, match=r"'flipped.pt' is damaged: the checksum \(CRC-32\) of its entry"):
        checkpoints.read_file(tmp_path / "flipped.pt")
    with pytest.raises(UploadError, match=r"'flipped.pt' is damaged"):
        uploads.read_state_dict(Upload("flipped.pt", flipped))
    with pytest.raises(UploadError, match=r"'flipped.pt' is damaged"):
        uploads.read_data(
            Upload("flipped.pt", crafted.flip_bit(pt_bytes({"X": torch.randn(8, 3), "y": torch.zeros(8)}), "/data/0"))
        )
    (tmp_path / "good.pt").write_bytes(good)
    assert torch.equal(checkpoints.read_file(tmp_path / "good.pt")[0]["0.weight"], state["0.weight"])


def test_torch_must_see_the_checked_layout():
    pt = pt_bytes({"w": torch.ones(3)})
    with pytest.raises(UploadError, match="corrupt or truncated|damaged|disagree"):
        uploads.read_data(Upload("prefixed.pt", b"PK\x03\x04" + b"\0" * 60 + pt))


def test_uploads_and_checkpoints_still_load(tmp_path):
    problem = Problem(small_net(), F.cross_entropy, train=(torch.randn(10, 3), torch.zeros(10, dtype=torch.long)))
    state = {k: v + 1 for k, v in small_net().state_dict().items()}
    ckpt = uploads.checkpoint_from_upload(problem, Upload("e_3.pt", pt_bytes({"model": state, "epoch": 3})))
    assert ckpt.step == 3 and torch.equal(ckpt.theta, problem.space.flatten(state))
    X, y = uploads.read_data(data_upload())
    assert X.shape == (16, 3) and y.dtype == torch.long


def test_stored_results_are_checked_before_loading(monkeypatch):
    from landscape_core.surface import Surface

    monkeypatch.setattr(archives, "MAX_STORED_NPZ_BYTES", 64 * 2**20)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("loaded before the sizes were checked"))
    with pytest.raises(archives.ArchiveError, match=r"stored result 'Surface' unpacks to 256\.0 MiB .* 64\.0 MiB"):
        Surface.from_bytes(crafted.npz_bomb(256))
