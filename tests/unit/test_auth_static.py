"""StaticAuthenticator: tokens from a mapping or a JSON file."""

import json
import os

import pytest

from zexec.adapters.auth_static import StaticAuthenticator
from zexec.core.errors import ConfigurationError, Forbidden, Unauthenticated

TOKENS = {
    "tok-alice": {"sub": "u-alice", "username": "alice", "groups": ["/zexec-users"]},
    "tok-bob": {"sub": "u-bob", "groups": [{"name": "Guests"}]},
}


def write(tmp_path, data, name="tokens.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    os.chmod(path, 0o600)
    return path


def test_mapping():
    auth = StaticAuthenticator(TOKENS)
    alice = auth.authenticate("tok-alice")
    assert (alice.user_id, alice.username, alice.groups) == ("u-alice", "alice", ("/zexec-users",))
    assert auth.authenticate("tok-bob").groups == ("Guests",)
    assert len(auth) == 2


@pytest.mark.parametrize("token", ["", "tok-carol", "tok-alic", "TOK-ALICE"])
def test_unknown_token(token):
    with pytest.raises(Unauthenticated):
        StaticAuthenticator(TOKENS).authenticate(token)


def test_from_file(tmp_path):
    auth = StaticAuthenticator.from_file(write(tmp_path, TOKENS))
    assert auth.authenticate("tok-bob").user_id == "u-bob"


def test_group_check(tmp_path):
    auth = StaticAuthenticator.from_file(write(tmp_path, TOKENS), allowed_groups="ZEXEC-USERS")
    assert auth.authenticate("tok-alice").user_id == "u-alice"
    with pytest.raises(Forbidden) as exc:
        auth.authenticate("tok-bob")
    assert "ZEXEC-USERS" in str(exc.value)
    assert StaticAuthenticator(TOKENS, ["guests"]).authenticate("tok-bob").user_id == "u-bob"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json secret-tok", "not valid JSON"),
        (["secret-tok"], "JSON object"),
        ({"secret-tok": {"username": "x"}}, "entry #1"),
        ({"ok": {"sub": "1"}, "secret-tok": "claims"}, "entry #2"),
        ({"": {"sub": "1"}}, "entry #1"),
    ],
)
def test_bad_files_name_the_problem_not_the_token(tmp_path, content, says):
    with pytest.raises(ConfigurationError) as exc:
        StaticAuthenticator.from_file(write(tmp_path, content))
    assert says in str(exc.value)
    assert "secret-tok" not in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigurationError) as exc:
        StaticAuthenticator.from_file(tmp_path / "absent.json")
    assert "absent.json" in str(exc.value)


def test_empty_path():
    with pytest.raises(ConfigurationError):
        StaticAuthenticator.from_file("")


def test_world_readable_file_is_warned_about(tmp_path, caplog):
    path = write(tmp_path, TOKENS)
    os.chmod(path, 0o644)
    StaticAuthenticator.from_file(path)
    assert "chmod 600" in caplog.text
    assert "tok-alice" not in caplog.text
