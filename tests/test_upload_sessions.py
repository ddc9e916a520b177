"""AppTest of uploads as visitors meet them: each upload opens itself, sessions are kept apart, hostile files
are refused before any code runs, and uploaded names show as typed (issue 10 items 1 and 4, issue 18 item 3)."""

import io
import re
import sys
from pathlib import Path

import crafted
import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

from landscape_core import upload_registry

APP = str(Path(__file__).resolve().parents[1] / "app.py")
MIME = "application/octet-stream"

SPEC = """
import torch
import torch.nn.functional as F
from landscape_core import Problem


def build():
    torch.manual_seed(0)
    X = torch.randn(40, 3)
    return Problem(torch.nn.Sequential(torch.nn.Linear(3, 2)), F.cross_entropy, train=(X, (X[:, 0] > 0).long()))
"""


def spec_data():
    torch.manual_seed(0)
    X = torch.randn(40, 3)
    return X, (X[:, 0] > 0).long()


def model(seed: int):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 2))


def state_dict_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    torch.save(model(seed).state_dict(), buffer)
    return buffer.getvalue()


def expected_loss(seed: int) -> float:
    X, y = spec_data()
    with torch.no_grad():
        return float(F.cross_entropy(model(seed)(X), y))


@pytest.fixture
def spec_argv(monkeypatch, tmp_path):
    (tmp_path / "up_spec.py").write_text(SPEC)
    monkeypatch.setattr(sys, "argv", ["app.py", "--spec", f"{tmp_path / 'up_spec.py'}:build"])
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "120")


def session(page="pages/your_model.py") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def upload_state_dicts(at: AppTest, files: list[tuple[str, bytes]]) -> None:
    at.file_uploader(key="ym_weights").set_value([(name, data, MIME) for name, data in files])
    next(b for b in at.button if b.label == "Check and open").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def picker(at: AppTest):
    return at.selectbox(key="ui_workspace")


def surface_base_loss(at: AppTest, workspace_id: str) -> float:
    """The base loss the Surface page shows with ``workspace_id`` opened in the sidebar."""
    at.switch_page("pages/surface.py")
    at.run()
    picker(at).select(workspace_id).run()  # (AppTest's page switch resets the sidebar's choice)
    assert not at.exception, [e.value for e in at.exception]
    assert picker(at).value == workspace_id
    found = [re.search(r"at the base point: ([-0-9.e+]+);", m.value) for m in at.markdown]
    values = [float(m.group(1)) for m in found if m]
    assert values, [m.value for m in at.markdown]
    return values[0]


def test_each_upload_opens_itself_with_its_own_label(spec_argv):
    at = session()
    upload_state_dicts(at, [("first.pt", state_dict_bytes(1))])
    first = picker(at).value
    assert first.startswith("upload:")
    upload_state_dicts(at, [("second.pt", state_dict_bytes(2)), ("third.pt", state_dict_bytes(3))])
    second = picker(at).value
    assert second.startswith("upload:") and second != first  # the new upload is the one opened
    labels = {wid: picker(at).format_func(wid) for wid in (first, second)}
    assert labels[first] != labels[second]
    assert "first.pt" in labels[first] and "second.pt, third.pt" in labels[second]
    assert len(set(picker(at).options)) == len(picker(at).options)  # every sidebar entry tells itself apart

    # Surface shows the base loss of the upload opened: third.pt (the last in natural order) or first.pt
    assert surface_base_loss(at, second) == pytest.approx(expected_loss(3), rel=1e-3)
    assert surface_base_loss(at, first) == pytest.approx(expected_loss(1), rel=1e-3)
    assert surface_base_loss(at, second) == pytest.approx(expected_loss(3), rel=1e-3)
    assert len({expected_loss(1), expected_loss(3), expected_loss(0)}) == 3  # the three are told apart


