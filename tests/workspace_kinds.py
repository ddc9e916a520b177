"""Every kind of workspace a user can open, for the page and CLI matrices (test_matrix.py, test_cli_matrix.py).

``make_files(folder)`` writes what users bring: three state dicts and train/val data for the
digits-mlp architecture, a ``torch.export`` program (``.pt2``) with data, a spec of a single
model (no checkpoints, no model B), and specs that open the uploaded files (the CLI has no
upload flags: a spec is how files reach it). ``register_uploads(files, owner)`` makes the two
uploaded workspaces as the Your model page does (``uploads.open_uploads``,
``exported.program_workspace``, ``upload_registry.register`` for a browser session) and returns
their sidebar ids.
"""

from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ("digits-mlp", "digits-seeds", "digits-bn-cnn", "logistic-blobs", "text-sentiment")
SPEC_CHECKPOINTS = f"{ROOT / 'examples' / 'digits_cnn_spec.py'}:build"
SPEC_CUSTOM_LOSS = f"{ROOT / 'examples' / 'custom_loss_spec.py'}:build"
# every kind, in the order the matrices run them (demos first: they train once per session)
KINDS = (*DEMOS, "spec-checkpoints", "spec-custom-loss", "uploads", "program", "single-model")
UPLOADED_CHECKPOINTS = ("epoch_5", "epoch_12", "epoch_20")  # of digits-mlp's model A

SINGLE_MODEL_SPEC = '''
"""One small MLP on random data: no checkpoints and no model B."""
import torch
import torch.nn.functional as F
from landscape_core import Problem


def build():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(96, 5, generator=gen)
    y = (X[:, 0] + X[:, 1] > 0).long()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    return Problem(model, F.cross_entropy, train=(X[:64], y[:64]), val=(X[64:], y[64:]))
'''

UPLOADS_SPEC = '''
"""The uploaded state dicts and data, opened from a spec (what the Your model page does)."""
from pathlib import Path

from landscape_core import demos, uploads
from landscape_core.uploads import Upload

FOLDER = Path(__file__).parent


def build():
    weights = [Upload.from_path(FOLDER / f"{name}.pt") for name in {names!r}]
    return uploads.open_uploads(
        demos.load("digits-mlp"), weights, train=Upload.from_path(FOLDER / "train.pt"),
        val=Upload.from_path(FOLDER / "val.pt"), name="digits-mlp uploads",
    )
'''.replace("{names!r}", repr(UPLOADED_CHECKPOINTS))

PROGRAM_SPEC = '''
"""The uploaded .pt2 program and its data, opened from a spec."""
from pathlib import Path

from landscape_core import exported
from landscape_core.uploads import Upload

FOLDER = Path(__file__).parent


def build():
    return exported.program_workspace(
        Upload.from_path(FOLDER / "net.pt2"), Upload.from_path(FOLDER / "program_train.pt"),
        val=Upload.from_path(FOLDER / "program_val.pt"),
    )
'''


def _program_model() -> torch.nn.Module:
    """Conv - BatchNorm - ReLU - Linear on 1x8x8 images (eval mode, as exported)."""
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 10),
    ).eval()


def make_files(folder: Path) -> dict[str, Path]:
    """Write the uploads, the program and the specs into ``folder``; returns their paths by role."""
    from landscape_core import checkpoints, demos

    folder.mkdir(parents=True, exist_ok=True)
    ws = demos.load("digits-mlp")
    problem = ws.problem
    for name in UPLOADED_CHECKPOINTS:
        epoch = int(name.split("_")[1])
        state = checkpoints.state_dict_from_checkpoint(problem, ws.checkpoint(f"small batch epoch {epoch:03d}"))
        torch.save({"model": state, "epoch": epoch}, folder / f"{name}.pt")
    train, val = problem.splits["train"], problem.splits["val"]
    torch.save({"X": train.X[:200].clone(), "y": train.y[:200].clone()}, folder / "train.pt")
    torch.save({"X": val.X[:100].clone(), "y": val.y[:100].clone()}, folder / "val.pt")

    images = train.X[:160].reshape(-1, 1, 8, 8).clone()
    labels = train.y[:160].clone()
    model = _program_model()
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (images[:5],), dynamic_shapes=({0: batch},))
    torch.export.save(program, folder / "net.pt2")
    torch.save({"X": images[:112], "y": labels[:112]}, folder / "program_train.pt")
    torch.save({"X": images[112:], "y": labels[112:]}, folder / "program_val.pt")

    (folder / "single_model_spec.py").write_text(SINGLE_MODEL_SPEC)
    (folder / "uploads_spec.py").write_text(UPLOADS_SPEC)
    (folder / "program_spec.py").write_text(PROGRAM_SPEC)
    return {
        "folder": folder,
        "single-model": folder / "single_model_spec.py",
        "uploads": folder / "uploads_spec.py",
        "program": folder / "program_spec.py",
    }


def spec_targets(files: dict[str, Path]) -> dict[str, str]:
    """``--spec`` targets of the kinds that come from a spec (all but the demos, for the CLI)."""
    return {
        "spec-checkpoints": SPEC_CHECKPOINTS,
        "spec-custom-loss": SPEC_CUSTOM_LOSS,
        "uploads": f"{files['uploads']}:build",
        "program": f"{files['program']}:build",
        "single-model": f"{files['single-model']}:build",
    }


def register_uploads(files: dict[str, Path], owner: str) -> dict[str, str]:
    """The uploaded workspaces as the Your model page registers them for the session ``owner``.

    Returns ``{"uploads": id, "program": id}``; the specs call ``uploads.open_uploads`` and
    ``exported.program_workspace`` on the files, as the page does.
    """
    from landscape_core import upload_registry
    from landscape_core.spec import load_spec

    return {kind: upload_registry.register(load_spec(f"{files[kind]}:build"), owner) for kind in ("uploads", "program")}
