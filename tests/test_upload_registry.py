"""Uploaded workspaces belong to the session that made them: ids, labels, slots, expiry (issue 10 item 4, issue 18 item 3)."""

import pytest
import torch
import torch.nn.functional as F

from landscape_core import upload_registry as registry
from landscape_core.problem import Problem
from landscape_core.workspace import Workspace


@pytest.fixture(autouse=True)
def empty_registry(monkeypatch):
    monkeypatch.setattr(registry, "_KEPT", type(registry._KEPT)())


def workspace(name="w"):
    X = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    return Workspace(name, Problem(torch.nn.Linear(2, 2), F.cross_entropy, train=(X, (X[:, 0] > 0).long())))


def test_each_upload_gets_its_own_id_and_label():
    alice = registry.new_owner()
    ws = workspace("spec s.py:build + a.pt")
    first, second = registry.register(ws, alice, now=1000.0), registry.register(ws, alice, now=1000.0)
    assert first != second and first.startswith("upload:") and second.startswith("upload:")
    labels = [registry.label(w, alice, now=1000.0) for w in (first, second)]
    assert labels[0] != labels[1]  # same files, same second: still told apart (the number)
    assert all("spec s.py:build + a.pt" in label for label in labels)
    assert registry.registered_ids(alice, now=1000.0) == [first, second]


def test_other_sessions_cannot_list_open_or_evict():
    alice, bob = registry.new_owner(), registry.new_owner()
    mine = registry.register(workspace("alice's"), alice, now=0.0)
    assert registry.registered_ids(bob, now=1.0) == []
    with pytest.raises(KeyError, match="in this session") as info:
        registry.registered(mine, bob, now=1.0)
    assert mine not in str(info.value.args[0].split("this session has")[1])  # no other session's ids leak
    with pytest.raises(KeyError):
        registry.label(mine, bob, now=1.0)
    for i in range(registry.MAX_PER_SESSION + 3):  # bob fills (and overfills) his own slots
        registry.register(workspace(f"bob {i}"), bob, now=2.0)
    assert registry.registered(mine, alice, now=3.0).name == "alice's"
    assert len(registry.registered_ids(bob, now=3.0)) == registry.MAX_PER_SESSION


def test_a_session_past_its_slots_replaces_its_own_oldest():
    alice = registry.new_owner()
    ids = [registry.register(workspace(f"u{i}"), alice, now=float(i)) for i in range(registry.MAX_PER_SESSION + 1)]
    assert registry.registered_ids(alice, now=10.0) == ids[1:]


def test_uploads_expire_after_last_use():
    alice = registry.new_owner()
    wid = registry.register(workspace(), alice, now=0.0)
    registry.registered(wid, alice, now=registry.KEEP_SECONDS - 1)  # opening it renews it
    assert registry.registered_ids(alice, now=2 * registry.KEEP_SECONDS - 2) == [wid]
    assert registry.registered_ids(alice, now=2 * registry.KEEP_SECONDS) == []


def test_a_full_server_refuses_new_uploads_instead_of_evicting_others(monkeypatch):
    monkeypatch.setattr(registry, "MAX_REGISTERED", 3)
    owners = [registry.new_owner() for _ in range(3)]
    kept = [registry.register(workspace(), o, now=0.0) for o in owners]
    with pytest.raises(registry.RegistryFull, match="already keeps 3 uploads of other sessions, its limit of 3"):
        registry.register(workspace(), registry.new_owner(), now=1.0)
    assert all(registry.registered(w, o, now=1.0) for w, o in zip(kept, owners, strict=True))
    newer = registry.register(workspace(), owners[0], now=1.0)  # a session with an upload replaces its own
    assert registry.registered_ids(owners[0], now=1.0) == [newer]
    assert all(registry.registered(w, o, now=1.0) for w, o in zip(kept[1:], owners[1:], strict=True))
    later = registry.KEEP_SECONDS + 2.0  # the others expire: room for a new session again
    assert registry.register(workspace(), registry.new_owner(), now=later)


def test_owner_tokens_are_checked():
    with pytest.raises(ValueError, match="owner must be a session token"):
        registry.register(workspace(), "")
    with pytest.raises(TypeError, match="needs a Workspace"):
        registry.register("not a workspace", registry.new_owner())
