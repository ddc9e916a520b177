"""Guide page: what each view shows, its pitfalls, the demo to try it on, and who can do what on a shared server."""

from __future__ import annotations

import streamlit as st

from dashboard_ui import ui
from landscape_core import checkpoints, upload_registry, uploads

ui.require_frame()

st.title("Guide: reading loss landscapes without fooling yourself")
st.markdown(
    "Every picture here is computed exactly (full-split means, unless you choose a subset in the sidebar) and "
    "carries its settings: download them with any result. Below, what each view shows, what it cannot show, and "
    "a demo where the effect is visible."
)

SECTIONS = [
    (
        "Surface: 1D lines and 2D planes",
        "The loss at theta0 + alpha d1 (+ beta d2) for directions d in parameter space. Random directions are "
        "Gaussian, rescaled filter by filter to the norm of the weights (Li et al. 2018), so alpha = 1 is a step "
        "as large as the weights themselves. Hessian directions are the sharpest eigenvectors; PCA directions "
        "follow the training path; the three-checkpoint plane shows three models at their true distances.",
        [
            "A 2D slice is one projection of a space with thousands of dimensions: another seed gives another "
            "picture. Overlay several 1D lines and look at their spread before trusting one map.",
            "Random slices see about the average curvature (trace / P): they hide sharp directions and make "
            "saddles look like minima. Compare with the Hessian directions.",
            "Unnormalized directions distort: layers with small weights look flat, layers with large weights look "
            "sharp. Keep filter normalization unless you know why not.",
            "Diverged points are drawn grey, never clipped. A log colour scale shows structure near the minimum.",
        ],
        "digits-mlp: draw the random plane, then the Hessian plane with 'Length of the Hessian directions: as long "
        "as the random directions', at the same span. Both directions then move the weights equally far (the page "
        "shows each direction's length under the map), and the Hessian plane climbs far higher: a random slice "
        "sees about the mean curvature (trace / P), the Hessian plane the largest. At unit length instead, the "
        "Hessian plane moves the weights about 20 times less and looks flatter, which is a difference of scale, "
        "not of shape.",
    ),
    (
        "Interpolation",
        "The loss along the straight line between two checkpoints. A bump in the middle (the barrier) means the "
        "two models sit in different basins; no bump means they are linearly mode connected.",
        [
            "With BatchNorm, interpolated weights need recomputed running statistics, or the barrier is mostly "
            "an artefact of stale statistics.",
            "Two seeds of one network are usually separated by a barrier that a permutation of hidden units can "
            "remove: a barrier says nothing about the functions being different.",
        ],
        "digits-seeds (two seeds) and digits-bn-cnn (with and without recomputed BatchNorm statistics).",
    ),
    (
        "Sharpness & Hessian",
        "Epsilon-sharpness (the worst loss increase in a small ball), adaptive (scale-invariant) and average "
        "sharpness, and the Hessian spectrum: top eigenvalues with residuals, the trace with its error, and "
        "the eigenvalue density.",
        [
            "Plain sharpness changes when a ReLU network is rescaled layer by layer without changing its function; "
            "adaptive sharpness does not. Prefer it when comparing different models.",
            "An eigenvalue is only as good as its residual ||Hv - lambda v||: the tables show it.",
            "Negative eigenvalues mean a saddle or an unconverged model, not a minimum.",
        ],
        "logistic-blobs: the exact Hessian is known, so the numbers can be checked by hand.",
    ),
    (
        "Trajectory",
        "The checkpoints of a run projected on their first two principal directions (and with UMAP), coloured by "
        "epoch, with the loss surface of the PCA plane under the path.",
        [
            "Explained variance tells how much of the path the plane holds; the projection gap tells how far the "
            "loss in the plane is from the loss at the real checkpoint.",
            "UMAP distances are not Euclidean distances: read its trustworthiness before reading shapes.",
        ],
        "digits-mlp: the small-batch run's per-epoch checkpoints.",
    ),
    (
        "Compare",
        "Two models on directions from the same seed, each normalized to its own weights, same span, same data and "
        "one colour scale, plus the difference map, a metrics table with ratios and a one-sentence verdict.",
        [
            "Two maps drawn with the same seed are comparable, but they are still two projections: the verdict "
            "leans on lambda_max and the mean rise over several random lines, which do not depend on one draw.",
            "Models of different architectures: compare the ratios of size-free metrics, not the raw maps.",
        ],
        "digits-mlp: the large-batch run sits in a sharper minimum than the small-batch run (Keskar et al. 2017).",
    ),
    (
        "Basins, barriers and the bottleneck distance",
        "On Surface, the basins of a 2D map by 0-dimensional persistence: each local minimum is born at its floor "
        "and dies at the lowest barrier that joins it to a deeper one; basins above a persistence threshold are "
        "counted and marked with the saddle on their way to the deepest. On Compare, both maps' persistence diagrams "
        "and the bottleneck distance between them (how far the basins and barriers of one must move to match the "
        "other's).",
        [
            "Basins and barriers are those of the slice, not of the full space: a basin that looks closed on a plane "
            "may open along a direction the plane does not contain.",
            "Cells touching at a corner count as neighbours (gudhi's cubical convention); diverged cells are left out.",
        ],
        "digits-mlp: random planes of a trained net have one basin; the Hessian plane of the saddle check can have two.",
    ),
    (
        "Embedding principle",
        "Split hidden units of model A: the wider network computes exactly the same function, so the loss is the "
        "same, yet its Hessian gains flat directions and a minimum can become a saddle (Zhang et al. 2021). Shown "
        "next to the same wide architecture trained from scratch.",
        [
            "The predicted new zero and negative eigenvalues are exact only at an exact critical point; a trained "
            "model is near one, so its new negative directions can be weak.",
        ],
        "digits-mlp: widen the hidden layer from 128 to 160 units.",
    ),
    (
        "Text embeddings and your own model",
        "Which inputs sit in sharp regions of the embedding space; and how to point the dashboard at your model "
        "with a spec file: `streamlit run app.py -- --spec my_spec.py:build`.",
        [
            "A subset of the data (sidebar) is faster but adds sampling noise: differences smaller than that "
            "noise mean nothing.",
            "Uploaded checkpoints are data and are never executed; code runs only from a spec you named.",
        ],
        "text-sentiment, and the examples/ folder for specs.",
    ),
]

