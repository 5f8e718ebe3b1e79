"""Group matching and claims -> identity (pure functions of zexec.core)."""

import pytest

from zexec.core.claims import identity_from_claims
from zexec.core.errors import Forbidden
from zexec.core.groups import (
    group_allowed,
    normalise_group,
    parse_allowed_groups,
    require_groups,
)


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("researchers", "researchers"),
        ("/NDP_EP/ep-xyz", "ndp_ep/ep-xyz"),
        ("  /Team ", "team"),
        ({"path": "/Org/Team", "name": "Team"}, "org/team"),
        ({"name": "Team"}, "team"),
        ({"id": 3}, ""),
        (42, ""),
        (None, ""),
    ],
)
def test_normalise_group(group, expected):
    assert normalise_group(group) == expected


def test_no_allowed_groups_allows_everyone():
    assert group_allowed([], [])
    assert group_allowed(None, ())


def test_match_ignores_case_and_leading_slash():
    assert group_allowed(["/NDP_EP/ep-xyz", "other"], ["ndp_ep/ep-xyz"])
    assert group_allowed(["researchers"], ["/Researchers"])


def test_groups_as_dicts():
    assert group_allowed([{"path": "/ndp/ep"}], ["ndp/ep"])
    assert group_allowed([{"name": "Researchers"}], ["researchers"])


def test_no_match_and_junk_entries():
    assert not group_allowed(["students", 7, None, {"id": 1}], ["researchers"])
    assert not group_allowed(None, ["researchers"])


def test_single_string_group_is_not_split_into_letters():
    assert not group_allowed("abc", ["a"])
    assert group_allowed("abc", ["ABC"])


def test_parse_allowed_groups():
    assert parse_allowed_groups(" a, /b ,,c ") == ("a", "/b", "c")
    assert parse_allowed_groups("") == ()
    assert parse_allowed_groups(["x", " "]) == ("x",)


def test_require_groups_names_the_required_groups():
    with pytest.raises(Forbidden) as exc:
        require_groups(["students"], ["researchers", "/admins"])
    assert "researchers" in str(exc.value) and "/admins" in str(exc.value)
    require_groups(["Researchers"], ["researchers"])  # no error


def test_identity_from_claims():
    claims = {
        "sub": "a1b2",
        "preferred_username": "alice",
        "groups": ["/ndp/ep", {"path": "/org/team"}, {"name": "solo"}, 5],
        "realm_access": {"roles": ["user"]},
    }
    ident = identity_from_claims(claims)
    assert ident.user_id == "a1b2"
    assert ident.username == "alice"
    assert ident.groups == ("/ndp/ep", "/org/team", "solo")
    assert ident.roles == ("user",)
    assert ident.claims == claims


def test_identity_prefers_username_and_accepts_integer_sub():
    ident = identity_from_claims(
        {"sub": 7, "username": "u", "preferred_username": "p", "roles": ["r"]}
    )
    assert (ident.user_id, ident.username, ident.roles) == ("7", "u", ("r",))


@pytest.mark.parametrize("claims", [{}, {"sub": ""}, {"sub": "  "}, {"sub": None}, {"sub": True}])
def test_identity_needs_a_sub(claims):
    with pytest.raises(ValueError):
        identity_from_claims(claims)
