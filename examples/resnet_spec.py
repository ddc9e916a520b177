"""Spec: He et al.'s CIFAR ResNet-20 with and without skip connections (Li et al. 2018, Fig. 5).

    landscape surface --spec examples/resnet_spec.py:build --steps 11 --subset 256
    landscape interpolate --spec examples/resnet_spec.py:build --from A:epoch_1 --to A
    streamlit run app.py -- --spec examples/resnet_spec.py:build

Model A is ResNet-20 (269,722 parameters, BatchNorm after every convolution, identity
shortcuts); model B is the same net with every shortcut removed, the "no-short" net of Li et
al. 2018. Both train on the same 32x32 RGB images, generated from a seed by
``landscape_core.nets.synthetic_images`` (a CIFAR-10 stand-in: nothing is downloaded).

On first use both nets train briefly (SGD with momentum, batch 64, seeded) and write one
state dict per epoch, BatchNorm running statistics included, to ``epoch_1.pt``... in
``$LANDSCAPE_EXAMPLES_DIR/resnet20_<size>`` if set, else in the landscape cache folder; later
uses only read those files (``checkpoints.load_folder``, ``weights_only=True``). The models are
evaluated in eval mode with those running statistics. ``LANDSCAPE_RESNET_TRAIN`` (images,
default 2000; the validation split is a quarter of it) and ``LANDSCAPE_RESNET_EPOCHS``
(default 4) set the size; each size has its own folder. Training takes a few minutes on two
CPU cores at the default size.
"""

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from landscape_core import Problem, checkpoints
from landscape_core.cache import cache_dir
from landscape_core.nets import resnet_cifar, synthetic_images
from landscape_core.workspace import Workspace

DEPTH = 20


def sizes() -> tuple[int, int, int]:
    """``(train images, validation images, epochs)`` from the environment (see the module docstring)."""
    train = int(os.environ.get("LANDSCAPE_RESNET_TRAIN", "2000"))
    epochs = int(os.environ.get("LANDSCAPE_RESNET_EPOCHS", "4"))
    if train < 8 or epochs < 1:
        raise ValueError(
            f"LANDSCAPE_RESNET_TRAIN must be >= 8 and LANDSCAPE_RESNET_EPOCHS >= 1; got {train} and {epochs}."
        )
    return train, max(4, train // 4), epochs


def checkpoint_folder(train: int, epochs: int) -> Path:
    base = os.environ.get("LANDSCAPE_EXAMPLES_DIR")
    name = f"resnet{DEPTH}_n{train}_e{epochs}"
    return Path(base) / name if base else cache_dir() / f"{name}_checkpoints"


def train(folder: Path, skip: bool, data, epochs: int, seed: int = 0) -> None:
    """SGD (lr 0.05, momentum 0.9, weight decay 5e-4), batch 64, in train mode (BatchNorm statistics
    updated); one ``{"model": state_dict, "epoch": k}`` file per epoch, each written atomically."""
    model = resnet_cifar(DEPTH, skip=skip, seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    X, y = data
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.train()
    for epoch in range(1, epochs + 1):
        for batch in torch.randperm(len(y), generator=gen).split(64):
            if len(batch) < 2:  # BatchNorm needs two samples per batch in train mode
                continue
            optimizer.zero_grad()
            F.cross_entropy(model(X[batch]), y[batch]).backward()
            optimizer.step()
        part = folder / f"epoch_{epoch}.pt.part"
        torch.save({"model": model.state_dict(), "epoch": epoch}, part)
        part.replace(folder / f"epoch_{epoch}.pt")


def build() -> Workspace:
    n_train, n_val, epochs = sizes()
    X, y = synthetic_images(n_train + n_val, seed=0)
    train_data, val_data = (X[:n_train], y[:n_train]), (X[n_train:], y[n_train:])
    root = checkpoint_folder(n_train, epochs)
    problems, runs = [], []
    for skip, name in ((True, "skip"), (False, "noskip")):
        folder = root / name
        if not (folder / f"epoch_{epochs}.pt").exists():
            train(folder, skip, train_data, epochs)
        model = resnet_cifar(DEPTH, skip=skip)
        # the last epoch, BatchNorm running statistics included, is the base point
        model.load_state_dict(torch.load(folder / f"epoch_{epochs}.pt", weights_only=True)["model"])
        problem = Problem(model, F.cross_entropy, train=train_data, val=val_data)
        problems.append(problem)
        runs.append(checkpoints.load_folder(folder, problem))
    return Workspace(
        name=f"ResNet-{DEPTH} with and without skip connections",
        problem=problems[0],
        checkpoints=runs[0],
        compare=problems[1],
        compare_checkpoints=runs[1],
        labels=(f"ResNet-{DEPTH}", f"ResNet-{DEPTH}, no shortcuts"),  # the pages add "A:" and "B:"
        description=(
            f"He et al.'s CIFAR ResNet-{DEPTH} ({problems[0].space.size:,} parameters, BatchNorm) and the same net "
            f"without shortcuts (Li et al. 2018), {epochs} epochs on {n_train} generated 32x32 images; "
            f"checkpoints per epoch in {root}."
        ),
    )