for title, what, pitfalls, demo in SECTIONS:
    with st.container(border=True):
        st.subheader(title)
        st.markdown(what)
        st.markdown("**Pitfalls**\n" + "\n".join(f"- {p}" for p in pitfalls))
        st.markdown(f"**Try it on:** {demo}")


MIB = 2**20
THREAT_MODEL = {
    "Who is trusted": [
        "The person who starts the server: the spec (`--spec`), the checkpoint folders it reads and the cache "
        "folder (`LANDSCAPE_CACHE_DIR`) are theirs. **A spec is Python and runs with the server's rights, by "
        "design**: name only specs you would run yourself, and only let people you trust write them.",
    ],
    "A visitor of a shared dashboard can": [
        "open the demos and the server's spec, run any view within the stated limits (steps and points per grid, "
        "a memory budget per computation) and download every result;",
        f"upload state dicts, data and `.pt2` programs of up to {uploads.MAX_STATE_DICT_BYTES // MIB} MiB each, "
        "a limit that also holds for what a compressed file would unpack to; these are read as data only "
        "(`.pt` with torch's weights-only loader, `.npz` without pickle, `.safetensors` as raw tensors, `.pt2` "
        "after its scan, through an archive rewritten from the checked parts);",
        f"keep up to {upload_registry.MAX_PER_SESSION} uploads at a time, for {upload_registry.KEEP_SECONDS // 3600} "
        "hours after last use, in server memory;",
        "use the server's CPU and memory within those limits: a busy visitor slows others down (computations "
        "queue), and a computation with exactly the same settings as another visitor's is shared, so either of "
        "them can cancel it (finished parts stay cached).",
    ],
    "A visitor cannot": [
        "run code on the server through any upload: pickles that would build objects, pickled or custom parts of "
        "a `.pt2`, guard code and non-tensor operators are refused before anything is loaded, and so are "
        "archives whose entries are duplicated or overlap (two readers could see different files) or whose "
        "checksums do not match;",
        "see, open or push out another visitor's uploads: they belong to the browser tab that made them "
        f"(the server as a whole keeps at most {upload_registry.MAX_REGISTERED}; when full, new uploads are "
        "refused rather than anyone else's dropped);",
        "make the server unpack a small file into a large one: unpacked sizes are checked before unpacking;",
        "put links, images or formatting into the page through file names: uploaded names are shown as typed.",
    ],
    "A writer of the shared cache folder can": [
        "plant wrong numbers under a key: the cache is trusted for values, not for code. A plane, barrier or "
        "spectrum served from a cache that someone else can write is only as honest as they are; if that "
        "matters, give each person a private `LANDSCAPE_CACHE_DIR`;",
        "delete entries (they are recomputed) or fill the disk.",
    ],
    "A writer of the shared cache folder cannot": [
        "run code in the dashboard or the CLI that read it: entries are read as raw bytes and arrays without "
        "pickle; an entry that would unpack past the stated limit, or is damaged, is refused before it is loaded.",
    ],
    "A writer of a checkpoint folder can and cannot": [
        "change the weights a spec loads (values, as for the cache), but not run code through them: `.pt` files "
        "are read with the weights-only loader after every entry's checksum and unpacked size "
        f"(at most {checkpoints.MAX_CHECKPOINT_BYTES // 2**30} GiB) are checked; `.safetensors` hold raw tensors.",
    ],
}

with st.container(border=True):
    st.header("Running it for a team: who can do what")
    for who, points in THREAT_MODEL.items():
        st.markdown(f"**{who}**\n" + "\n".join(f"- {p}" for p in points))
