"""Checkpoint files: safe loading, layouts, natural order, architecture checks, round trips."""

import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from landscape_core import Problem, checkpoints, uploads
from landscape_core.evaluate import evaluate_points
from landscape_core.workspace import Checkpoint


def bn_net(width=6, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, 2)).double()


@pytest.fixture(scope="module")
def problem():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    return Problem(bn_net(), nn.functional.cross_entropy, (X, y))


def trained_state(seed=1):
    """A state dict with non-default running statistics."""
    net = bn_net(seed=seed)
    net.train()
    with torch.no_grad():
        net(torch.randn(50, 3, dtype=torch.float64) * 2 + 1)
    return net.state_dict()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_round_trip_gives_identical_evaluate_values(problem, tmp_path, suffix):
    ckpt = checkpoints.checkpoint_from_state_dict(problem, trained_state(), "epoch_3", step=3)
    assert not torch.equal(ckpt.buffers["1.running_mean"], problem.buffers["1.running_mean"])
    path = checkpoints.save_checkpoint(problem, ckpt, tmp_path / f"epoch_3{suffix}")
    loaded = checkpoints.load_checkpoint(path, problem)
    assert loaded.name == "epoch_3" and loaded.step == 3
    assert torch.equal(loaded.theta, ckpt.theta)
    for k, v in ckpt.buffers.items():
        assert torch.equal(loaded.buffers[k], v), k
    before = evaluate_points(problem, ckpt.theta, None, None, buffers=ckpt.buffers)
    after = evaluate_points(problem, loaded.theta, None, None, buffers=loaded.buffers)
    for q in before:
        assert before[q][0] == after[q][0], q
    # the written file is an ordinary state dict for the model
    model = bn_net()
    model.load_state_dict(checkpoints.load_state_dict(path))


def test_layouts_prefixes_and_metadata(problem, tmp_path):
    state = trained_state()
    torch.save(state, tmp_path / "bare.pt")
    torch.save({"model": state, "epoch": 7, "optimizer": {"lr": 0.1}}, tmp_path / "wrapped.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ddp.pt")
    reference = checkpoints.checkpoint_from_state_dict(problem, state, "ref")
    for name, step in (("bare.pt", None), ("wrapped.pth", 7), ("ddp.pt", None)):
        ckpt = checkpoints.load_checkpoint(tmp_path / name, problem)
        assert torch.equal(ckpt.theta, reference.theta), name
        assert ckpt.step == step, name
    assert checkpoints.load_state_dict(tmp_path / "wrapped.pth").keys() == state.keys()


def test_natural_sort_and_folders(problem, tmp_path):
    names = ["epoch_10.pt", "epoch_2.pt", "epoch_1.safetensors", "notes.txt"]
    for name in names:
        if name.endswith(".txt"):
            (tmp_path / name).write_text("not a checkpoint")
            continue
        ckpt = checkpoints.checkpoint_from_state_dict(problem, trained_state(len(name)), name.split(".")[0])
        checkpoints.save_checkpoint(problem, Checkpoint(ckpt.name, ckpt.theta, ckpt.buffers), tmp_path / name)
    assert checkpoints.natural_sorted(["epoch_10", "epoch_2", "Epoch_1b", "epoch_1"]) == [
        "epoch_1",
        "Epoch_1b",
        "epoch_2",
        "epoch_10",
    ]
    loaded = checkpoints.load_folder(tmp_path, problem)
    assert [c.name for c in loaded] == ["epoch_1", "epoch_2", "epoch_10"]
    assert [c.step for c in loaded] == [1, 2, 10]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no checkpoint files"):
        checkpoints.load_folder(tmp_path / "empty", problem)
    with pytest.raises(ValueError, match="does not exist"):
        checkpoints.load_folder(tmp_path / "nowhere", problem)
    checkpoints.save_checkpoint(problem, loaded[0], tmp_path / "epoch_2.safetensors")
    with pytest.raises(ValueError, match="several files per name: epoch_2"):
        checkpoints.load_folder(tmp_path, problem)


def test_architecture_mismatch_lists_keys_and_shapes(problem):
    wider = bn_net(width=8).state_dict()
    with pytest.raises(ValueError) as info:
        checkpoints.checkpoint_from_state_dict(problem, wider, "wide")
    message = str(info.value)
    assert "does not match the model's architecture" in message
    assert "0.weight: file (8, 3) vs model (6, 3)" in message
    assert "1.running_mean: file (8,) vs model (6,)" in message
    other = {k: v for k, v in trained_state().items() if k != "3.bias"}
    other["head.weight"] = torch.zeros(2, 6)
    with pytest.raises(ValueError, match=r"missing keys: 3\.bias \| unexpected keys: head\.weight"):
        checkpoints.checkpoint_from_state_dict(problem, other, "renamed")


def test_nan_weights_are_refused(problem):
    state = trained_state()
    state["0.weight"][0, 0] = float("nan")
    state["3.bias"][1] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or inf weights in: 0\.weight \(1 of 18 entries\), 3\.bias"):
        checkpoints.checkpoint_from_state_dict(problem, state, "diverged")


