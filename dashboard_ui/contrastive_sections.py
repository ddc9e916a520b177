"""The Text page's contrastive section: whose sentence embeddings move most, InfoNCE vs GS-InfoNCE.

UI only: the encoders come from ``landscape_core.contrastive_demo``, the movements from
``landscape_core.embedding_motion``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard_ui import ui
from landscape_core import contrastive_demo, demos, jobs
from landscape_core.defaults import TEXT


@st.cache_resource(show_spinner="Training the two contrastive encoders (once; cached on disk)...")
def _workspace():
    return demos.load(demos.CONTRASTIVE_DEMO)


def section(seed: int = 0) -> dict | None:
    """Draw the section; returns ``{label: Motion}`` when computed."""
    st.subheader("Contrastive encoders: whose sentence embeddings move most?")
    st.caption(
        "Two sentence encoders trained on these sentences with augmented positives (word dropout, a swap) and "
        "in-batch negatives: A on InfoNCE, B on the Gaussian-smoothed InfoNCE of Wu et al. 2021 (demo "
        f"'{demos.CONTRASTIVE_DEMO}', also on Compare as A and B). Each input's token embeddings are perturbed by "
        f"{TEXT.motion_radius:.0%} of their norm: **average** = mean movement ||f(E + delta) - f(E)|| over "
        f"{TEXT.motion_samples} random "
        "per-token-normalized directions; **first order** = r ||E|| sigma_max(df/dE), the largest a perturbation "
        "of that size can move it to first order (exact Jacobian)."
    )
    ws = _workspace()
    texts = ws.texts["val"][: TEXT.motion_inputs]
    settings = {"models": [ws.problem.model_hash(), ws.compare.model_hash()], "n": len(texts), "seed": seed}

    def compute(progress, cancel):
        return contrastive_demo.embedding_motion(ws, seed, progress=progress, cancel=cancel)

    result = ui.run_job(jobs.job_key("contrastive-motion", settings), compute, "Embedding motion", unit="models")
    if result is None:
        return None
    lines = []
    for label, m in result.items():
        lines.append(
            f"**{label}**: median movement **{np.median(m.average):.3g}** (first-order bound "
            f"{np.median(m.first_order):.3g}, median sigma_max {np.median(m.sigma_max):.3g})."
        )
    a, b = (np.median(m.average) for m in result.values())
    flatter = list(result)[int(b < a)]
    st.markdown(" ".join(lines) + f" By this measure **{flatter}** is the flatter encoder in embedding space.")
    columns = st.columns(len(result))
    for col, (label, m) in zip(columns, result.items()):
        rows = m.ranking()[:10]
        col.markdown(f"**{label}**: the ten inputs that move most")
        col.dataframe(
            pd.DataFrame(
                {
                    "text": [texts[i] for i in rows],
                    "average movement": m.average[rows],
                    "first-order bound": m.first_order[rows],
                }
            ),
            hide_index=True,
            width="stretch",
            column_config={"text": st.column_config.TextColumn(width="medium")},
        )
    return result
