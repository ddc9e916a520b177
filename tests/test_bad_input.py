"""Every bad input gets one clear sentence, nothing is lost, nothing crashes (issue 6's list)."""

import io
import pathlib
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import guards, uploads
from landscape_core.problem import Problem
from landscape_core.spec import SpecError, SpecNotFound, load_spec
from landscape_core.uploads import Upload, UploadError
from landscape_core.workspace import Workspace


def make_model(seed=0, hidden=6):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))


def make_data(n=30):
    X = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    return X, (X[:, 0] > 0).long()


@pytest.fixture
def base():
    return Workspace("base", Problem(make_model(), F.cross_entropy, train=make_data()))


def pt_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_missing_file(tmp_path):
    with pytest.raises(UploadError, match=r"file '.*missing\.pt' does not exist"):
        Upload.from_path(tmp_path / "missing.pt")
    with pytest.raises(SpecNotFound, match="does not exist"):
        load_spec(str(tmp_path / "missing_spec.py"))


@pytest.mark.parametrize("cut", [0.5, 0.1])
def test_truncated_pt(base, cut):
    data = pt_bytes(make_model().state_dict())
    with pytest.raises(UploadError, match="'model.pt' is corrupt or truncated"):
        uploads.checkpoint_from_upload(base.problem, Upload("model.pt", data[: int(len(data) * cut)]))


def test_corrupt_data_files():
    with pytest.raises(UploadError, match="'x.pt' is corrupt or truncated"):
        uploads.read_data(Upload("x.pt", b"\x80\x02 this is not a torch file" * 10))
    with pytest.raises(UploadError, match="'x.npz' is corrupt or truncated"):
        uploads.read_data(Upload("x.npz", b"PK\x03\x04 broken zip"))


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


@pytest.mark.parametrize("kind", ["state dict", "data"])
def test_pickle_that_would_run_code_is_refused(base, tmp_path, kind):
    marker = tmp_path / "code_ran"
    data = pt_bytes({"0.weight": torch.zeros(6, 4), "payload": _Payload(str(marker))})
    with pytest.raises(UploadError, match="refused to load 'evil.pt': it contains pickled Python objects"):
        if kind == "state dict":
            uploads.checkpoint_from_upload(base.problem, Upload("evil.pt", data))
        else:
            uploads.read_data(Upload("evil.pt", data))
    assert not marker.exists()


def test_npz_with_pickled_objects_is_refused():
    buffer = io.BytesIO()
    np.savez(buffer, X=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    with pytest.raises(UploadError, match="refused to load 'obj.npz': it holds pickled object arrays"):
        uploads.read_data(Upload("obj.npz", buffer.getvalue()))


def test_checkpoint_of_another_architecture_lists_keys(base):
    other = make_model(hidden=8).state_dict()
    other["2.extra"] = torch.zeros(1)
    del other["0.bias"]
    with pytest.raises(UploadError) as info:
        uploads.checkpoint_from_upload(base.problem, Upload("other.pt", pt_bytes(other)))
    message = str(info.value)
    assert "does not match the model's architecture" in message
    assert "missing keys: 0.bias" in message
    assert "unexpected keys: 2.extra" in message
    assert "0.weight: file (8, 4) vs model (6, 4)" in message


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_weights(base, bad):
    sd = make_model().state_dict()
    sd["2.weight"][0, 0] = bad
    with pytest.raises(UploadError, match=r"NaN or inf weights in: 2\.weight \(1 of 18 entries\)"):
        uploads.checkpoint_from_upload(base.problem, Upload("diverged.pt", pt_bytes(sd)))


def test_nan_inputs_in_data():
    X, y = make_data()
    X[3, 1] = float("nan")
    with pytest.raises(UploadError, match="1 inputs entries are NaN or inf"):
        uploads.read_data(Upload("d.pt", pt_bytes({"X": X, "y": y})))


def test_empty_dataset(base):
    empty = Upload("empty.pt", pt_bytes({"X": torch.zeros(0, 4), "y": torch.zeros(0, dtype=torch.long)}))
    with pytest.raises(UploadError, match="'empty.pt' is an empty dataset \\(0 samples\\)"):
        uploads.open_uploads(base, train=empty)
    with pytest.raises(ValueError, match="train is empty \\(0 samples\\)"):
        Problem(make_model(), F.cross_entropy, train=(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)))


def test_labels_out_of_range_for_the_logits(base):
    X, y = make_data()
    y[0] = 7  # the model has 3 outputs
    with pytest.raises(UploadError, match=r"'d.pt' has labels from 0 to 7 but the model outputs 3 classes"):
        uploads.open_uploads(base, train=Upload("d.pt", pt_bytes({"X": X, "y": y})))
    y[0], y[20] = 0, -1  # beyond Problem's 16-sample probe, so its own range check speaks
    with pytest.raises(ValueError, match=r"train labels range over \[-1, 1\] .* labels must lie in \[0, 2\]"):
        Problem(make_model(), F.cross_entropy, train=(X, y))


