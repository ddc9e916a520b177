"""Contrastive losses of sentence embeddings, as a ``Problem`` can evaluate them exactly.

* ``info_nce(anchors, positives, temperature)``: InfoNCE with in-group negatives (van den
  Oord et al. 2018; SimCSE's form, Gao et al. 2021): for anchor ``h_i`` of a group of ``K``
  pairs, ``-log( e^{s(h_i, h_i+)/tau} / sum_j e^{s(h_i, h_j+)/tau} )`` with ``s`` the cosine;
* ``gaussian_smoothed_info_nce(anchors, positives, noise, temperature)``: the Gaussian-smoothed
  InfoNCE of Wu et al. 2021 (GS-InfoNCE): the same, with ``M`` Gaussian noise vectors
  ``g_k ~ N(0, sigma^2 I)`` added to every denominator as extra negatives,
  ``+ sum_k e^{s(h_i, g_k)/tau}``.

Both are batch-dependent in training (the negatives are the other pairs of the batch). The
full-split value is defined on a **fixed pairing**: the split is stored as groups of ``K``
pairs, one group per sample (inputs ``(n_groups, K, 2, T)``), and the loss of a group is the
mean over its ``K`` anchors. ``ContrastiveLoss`` returns one value per group, so the split's
value is the mean over groups whatever the evaluation batch size. GS-InfoNCE's noise in
evaluation is fixed too: group ``g`` draws its ``M`` vectors from a generator seeded by
``(seed, g)`` (the target ``y`` holds the group ids), never from the global RNG.
"""

from __future__ import annotations

import hashlib
from enum import Enum

import torch
import torch.nn.functional as F


class Kind(str, Enum):
    """Which contrastive loss: ``INFO_NCE`` or Wu et al.'s Gaussian-smoothed ``GS_INFO_NCE``."""

    INFO_NCE = "info_nce"
    GS_INFO_NCE = "gs_info_nce"


def _check_pairs(anchors: torch.Tensor, positives: torch.Tensor) -> None:
    if anchors.dim() != 3 or anchors.shape != positives.shape or anchors.shape[1] < 2:
        raise ValueError(
            "anchors and positives must have the same shape (n_groups, K, D) with K >= 2 pairs per group; got "
            f"{tuple(anchors.shape)} and {tuple(positives.shape)}."
        )


def _check_temperature(temperature: float) -> float:
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a number > 0; got {temperature!r}.")
    return float(temperature)


