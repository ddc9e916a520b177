"""Networks of the literature, written out here so that nothing is downloaded.

``resnet_cifar(depth=20, skip=True)``: He et al. 2016's CIFAR ResNet (Sec. 4.2): a 3x3 conv
with 16 channels, three stages of ``n = (depth - 2) / 6`` basic blocks at 16, 32 and 64
channels (stride 2 at the start of stages 2 and 3), global average pooling and a linear
classifier. Shortcuts are option A (identity; at a stride the input is subsampled and
zero-padded to the new width), so ResNet-20 has 269,722 parameters and ResNet-56 853,018 for
10 classes: the paper's "0.27M" and "0.85M" (Table 6). ``skip=False`` drops every shortcut: the "no-short" nets of Li et
al. 2018 (Fig. 5), whose landscapes turn chaotic with depth.

``synthetic_images(n, seed)``: a 32x32 RGB classification set generated from a seed (oriented
gratings per class, random phase, colour and noise), a stand-in for CIFAR-10 that needs no
download: ``X`` float32 ``(n, 3, 32, 32)`` in about [-1, 1], ``y`` int64 ``(n,)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN (+ shortcut) - ReLU; ``stride`` 1 or 2 on the first conv."""

    def __init__(self, in_channels: int, channels: int, stride: int, skip: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.skip = skip
        self.stride = stride
        self.pad = channels - in_channels

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A: identity, subsampled by ``stride`` and zero-padded to the block's width."""
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.skip:
            out = out + self.shortcut(x)
        return F.relu(out)


class ResNetCifar(nn.Module):
    """He et al. 2016's CIFAR ResNet of ``depth = 6 n + 2`` layers; input ``(N, 3, H, W)``, logits ``(N, classes)``."""

    def __init__(self, depth: int = 20, skip: bool = True, classes: int = 10, width: int = 16):
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 56, 110...); got {depth!r}.")
        if not isinstance(classes, int) or classes < 2:
            raise ValueError(f"classes must be an integer >= 2; got {classes!r}.")
        blocks = (depth - 2) // 6
        self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        stages, in_channels = [], width
        for stage, channels in enumerate((width, 2 * width, 4 * width)):
            layers = []
            for b in range(blocks):
                stride = 2 if stage > 0 and b == 0 else 1
                layers.append(BasicBlock(in_channels, channels, stride, skip))
                in_channels = channels
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(in_channels, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


def resnet_cifar(depth: int = 20, skip: bool = True, classes: int = 10, seed: int = 0) -> ResNetCifar:
    """A freshly initialised ``ResNetCifar`` from ``seed`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ResNetCifar(depth=depth, skip=skip, classes=classes)


def synthetic_images(n: int, seed: int = 0, classes: int = 10, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` generated RGB images ``(n, 3, size, size)`` float32 and labels ``(n,)`` int64.

    Class ``c`` is a grating at angle ``pi c / classes`` with a class-dependent frequency; each
    image draws its own phase, contrast, colour mix and pixel noise, so the task is learnable
    but not trivial. Labels are balanced (``arange(n) % classes``, then shuffled).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}.")
    gen = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % classes)[torch.randperm(n, generator=gen)]
    coords = torch.linspace(-1.0, 1.0, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    angle = math.pi * y.double() / classes
    freq = 2.0 + (y.double() % 3) * 1.5
    phase = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
    proj = torch.cos(angle)[:, None, None] * xx + torch.sin(angle)[:, None, None] * yy
    grating = torch.sin(math.pi * freq[:, None, None] * proj + phase[:, None, None])
    contrast = 0.5 + 0.5 * torch.rand(n, 1, 1, generator=gen, dtype=torch.float64)
    colour = torch.rand(n, 3, generator=gen, dtype=torch.float64) + 0.2
    colour = colour / colour.sum(dim=1, keepdim=True) * 1.5
    X = (contrast * grating)[:, None] * colour[:, :, None, None]
    X = X + 0.35 * torch.randn(n, 3, size, size, generator=gen, dtype=torch.float64)
    return X.float().clamp(-1.5, 1.5), y
