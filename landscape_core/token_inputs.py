"""Token inputs of a text model, in the two forms text models take.

* integer token ids, a LongTensor ``(n, T)``: the model is called as ``model(X)``; padding
  positions are those equal to the padding id;
* a tokenizer's dict ``{"input_ids": (n, T), "attention_mask": (n, T), ...}``: the model is
  called as ``model(**X)`` (a Hugging Face transformer); padding positions are those where
  ``attention_mask`` is 0, or, without a mask, those equal to the padding id.

The embedding-space analyses (``embeddings``, ``input_hessian``, ``fragility``) cut, move and
mask inputs only through these functions, so both forms work everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from . import inputs as inp

IDS = "input_ids"
MASK = "attention_mask"


def is_token_inputs(X) -> bool:
    """Whether ``X`` is integer ids ``(n, T)`` or a mapping holding integer ``input_ids`` ``(n, T)``."""
    ids = X.get(IDS) if isinstance(X, Mapping) else X
    return isinstance(ids, torch.Tensor) and ids.dim() == 2 and not (ids.is_floating_point() or ids.is_complex())


def _describe(X) -> str:
    if isinstance(X, torch.Tensor):
        return f"a {X.dtype} tensor of shape {tuple(X.shape)}"
    if isinstance(X, Mapping):
        return "a dict " + inp.describe({k: v for k, v in X.items() if isinstance(v, torch.Tensor)})
    return type(X).__name__


def check(X, pad_id: int):
    """``X`` unchanged after checking its form; ``ValueError`` naming what was given otherwise.

    Every input needs at least one real (non-padding) token.
    """
    if not is_token_inputs(X):
        raise ValueError(
            "X must be integer token ids, a LongTensor of shape (n, T), or a tokenizer's dict with integer "
            f"'input_ids' (n, T) (and optionally 'attention_mask' (n, T)); got {_describe(X)}."
        )
    if isinstance(X, Mapping):
        X = inp.as_inputs(X, "X")
        ids = X[IDS]
        inp.count(X, "X")
        if MASK in X and tuple(X[MASK].shape) != tuple(ids.shape):
            raise ValueError(
                f"attention_mask has shape {tuple(X[MASK].shape)} but input_ids has {tuple(ids.shape)}; "
                "they must match."
            )
    empty = torch.nonzero(real_tokens(X, pad_id)[..., 0].sum(1) == 0).flatten().tolist()
    if empty:
        what = "attention_mask all 0" if isinstance(X, Mapping) and MASK in X else f"id {pad_id}"
        raise ValueError(f"inputs {empty[:10]} contain only padding ({what}); each needs >= 1 real token.")
    return X


def ids(X) -> torch.Tensor:
    """The token ids ``(n, T)``."""
    return X[IDS] if isinstance(X, Mapping) else X


def real_tokens(X, pad_id: int) -> torch.Tensor:
    """Boolean ``(n, T, 1)``: True at real tokens, False at padding."""
    if isinstance(X, Mapping) and MASK in X:
        return (X[MASK] != 0)[..., None]
    return (ids(X) != pad_id)[..., None]


def count(X) -> int:
    """Number of inputs."""
    return int(ids(X).shape[0])


def rows(X, start: int, stop: int):
    """Inputs ``start:stop``, in the form of ``X``."""
    return inp.apply(X, lambda t: t[start:stop])


def to(X, device):
    """``X`` on ``device`` (ids and masks keep their dtype)."""
    return inp.to(X, device)
