"""Parse and validate a user's requirement list into an :class:`EnvSpec`.

Pure functions, no I/O except :func:`read_requirements_file`. This is the one module of
``zexec.core`` that imports a third-party package: ``packaging`` (the PyPA reference
implementation of PEP 440/508), because re-implementing requirement parsing would be
the riskier choice for code whose job is to refuse hostile input.

Rules, each refusal raising :class:`~zexec.core.errors.InvalidEnvironment` with the
offending line and the reason:

* exactly one ``python==X.Y`` (``X.Y.Z`` is accepted and kept as ``X.Y``): the server
  must run the client's major.minor for pickled code to load;
* every other line a plain PEP 508 requirement (name, extras, version specifiers,
  environment marker). Refused: pip options (``-e``, ``-r``, ``--index-url`` ...),
  local paths, direct URLs (``name @ url``, unless ``allow_unsafe``, a site setting;
  ``file:`` URLs stay refused because they name the server's disk), characters a shell
  or a requirements file would interpret (``$ ` | & \\ { }`` ...), control characters,
  tabs and non-ASCII text, more than one line in one item;
* blank lines and ``#`` comments (whole-line, or after whitespace) are skipped.

Normalisation: canonical project name (PEP 503), ``str(Requirement)`` (which sorts
extras and specifiers), duplicates dropped, sorted. The digest is SHA-256 over the
python pin and the normalised lines, so the same set in any order gives the same digest.
The installer gets the normalised lines as a file (data), never through a shell.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from zexec.core.errors import InvalidEnvironment
from zexec.core.model import EnvSpec

#: Longest accepted line and most lines per environment: bounds the work and the data
#: we store per user (a real list is tens of lines of a few dozen characters).
MAX_LINE = 400
MAX_LINES = 500
MAX_FILE_BYTES = 256 * 1024

# Characters a PEP 508 requirement with specifiers and markers needs; anything else is
# refused before parsing. URLs (allow_unsafe only) additionally need ``/:@#%?&+=``.
_PLAIN_CHARS = re.compile(r"[A-Za-z0-9._\-\[\],<>=!~*;() '\"]*")
_URL_CHARS = re.compile(r"[A-Za-z0-9._\-\[\],<>=!~*;() '\"/:@#%?&+]*")
_PIN_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.\d+)?")
_INLINE_COMMENT = re.compile(r"\s+#.*$")


def _invalid(line: str, reason: str) -> InvalidEnvironment:
    shown = line if len(line) <= 80 else line[:77] + "..."
    return InvalidEnvironment(f"requirement {shown!r}: {reason}")


def _clean(raw: str) -> str | None:
    """The requirement text of one item, None for blanks/comments; refuses odd text."""
    if not isinstance(raw, str):
        raise InvalidEnvironment(f"requirement {raw!r}: not a string")
    body = raw.rstrip("\r\n")
    if "\n" in body or "\r" in body:
        raise _invalid(raw, "one requirement per item (line breaks inside an item)")
    line = _INLINE_COMMENT.sub("", body.strip(" "))
    if not line or line.startswith("#"):
        return None
    if len(line) > MAX_LINE:
        raise _invalid(line, f"longer than {MAX_LINE} characters")
    if not line.isascii() or not line.isprintable():
        raise _invalid(line, "contains control, tab or non-ASCII characters")
    if line.startswith("-"):
        raise _invalid(line, "pip options (-e, -r, --index-url ...) are not allowed")
    if line.startswith((".", "/", "~")) or "\\" in line:
        raise _invalid(line, "local paths are not allowed; name a package from the index")
    return line


def _parse_line(line: str, allow_unsafe: bool) -> Requirement:
    if "://" in line and "@" not in line:
        hint = "write name @ url" if allow_unsafe else "name a package from the index"
        raise _invalid(line, f"bare URLs are not allowed; {hint}")
    chars = _URL_CHARS if allow_unsafe else _PLAIN_CHARS
    if not chars.fullmatch(line):
        bad = sorted({c for c in line if not chars.fullmatch(c)})
        if "@" in bad or "/" in bad or ":" in bad:
            raise _invalid(line, "direct URLs and paths are not allowed (site setting)")
        raise _invalid(line, f"characters {''.join(bad)!r} are not allowed")
    try:
        req = Requirement(line)
    except InvalidRequirement as e:
        first = str(e).splitlines()[0]
        raise _invalid(line, f"not a valid PEP 508 requirement ({first})") from None
    if req.url is not None:
        if not allow_unsafe:
            raise _invalid(line, "direct URLs are not allowed (site setting)")
        if req.url.lower().startswith("file:"):
            raise _invalid(line, "file: URLs name the server's disk and are not allowed")
    return req


def _python_pin(line: str, req: Requirement) -> str:
    spec = list(req.specifier)
    if req.extras or req.marker or req.url or len(spec) != 1 or spec[0].operator != "==":
        raise _invalid(line, "the python pin must be exactly python==X.Y")
    m = _PIN_VERSION.fullmatch(spec[0].version)
    if m is None:
        raise _invalid(line, "the python pin must be exactly python==X.Y (e.g. python==3.11)")
    return f"{int(m.group(1))}.{int(m.group(2))}"


def parse_env_spec(requirements: Iterable[str], *, allow_unsafe: bool = False) -> EnvSpec:
    """Validate ``requirements`` (one requirement per item, ``python==X.Y`` among them)
    and return the normalised :class:`EnvSpec`. Raises InvalidEnvironment with the
    reason; ``allow_unsafe`` additionally accepts ``name @ url`` direct references."""
    if isinstance(requirements, (str, bytes)):
        raise InvalidEnvironment("requirements must be a list of strings, one per item")
    python: str | None = None
    by_name: dict[str, str] = {}
    count = 0
    for raw in requirements:
        count += 1
        if count > MAX_LINES:
            raise InvalidEnvironment(f"more than {MAX_LINES} requirements")
        line = _clean(raw)
        if line is None:
            continue
        req = _parse_line(line, allow_unsafe)
        name = canonicalize_name(req.name)
        if name == "python":
            if python is not None:
                raise _invalid(line, f"python is pinned twice (also python=={python})")
            python = _python_pin(line, req)
            continue
        req.name = name
        norm = str(req)
        if by_name.get(name, norm) != norm:
            raise _invalid(
                line, f"{name} is listed twice ({by_name[name]!r}); combine into one line"
            )
        by_name[name] = norm
    if python is None:
        raise InvalidEnvironment(
            "the requirements must pin the Python version, e.g. python==3.11 "
            "(the server must run the same major.minor as the client)"
        )
    lines = tuple(sorted(by_name.values()))
    return EnvSpec(python=python, requirements=lines, digest=env_digest(python, lines))


def env_digest(python: str, lines: Iterable[str]) -> str:
    """SHA-256 hex over the pin and the normalised lines (order-independent)."""
    text = "\n".join([f"python=={python}", *sorted(set(lines))]) + "\n"
    return hashlib.sha256(text.encode()).hexdigest()


def requirements_text(spec: EnvSpec) -> str:
    """The requirements file content an installer gets for ``spec`` (no python pin:
    that one selects the interpreter or image instead)."""
    return "".join(f"{line}\n" for line in spec.requirements)


def read_requirements_file(path: str | Path) -> list[str]:
    """The lines of a requirements file, to pass to :func:`parse_env_spec` (which
    validates them: ``-r`` includes, options and paths are refused there)."""
    p = Path(path)
    data = p.read_bytes()
    if len(data) > MAX_FILE_BYTES:
        raise InvalidEnvironment(f"{p}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise InvalidEnvironment(f"{p}: not UTF-8 text ({e.reason})") from None