class _RunsCode:
    """A pickle payload that would create a folder when unpickled (never should be)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize(
    "data",
    [bytes(range(256)) * 8, np.random.default_rng(0).bytes(4096), b"\x80\x02" + np.random.default_rng(1).bytes(4000)],
    ids=["byte-ramp", "random", "pickle-header-then-random"],
)
def test_random_bytes_are_corrupt_not_refused(tmp_path, data):
    """Torch's weights-only unpickler rejects these with "Unsupported operand": damaged, not unsafe."""
    (tmp_path / "garbage.pt").write_bytes(data)
    with pytest.raises(ValueError, match=r"'garbage\.pt' is corrupt or truncated .*: its contents are not a file"):
        checkpoints.read_file(tmp_path / "garbage.pt")
    upload = uploads.Upload("garbage.pt", data)
    for read in (uploads.read_data, uploads.read_state_dict):
        with pytest.raises(uploads.UploadError, match=r"'garbage\.pt' is corrupt or truncated"):
            read(upload)


def test_unsafe_and_broken_files(problem, tmp_path):
    marker = str(tmp_path / "code-ran")
    torch.save({"weights": _RunsCode(marker)}, tmp_path / "evil.pt")
    with open(tmp_path / "evil_plain.pt", "wb") as f:
        pickle.dump({"w": _RunsCode(marker)}, f)
    for name in ("evil.pt", "evil_plain.pt"):
        with pytest.raises(ValueError, match="refused to load .*code that would run"):
            checkpoints.load_state_dict(tmp_path / name)
    assert not os.path.exists(marker)
    torch.save(bn_net(), tmp_path / "whole_model.pt")
    with pytest.raises(ValueError, match="whole model saved with torch.save"):
        checkpoints.load_state_dict(tmp_path / "whole_model.pt")

    torch.save(trained_state(), tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"this is not a checkpoint")
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("truncated.pt", "garbage.pt", "empty.pt"):
        with pytest.raises(ValueError, match="corrupt"):
            checkpoints.load_state_dict(tmp_path / name)
    checkpoints.save_checkpoint(
        problem, checkpoints.checkpoint_from_state_dict(problem, trained_state(), "s"), tmp_path / "s.safetensors"
    )
    data = (tmp_path / "s.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-8])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        checkpoints.load_state_dict(tmp_path / "cut.safetensors")
    with pytest.raises(ValueError, match="does not exist"):
        checkpoints.load_state_dict(tmp_path / "missing.pt")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="suffix '.onnx'"):
        checkpoints.load_state_dict(tmp_path / "model.onnx")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta_only.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        checkpoints.load_state_dict(tmp_path / "meta_only.pt")
    with pytest.raises(ValueError, match="must end in"):
        checkpoints.save_checkpoint(problem, Checkpoint("x", problem.theta0), tmp_path / "x.npz")


def test_frozen_parameters_must_match(tmp_path):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    model = bn_net()
    model[0].weight.requires_grad_(False)
    frozen_problem = Problem(model, nn.functional.cross_entropy, (X, (X[:, 0] > 0).long()))
    state = model.state_dict()
    ckpt = checkpoints.checkpoint_from_state_dict(frozen_problem, state, "same")
    assert ckpt.theta.shape == (frozen_problem.space.size,)
    state = {k: v.clone() for k, v in state.items()}
    state["0.weight"] += 1
    with pytest.raises(ValueError, match="frozen parameter '0.weight'"):
        checkpoints.checkpoint_from_state_dict(frozen_problem, state, "changed")
    np.testing.assert_equal(checkpoints.step_from_name("run3_epoch_12.pt"), 12)


INTERNALS = ("Error", "operand", "pop from", "codec", "PytorchStreamReader", "central directory", "utf-8", "index")
INTERNALS += ("File is not a zip file", "Bad magic number", "Truncated file header")


def _zip_bytes(names=()) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name in names:
            z.writestr(name, b"x")
    return buffer.getvalue()


def _torch_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("text.pt", b"hello, not a checkpoint\n", "its contents are not a file written by torch.save"),
        ("pickle.pt", b"\x80\x02a.", "its contents are not a file written by torch.save"),  # IndexError inside
        ("latin.pt", bytes(range(128, 256)) * 4, "its contents are not a file written by torch.save"),
        ("bad-utf8.pt", b"\x80\x02X\x02\x00\x00\x00\xff\xfe.", "its contents are not a file written by torch.save"),
        ("cut.pt", _torch_bytes()[:-40], "it is cut off or damaged"),
        ("empty.pt", _zip_bytes(), "its contents are not a file written by torch.save"),
        ("bad.safetensors", (10).to_bytes(8, "little") + bytes(range(246, 256)), "its header or tensor data"),
    ],
)
def test_damaged_files_are_refused_in_a_sentence_without_internals(tmp_path, name, data, reason):
    """The refusal says which file and what is wrong with it, not what the loader tripped over."""
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError) as info:
        checkpoints.read_file(tmp_path / name)
    message = str(info.value)
    assert message.startswith(f"checkpoint file {name!r} is corrupt or truncated") and reason in message
    assert message.endswith(".") and not any(word in message for word in INTERNALS), message
