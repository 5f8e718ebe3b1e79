"""The huge-page malloc tunable added to the environments of payload-relaying processes."""

import sys

import pytest

from zexec.adapters.hugepages import with_hugepages

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="a glibc tunable")


def test_added_when_absent_and_other_variables_kept():
    env = with_hugepages({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def test_appended_to_other_tunables():
    env = with_hugepages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


@pytest.mark.parametrize("value", ["glibc.malloc.hugetlb=0",
                                   "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2"])
def test_a_choice_already_made_is_kept(value):
    assert with_hugepages({"GLIBC_TUNABLES": value})["GLIBC_TUNABLES"] == value


def test_turned_off_with_zexec_hugepages_0():
    assert "GLIBC_TUNABLES" not in with_hugepages({"ZEXEC_HUGEPAGES": "0"})


def test_the_input_mapping_is_not_changed():
    env = {"A": "1"}
    with_hugepages(env)
    assert env == {"A": "1"}
