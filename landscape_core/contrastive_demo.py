"""The "text-contrastive" demo: two small sentence encoders, InfoNCE vs Gaussian-smoothed InfoNCE.

On the text demo's corpus (same train/val split, same word tokenizer), positives are made by
augmentation: each sentence gives two views, each with word dropout (every word dropped with
probability 0.1, at least one kept) and, with probability 0.5, one swap of two adjacent words.
Negatives are the other pairs of the batch. Both encoders (``MeanPoolEncoder``: word
embeddings, masked mean, a linear projection) start from the same seeded weights and see the
same batches; A minimizes InfoNCE, B Wu et al. 2021's GS-InfoNCE (16 fresh Gaussian negatives
per batch). Both problems are evaluated on the **same** loss, InfoNCE on a fixed pairing (see
``landscape_core.contrastive``): groups of ``GROUP`` pairs with views drawn once from a seeded
generator, so the landscapes of A and B are comparable on Compare; their metric ``accuracy`` is
top-1 retrieval of the positive within its group. Weights are cached like the other demos'.
"""

from __future__ import annotations

import dataclasses
import functools
import io

import numpy as np
import torch
from torch import nn

from . import archives
from . import cache as cache_mod
from .contrastive import ContrastiveLoss, Kind, gaussian_smoothed_info_nce, retrieval_accuracy
from .problem import Problem
from .text_demo import PAD_ID, TextWorkspace, Tokenizer, load_corpus, split_corpus
from .threads import single_thread
from .workspace import Checkpoint

NAME = "text-contrastive"
GROUP = 8
WEIGHTS_VERSION = 1
DESCRIPTION = (
    "Two sentence encoders (word embeddings, mean over the words, a linear projection to 16 dimensions) trained "
    "contrastively on the text demo's sentences: positives are two augmented views of one sentence (word dropout, "
    "a swap), negatives the other sentences of the batch. Model A minimizes InfoNCE, model B the Gaussian-smoothed "
    "InfoNCE of Wu et al. 2021 (Gaussian noise vectors as extra negatives); same start, same batches. Both are "
    "drawn on InfoNCE over fixed groups of 8 pairs (the value does not depend on the evaluation batch size). Try "
    "Compare (is the smoothed one flatter?) and the Text page's contrastive section (whose embeddings move most)."
)


