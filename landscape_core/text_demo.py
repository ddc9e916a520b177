"""The built-in text demo: sentiment of short sentences, two small embedding models.

``load_workspace()`` returns the "text-sentiment" workspace: 437 hand-written sentences
(``data/text_corpus.tsv``: label, tag, text; tags ``plain``, ``negated``, ``sarcastic``,
``ambiguous``, ``rare``), a word-level ``Tokenizer`` fitted on the train split, and two
``MeanPoolClassifier`` models (``nn.Embedding`` + masked mean pooling + ``Linear``) trained
in about a second on the CPU:

* A: seed 0, mini-batches of 8, Adam, 8 epochs (a checkpoint per epoch);
* B: seed 1, full batch, Adam, 60 epochs (6 checkpoints): the large-batch run, which
  fits the train split as well but generalizes worse.

Trained weights are cached as npz in the disk cache (``landscape_core.cache``), keyed by
the corpus bytes and every training setting; training is deterministic for a seed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import archives
from . import cache as cache_mod
from .problem import Problem
from .threads import single_thread
from .workspace import Checkpoint, Workspace

CORPUS_PATH = Path(__file__).parent / "data" / "text_corpus.tsv"
LABELS = ("negative", "positive")
TAGS = ("plain", "negated", "sarcastic", "ambiguous", "rare")
PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
TOKEN_PATTERN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
WEIGHTS_VERSION = 1


DESCRIPTION = (
    "Sentiment (negative/positive) of 597 short hand-written sentences, 150 held out for validation, some "
    "deliberately negated, sarcastic, ambiguous or full of rare words (unknown to the tokenizer). Each model "
    "averages 32-dimensional word embeddings over the real tokens and applies a linear layer (24,418 "
    "parameters). Model A trains with mini-batches of 8 for 8 epochs; model B with full batches for 60 epochs "
    "from another seed: both fit the train split (99%), A generalizes better (val 65% vs 51%). Try the Text "
    "embeddings page: it ranks the validation sentences by how fast their loss rises when their token "
    "embeddings are perturbed (negations top the list), and draws the loss when only the embedding matrix moves."
)


# -- corpus -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Corpus:
    """Sentences with integer labels (0 negative, 1 positive) and a tag each."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    tags: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def sha256(self) -> str:
        return hashlib.sha256(repr((self.texts, self.labels, self.tags)).encode()).hexdigest()

    def take(self, indices: Sequence[int]) -> Corpus:
        return Corpus(*(tuple(field[i] for i in indices) for field in (self.texts, self.labels, self.tags)))


def load_corpus(path: str | Path = CORPUS_PATH) -> Corpus:
    """Read a ``label<TAB>tag<TAB>text`` file with a header line; labels negative/positive."""
    texts, labels, tags = [], [], []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or parts[0] not in LABELS or parts[1] not in TAGS:
            raise ValueError(
                f"{path}:{number}: expected 'label<TAB>tag<TAB>text' with label in {LABELS} and tag in {TAGS}; "
                f"got {line!r}."
            )
        labels.append(LABELS.index(parts[0]))
        tags.append(parts[1])
        texts.append(parts[2])
    return Corpus(tuple(texts), tuple(labels), tuple(tags))


