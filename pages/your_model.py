"""Your model page: the spec in use (or how to write one), uploads of weights and data, .pt2 programs.

UI only: specs load through ``landscape_core.spec``, uploads are validated by
``landscape_core.uploads`` (state dicts, data) and ``landscape_core.exported`` (.pt2 programs).
Uploaded files are read as data and never executed. An accepted upload becomes a workspace
that this browser session's sidebar opens (``upload_registry.register`` under ``ui.owner()``;
no other session sees it); every refusal is one readable sentence, and every name that came
from an upload is shown as plain text (``ui.plain``).
"""

from __future__ import annotations

import traceback

import pandas as pd
import streamlit as st
import torch

from dashboard_ui import ui
from landscape_core import exported, spec, upload_registry, uploads
from landscape_core.uploads import Upload

st.title("Your model")
st.caption(
    "Bring your own model with a spec file (code you run yourself), or upload weights and data for the "
    "current workspace's architecture (data only, never executed)."
)

MIB = 2**20
UNREADABLE = (
    "a file could not be read: it is damaged or cut off, or it is not a save of the kind its name says "
    "(.pt/.pth: torch.save, .safetensors, .npz: numpy.savez, .pt2: torch.export.save)."
)


# -- the spec -------------------------------------------------------------------------------------
@st.cache_resource(show_spinner="Running the spec...", max_entries=4)
def _spec_workspace(target: str):
    return spec.load_spec(target)


st.subheader("The spec in use")
target = ui.spec_from_argv()
if target:
    st.markdown(f"This dashboard was started with `--spec {target}`; the sidebar lists it first.")
    if st.button("Reload the spec", key="ym_reload", help="Run the spec again after editing it."):
        _spec_workspace.clear()
    try:
        ws = _spec_workspace(target)
    except spec.SpecError as exc:
        ui.error_box(str(exc), "The spec could not be loaded", tb=exc.traceback)
        ws = None
    except Exception as exc:  # the spec's objects may fail anywhere; the page stays up
        ui.error_box(exc, "The spec could not be loaded")
        ws = None
    if ws is not None:
        p = ws.problem
        st.success(
            f"**{ws.name}**: {type(p.model).__name__} with {p.space.size:,} parameters; "
            + ", ".join(f"{k} {s.n:,} samples" for k, s in p.splits.items())
            + f"; {len(ws.checkpoints)} checkpoint(s)"
            + (f"; model B: {type(ws.compare.model).__name__}" if ws.compare is not None else "")
            + "."
        )
    source = spec.spec_source_text(target)
    if source:
        with st.expander("Spec source"):
            st.code(source, language="python")
else:
    st.markdown(
        "No spec was given. A spec is a Python file with a function `build()` that returns a `Problem` "
        "(or a `Workspace` with checkpoints and a model B). Start the dashboard on it with "
        "`streamlit run app.py -- --spec my_spec.py:build`, or precompute headless with "
        "`landscape surface --spec my_spec.py:build`."
    )
    st.code(spec.TEMPLATE, language="python")
    st.markdown(
        "Working examples: `examples/digits_cnn_spec.py` (a CNN with a folder of checkpoints) and "
        "`examples/custom_loss_spec.py` (a custom loss and a custom metric)."
    )


# -- uploads for the current workspace ------------------------------------------------------------
def _show_workspace(ws) -> None:
    """Base values and checkpoint losses of an accepted upload."""
    p = ws.problem
    base = {ui.quantity_label(q): v for q, v in p.base.items()}
    st.success(f"Accepted: **{ui.plain(ws.name)}**. {ui.plain(ws.description)}")
    st.dataframe(pd.DataFrame([base], index=["base point"]), width="stretch")
    if ws.checkpoints:
        thetas = torch.stack([c.theta for c in ws.checkpoints])
        values = p.evaluate(thetas, splits=["train"]) if len(ws.checkpoints) <= 64 else {}
        rows = [
            {"checkpoint": c.name, "step": c.step, **{ui.quantity_label(q): float(v[i]) for q, v in values.items()}}
            for i, c in enumerate(ws.checkpoints)
        ]
        st.dataframe(pd.DataFrame(rows), width="stretch", hide_index=True)


def _open(ws) -> None:
    """Register the workspace for this browser session and select it in the sidebar."""
    try:
        wid = upload_registry.register(ws, ui.owner())
    except upload_registry.RegistryFull as exc:
        ui.error_box(str(exc), "Upload not kept")
        return
    st.session_state["ym_last"] = wid
    ui.open_workspace(wid)