def test_data_of_the_wrong_shape_for_the_model(base):
    data = pt_bytes({"X": torch.randn(30, 5), "y": torch.zeros(30).long()})
    with pytest.raises(UploadError, match="'d.pt': the model cannot run on its inputs of shape \\(5,\\) per sample"):
        uploads.open_uploads(base, train=Upload("d.pt", data))
    with pytest.raises(ValueError, match=r"the model failed on a .*batch.* of shape \(16, 5\)"):
        Problem(make_model(), F.cross_entropy, train=(torch.randn(30, 5), torch.zeros(30).long()))


def test_spec_that_raises_keeps_its_traceback(tmp_path):
    path = tmp_path / "failing_spec.py"
    path.write_text("def build():\n    return load()\n\ndef load():\n    raise KeyError('weights')\n")
    with pytest.raises(SpecError) as info:
        load_spec(f"{path}:build")
    assert str(info.value) == "the spec failing_spec.py:build raised KeyError: 'weights'"
    assert "raise KeyError('weights')" in info.value.traceback


def test_spec_returns_the_wrong_type(tmp_path):
    path = tmp_path / "wrong_spec.py"
    path.write_text("import torch\ndef build():\n    return torch.nn.Linear(2, 2)\n")
    with pytest.raises(TypeError, match="returned a Linear; it must return a landscape_core Workspace or Problem"):
        load_spec(str(path))


def test_grid_over_the_steps_limit_is_refused_up_front(base):
    with pytest.raises(guards.LimitError, match="steps=402 is over the steps limit of 401 per axis"):
        guards.check_grid(base.problem, 402, 402)
    with pytest.raises(guards.LimitError, match="steps_y=1000 is over the steps limit"):
        guards.check_grid(base.problem, 11, 1000)


def test_grid_over_the_memory_budget_is_refused_up_front(base, monkeypatch):
    need = guards.estimate(base.problem, 101 * 101)
    assert need.result_bytes == 101 * 101 * len(base.problem.quantities) * 8  # float64 per quantity and point
    with pytest.raises(guards.LimitError, match=r"a 101 x 101 grid needs about .* over the memory budget of 0\.1 MiB"):
        guards.check_grid(base.problem, 101, 101, budget=100 * 1024)
    monkeypatch.setenv("LANDSCAPE_MEMORY_BUDGET_MB", "0.1")
    with pytest.raises(guards.LimitError, match="LANDSCAPE_MEMORY_BUDGET_MB"):
        guards.check_grid(base.problem, 101, 101)
    monkeypatch.setenv("LANDSCAPE_MEMORY_BUDGET_MB", "lots")
    with pytest.raises(guards.LimitError, match="must be a number of MiB; got 'lots'"):
        guards.memory_budget()
    monkeypatch.delenv("LANDSCAPE_MEMORY_BUDGET_MB")
    assert guards.check_grid(base.problem, 101, 101).points == 10201  # within the default budget


def test_upload_over_the_size_limit(base, monkeypatch):
    monkeypatch.setattr(uploads, "MAX_STATE_DICT_BYTES", 1000)
    monkeypatch.setattr(uploads, "MAX_DATA_BYTES", 1000)
    big = Upload("big.pt", b"\0" * 2 * 2**20)
    with pytest.raises(UploadError, match="state dict 'big.pt' is 2.0 MiB, over the upload limit of 0.0 MiB"):
        uploads.checkpoint_from_upload(base.problem, big)
    with pytest.raises(UploadError, match="data file 'big.pt' is 2.0 MiB, over the upload limit"):
        uploads.read_data(big)


def test_wrong_suffix_and_empty_upload(base):
    with pytest.raises(UploadError, match="suffix '.pkl'; allowed are .pt, .pth, .safetensors"):
        uploads.checkpoint_from_upload(base.problem, Upload("model.pkl", b"123"))
    with pytest.raises(UploadError, match="'x.pt' is empty \\(0 bytes\\)"):
        uploads.read_data(Upload("x.pt", b""))


def test_two_requests_for_the_same_computation_are_computed_once(base, fresh_cache):
    jobs = pytest.importorskip("landscape_core.jobs")
    from landscape_core import directions, surface

    registry = jobs.JobRegistry(max_running=2)
    calls = []
    gate = threading.Event()
    d = directions.random(base.problem, count=2, seed=0)

    def compute(progress, cancel):
        calls.append(1)
        gate.wait(10)
        return surface.plane(base.problem, d[0], d[1], steps=9, progress=progress, cancel=cancel)

    key = jobs.job_key("surface-plane", {"problem": base.problem.model_hash(), "steps": 9})
    served = []
    sessions = [threading.Thread(target=lambda: served.append(registry.submit(key, compute))) for _ in range(2)]
    for s in sessions:
        s.start()
    for s in sessions:
        s.join()
    gate.set()
    assert served[0] is served[1]  # both sessions hold the same job
    assert served[0].wait(60) and served[0].snapshot().state is jobs.State.DONE
    assert len(calls) == 1
    result = served[1].result
    assert result.values["train_loss"].shape == (9, 9)
    assert result.center_value("train_loss") == pytest.approx(base.problem.base["train_loss"])
