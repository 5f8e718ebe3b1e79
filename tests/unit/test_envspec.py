"""parse_env_spec: the pin, what is refused and why, normalisation and the digest."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zexec.core.envspec import (
    env_digest,
    parse_env_spec,
    read_requirements_file,
    requirements_text,
)
from zexec.core.errors import InvalidEnvironment


def test_minimal_pin():
    spec = parse_env_spec(["python==3.11"])
    assert spec.python == "3.11" and spec.requirements == ()
    assert spec.digest == env_digest("3.11", [])
    assert len(spec.digest) == 64


def test_patch_version_is_kept_as_major_minor():
    assert parse_env_spec(["python==3.12.4"]).python == "3.12"
    assert parse_env_spec(["Python == 3.12"]).digest == parse_env_spec(["python==3.12"]).digest


def test_normalisation():
    spec = parse_env_spec(
        [
            "  Foo_Bar[b,a] >=1.0 , <2  # the thing",
            "# a comment",
            "",
            "numpy",
            'six; python_version < "4"',
            "python==3.11",
            "numpy",
        ]
    )
    assert spec.requirements == (
        "foo-bar[a,b]<2,>=1.0",
        "numpy",
        'six; python_version < "4"',
    )
    assert requirements_text(spec) == "".join(line + "\n" for line in spec.requirements)


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([], "must pin the Python version"),
        (["numpy"], "must pin the Python version"),
        (["python>=3.10"], "exactly python==X.Y"),
        (["python==3.*"], "exactly python==X.Y"),
        (["python==3"], "exactly python==X.Y"),
        (["python"], "exactly python==X.Y"),
        (["python==3.11,<4"], "exactly python==X.Y"),
        (["python[x]==3.11"], "exactly python==X.Y"),
        (["python==3.11", "python==3.12"], "pinned twice"),
        (["python==3.11", "python==3.11"], "pinned twice"),
    ],
)
def test_python_pin_refusals(lines, reason):
    with pytest.raises(InvalidEnvironment, match=reason):
        parse_env_spec(lines)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("-e .", "pip options"),
        ("-r other.txt", "pip options"),
        ("--index-url https://evil.example/simple", "pip options"),
        ("--extra-index-url=https://x", "pip options"),
        ("./pkg", "local paths"),
        ("/tmp/pkg.whl", "local paths"),
        ("~/pkg", "local paths"),
        ("..\\pkg", "local paths"),
        ("pkg/sub", "direct URLs and paths"),
        ("foo @ https://example.com/foo.whl", "direct URLs"),
        ("https://example.com/foo.whl", "bare URLs"),
        ("git+https://example.com/foo.git", "bare URLs"),
        ("six; rm -rf /", "not allowed"),
        ("six; os_name == 'x' or", "not a valid PEP 508"),
        ("six && curl evil", "not allowed"),
        ("six | sh", "not allowed"),
        ("six$(id)", "not allowed"),
        ("six`id`", "not allowed"),
        ("six{1}", "not allowed"),
        ("six\tnumpy", "control, tab or non-ASCII"),
        ("six\x00", "control, tab or non-ASCII"),
        ("s\u0131x", "control, tab or non-ASCII"),
        ("six\u00a0==1.0", "control, tab or non-ASCII"),
        ("six\nnumpy", "one requirement per item"),
        ("six\rnumpy", "one requirement per item"),
        ("==1.0", "not a valid PEP 508"),
        ("six==", "not a valid PEP 508"),
        ("x" * 500, "longer than"),
    ],
)
def test_refused_lines_name_the_reason(line, reason):
    with pytest.raises(InvalidEnvironment, match=reason) as ei:
        parse_env_spec(["python==3.11", line])
    assert "requirement" in str(ei.value)


def test_same_package_twice_differently_is_refused():
    with pytest.raises(InvalidEnvironment, match="listed twice"):
        parse_env_spec(["python==3.11", "six==1.16", "Six>=1"])


def test_string_instead_of_list_is_refused():
    with pytest.raises(InvalidEnvironment, match="list of strings"):
        parse_env_spec("python==3.11")  # type: ignore[arg-type]
    with pytest.raises(InvalidEnvironment, match="not a string"):
        parse_env_spec(["python==3.11", 3])  # type: ignore[list-item]


def test_allow_unsafe_accepts_direct_urls_only():
    url = "https://example.com/foo-1.0.whl?x=1&y=2#sha256=ab"
    spec = parse_env_spec(["python==3.11", f"Foo @ {url}"], allow_unsafe=True)
    assert spec.requirements == (f"foo @ {url}",)
    for bad, reason in [
        ("foo @ file:///etc/passwd", "file: URLs"),
        ("-e git+https://x/y.git", "pip options"),
        ("https://x/y.whl", "write name @ url"),
        ("foo @ https://x/$(id)", "not allowed"),
    ]:
        with pytest.raises(InvalidEnvironment, match=reason):
            parse_env_spec(["python==3.11", bad], allow_unsafe=True)


def test_read_requirements_file(tmp_path):
    f = tmp_path / "requirements.txt"
    f.write_text("\ufeffpython==3.11\r\nsix  # why not\r\n\r\n# done\r\n", encoding="utf-8")
    spec = parse_env_spec(read_requirements_file(f))
    assert spec.requirements == ("six",)
    f.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InvalidEnvironment, match="not UTF-8"):
        read_requirements_file(f)


_names = st.sampled_from(["numpy", "six", "Foo_Bar", "attrs", "requests[socks]", "zope.interface"])
_specs = st.sampled_from(["", ">=1.0", "==2.*", "<3,>=1", "~=1.4", "!=1.5"])
_lines = st.builds(lambda n, s: n + s, _names, _specs)


@given(
    st.lists(_lines, max_size=8, unique_by=lambda s: s.split("[")[0].rstrip("<>=!~0123456789.*,")),
    st.randoms(use_true_random=False),
    st.integers(0, 3),
)
def test_digest_is_order_and_duplicate_independent(lines, rnd, dup):
    base = parse_env_spec(["python==3.11", *lines])
    shuffled = ["python==3.11", *lines, *lines[:dup]]
    rnd.shuffle(shuffled)
    other = parse_env_spec(shuffled)
    assert other == base
    assert list(base.requirements) == sorted(base.requirements)


@given(st.lists(_lines, min_size=1, max_size=5, unique=True))
def test_digest_depends_on_the_python_pin(lines):
    names = {line.split("[")[0].rstrip("<>=!~0123456789.*,") for line in lines}
    if len(names) != len(lines):
        return
    a = parse_env_spec(["python==3.11", *lines])
    b = parse_env_spec(["python==3.12", *lines])
    assert a.requirements == b.requirements and a.digest != b.digest
