"""generate_tokens of the development identity provider."""

import json
import os
import stat

import pytest

from zexec.adapters.auth_static import StaticAuthenticator
from zexec.apps.devidp import generate_tokens, user_id_for


def test_generates_a_usable_private_token_file(tmp_path):
    path = tmp_path / "sub" / "tokens.json"
    tokens = generate_tokens(path)
    assert set(tokens) == {"alice", "bob"}
    assert tokens["alice"] != tokens["bob"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    claims = json.loads(path.read_text())[tokens["alice"]]
    assert claims == {"sub": user_id_for("alice"), "username": "alice", "groups": ["zexec-users"]}
    auth = StaticAuthenticator.from_file(path)
    assert auth.authenticate(tokens["bob"]).username == "bob"


def test_regenerating_changes_tokens_not_user_ids(tmp_path):
    path = tmp_path / "tokens.json"
    first = generate_tokens(path, ["carol"])
    second = generate_tokens(path, ["carol"])
    assert first["carol"] != second["carol"]
    data = json.loads(path.read_text())
    assert list(data) == [second["carol"]]  # replaced, not appended
    assert data[second["carol"]]["sub"] == user_id_for("carol")
    assert user_id_for("carol") != user_id_for("dave")


def test_tightens_permissions_of_an_existing_file(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text("{}")
    os.chmod(path, 0o644)
    generate_tokens(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.json"]  # no temp file left


def test_needs_users(tmp_path):
    with pytest.raises(ValueError):
        generate_tokens(tmp_path / "t.json", [])
