"""Uploads: state dicts and data bytes become a workspace; .pt2 programs evaluate exactly at perturbed theta."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import exported, uploads
from landscape_core.problem import Problem
from landscape_core.uploads import Upload, UploadError
from landscape_core.workspace import Workspace


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def make_data(n=30, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=gen)
    return X, (X[:, 0] > 0).long() + (X[:, 1] > 0.5).long()


@pytest.fixture
def base():
    problem = Problem(make_model(), F.cross_entropy, train=make_data(), val=make_data(12, 1))
    return Workspace("base", problem)


def pt_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_state_dict_uploads_become_checkpoints_in_natural_order(base):
    files = [Upload(f"epoch_{i}.pt", pt_bytes(make_model(seed=i).state_dict())) for i in (10, 2, 1)]
    ws = uploads.open_uploads(base, files)
    assert [c.name for c in ws.checkpoints] == ["epoch_1", "epoch_2", "epoch_10"]
    assert [c.step for c in ws.checkpoints] == [1, 2, 10]
    expected = torch.cat([p.detach().flatten() for p in make_model(seed=10).parameters()])
    assert torch.equal(ws.problem.theta0, expected)  # the last one is the base point
    assert torch.equal(ws.checkpoints[0].theta, torch.cat([p.detach().flatten() for p in make_model(1).parameters()]))
    X, y = base.problem.splits["train"].X, base.problem.splits["train"].y
    assert ws.problem.base["train_loss"] == pytest.approx(
        float(F.cross_entropy(make_model(10)(X), y).detach()), rel=1e-6
    )


def test_wrapped_layout_and_safetensors(base):
    from safetensors.torch import save

    sd = make_model(seed=3).state_dict()
    wrapped = uploads.checkpoint_from_upload(base.problem, Upload("run.pth", pt_bytes({"model": sd, "epoch": 7})))
    assert wrapped.step == 7
    st = uploads.checkpoint_from_upload(base.problem, Upload("run_5.safetensors", save(dict(sd))))
    assert torch.equal(wrapped.theta, st.theta)
    assert st.step == 5


@pytest.mark.parametrize(
    "name, payload",
    [
        ("dict.pt", lambda X, y: pt_bytes({"X": X, "y": y})),
        ("pair.pt", lambda X, y: pt_bytes((X, y))),
        ("named.npz", lambda X, y: _npz(inputs=X.numpy(), labels=y.numpy())),
        ("plain.npz", lambda X, y: _npz(X.numpy(), y.numpy())),
    ],
)
def test_data_layouts(name, payload):
    X, y = make_data()
    got_X, got_y = uploads.read_data(Upload(name, payload(X, y)))
    assert torch.equal(got_X, X) and torch.equal(got_y, y)


def _npz(*args, **kwargs) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, *args, **kwargs)
    return buffer.getvalue()


def test_uploaded_data_replaces_the_splits(base):
    X, y = make_data(50, seed=7)
    ws = uploads.open_uploads(base, train=Upload("train.pt", pt_bytes({"X": X, "y": y})))
    assert ws.problem.splits["train"].n == 50
    assert ws.problem.splits["val"].n == 12  # the base's validation split is kept
    assert ws.problem.base["train_loss"] == pytest.approx(float(F.cross_entropy(make_model()(X), y).detach()), rel=1e-6)


def test_nothing_uploaded(base):
    with pytest.raises(UploadError, match="nothing uploaded"):
        uploads.open_uploads(base)


# -- .pt2 programs ---------------------------------------------------------------------------------
def conv_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)
    ).eval()


@pytest.fixture(scope="module")
def program_bytes():
    model = conv_net()
    with torch.no_grad():  # non-trivial running statistics
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (torch.randn(5, 1, 8, 8),), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue(), model


def test_program_evaluates_exactly_at_perturbed_parameters(program_bytes):
    data, model = program_bytes
    gen = torch.Generator().manual_seed(1)
    X, y = torch.randn(64, 1, 8, 8, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    ws = exported.program_workspace(Upload("net.pt2", data), Upload("d.pt", pt_bytes({"X": X, "y": y})))
    reference = Problem(model, F.cross_entropy, train=(X, y))
    assert ws.problem.space.names == reference.space.names
    assert torch.equal(ws.problem.theta0, reference.theta0)
    thetas = reference.theta0 + 0.3 * torch.randn(4, reference.space.size, generator=gen)
    got, want = ws.problem.evaluate(thetas), reference.evaluate(thetas)
    for q in want:
        np.testing.assert_allclose(got[q], want[q], rtol=1e-6)
    grad = torch.func.grad(lambda t: ws.problem.batch_loss(t, X, y))(thetas[0])
    grad_ref = torch.func.grad(lambda t: reference.batch_loss(t, X, y))(thetas[0])
    torch.testing.assert_close(grad, grad_ref)


def test_program_scan_lists_only_aten_operators(program_bytes):
    found = exported.scan_program(program_bytes[0])
    assert found["operators"] and all(op.startswith("torch.ops.aten.") for op in found["operators"])


def _tamper(data: bytes, edit) -> bytes:
    """Rewrite the archive with ``edit(name, bytes) -> bytes`` applied to each member."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            target.writestr(info, edit(info.filename, source.read(info.filename)))
    return out.getvalue()