KEPT = (
    "Uploads stay in this server's memory for this browser tab only: other visitors cannot see, open or remove "
    f"them. At most {upload_registry.MAX_PER_SESSION} are kept at a time (another upload replaces your oldest); "
    f"each is dropped {upload_registry.KEEP_SECONDS // 3600} hours after you last opened it, or when the server "
    "restarts. Reloading or closing this tab ends its session: its uploads can no longer be opened. Results "
    "computed from them are cached like any other result."
)


st.subheader("Upload weights and data")
base_ws = ui.workspace()
problem = base_ws.problem
st.markdown(
    f"For the architecture of the current workspace **{ui.plain(base_ws.name)}** ({type(problem.model).__name__}, "
    f"{problem.space.size:,} parameters). State dicts: `.pt`/`.pth` (read with `torch.load(weights_only=True)`: "
    "tensors only, no code) or `.safetensors`, up to "
    f"{uploads.MAX_STATE_DICT_BYTES // MIB} MiB each; several files become checkpoints in natural order "
    f"(epoch_2 before epoch_10), the last one the base point. Data: `.pt` or `.npz` holding `X` and `y`, up to "
    f"{uploads.MAX_DATA_BYTES // MIB} MiB each, also once unpacked (a compressed `.npz` or `.pt` may not expand "
    "past the limit)."
)
st.caption(KEPT)
with st.expander("Expected state-dict keys and shapes"):
    keys = [{"key": k, "shape": str(tuple(v.shape))} for k, v in problem.model.state_dict().items()]
    st.dataframe(pd.DataFrame(keys), width="stretch", hide_index=True)

with st.form("ym_uploads"):
    weight_files = st.file_uploader(
        "State dicts", type=["pt", "pth", "safetensors"], accept_multiple_files=True, key="ym_weights"
    )
    c1, c2 = st.columns(2)
    train_file = c1.file_uploader("Train data (optional)", type=["pt", "npz"], key="ym_train")
    val_file = c2.file_uploader("Validation data (optional)", type=["pt", "npz"], key="ym_val")
    check = st.form_submit_button("Check and open", type="primary")

if not check and st.session_state.get("ym_last") == ui.workspace_id():
    _show_workspace(base_ws)  # the upload just opened (the switch to it reran the page)

if check:
    try:
        with st.spinner("Checking the files..."):
            ws = uploads.open_uploads(
                base_ws,
                [Upload(f.name, f.getvalue()) for f in weight_files or []],
                train=Upload(train_file.name, train_file.getvalue()) if train_file else None,
                val=Upload(val_file.name, val_file.getvalue()) if val_file else None,
            )
    except (ValueError, TypeError) as exc:  # a refused file: one sentence (names as typed), no traceback
        ui.error_box(ui.plain(str(exc)), "Upload refused")
    except Exception as exc:  # a reader that tripped inside a damaged file: still a sentence, details folded
        ui.error_box(UNREADABLE, "Upload refused", tb="".join(traceback.format_exception(exc)))
    else:
        _show_workspace(ws)
        _open(ws)


# -- exported programs ----------------------------------------------------------------------------
st.subheader("A model with no code: a torch.export program (.pt2)")
st.markdown(
    "Save your model with `torch.export.save(torch.export.export(model.eval(), (example,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)), 'model.pt2')` and upload it with its data. "
    "The archive is checked before it is loaded: only tensor operators, no pickled objects, no Python guard "
    f"code (up to {exported.MAX_PROGRAM_BYTES // MIB} MiB). It runs in eval mode."
)
st.caption(KEPT)
with st.form("ym_program"):
    program_file = st.file_uploader("Program (.pt2)", type=["pt2"], key="ym_program_file")
    c1, c2, c3 = st.columns(3)
    program_train = c1.file_uploader("Train data", type=["pt", "npz"], key="ym_program_train")
    program_val = c2.file_uploader("Validation data (optional)", type=["pt", "npz"], key="ym_program_val")
    loss = c3.selectbox("Loss", sorted(exported.LOSSES), key="ym_program_loss")
    check_program = st.form_submit_button("Check and open the program")

if check_program:
    if program_file is None or program_train is None:
        st.error("A program needs both the .pt2 file and train data.")
    else:
        try:
            with st.spinner("Checking the program..."):
                ws = exported.program_workspace(
                    Upload(program_file.name, program_file.getvalue()),
                    Upload(program_train.name, program_train.getvalue()),
                    val=Upload(program_val.name, program_val.getvalue()) if program_val else None,
                    loss=loss,
                )
        except (ValueError, TypeError) as exc:
            ui.error_box(ui.plain(str(exc)), "Program refused")
        except Exception as exc:
            ui.error_box(UNREADABLE, "Program refused", tb="".join(traceback.format_exception(exc)))
        else:
            _show_workspace(ws)
            _open(ws)