def test_uploads_belong_to_the_session_that_made_them(spec_argv):
    alice = session()
    upload_state_dicts(alice, [("alice.pt", state_dict_bytes(1))])
    alice_upload = picker(alice).value
    assert alice_upload.startswith("upload:")
    assert any("for this browser tab only" in c.value and "2 hours" in c.value for c in alice.caption)

    bob = AppTest.from_file(APP, default_timeout=180)
    bob.session_state["ui_workspace"] = alice_upload  # asks for alice's upload by its id: not opened
    bob.run()
    bob.switch_page("pages/your_model.py")
    bob.run()
    assert not bob.exception
    assert picker(bob).value != alice_upload
    assert not [o for o in picker(bob).options if "alice.pt" in o]  # not listed
    bob_owner = bob.session_state["ui_owner"]
    assert bob_owner != alice.session_state["ui_owner"]
    with pytest.raises(KeyError):
        upload_registry.registered(alice_upload, bob_owner)

    for i in range(upload_registry.MAX_PER_SESSION + 1):  # bob fills his slots; alice keeps hers
        upload_state_dicts(bob, [(f"bob_{i}.pt", state_dict_bytes(10 + i))])
    assert len(upload_registry.registered_ids(bob_owner)) == upload_registry.MAX_PER_SESSION
    alice.run()
    assert picker(alice).value == alice_upload
    assert upload_registry.registered(alice_upload, alice.session_state["ui_owner"]).name.endswith("alice.pt")


def test_a_pt2_that_would_run_code_is_refused_on_the_page(spec_argv, tmp_path):
    marker = tmp_path / "code_ran"
    program = torch.export.export(model(0).eval(), (torch.randn(5, 3),), dynamic_shapes=({0: torch.export.Dim("b")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    evil = crafted.differential_pt2(buffer.getvalue(), marker)
    assert crafted.torch_reads_first_copy(evil)
    X, y = spec_data()
    data = io.BytesIO()
    torch.save({"X": X, "y": y}, data)

    at = session()
    at.file_uploader(key="ym_program_file").set_value(("evil.pt2", evil, MIME))
    at.file_uploader(key="ym_program_train").set_value(("data.pt", data.getvalue(), MIME))
    next(b for b in at.button if b.label == "Check and open the program").click()
    at.run()
    assert not at.exception
    refused = [e.value for e in at.error if e.value.startswith("Program refused")]
    assert refused and "more than once" in refused[0]
    assert not marker.exists()


def test_uploaded_names_show_as_plain_text(spec_argv):
    at = session()
    name = "[click](https:example.invalid) *x* $y$.pt"
    upload_state_dicts(at, [(name, state_dict_bytes(1))])
    accepted = next(s.value for s in at.success if s.value.startswith("Accepted"))
    assert "[click](" not in accepted and "*x*" not in accepted and "$y$" not in accepted
    assert r"\[click\]\(https\:example\.invalid\) \*x\* \$y\$\.pt" in accepted  # escaped: shown as typed
    upload_state_dicts(at, [(name.replace(".pt", " cut.pt"), state_dict_bytes(1)[:200])])
    refused = next(e.value for e in at.error if e.value.startswith("Upload refused"))
    assert "[click](" not in refused and r"\[click\]\(https\:example\.invalid\) \*x\* \$y\$ cut\.pt" in refused


def test_the_threat_model_is_stated(spec_argv):
    at = session("pages/guide.py")
    assert [h.value for h in at.header] == ["Running it for a team: who can do what"]
    text = "\n".join(m.value for m in at.markdown)
    for claim in (
        "A spec is Python and runs with the server's rights, by design",
        "**A visitor cannot**",
        "see, open or push out another visitor's uploads",
        "plant wrong numbers under a key: the cache is trusted for values, not for code",
        "**A writer of the shared cache folder cannot**\n- run code",
    ):
        assert claim in text, claim
    readme = (Path(APP).parent / "README.md").read_text()
    assert "**A spec is code and runs, by design**" in readme and "## Running it for a team" in readme