def split_corpus(corpus: Corpus, val_fraction: float = 0.25, seed: int = 0) -> tuple[Corpus, Corpus]:
    """Train/val split stratified by (label, tag), deterministic for ``seed``."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1); got {val_fraction!r}.")
    rng = np.random.default_rng(seed)
    train, val = [], []
    groups: dict[tuple[int, str], list[int]] = {}
    for i, key in enumerate(zip(corpus.labels, corpus.tags)):
        groups.setdefault(key, []).append(i)
    for key in sorted(groups):
        members = np.array(groups[key])
        rng.shuffle(members)
        cut = int(round(val_fraction * len(members)))
        val += members[:cut].tolist()
        train += members[cut:].tolist()
    return corpus.take(sorted(train)), corpus.take(sorted(val))


# -- tokenizer ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Encoding:
    """Token ids of a list of texts.

    ``ids``: LongTensor ``(n, max_length)``, padded with 0. ``lengths``: real tokens per text
    after truncation. ``original_lengths``: before truncation. ``truncated``: indices of texts
    cut to ``max_length``. ``unknown``: ``(n,)`` count of tokens mapped to ``<unk>``.
    ``empty``: indices of texts with no token (all padding; only with ``empty="pad"``).
    """

    ids: torch.Tensor
    lengths: np.ndarray
    original_lengths: np.ndarray
    truncated: tuple[int, ...]
    unknown: np.ndarray
    empty: tuple[int, ...]

    @property
    def unknown_total(self) -> int:
        return int(self.unknown.sum())


class Tokenizer:
    """Word-level tokenizer: lower-cased words (``[a-z0-9]+``, with an ``'s``-style suffix).

    ``vocab[0] = "<pad>"``, ``vocab[1] = "<unk>"``; the rest is the train split's words
    seen at least ``min_count`` times, most frequent first (ties alphabetical).
    """

    def __init__(self, vocab: Sequence[str], max_length: int = 20):
        if list(vocab[:2]) != [PAD, UNK]:
            raise ValueError(f"vocab must start with {PAD!r}, {UNK!r}; got {list(vocab[:2])}.")
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive integer; got {max_length!r}.")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_length = max_length

    @classmethod
    def fit(cls, texts: Sequence[str], max_length: int = 20, min_count: int = 1) -> Tokenizer:
        counts = Counter(w for t in texts for w in cls.tokenize(t))
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *words], max_length)

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return TOKEN_PATTERN.findall(text.lower())

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, texts: Sequence[str], empty: str = "error") -> Encoding:
        """Ids ``(n, max_length)``; longer texts are truncated (listed in ``truncated``).

        ``empty="error"`` (default): a text with no word raises ``ValueError`` naming it;
        ``empty="pad"``: it becomes an all-padding row (listed in ``empty``; the embedding
        analyses refuse such rows, the model's masked mean gives the bias alone).
        """
        if isinstance(texts, str):
            raise ValueError("texts must be a list of strings, not one string; wrap it: [text].")
        if empty not in ("error", "pad"):
            raise ValueError(f"empty must be 'error' or 'pad'; got {empty!r}.")
        n = len(texts)
        ids = torch.zeros((n, self.max_length), dtype=torch.long)
        lengths, original, unknown = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
        truncated, empties = [], []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"texts[{i}] must be a string; got {type(text).__name__}.")
            words = self.tokenize(text)
            if not words:
                if empty == "error":
                    raise ValueError(
                        f"texts[{i}] = {text!r} has no words (tokens are [a-z0-9]+); pass empty='pad' to keep it "
                        "as an all-padding row."
                    )
                empties.append(i)
            original[i] = len(words)
            if len(words) > self.max_length:
                truncated.append(i)
                words = words[: self.max_length]
            row = [self.index.get(w, UNK_ID) for w in words]
            unknown[i] = sum(1 for t in row if t == UNK_ID)
            lengths[i] = len(row)
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return Encoding(ids, lengths, original, tuple(truncated), unknown, tuple(empties))

    def decode(self, ids: torch.Tensor | Sequence[int]) -> list[str]:
        """Tokens of one row, padding dropped (``<unk>`` kept)."""
        return [self.vocab[int(t)] for t in ids if int(t) != PAD_ID]


# -- model ----------------------------------------------------------------------------
class MeanPoolClassifier(nn.Module):
    """``nn.Embedding`` (row 0 = padding, kept at zero) + mean over real tokens + ``Linear``.

    Input: LongTensor ``(n, T)``, padding 0. Output: logits ``(n, classes)``.
    """

    def __init__(self, vocab_size: int, dim: int = 32, classes: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=PAD_ID)
        self.head = nn.Linear(dim, classes)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        E = self.embedding(X)
        mask = (X != PAD_ID).unsqueeze(-1).to(E.dtype)
        pooled = (E * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.head(pooled)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """How one demo model is trained (all of it goes into the weight cache key)."""

    seed: int = 0
    dim: int = 32
    epochs: int = 8
    batch_size: int = 8  # 0 = full batch
    lr: float = 0.01
    weight_decay: float = 0.0
    checkpoints: int = 6


SETTINGS_A = TrainSettings(seed=0, batch_size=8, epochs=8)
SETTINGS_B = TrainSettings(seed=1, batch_size=0, epochs=60)


def train(vocab_size: int, X: torch.Tensor, y: torch.Tensor, settings: TrainSettings):
    """Train a ``MeanPoolClassifier``; returns ``(model, [(epoch, state_dict), ...])``.

    Deterministic for ``settings.seed`` (initialization and shuffling use their own seeded
    generators; the global RNG is left as it was).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = MeanPoolClassifier(vocab_size, settings.dim)
    gen = torch.Generator().manual_seed(settings.seed + 1000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    n = X.shape[0]
    batch = settings.batch_size or n
    every = max(1, settings.epochs // settings.checkpoints)
    snapshots = []
    for epoch in range(1, settings.epochs + 1):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            optimizer.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            optimizer.step()
            with torch.no_grad():
                model.embedding.weight[PAD_ID].zero_()  # AdamW's decay must not move the pad row
        if epoch % every == 0 or epoch == settings.epochs:
            snapshots.append((epoch, {k: v.detach().clone() for k, v in model.state_dict().items()}))
    return model.eval(), snapshots


def _train_cached(vocab_size, X, y, settings: TrainSettings, corpus_sha: str):
    key = cache_mod.make_key(
        "text-demo-weights",
        WEIGHTS_VERSION,
        {"corpus": corpus_sha, "vocab": vocab_size, "train": dataclasses.asdict(settings), "torch": torch.__version__},
    )

    def decode(stored: bytes):
        with archives.open_npz(stored, "text demo weights") as npz:
            epochs = npz["epochs"].tolist()
            names = [k[len("final/") :] for k in npz.files if k.startswith("final/")]
            final = {k: torch.from_numpy(npz[f"final/{k}"].copy()) for k in names}
            snaps = [(e, {k: torch.from_numpy(npz[f"{e}/{k}"].copy()) for k in names}) for e in epochs]
        model = MeanPoolClassifier(vocab_size, settings.dim)
        model.load_state_dict(final)
        return model.eval(), snaps

    hit = cache_mod.fetch(key, decode)  # an unreadable entry is a miss: retrained and replaced
    if hit is not None:
        return hit
    model, snaps = train(vocab_size, X, y, settings)
    arrays = {f"final/{k}": v.numpy() for k, v in model.state_dict().items()}
    for epoch, state in snaps:
        arrays.update({f"{epoch}/{k}": v.numpy() for k, v in state.items()})
    arrays["epochs"] = np.array([e for e, _ in snaps], dtype=np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    cache_mod.put(key, buffer.getvalue())
    return model, snaps


# -- workspace ------------------------------------------------------------------------
@dataclasses.dataclass
class TextWorkspace(Workspace):
    """A ``Workspace`` that also knows its texts: ``texts``/``tags`` per split (in the
    order of the split's rows), the ``tokenizer`` and the ``encodings`` per split."""

    texts: dict = dataclasses.field(default_factory=dict)
    tags: dict = dataclasses.field(default_factory=dict)
    tokenizer: Tokenizer | None = None
    encodings: dict = dataclasses.field(default_factory=dict)


@functools.lru_cache(maxsize=2)
def load_workspace(seed: int = 0, max_length: int = 20) -> TextWorkspace:
    """The "text-sentiment" demo: model A and model B on the built-in corpus (see module doc)."""
    corpus = load_corpus()
    train_c, val_c = split_corpus(corpus, seed=seed)
    tokenizer = Tokenizer.fit(train_c.texts, max_length=max_length)
    enc = {"train": tokenizer.encode(train_c.texts), "val": tokenizer.encode(val_c.texts)}
    y = {"train": torch.tensor(train_c.labels), "val": torch.tensor(val_c.labels)}
    sha = corpus.sha256()
    problems, checkpoints = [], []
    for label, settings in (("A", SETTINGS_A), ("B", SETTINGS_B)):
        settings = dataclasses.replace(settings, seed=settings.seed + seed)
        with single_thread():
            model, snaps = _train_cached(len(tokenizer), enc["train"].ids, y["train"], settings, sha)
            problem = Problem(model, F.cross_entropy, (enc["train"].ids, y["train"]), (enc["val"].ids, y["val"]))
        problems.append(problem)
        checkpoints.append(
            [Checkpoint(f"{label} epoch {e}", problem.space.flatten(state), step=e) for e, state in snaps]
        )
    return TextWorkspace(
        name="text-sentiment",
        problem=problems[0],
        checkpoints=checkpoints[0],
        compare=problems[1],
        compare_checkpoints=checkpoints[1],
        labels=("mini-batch 8", "full batch"),  # pages add "A"/"B" themselves
        description=DESCRIPTION,
        texts={"train": list(train_c.texts), "val": list(val_c.texts)},
        tags={"train": list(train_c.tags), "val": list(val_c.tags)},
        tokenizer=tokenizer,
        encodings=enc,
    )