class MeanPoolEncoder(nn.Module):
    """Sentence encoder: ``nn.Embedding`` (row 0 padding) + mean over real tokens + ``Linear``.

    Input: token ids ``(..., T)`` (e.g. ``(n, T)`` or a fixed pairing ``(n, K, 2, T)``);
    output: sentence embeddings ``(..., out_dim)`` (not normalized; the losses use cosines).
    """

    def __init__(self, vocab_size: int, dim: int = 32, out_dim: int = 16):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=PAD_ID)
        self.projection = nn.Linear(dim, out_dim)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        lead, T = X.shape[:-1], X.shape[-1]
        flat = X.reshape(-1, T)
        E = self.embedding(flat)
        mask = (flat != PAD_ID).unsqueeze(-1).to(E.dtype)
        pooled = (E * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.projection(pooled).reshape(*lead, -1)


# -- augmentation and the fixed pairing ------------------------------------------------------------
def augment(words: list, rng: np.random.Generator, dropout: float = 0.1, swap: float = 0.5) -> list:
    """One view of a sentence (a list of words or token ids): each word dropped with probability ``dropout`` (at least one kept),
    then with probability ``swap`` two adjacent words exchanged."""
    kept = [w for w in words if rng.random() >= dropout] or [words[int(rng.integers(len(words)))]]
    if len(kept) > 1 and rng.random() < swap:
        i = int(rng.integers(len(kept) - 1))
        kept[i], kept[i + 1] = kept[i + 1], kept[i]
    return kept


def token_lists(tokenizer: Tokenizer, texts) -> list[list[int]]:
    """Each text's token ids (no padding), truncated to the tokenizer's ``max_length``."""
    ids = tokenizer.encode(list(texts)).ids
    return [row[row != PAD_ID].tolist() for row in ids]


def pairs(tokens: list[list[int]], rng: np.random.Generator, max_length: int) -> torch.Tensor:
    """Two augmented views of each token list, ``(n, 2, max_length)`` ids padded with 0."""
    out = np.zeros((len(tokens), 2, max_length), dtype=np.int64)
    for i, row in enumerate(tokens):
        for v in range(2):
            view = augment(list(row), rng)
            out[i, v, : len(view)] = view
    return torch.from_numpy(out)


def fixed_groups(tokenizer: Tokenizer, texts, seed: int, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed pairing of a split: ``(X (n_groups, group, 2, T), group ids (n_groups,))``.

    Views and the order are drawn once from ``seed``; the ``len(texts) % group`` sentences left
    over after the shuffle are not in any group.
    """
    rng = np.random.default_rng(seed)
    views = pairs(token_lists(tokenizer, texts), rng, tokenizer.max_length)
    order = torch.as_tensor(rng.permutation(len(texts)))
    n_groups = len(texts) // group
    X = views[order[: n_groups * group]].reshape(n_groups, group, 2, -1)
    return X, torch.arange(n_groups)


# -- training ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """How both encoders are trained (all of it enters the weight cache key)."""

    seed: int = 0
    dim: int = 32
    out_dim: int = 16
    epochs: int = 20
    lr: float = 0.01
    temperature: float = 0.1
    noise: int = 16
    noise_std: float = 1.0
    checkpoints: int = 6


def train(tokenizer: Tokenizer, texts, kind: Kind, settings: TrainSettings):
    """Train a ``MeanPoolEncoder`` on ``kind``; returns ``(model, [(epoch, state_dict)])``.

    Initialization, views, batches and GS noise come from generators seeded by ``settings.seed``
    (the same for both kinds); the global RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = MeanPoolEncoder(len(tokenizer), settings.dim, settings.out_dim)
    rng = np.random.default_rng(settings.seed + 1000)
    gen = torch.Generator().manual_seed(settings.seed + 2000)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    loss_fn = ContrastiveLoss(kind, settings.temperature, settings.noise, settings.noise_std)
    every = max(1, settings.epochs // settings.checkpoints)
    snapshots = []
    tokens = token_lists(tokenizer, texts)
    for epoch in range(1, settings.epochs + 1):
        views = pairs(tokens, rng, tokenizer.max_length)
        order = torch.randperm(len(texts), generator=gen)
        n_groups = len(texts) // GROUP
        batches = views[order[: n_groups * GROUP]].reshape(n_groups, GROUP, 2, -1)
        for b in range(n_groups):
            optimizer.zero_grad()
            out = model(batches[b : b + 1])
            if kind is Kind.GS_INFO_NCE:  # fresh noise each step, as in training with Gaussian smoothing
                noise = settings.noise_std * torch.randn(1, settings.noise, settings.out_dim, generator=gen)
                loss = gaussian_smoothed_info_nce(out[:, :, 0], out[:, :, 1], noise, settings.temperature).mean()
            else:
                loss = loss_fn(out, torch.zeros(1, dtype=torch.long)).mean()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.embedding.weight[PAD_ID].zero_()
        if epoch % every == 0 or epoch == settings.epochs:
            snapshots.append((epoch, {k: v.detach().clone() for k, v in model.state_dict().items()}))
    return model.eval(), snapshots


def _train_cached(tokenizer: Tokenizer, texts, kind: Kind, settings: TrainSettings, corpus_sha: str):
    key = cache_mod.make_key(
        "contrastive-demo-weights",
        WEIGHTS_VERSION,
        {"corpus": corpus_sha, "vocab": len(tokenizer), "kind": kind.value, "train": dataclasses.asdict(settings),
         "torch": torch.__version__},
    )  # fmt: skip
    stored = cache_mod.get(key)
    if stored is not None:
        with archives.open_npz(stored, "contrastive demo weights") as npz:
            epochs = npz["epochs"].tolist()
            names = [k[len("final/") :] for k in npz.files if k.startswith("final/")]
            final = {k: torch.from_numpy(npz[f"final/{k}"].copy()) for k in names}
            snaps = [(e, {k: torch.from_numpy(npz[f"{e}/{k}"].copy()) for k in names}) for e in epochs]
        model = MeanPoolEncoder(len(tokenizer), settings.dim, settings.out_dim)
        model.load_state_dict(final)
        return model.eval(), snaps
    model, snaps = train(tokenizer, texts, kind, settings)
    arrays = {f"final/{k}": v.numpy() for k, v in model.state_dict().items()}
    for epoch, state in snaps:
        arrays.update({f"{epoch}/{k}": v.numpy() for k, v in state.items()})
    arrays["epochs"] = np.array([e for e, _ in snaps], dtype=np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    cache_mod.put(key, buffer.getvalue())
    return model, snaps


def evaluation_loss(settings: TrainSettings = TrainSettings()) -> ContrastiveLoss:
    """The loss both demo problems are drawn on: InfoNCE at the training temperature."""
    return ContrastiveLoss(Kind.INFO_NCE, settings.temperature)


@functools.lru_cache(maxsize=2)
def load_workspace(seed: int = 0, max_length: int = 20) -> TextWorkspace:
    """The "text-contrastive" workspace: A (InfoNCE) and B (GS-InfoNCE) on fixed groups."""
    corpus = load_corpus()
    train_c, val_c = split_corpus(corpus, seed=seed)
    tokenizer = Tokenizer.fit(train_c.texts, max_length=max_length)
    settings = TrainSettings(seed=seed)
    data = {
        "train": fixed_groups(tokenizer, train_c.texts, seed + 7),
        "val": fixed_groups(tokenizer, val_c.texts, seed + 8),
    }
    problems, checkpoints = [], []
    for label, kind in (("A", Kind.INFO_NCE), ("B", Kind.GS_INFO_NCE)):
        with single_thread():
            model, snaps = _train_cached(tokenizer, train_c.texts, kind, settings, corpus.sha256())
            problem = Problem(
                model, evaluation_loss(settings), data["train"], data["val"], metrics={"accuracy": retrieval_accuracy}
            )
        problems.append(problem)
        checkpoints.append(
            [Checkpoint(f"{label} epoch {e}", problem.space.flatten(state), step=e) for e, state in snaps]
        )
    enc = {"train": tokenizer.encode(train_c.texts), "val": tokenizer.encode(val_c.texts)}
    return TextWorkspace(
        name=NAME,
        problem=problems[0],
        checkpoints=checkpoints[0],
        compare=problems[1],
        compare_checkpoints=checkpoints[1],
        labels=("InfoNCE", "GS-InfoNCE (Wu et al. 2021)"),
        description=DESCRIPTION,
        texts={"train": list(train_c.texts), "val": list(val_c.texts)},
        tags={"train": list(train_c.tags), "val": list(val_c.tags)},
        tokenizer=tokenizer,
        encodings=enc,
    )


def embedding_motion(workspace: TextWorkspace, seed: int = 0, progress=None, cancel=None) -> dict:
    """``{label: embedding_motion.Motion}`` of both encoders on the first ``TEXT.motion_inputs`` val
    sentences (the Text page's contrastive section; disk-cached, so ``first_screen`` prepares it).
    ``progress(done, total)`` counts encoders."""
    from . import embedding_motion as motion_mod
    from .defaults import TEXT

    X = workspace.encodings["val"].ids[: TEXT.motion_inputs]
    problems = {workspace.labels[0]: workspace.problem, workspace.labels[1]: workspace.compare}
    out = {}
    for i, (label, problem) in enumerate(problems.items()):
        out[label] = motion_mod.motion(problem, X, TEXT.motion_radius, TEXT.motion_samples, int(seed), cancel=cancel)
        if progress is not None:
            progress(i + 1, len(problems))
    return out