def _edit_json(suffix, change):
    def edit(name, content):
        if not name.endswith(suffix):
            return content
        obj = json.loads(content)
        change(obj)
        return json.dumps(obj).encode()

    return edit


def _retarget(obj):
    obj["graph_module"]["graph"]["nodes"][0]["target"] = "torch.serialization.os.system"


def _guard_code(obj):
    obj["guards_code"] = ["__import__('os').system('true')"]


def _pickled_weight(obj):
    first = next(iter(obj["config"].values()))
    first["use_pickle"] = True


def _sympy_code(obj):
    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "expr_str":
                    o[k] = "__import__('os').system('true')"
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(obj)


@pytest.mark.parametrize(
    "edit, message",
    [
        (_edit_json("models/model.json", _retarget), "calls 'torch.serialization.os.system', which is not an allowed"),
        (_edit_json("models/model.json", _guard_code), "carries Python guard code"),
        (_edit_json("model_weights_config.json", _pickled_weight), "stored as a pickle or custom object"),
        (_edit_json("models/model.json", _sympy_code), "holds characters outside arithmetic"),
    ],
)
def test_tampered_programs_are_refused_before_loading(program_bytes, monkeypatch, edit, message):
    def never(*args, **kwargs):
        raise AssertionError("torch.export.load must not see a refused archive")

    monkeypatch.setattr(torch.export, "load", never)
    with pytest.raises(exported.ProgramError, match=message):
        exported.module_from_program(_tamper(program_bytes[0], edit), "bad.pt2")


def test_program_exported_in_training_mode_is_refused():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).train()
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model, (torch.randn(5, 4),)), buffer)
    with pytest.raises(exported.ProgramError, match="exported in training mode .*model.eval"):
        exported.module_from_program(buffer.getvalue(), "train.pt2")


def test_not_a_program():
    with pytest.raises(exported.ProgramError, match="not a torch.export archive"):
        exported.module_from_program(b"hello, not a zip", "x.pt2")


def test_uploaded_workspace_is_named_by_its_files(base):
    X, y = make_data(20, seed=3)
    ws = uploads.open_uploads(
        base,
        [Upload("final.pt", pt_bytes(make_model(seed=4).state_dict()))],
        train=Upload("train.pt", pt_bytes({"X": X, "y": y})),
    )
    assert ws.name == "base + final.pt, train.pt"
    assert "final.pt" in ws.description and "train.pt" in ws.description


def test_token_id_data_for_a_text_model_is_accepted():
    """Integer token ids stay integers when the upload is checked (an embedding refuses floats)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(12, 4), nn.Flatten(), nn.Linear(4 * 5, 2))
    X = torch.randint(0, 12, (20, 5))
    y = torch.randint(0, 2, (20,))
    text = Workspace("tokens", Problem(model, F.cross_entropy, train=(X, y)))
    ws = uploads.open_uploads(text, train=Upload("head.pt", pt_bytes({"X": X[:8], "y": y[:8]})))
    assert ws.problem.splits["train"].n == 8 and not ws.problem.splits["train"].X.is_floating_point()
    bad = pt_bytes({"X": X[:8], "y": torch.full((8,), 5)})
    with pytest.raises(UploadError, match=r"labels from 5 to 5 but the model outputs 2 classes"):
        uploads.open_uploads(text, train=Upload("bad.pt", bad))