def _logits(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cosine similarities over ``tau``, ``(n, K, K)``: ``[g, i, j] = s(h_i, h_j+) / tau``."""
    a, p = F.normalize(anchors, dim=-1), F.normalize(positives, dim=-1)
    return a @ p.transpose(1, 2) / temperature


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE per group, ``(n_groups,)``: the mean over the ``K`` anchors of each group.

    ``anchors``, ``positives``: ``(n_groups, K, D)``; pair ``i`` of a group is the positive of
    anchor ``i``, the other ``K - 1`` positives its negatives.
    """
    _check_pairs(anchors, positives)
    logits = _logits(anchors, positives, _check_temperature(temperature))
    diagonal = torch.diagonal(logits, dim1=1, dim2=2)
    return (torch.logsumexp(logits, dim=-1) - diagonal).mean(dim=1)


def gaussian_smoothed_info_nce(
    anchors: torch.Tensor, positives: torch.Tensor, noise: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """GS-InfoNCE per group, ``(n_groups,)`` (Wu et al. 2021).

    ``noise``: ``(n_groups, M, D)`` (or ``(M, D)``, shared by every group): Gaussian vectors
    that join each anchor's denominator as negatives, ``e^{s(h_i, g_k)/tau}``.
    """
    _check_pairs(anchors, positives)
    tau = _check_temperature(temperature)
    if noise.dim() == 2:
        noise = noise[None].expand(anchors.shape[0], -1, -1)
    if noise.dim() != 3 or noise.shape[0] != anchors.shape[0] or noise.shape[2] != anchors.shape[2]:
        raise ValueError(
            f"noise must have shape (M, D) or (n_groups, M, D) with D = {anchors.shape[2]}; got {tuple(noise.shape)}."
        )
    logits = _logits(anchors, positives, tau)
    extra = F.normalize(anchors, dim=-1) @ F.normalize(noise.to(anchors.dtype), dim=-1).transpose(1, 2) / tau
    diagonal = torch.diagonal(logits, dim1=1, dim2=2)
    return (torch.logsumexp(torch.cat([logits, extra], dim=-1), dim=-1) - diagonal).mean(dim=1)


def group_noise(groups: torch.Tensor, count: int, dim: int, std: float, seed: int, dtype=torch.float64) -> torch.Tensor:
    """``(len(groups), count, dim)`` Gaussian vectors, ``N(0, std^2)``; group ``g``'s from its own
    generator seeded by ``(seed, g)``, so a group's noise does not depend on its batch."""
    rows = []
    for g in groups.reshape(-1).tolist():
        digest = hashlib.sha256(f"gs-noise:{int(seed)}:{int(g)}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        rows.append(std * torch.randn(count, dim, generator=gen, dtype=torch.float64))
    return torch.stack(rows).to(dtype) if rows else torch.zeros(0, count, dim, dtype=dtype)


class ContrastiveLoss:
    """``loss(output, groups) -> (n_groups,)``: a contrastive loss on a fixed pairing.

    ``output``: ``(n_groups, K, 2, D)``, view 0 the anchors and view 1 the positives of each
    group; ``groups``: integer group ids ``(n_groups,)`` (they seed GS-InfoNCE's noise). One
    value per group, so ``Problem`` averages exactly over groups under any batch size.
    """

    def __init__(
        self,
        kind: Kind | str = Kind.INFO_NCE,
        temperature: float = 0.1,
        noise: int = 16,
        noise_std: float = 1.0,
        seed: int = 0,
    ):
        if kind not in [k.value for k in Kind]:
            raise ValueError(f"kind must be one of {[k.value for k in Kind]}; got {kind!r}.")
        if not isinstance(noise, int) or noise < 1:
            raise ValueError(f"noise must be a positive integer (Gaussian negatives per group); got {noise!r}.")
        if not isinstance(noise_std, (int, float)) or not noise_std > 0:
            raise ValueError(f"noise_std must be a number > 0; got {noise_std!r}.")
        self.kind, self.temperature = Kind(kind), _check_temperature(temperature)
        self.noise, self.noise_std, self.seed = noise, float(noise_std), int(seed)

    def __call__(self, output: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        if output.dim() != 4 or output.shape[2] != 2:
            raise ValueError(
                f"output must have shape (n_groups, K, 2, D): K pairs of two views; got {tuple(output.shape)}."
            )
        anchors, positives = output[:, :, 0], output[:, :, 1]
        if self.kind is Kind.INFO_NCE:
            return info_nce(anchors, positives, self.temperature)
        noise = group_noise(groups, self.noise, output.shape[-1], self.noise_std, self.seed, output.dtype)
        return gaussian_smoothed_info_nce(anchors, positives, noise.to(output.device), self.temperature)

    def __repr__(self) -> str:
        extra = (
            f", noise={self.noise}, noise_std={self.noise_std}, seed={self.seed}"
            if self.kind is Kind.GS_INFO_NCE
            else ""
        )
        return f"ContrastiveLoss({self.kind.value!r}, temperature={self.temperature}{extra})"


def retrieval_accuracy(output: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Per group ``(n_groups,)``: the fraction of anchors whose most similar positive in the group
    is their own (top-1 retrieval; ties count as misses unless the own positive is the first)."""
    if output.dim() != 4 or output.shape[2] != 2:
        raise ValueError(f"output must have shape (n_groups, K, 2, D); got {tuple(output.shape)}.")
    logits = _logits(output[:, :, 0], output[:, :, 1], 1.0)
    own = torch.arange(output.shape[1], device=output.device)
    return (logits.argmax(dim=-1) == own).to(output.dtype).mean(dim=1)
